"""Where each stage's streams go: Parquet datasets, and Kafka topics when a broker is set."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Stream

from connectors.kafka_clients import KafkaConnection, bytewax_sink
from connectors.parquet_sink import ParquetSink, arrow_schema
from flows.oracle import OracleStreams
from flows.risk import RiskStreams
from operators import oracle_topic, order_auth
from operators.config import Config
from operators.model import (
    AccountRiskRow,
    InstrumentRow,
    OraclePrice,
    Order,
    OrderDenied,
    PartitionStats,
    PriceBatch,
    Rejected,
    Settlement,
)
from operators.stages import StageParams

log = logging.getLogger("hedgeflow.progress")


def _row(item: msgspec.Struct) -> dict[str, Any]:
    return msgspec.structs.asdict(item)


def _to_kafka(item: tuple[str, msgspec.Struct]) -> KafkaSinkMessage[bytes, bytes]:
    key, value = item
    return KafkaSinkMessage(key.encode(), msgspec.json.encode(value))


def _decision_to_kafka(
    item: tuple[str, Order | OrderDenied], *, secret: bytes | None
) -> KafkaSinkMessage[bytes, bytes]:
    """An order, signed when there is a ``secret``, or a denial (never signed)."""
    key, value = item
    if isinstance(value, Order) and secret is not None:
        return KafkaSinkMessage(key.encode(), order_auth.encode_signed(value, secret))
    return _to_kafka(item)


def _published_to_kafka(item: tuple[str, PriceBatch]) -> list[KafkaSinkMessage[bytes, bytes]]:
    asset, batch = item
    return [KafkaSinkMessage(asset.encode(), oracle_topic.encode(i)) for i in batch.items]


def write_oracle(
    out: OracleStreams, cfg: Config, out_dir: Path, kafka: KafkaConnection | None
) -> None:
    """Send prices to ``oracle_prices/``, tick rows to ``oracle_ticks/`` and stats to
    ``partition_stats/`` under ``out_dir``; prices, tick rows and progress records to the
    ``oracle.prices`` topic."""
    _parquet("prices_parquet", out.prices, out_dir, "oracle_prices", OraclePrice, "window_end_ms")
    _parquet("ticks_parquet", out.ticks, out_dir, "oracle_ticks", OraclePrice, "window_end_ms")
    _parquet("stats_parquet", out.stats, out_dir, "partition_stats", PartitionStats, "ts_event_ms")
    log_progress(out.stats)
    if kafka is not None:
        # Idempotence keeps each partition in order: an asset's rows before its progress.
        sink = bytewax_sink(kafka, cfg.topics.oracle_prices, {"enable.idempotence": "true"})
        op.output(
            "prices_kafka", op.flat_map("prices_encode", out.published, _published_to_kafka), sink
        )


def write_risk(
    out: RiskStreams, params: StageParams, out_dir: Path, kafka: KafkaConnection | None
) -> None:
    """Send account risk to ``account_risk/``, instruments to ``instruments/``, settlements
    to ``settlements/``, orders to ``orders/`` and denied orders to ``order_denials/``;
    orders and denials to the ``orders`` topic (keyed by account, JSON tagged by its
    ``record`` field: ``order`` or ``denial``), each order signed with ``auth`` when
    ``orders.secret_file`` is set (``operators.order_auth``)."""
    cfg = params.cfg
    _parquet("risk_parquet", out.rows, out_dir, "account_risk", AccountRiskRow, "ts_event_ms")
    _parquet("orders_parquet", out.orders, out_dir, "orders", Order, "ts_event_ms")
    _parquet("denials_parquet", out.denials, out_dir, "order_denials", OrderDenied, "ts_event_ms")
    _parquet(
        "settlements_parquet", out.settlements, out_dir, "settlements", Settlement, "ts_event_ms"
    )
    _parquet(
        "instruments_parquet", out.instruments, out_dir, "instruments", InstrumentRow, "ts_event_ms"
    )
    if kafka is not None:
        decisions = op.merge("orders_and_denials", out.orders, out.denials)
        encode = functools.partial(_decision_to_kafka, secret=params.order_secret)
        _kafka("orders_kafka", decisions, kafka, cfg.topics.orders, encode)


def write_deadletter(
    rejects: Stream[tuple[str, Rejected]],
    cfg: Config,
    out_dir: Path,
    kafka: KafkaConnection | None,
) -> None:
    """Send rejects to ``deadletter/`` under ``out_dir`` and to the ``deadletter`` topic."""
    _parquet("rejects_parquet", rejects, out_dir, "deadletter", Rejected, "timestamp_ms")
    if kafka is not None:
        _kafka("rejects_kafka", rejects, kafka, cfg.topics.deadletter)


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


def _kafka(
    step: str,
    stream: Stream[Any],
    kafka: KafkaConnection,
    topic: str,
    encode: Callable[[Any], KafkaSinkMessage[bytes, bytes]] = _to_kafka,
) -> None:
    op.output(step, op.map(f"{step}_encode", stream, encode), bytewax_sink(kafka, topic, {}))


def log_progress(stats: Stream[tuple[str, PartitionStats]], every_s: float = 5.0) -> None:
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

    op.inspect("progress", stats, report)
