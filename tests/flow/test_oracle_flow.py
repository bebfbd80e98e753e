"""The oracle stage under bytewax.testing: outputs, two workers, crash and resume."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.oracle import oracle_stage
from operators.config import load_config
from operators.model import OraclePrice, RawBatch, RawMessage, Rejected
from operators.stages import stage_params

T0 = 1_683_028_800_000
CFG = stage_params(
    load_config("[oracle]\nmin_sources = 2\nallowed_lateness_s = 5\n[run]\nbatch_size = 4")
)


def _quote(part: int, offset: int, source: str, ts: int, mid: float) -> RawMessage:
    body = {"source": source, "base": "WETH", "quote": "USDC", "bid": f"{mid - 0.5}",
            "ask": f"{mid + 0.5}", "bid_size": "2", "ask_size": "3", "ts": ts}  # fmt: skip
    return RawMessage("dex.quotes", part, offset, ts, source.encode(), json.dumps(body).encode())


def _batches() -> list[RawBatch]:
    """Two partitions of quotes over 10 minutes, one late quote and one bad message."""
    parts: dict[int, list[RawMessage]] = {0: [], 1: []}
    for i in range(120):
        ts = T0 + i * 5_000
        for part, source in ((0, "a"), (1, "b"), (1, "c")):
            msgs = parts[part]
            msgs.append(_quote(part, len(msgs), source, ts, 1800.0 + i + 0.1 * len(source)))
    parts[0].append(_quote(0, len(parts[0]), "a", T0, 1.0))  # 10 minutes late
    parts[1].append(RawMessage("dex.quotes", 1, len(parts[1]), T0, b"c", b"{not json"))
    out = []
    for part, msgs in parts.items():
        for i in range(0, len(msgs), 50):
            out.append(RawBatch(f"{part}-dex.quotes", msgs[i : i + 50], i + 50 >= len(msgs)))
    # interleave the partitions the way two consumers might
    return sorted(out, key=lambda b: (b.messages[0].offset if b.messages else 1 << 30, b.part))


PARTS = ["0-dex.quotes", "1-dex.quotes"]


def _flow(items: list, prices: list, rejects: list) -> Dataflow:
    flow = Dataflow("oracle_test")
    out = oracle_stage(op.input("in", flow, TestingSource(items)), CFG, PARTS)
    op.output("prices", out.prices, TestingSink(prices))
    op.output("rejects", out.rejects, TestingSink(rejects))
    return flow


def _rows(prices: list[tuple[str, OraclePrice]]) -> list[OraclePrice]:
    return sorted((p for _, p in prices), key=lambda p: (p.asset, p.window_start_ms, p.revision))


def test_quotes_give_one_ok_price_per_window_and_rejects_late_and_bad() -> None:
    prices: list = []
    rejects: list = []
    run_main(_flow(_batches(), prices, rejects))
    rows = _rows(prices)
    assert [r.window_start_ms for r in rows] == [T0 + i * 60_000 for i in range(10)]
    assert {r.status for r in rows} == {"ok"}
    assert all(r.sources == 3 for r in rows)
    reasons = sorted(r.reason.split(":")[0] for _, r in rejects)
    assert reasons == ["invalid_json", "late"]
    assert all(isinstance(r, Rejected) for _, r in rejects)


def test_two_workers_give_the_same_prices_as_one() -> None:
    one: list = []
    two: list = []
    run_main(_flow(_batches(), one, []))
    cluster_main(_flow(_batches(), two, []), [], 0, worker_count_per_proc=2)
    assert _rows(one) == _rows(two)


def test_crash_and_resume_under_recovery_loses_nothing(tmp_path: Path) -> None:
    expected: list = []
    run_main(_flow(_batches(), expected, []))

    items = _batches()
    items.insert(len(items) // 2, TestingSource.ABORT())
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    got: list = []
    flow = _flow(items, got, [])
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    assert len(got) < len(expected), "the first run must stop at the abort"
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    # Sinks are at-least-once: rows around the resume point may repeat, none may be lost.
    assert sorted(set(_rows(got)), key=_rows_key) == _rows(expected)


def _rows_key(p: OraclePrice) -> tuple:
    return (p.asset, p.window_start_ms, p.revision)
