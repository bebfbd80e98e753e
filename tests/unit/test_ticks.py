"""The oracle's ticks (``oracle.cadence``): a price at every block over the trailing window,
equal to the aggregate recomputed from scratch, whatever the interleaving of partitions."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import oracle_topic
from operators.config import ConfigError, load_config
from operators.intake import PartitionIntake
from operators.model import (
    AssetBatch,
    Observation,
    OraclePrice,
    OracleProgress,
    PriceBatch,
    RawBatch,
    RawMessage,
    Rejected,
    Retraction,
)
from operators.oracle import AssetOracle, Carry, OracleParams, fold_at
from operators.risk_intake import RiskIntake
from operators.stages import StageParams, stage_params
from operators.ticks import AssetTicks
from operators.venue import VenueBatch
from tests.unit.test_risk import ACCOUNTS, PARAMS, _price, _setup, _shard
from tests.unit.test_risk import T0 as RISK_T0
from tests.unit.test_risk_intake import PARAMS as RISK_INTAKE

T0 = 1_683_028_800_000  # 2023-05-02 12:00:00 UTC
W = 60_000
LATENESS = 5_000
BLOCK_MS = 12_000
TOML = f"""[oracle]
min_sources = 2
allowed_lateness_s = {LATENESS / 1000}
jump_threshold = 1000
cadence = "block"
"""
SP = stage_params(load_config(TOML))
CHAIN = "0-chain.logs"


def _quote(part: int, offset: int, source: str, ts: int, mid: float) -> RawMessage:
    body = {"source": source, "base": "WETH", "quote": "USDC", "bid": mid - 0.5, "ask": mid + 0.5,
            "bid_size": 1, "ask_size": 1, "ts": ts}  # fmt: skip
    return RawMessage("dex.quotes", part, offset, ts, source.encode(), json.dumps(body).encode())


def _marker(offset: int, ts: int) -> RawMessage:
    body = {"progress": True, "blockNumber": hex(offset + 1), "blockTimestamp": hex(ts // 1000)}
    return RawMessage("chain.logs", 0, offset, ts, b"", json.dumps(body).encode())


def _run(batches: list[RawBatch], order: list[int], sp: StageParams = SP) -> list[OraclePrice]:
    """Intake and oracle over ``batches``, the partitions taken in turn as ``order`` says;
    the tick rows in the order published."""
    parts = sorted({b.part for b in batches})
    intakes = {p: PartitionIntake(part=p) for p in parts}
    oracles: dict[str, AssetOracle] = {}
    queues = {p: [b for b in batches if b.part == p] for p in parts}
    ticks: list[OraclePrice] = []
    picks = iter(order)
    while any(queues.values()):
        part = parts[next(picks, 0) % len(parts)]
        if not queues[part]:
            part = next(p for p in parts if queues[p])
        taken = intakes[part].on_batch(queues[part].pop(0), sp.decoder, sp.intake)
        for asset, ab in taken.batches:
            oracle = oracles.setdefault(asset, AssetOracle(asset, tuple(parts)))
            ticks += oracle.on_batch(ab, sp.oracle).ticks
    return ticks


def _chunks(part: str, msgs: list[RawMessage], size: int = 3) -> list[RawBatch]:
    chunks = [msgs[i : i + size] for i in range(0, len(msgs), size)] or [[]]
    return [RawBatch(part, c, i == len(chunks) - 1) for i, c in enumerate(chunks)]


def test_block_tick_is_published_once_the_block_is_complete_and_quotes_are_past_it() -> None:
    intake_c, intake_q = PartitionIntake(part=CHAIN), PartitionIntake(part="0-dex.quotes")
    oracle = AssetOracle("ETH", (CHAIN, "0-dex.quotes"))
    quotes = [_quote(0, 0, "a", T0 + 1_000, 1800.0), _quote(0, 1, "b", T0 + 2_000, 1802.0)]

    def step(intake: PartitionIntake, *msgs: RawMessage) -> list[OraclePrice]:
        taken = intake.on_batch(RawBatch(intake.part, list(msgs)), SP.decoder, SP.intake)
        return [t for _, ab in taken.batches for t in oracle.on_batch(ab, SP.oracle).ticks]

    assert step(intake_q, *quotes) == []
    assert step(intake_c, _marker(0, T0 + BLOCK_MS)) == []  # quotes not yet past the block
    (tick,) = step(intake_q, _quote(0, 2, "a", T0 + BLOCK_MS + LATENESS, 1810.0))
    assert (tick.cadence, tick.window_start_ms, tick.window_end_ms) == (
        "tick", T0 + BLOCK_MS - W, T0 + BLOCK_MS,
    )  # fmt: skip
    assert (tick.price, tick.sources, tick.status) == (1801.0, 2, "ok")
    assert oracle.ticks is not None and oracle.ticks.through == T0 + BLOCK_MS


def test_window_cadence_publishes_no_ticks_and_the_same_windows() -> None:
    window = stage_params(load_config(TOML.replace('cadence = "block"', "")))
    msgs = [_quote(0, i, "ab"[i % 2], T0 + i * 7_000, 1800.0 + i) for i in range(40)]
    markers = [_marker(i, T0 + i * BLOCK_MS) for i in range(25)]
    batches = _chunks("0-dex.quotes", msgs) + _chunks(CHAIN, markers)
    assert _run(batches, [0, 1] * 50, window) == []

    def windows(sp: StageParams) -> list[OraclePrice]:
        parts = (CHAIN, "0-dex.quotes")
        intakes, oracle, rows = {p: PartitionIntake(part=p) for p in parts}, None, []
        for b in batches:
            for asset, ab in intakes[b.part].on_batch(b, sp.decoder, sp.intake).batches:
                oracle = oracle or AssetOracle(asset, parts)
                rows += oracle.on_batch(ab, sp.oracle).prices
        return rows

    assert windows(window) == windows(SP)


def _obs(source: str, price: float, ts: int) -> Observation:
    return Observation(base="ETH", quote="USDC", source=source, price=price, weight=1.0,
                       spread=0.0, ts_ms=ts, seq=0, obs_id=f"{source}@{ts}")  # fmt: skip


def test_retraction_withdraws_its_observation_from_the_ticks_after_its_arrival() -> None:
    ticks = AssetTicks("ETH", ("0-p",))
    a, b, c = _obs("a", 1800.0, T0), _obs("b", 1900.0, T0), _obs("c", 1850.0, T0)
    p = SP.oracle
    ticks.on_batch(AssetBatch("0-p", 0, False, [a, b, c], -1, T0 - 1, [], [T0 - 1] * 3), p)
    gone = Retraction(base="ETH", quote="USDC", source="b", obs_id=b.obs_id, ts_ms=T0, late=True,
                      origin=_marker(0, T0))  # fmt: skip
    seen = T0 + BLOCK_MS
    blocks = [T0 + BLOCK_MS, T0 + 2 * BLOCK_MS]
    rows, _ = ticks.on_batch(
        AssetBatch("0-p", 0, False, [gone], -1, T0 + 2 * BLOCK_MS, blocks, [seen]), p
    )
    # The block the retraction arrived after keeps b; the next one is without it.
    assert [(r.window_end_ms, r.price, r.sources) for r in rows] == [
        (T0 + BLOCK_MS, 1850.0, 3),
        (T0 + 2 * BLOCK_MS, 1825.0, 2),
    ]


def test_every_n_seconds_ticks_on_its_grid_and_skips_a_gap_without_sources() -> None:
    sp = stage_params(load_config(TOML.replace('"block"', "10") + "max_age_s = 30\n"))
    msgs = [_quote(0, 0, "a", T0 + 1_000, 1800.0), _quote(0, 1, "b", T0 + 3_000, 1802.0)]
    msgs += [_quote(0, 2, "a", T0 + 600_000, 1900.0), _quote(0, 3, "b", T0 + 600_000, 1900.0)]
    batches = _chunks("0-dex.quotes", msgs, 1)
    ticks = _run(batches, [0])
    got = [((t.window_end_ms - T0) // 1000, t.status) for t in _run(batches, [0], sp)]
    assert ticks == []  # no progress markers: no block ticks
    # Fresh until 30 s after the last quote, one stale row, then nothing until the next.
    assert got == [(10, "ok"), (20, "ok"), (30, "ok"), (40, "stale"), (600, "ok")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"blok"', "Invalid enum value 'blok' - at `$.oracle.cadence`"),
        ("0", "Expected `float` > 0.0 - at `$.oracle.cadence`"),
        ("-12", "Expected `float` > 0.0 - at `$.oracle.cadence`"),
        ("true", "Expected `float | str`, got `bool` - at `$.oracle.cadence`"),
        ("0.0005", "$.oracle.cadence must be a whole number of ms; got 0.0005"),
    ],
)
def test_bad_cadence_names_its_key(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="cadence") as err:
        load_config(f"[oracle]\ncadence = {value}\n")
    assert expected in str(err.value)


# --- properties: any stream, any interleaving ---------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.integers(0, 1),  # quote partition
        st.integers(0, 2),  # source
        st.integers(-20_000, 40_000),  # step of the partition's clock, ms (back: late)
        st.floats(1700, 1900),
    ),
    min_size=1,
    max_size=50,
)


def _streams(events: list, n_blocks: int) -> tuple[list[RawBatch], dict[str, list[Observation]]]:
    """Two quote partitions and a chain partition of progress markers; and the quotes the
    ticks may take, decided from scratch: after the partition's newest ``ts`` less the
    lateness, when it arrived."""
    messages: dict[int, list[RawMessage]] = {0: [], 1: []}
    clock = {0: T0, 1: T0}
    newest: dict[int, int | None] = {0: None, 1: None}
    taken: dict[str, list[Observation]] = {}
    for part, src, step, mid in events:
        clock[part] = max(T0, clock[part] + step)
        msg = _quote(part, len(messages[part]), f"s{part}{src}", clock[part], mid)
        messages[part].append(msg)
        seen = -1 if newest[part] is None else newest[part] - LATENESS
        if clock[part] > seen:
            o = SP.decoder.decode(msg)
            assert isinstance(o, Observation)
            taken.setdefault(f"{part}", []).append(o)
        newest[part] = max(clock[part], newest[part] or clock[part])
    markers = [_marker(i, T0 + (i + 1) * BLOCK_MS) for i in range(n_blocks)]
    batches = _chunks(CHAIN, markers)
    for part, msgs in messages.items():
        batches += _chunks(f"{part}-dex.quotes", msgs)
    return batches, taken


@settings(max_examples=60, deadline=None)
@given(EVENTS, st.integers(1, 40), st.lists(st.integers(0, 2), min_size=300, max_size=300))
def test_tick_equals_the_aggregate_recomputed_from_scratch_over_its_trailing_window(
    events: list, n_blocks: int, order: list[int]
) -> None:
    batches, taken = _streams(events, n_blocks)
    ticks = _run(batches, order)
    blocks = [T0 + (i + 1) * BLOCK_MS for i in range(n_blocks)]
    assert [t.window_end_ms for t in ticks] == sorted({t.window_end_ms for t in ticks})
    assert {t.window_end_ms for t in ticks} <= set(blocks)
    inputs = [o for obs in taken.values() for o in obs]
    last: OraclePrice | None = None
    by_end = {t.window_end_ms: t for t in ticks}
    for t in blocks:
        upto = [o for o in inputs if o.ts_ms <= t]
        _, scratch = fold_at("ETH", Carry({}, last), t - W, t, upto, SP.oracle, "tick")
        row = by_end.get(t)
        repeat = last is not None and last.status == "stale"
        if scratch is None or (scratch.status == "stale" and repeat):
            assert row is None  # no price yet, or a stale row repeated
        else:
            assert row == scratch
            last = row


@settings(max_examples=40, deadline=None)
@given(
    EVENTS,
    st.integers(1, 40),
    st.lists(st.integers(0, 2), min_size=300, max_size=300),
    st.lists(st.integers(0, 2), min_size=300, max_size=300),
)
def test_same_partitions_give_same_ticks_whatever_the_interleaving(
    events: list, n_blocks: int, order_a: list[int], order_b: list[int]
) -> None:
    batches, _ = _streams(events, n_blocks)
    assert _run(batches, order_a) == _run(batches, order_b)


class _ScanningTicks(AssetTicks):
    """The ticks' definition read literally, scanning every observation held at each tick:
    the model the per-source ranks of ``AssetTicks`` must agree with."""

    def tick_at(self, t: int, p: OracleParams) -> tuple[Carry, OraclePrice | None]:
        taken = [
            o
            for o in self.obs.values()
            if o.ts_ms <= t and not (o.obs_id in self.withdrawn and t > self.withdrawn[o.obs_id])
        ]
        start = Carry({}, self.carry.last, self.carry.jump_run, self.carry.jump_up)
        carry, row = fold_at(self.asset, start, t - p.window_ms, t, taken, p, cadence="tick")
        return Carry({}, carry.last, carry.jump_run, carry.jump_up), row

    def _prune(self, t: int, p: OracleParams) -> None:
        newest: dict[tuple[str, str, str], tuple[int, int, str]] = {}
        for o in self.obs.values():
            rank = (o.ts_ms, o.seq, o.obs_id)
            if o.ts_ms <= t and rank > newest.get((o.source, o.base, o.quote), (-1, -1, "")):
                newest[(o.source, o.base, o.quote)] = rank
        for obs_id, o in list(self.obs.items()):
            if o.ts_ms > t:
                continue
            too_old = t - o.ts_ms > p.source_max_age_ms.get(o.source, p.max_age_ms)
            superseded = (o.ts_ms, o.seq, o.obs_id) < newest[(o.source, o.base, o.quote)]
            gone = obs_id in self.withdrawn and self.withdrawn[obs_id] < t
            if too_old or superseded or gone:
                del self.obs[obs_id]
                self.withdrawn.pop(obs_id, None)


STEPS = st.lists(
    st.tuples(
        st.lists(  # observations: source, block offset (0: on a block time), seq, price
            st.tuples(
                st.integers(0, 2), st.integers(-3, 40), st.integers(0, 3), st.floats(1700, 1900)
            ),
            max_size=6,
        ),
        st.lists(st.integers(0, 10_000), max_size=2),  # retractions: which observation sent
        st.integers(0, 3),  # blocks the tick watermark moves on
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(STEPS, st.integers(1, 3))
def test_ticks_from_per_source_ranks_equal_a_scan_of_every_observation_held(
    steps: list, max_age_blocks: int
) -> None:
    """Any stream of one partition: observations at and between block times, several per
    source at one time, duplicates, retractions of any observation sent (reorgs), sources
    going stale; the ticks and what stays held equal the scanning model's."""
    p = dataclasses.replace(SP.oracle, max_age_ms=max_age_blocks * BLOCK_MS, source_max_age_ms={})
    fast, model = AssetTicks("ETH", ("0-p",)), _ScanningTicks("ETH", ("0-p",))
    sent: list[Observation] = []
    block, rows_fast, rows_model = 0, [], []
    for observations, retractions, advance in steps:
        seen = T0 + block * BLOCK_MS
        items: list[Observation | Retraction] = []
        for source, offset, seq, price in observations:
            ts = seen + offset * 1_000 if offset > 0 else seen + BLOCK_MS  # 0: the next block
            o = msgspec.structs.replace(_obs(f"s{source}", price, ts), seq=seq)
            o = msgspec.structs.replace(o, obs_id=f"{o.source}@{ts}:{seq}")
            items.append(o)
            sent.append(o)
        for o in (sent[pick % len(sent)] for pick in retractions if sent):
            items.append(Retraction(base=o.base, quote=o.quote, source=o.source, obs_id=o.obs_id,
                                    ts_ms=o.ts_ms, origin=_marker(0, T0)))  # fmt: skip
        block += advance
        blocks = [T0 + b * BLOCK_MS for b in range(block - advance + 1, block + 1)]
        batch = AssetBatch("0-p", -1, False, items, -1, T0 + block * BLOCK_MS, blocks,
                           [seen] * len(items))  # fmt: skip
        rows_fast += fast.on_batch(batch, p)[0]
        rows_model += model.on_batch(batch, p)[0]
        assert rows_fast == rows_model
        assert fast.obs == model.obs and fast.withdrawn == model.withdrawn
        assert sorted(r for rs in fast.ranked.values() for r in rs) == sorted(
            (o.ts_ms, o.seq, o.obs_id) for o in fast.obs.values()
        )


