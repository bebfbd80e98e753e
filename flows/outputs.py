"""Where each stage's streams go: Parquet datasets, and Kafka topics when a broker is set."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Stream

from connectors.parquet_sink import ParquetSink, arrow_schema
from flows.oracle import OracleOut
from flows.risk import RiskOut
from operators.config import Config
from operators.model import (
    AccountRiskRow,
    InstrumentRow,
    OraclePrice,
    Order,
    PartitionStats,
    Rejected,
)

log = logging.getLogger("hedgeflow.progress")


def _row(item: msgspec.Struct) -> dict[str, Any]:
    return msgspec.structs.asdict(item)


def _to_kafka(item: tuple[str, msgspec.Struct]) -> KafkaSinkMessage[bytes, bytes]:
    key, value = item
    return KafkaSinkMessage(key.encode(), msgspec.json.encode(value))


def write_oracle(out: OracleOut, cfg: Config, out_dir: Path, brokers: list[str] | None) -> None:
    """Send the oracle's streams to ``oracle_prices/``, ``deadletter/``, ``partition_stats/``
    under ``out_dir``, and to the ``oracle.prices`` and ``deadletter`` topics."""
    _parquet("prices_parquet", out.prices, out_dir, "oracle_prices", OraclePrice, "window_end_ms")
    _parquet("rejects_parquet", out.rejects, out_dir, "deadletter", Rejected, "timestamp_ms")
    _parquet("stats_parquet", out.stats, out_dir, "partition_stats", PartitionStats, "ts_event_ms")
    log_progress(out)
    if brokers:
        _kafka("prices_kafka", out.prices, brokers, cfg.topics.oracle_prices)
        _kafka("rejects_kafka", out.rejects, brokers, cfg.topics.deadletter)


def write_risk(out: RiskOut, cfg: Config, out_dir: Path, brokers: list[str] | None) -> None:
    """Send account risk to ``account_risk/``, instruments to ``instruments/``, and orders
    to ``orders/`` and the ``orders`` topic (keyed by account, JSON)."""
    _parquet("risk_parquet", out.rows, out_dir, "account_risk", AccountRiskRow, "ts_event_ms")
    _parquet("orders_parquet", out.orders, out_dir, "orders", Order, "ts_event_ms")
    _parquet(
        "instruments_parquet", out.instruments, out_dir, "instruments", InstrumentRow, "ts_event_ms"
    )
    if brokers:
        _kafka("orders_kafka", out.orders, brokers, cfg.topics.orders)


def _parquet(
    step: str,
    stream: Stream[Any],
    out_dir: Path,
    dataset: str,
    record: type[msgspec.Struct],
    time: str,
) -> None:
    """Write ``stream``'s records to ``dataset``, one column per field of ``record``."""
    sink = ParquetSink(out_dir, dataset, arrow_schema(record), _row, time)
    op.output(step, stream, sink)


def _kafka(step: str, stream: Stream[Any], brokers: list[str], topic: str) -> None:
    op.output(step, op.map(f"{step}_encode", stream, _to_kafka), KafkaSink(brokers, topic))


def log_progress(out: OracleOut, every_s: float = 5.0) -> None:
    """Log each input partition's counts and event time, at most every ``every_s`` (wall)."""
    last: dict[str, float] = {}

    def report(step_id: str, item: tuple[str, PartitionStats]) -> None:
        part, stats = item
        now = time.monotonic()
        if now - last.get(part, 0.0) >= every_s:
            last[part] = now
            log.info(
                "%s: %d messages, %d observations, %d rejected, event time %s",
                part, stats.messages, stats.observations, stats.rejected,
                datetime.fromtimestamp(stats.ts_event_ms / 1000, UTC).isoformat(),
            )  # fmt: skip

    op.inspect("progress", out.stats, report)
