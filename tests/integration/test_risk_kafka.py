"""The stages deployed separately on the real broker, against replay, on a chain recorded
from Anvil: ``run oracle`` and ``run risk`` as their own processes, with their own process
counts, joined by the ``oracle.prices`` topic, give replay's rows exactly; the orders on the
``orders`` topic are replay's, each signed with the shared secret."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import polars as pl
import pytest

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import create_topics, publish, record
from connectors.recording import iter_messages, load_recording, write_recording
from flows.cli.devchain import devchain
from operators import order_auth
from operators.model import Order, RawMessage

SECRET = b"a shared secret of at least 32 bytes, for the test"
KEYS = ("chain_logs", "dex_quotes", "oracle_prices", "orders", "fills", "deadletter")
DATASETS = {
    "oracle_prices": ["asset", "window_start_ms", "revision"],
    "orders": ["ts_event_ms", "order_id"],
    "account_risk": ["ts_event_ms", "account"],
    "instruments": ["ts_event_ms", "instrument"],
    "order_denials": ["ts_event_ms", "account", "kind", "instrument", "reason"],
}


def _read(out: Path, dataset: str) -> pl.DataFrame:
    frame = pl.read_parquet(out / dataset / "**/*.parquet", hive_partitioning=True)
    return frame.sort(DATASETS[dataset])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RawMessage]]:
    """The devchain scenario (50 accounts, a crash), recorded once."""
    out = tmp_path_factory.mktemp("chain")
    assert devchain(out, scenario=True, seed=7, accounts=50, keep_running=False, record=True) == 0
    return out, list(iter_messages(load_recording(out / "recording.parquet")))


def _deployment(
    broker: EmbeddedBroker, chain: tuple[Path, list[RawMessage]], root: Path, idle_timeout_s: int
) -> tuple[Path, dict[str, str], list[RawMessage]]:
    """Its own uuid-named topics with the recording published; its configuration (orders
    signed with the secret in ``root / "orders.secret"``, ``oracle.idle_timeout_s``) and
    topics."""
    chain_dir, messages = chain
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"{k}.{tag}" for k in KEYS}
    config = root / "risk.toml"
    table = "".join(f'{k} = "{v}"\n' for k, v in topics.items())
    (root / "orders.secret").write_bytes(SECRET)
    orders = f'\n[orders]\nsecret_file = "{root / "orders.secret"}"\n'
    devchain_toml = (chain_dir / "devchain.toml").read_text()
    assert devchain_toml.startswith("[oracle]\n")
    idle = f"[oracle]\nidle_timeout_s = {idle_timeout_s}\n"
    devchain_toml = devchain_toml.replace("[oracle]\n", idle, 1)
    config.write_text(devchain_toml + f"\n[topics]\n{table}" + orders)
    recorded = [msgspec.structs.replace(m, topic=topics["chain_logs"]) for m in messages]
    create_topics(broker.connection, list(topics.values()), 2)
    publish(recorded, broker.connection)
    return config, topics, recorded


@pytest.mark.parametrize(
    ("oracle_processes", "risk_processes", "idle_timeout_s"), [(2, 1, 0), (1, 2, 0), (1, 1, 30)]
)
def test_stages_deployed_separately_give_the_rows_of_replay(
    broker: EmbeddedBroker,
    chain: tuple[Path, list[RawMessage]],
    tmp_path: Path,
    hedgeflow: Callable[..., object],
    oracle_processes: int,
    risk_processes: int,
    idle_timeout_s: int,
) -> None:
    """Also with idleness on: the stages read the published recording as a backlog, one
    partition faster than another, and a partition with messages still to read is never
    set aside (``operators.clock``), so no window closes early to be corrected later."""
    config, topics, recorded = _deployment(broker, chain, tmp_path, idle_timeout_s)
    write_recording(recorded, tmp_path / "recording.parquet")
    replay = tmp_path / "replay"
    hedgeflow("replay", tmp_path / "recording.parquet", "--out", replay, "--config", config)
    oracle, risk = tmp_path / "oracle", tmp_path / "risk"
    for stage, out, processes in (
        ("oracle", oracle, oracle_processes),
        ("risk", risk, risk_processes),
    ):
        hedgeflow("run", stage, "--brokers", broker.bootstrap, "--until-end", "--config", config,
                  "--out", out, "--processes", str(processes))  # fmt: skip

    assert not (risk / "oracle_prices").exists(), "run risk does not run the oracle"
    assert not (oracle / "orders").exists(), "run oracle does not run the risk engine"
    expected = {name: _read(replay, name) for name in DATASETS}
    assert expected["orders"].height > 0 and expected["account_risk"]["account"].n_unique() == 50
    assert _read(oracle, "oracle_prices").equals(expected["oracle_prices"])
    for name in ("orders", "account_risk", "instruments", "order_denials"):
        assert _read(risk, name).equals(expected[name]), name
    # every order on the topic verifies under the shared secret, and equals its Parquet row
    record(broker.connection, [topics["orders"]], tmp_path / "topic")
    values = [
        m.value or b""
        for m in iter_messages(load_recording(tmp_path / "topic" / "recording.parquet"))
    ]
    on_topic = [order_auth.decode_verified(v, SECRET) for v in values if b'"record":"order"' in v]
    denials = [v for v in values if b'"record":"denial"' in v]
    assert len(on_topic) + len(denials) == len(values) and b'"auth"' not in b"".join(denials)
    rows = expected["orders"].select(Order.__struct_fields__).sort("order_id").to_dicts()
    assert (
        sorted((msgspec.structs.asdict(o) for o in on_topic), key=lambda o: o["order_id"]) == rows
    )
    liquidations = expected["orders"].filter(pl.col("kind") == "liquidation")
    # one order in flight per account: no two orders of an account within the timeout
    gaps = liquidations.group_by("account").agg(pl.col("ts_event_ms").unique().sort().diff().min())
    shortest = gaps["ts_event_ms"].drop_nulls().min()
    assert shortest is None or shortest >= 300_000
