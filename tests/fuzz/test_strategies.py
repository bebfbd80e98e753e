"""Hypothesis strategies for every kind of input message, with adversarial numbers, strings,
sizes and timestamps, through the decoders and both stages' cores (``conftest.Harness``).

Event times are drawn near the corpus's (a day either way) or outside any plausible range
(before 2009, from 2100, negative, beyond an int64): a time far ahead but plausible moves a
partition's watermark, which is the event-time bound of issue 8, section 1.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators import abi, bounds
from operators.model import Observation, OptionQuote, RawMessage, Rejected
from operators.registry import FeedSource
from operators.venue import CollateralMove, Fill, InstrumentListed, decode_venue

T0_S = 1_683_029_999
VENUE = "0x" + "77" * 20

# --- numbers -------------------------------------------------------------------------------

EDGE_INTS = st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63, 2**64, 2**255, 2**256, 10**400])
EDGE_STRINGS = st.sampled_from(
    ["NaN", "sNaN", "-NaN", "Infinity", "-Infinity", "9e999999", "-9e999999", "1e400",
     "1e-400", "1e-999999", "0", "-0", "", " ", "1,5", "0x10", "1e13", "0.000000000001"]
)  # fmt: skip
DECIMAL_TEXT = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats(1e-15, 1e15).map(repr),
    EDGE_STRINGS,
)
JSON_NUMBER = st.one_of(
    st.integers(-(2**80), 2**80), st.floats(allow_nan=False, allow_infinity=False), EDGE_INTS
)
NUMBER = st.one_of(DECIMAL_TEXT, JSON_NUMBER, st.none(), st.booleans())
SECONDS = st.one_of(
    st.integers(T0_S - 86_400, T0_S + 86_400),
    st.integers(1_230_768_000, 4_102_444_800 - 1),  # plausible-looking, any distance
    st.integers(-(2**70), 1_230_768_000 - 1),  # before 2009
    st.integers(4_102_444_800, 2**300),  # from 2100
)
QUANTITY_TIME = st.one_of(SECONDS.filter(lambda s: s >= 0).map(hex), SECONDS, NUMBER)
QUANTITY = st.one_of(
    st.integers(0, 2**64).map(hex), st.integers(-5, 2**64), st.sampled_from(["0x", "0xg", "1"])
)
WORD = st.one_of(
    st.integers(0, 2**256 - 1),
    st.sampled_from([0, 1, 2**112 - 1, 2**112, 2**128, 2**160 - 1, 2**160, 2**255, 2**256 - 1]),
)
TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["ETH", "WETH", "USD", "USDC", "BTC"]))


def _log(address: str, topics: list[str], data: str, ts: Any, removed: bool) -> dict[str, Any]:
    return {
        "address": address, "topics": topics, "data": data, "blockNumber": hex(17_173_049),
        "logIndex": "0x1", "blockTimestamp": ts, "blockHash": "0x" + "ab" * 32,
        "removed": removed,
    }  # fmt: skip


def _data(words: list[int]) -> str:
    return "0x" + "".join(format(w, "064x") for w in words)


def logs(address: str, topic0: str, topics: int, words: int) -> st.SearchStrategy[dict]:
    """A log of event ``topic0`` at ``address``: adversarial words, topics and times."""
    return st.builds(
        lambda t, w, ts, removed: _log(address, [topic0, *map(abi.int_topic, t)], _data(w), ts,
                                       removed),
        st.lists(WORD, min_size=topics - 1, max_size=topics - 1),
        st.lists(WORD, min_size=words, max_size=words),
        QUANTITY_TIME,
        st.booleans(),
    )  # fmt: skip


def markers() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"progress": st.one_of(st.just(True), NUMBER), "blockTimestamp": QUANTITY_TIME}
    )


def quotes(option: bool) -> st.SearchStrategy[dict]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "source": TEXT, "base": TEXT, "quote": TEXT, "bid": NUMBER, "ask": NUMBER,
        "bid_size": NUMBER, "ask_size": NUMBER,
        "ts": st.one_of(SECONDS.map(lambda s: s * 1000), NUMBER),
    }  # fmt: skip
    if option:
        fields |= {"instrument": st.just(abi.int_topic(0xCA11)), "iv": NUMBER}
    return st.fixed_dictionaries(fields)


def _messages(data: st.DataObject, fuzz: Any) -> list[RawMessage]:
    registry = fuzz.harness.params.registry
    by_kind: dict[str, list[str]] = {}
    for address, src in registry.by_address.items():
        kind = "chainlink" if isinstance(src, FeedSource) else src.kind
        by_kind.setdefault(kind, []).append(address)
    pick = st.sampled_from
    log = st.one_of(
        pick(by_kind["uniswap_v3"]).flatmap(lambda a: logs(a, abi.V3_SWAP, 3, 5)),
        pick(by_kind["uniswap_v2"]).flatmap(lambda a: logs(a, abi.V2_SYNC, 1, 2)),
        pick(by_kind["chainlink"]).flatmap(lambda a: logs(a, abi.CHAINLINK_ANSWER_UPDATED, 3, 1)),
    )
    venue = st.one_of(
        logs(VENUE, abi.VENUE_INSTRUMENT_LISTED, 3, 3),
        logs(VENUE, abi.VENUE_DEPOSIT, 3, 1),
        logs(VENUE, abi.VENUE_WITHDRAW, 3, 1),
        logs(VENUE, abi.VENUE_TRADE, 3, 3),
        logs(VENUE, abi.VENUE_LIQUIDATED, 4, 3),
    )
    kinds = st.one_of(
        log.map(lambda v: ("chain.logs", v["address"].encode(), v)),
        venue.map(lambda v: ("chain.logs", VENUE.encode(), v)),
        markers().map(lambda v: ("chain.logs", b"progress:0", v)),
        quotes(option=False).map(lambda v: ("dex.quotes", b"q", v)),
        quotes(option=True).map(lambda v: ("dex.quotes", b"q", v)),
    )
    drawn = data.draw(st.lists(kinds, min_size=1, max_size=40))
    offsets: dict[str, int] = {}
    out = []
    for topic, key, value in drawn:
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        raw = json.dumps(value).encode()  # Python's JSON writes NaN and 10**400 as they are
        out.append(RawMessage(topic, 0, offset, T0_S * 1000, key, raw))
    return out


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_adversarial_messages_raise_nothing_and_every_reject_reaches_the_deadletter(
    fuzz: Any, data: st.DataObject
) -> None:
    tally = fuzz.harness.run(_messages(data, fuzz))

    assert tally.escaped == [], tally.escaped[0]
    assert tally.guarded == [] and tally.unaccounted == []
    assert tally.found == tally.rejected


@SETTINGS
@given(data=st.data())
def test_every_decoded_price_weight_size_and_amount_is_finite_and_within_the_bounds(
    fuzz: Any, data: st.DataObject
) -> None:
    decoder = fuzz.harness.params.decoder
    for msg in _messages(data, fuzz):
        if msg.key == VENUE.encode():
            event = decode_venue(msg, VENUE)
            assert event is None or isinstance(event, Rejected) or _venue_in_bounds(event)
            continue
        item = decoder.decode(msg)
        if isinstance(item, Observation):
            assert bounds.PRICE_MIN <= item.price <= bounds.PRICE_MAX
            assert 0 <= item.weight <= bounds.WEIGHT_MAX
            assert math.isfinite(item.spread) and item.spread >= 0
        elif isinstance(item, OptionQuote):
            assert bounds.PRICE_MIN / 2 <= item.mid <= bounds.PRICE_MAX
            assert item.iv is None or 0 < item.iv <= bounds.IV_MAX


def _venue_in_bounds(event: InstrumentListed | CollateralMove | Fill) -> bool:
    e18 = Decimal(10**18)
    if isinstance(event, InstrumentListed):
        if not event.kind.is_option:
            return event.strike_e18 == event.expiry_s == 0
        strike = Decimal(event.strike_e18) / e18
        return bounds.PRICE_MIN <= strike <= bounds.PRICE_MAX and event.expiry_s > 0
    if isinstance(event, CollateralMove):
        return 0 < abs(event.amount) <= bounds.AMOUNT_MAX
    size, price = Decimal(event.size_e18) / e18, Decimal(event.price_e18) / e18
    return 0 < abs(size) <= bounds.SIZE_MAX and bounds.PRICE_MIN <= price <= bounds.PRICE_MAX


def test_the_registry_of_the_corpus_has_every_kind_of_source(fuzz: Any) -> None:
    kinds = {
        "chainlink" if isinstance(s, FeedSource) else s.kind
        for s in fuzz.harness.params.registry.by_address.values()
    }
    assert kinds == {"chainlink", "uniswap_v2", "uniswap_v3"}  # the strategies draw each
