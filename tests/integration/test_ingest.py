"""The ingest flow against a real node (Anvil) and the real broker (Tansu)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from connectors.anvil import DevNode, receipt, reorg, rpc, send_transaction
from connectors.broker import EmbeddedBroker
from connectors.contracts import Deployed, bind, deploy, devchain_config
from connectors.kafka_tools import create_topics, record
from connectors.recording import load_recording, write_recording
from connectors.uniswap import (
    deploy_swap_load,
    load_swaps,
    read_v3_state,
    v3_swap_calldata,
)
from flows.cli.runner import free_ports
from flows.cli.summary import latest_prices
from operators.config import config_toml, load_config
from operators.model import RawMessage
from operators.pool_math import sqrt_price_x96
from operators.pool_moves import v3_swap_to_price
from operators.registry import PoolSource, Registry
from tests.integration.test_metrics import dashboard_names, served, served_by, total, wait_scrape


class FaultyProxy:
    """A JSON-RPC proxy in front of the real node that misbehaves on demand: it refuses
    ``eth_getLogs`` ranges wider than ``max_range`` blocks as public nodes do, and answers
    the requests numbered in ``garble`` (counting from 0) with malformed JSON-RPC."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.max_range: int | None = None
        self.garble: set[int] = set()
        self.requests = 0
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                answer = proxy.answer(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: bytes) -> bytes:
        request = json.loads(body)
        self.requests += 1
        if self.requests - 1 in self.garble:
            return b'{"jsonrpc": "2.0", "id": %d, "result": {"unexpected": [1, 2' % request["id"]
        if request["method"] == "eth_getLogs" and self.max_range is not None:
            params = request["params"][0]
            if int(params["toBlock"], 16) - int(params["fromBlock"], 16) + 1 > self.max_range:
                self.refused += 1
                error = {"code": -32005, "message": "query returned more than 10000 results"}
                return json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).encode()
        forwarded = urllib.request.Request(
            self.upstream, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(forwarded, timeout=30) as response:
            return response.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Chain:
    """A fresh Anvil with the dev contracts, and ways to make its real V3 pool (fee 500)
    emit Swap logs. Each helper returns once its transactions are mined, so that what the
    node holds afterwards is what the test compares with."""

    def __init__(self, node: DevNode, deployed: Deployed):
        self.node = node
        self.deployed = deployed
        self.w3 = Web3(HTTPProvider(node.rpc_url))
        self.pool = deployed.uniswap.v3_pools[500]
        self.load = deploy_swap_load(node.rpc_url, deployed.uniswap)
        self.registry_toml = config_toml(devchain_config(deployed))
        src = Registry.from_config(load_config(self.registry_toml).oracle).by_address[self.pool]
        assert isinstance(src, PoolSource)
        self.src = src

    def swaps(self, per_tx: int, txs: int = 1) -> None:
        """``txs`` transactions (each in its own block) of ``per_tx`` real swaps, one V3
        Swap log each (``SwapLoad``)."""
        url = self.node.rpc_url
        load_swaps(url, self.load, self.pool, self.deployed.deployer, per_tx * txs, per_tx=per_tx)

    def swap_tx(self, price: float) -> dict[str, Any]:
        """A transaction that swaps the pool from its state now to ``price`` (ETH in USD),
        the price also its limit."""
        target = sqrt_price_x96(price, self.src)
        move = v3_swap_to_price(read_v3_state(self.node.rpc_url, self.pool), target)
        assert move is not None
        data = v3_swap_calldata(self.pool, move.zero_for_one, move.amount_in, target,
                                self.deployed.deployer)  # fmt: skip
        return {"from": self.deployed.deployer, "to": self.deployed.uniswap.caller,
                "data": data, "gas": hex(1_000_000)}  # fmt: skip

    def head(self) -> int:
        return int(rpc(self.node.rpc_url, "eth_blockNumber"), 16)

    def node_logs(self) -> list[dict[str, Any]]:
        params = {"fromBlock": hex(self.deployed.block), "toBlock": "latest",
                  "address": self.deployed.contracts}  # fmt: skip
        return rpc(self.node.rpc_url, "eth_getLogs", [params])


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with DevNode(state_path=tmp_path / "anvil-state.json") as node:
        yield Chain(node, deploy(node.rpc_url))


def _config(tmp: Path, chain: Chain, broker: EmbeddedBroker, rpc_url: str | None = None,
            **chain_keys: Any) -> tuple[Path, str]:  # fmt: skip
    topic = f"chain.logs.{uuid.uuid4().hex[:8]}"
    create_topics(broker.connection, [topic], 3)
    keys = {"rpc_url": rpc_url or chain.node.rpc_url, "contracts": chain.deployed.contracts,
            "poll_interval_s": 0.1, **chain_keys}  # fmt: skip
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    path = tmp / f"{topic}.toml"
    head = f'[topics]\nchain_logs = "{topic}"\n[chain]\n{table}[run]\nepoch_interval_s = 0.2\n'
    path.write_text(head + chain.registry_toml)
    return path, topic


def _ingest(config: Path, broker: EmbeddedBroker, *args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "ingest", "--config", str(config),
         "--brokers", broker.bootstrap, *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[bytes]) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-4000:]
    return err.decode()


