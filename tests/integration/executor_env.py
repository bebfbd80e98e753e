"""A whole executor set-up on the real parts, for the executor's integration tests.

``ExecutorEnv`` starts its own Anvil (so a test may turn automine off, reorg, drop or
restart it) and uses the session's Tansu with uuid-named topics. It deploys the venue,
lists a perp, writes the order secret, the liquidator's encrypted keystore (Anvil's dev
account 1) and the configuration, and runs ``hedgeflow execute`` as a child process, so
that a failpoint can kill it. Every check of exactly-once reads the chain alone
(:meth:`ExecutorEnv.audit`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from web3 import Web3

from connectors.anvil import DevNode, receipt, rpc, send_transaction
from connectors.chain_audit import signer_txs
from connectors.chain_source import Rpc
from connectors.contracts import DEV_TOKENS, bind, deploy, instrument_id
from connectors.kafka_tools import create_topics
from flows.cli.execute import dev_keys, write_keystore
from operators import oracle_topic
from operators.config import Config, ExecutionConfig, OrdersConfig, RiskConfig, TopicsConfig, config_toml
from operators.exactly_once import audit
from operators.model import Execution, OraclePrice, Order
from operators.order_auth import encode_signed

PASSPHRASE = "correct horse battery staple"
SECRET = b"s" * 48
REPO = Path(__file__).resolve().parents[2]


def hedgeflow(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, env={**os.environ, **(env or {})}, **kw
    )


class ExecutorEnv:
    def __init__(self, tmp: Path, brokers: str, **execution: Any):
        self.tmp = tmp
        self.brokers = brokers
        self.node = DevNode(state_path=tmp / "anvil.json")
        self.node.start()
        self.url = self.node.rpc_url
        self.deployed = deploy(self.url)
        self.w3 = Web3(Web3.HTTPProvider(self.url))
        self.venue = bind(self.w3, "MarginVenue", self.deployed.venue)
        weth = DEV_TOKENS["WETH"].address
        self.perp = instrument_id(weth, 1, 0, 0)
        self.call(self.deployed.deployer, "list", [Web3.to_checksum_address(weth), 1, 0, 0])
        self.signer = self.deployed.liquidator
        suffix = uuid.uuid4().hex[:8]
        self.topics = TopicsConfig(**{
            f.name: f"{f.default}.{suffix}" for f in msgspec.structs.fields(TopicsConfig)
        })  # fmt: skip
        create_topics(brokers, list(msgspec.structs.asdict(self.topics).values()), 2)
        (tmp / "secret").write_bytes(SECRET)
        (tmp / "passphrase").write_text(PASSPHRASE + "\n")
        self.keystore = tmp / "liquidator.json"
        write_keystore(self.keystore, dev_keys(2)[1], PASSPHRASE)
        self.cfg = Config(
            topics=self.topics,
            risk=RiskConfig(venue=self.deployed.venue),
            orders=OrdersConfig(secret_file=str(tmp / "secret")),
            execution=ExecutionConfig(
                signers=[self.signer], liquidator=self.signer, chain_id=self.deployed.chain_id,
                poll_interval_s=0.1, **execution,
            ),  # fmt: skip
        )
        self.cfg_path = tmp / "hedgeflow.toml"
        self.cfg_path.write_text(config_toml(self.cfg))
        self.out = tmp / "out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.first_block = int(rpc(self.url, "eth_blockNumber"), 16)
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})

    # the chain ---------------------------------------------------------------------------
    def call(self, sender: str, fn: str, args: list[Any]) -> None:
        data = self.venue.encode_abi(fn, args=args)
        assert receipt(self.url, send_transaction(self.url, sender, self.venue.address, data, gas=300_000)).ok

    def head_ms(self) -> int:
        return int(rpc(self.url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16) * 1000

    def audit(self, order_ids: list[str]) -> list[str]:
        """The exactly-once violations the chain shows for the signer since deployment."""
        chain = Rpc(self.url, 10.0)
        last = int(rpc(self.url, "eth_blockNumber"), 16)
        txs = signer_txs(chain, self.signer, self.deployed.venue, self.first_block, last)
        return audit(txs, order_ids, self.signer)

    def venue_order_ids(self) -> list[str]:
        chain = Rpc(self.url, 10.0)
        last = int(rpc(self.url, "eth_blockNumber"), 16)
        txs = signer_txs(chain, self.signer, self.deployed.venue, self.first_block, last)
        return [t.order_id for t in txs if t.order_id is not None and t.status == 1]

    # the topics --------------------------------------------------------------------------
    def order(self, n: int, **fields: Any) -> Order:
        now = self.head_ms()
        base: dict[str, Any] = {
            "order_id": "0x" + format(n + 1, "064x"), "kind": "liquidation",
            "account": "0x" + format(0xA11CE + n, "040x"), "instrument": self.perp, "size": -1.0,
            "price": 2500.0, "oracle_price": 2500.0, "bonus_usd": 25.0, "reason": "test",
            "ts_event_ms": now, "health": 0.8, "worst_scenario": 0, "asset": "ETH",
            "position": 2.0, "valid_until_ms": now + 3_600_000,
        }  # fmt: skip
        return Order(**{**base, **fields})

    def publish_orders(self, orders: list[Order], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
        for o in orders:
            self.producer.produce(self.topics.orders, encode_signed(o, SECRET), o.account.encode())
        for value in raw:
            self.producer.produce(self.topics.orders, value, b"raw")
        assert self.producer.flush(30) == 0

    def publish_price(self, price: float = 2500.0, status: str = "ok") -> None:
        end = self.head_ms()
        row = OraclePrice(
            asset="ETH", window_start_ms=end - 60_000, window_end_ms=end, price=price,
            confidence=1.0, sources=3, status=status, held=False, revision=0,
        )  # fmt: skip
        self.producer.produce(self.topics.oracle_prices, oracle_topic.encode(row), b"ETH")
        assert self.producer.flush(30) == 0

    # the executor ------------------------------------------------------------------------
    def start_executor(self, failpoint: str | None = None) -> subprocess.Popen[bytes]:
        env = {"HEDGEFLOW_FAILPOINT": failpoint} if failpoint else {}
        self.log = open(self.tmp / "executor.log", "ab")  # noqa: SIM115
        self.proc = hedgeflow(
            "execute", "--config", str(self.cfg_path), "--brokers", self.brokers,
            "--keystore", str(self.keystore), "--passphrase-file", str(self.tmp / "passphrase"),
            "--rpc", self.url, "--out", str(self.out), env=env, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        return self.proc

    def stop_executor(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(60)
        self.proc = None
        return code

    def executions(self) -> list[Execution]:
        """Every state change the executor wrote to ``executions/``."""
        import polars as pl

        files = sorted((self.out / "executions").glob("date=*/*.parquet"))
        if not files:
            return []
        rows = pl.concat([pl.read_parquet(f) for f in files]).to_dicts()
        return [msgspec.convert(r, Execution) for r in rows]

    def final(self, order_ids: list[str]) -> dict[str, Execution]:
        done = {e.order_id: e for e in self.executions() if e.final}
        return {i: done[i] for i in order_ids if i in done}

    def executor_log(self) -> str:
        return (self.tmp / "executor.log").read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None:
            self.stop_executor()
        self.node.stop()


def wait_for(what: str, ok: Callable[[], bool], env: ExecutorEnv, timeout_s: float = 60.0, mine: bool = False) -> None:
    """Wait until ``ok()``, mining a block every pass with ``mine`` (automine off)."""
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; executor log:\n{env.executor_log()[-3000:]}")
        if mine:
            rpc(env.url, "evm_mine", [])
        time.sleep(0.2)
