"""``/metrics`` scraped during real runs: ``run oracle`` and ``run risk`` on Tansu with a
recording of the devchain scenario, and ``hedgeflow execute`` on Anvil with JSON-lines logs
(``hedgeflow ingest`` on Anvil: ``tests/integration/test_ingest.py``). Every metric the
Grafana dashboard queries is served, and the values move between scrapes.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import create_topics, publish
from connectors.recording import iter_messages, load_recording
from flows.cli.devchain import devchain
from flows.cli.runner import free_ports
from operators.model import RawMessage
from tests.integration.executor_env import MakeEnv, hedgeflow, wait_final

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "hedgeflow.json"
KEYS = ("chain_logs", "dex_quotes", "oracle_prices", "orders", "fills", "deadletter")


def served_by(name: str) -> str:
    """Which process serves a dashboard series: ``executor``, ``ingest`` or ``stages`` (the
    stages' Kafka lag is Bytewax's gauge)."""
    if name.startswith("hedgeflow_executor_") or name == "hedgeflow_kafka_lag_messages":
        return "executor"
    return "ingest" if name.startswith("hedgeflow_ingest_") else "stages"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def dashboard_names() -> set[str]:
    """The metric names the dashboard's queries read (histograms by their base name)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    names = {n for e in exprs for n in re.findall(r"\b(?:hedgeflow|bytewax)_[a-z_]+", e)}
    return {re.sub(r"_bucket$", "", n) for n in names}


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def served(samples: Samples) -> set[str]:
    """The metric names in a scrape, histograms and counters by their family's names."""
    names = {n for n, _ in samples}
    return names | {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def wait_scrape(
    port: int, ok: Callable[[Samples], bool], procs: list[subprocess.Popen[bytes]], what: str
) -> Samples:
    """Scrape until ``ok`` (at most 120 s); fail at once if a process exited."""
    deadline = time.monotonic() + 120
    while True:
        assert all(p.poll() is None for p in procs), f"a process exited waiting for {what}"
        try:
            samples = scrape(port)
            if ok(samples):
                return samples
        except OSError:  # not listening yet
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RawMessage]]:
    """The devchain scenario (20 accounts, a crash that liquidates one), recorded once."""
    out = tmp_path_factory.mktemp("chain")
    assert devchain(out, scenario=True, seed=7, accounts=20, keep_running=False, record=True) == 0
    return out, list(iter_messages(load_recording(out / "recording.parquet")))


def _quotes(topic: str, logs: list[RawMessage]) -> list[RawMessage]:
    """A quote of no registered source on each ``dex.quotes`` partition at the newest block
    time of ``logs``: the recording holds no quotes, and a partition moves windows on only
    with what it carries (as a live feed does)."""
    ts_ms = max(int(str(json.loads(m.value or b"")["blockTimestamp"]), 0) for m in logs) * 1000
    quote = {"source": "metrics-test", "base": "ETH", "quote": "USD", "bid": "1", "ask": "1",
             "bid_size": "1", "ask_size": "1", "ts": ts_ms}  # fmt: skip
    value = json.dumps(quote).encode()
    return [RawMessage(topic, p, 0, ts_ms, b"metrics-test", value) for p in (0, 1)]


