"""The executor's Kafka side: it reads ``orders`` and ``oracle.prices`` by assignment,
from offsets it keeps in its own state file, and writes ``fills`` and ``deadletter``.

Assignment rather than a consumer group: on Tansu a group reads at about 3k msg/s and takes
about 20 s to join (DESIGN.md), and the offsets must commit in the same SQLite transaction
as what they caused. The producer is idempotent, so each partition keeps the order of
what one executor wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from connectors.kafka_clients import KafkaConnection, rd_consumer, rd_producer
from operators.model import RawMessage

_POLL_RECORDS = 500
FLUSH_TIMEOUT_S = 30.0


class ExecutorKafka:
    """Consumer of ``inputs`` (topic -> partitions) from ``offsets`` (``<partition>-<topic>``
    -> next offset; the beginning when absent), and producer of outcomes.

    With ``group``, the consumer joins that consumer group instead (for a real Kafka
    cluster, whose lag tools then see the executor's offsets): the group assigns the
    partitions of ``inputs``' topics (all of them to a group's only member: one group per
    signer), each read from the offset ``offsets()`` holds at assignment, and
    :meth:`commit` copies the state file's offsets to the group.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        client_id: str,
        inputs: Mapping[str, list[int]],
        offsets: Callable[[], Mapping[str, int]],
        pausable: str,
        group: str | None = None,
    ):
        self.consumer = rd_consumer(
            kafka,
            {
                "group.id": group or client_id,  # required by the client even when assigning
                "client.id": client_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,  # an order waits at most this for the broker, ms
                "log_level": 3,
            },
        )
        self.offsets = offsets
        self.pausable_topic = pausable
        self.pausable: list[TopicPartition] = []
        self.paused = False
        self.group = group
        if group is None:
            self._assign(
                self.consumer, [TopicPartition(t, p) for t, parts in inputs.items() for p in parts]
            )
        else:
            self.consumer.subscribe(list(inputs), on_assign=self._assign)
        self.producer = rd_producer(kafka, {"client.id": client_id, "enable.idempotence": True})
        self.errors: list[str] = []

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Read ``partitions`` from the state file's offsets (the group's are only a copy)."""
        stored = self.offsets()
        for tp in partitions:
            tp.offset = stored.get(f"{tp.partition}-{tp.topic}", OFFSET_BEGINNING)
        consumer.assign(partitions)
        self.pausable = [tp for tp in partitions if tp.topic == self.pausable_topic]
        if self.paused:
            consumer.pause(self.pausable)

    def commit(self, offsets: Mapping[str, int]) -> None:
        """With a group: copy the next offsets (``<partition>-<topic>`` -> offset) to it."""
        if self.group is None or not offsets:
            return
        parts = [part.split("-", 1) for part in offsets]
        tps = [TopicPartition(t, int(p), offsets[f"{p}-{t}"]) for p, t in parts]
        self.consumer.commit(offsets=tps, asynchronous=True)

    def poll(self, timeout_s: float) -> list[RawMessage]:
        """The next records of the assigned partitions (possibly none), in offset order
        per partition."""
        # consume(n, t) waits all of t unless n arrive: wait for one record, then take
        # what is buffered without waiting
        polled = self.consumer.consume(_POLL_RECORDS, 0) or self.consumer.consume(1, timeout_s)
        if polled:
            polled += self.consumer.consume(_POLL_RECORDS, 0)
        out = []
        for m in polled:
            error = m.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise ConnectionError(f"reading {m.topic()}[{m.partition()}]: {error.str()}")
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            out.append(RawMessage(topic, partition, offset, m.timestamp()[1], m.key(), m.value()))
        return out

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: the high watermark minus the next offset to read, from
        the client's cached watermarks (no broker round trip); partitions not fetched yet
        are left out."""
        out = {}
        for tp in self.consumer.position(self.consumer.assignment()):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                out[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        return out

    def hold_orders(self, hold: bool) -> None:
        """Stop (or go on) reading ``orders`` while the signer has no room in flight."""
        if hold != self.paused:
            (self.consumer.pause if hold else self.consumer.resume)(self.pausable)
            self.paused = hold

    def produce(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value, key, partition=-1 if partition is None else partition,
                    on_delivery=self._delivered,
                )  # fmt: skip
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self) -> None:
        """Wait until every produced record is acknowledged; ``ConnectionError`` if one
        failed or the brokers did not answer."""
        left = self.producer.flush(FLUSH_TIMEOUT_S)
        errors, self.errors = self.errors, []
        if left or errors:
            raise ConnectionError(f"producing outcomes: {left} unacknowledged; {errors[:3]}")

    def close(self) -> None:
        self.consumer.close()

    def _delivered(self, error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {error.str()}")
