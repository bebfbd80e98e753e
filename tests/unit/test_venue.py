"""The venue's events decoded for the risk engine: bad logs (real ones: test_devchain.py)."""

from __future__ import annotations

import json

from operators import abi
from operators.model import RawMessage, Rejected
from operators.units import InstrumentKind
from operators.venue import InstrumentListed, decode_venue


def test_venue_log_with_wrong_topic_count_is_rejected_with_its_coordinates() -> None:
    log = {"address": "0x" + "11" * 20, "topics": [abi.VENUE_DEPOSIT], "data": "0x" + "00" * 32,
           "blockNumber": "0x1", "logIndex": "0x0", "blockTimestamp": "0x5"}  # fmt: skip
    msg = RawMessage("chain.logs", 2, 7, 0, None, json.dumps(log).encode())
    rejected = decode_venue(msg, "0x" + "11" * 20)
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("bad_topics") and (rejected.partition, rejected.offset) == (
        2,
        7,
    )
    assert decode_venue(msg, "0x" + "33" * 20) is None


def _listing(kind: int) -> RawMessage:
    words = (kind, 2_000 * 10**18, 1_767_225_600)
    log = {
        "address": "0x" + "11" * 20,
        "topics": [abi.VENUE_INSTRUMENT_LISTED, "0x" + "ab" * 32, "0x" + "00" * 12 + "ee" * 20],
        "data": "0x" + "".join(format(w, "064x") for w in words),
        "blockNumber": "0x1",
        "logIndex": "0x0",
        "blockTimestamp": "0x5",
    }
    return RawMessage("chain.logs", 0, 1, 0, None, json.dumps(log).encode())


def test_listing_decodes_its_kind_as_an_instrument_kind() -> None:
    listed = decode_venue(_listing(3), "0x" + "11" * 20)
    assert isinstance(listed, InstrumentListed) and listed.kind is InstrumentKind.PUT


def test_listing_of_an_unknown_kind_is_rejected() -> None:
    rejected = decode_venue(_listing(4), "0x" + "11" * 20)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "invalid_field: instrument kind 4 is not one of [0, 1, 2, 3]"
