"""Block cadence through the oracle and risk stages under bytewax.testing: a crash within a
block gives its liquidation orders at that block's time, with one worker or two."""

from __future__ import annotations

import json

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.oracle import oracle_stage
from flows.risk import risk_stage
from operators.config import load_config
from operators.model import OraclePrice, Order, RawBatch, RawMessage
from operators.stages import StageParams, stage_params
from tests.flow.test_risk_flow import ACCOUNTS, PARTS, T0, _chain, risk_toml

BLOCK_MS = 5_000
CRASH_MS = T0 + 120_000
"""The first quote at 1,940 (from 2,000); the next block is 2 s later."""


def _params(cadence: str) -> StageParams:
    oracle = f"[oracle]\nmin_sources = 1\nallowed_lateness_s = 5\ncadence = {cadence}\n"
    return stage_params(load_config(oracle + risk_toml()))


def _marker(offset: int, ts_ms: int) -> RawMessage:
    block = hex(200 + offset)
    body = {"progress": True, "blockNumber": block, "blockTimestamp": hex(ts_ms // 1000)}
    return RawMessage("chain.logs", 0, offset, ts_ms, b"", json.dumps(body).encode())


def _batches() -> list[RawBatch]:
    """The venue's set-up, then a progress marker every block (2 s past each quote);
    quotes every 5 s, 2,000 then 1,940 from ``CRASH_MS``."""
    chain = _chain()
    blocks = [T0 - 58_000 + i * BLOCK_MS for i in range(72)]
    chain += [_marker(len(chain) + i, ts) for i, ts in enumerate(blocks)]
    quotes = []
    for i in range(72):
        ts = T0 - 60_000 + i * 5_000
        mid = 2_000.0 if ts < CRASH_MS else 1_940.0
        body = {"source": "q", "base": "WETH", "quote": "USDC", "bid": str(mid - 0.5),
                "ask": str(mid + 0.5), "bid_size": "10", "ask_size": "10", "ts": ts}  # fmt: skip
        quotes.append(RawMessage("dex.quotes", 0, i, ts, b"q", json.dumps(body).encode()))
    return [
        *(RawBatch("0-chain.logs", chain[i : i + 7], i + 7 >= len(chain))
          for i in range(0, len(chain), 7)),
        *(RawBatch("0-dex.quotes", quotes[i : i + 10], i + 10 >= len(quotes))
          for i in range(0, len(quotes), 10)),
    ]  # fmt: skip


def _flow(sp: StageParams, orders: list, ticks: list) -> Dataflow:
    flow = Dataflow("ticks_test")
    raw = op.input("in", flow, TestingSource(_batches()))
    oracle = oracle_stage(raw, sp, PARTS)
    risk = risk_stage(raw, sp, PARTS, oracle.published)
    op.output("orders", risk.orders, TestingSink(orders))
    op.output("ticks", oracle.ticks, TestingSink(ticks))
    return flow


def _orders(items: list) -> list[Order]:
    return sorted((v for _, v in items), key=lambda v: (v.ts_event_ms, v.account))


def _ticks(items: list) -> list[OraclePrice]:
    return sorted((v for _, v in items), key=lambda v: v.window_end_ms)


def test_crash_within_a_block_gives_the_orders_at_that_block_not_the_next_window() -> None:
    orders: list = []
    ticks: list = []
    run_main(_flow(_params('"block"'), orders, ticks))
    got = _orders(orders)
    assert sorted(o.account for o in got) == sorted(a for a, s in ACCOUNTS.items() if s == 20)
    assert {o.ts_event_ms for o in got} == {CRASH_MS + 2_000}  # the block after the crash
    crash = next(t for t in _ticks(ticks) if t.window_end_ms == CRASH_MS + 2_000)
    assert (crash.cadence, crash.price, crash.status) == ("tick", 1_940.0, "ok")

    window: list = []
    run_main(_flow(_params('"window"'), window, []))
    assert {o.ts_event_ms for o in _orders(window)} == {T0 + 180_000}  # the window mode's


def test_two_workers_give_the_same_ticks_and_orders_as_one() -> None:
    sp = _params('"block"')
    one_orders: list = []
    one_ticks: list = []
    two_orders: list = []
    two_ticks: list = []
    run_main(_flow(sp, one_orders, one_ticks))
    cluster_main(_flow(sp, two_orders, two_ticks), [], 0, worker_count_per_proc=2)
    assert _orders(one_orders) == _orders(two_orders)
    assert _ticks(one_ticks) == _ticks(two_ticks)
    assert len(_ticks(one_ticks)) == 72  # every block has its tick
