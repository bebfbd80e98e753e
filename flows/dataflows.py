"""The dataflows: where the input comes from, which stages run, where the output goes.

    run oracle:  Kafka chain.logs, dex.quotes ------------> oracle --> oracle.prices (rows
                                                                        and progress), Parquet
    run risk:    Kafka chain.logs, dex.quotes, oracle.prices --> risk --> orders, Parquet
    replay:      recording (chain.logs, dex.quotes) --> oracle --> risk   (one dataflow)
    demo:        Kafka chain.logs, dex.quotes      --> oracle --> risk   (one dataflow)

Every stage also sends its rejects to the deadletter topic and ``deadletter/``. The risk
stage runs where the configuration names a venue (``risk.venue``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.sources import KafkaBatchSource, RecordingSource
from flows.oracle import oracle_stage
from flows.outputs import write_deadletter, write_oracle, write_risk
from flows.risk import risk_stage
from operators.model import RawBatch
from operators.stages import StageParams

Stages = Literal["oracle", "risk", "all"]


def replay_flow(recording: Path, out_dir: Path, params: StageParams) -> Dataflow:
    """Every stage straight from a recording, no broker; ends with the recording."""
    flow = Dataflow("hedgeflow_replay")
    topics = params.cfg.topics
    source = RecordingSource(
        recording, params.cfg.run.batch_size, {topics.chain_logs, topics.dex_quotes}
    )
    _all_stages(op.input("recording", flow, source), params, source.list_parts(), out_dir, None)
    return flow


def kafka_flow(
    brokers: list[str], params: StageParams, out_dir: Path, until_end: bool, stages: Stages
) -> Dataflow:
    """``stages`` from Kafka to Kafka and Parquet: the oracle, the risk stage (reading the
    oracle's topic), or both in one dataflow."""
    flow = Dataflow(f"hedgeflow_{stages}")
    topics = params.cfg.topics
    inputs = [topics.chain_logs, topics.dex_quotes]
    if stages == "risk":
        inputs.append(topics.oracle_prices)
    source = KafkaBatchSource(brokers, inputs, params.cfg.run.batch_size, until_end)
    raw = op.input("kafka", flow, source)
    parts = source.list_parts()
    if stages == "all":
        _all_stages(raw, params, parts, out_dir, brokers)
    elif stages == "oracle":
        oracle = oracle_stage(raw, params, parts)
        write_oracle(oracle, params.cfg, out_dir, brokers)
        write_deadletter(oracle.rejects, params.cfg, out_dir, brokers)
    else:
        venue_parts = [p for p in parts if p.split("-", 1)[1] != topics.oracle_prices]
        risk = risk_stage(raw, params, venue_parts)
        write_risk(risk, params.cfg, out_dir, brokers)
        write_deadletter(risk.rejects, params.cfg, out_dir, brokers)
    return flow


def _all_stages(
    raw: Stream[RawBatch], params: StageParams, parts: list[str], out_dir: Path,
    brokers: list[str] | None,
) -> None:  # fmt: skip
    oracle = oracle_stage(raw, params, parts)
    write_oracle(oracle, params.cfg, out_dir, brokers)
    rejects = oracle.rejects
    if params.risk is not None:
        risk = risk_stage(raw, params, parts, oracle.published)
        write_risk(risk, params.cfg, out_dir, brokers)
        rejects = op.merge("all_rejects", rejects, risk.rejects)
    write_deadletter(rejects, params.cfg, out_dir, brokers)
