"""The ``oracle.prices`` topic's codec: price rows and progress records, keyed by asset.

A price row is the JSON of ``OraclePrice``. A progress record,
``{"progress": true, "asset": "ETH", "through_ms": 1700000060000}``, says that every window
of the asset ending at or before ``through_ms`` (ms) is closed: no first publication for
those windows will follow. A tick row has ``"cadence": "tick"``, and so has the progress
record of the ticks (every tick at or before ``through_ms`` is out). The oracle writes
both for one asset to one partition, in the order it decided them, so a row always
precedes the progress past its window; that is what lets a separately deployed risk
stage evaluate deterministically.

A row is checked as the oracle writes it: a price of ``bounds.USD_MIN..USD_MAX`` USD, a
finite confidence >= 0, a status of ``ok``, ``degraded`` or ``stale``, a window that ends
after it starts, counts >= 0; every time an int64 of ms. Anything else is a ``Rejected``.
"""

from __future__ import annotations

import math

import msgspec

from operators.bounds import USD_MAX, USD_MIN
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
        record = {"progress": True, "asset": item.asset, "through_ms": item.through_ms}
        if item.cadence != "window":
            record["cadence"] = item.cadence
        return _encoder.encode(record)
    return _encoder.encode(item)


def decode(msg: RawMessage) -> OraclePrice | OracleProgress | Rejected:
    """A message of ``oracle.prices``; one that does not decode or check is a ``Rejected``."""
    value = msg.value
    if value is None:
        return Rejected.of(STAGE, "empty_value: message has no value", msg)
    try:
        if _kind.decode(value).progress:
            progress = _progress.decode(value)
            problem = None if _INT64[0] <= progress.through_ms <= _INT64[1] else "through_ms"
            if progress.cadence not in _CADENCES:
                problem = "cadence"
            item: OraclePrice | OracleProgress = progress
        else:
            item = row = _price.decode(value)
            problem = _problem(row)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejected.of(STAGE, str(json_error(exc, value)), msg)
    if problem is not None:
        return Rejected.of(STAGE, f"invalid_field: {problem} is out of its range", msg)
    return item


_INT64 = (-(1 << 63), (1 << 63) - 1)
_STATUSES = ("ok", "degraded", "stale")
_CADENCES = ("window", "tick")


def _problem(row: OraclePrice) -> str | None:
    """The first field of a price row outside its range, or ``None``."""
    checks = (
        ("price", USD_MIN <= row.price <= USD_MAX),
        ("confidence", math.isfinite(row.confidence) and row.confidence >= 0),
        ("status", row.status in _STATUSES),
        ("window_start_ms", _INT64[0] <= row.window_start_ms <= _INT64[1]),
        ("window_end_ms", row.window_start_ms < row.window_end_ms <= _INT64[1]),
        ("sources", 0 <= row.sources < 1 << 31),
        ("revision", 0 <= row.revision < 1 << 31),
        ("cadence", row.cadence in _CADENCES),
    )
    return next((name for name, ok in checks if not ok), None)
