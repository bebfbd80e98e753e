"""The dataflows: where the input comes from, which stages run, where the output goes.

    replay:  recording file(s) ----\\
                                    >-- oracle_stage --> Parquet (+ Kafka topics)
    live:    Kafka chain.logs,  ----/
             dex.quotes
"""

from __future__ import annotations

from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.sources import KafkaBatchSource, RecordingSource
from flows.oracle import oracle_stage
from flows.outputs import write_oracle
from operators.config import Config


def replay_flow(recording: Path, out_dir: Path, cfg: Config) -> Dataflow:
    """All stages straight from a recording, no broker; ends with the recording."""
    flow = Dataflow("hedgeflow_replay")
    source = RecordingSource(
        recording, cfg.run.batch_size, {cfg.topics.chain_logs, cfg.topics.dex_quotes}
    )
    raw = op.input("recording", flow, source)
    write_oracle(oracle_stage(raw, cfg, source.list_parts()), cfg, out_dir, None)
    return flow


def kafka_oracle_flow(brokers: list[str], cfg: Config, out_dir: Path, until_end: bool) -> Dataflow:
    """The oracle from Kafka to Kafka (``oracle.prices``, ``deadletter``) and Parquet."""
    flow = Dataflow("hedgeflow_oracle")
    source = KafkaBatchSource(
        brokers, [cfg.topics.chain_logs, cfg.topics.dex_quotes], cfg.run.batch_size, until_end
    )
    raw = op.input("kafka", flow, source)
    write_oracle(oracle_stage(raw, cfg, source.list_parts()), cfg, out_dir, brokers)
    return flow
