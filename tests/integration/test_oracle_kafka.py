"""The oracle against the real broker: Kafka in, Kafka and Parquet out, same as replay."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import polars as pl
import pytest

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import KafkaConnection
from connectors.kafka_tools import create_topics, publish, record
from connectors.recording import iter_messages, load_recording, write_recording
from flows.cli.generate import GenerateParams, generate
from flows.cli.summary import latest_prices
from operators import oracle_topic
from operators.model import OraclePrice, OracleProgress, Rejected

PARTITIONS = 3


@pytest.fixture(scope="module")
def setup(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A generated recording with faults on uuid-named topics, published once."""
    tag = uuid.uuid4().hex[:8]
    topics = {
        name: f"{name.replace('_', '.')}.{tag}"
        for name in ("chain_logs", "dex_quotes", "oracle_prices", "orders", "fills", "deadletter")
    }
    g = generate(
        GenerateParams(
            seed=11, minutes=20, partitions=PARTITIONS,
            chain_logs_topic=topics["chain_logs"], dex_quotes_topic=topics["dex_quotes"],
        )
    )  # fmt: skip
    root = tmp_path_factory.mktemp("oracle_kafka")
    config = root / "hedgeflow.toml"
    others = "".join(f'{k} = "{v}"\n' for k, v in topics.items() if k not in g.config_toml)
    config.write_text(g.config_toml.replace("[topics]\n", "[topics]\n" + others, 1))
    write_recording(g.messages, root / "recording.parquet")
    create_topics(broker.connection, list(topics.values()), PARTITIONS)
    publish(g.messages, broker.connection)
    return {"root": root, "config": config, "topics": topics, "brokers": broker.bootstrap}


def _rows(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "oracle_prices" / "**/*.parquet", hive_partitioning=True).sort(
        "asset", "window_start_ms", "revision"
    )


def test_replay_kafka_one_and_two_processes_give_identical_oracle_outputs(
    setup: dict, hedgeflow: Callable[..., object]
) -> None:
    root, config, brokers = setup["root"], setup["config"], setup["brokers"]
    hedgeflow("replay", root / "recording.parquet", "--out", root / "replay", "--config", config)
    hedgeflow("run", "oracle", "--brokers", brokers, "--until-end", "--config", config,
               "--out", root / "kafka1")  # fmt: skip
    hedgeflow("run", "oracle", "--brokers", brokers, "--until-end", "--config", config,
               "--out", root / "kafka2", "--processes", "2")  # fmt: skip

    replay = _rows(root / "replay")
    assert replay.height > 50
    assert set(replay["status"]) >= {"ok"}
    assert replay.equals(_rows(root / "kafka1"))
    assert replay.equals(_rows(root / "kafka2"))
    rejects = [
        pl.read_parquet(root / d / "deadletter" / "**/*.parquet", hive_partitioning=True)
        .sort("topic", "partition", "offset", "reason")
        .drop("date")
        for d in ("replay", "kafka1", "kafka2")
    ]
    assert rejects[0].height > 0
    assert rejects[0].equals(rejects[1]) and rejects[0].equals(rejects[2])


def test_oracle_prices_topic_carries_the_parquet_rows(
    setup: dict, hedgeflow: Callable[..., object]
) -> None:
    root, config, brokers, topics = (
        setup["root"],
        setup["config"],
        setup["brokers"],
        setup["topics"],
    )
    out = root / "kafka_topic"
    hedgeflow("run", "oracle", "--brokers", brokers, "--until-end", "--config", config,
               "--out", out)  # fmt: skip
    record(KafkaConnection(brokers), [topics["oracle_prices"]], root / "prices_recording")
    recorded = list(iter_messages(load_recording(root / "prices_recording")))
    decoded = [oracle_topic.decode(m) for m in recorded]
    assert not [r for r in decoded if isinstance(r, Rejected)]
    from_topic = sorted(
        (p for p in decoded if isinstance(p, OraclePrice)),
        key=lambda p: (p.asset, p.window_start_ms, p.revision),
    )
    # Each asset's progress records follow its rows, in its partition: no first publication
    # of a window comes after the progress past it.
    # (When both tests ran, the second run's rows repeat the first's and are skipped.)
    for part in {(m.partition, m.key) for m in recorded}:
        through, seen = -1, set()
        for m, item in zip(recorded, decoded, strict=True):
            if (m.partition, m.key) != part:
                continue
            if isinstance(item, OracleProgress):
                through = max(through, item.through_ms)
            elif isinstance(item, OraclePrice) and item.revision == 0 and item not in seen:
                seen.add(item)
                assert item.window_end_ms > through
    parquet = _rows(out)
    # Two runs wrote to the topic (this test's and the other's, when both ran): compare sets.
    assert {msgspec.structs.astuple(p) for p in from_topic} == set(parquet.drop("date").iter_rows())
    latest = latest_prices(out)
    assert latest.height == parquet.select("asset", "window_start_ms").unique().height
