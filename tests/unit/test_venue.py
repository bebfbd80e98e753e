"""The venue's events decoded for the risk engine: bad logs (real ones: test_devchain.py)."""

from __future__ import annotations

import json

import pytest

from operators import abi
from operators.model import RawMessage, Rejected
from operators.units import InstrumentKind
from operators.venue import Fill, InstrumentListed, decode_venue


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


VENUE = "0x" + "11" * 20
E18 = 10**18
ACCOUNT_TOPIC = abi.address_topic("0x" + "ab" * 20)
INSTRUMENT = "0x" + "cd" * 32


def _log(topics: list[str], words: list[int]) -> RawMessage:
    log = {"address": VENUE, "topics": topics, "data": abi.encode_data(*words),
           "blockNumber": "0x1", "logIndex": "0x0", "blockTimestamp": "0x6450ffef"}  # fmt: skip
    return RawMessage("chain.logs", 1, 9, 0, VENUE.encode(), json.dumps(log).encode())


def _listed(kind: int, strike: int, expiry: int) -> RawMessage:
    return _log([abi.VENUE_INSTRUMENT_LISTED, INSTRUMENT, ACCOUNT_TOPIC], [kind, strike, expiry])


@pytest.mark.parametrize(
    ("msg", "detail"),
    [
        (_listed(2, 0, 1_767_225_600), "option strike 0 e18"),
        (_listed(3, 0, 1_767_225_600), "option strike 0 e18"),
        (_listed(2, 2_000 * E18, 0), "option expiry 0 s"),
        (_listed(2, 2_000 * E18, 2**64 - 1), "option expiry"),
        (_listed(2, 2**256 - 1, 1_767_225_600), "option strike"),
        (_listed(1, 2_000 * E18, 0), "spot and perps have no strike"),
        (_listed(0, 0, 1_767_225_600), "spot and perps have no strike"),
        (_log([abi.VENUE_DEPOSIT, ACCOUNT_TOPIC, ACCOUNT_TOPIC], [0]), "amount 0"),
        (_log([abi.VENUE_WITHDRAW, ACCOUNT_TOPIC, ACCOUNT_TOPIC], [2**128]), "amount"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [2**255 - 1, E18]), "size"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [0, E18]), "size 0"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [E18, 0]), "price 0"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [E18, 2**256 - 1]), "price"),
        (
            _log(
                [abi.VENUE_LIQUIDATED, ACCOUNT_TOPIC, ACCOUNT_TOPIC, INSTRUMENT], [-(2**255), E18]
            ),
            "size",
        ),
    ],
    ids=[
        "call-strike-0",
        "put-strike-0",
        "option-no-expiry",
        "option-expiry-2**64",
        "strike-2**256",
        "perp-with-strike",
        "spot-with-expiry",
        "deposit-0",
        "withdraw-2**128",
        "trade-size-2**255",
        "trade-size-0",
        "trade-price-0",
        "trade-price-2**256",
        "liquidation-size--2**255",
    ],
)
def test_instrument_listed_with_strike_0_for_an_option_goes_to_the_deadletter_with_stage_venue(
    msg: RawMessage, detail: str
) -> None:
    rejected = decode_venue(msg, VENUE)
    assert isinstance(rejected, Rejected), rejected
    assert (rejected.stage, rejected.partition, rejected.offset) == ("venue", 1, 9)
    assert rejected.reason.startswith("invalid_field: ") and detail in rejected.reason


def test_venue_trade_with_an_instrument_topic_that_is_not_a_word_is_rejected() -> None:
    msg = _log([abi.VENUE_TRADE, ACCOUNT_TOPIC, "0xcd"], [E18, E18])
    rejected = decode_venue(msg, VENUE)
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("bad_topic: ")


def test_venue_events_within_the_bounds_decode() -> None:
    listed = decode_venue(_listed(2, 2_000 * E18, 1_767_225_600), VENUE)
    assert isinstance(listed, InstrumentListed) and listed.instrument == INSTRUMENT
    trade = decode_venue(
        _log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [-E18, 90 * E18]), VENUE
    )
    assert isinstance(trade, Fill) and (trade.size_e18, trade.price_e18) == (-E18, 90 * E18)
