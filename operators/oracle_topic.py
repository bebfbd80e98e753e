"""The ``oracle.prices`` topic's codec: price rows and progress records, keyed by asset.

A price row is the JSON of ``OraclePrice``. A progress record,
``{"progress": true, "asset": "ETH", "through_ms": 1700000060000}``, says that every window
of the asset ending at or before ``through_ms`` (ms) is closed: no first publication for
those windows will follow. The oracle writes both for one asset to one partition, in the
order it decided them, so a row always precedes the progress past its window; that is
what lets a separately deployed risk stage evaluate deterministically.
"""

from __future__ import annotations

import msgspec

from operators.decode import json_error
from operators.model import OraclePrice, OracleProgress, RawMessage, Rejected

STAGE = "oracle_prices"


class _Kind(msgspec.Struct, frozen=True):
    progress: bool = False


_kind = msgspec.json.Decoder(_Kind)
_price = msgspec.json.Decoder(OraclePrice)
_progress = msgspec.json.Decoder(OracleProgress)
_encoder = msgspec.json.Encoder()


def encode(item: OraclePrice | OracleProgress) -> bytes:
    """The message value of a price row or a progress record."""
    if isinstance(item, OracleProgress):
        return _encoder.encode(
            {"progress": True, "asset": item.asset, "through_ms": item.through_ms}
        )
    return _encoder.encode(item)


def decode(msg: RawMessage) -> OraclePrice | OracleProgress | Rejected:
    """A message of ``oracle.prices``; one that does not decode is a ``Rejected``."""
    value = msg.value
    if value is None:
        return Rejected.of(STAGE, "empty_value: message has no value", msg)
    try:
        if _kind.decode(value).progress:
            return _progress.decode(value)
        return _price.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejected.of(STAGE, str(json_error(exc, value)), msg)
