"""flows.cli.generate: determinism, wire formats, decoding against the path, and each fault.

Every decoded price is checked against the generated USD path at the message's event time,
so a wrong token order, wrong decimals or a wrong cross shows up as a price off by orders
of magnitude (or by the inverse), far outside the tolerances below.
"""

from __future__ import annotations

import itertools
import zlib
from collections import defaultdict
from statistics import median
from typing import Any

import msgspec
import pytest

from flows.cli.generate import (
    FAULTS,
    MANIPULATION,
    REF_BLOCK_TS_S,
    TOKENS,
    Generated,
    GenerateParams,
    generate,
)
from operators import abi
from operators.config import load_config
from operators.decode import Decoded, Decoder
from operators.model import Observation, RawMessage, Rejected, Retraction
from operators.registry import DEFAULT_SOURCES, PoolSource, Registry

POOL_TOLERANCE = 0.01
"""Pool prices scatter 2-10 bp (one sigma) around the path; 1 % is more than 10 sigma."""
QUOTE_TOLERANCE = 0.002
"""Quote mids scatter 1 bp around the path, plus up to 1.5 bp of rounding to the tick."""
FEED_TOLERANCE = 1e-8
"""Chainlink answers are the path rounded to 8 decimals."""

VALID_KINDS: dict[str, type[Observation] | None] = {
    "v3_swap": Observation,
    "v2_sync": Observation,
    "feed_answer": Observation,
    "quote": Observation,
    "late": Observation,
    "manipulated_pool": Observation,
    "v2_swap": None,
    "feed_round": None,
    "transfer": None,
}
REJECT_REASONS = {
    "malformed_json": "invalid_json:",
    "not_utf8": "not_utf8:",
    "bad_data_length": "bad_data_length:",
    "bad_quantity": "bad_quantity:",
    "unexpected_topic": "unexpected_topic:",
    "invalid_quote": "invalid_quote:",
}


@pytest.fixture(scope="module")
def hour() -> Generated:
    """The default recording: one hour, three assets, every fault."""
    return generate(GenerateParams())


@pytest.fixture(scope="module")
def wide() -> Generated:
    """More pools than quote tokens (so every quote rotation is used), five partitions."""
    return generate(
        GenerateParams(
            seed=3, minutes=20, v3_pools_per_asset=4, v2_pools_per_asset=3, quote_sources=6,
            partitions=5, chain_logs_topic="raw.logs", dex_quotes_topic="raw.quotes",
        )
    )  # fmt: skip


def _registry(g: Generated) -> Registry:
    return Registry.from_config(load_config(g.config_toml).oracle)


def _decoded(g: Generated) -> list[Decoded]:
    topics = load_config(g.config_toml).topics
    decoder = Decoder(_registry(g), topics.chain_logs, topics.dex_quotes)
    return [decoder.decode(m) for m in g.messages]


def _json(m: RawMessage) -> dict[str, Any]:
    assert m.value is not None
    value: dict[str, Any] = msgspec.json.decode(m.value)
    return value


def _event_ms(m: RawMessage) -> int:
    value = _json(m)
    if "ts" in value:
        return int(value["ts"])
    return abi.quantity(value["blockTimestamp"], "blockTimestamp") * 1000


def _expected(g: Generated, registry: Registry, obs: Observation) -> float:
    base, quote = registry.asset_of(obs.base), registry.asset_of(obs.quote)
    return g.price_at(base, obs.ts_ms) / g.price_at(quote, obs.ts_ms)


def test_generate_when_same_seed_then_identical_messages() -> None:
    params = GenerateParams(minutes=15)

    first, second = generate(params), generate(params)

    assert first.messages == second.messages
    assert first.kinds == second.kinds
    assert first.config_toml == second.config_toml


def test_generate_when_other_seed_then_other_messages_and_same_sources() -> None:
    first = generate(GenerateParams(minutes=15, seed=1))
    second = generate(GenerateParams(minutes=15, seed=2))

    assert first.messages != second.messages
    assert first.config_toml.split("\n")[1:] == second.config_toml.split("\n")[1:]


@pytest.mark.parametrize("name", ["hour", "wide"])
def test_offsets_when_grouped_by_partition_then_contiguous_from_zero(
    name: str, request: pytest.FixtureRequest
) -> None:
    g: Generated = request.getfixturevalue(name)
    partitions = 2 if name == "hour" else 5
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)

    for m in g.messages:
        assert m.key is not None
        assert m.partition == zlib.crc32(m.key) % partitions
        offsets[m.topic, m.partition].append(m.offset)

    assert len({topic for topic, _ in offsets}) == 2
    for offs in offsets.values():
        assert offs == list(range(len(offs)))