# --- the oracle.prices topic and the risk stage on ticks ----------------------------------


def test_tick_rows_and_progress_round_trip_on_the_topic_and_a_bad_cadence_is_rejected() -> None:
    row = OraclePrice(asset="ETH", window_start_ms=T0 - W, window_end_ms=T0, price=1800.0,
                      confidence=1.0, sources=2, status="ok", held=False, revision=0,
                      cadence="tick")  # fmt: skip
    progress = OracleProgress("ETH", T0, cadence="tick")
    for item in (row, progress, OracleProgress("ETH", T0)):
        msg = RawMessage("oracle.prices", 0, 0, T0, b"ETH", oracle_topic.encode(item))
        assert oracle_topic.decode(msg) == item
    bad = msgspec.json.encode(msgspec.structs.replace(row, cadence="blok"))
    rejected = oracle_topic.decode(RawMessage("oracle.prices", 0, 0, T0, b"ETH", bad))
    assert isinstance(rejected, Rejected) and "cadence" in rejected.reason


def test_risk_intake_on_ticks_takes_a_chain_partition_to_its_progress_marker_at_once() -> None:
    ticks = dataclasses.replace(RISK_INTAKE, ticks=True)
    windows, by_marker = RiskIntake("0-chain.logs"), RiskIntake("0-chain.logs")
    for intake, p in ((windows, RISK_INTAKE), (by_marker, ticks)):
        out = intake.on_batch(RawBatch("0-chain.logs", [_marker(0, T0 + BLOCK_MS)]), p)
        assert {b.watermark_ms for _, b in out.venue} == (
            {T0 + BLOCK_MS} if p.ticks else {T0 + BLOCK_MS - p.lateness_ms}
        )
    # Every block moves it, and every shard hears of it.
    out = by_marker.on_batch(RawBatch("0-chain.logs", [_marker(1, T0 + 2 * BLOCK_MS)]), ticks)
    assert len(out.venue) == ticks.shards
    assert {b.watermark_ms for _, b in out.venue} == {T0 + 2 * BLOCK_MS}


