"""The venue's events decoded for the risk engine: bad logs (real ones: test_devchain.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import abi
from operators.model import RawMessage, Rejected
from operators.risk import order_id as order_id_of
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
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [2**255 - 1, E18, 0]), "size"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [0, E18, 0]), "size 0"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [E18, 0, 0]), "price 0"),
        (_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [E18, 2**256 - 1, 0]), "price"),
        (
            _log(
                [abi.VENUE_LIQUIDATED, ACCOUNT_TOPIC, ACCOUNT_TOPIC, INSTRUMENT],
                [-(2**255), E18, 0],
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
    msg = _log([abi.VENUE_TRADE, ACCOUNT_TOPIC, "0xcd"], [E18, E18, 0])
    rejected = decode_venue(msg, VENUE)
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("bad_topic: ")


def test_venue_events_within_the_bounds_decode() -> None:
    listed = decode_venue(_listed(2, 2_000 * E18, 1_767_225_600), VENUE)
    assert isinstance(listed, InstrumentListed) and listed.instrument == INSTRUMENT
    trade = decode_venue(
        _log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [-E18, 90 * E18, 0]), VENUE
    )
    assert isinstance(trade, Fill) and (trade.size_e18, trade.price_e18) == (-E18, 90 * E18)
    assert trade.order_id is None  # bytes32(0): a trade no order drove


LIQUIDATOR = "0x" + "ef" * 20


def test_a_liquidation_encoded_with_the_abi_encoders_decodes_to_the_same_fields() -> None:
    order_id = order_id_of("liquidation", "0x" + "ab" * 20, 1_767_225_600_000, INSTRUMENT)
    topics = [abi.VENUE_LIQUIDATED, ACCOUNT_TOPIC, abi.address_topic(LIQUIDATOR), INSTRUMENT]
    fill = decode_venue(_log(topics, [-3 * E18, 1_800 * E18, int(order_id, 16)]), VENUE)
    assert fill == Fill(
        account="0x" + "ab" * 20, instrument=INSTRUMENT, size_e18=-3 * E18,
        price_e18=1_800 * E18, liquidator=LIQUIDATOR, order_id=order_id,
        ts_ms=0x6450FFEF * 1000, seq=1 << 20, removed=False,
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(word=st.integers(0, 2**256 - 1), liquidation=st.booleans())
def test_the_order_id_survives_encode_then_decode_for_any_256_bit_value(
    word: int, liquidation: bool
) -> None:
    if liquidation:
        topics = [abi.VENUE_LIQUIDATED, ACCOUNT_TOPIC, abi.address_topic(LIQUIDATOR), INSTRUMENT]
    else:
        topics = [abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT]
    fill = decode_venue(_log(topics, [E18, 90 * E18, word]), VENUE)
    assert isinstance(fill, Fill)
    assert fill.order_id == (None if word == 0 else abi.int_topic(word))
    assert fill.order_id is None or int(fill.order_id, 16) == word


def test_a_trade_with_the_old_two_word_layout_goes_to_the_deadletter() -> None:
    rejected = decode_venue(_log([abi.VENUE_TRADE, ACCOUNT_TOPIC, INSTRUMENT], [E18, E18]), VENUE)
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("bad_data_length: ")
