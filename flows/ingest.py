"""The ingest flow: an EVM node's logs to ``chain.logs``.

    node --(ChainSource: ranges, confirmations, reorgs)--> chain.logs (keyed by address)

Each message carries its sequence number in the ``hedgeflow-seq`` header and goes to the
partition ``crc32(address) % partitions``; a progress marker goes to every partition,
keyed ``progress:N``. After a resume, messages the topic already
holds (sequence number at most its partition's last) are not produced again, so a
restart under recovery leaves no gap and no duplicate.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.connectors.stdio import StdOutSink
from bytewax.dataflow import Dataflow

from connectors.chain_source import ChainSource, Rpc
from connectors.kafka_tools import last_headers, topic_partitions
from operators.abi import quantity
from operators.chain import Cursor, Published, publish_range
from operators.model import RawMessage
from operators.stages import StageParams

SEQ_HEADER = "hedgeflow-seq"


def followed_addresses(params: StageParams) -> list[str]:
    """The oracle's registered sources and ``chain.contracts``, sorted."""
    return sorted(set(params.registry.by_address) | set(params.cfg.chain.contracts))


def ingest_flow(
    params: StageParams, brokers: list[str] | None, from_block: int | None, to_block: int | None
) -> Dataflow:
    """Follow the node; publish to Kafka, or print the messages when ``brokers`` is None."""
    flow = Dataflow("hedgeflow_ingest")
    cfg = params.cfg
    topic = cfg.topics.chain_logs
    if brokers is None:  # --dry-run
        source = ChainSource(cfg.chain, followed_addresses(params), from_block, to_block, _nothing)
        logs = op.input("chain", flow, source)
        op.output(
            "stdout", op.map("show", logs, lambda p: f"{p.seq} {p.value.decode()}"), StdOutSink()
        )
        return flow

    bootstrap = ",".join(brokers)
    partitions = topic_partitions(bootstrap, [topic])[topic]

    def already_written() -> Callable[[Published], bool]:
        last = {p: int(v) for p, v in last_headers(bootstrap, topic, SEQ_HEADER).items()}
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
    sink = KafkaSink(brokers, topic, add_config=config)
    op.output("chain_logs", op.flat_map("to_kafka", logs, to_kafka), sink)
    return flow


def chain_messages(
    rpc_url: str, addresses: list[str], first: int, last: int, topic: str, partitions: int
) -> list[RawMessage]:
    """The logs of ``addresses`` in blocks ``first..last`` as ``ingest`` publishes them:
    a recording of a chain (``partitions`` partitions of ``topic``, keyed by address)."""
    rpc = Rpc(rpc_url, timeout_s=60.0)
    logs = rpc.logs(first, last, addresses)
    blocks = {quantity(log["blockNumber"], "blockNumber") for log in logs} | {last}
    timestamps = {n: rpc.header(n).ts for n in sorted(blocks)}
    _, published = publish_range(
        Cursor(first), last, logs, {}, timestamps, rpc.chain_id(), 1, timestamps[last]
    )
    offsets = [0] * partitions
    out = []
    for p in published:
        keys = [p.key] if p.key else [marker_key(n, partitions) for n in range(partitions)]
        for key in keys:
            part = partition_of(key, partitions)
            out.append(RawMessage(topic, part, offsets[part], p.ts_ms, key.encode(), p.value))
            offsets[part] += 1
    return out


@functools.cache
def marker_key(partition: int, partitions: int) -> str:
    """The key that puts a progress marker in ``partition`` (CRC-32 partitioning)."""
    return next(
        key for i in itertools.count()
        if partition_of(key := f"progress:{i}", partitions) == partition
    )  # fmt: skip


@functools.cache
def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 of it, as librdkafka's "consistent" partitioner."""
    return zlib.crc32(key.encode()) % partitions


def _nothing() -> Callable[[Published], bool]:
    return lambda p: False
