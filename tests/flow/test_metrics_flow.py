"""The metrics wiring (``flows.metrics``) under bytewax.testing: what the streams carried is
what the registry counted, and inspecting changes no output."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from flows.metrics import observe_input, observe_oracle, observe_rejects, observe_risk
from flows.oracle import oracle_stage
from flows.risk import risk_stage
from tests.flow.test_risk_flow import CFG, PARTS, _batches, _flow, _sorted

COUNTED = (
    ("hedgeflow_input_messages_total", {"part": "0-chain.logs"}),
    ("hedgeflow_input_messages_total", {"part": "0-dex.quotes"}),
    ("hedgeflow_oracle_prices_total", {"asset": "ETH", "status": "ok"}),
    ("hedgeflow_event_to_price_latency_seconds_count", {}),
    ("hedgeflow_event_to_order_latency_seconds_count", {}),
    ("hedgeflow_orders_total", {"kind": "liquidation", "outcome": "emitted"}),
)


def _counts() -> list[float]:
    return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in COUNTED]


def test_the_registry_counts_what_the_stages_emitted_and_outputs_do_not_change() -> None:
    prices: list = []
    orders: list = []
    rows: list = []
    flow = Dataflow("metrics_test")
    raw = op.input("in", flow, TestingSource(_batches()))
    observe_input(raw)
    oracle = oracle_stage(raw, CFG, PARTS)
    observe_oracle(oracle)
    risk = risk_stage(raw, CFG, PARTS, oracle.published)
    observe_risk(risk)
    observe_rejects(op.merge("rejects", oracle.rejects, risk.rejects))
    op.output("prices", oracle.prices, TestingSink(prices))
    op.output("orders", risk.orders, TestingSink(orders))
    op.output("rows", risk.rows, TestingSink(rows))
    before = _counts()

    run_main(flow)

    delta = [after - b for after, b in zip(_counts(), before, strict=True)]
    batches = _batches()
    messages = {p: sum(len(b.messages) for b in batches if b.part == p) for p in PARTS}
    ok_prices = [p for _, p in prices if p.status == "ok"]
    assert delta == [messages["0-chain.logs"], messages["0-dex.quotes"], len(ok_prices),
                     len(prices), len(orders), len(orders)]  # fmt: skip
    assert len(orders) == 3
    newest = {r.account: r for r in _sorted(rows)}
    below = sum(1 for r in newest.values() if r.mm > 0 and r.equity < r.mm)
    assert below == 3  # the three 20 ETH longs, never liquidated here
    assert REGISTRY.get_sample_value("hedgeflow_accounts_below_maintenance_margin") == below
    # the same outputs as the flow without metrics
    plain_orders: list = []
    plain_rows: list = []
    run_main(_flow(plain_orders, plain_rows))
    assert _sorted(plain_orders) == _sorted(orders) and _sorted(plain_rows) == _sorted(rows)
