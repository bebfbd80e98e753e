"""The demo's loop on the real broker and the real chain, on a short scenario: the dev
chain, ``ingest``, ``run oracle``, ``run risk`` and ``execute`` as their own processes,
and the chain's liquidations made by hedgeflow's executor alone.

The check is read from the chain: the venue's ``Liquidated`` events (``eth_getLogs`` after
the loop) against the risk stage's ``orders/`` and the executor's ``executions/``.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import polars as pl

from connectors.broker import EmbeddedBroker
from flows.cli.live_loop import LoopParams, live_loop
from flows.cli.summary import read_dataset, summary_text

SHORT = LoopParams(seed=1, accounts=40, steps=60, pace_s=0.2)
"""40 accounts make an hour's worth of trades in 60 blocks; the crash (seed 1, at step 31)
puts some of them under maintenance (3 in a replay of the scenario alone)."""


def test_loop_after_the_crash_each_liquidation_on_chain_is_a_hedgeflow_order_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    params = dataclasses.replace(SHORT, topic_prefix=f"loop-{uuid.uuid4().hex[:8]}")

    result = live_loop(broker.bootstrap, tmp_path, params)

    oracle_dir, risk_dir, executor_dir = result.stage_dirs
    orders = read_dataset("orders", risk_dir)
    executions = read_dataset("executions", executor_dir)
    assert orders is not None and executions is not None
    legs = set(orders.filter(pl.col("kind") == "liquidation")["order_id"])
    on_chain = [f.order_id for f in result.liquidations]
    sent = set(executions.filter(pl.col("state") == "sent")["order_id"])
    mined = set(executions.filter(pl.col("state") == "mined")["order_id"])

    assert on_chain, "the crash left nobody for hedgeflow to liquidate"
    assert {f.liquidator for f in result.liquidations} == {result.cfg.execution.liquidator}
    assert set(on_chain) <= legs  # each Liquidated.orderId is an order of orders/...
    assert len(on_chain) == len(set(on_chain))  # ...and none twice
    assert set(on_chain) <= sent  # the executor sent each...
    assert mined and mined <= set(on_chain)  # ...and what it saw mined, the chain holds
    text = summary_text(oracle_dir, risk_dir, executor_dir, liquidations=result.liquidations)
    assert f"on chain: {len(on_chain)} Liquidated events" in text
    assert f"{len(on_chain)} carry the id of a hedgeflow liquidation order, 0 carry none" in text
