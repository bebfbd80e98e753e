"""Bytewax sources that emit ``RawBatch`` items: one per poll, one input partition each.

Both name a partition ``"<partition>-<topic>"`` (Bytewax's Kafka naming), both end a
finite input with an ``eof`` batch, and both resume from the next offset after a crash.
A partition whose ``eof`` batch was emitted before the snapshot it resumes from emits
nothing again: downstream state already holds it, and a second one would repeat the rows
it triggers (``partition_stats``). Batching keeps Bytewax's per-item cost off the
per-message path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.kafka_clients import KafkaConnection, bytewax_source
from connectors.recording import load_recording
from operators.model import RawBatch, RawMessage

log = logging.getLogger("hedgeflow.sources")

FETCH_WAIT_MS = "10"
"""How long the broker may hold a fetch for data (librdkafka's ``fetch.wait.max.ms``,
default 500): a block's logs and the oracle's tick would otherwise wait up to that long
at each hop between stages (``tests/bench/block_latency.py``)."""


def part_name(topic: str, partition: int) -> str:
    return f"{partition}-{topic}"


class _RecordingPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, part: str, rows: pl.DataFrame, batch_size: int, resume_at: int):
        self.part = part
        self.rows = rows
        self.batch_size = batch_size
        self.pos = resume_at
        self.done = resume_at >= rows.height  # the position reaches the end with eof only

    def next_batch(self) -> list[RawBatch]:
        if self.done:
            raise StopIteration
        chunk = self.rows.slice(self.pos, self.batch_size)
        self.pos += chunk.height
        messages = [RawMessage(*row) for row in chunk.iter_rows()]
        eof = self.pos >= self.rows.height
        self.done = eof
        return [RawBatch(self.part, messages, eof)]

    def snapshot(self) -> int:
        return self.pos


class RecordingSource(FixedPartitionedSource[RawBatch, int]):
    """Replays a recording (a file or a directory), each topic partition as a partition.

    ``topics`` keeps only those topics (all when ``None``).
    """

    def __init__(self, path: Path, batch_size: int, topics: set[str] | None = None):
        self.path = path
        self.batch_size = batch_size
        self.topics = topics
        self._frame: pl.DataFrame | None = None

    def _rows(self) -> pl.DataFrame:
        if self._frame is None:
            frame = load_recording(self.path)
            if self.topics is not None:
                frame = frame.filter(pl.col("topic").is_in(sorted(self.topics)))
            self._frame = frame
        return self._frame

    def list_parts(self) -> list[str]:
        keys = self._rows().select("topic", "partition").unique().sort("topic", "partition")
        return [part_name(t, p) for t, p in keys.iter_rows()]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _RecordingPartition:
        partition, topic = for_part.split("-", 1)
        rows = self._rows().filter(
            (pl.col("topic") == topic) & (pl.col("partition") == int(partition))
        )
        if resume_state is not None:
            log.info("resuming %s at row %d of %d", for_part, resume_state, rows.height)
        return _RecordingPartition(for_part, rows, self.batch_size, resume_state or 0)


@dataclass(frozen=True)
class KafkaPosition:
    """A Kafka input partition's recovery state."""

    offset: int | None
    """The next offset to read (Bytewax's ``KafkaSource`` state)."""
    ended: bool
    """Whether the partition's ``eof`` batch was emitted (``until_end`` only)."""


class _KafkaBatchPartition(StatefulSourcePartition[RawBatch, KafkaPosition]):
    def __init__(self, part: str, inner: StatefulSourcePartition, ended: bool):
        self.part = part
        self.inner = inner
        self.ended = ended
        self.caught_up = False
        """Whether the last batch sent had caught up (``RawBatch.caught_up``)."""
        index, topic = part.split("-", 1)
        self.topic_partition = TopicPartition(topic, int(index))

    def next_batch(self) -> list[RawBatch]:
        if self.ended:
            raise StopIteration
        try:
            polled = self.inner.next_batch()
        except StopIteration:
            self.ended = True
            return [RawBatch(self.part, [], True)]
        caught_up = self._at_high_watermark()
        if not polled and caught_up == self.caught_up:
            return []
        self.caught_up = caught_up
        return [RawBatch(self.part, [_raw(m) for m in polled], caught_up=caught_up)]

    def _at_high_watermark(self) -> bool:
        """Whether the next offset to read is the partition's high watermark, as the last
        fetch response gave it (unknown before one: not caught up). Bytewax 0.21.1's
        Kafka partition keeps its consumer as ``_consumer``
        (the idle case of ``tests/integration/test_risk_kafka.py`` and
        ``tests/integration/test_kafka_source.py`` fail if it no longer does)."""
        consumer: Consumer = self.inner._consumer  # type: ignore[attr-defined]
        low, high = consumer.get_watermark_offsets(self.topic_partition, cached=True)
        if high < 0:
            return False
        position = self.inner.snapshot()
        return (position if position >= 0 else low) >= high

    def snapshot(self) -> KafkaPosition:
        return KafkaPosition(self.inner.snapshot(), self.ended)

    def close(self) -> None:
        self.inner.close()


def _raw(m: KafkaSourceMessage) -> RawMessage:
    timestamp_ms = m.timestamp[1] if m.timestamp is not None else 0
    return RawMessage(m.topic or "", m.partition or 0, m.offset or 0, timestamp_ms, m.key, m.value)


class KafkaBatchSource(FixedPartitionedSource[RawBatch, KafkaPosition]):
    """Bytewax's Kafka source (assigned partitions, offsets in recovery state), batched.

    ``until_end`` stops each partition at the end it finds (``tail=False``). A partition
    that had ended in the run a recovery directory holds stays ended: a re-run reads
    nothing more from it (give a new recovery directory to read further). A consumer error
    stops the flow (resume it under recovery); bad messages are the decoder's job.
    """

    def __init__(self, kafka: KafkaConnection, topics: list[str], batch_size: int, until_end: bool):
        self.inner = bytewax_source(
            kafka, topics, {"fetch.wait.max.ms": FETCH_WAIT_MS}, tail=not until_end,
            starting_offset=OFFSET_BEGINNING, batch_size=batch_size,
        )  # fmt: skip

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: KafkaPosition | None
    ) -> _KafkaBatchPartition:
        if resume_state is None:
            resume_state = KafkaPosition(None, ended=False)
        elif resume_state.ended:
            log.info(
                "%s had ended at offset %s; nothing more is read", for_part, resume_state.offset
            )
        else:
            log.info("resuming %s at offset %s", for_part, resume_state.offset)
        inner = self.inner.build_part(step_id, for_part, resume_state.offset)
        return _KafkaBatchPartition(for_part, inner, resume_state.ended)
