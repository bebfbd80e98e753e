"""The ``fills`` topic's codec: the executor's outcomes and progress, tagged by ``record``.

An outcome is the JSON of ``Execution`` (``"record": "execution"``), keyed by its account;
a signer's progress is the JSON of ``ExecutionProgress`` (``"record": "progress"``), sent
to every partition: every outcome of that signer with ``ts_event_ms`` <= ``through_ms``
(ms) is on the topic before it. That is what lets the risk stage take outcomes at the
same evaluation live and in replay (``operators.risk_intake``).

An outcome is checked as the risk stage reads it: ``order_id`` a ``bytes32`` (``0x`` and 64
lower-case hex digits), ``account`` and ``signer`` lower-case addresses (the account picks
the shard), ``seq`` >= 1, ``final`` set for exactly the final states (``reverted``,
``denied``, ``expired``, ``conflict``; ``mined`` either way), wei amounts decimal digits,
every time an int64 of ms; a swap's tokens lower-case addresses and its amounts decimal
uint256s, all four set on a final ``mined`` ``dex_hedge`` (the book's wallet moves by
them). Anything else is a ``Rejected``.
"""

from __future__ import annotations

import re

import msgspec

from operators.decode import json_error
from operators.model import FINAL_STATES, Execution, ExecutionProgress, RawMessage, Rejected

STAGE = "fills"

FillsItem = Execution | ExecutionProgress

_decoder = msgspec.json.Decoder(FillsItem)
_encoder = msgspec.json.Encoder()
_INT64 = (-(1 << 63), (1 << 63) - 1)
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_ORDER_ID = re.compile(r"0x[0-9a-f]{64}")
_WEI = re.compile(r"[0-9]{1,78}")
"""A uint256 in decimal has at most 78 digits."""


def encode(item: FillsItem) -> bytes:
    """The message value of an outcome or a progress record."""
    return _encoder.encode(item)


def decode(msg: RawMessage) -> FillsItem | Rejected:
    """A message of ``fills``; one that does not decode or check is a ``Rejected``."""
    value = msg.value
    if value is None:
        return Rejected.of(STAGE, "empty_value: message has no value", msg)
    try:
        item = _decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejected.of(STAGE, str(json_error(exc, value)), msg)
    problem = _progress_problem(item) if isinstance(item, ExecutionProgress) else _problem(item)
    if problem is not None:
        return Rejected.of(STAGE, f"invalid_field: {problem}", msg)
    return item


def _progress_problem(progress: ExecutionProgress) -> str | None:
    if not _ADDRESS.fullmatch(progress.signer):
        return "signer is not a lower-case address"
    if not _INT64[0] <= progress.through_ms <= _INT64[1]:
        return "through_ms is out of its range"
    return None


def _problem(e: Execution) -> str | None:
    """The first field of an outcome that fails its check, said why, or ``None``."""
    wei = (e.fee_paid_wei, e.max_fee_per_gas_wei, e.max_priority_fee_per_gas_wei)
    swap = (e.token_in, e.amount_in, e.token_out, e.amount_out)
    swapped = e.kind == "dex_hedge" and e.state == "mined" and e.final
    counts = (e.nonce, e.block_number, e.gas_used)
    checks = (
        ("order_id is not a bytes32 (0x and 64 lower-case hex digits)",
         _ORDER_ID.fullmatch(e.order_id) is not None),
        ("account is not a lower-case address", _ADDRESS.fullmatch(e.account) is not None),
        ("signer is not a lower-case address", _ADDRESS.fullmatch(e.signer) is not None),
        ("seq must be >= 1", e.seq >= 1),
        (f"final must be {e.state in FINAL_STATES} in state {e.state}",
         e.state == "mined" or e.final == (e.state in FINAL_STATES)),
        ("ts_event_ms is out of its range", _INT64[0] <= e.ts_event_ms <= _INT64[1]),
        ("nonce, block_number and gas_used must be >= 0 and < 2**64",
         all(c is None or 0 <= c < 1 << 64 for c in counts)),
        ("a wei amount is not a decimal uint256",
         all(w is None or (_WEI.fullmatch(w) is not None and int(w) < 1 << 256) for w in wei)),
        ("token_in and token_out must be lower-case addresses",
         all(t is None or _ADDRESS.fullmatch(t) is not None for t in swap[::2])),
        ("amount_in and amount_out must be decimal uint256s",
         all(a is None or (_WEI.fullmatch(a) is not None and int(a) < 1 << 256)
             for a in swap[1::2])),
        ("a final mined dex_hedge needs token_in, amount_in, token_out and amount_out",
         not swapped or None not in swap),
    )  # fmt: skip
    return next((why for why, ok in checks if not ok), None)
