"""The venue's events decoded for the risk engine: bad logs (real ones: test_devchain.py)."""

from __future__ import annotations

import json

from operators import abi
from operators.model import RawMessage, Rejected
from operators.venue import decode_venue


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
