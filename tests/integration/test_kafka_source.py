"""The Kafka source's batches on the real broker: a partition says it has caught up only
once it has read to its high watermark (never while a backlog remains), says nothing
more while nothing arrives, and catches up again after more arrive (``RawBatch.caught_up``,
what idleness rests on: ``operators.clock``)."""

from __future__ import annotations

import time
import uuid

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import create_topics, publish
from connectors.sources import KafkaBatchSource
from operators.model import RawBatch, RawMessage


def _messages(topic: str, start: int, count: int) -> list[RawMessage]:
    return [
        RawMessage(topic, 0, start + i, 1_700_000_000_000 + start + i, None, b"v")
        for i in range(count)
    ]


def _read_until_caught_up(part: object, timeout_s: float = 20.0) -> list[RawBatch]:
    batches: list[RawBatch] = []
    deadline = time.monotonic() + timeout_s
    while not (batches and batches[-1].caught_up):
        assert time.monotonic() < deadline, f"never caught up: {batches}"
        batches += part.next_batch()  # type: ignore[attr-defined]
    return batches


def test_a_partition_catches_up_at_its_high_watermark_and_again_after_more_arrive(
    broker: EmbeddedBroker,
) -> None:
    topic = f"src-{uuid.uuid4().hex[:8]}"
    create_topics(broker.connection, [topic], 1)
    publish(_messages(topic, 0, 2_500), broker.connection)
    source = KafkaBatchSource(broker.connection, [topic], batch_size=1_000, until_end=False)
    (name,) = source.list_parts()
    part = source.build_part("test", name, None)

    first = _read_until_caught_up(part)
    offsets = [m.offset for b in first for m in b.messages]
    assert offsets == list(range(2_500))  # caught up only with everything read
    assert len(first) >= 3 and not any(b.caught_up for b in first[:-1])  # 1,000 a batch
    assert part.next_batch() == []  # nothing new, nothing to say

    publish(_messages(topic, 2_500, 10), broker.connection)
    more: list[RawBatch] = []
    deadline = time.monotonic() + 20.0
    while sum(len(b.messages) for b in more) < 10:
        assert time.monotonic() < deadline
        more += part.next_batch()
    if not more[-1].caught_up:  # read ahead of the fetch that learnt the new end
        more += _read_until_caught_up(part)
    assert [m.offset for b in more for m in b.messages] == list(range(2_500, 2_510))
    assert more[-1].caught_up
    part.close()
