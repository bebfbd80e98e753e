"""The oracle core: windows and watermarks, status, breaker, corrections, determinism."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.config import load_config
from operators.decode import Decoder
from operators.intake import PartitionIntake
from operators.model import (
    AssetBatch,
    Observation,
    OraclePrice,
    OracleProgress,
    RawBatch,
    RawMessage,
    Rejected,
    Retraction,
)
from operators.oracle import AssetOracle, OracleParams
from operators.registry import Registry
from operators.stages import stage_params

T0 = 1_683_028_800_000  # 2023-05-02 12:00:00 UTC, a window boundary
W = 60_000
PARTS = ("0-p", "1-p")


def params(text: str = "") -> OracleParams:
    return stage_params(load_config(text)).oracle


def obs(
    source: str, price: float, ts: int, base: str = "ETH", quote: str = "USDC", weight: float = 1.0
) -> Observation:
    return Observation(
        base=base,
        quote=quote,
        source=source,
        price=price,
        weight=weight,
        spread=0.0,
        ts_ms=ts,
        seq=0,
        obs_id=f"{source}@{ts}",
    )


def batch(part: str, wm: int, *items: Observation | Retraction, eof: bool = False) -> AssetBatch:
    return AssetBatch(part, wm, eof, list(items))


class Oracle:
    """An AssetOracle bound to its parameters, for brevity."""

    def __init__(self, asset: str, p: OracleParams, parts: tuple[str, ...] = PARTS):
        self.state, self.p = AssetOracle(asset, parts), p

    def on_batch(self, b: AssetBatch) -> list[OraclePrice | Rejected]:
        """Rows and rejects (progress reports are tested on their own)."""
        out = self.state.on_batch(b, self.p)
        return [*out.prices, *out.rejects]


def prices(rows: list[OraclePrice | Rejected]) -> list[OraclePrice]:
    return [r for r in rows if isinstance(r, OraclePrice)]


def test_window_closes_only_when_every_partition_watermark_passes_its_end() -> None:
    oracle = Oracle("ETH", params())
    sources = [obs(s, 1800.0, T0 + 1000) for s in ("a", "b", "c")]
    assert oracle.on_batch(batch("0-p", T0 + W + 5, *sources)) == []  # 1-p not heard from
    rows = oracle.on_batch(batch("1-p", T0 + W))
    assert [(r.window_start_ms, r.status, r.sources) for r in prices(rows)] == [(T0, "ok", 3)]


def test_status_degraded_with_fewer_sources_than_quorum() -> None:
    oracle = Oracle("ETH", params())
    oracle.on_batch(batch("0-p", 0, obs("a", 1800.0, T0), obs("b", 1801.0, T0)))
    (row,) = prices(
        oracle.on_batch(batch("1-p", T0 + W, eof=True))
        + oracle.on_batch(batch("0-p", T0 + W, eof=True))
    )
    assert (row.status, row.sources, row.price) == ("degraded", 2, 1800.5)


def test_price_goes_stale_after_max_age_once_then_empty_windows_are_skipped() -> None:
    oracle = Oracle("ETH", params("[oracle]\nmax_age_s = 90\nmin_sources = 1"))
    oracle.on_batch(batch("0-p", 0, obs("a", 1800.0, T0)))
    rows = prices(
        oracle.on_batch(batch("1-p", T0 + 3 * W)) + oracle.on_batch(batch("0-p", T0 + 3 * W))
    )
    # The second window has no fresh source: one stale row carrying the last price; the
    # third would repeat it, and is skipped.
    assert [(r.window_start_ms, r.status, r.price) for r in rows] == [
        (T0, "ok", 1800.0),
        (T0 + W, "stale", 1800.0),
    ]
    later = T0 + 10 * W
    rows = prices(
        oracle.on_batch(batch("0-p", later + W, obs("a", 1810.0, later)))
        + oracle.on_batch(batch("1-p", later + W))
    )
    assert [(r.window_start_ms, r.status, r.price) for r in rows] == [(later, "ok", 1810.0)]
    assert oracle.state.progress == later + W


def test_jump_is_held_until_it_persists_then_published() -> None:
    oracle = Oracle("ETH", params("[oracle]\nmin_sources = 1\nbreaker_confirm_windows = 2"))
    out: list[OraclePrice | Rejected] = []
    for i, price in enumerate([1800.0, 2500.0, 2500.0]):
        out += oracle.on_batch(batch("0-p", T0 + i * W, obs("a", price, T0 + i * W)))
        out += oracle.on_batch(batch("1-p", T0 + (i + 1) * W))
    out += oracle.on_batch(batch("0-p", T0 + 3 * W))
    assert [(r.price, r.held, r.status) for r in prices(out)] == [
        (1800.0, False, "ok"),
        (1800.0, True, "degraded"),
        (2500.0, False, "ok"),
    ]


def test_jump_confirmed_by_enough_sources_is_published_at_once() -> None:
    oracle = Oracle("ETH", params())
    oracle.on_batch(batch("1-p", T0 + 2 * W))
    oracle.on_batch(batch("0-p", 0, *(obs(s, 1800.0, T0) for s in "abc")))
    oracle.on_batch(batch("0-p", 0, *(obs(s, 2500.0, T0 + W) for s in "abc")))
    rows = prices(oracle.on_batch(batch("0-p", T0 + 2 * W)))
    assert [(r.price, r.held) for r in rows] == [(1800.0, False), (2500.0, False)]


def test_btc_crossed_through_eth_window_price() -> None:
    oracle = Oracle("BTC", params())
    eth = [obs(s, 2000.0, T0) for s in "abc"]
    btc = obs("0xpool", 14.0, T0 + 5, base="BTC", quote="ETH")
    oracle.on_batch(batch("0-p", 0, *eth, btc))
    (row,) = prices(
        oracle.on_batch(batch("0-p", T0 + W, eof=True)) + oracle.on_batch(batch("1-p", 0, eof=True))
    )
    assert (row.asset, row.price, row.sources, row.status) == ("BTC", 28_000.0, 1, "degraded")


def _retraction(o: Observation, late: bool) -> Retraction:
    origin = RawMessage("chain.logs", 0, 9, o.ts_ms, None, b"{}")
    return Retraction(
        base=o.base,
        quote=o.quote,
        source=o.source,
        ts_ms=o.ts_ms,
        obs_id=o.obs_id,
        origin=origin,
        late=late,
    )


def test_retraction_while_window_open_removes_observation_silently() -> None:
    oracle = Oracle("ETH", params())
    a, b, c = (obs(s, 1800.0 + i, T0) for i, s in enumerate("abc"))
    oracle.on_batch(batch("0-p", 0, a, b, c))
    oracle.on_batch(batch("0-p", 0, _retraction(c, late=False)))
    rows = prices(oracle.on_batch(batch("0-p", T0 + W)) + oracle.on_batch(batch("1-p", T0 + W)))
    assert [(r.sources, r.price, r.revision) for r in rows] == [(2, 1800.5, 0)]


def test_retraction_after_window_closed_publishes_correction() -> None:
    oracle = Oracle("ETH", params())
    a, b, c = (obs(s, 1800.0 + i, T0) for i, s in enumerate("abc"))
    oracle.on_batch(batch("1-p", T0 + W))
    first = prices(oracle.on_batch(batch("0-p", T0 + W, a, b, c)))
    fixed = prices(oracle.on_batch(batch("0-p", T0 + W, _retraction(c, late=True))))
    assert [(r.sources, r.price, r.revision) for r in first] == [(3, 1801.0, 0)]
    assert [(r.sources, r.price, r.revision) for r in fixed] == [(2, 1800.5, 1)]


def test_retraction_of_unknown_observation_is_rejected_with_coordinates() -> None:
    oracle = Oracle("ETH", params())
    (rej,) = oracle.on_batch(batch("0-p", 0, _retraction(obs("z", 1.0, T0), late=False)))
    assert isinstance(rej, Rejected)
    assert rej.reason.startswith("retraction_unknown") and (rej.topic, rej.offset) == (
        "chain.logs",
        9,
    )


# --- determinism: intake + oracle over any interleaving of partitions -------------------

CFG = load_config("[oracle]\nmin_sources = 2\nallowed_lateness_s = 5")
REGISTRY = Registry.from_config(CFG.oracle)
DECODER = Decoder(REGISTRY, "chain.logs", "dex.quotes")


def _quote(part: int, offset: int, source: str, ts: int, mid: float) -> RawMessage:
    body = {"source": source, "base": "WETH", "quote": "USDC", "bid": mid - 0.5, "ask": mid + 0.5,
            "bid_size": 1, "ask_size": 1, "ts": ts}  # fmt: skip
    return RawMessage("dex.quotes", part, offset, ts, source.encode(), json.dumps(body).encode())


def _run(batches: list[RawBatch], order: list[int]) -> list[tuple]:
    parts = sorted({b.part for b in batches})
    intakes = {p: PartitionIntake(part=p) for p in parts}
    oracles: dict[str, AssetOracle] = {}
    ip = stage_params(CFG).intake
    op_ = stage_params(CFG).oracle
    queues = {p: [b for b in batches if b.part == p] for p in parts}
    out: list[tuple] = []
    for pick in order:
        if not any(queues.values()):
            break
        part = parts[pick % len(parts)]
        if not queues[part]:
            part = next(p for p in parts if queues[p])
        taken = intakes[part].on_batch(queues[part].pop(0), DECODER, ip)
        out += [("r", r.reason, r.offset) for r in taken.rejects]
        for asset, ab in taken.batches:
            oracle = oracles.setdefault(asset, AssetOracle(asset, tuple(parts)))
            priced = oracle.on_batch(ab, op_)
            out += [("p", *(getattr(r, f) for f in r.__struct_fields__)) for r in priced.prices]
            out += [("r", r.reason, r.offset) for r in priced.rejects]
    return sorted(out)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1),
            st.integers(0, 2),
            st.integers(-90_000, 400_000),
            st.floats(1700, 1900),
        ),
        min_size=1,
        max_size=60,
    ),
    st.lists(st.integers(0, 1), min_size=200, max_size=200),
    st.lists(st.integers(0, 1), min_size=200, max_size=200),
)
def test_same_partitions_give_same_rows_whatever_the_interleaving(events, order_a, order_b) -> None:
    messages: dict[int, list[RawMessage]] = {0: [], 1: []}
    clock = {0: T0, 1: T0}
    for part, src, step, mid in events:
        clock[part] = max(T0, clock[part] + step)  # mostly forward, sometimes back (late)
        msgs = messages[part]
        msgs.append(_quote(part, len(msgs), f"s{part}{src}", clock[part], mid))
    batches = []
    for part, msgs in messages.items():
        chunks = [msgs[i : i + 3] for i in range(0, len(msgs), 3)] or [[]]
        batches += [
            RawBatch(f"{part}-dex.quotes", c, i == len(chunks) - 1) for i, c in enumerate(chunks)
        ]
    first = _run(batches, order_a)
    assert first == _run(batches, order_b)


def test_retraction_beyond_correction_horizon_is_rejected() -> None:
    oracle = Oracle("ETH", params("[oracle]\ncorrection_windows = 1"))
    a, b, c = (obs(s, 1800.0 + i, T0) for i, s in enumerate("abc"))
    oracle.on_batch(batch("1-p", T0 + 5 * W))
    oracle.on_batch(batch("0-p", 0, a, b, c))
    oracle.on_batch(batch("0-p", T0 + 5 * W))
    (rej,) = oracle.on_batch(batch("0-p", T0 + 5 * W, _retraction(c, late=True)))
    assert isinstance(rej, Rejected) and rej.reason.startswith("retraction_too_old")


def test_correction_carries_into_later_windows_that_used_the_retracted_observation() -> None:
    oracle = Oracle("ETH", params("[oracle]\nmin_sources = 1"))
    a, b = obs("a", 1800.0, T0), obs("b", 1810.0, T0 + 30_000)
    oracle.on_batch(batch("1-p", T0 + 3 * W))
    first = prices(oracle.on_batch(batch("0-p", T0 + 3 * W, a, b)))
    fixed = prices(oracle.on_batch(batch("0-p", T0 + 3 * W, _retraction(b, late=True))))
    # b was each later window's latest for its source too, until max age: all three change.
    assert [(r.price, r.revision) for r in first] == [(1805.0, 0)] * 3
    assert [(r.window_start_ms, r.price, r.revision) for r in fixed] == [
        (T0 + i * W, 1800.0, 1) for i in range(3)
    ]


def test_progress_reports_closed_windows_even_for_an_asset_without_data() -> None:
    with_data, without = AssetOracle("ETH", PARTS), AssetOracle("BTC", PARTS)
    p = params()
    with_data.on_batch(batch("0-p", 0, *(obs(s, 1800.0, T0) for s in "abc")), p)
    reports = []
    for oracle in (with_data, without):
        oracle.on_batch(batch("1-p", T0 + 2 * W + 5), p)
        progress = oracle.on_batch(batch("0-p", T0 + 2 * W + 5), p).progress
        reports += [progress] if progress is not None else []
    assert reports == [OracleProgress("ETH", T0 + 2 * W), OracleProgress("BTC", T0 + 2 * W)]


# --- event time: bounded work per gap, idleness ------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 13 * 365 * 24 * 60), st.integers(30, 600))
def test_rows_a_gap_emits_are_bounded_whatever_its_length(gap_windows, max_age_s) -> None:
    p = params(f"[oracle]\nmin_sources = 1\nmax_age_s = {max_age_s}")
    oracle = Oracle("ETH", p, parts=("0-p",))
    first, later = T0, T0 + (gap_windows + 1) * W  # window starts; observed 1 s before the end
    rows = oracle.on_batch(batch("0-p", first, obs("a", 1800.0, first + W - 1_000)))
    rows += oracle.on_batch(batch("0-p", later + W, obs("a", 1810.0, later + W - 1_000)))
    bound = max_age_s * 1000 // W + 2  # aging windows, one stale row, the later window
    assert 1 <= len(prices(rows)) <= bound + 1
    assert prices(rows)[-1].window_start_ms == later and prices(rows)[-1].price == 1810.0


def test_a_first_observation_from_2010_then_2023_does_not_walk_every_window_between() -> None:
    oracle = Oracle("ETH", params("[oracle]\nmin_sources = 1"), parts=("0-p",))
    old = 1_262_304_000_000  # 2010-01-01
    rows = oracle.on_batch(batch("0-p", old, obs("a", 5.0, old)))
    rows += oracle.on_batch(batch("0-p", T0 + W, obs("a", 1800.0, T0)))
    assert len(prices(rows)) <= 300 // 60 + 3


def test_an_idle_partition_stops_holding_windows_open_and_its_late_data_is_a_correction() -> None:
    p = params("[oracle]\nmin_sources = 1\nidle_timeout_s = 120")
    oracle = Oracle("ETH", p)
    a, b = obs("a", 1800.0, T0), obs("b", 1900.0, T0 + 10_000)
    # 1-p reported once at T0 (broker time T0), then fell silent; 0-p goes on for 5 min.
    oracle.on_batch(AssetBatch("1-p", T0 - 1, False, [], T0, caught_up=True))
    rows = oracle.on_batch(AssetBatch("0-p", T0 + 5 * W, False, [a], T0 + 5 * W))
    assert [r.window_start_ms for r in prices(rows)][:1] == [T0]  # closed without 1-p
    # 1-p resumes with an observation for the closed window: a correction, not a loss.
    fixed = oracle.on_batch(AssetBatch("1-p", T0 + 5 * W, False, [b], T0 + 5 * W + 1))
    first = next(r for r in prices(fixed) if r.window_start_ms == T0)
    assert (first.revision, first.price) == (1, 1850.0)


def test_a_partition_behind_in_its_backlog_is_not_idle_and_its_data_is_no_correction() -> None:
    p = params("[oracle]\nmin_sources = 1\nidle_timeout_s = 120")
    oracle = Oracle("ETH", p)
    a, b = obs("a", 1800.0, T0), obs("b", 1900.0, T0 + 10_000)
    # 1-p has more to read (not caught up) while 0-p is read 5 min of broker time ahead.
    oracle.on_batch(AssetBatch("1-p", T0 - 1, False, [], T0))
    rows = oracle.on_batch(AssetBatch("0-p", T0 + 5 * W, False, [a], T0 + 5 * W))
    assert prices(rows) == []  # 1-p holds the window open
    rows = oracle.on_batch(AssetBatch("1-p", T0 + 5 * W, False, [b], T0 + 5 * W + 1))
    first = next(r for r in prices(rows) if r.window_start_ms == T0)
    assert (first.revision, first.price) == (0, 1850.0)
