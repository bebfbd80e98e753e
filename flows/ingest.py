"""The ingest flow: an EVM node's logs to ``chain.logs``.

    node --(ChainSource: ranges, confirmations, reorgs)--> chain.logs (keyed by address)

Each message carries its sequence number in the ``hedgeflow-seq`` header and goes to the
partition ``crc32(address) % partitions``; a progress marker goes to every partition,
keyed ``progress:N``. After a resume, messages the topic already
holds (sequence number at most its partition's last) are not produced again, so a
restart under recovery leaves no gap and no duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.connectors.stdio import StdOutSink
from bytewax.dataflow import Dataflow

from connectors.chain_source import ChainSource
from connectors.kafka_clients import KafkaConnection, bytewax_sink
from connectors.kafka_tools import last_headers, topic_partitions
from connectors.partitions import marker_key, partition_of
from operators.chain import Published
from operators.stages import StageParams

SEQ_HEADER = "hedgeflow-seq"


def followed_addresses(params: StageParams) -> list[str]:
    """The oracle's registered sources and ``chain.contracts``, sorted."""
    return sorted(set(params.registry.by_address) | set(params.cfg.chain.contracts))


def ingest_flow(
    params: StageParams,
    kafka: KafkaConnection | None,
    from_block: int | None,
    to_block: int | None,
) -> Dataflow:
    """Follow the node; publish to Kafka, or print the messages when ``kafka`` is None."""
    flow = Dataflow("hedgeflow_ingest")
    cfg = params.cfg
    topic = cfg.topics.chain_logs
    if kafka is None:  # --dry-run
        source = ChainSource(cfg.chain, followed_addresses(params), from_block, to_block, _nothing)
        logs = op.input("chain", flow, source)
        op.output(
            "stdout", op.map("show", logs, lambda p: f"{p.seq} {p.value.decode()}"), StdOutSink()
        )
        return flow

    partitions = topic_partitions(kafka, [topic])[topic]

    def already_written() -> Callable[[Published], bool]:
        headers = _settled(lambda: last_headers(kafka, topic, SEQ_HEADER))
        last = {p: int(v) for p, v in headers.items()}
        # A progress marker is sent again to every partition: a repeat is harmless.
        return lambda p: p.key != "" and p.seq <= last.get(partition_of(p.key, partitions), 0)

    marker_keys = [marker_key(n, partitions) for n in range(partitions)]

    def to_kafka(p: Published) -> list[KafkaSinkMessage[bytes, bytes]]:
        headers = [(SEQ_HEADER, str(p.seq).encode())]
        keys = marker_keys if not p.key else [p.key]  # a progress marker: to every partition
        return [KafkaSinkMessage(k.encode(), p.value, headers=headers, timestamp=p.ts_ms)
                for k in keys]  # fmt: skip

    source = ChainSource(
        cfg.chain, followed_addresses(params), from_block, to_block, already_written
    )
    logs = op.input("chain", flow, source)
    # Idempotent producing keeps each partition in order, which the resume check relies on;
    # the "consistent" partitioner (CRC-32 of the key) is the one partition_of computes.
    config = {"enable.idempotence": "true", "partitioner": "consistent"}
    sink = bytewax_sink(kafka, topic, config)
    op.output("chain_logs", op.flat_map("to_kafka", logs, to_kafka), sink)
    return flow


def _nothing() -> Callable[[Published], bool]:
    return lambda p: False


def _settled(read: Callable[[], dict[int, bytes]], pause_s: float = 1.0) -> dict[int, bytes]:
    """``read()`` again until two reads ``pause_s`` apart agree (at most 10 s): after a
    kill, produce requests the dead process had already sent may still land, and a resume
    that read the topic before them would publish those logs again."""
    seen = read()
    for _ in range(10):
        time.sleep(pause_s)
        again = read()
        if again == seen:
            break
        seen = again
    return seen
