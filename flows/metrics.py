"""The stages' metrics (``connectors.metrics``), taken from their streams by ``op.inspect``
(the per-account rows by ``op.flat_map_batch``: one call per batch, not per row).

Inspecting leaves every stream as it is: the outputs, and so replay's determinism, do not
change. Each worker updates the process's registry; a latency is the wall clock at the
inspect (the emit) minus the item's event time.
"""

from __future__ import annotations

import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors import metrics
from flows.oracle import OracleStreams
from flows.risk import RiskStreams
from operators.model import AccountRiskRow, RawBatch, Rejected


def observe_input(raw: Stream[RawBatch]) -> None:
    """Count the messages of each input partition."""
    op.inspect("metrics_input", raw, lambda _, b: metrics.count_input(b.part, len(b.messages)))


def observe_oracle(out: OracleStreams) -> None:
    """Latency, count, age and status of the oracle's prices."""
    gauges = metrics.OracleGauges()
    op.inspect("metrics_prices", out.prices, lambda _, kv: gauges.on_price(kv[1], time.time()))


def observe_risk(out: RiskStreams) -> None:
    """Orders and denials by kind, the orders' latency, accounts below maintenance margin."""
    accounts = metrics.AccountGauges()

    def rows(batch: list[tuple[str, AccountRiskRow]]) -> list[None]:
        for _, row in batch:
            accounts.on_row(row)
        return []

    op.flat_map_batch("metrics_accounts", out.rows, rows)

    def decision(_: str, kv: tuple[str, Any]) -> None:
        metrics.count_decision(kv[1], time.time())

    op.inspect("metrics_orders", out.orders, decision)
    op.inspect("metrics_denials", out.denials, decision)


def observe_rejects(rejects: Stream[tuple[str, Rejected]]) -> None:
    """Count what goes to the deadletter, by stage and reason code."""
    op.inspect("metrics_rejects", rejects, lambda _, kv: metrics.count_reject(kv[1]))
