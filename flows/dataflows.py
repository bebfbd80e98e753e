"""The dataflows: where the input comes from, which stages run, where the output goes.

    replay:  recording file(s) ----\\
                                    >-- oracle_stage --> risk_stage --> Parquet (+ Kafka topics)
    live:    Kafka chain.logs,  ----/        (the risk stage runs when risk.venue is set)
             dex.quotes
"""

from __future__ import annotations

from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.sources import KafkaBatchSource, RecordingSource
from flows.oracle import oracle_stage
from flows.outputs import write_oracle, write_risk
from flows.risk import risk_stage
from operators.config import Config
from operators.model import RawBatch


def replay_flow(recording: Path, out_dir: Path, cfg: Config) -> Dataflow:
    """All stages straight from a recording, no broker; ends with the recording."""
    flow = Dataflow("hedgeflow_replay")
    source = RecordingSource(
        recording, cfg.run.batch_size, {cfg.topics.chain_logs, cfg.topics.dex_quotes}
    )
    raw = op.input("recording", flow, source)
    _stages(raw, cfg, source.list_parts(), out_dir, None)
    return flow


def kafka_oracle_flow(brokers: list[str], cfg: Config, out_dir: Path, until_end: bool) -> Dataflow:
    """The oracle (and the risk stage, when configured) from Kafka to Kafka
    (``oracle.prices``, ``deadletter``, ``orders``) and Parquet."""
    flow = Dataflow("hedgeflow_oracle")
    source = KafkaBatchSource(
        brokers, [cfg.topics.chain_logs, cfg.topics.dex_quotes], cfg.run.batch_size, until_end
    )
    raw = op.input("kafka", flow, source)
    _stages(raw, cfg, source.list_parts(), out_dir, brokers)
    return flow


def _stages(
    raw: Stream[RawBatch], cfg: Config, parts: list[str], out_dir: Path, brokers: list[str] | None
) -> None:
    oracle = oracle_stage(raw, cfg, parts)
    write_oracle(oracle, cfg, out_dir, brokers)
    if cfg.risk.venue:
        write_risk(risk_stage(oracle, cfg, parts), cfg, out_dir, brokers)
