"""The dataflows: where the input comes from, which stages run, where the output goes.

    run oracle:  Kafka chain.logs, dex.quotes ------------> oracle --> oracle.prices (rows
                                                                        and progress), Parquet
    run risk:    Kafka chain.logs, dex.quotes, oracle.prices --> risk --> orders, Parquet
    replay:      recording (chain.logs, dex.quotes) --> oracle --> risk   (one dataflow)
    demo:        Kafka chain.logs, dex.quotes      --> oracle --> risk   (one dataflow)

Every stage also sends its rejects to the deadletter topic and ``deadletter/``, and
reports its metrics (``flows.metrics``: inspected, the streams unchanged). The risk
stage runs where the configuration names a venue (``risk.venue``). With executors
configured (``execution.signers``), the risk stage also reads ``fills`` (a recording's
fills, in replay, when it holds some): its partitions are inputs of the risk stage's gate,
never of the oracle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.kafka_clients import KafkaConnection
from connectors.sources import KafkaBatchSource, RecordingSource
from flows.metrics import observe_input, observe_oracle, observe_rejects, observe_risk
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
        recording,
        params.cfg.run.batch_size,
        {topics.chain_logs, topics.dex_quotes, *_fills(params)},
    )
    raw = op.input("recording", flow, source)
    observe_input(raw)
    _all_stages(raw, params, source.list_parts(), out_dir, None)
    return flow


def kafka_flow(
    kafka: KafkaConnection, params: StageParams, out_dir: Path, until_end: bool, stages: Stages
) -> Dataflow:
    """``stages`` from Kafka to Kafka and Parquet: the oracle, the risk stage (reading the
    oracle's topic), or both in one dataflow."""
    flow = Dataflow(f"hedgeflow_{stages}")
    topics = params.cfg.topics
    inputs = [topics.chain_logs, topics.dex_quotes]
    if stages == "risk":
        inputs.append(topics.oracle_prices)
    if stages != "oracle":
        inputs.extend(_fills(params))
    source = KafkaBatchSource(kafka, inputs, params.cfg.run.batch_size, until_end)
    raw = op.input("kafka", flow, source)
    observe_input(raw)
    parts = source.list_parts()
    if stages == "all":
        _all_stages(raw, params, parts, out_dir, kafka)
    elif stages == "oracle":
        oracle = oracle_stage(raw, params, parts)
        observe_oracle(oracle)
        observe_rejects(oracle.rejects)
        write_oracle(oracle, params.cfg, out_dir, kafka)
        write_deadletter(oracle.rejects, params.cfg, out_dir, kafka)
    else:
        gate_parts = [p for p in parts if p.split("-", 1)[1] != topics.oracle_prices]
        risk = risk_stage(raw, params, gate_parts)
        observe_risk(risk)
        observe_rejects(risk.rejects)
        write_risk(risk, params, out_dir, kafka)
        write_deadletter(risk.rejects, params.cfg, out_dir, kafka)
    return flow


def _all_stages(
    raw: Stream[RawBatch], params: StageParams, parts: list[str], out_dir: Path,
    kafka: KafkaConnection | None,
) -> None:  # fmt: skip
    fills = set(_fills(params))
    chain = raw
    if fills:
        chain = op.filter("oracle_inputs", raw, lambda b: b.topic not in fills)
    oracle = oracle_stage(chain, params, [p for p in parts if p.split("-", 1)[1] not in fills])
    observe_oracle(oracle)
    write_oracle(oracle, params.cfg, out_dir, kafka)
    rejects = oracle.rejects
    if params.risk is not None:
        risk = risk_stage(raw, params, parts, oracle.published)
        observe_risk(risk)
        write_risk(risk, params, out_dir, kafka)
        rejects = op.merge("all_rejects", rejects, risk.rejects)
    observe_rejects(rejects)
    write_deadletter(rejects, params.cfg, out_dir, kafka)


def _fills(params: StageParams) -> list[str]:
    """The ``fills`` topic when the risk stage reads it (a venue and executors configured)."""
    cfg = params.cfg
    return [cfg.topics.fills] if params.risk is not None and cfg.execution.signers else []
