"""Prometheus metrics of the stages and the executor, in prometheus_client's default registry.

Every name has the ``hedgeflow_`` prefix and is in base units (seconds, wei, messages);
counters end in ``_total``. The values are updated from the wiring (``flows.metrics`` wraps
a stage's output streams; the ingest's chain source and the executor count what they
publish), never from the pure cores.

Serving (each process on its own port):

- a Bytewax stage (``run``, ``replay``, ``ingest``): Bytewax's dataflow API
  (``BYTEWAX_DATAFLOW_API_ENABLED``, port ``BYTEWAX_DATAFLOW_API_PORT``), whose ``/metrics``
  is Bytewax's own metrics (step durations, ``bytewax_kafka_consumer_lag``) followed by this
  registry: one endpoint for both (:func:`enable_dataflow_api`);
- the executor, which runs no dataflow: prometheus_client's HTTP server (:func:`serve`).

Aggregation: the worker threads of one process share the registry, so a value is that
process's; the processes of a multi-process run serve one port each (``--metrics-port`` plus
the process id), and summing over them is the scraper's job (``sum by (...)``). A process
that restarts starts its counters from 0 (Prometheus's ``rate`` handles the reset).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from operators.config import ConfigError
from operators.model import AccountRiskRow, Execution, OraclePrice, Order, OrderDenied, Rejected

LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 12.0, 30.0, 60.0, 120.0, 300.0)
"""Histogram buckets in seconds: a block is 12 s on mainnet, a price window 60 s."""
ORACLE_STATUSES = ("ok", "degraded", "stale")
"""``OraclePrice.status`` values: ``hedgeflow_oracle_status`` is 1 for the current one."""

INPUT_MESSAGES = Counter(
    "hedgeflow_input_messages_total", "Messages read by a stage, by input partition", ["part"]
)
EVENT_TO_PRICE = Histogram(
    "hedgeflow_event_to_price_latency_seconds",
    "Wall clock at the oracle's emit minus the price's event time (its window end), s",
    buckets=LATENCY_BUCKETS_S,
)
EVENT_TO_ORDER = Histogram(
    "hedgeflow_event_to_order_latency_seconds",
    "Wall clock at the risk stage's emit minus the order's event time, s",
    buckets=LATENCY_BUCKETS_S,
)
ORACLE_PRICES = Counter(
    "hedgeflow_oracle_prices_total", "Oracle price rows emitted", ["asset", "status"]
)
ORACLE_AGE = Gauge(
    "hedgeflow_oracle_age_seconds",
    "Wall clock at the scrape minus the event time of the asset's newest price, s",
    ["asset"],
)
ORACLE_STATUS = Gauge(
    "hedgeflow_oracle_status", "1 for the status of the asset's newest price, else 0",
    ["asset", "status"],
)  # fmt: skip
DEADLETTER = Counter(
    "hedgeflow_deadletter_total", "Rejected messages, by stage and reason code", ["stage", "reason"]
)
ORDERS = Counter(
    "hedgeflow_orders_total",
    "Orders by kind and outcome: emitted or denied (risk stage); the executor's final state",
    ["kind", "outcome"],
)
ACCOUNTS_BELOW_MM = Gauge(
    "hedgeflow_accounts_below_maintenance_margin",
    "Accounts whose equity is below their maintenance margin at their newest evaluation",
)
TRANSACTIONS = Counter(
    "hedgeflow_executor_transactions_total",
    "The executor's order state changes (sent, replaced, mined, reverted, ...)",
    ["state"],
)
PENDING = Gauge(
    "hedgeflow_executor_pending_transactions", "Signed orders not yet included (sent, replaced)"
)
NONCE_GAP = Gauge(
    "hedgeflow_executor_nonce_gap",
    "Nonces below the next one the node holds no transaction for (> 0: the executor waits)",
)
GAS_SPENT = Counter(
    "hedgeflow_executor_gas_spent_wei_total",
    "Fees paid by the executor's included transactions, wei",
)
KAFKA_LAG = Gauge(
    "hedgeflow_kafka_lag_messages",
    "The executor's input partitions: high watermark minus the next offset to read, messages",
    ["topic", "partition"],
)
INGEST_BLOCKS = Counter(
    "hedgeflow_ingest_blocks_total", "Blocks the ingest published (logs and progress marker)"
)
INGEST_MESSAGES = Counter(
    "hedgeflow_ingest_messages_total",
    "Messages the ingest published to chain.logs, by kind: log, retraction (a reorg's "
    "removed: true), progress (one marker after each range, sent to every partition)",
    ["kind"],
)
INGEST_HEAD_LAG = Gauge(
    "hedgeflow_ingest_head_lag_blocks", "The node's head block minus the last block published"
)
INGEST_REORGS = Counter(
    "hedgeflow_ingest_reorgs_total", "Reorgs met: published blocks the node replaced"
)
INGEST_RPC_FAILURES = Counter(
    "hedgeflow_ingest_rpc_failures_total", "Failed calls to the node, each retried after a pause"
)


def enable_dataflow_api(port: int, cache_dir: Path) -> None:
    """Have the next Bytewax run of this process serve ``/metrics`` (and ``/dataflow``) on
    ``port``; Bytewax writes its ``dataflow.json`` into ``cache_dir``. A port already taken
    is a ``ConfigError`` now (Bytewax's server would fail silently in its own thread)."""
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: {exc.strerror}") from None
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
    os.environ["BYTEWAX_DATAFLOW_API_PORT"] = str(port)
    os.environ["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(cache_dir)


def serve(port: int) -> None:
    """Serve this registry's ``/metrics`` on ``port`` (all interfaces) from a daemon thread;
    ``ConfigError`` if the port is taken."""
    try:
        start_http_server(port)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: {exc.strerror}") from None


def reason_code(reason: str) -> str:
    """The code of a ``Rejected.reason`` (``code: detail``): ``late`` of ``late: ...``."""
    return reason.split(":", 1)[0].strip()


def count_input(part: str, messages: int) -> None:
    INPUT_MESSAGES.labels(part).inc(messages)


def count_reject(rejected: Rejected) -> None:
    DEADLETTER.labels(rejected.stage, reason_code(rejected.reason)).inc()


class OracleGauges:
    """The newest price's event time and status per asset, as ``hedgeflow_oracle_age_seconds``
    (evaluated at the scrape) and ``hedgeflow_oracle_status``."""

    def __init__(self) -> None:
        self.newest_ms: dict[str, int] = {}

    def on_price(self, price: OraclePrice, now_s: float) -> None:
        """Count ``price``, observe its latency at ``now_s`` (wall clock, s), and make it the
        asset's newest unless an older window's (a correction)."""
        EVENT_TO_PRICE.observe(now_s - price.window_end_ms / 1000)
        ORACLE_PRICES.labels(price.asset, price.status).inc()
        asset = price.asset
        if price.window_end_ms < self.newest_ms.get(asset, price.window_end_ms):
            return
        if asset not in self.newest_ms:
            age = ORACLE_AGE.labels(asset)
            age.set_function(lambda: time.time() - self.newest_ms[asset] / 1000)
        self.newest_ms[asset] = price.window_end_ms
        for status in ORACLE_STATUSES:
            ORACLE_STATUS.labels(asset, status).set(1 if status == price.status else 0)


class AccountGauges:
    """Which accounts are below maintenance margin at their newest evaluation."""

    def __init__(self) -> None:
        self.below: set[str] = set()

    def on_row(self, row: AccountRiskRow) -> None:
        if row.mm > 0 and row.equity < row.mm:
            self.below.add(row.account)
        else:
            self.below.discard(row.account)
        ACCOUNTS_BELOW_MM.set(len(self.below))


def count_decision(decision: Order | OrderDenied, now_s: float) -> None:
    """An order (its latency observed at ``now_s``, wall clock s) or a denial of the risk stage."""
    if isinstance(decision, Order):
        EVENT_TO_ORDER.observe(now_s - decision.ts_event_ms / 1000)
        ORDERS.labels(decision.kind, "emitted").inc()
    else:
        ORDERS.labels(decision.kind, "denied").inc()


def count_execution(execution: Execution) -> None:
    """One published state change of the executor: the lifecycle, the final outcome by kind,
    and the fee of a final included transaction (``fee_paid_wei``, counted once)."""
    TRANSACTIONS.labels(execution.state).inc()
    if execution.final:
        ORDERS.labels(execution.kind, execution.state).inc()
        if execution.fee_paid_wei is not None:
            GAS_SPENT.inc(int(execution.fee_paid_wei))
