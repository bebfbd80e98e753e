"""Tools that work on Kafka outside the dataflows: topics, publish and record.

They use kafka-python, except :func:`publish`, which produces with confluent-kafka.
Measured on Tansu here (500k messages of ~400 bytes, 3 partitions): kafka-python produced
35k msg/s (68k with 5 requests in flight; 13k without the ``crc32c`` package) and consumed
110k msg/s (18k without ``crc32c``); confluent-kafka produced 330k msg/s.

Readers assign partitions and keep their own offsets: on Tansu a consumer group reads at
about 3k msg/s and takes about 20 s to join (see DESIGN.md).

Tansu 0.6 reports a partition's end offset in ListOffsets (kafka-python ``end_offsets``,
confluent ``get_watermark_offsets``) as the base offset of its last record batch plus one,
short of the true end by the rest of that batch. The high watermark in Fetch responses is
right, so :func:`record` takes the larger of the two.
"""

from __future__ import annotations

import functools
import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from connectors.kafka_clients import KafkaConnection, py_admin, py_consumer, rd_admin, rd_producer
from connectors.recording import write_recording
from operators.model import RawMessage

RECORDING_NAME = "recording.parquet"
"""The file :func:`record` writes under its output directory."""
CONNECT_TIMEOUT_S = 30.0
"""How long a tool or a stage waits for the brokers at start (:func:`check_brokers`), s."""
STALL_TIMEOUT_S = 30.0
"""How long :func:`record` waits for data, in s, while a partition is short of its end."""
_POLL_MS = 200
_POLL_RECORDS = 10_000
_TOPIC_EXISTS = 36