def _topic(
    broker: EmbeddedBroker, topic: str, tmp: Path, markers: bool = False
) -> list[RawMessage]:
    """The topic's log messages in partition order (with ``markers``, the unkeyed progress
    markers too)."""
    out = tmp / uuid.uuid4().hex
    record(broker.connection, [topic], out)
    frame = load_recording(out).sort("partition", "offset")
    rows = [RawMessage(*row) for row in frame.iter_rows()]
    return [m for m in rows if markers or not (m.key or b"").startswith(b"progress:")]


def _chain_order(messages: list[RawMessage]) -> list[dict[str, Any]]:
    logs = [json.loads(m.value or b"") for m in messages]
    return sorted(logs, key=lambda v: (int(v["blockNumber"], 16), int(v["logIndex"], 16)))


def _same_log(published: dict[str, Any], node: dict[str, Any]) -> bool:
    keep = ("address", "topics", "data", "blockNumber", "blockHash", "transactionHash", "logIndex")
    return all(published[k] == node[k] for k in keep)


def _wait_for(predicate: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_n_events_give_exactly_n_logs_in_chain_order_with_same_values(
    chain: Chain, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    chain.swaps(per_tx=7, txs=5)
    venue = bind(chain.w3, "MarginVenue", chain.deployed.venue)
    usdc = Web3.to_checksum_address(chain.deployed.tokens["USDC"])
    deposit = venue.encode_abi("deposit", args=[usdc, 10**9])
    url, sender = chain.node.rpc_url, chain.deployed.deployer
    assert receipt(url, send_transaction(url, sender, chain.deployed.venue, deposit, gas=10**5)).ok
    expected = chain.node_logs()
    config, topic = _config(tmp_path, chain, broker, max_range=3)

    _finish(
        _ingest(config, broker, "--from-block", chain.deployed.block, "--to-block", chain.head())
    )

    messages = _topic(broker, topic, tmp_path)
    published = _chain_order(messages)
    assert len(published) == len(expected) >= 36
    every = _topic(broker, topic, tmp_path, markers=True)
    markers = [m for m in every if (m.key or b"").startswith(b"progress:")]
    assert {m.partition for m in markers} == {0, 1, 2}  # every partition hears of progress
    assert all(json.loads(m.value or b"")["progress"] for m in markers)
    assert all(_same_log(p, n) for p, n in zip(published, expected, strict=True))
    assert all(
        p["chainId"] == 31337 and p["removed"] is False and "blockTimestamp" in p for p in published
    )
    assert all(m.key == json.loads(m.value or b"")["address"].encode() for m in messages)


def test_killed_mid_backfill_and_resumed_under_recovery_leaves_no_gap_and_no_duplicate(
    recovery_committed: Callable[[Path], bool],
    chain: Chain,
    broker: EmbeddedBroker,
    tmp_path: Path,
) -> None:
    chain.swaps(per_tx=200, txs=150)
    expected = chain.node_logs()
    config, topic = _config(tmp_path, chain, broker, max_range=1, min_range=1)
    args = ("--from-block", chain.deployed.block, "--to-block", chain.head(),
            "--recovery-dir", tmp_path / "recovery")  # fmt: skip

    first = _ingest(config, broker, *args)
    _wait_for(lambda: len(_topic(broker, topic, tmp_path)) >= 1000, "a first part of the backfill")
    _wait_for(lambda: recovery_committed(tmp_path / "recovery"), "a snapshot to resume from")
    first.send_signal(signal.SIGKILL)
    first.wait()
    partial = len(_topic(broker, topic, tmp_path))
    assert partial < len(expected), "the kill must land mid-backfill"
    log = _finish(_ingest(config, broker, *args))

    assert "resuming at block" in log
    published = _chain_order(_topic(broker, topic, tmp_path))
    assert len(published) == len(expected) >= 30_000
    assert all(_same_log(p, n) for p, n in zip(published, expected, strict=True))


def test_reorg_retracts_orphaned_logs_then_publishes_new_branch_and_oracle_matches(
    chain: Chain, broker: EmbeddedBroker, tmp_path: Path, hedgeflow: Callable[..., object]
) -> None:
    config, topic = _config(tmp_path, chain, broker)
    follower = _ingest(config, broker, "--from-block", chain.deployed.block)
    try:
        chain.swaps(per_tx=3, txs=4)
        before = chain.node_logs()
        _wait_for(lambda: len(_topic(broker, topic, tmp_path)) == len(before), "the first logs")
        reorg(chain.node.rpc_url, 2, [(chain.swap_tx(3100.0), 0), (chain.swap_tx(3200.0), 1)])
        after = chain.node_logs()
        orphaned = [log for log in before if log not in after]
        assert len(orphaned) == 6
        total = len(before) + len(orphaned) + 2
        _wait_for(lambda: len(_topic(broker, topic, tmp_path)) >= total, "the reorg")
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)

    messages = _topic(broker, topic, tmp_path)
    assert len(messages) == total
    pool = [m for m in messages if m.key == chain.pool.encode()]
    assert len({m.partition for m in pool}) == 1, "one pool: one key, one partition"
    logs = [json.loads(m.value or b"") for m in pool]  # in publication order
    first_removed = min(i for i, v in enumerate(logs) if v["removed"])
    assert all(v["removed"] for v in logs[first_removed : first_removed + len(orphaned)])
    retracted = logs[first_removed : first_removed + len(orphaned)]
    assert [(v["blockHash"], v["logIndex"]) for v in retracted] == [
        (v["blockHash"], v["logIndex"]) for v in reversed(orphaned)
    ]
    new_branch = logs[first_removed + len(orphaned) :]
    assert all(_same_log(p, n) for p, n in zip(new_branch, after[-2:], strict=True))

    # The oracle over what was published equals the oracle over a chain that never forked.
    saw_reorg = _replay(hedgeflow, messages, config, tmp_path / "saw")
    kept = [m for m in messages if _on_final_chain(m, after)]
    never = _replay(hedgeflow, kept, config, tmp_path / "never")
    assert saw_reorg.height > 0
    assert saw_reorg.equals(never)


def _on_final_chain(m: RawMessage, after: list[dict[str, Any]]) -> bool:
    v = json.loads(m.value or b"")
    return not v["removed"] and any(_same_log(v, n) for n in after)


def _replay(
    hedgeflow: Callable[..., object], messages: list[RawMessage], config: Path, out: Path
) -> Any:
    recording = out.with_suffix(".parquet")
    write_recording(messages, recording)
    hedgeflow("replay", recording, "--out", out, "--config", config)
    return latest_prices(out).drop("revision", "date")


def test_node_stopped_mid_run_holds_the_flow_which_catches_up_when_it_returns(
    chain: Chain, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config, topic = _config(tmp_path, chain, broker)
    chain.swaps(per_tx=5, txs=3)
    follower = _ingest(config, broker, "--from-block", chain.deployed.block)
    try:
        _wait_for(lambda: len(_topic(broker, topic, tmp_path)) >= 15, "the first logs")
        chain.node.stop()
        time.sleep(2.0)  # the follower retries against a node that is down
        chain.node.start()
        chain.swaps(per_tx=5, txs=3)
        expected = chain.node_logs()
        _wait_for(lambda: len(_topic(broker, topic, tmp_path)) >= len(expected), "catching up")
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert "RPC failed" in err.decode()
    published = _chain_order(_topic(broker, topic, tmp_path))
    assert len(published) == len(expected) >= 30
    assert all(_same_log(p, n) for p, n in zip(published, expected, strict=True))


def test_refused_oversize_range_and_malformed_answers_are_retried_without_loss(
    chain: Chain, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    chain.swaps(per_tx=4, txs=12)
    expected = chain.node_logs()
    proxy = FaultyProxy(chain.node.rpc_url)
    proxy.max_range = 3
    proxy.garble = {8, 9, 12, 15}  # after start-up, mid-run
    try:
        config, topic = _config(tmp_path, chain, broker, rpc_url=proxy.url, max_range=64)
        log = _finish(_ingest(config, broker, "--from-block", chain.deployed.block,
                              "--to-block", chain.head()))  # fmt: skip
    finally:
        proxy.close()
    assert proxy.refused >= 1 and "node refused a range" in log
    assert log.count("RPC failed") >= 4, log
    published = _chain_order(_topic(broker, topic, tmp_path))
    assert len(published) == len(expected) >= 48
    assert all(_same_log(p, n) for p, n in zip(published, expected, strict=True))


def test_dry_run_prints_what_it_would_publish(
    chain: Chain, tmp_path: Path, hedgeflow: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    chain.swaps(per_tx=3, txs=2)
    expected = chain.node_logs()
    config = tmp_path / "dry.toml"
    contracts = json.dumps(chain.deployed.contracts)
    table = f'[chain]\nrpc_url = "{chain.node.rpc_url}"\ncontracts = {contracts}\n'
    config.write_text(table + chain.registry_toml)
    done = hedgeflow("ingest", "--config", config, "--dry-run", "--from-block",
                     chain.deployed.block, "--to-block", chain.head())  # fmt: skip
    lines = [line.split(" ", 1) for line in done.stdout.splitlines()]
    seqs = [int(seq) for seq, _ in lines]
    assert seqs == sorted(set(seqs)), "sequence numbers increase"
    printed = [json.loads(value) for _, value in lines]
    logs = [v for v in printed if not v.get("progress")]
    assert all(_same_log(p, n) for p, n in zip(logs, expected, strict=True))
    assert printed[-1]["progress"] and int(printed[-1]["blockNumber"], 16) == chain.head()


def test_ingest_serves_its_metrics_and_they_move_through_a_reorg(
    chain: Chain, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config, _ = _config(tmp_path, chain, broker)
    (port,) = free_ports(1)
    follower = _ingest(config, broker, "--from-block", chain.deployed.block,
                       "--metrics-port", port)  # fmt: skip
    try:
        chain.swaps(per_tx=3, txs=4)
        before = chain.node_logs()
        first = wait_scrape(
            port,
            lambda s: total(s, "hedgeflow_ingest_messages_total", kind="log") == len(before),
            [follower],
            "the first logs counted",
        )
        assert total(first, "hedgeflow_ingest_blocks_total") >= chain.head() - chain.deployed.block
        assert total(first, "hedgeflow_ingest_messages_total", kind="progress") > 0
        assert total(first, "hedgeflow_ingest_reorgs_total") == 0
        assert 0 <= total(first, "hedgeflow_ingest_head_lag_blocks") <= 1
        reorg(chain.node.rpc_url, 2, [(chain.swap_tx(3100.0), 0), (chain.swap_tx(3200.0), 1)])
        orphaned = [log for log in before if log not in chain.node_logs()]
        after = wait_scrape(
            port,
            lambda s: total(s, "hedgeflow_ingest_messages_total", kind="log") == len(before) + 2,
            [follower],
            "the new branch counted",
        )
        assert total(after, "hedgeflow_ingest_reorgs_total") == 1
        assert total(after, "hedgeflow_ingest_messages_total", kind="retraction") == len(orphaned)
        assert total(after, "hedgeflow_ingest_blocks_total") > total(
            first, "hedgeflow_ingest_blocks_total"
        )
        assert total(after, "hedgeflow_ingest_rpc_failures_total") == 0
        wanted = {n for n in dashboard_names() if served_by(n) == "ingest"}
        assert wanted and wanted <= served(after)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