def _tick(end: int, price: float) -> OraclePrice:
    return msgspec.structs.replace(_price(end, price), cadence="tick")


def test_risk_on_ticks_liquidates_at_the_block_of_the_crash_and_ignores_window_rows() -> None:
    p = dataclasses.replace(PARAMS, cadence="tick")
    shard = _shard()
    crash = RISK_T0 + BLOCK_MS
    book = _setup({ACCOUNTS[0]: 20})
    shard.on_venue(VenueBatch("0-chain.logs", crash + BLOCK_MS, False, book), p)
    # The window row of the same end comes after the tick: taken, it would hide the crash.
    rows = [_tick(RISK_T0, 2_000.0), _tick(crash, 1_940.0), _price(crash, 2_000.0)]
    shard.on_prices(
        PriceBatch([*rows, OracleProgress("ETH", crash), OracleProgress("ETH", crash, "tick")]),
        p.cadence,
    )
    (order,) = shard.evaluate(p).orders
    assert (order.kind, order.ts_event_ms, order.oracle_price) == ("liquidation", crash, 1_940.0)


def test_risk_on_ticks_applies_a_venue_event_of_the_block_itself() -> None:
    p = dataclasses.replace(PARAMS, cadence="tick")
    shard = _shard()
    events = _setup({ACCOUNTS[0]: 20})
    block = events[-1].ts_ms  # the trade's block: a tick there sees the position
    shard.on_venue(VenueBatch("0-chain.logs", block, False, events), p)
    tick = [_tick(block, 1_900.0), OracleProgress("ETH", block, "tick")]
    shard.on_prices(PriceBatch(tick), "tick")
    (order,) = shard.evaluate(p).orders
    assert order.ts_event_ms == block