def check_brokers(kafka: KafkaConnection, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` unless a broker of ``kafka`` answers a metadata request
    within ``timeout_s`` seconds. Call it before anything that would retry forever (the
    Kafka clients do, logging each refused connection)."""
    if not timeout_s > 0:
        msg = f"timeout_s must be > 0 s; got {timeout_s!r}"
        raise ValueError(msg)
    admin = rd_admin(kafka, {"log_level": 0})  # no retry lines
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        why = exc.args[0].str()
        msg = f"cannot reach a Kafka broker at {kafka.bootstrap} within {timeout_s:g} s: {why}"
        raise ConnectionError(msg) from None


def create_topics(kafka: KafkaConnection, names: list[str], partitions: int) -> None:
    """Create the topics in ``names`` that do not exist, each with ``partitions`` partitions.

    Existing topics are left as they are, but one with fewer than ``partitions`` partitions
    is an error.
    """
    if partitions < 1:
        msg = f"partitions must be >= 1; got {partitions!r}"
        raise ValueError(msg)
    admin = py_admin(kafka)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            result = admin.create_topics(
                {name: {"num_partitions": partitions} for name in missing},
                raise_errors=False,
                wait_for_metadata=True,
            )
            for topic in result["topics"]:
                if topic["error_code"] not in (0, _TOPIC_EXISTS):
                    msg = (
                        f"could not create topic {topic['name']!r} on {kafka.bootstrap}: "
                        f"error {topic['error_code']} {topic['error_message']}"
                    )
                    raise RuntimeError(msg)
        counts = _partition_counts(admin, names)
    finally:
        admin.close()
    short = {name: count for name, count in counts.items() if count < partitions}
    if short:
        msg = f"expected topics with at least {partitions} partitions; got {short}"
        raise ValueError(msg)


def topic_partitions(kafka: KafkaConnection, topics: list[str]) -> dict[str, int]:
    """The number of partitions of each topic; a missing topic is an error."""
    admin = py_admin(kafka)
    try:
        return _partition_counts(admin, topics)
    finally:
        admin.close()


def publish(
    messages: Iterable[RawMessage],
    kafka: KafkaConnection,
    speed: float | None = None,
    topic_map: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    delivered: Callable[[int], None] | None = None,
) -> int:
    """Put recorded messages back on Kafka and return how many were delivered.

    Each message keeps its partition, its key and its timestamp (ms, as CreateTime; the
    producer sends a timestamp of 0 as "now"), and the messages of one partition keep their
    order: one request in flight per connection, so a retry cannot overtake. ``topic_map``
    renames topics (others keep their name). Missing topics are created with as many
    partitions as the messages use.

    ``speed=None`` sends as fast as possible, in the order given. ``speed=X`` merges the
    partitions by ``timestamp_ms`` and paces them at X times real time. ``progress`` gets
    the running count after each message is handed to the producer; ``delivered`` gets a
    message's index in the order sent once the broker has acknowledged it (when it landed).
    The messages are held in memory while sending.
    """
    if speed is not None and not speed > 0:
        msg = f"speed must be > 0 (times real time) or None; got {speed!r}"
        raise ValueError(msg)
    rename = topic_map or {}
    pending = list(messages)
    needed: dict[str, int] = {}
    for m in pending:
        topic = rename.get(m.topic, m.topic)
        needed[topic] = max(needed.get(topic, 0), m.partition + 1)
    for topic, partitions in needed.items():
        create_topics(kafka, [topic], partitions)

    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def on_ack(index: int, err: KafkaError | None, msg: Message) -> None:
        """A message's own delivery report (it replaces ``on_delivery``)."""
        if err is not None:
            on_delivery(err, msg)
        elif delivered is not None:
            delivered(index)

    producer = rd_producer(
        kafka,
        {
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": 5,
            "delivery.report.only.error": delivered is None,
            "on_delivery": on_delivery,
        },
    )
    ordered = pending if speed is None else _paced(_merged_by_time(pending), speed, producer.poll)
    count = 0
    for m in ordered:
        acked = None if delivered is None else functools.partial(on_ack, count)
        _produce(producer, rename.get(m.topic, m.topic), m, acked)
        count += 1
        if progress is not None:
            progress(count)
    producer.flush()
    if failures:
        msg = f"{len(failures)} of {count} messages were not delivered; first: {failures[0]}"
        raise RuntimeError(msg)
    return count


def record(
    kafka: KafkaConnection,
    topics: list[str],
    out: Path,
    until_end: bool = True,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``topics`` to ``out / "recording.parquet"`` and return the message count.

    Reads every partition from its beginning by assigning partitions (no consumer group).
    With ``until_end`` it stops at the end offsets taken at the start; without, it runs
    until interrupted (Ctrl-C), and what was read so far is still written. ``progress``
    gets the running count after each message.
    """
    if not topics:
        msg = "expected at least one topic to record; got none"
        raise ValueError(msg)
    counts = topic_partitions(kafka, topics)
    partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    consumer = py_consumer(
        kafka, group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    try:
        starts = consumer.beginning_offsets(partitions)
        ends = _end_offsets(consumer, starts) if until_end else None
        reading = [tp for tp in partitions if ends is None or starts[tp] < ends[tp]]
        consumer.assign(reading)
        for tp in reading:
            consumer.seek(tp, starts[tp])
        rows = _consume(consumer, reading, ends, progress)
        return write_recording(rows, out / RECORDING_NAME)
    finally:
        consumer.close()


def last_headers(kafka: KafkaConnection, topic: str, name: str) -> dict[int, bytes]:
    """Header ``name`` of the last message of each non-empty partition of ``topic``."""
    count = topic_partitions(kafka, [topic])[topic]
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = py_consumer(kafka, group_id=None, enable_auto_commit=False)
    try:
        starts = consumer.beginning_offsets(partitions)
        ends = _end_offsets(consumer, starts)
        reading = [tp for tp in partitions if ends[tp] > starts[tp]]
        consumer.assign(reading)
        for tp in reading:
            consumer.seek(tp, ends[tp] - 1)
        found: dict[int, bytes] = {}
        deadline = time.monotonic() + STALL_TIMEOUT_S
        while any(consumer.position(tp) < ends[tp] for tp in reading):
            if time.monotonic() > deadline:
                msg = f"expected the last message of {topic} within {STALL_TIMEOUT_S} s"
                raise TimeoutError(msg)
            for tp, records in consumer.poll(timeout_ms=_POLL_MS).items():
                for r in records:
                    values = [v for k, v in r.headers if k == name]
                    if r.offset == ends[tp] - 1 and values:
                        found[tp.partition] = values[0]
        return found
    finally:
        consumer.close()


def _partition_counts(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = admin.describe_topics(list(dict.fromkeys(topics)))
    missing = [t["name"] for t in described if t["error_code"] != 0 or not t["partitions"]]
    if missing:
        msg = f"expected existing topics; missing: {missing}"
        raise ValueError(msg)
    return {t["name"]: len(t["partitions"]) for t in described}


def _merged_by_time(messages: list[RawMessage]) -> Iterator[RawMessage]:
    """Interleave the partitions by timestamp, each partition keeping its own order."""
    by_partition: dict[tuple[str, int], list[RawMessage]] = {}
    for m in messages:
        by_partition.setdefault((m.topic, m.partition), []).append(m)
    return heapq.merge(*by_partition.values(), key=lambda m: m.timestamp_ms)


PACE_WAIT_MIN_S = 0.001
"""The shortest wait between paced messages, s: the producer's ``poll`` counts whole ms,
so a shorter wait returns at once and the loop would spin a core until the message is
due (10k messages/s are 100 µs apart). Messages due within it go out together."""


def _paced(
    messages: Iterable[RawMessage],
    speed: float,
    wait: Callable[[float], object],
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[RawMessage]:
    """Yield each message ``(timestamp_ms - first timestamp_ms) / speed`` ms after the first,
    never before (``clock`` in s).

    ``wait(s)`` waits up to ``s`` seconds (the producer's ``poll``, which serves
    deliveries); it is never asked for less than :data:`PACE_WAIT_MIN_S`.
    """
    start: tuple[float, int] | None = None
    for m in messages:
        if start is None:
            start = (clock(), m.timestamp_ms)
        due = start[0] + (m.timestamp_ms - start[1]) / 1000.0 / speed
        while (left := due - clock()) > 0:
            wait(max(left, PACE_WAIT_MIN_S))
        yield m


def _produce(
    producer: Producer,
    topic: str,
    m: RawMessage,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    while True:
        try:
            producer.produce(
                topic, m.value, m.key, partition=m.partition, timestamp=m.timestamp_ms,
                on_delivery=on_delivery,
            )  # fmt: skip
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.05)
        else:
            return


def _end_offsets(
    consumer: KafkaConsumer, starts: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Each partition's end offset now: the larger of ListOffsets and the Fetch high watermark.

    On Tansu ListOffsets is short by the rest of the last record batch (module docstring),
    so each non-empty partition is fetched once from just before that offset to learn the
    high watermark.
    """
    listed: dict[TopicPartition, int] = consumer.end_offsets(list(starts))
    probe = [tp for tp, end in listed.items() if end > starts[tp]]
    consumer.assign(probe)
    for tp in probe:
        consumer.seek(tp, listed[tp] - 1)
    deadline = time.monotonic() + STALL_TIMEOUT_S
    while unknown := [tp for tp in probe if consumer.highwater(tp) is None]:
        if time.monotonic() > deadline:
            msg = f"expected a fetch response within {STALL_TIMEOUT_S} s; none for {unknown}"
            raise TimeoutError(msg)
        consumer.poll(timeout_ms=_POLL_MS, max_records=1)
    fetched = {tp: consumer.highwater(tp) for tp in probe}
    return {tp: max(end, fetched.get(tp, end)) for tp, end in listed.items()}


def _consume(
    consumer: KafkaConsumer,
    partitions: list[TopicPartition],
    ends: dict[TopicPartition, int] | None,
    progress: Callable[[int], None] | None,
) -> Iterator[RawMessage]:
    """The records of ``partitions`` as messages, up to ``ends`` (forever if None)."""
    remaining = set(partitions)
    count = 0
    last_data = time.monotonic()
    while ends is None or remaining:
        polled = consumer.poll(timeout_ms=_POLL_MS, max_records=_POLL_RECORDS)
        for tp, records in polled.items():
            end = None if ends is None else ends[tp]
            for r in records:
                if end is not None and r.offset >= end:
                    break
                yield RawMessage(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                count += 1
                if progress is not None:
                    progress(count)
        if polled:
            last_data = time.monotonic()
        if ends is None:
            continue
        done = [tp for tp in remaining if consumer.position(tp) >= ends[tp]]
        consumer.pause(*done)
        remaining.difference_update(done)
        if remaining and time.monotonic() - last_data > STALL_TIMEOUT_S:
            positions = {f"{tp.topic}[{tp.partition}]": consumer.position(tp) for tp in remaining}
            wanted = {f"{tp.topic}[{tp.partition}]": ends[tp] for tp in remaining}
            msg = (
                f"expected data up to end offsets {wanted}; nothing arrived for "
                f"{STALL_TIMEOUT_S} s at positions {positions}"
            )
            raise TimeoutError(msg)
