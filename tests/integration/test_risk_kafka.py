"""The risk engine on a chain recorded from Anvil: replay, Kafka with one and two processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import polars as pl

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import create_topics, publish
from connectors.recording import iter_messages, load_recording, write_recording
from flows.cli.devchain import devchain


def _read(out: Path, dataset: str, order: list[str]) -> pl.DataFrame:
    return pl.read_parquet(out / dataset / "**/*.parquet", hive_partitioning=True).sort(order)


def test_replay_and_kafka_with_one_and_two_processes_give_identical_orders(
    broker: EmbeddedBroker, tmp_path: Path, hedgeflow: Callable[..., object]
) -> None:
    chain = tmp_path / "chain"
    assert devchain(chain, scenario=True, seed=7, accounts=50, keep_running=False, record=True) == 0
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"{k}.{tag}" for k in ("chain_logs", "dex_quotes", "oracle_prices", "orders",
                                        "fills", "deadletter")}  # fmt: skip
    config = tmp_path / "risk.toml"
    table = "".join(f'{k} = "{v}"\n' for k, v in topics.items())
    config.write_text((chain / "devchain.toml").read_text() + f"\n[topics]\n{table}")
    recorded = [
        msgspec.structs.replace(m, topic=topics["chain_logs"])
        for m in iter_messages(load_recording(chain / "recording.parquet"))
    ]
    write_recording(recorded, tmp_path / "recording.parquet")
    create_topics(broker.bootstrap, list(topics.values()), 2)
    publish(recorded, broker.bootstrap)

    hedgeflow("replay", tmp_path / "recording.parquet", "--out", tmp_path / "replay",
               "--config", config)  # fmt: skip
    for name, extra in (("kafka1", ()), ("kafka2", ("--processes", "2"))):
        hedgeflow("run", "risk", "--brokers", broker.bootstrap, "--until-end", "--config",
                   config, "--out", tmp_path / name, *extra)  # fmt: skip

    orders = [_read(tmp_path / d, "orders", ["ts_event_ms", "order_id"]) for d in
              ("replay", "kafka1", "kafka2")]  # fmt: skip
    risk = [_read(tmp_path / d, "account_risk", ["ts_event_ms", "account"]) for d in
            ("replay", "kafka1", "kafka2")]  # fmt: skip
    assert orders[0].height > 0 and risk[0]["account"].n_unique() == 50
    assert orders[0].equals(orders[1]) and orders[0].equals(orders[2])
    assert risk[0].equals(risk[1]) and risk[0].equals(risk[2])
    liquidations = orders[0].filter(pl.col("kind") == "liquidation")
    # one order in flight per account: no two orders of an account within the timeout
    gaps = liquidations.group_by("account").agg(pl.col("ts_event_ms").unique().sort().diff().min())
    assert (
        gaps["ts_event_ms"].drop_nulls().min() is None
        or gaps["ts_event_ms"].drop_nulls().min() >= 300_000
    )