@pytest.mark.parametrize("name", ["hour", "wide"])
def test_decode_when_valid_message_then_observation_or_none_by_kind(
    name: str, request: pytest.FixtureRequest
) -> None:
    g: Generated = request.getfixturevalue(name)

    for m, kind, d in zip(g.messages, g.kinds, _decoded(g), strict=True):
        if kind in VALID_KINDS:
            expected = VALID_KINDS[kind]
            assert (type(d) if d is not None else None) is expected, (kind, m, d)


@pytest.mark.parametrize("name", ["hour", "wide"])
def test_decoded_prices_when_compared_with_path_then_within_noise(
    name: str, request: pytest.FixtureRequest
) -> None:
    g: Generated = request.getfixturevalue(name)
    registry = _registry(g)
    errors: dict[str, list[float]] = defaultdict(list)
    seen: set[str] = set()

    for kind, d in zip(g.kinds, _decoded(g), strict=True):
        if isinstance(d, Observation) and kind in ("v3_swap", "v2_sync", "feed_answer", "quote"):
            errors[kind].append(abs(d.price / _expected(g, registry, d) - 1))
            seen.add(d.source)

    assert max(errors["v3_swap"] + errors["v2_sync"]) < POOL_TOLERANCE
    assert median(errors["v3_swap"] + errors["v2_sync"]) < 0.001
    assert max(errors["quote"]) < QUOTE_TOLERANCE
    assert max(errors["feed_answer"]) < FEED_TOLERANCE
    pools = [s for s in registry.by_address.values() if s.address in seen]
    assert {p.base_is_token0 for p in pools if isinstance(p, PoolSource)} == {True, False}
    assert {p.quote for p in pools} >= {"USDC", "USDT", "ETH", "USD"}


def test_config_when_loaded_then_declares_every_generated_source(hour: Generated) -> None:
    oracle = load_config(hour.config_toml).oracle
    registry = _registry(hour)
    addresses = {s.address for s in oracle.sources}
    chain_keys = {m.key.decode() for m in hour.messages if m.topic == "chain.logs" and m.key}

    assert oracle.use_default_registry
    assert oracle.tokens["LINK"].decimals == 18 and oracle.tokens["LINK"].asset == "LINK"
    assert registry.assets == ("BTC", "ETH", "LINK")
    assert registry.crosses == {"ETH": ("BTC", "LINK")}
    assert addresses.isdisjoint({s["address"] for s in DEFAULT_SOURCES})
    assert addresses.isdisjoint({t.address for t in TOKENS.values()})
    assert addresses <= chain_keys


def test_chain_logs_when_parsed_then_blocks_are_consistent(hour: Generated) -> None:
    blocks: dict[int, tuple[str, int]] = {}
    indexes: dict[int, set[int]] = defaultdict(set)
    kinds_of_quantity: set[type] = set()

    for m, kind in zip(hour.messages, hour.kinds, strict=True):
        if m.topic != "chain.logs" or kind in REJECT_REASONS or kind == "reorg_replacement":
            continue
        log = _json(m)
        number = abi.quantity(log["blockNumber"], "blockNumber")
        ts = abi.quantity(log["blockTimestamp"], "blockTimestamp")
        assert m.key == log["address"].encode() and log["address"] == log["address"].lower()
        assert blocks.setdefault(number, (log["blockHash"], ts)) == (log["blockHash"], ts)
        assert (ts - REF_BLOCK_TS_S) % 12 == 0
        if kind not in ("late", "reorg_removed"):
            assert 0 <= m.timestamp_ms - ts * 1000 < 2000
            index = abi.quantity(log["logIndex"], "logIndex")
            assert index not in indexes[number]
            indexes[number].add(index)
        assert abi.quantity(log["chainId"], "chainId") == 1
        kinds_of_quantity.add(type(log["blockNumber"]))

    assert kinds_of_quantity == {int, str}
    numbers = sorted(blocks)
    assert all(b - a == 1 for a, b in itertools.pairwise(numbers))


def test_quotes_when_parsed_then_strings_numbers_and_spreads(hour: Generated) -> None:
    price_types: set[type] = set()

    for m, kind in zip(hour.messages, hour.kinds, strict=True):
        if kind != "quote":
            continue
        q = _json(m)
        assert m.key == q["source"].encode()
        assert 0 <= m.timestamp_ms - q["ts"] <= 60
        assert 0 < float(q["bid"]) < float(q["ask"])
        assert float(q["bid_size"]) > 0 and float(q["ask_size"]) > 0
        price_types.add(type(q["bid"]))

    assert price_types == {str, float}