def test_stages_serve_their_metrics_and_the_values_move(
    broker: EmbeddedBroker, chain: tuple[Path, list[RawMessage]], tmp_path: Path
) -> None:
    chain_dir, messages = chain
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"{k}.{tag}" for k in KEYS}
    (tmp_path / "orders.secret").write_bytes(b"a shared secret of at least 32 bytes, for metrics")
    config = tmp_path / "risk.toml"
    table = "".join(f'{k} = "{v}"\n' for k, v in topics.items())
    orders = f'\n[orders]\nsecret_file = "{tmp_path / "orders.secret"}"\n'
    config.write_text((chain_dir / "devchain.toml").read_text() + f"\n[topics]\n{table}" + orders)
    recorded = [msgspec.structs.replace(m, topic=topics["chain_logs"]) for m in messages]
    create_topics(broker.connection, list(topics.values()), 2)
    half = len(recorded) // 2
    publish([*recorded[:half], *_quotes(topics["dex_quotes"], recorded[:half])], broker.connection)
    oracle_port, risk_port = free_ports(2)
    procs = [
        hedgeflow(
            "run",
            stage,
            "--brokers",
            broker.bootstrap,
            "--config",
            str(config),
            "--out",
            str(tmp_path / stage),
            "--metrics-port",
            str(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for stage, port in (("oracle", oracle_port), ("risk", risk_port))
    ]
    try:
        first = wait_scrape(
            oracle_port,
            lambda s: total(s, "hedgeflow_event_to_price_latency_seconds_count") > 0,
            procs,
            "the first prices",
        )
        read = total(first, "hedgeflow_input_messages_total")
        prices = total(first, "hedgeflow_oracle_prices_total")
        assert 0 < read <= half + 2 and prices > 0
        assert total(first, "hedgeflow_oracle_status", asset="ETH") == 1  # one current status
        assert total(first, "hedgeflow_oracle_age_seconds", asset="ETH") > 0

        source = recorded[half]  # a followed address, so the broken value is decoded
        bad = RawMessage(source.topic, 0, 0, source.timestamp_ms, source.key, b"{")
        rest = [*recorded[half:], bad, *_quotes(topics["dex_quotes"], recorded)]
        publish(rest, broker.connection)

        def all_read(s: Samples) -> bool:
            return (
                total(s, "hedgeflow_input_messages_total") == len(recorded) + 5
                and total(s, "hedgeflow_deadletter_total") > 0
                and total(s, "hedgeflow_oracle_prices_total") > prices
            )

        second = wait_scrape(oracle_port, all_read, procs, "the second half in the oracle")
        assert (
            total(second, "hedgeflow_deadletter_total", stage="decode", reason="invalid_json") == 1
        )
        risk = wait_scrape(
            risk_port,
            lambda s: total(s, "hedgeflow_orders_total", kind="liquidation", outcome="emitted") > 0,
            procs,
            "the liquidation orders",
        )
        assert total(risk, "hedgeflow_event_to_order_latency_seconds_count") > 0
        assert total(risk, "hedgeflow_input_messages_total") > 0
        lag = wait_scrape(
            oracle_port,
            lambda s: "bytewax_kafka_consumer_lag" in served(s),
            procs,
            "Bytewax's consumer lag",
        )
        wanted = {n for n in dashboard_names() if served_by(n) == "stages"}
        missing = wanted - served(lag) - served(risk)
        assert not missing, f"the dashboard queries metrics the stages do not serve: {missing}"
    finally:
        for p in procs:
            p.terminate()
            p.wait(60)


def test_executor_serves_its_metrics_and_logs_json_lines_with_order_and_tx(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    (port,) = free_ports(1)
    env.start_executor(None, "--metrics-port", str(port), "--log-format", "json")
    first_orders = [env.order(n) for n in range(3)]
    env.publish_orders(first_orders)
    wait_final(env, [o.order_id for o in first_orders])
    assert env.proc is not None

    def mined(count: int) -> Callable[[Samples], bool]:
        return lambda s: (
            total(s, "hedgeflow_orders_total", kind="liquidation", outcome="mined") == count
        )

    first = wait_scrape(port, mined(3), [env.proc], "three orders mined")
    more = [env.order(n) for n in range(3, 5)]
    env.publish_orders(more)
    wait_final(env, [o.order_id for o in more])
    second = wait_scrape(port, mined(5), [env.proc], "five orders mined")

    for state in ("sent", "mined"):
        before = total(first, "hedgeflow_executor_transactions_total", state=state)
        assert (
            before >= 3
            and total(second, "hedgeflow_executor_transactions_total", state=state) > before
        )
    gas = total(first, "hedgeflow_executor_gas_spent_wei_total")
    assert 0 < gas < total(second, "hedgeflow_executor_gas_spent_wei_total")
    assert total(second, "hedgeflow_executor_pending_transactions") == 0
    assert total(second, "hedgeflow_executor_nonce_gap") == 0
    assert total(second, "hedgeflow_kafka_lag_messages", topic=env.topics.orders) == 0
    assert {n for n in dashboard_names() if served_by(n) == "executor"} <= served(second)

    env.stop_executor()
    lines = env.executor_log().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    for order in [*first_orders, *more]:
        mine = [r for r in records if r.get("order_id") == order.order_id]
        changes = [(re.match(r"order \S+: (\w+)", r["message"]), r) for r in mine]
        states = {m.group(1): r for m, r in changes if m is not None}
        assert {"sent", "mined"} <= states.keys(), mine
        assert re.fullmatch(r"0x[0-9a-f]{64}", states["sent"]["tx_hash"])
        assert states["mined"]["tx_hash"] == states["sent"]["tx_hash"]
