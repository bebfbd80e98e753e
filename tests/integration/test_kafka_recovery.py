"""Kafka stages under recovery: a finished ``--until-end`` run, run again over the same
recovery directory, adds nothing (the finding: ``partition_stats`` rows repeated on every
re-run); and a broker that is not there is a one-line error."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import KafkaConnection
from connectors.kafka_tools import check_brokers, create_topics, publish
from flows.cli.generate import GenerateParams, generate

DATASETS = ("oracle_prices", "partition_stats", "deadletter")


def _dataset(out: Path, name: str) -> pl.DataFrame:
    frame = pl.read_parquet(out / name / "**/*.parquet", hive_partitioning=True)
    return frame.sort(frame.columns)


def test_run_oracle_until_end_again_over_its_recovery_dir_writes_each_row_once(
    broker: EmbeddedBroker, tmp_path: Path, hedgeflow: Callable[..., object]
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"{name.replace('_', '.')}.{tag}"
              for name in ("chain_logs", "dex_quotes", "oracle_prices", "orders", "fills",
                           "deadletter")}  # fmt: skip
    g = generate(GenerateParams(seed=3, minutes=20, chain_logs_topic=topics["chain_logs"],
                                dex_quotes_topic=topics["dex_quotes"]))  # fmt: skip
    others = "".join(f'{k} = "{v}"\n' for k, v in topics.items() if k not in g.config_toml)
    config = tmp_path / "hedgeflow.toml"
    config.write_text(g.config_toml.replace("[topics]\n", "[topics]\n" + others, 1))
    create_topics(broker.connection, list(topics.values()), 2)
    publish(g.messages, broker.connection)
    run = ("run", "oracle", "--brokers", broker.bootstrap, "--until-end", "--config", config)

    hedgeflow(*run, "--out", tmp_path / "plain")
    for _ in range(2):
        hedgeflow(*run, "--out", tmp_path / "recovered", "--recovery-dir", tmp_path / "recovery")

    for name in DATASETS:
        expected = _dataset(tmp_path / "plain", name)
        assert expected.height > 0, name
        assert _dataset(tmp_path / "recovered", name).equals(expected), name


def test_check_brokers_answers_for_a_live_broker_and_names_a_dead_one(
    broker: EmbeddedBroker,
) -> None:
    check_brokers(broker.connection, 10.0)
    with pytest.raises(ConnectionError, match=r"^cannot reach a Kafka broker at 127\.0\.0\.1:9 "):
        check_brokers(KafkaConnection("127.0.0.1:9"), 1.0)


def test_run_oracle_against_an_unreachable_broker_exits_2_in_one_line() -> None:
    """The finding: it never exited, printing 1,144 "Connection refused" lines in 60 s."""
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "oracle", "--brokers", "127.0.0.1:9",
         "--broker-timeout", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "hedgeflow: cannot reach a Kafka broker at 127.0.0.1:9 within 1 s: Failed to get "
        "metadata: Local: Broker transport failure"
    ]