def test_event_time_when_in_partition_then_ordered_except_late_and_reorg(
    hour: Generated,
) -> None:
    newest: dict[tuple[str, int], int] = {}

    for m, kind in zip(hour.messages, hour.kinds, strict=True):
        if kind in REJECT_REASONS or kind == "late" or kind.startswith("reorg"):
            continue
        ts = _event_ms(m)
        assert ts >= newest.get((m.topic, m.partition), 0), (kind, m)
        newest[m.topic, m.partition] = ts


def test_faults_when_counted_then_every_fault_listed_and_injected(hour: Generated) -> None:
    assert set(hour.faults) == FAULTS
    assert all(count > 0 for count in hour.faults.values()), hour.faults
    assert sum(hour.counts.values()) == len(hour.messages)
    for kind in REJECT_REASONS:
        assert hour.faults[kind] == hour.counts[kind]


@pytest.mark.parametrize("kind", sorted(REJECT_REASONS))
def test_malformed_when_decoded_then_rejected_with_reason(kind: str, hour: Generated) -> None:
    decoded = [d for k, d in zip(hour.kinds, _decoded(hour), strict=True) if k == kind]

    assert decoded
    for d in decoded:
        assert isinstance(d, Rejected) and d.reason.startswith(REJECT_REASONS[kind]), d


def test_malformed_when_injected_then_on_both_topics(hour: Generated) -> None:
    for kind in ("malformed_json", "not_utf8"):
        topics = {m.topic for m, k in zip(hour.messages, hour.kinds, strict=True) if k == kind}
        assert topics == {"chain.logs", "dex.quotes"}


def test_late_when_published_then_minutes_behind_its_partition(hour: Generated) -> None:
    newest: dict[int, int] = {}
    lags: list[int] = []

    for m, kind in zip(hour.messages, hour.kinds, strict=True):
        if m.topic != "chain.logs" or kind in REJECT_REASONS:
            continue
        ts = _event_ms(m)
        if kind == "late":
            lags.append(newest[m.partition] - ts)
            assert m.timestamp_ms - ts >= 300_000
        newest[m.partition] = max(newest.get(m.partition, 0), ts)

    assert len(lags) == hour.faults["late"]
    assert min(lags) > 180_000


def test_manipulated_pool_when_in_stretch_then_price_pushed_up(hour: Generated) -> None:
    registry = _registry(hour)
    start, end = hour.plan.manipulated_ms
    ratios = [
        d.price / _expected(hour, registry, d)
        for k, d in zip(hour.kinds, _decoded(hour), strict=True)
        if k == "manipulated_pool" and isinstance(d, Observation)
    ]
    manipulated = [
        m for m, k in zip(hour.messages, hour.kinds, strict=True) if k == "manipulated_pool"
    ]

    assert len(ratios) == hour.faults["manipulated_pool"] > 0
    assert all(abs(r / MANIPULATION - 1) < POOL_TOLERANCE for r in ratios)
    assert {m.key for m in manipulated} == {(hour.plan.manipulated_pool or "").encode()}
    assert all(start <= _event_ms(m) < end for m in manipulated)


def test_stale_source_when_past_cutoff_then_no_more_quotes(hour: Generated) -> None:
    source = hour.plan.stale_source
    assert source is not None
    times = [
        _event_ms(m)
        for m, k in zip(hour.messages, hour.kinds, strict=True)
        if k == "quote" and m.key == source.encode()
    ]

    assert times and max(times) < hour.plan.stale_from_ms
    assert hour.faults["stale_source"] > 0


def test_reorg_when_block_replaced_then_retracted_and_resent_with_new_hash(
    hour: Generated,
) -> None:
    decoded = _decoded(hour)
    originals: dict[tuple[str, int], tuple[dict[str, Any], Decoded]] = {}
    removed: list[tuple[RawMessage, dict[str, Any], Decoded]] = []
    replaced: list[tuple[RawMessage, dict[str, Any], Decoded]] = []
    for m, kind, d in zip(hour.messages, hour.kinds, decoded, strict=True):
        if m.topic != "chain.logs" or kind in REJECT_REASONS:
            continue
        log = _json(m)
        if abi.quantity(log["blockNumber"], "blockNumber") != hour.plan.reorg_block:
            continue
        if kind == "reorg_removed":
            removed.append((m, log, d))
        elif kind == "reorg_replacement":
            replaced.append((m, log, d))
        else:
            originals[log["address"], abi.quantity(log["logIndex"], "logIndex")] = (log, d)

    assert 2 <= len(removed) == len(replaced) == len(originals) == hour.faults["reorg"]
    for _m, log, d in removed:
        original, seen = originals[log["address"], abi.quantity(log["logIndex"], "logIndex")]
        assert log == {**original, "removed": True}
        if isinstance(seen, Observation):
            assert isinstance(d, Retraction) and d.obs_id == seen.obs_id
    new_hashes = {log["blockHash"] for _m, log, _d in replaced}
    assert len(new_hashes) == 1 and new_hashes.isdisjoint(
        log["blockHash"] for log, _ in originals.values()
    )
    for m, log, d in replaced:
        assert not log["removed"]
        assert isinstance(d, Observation) or d is None
        retraction = next(r for r, rl, _ in removed if rl["logIndex"] == log["logIndex"])
        assert retraction.partition == m.partition and retraction.offset < m.offset


