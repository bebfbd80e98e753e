"""The signing key and its passphrase appear nowhere but in the keystore: not in a log,
an output, the state file or a topic."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import KafkaConnection, rd_consumer
from flows.cli.execute import dev_keys
from tests.integration.executor_env import PASSPHRASE, ExecutorEnv, wait_for


def _topic_values(kafka: KafkaConnection, topics: list[str]) -> list[bytes]:
    c = rd_consumer(
        kafka, {"group.id": "scan", "enable.auto.commit": False, "enable.partition.eof": True}
    )
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(2)]
    c.assign(parts)
    values, ended = [], 0
    while ended < len(parts):
        for m in c.consume(1000, 1.0):
            if m.error():
                ended += 1
            else:
                values.append((m.key() or b"") + (m.value() or b""))
    c.close()
    return values


def test_key_and_passphrase_appear_in_no_log_output_state_or_topic(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    env = ExecutorEnv(tmp_path, broker.bootstrap)
    try:
        env.publish_price()
        orders = [env.order(i) for i in range(3)]
        env.publish_orders([*orders, orders[0]], raw=[b'{"record":"order"}'])
        env.start_executor()
        ids = [o.order_id for o in orders]
        wait_for("every order final", lambda: len(env.final(ids)) == 3, env, mine=True)
        env.stop_executor()
        key = dev_keys(2)[1]
        needles = [key, key.hex().encode(), key.hex().upper().encode(), PASSPHRASE.encode()]
        own = {env.keystore, tmp_path / "passphrase"}
        files = [p for p in tmp_path.rglob("*") if p.is_file() and p not in own
                 and not p.name.startswith("anvil")]  # fmt: skip
        assert any(p.suffix == ".sqlite" for p in files) and (tmp_path / "executor.log") in files
        topics = [env.topics.orders, env.topics.fills, env.topics.deadletter]
        haystacks = [(str(p), p.read_bytes()) for p in files] + [
            (f"topic record {i}", v) for i, v in enumerate(_topic_values(broker.connection, topics))
        ]
        leaks = [(where, n[:6]) for where, data in haystacks for n in needles if n in data]
        assert leaks == []
        assert len(haystacks) > len(files)  # the topics were read too
    finally:
        env.close()