def test_generate_when_no_faults_then_clean_recording() -> None:
    g = generate(GenerateParams(minutes=20, faults=frozenset()))

    assert set(g.kinds) <= set(VALID_KINDS)
    assert all(count == 0 for count in g.faults.values())
    assert g.plan.manipulated_pool is None and g.plan.stale_source is None
    for kind, d in zip(g.kinds, _decoded(g), strict=True):
        assert (type(d) if d is not None else None) is VALID_KINDS[kind]


def test_generate_when_one_fault_then_only_that_fault() -> None:
    g = generate(GenerateParams(minutes=20, faults=frozenset({"bad_quantity"})))

    assert {k for k, n in g.faults.items() if n} == {"bad_quantity"}


def test_extra_logs_when_merged_then_in_event_time_order_in_their_own_block() -> None:
    # A hand-made log in the layout of a Uniswap V2 USDC/WETH Sync (a default source), at
    # mainnet block 17173049; the reserves give 1,870 USDC per WETH.
    extra: dict[str, Any] = {
        "address": "0xb4e16d0168e52d35cacd2c6185b44281ec28c9dc",
        "topics": [abi.V2_SYNC],
        "data": abi.encode_data(18_700_000 * 10**6, 10_000 * 10**18),
        "blockNumber": hex(17_173_049),
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x5",
        "logIndex": "0x3",
        "removed": False,
        "blockTimestamp": hex(REF_BLOCK_TS_S),
        "chainId": "0x1",
    }
    g = generate(GenerateParams(minutes=30, extra_logs=(extra,)))
    registry = _registry(g)
    topics = load_config(g.config_toml).topics
    decoder = Decoder(registry, topics.chain_logs, topics.dex_quotes)

    (i,) = [i for i, k in enumerate(g.kinds) if k == "extra"]
    merged = g.messages[i]
    obs = decoder.decode(merged)
    neighbours = [
        (m.offset, _event_ms(m))
        for m, k in zip(g.messages, g.kinds, strict=True)
        if m.topic == merged.topic and m.partition == merged.partition
        and k in VALID_KINDS and k != "late"
    ]  # fmt: skip
    numbers = {
        abi.quantity(_json(m)["blockNumber"], "blockNumber")
        for m, k in zip(g.messages, g.kinds, strict=True)
        if m.topic == "chain.logs" and k in VALID_KINDS
    }

    assert _json(merged) == extra and merged.key == extra["address"].encode()
    assert isinstance(obs, Observation) and obs.price == pytest.approx(1_870.0)
    assert 17_173_049 not in numbers and {17_173_048, 17_173_050} <= numbers
    assert all(
        (offset < merged.offset) == (ts < REF_BLOCK_TS_S * 1000)
        for offset, ts in neighbours
        if offset != merged.offset and ts != REF_BLOCK_TS_S * 1000
    )


def test_generate_when_renamed_topics_then_config_names_them(wide: Generated) -> None:
    topics = load_config(wide.config_toml).topics

    assert (topics.chain_logs, topics.dex_quotes) == ("raw.logs", "raw.quotes")
    assert {m.topic for m in wide.messages} == {"raw.logs", "raw.quotes"}


@pytest.mark.parametrize(
    "changes",
    [
        {"assets": ("DOGE",)},
        {"assets": ()},
        {"faults": frozenset({"typo"})},
        {"start_prices": {"BTC": 30_000.0}, "assets": ("ETH",)},
        {"quote_sources": 7},
        {"partitions": 0},
        {"chain_logs_topic": "x", "dex_quotes_topic": "x"},
    ],
)
def test_params_when_invalid_then_value_error(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GenerateParams(**changes)


def test_start_prices_when_given_then_path_starts_there() -> None:
    g = generate(GenerateParams(minutes=5, start_prices={"ETH": 1_865.5}))

    assert g.price_at("ETH", g.start_ms) == 1_865.5
