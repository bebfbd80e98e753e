"""A whole executor set-up on the real parts, for the executor's integration tests.

``ExecutorEnv`` starts its own Anvil (so a test may turn automine off, reorg, drop or
restart it) and uses the session's Tansu with uuid-named topics. It deploys the venue,
lists a perp, writes the order secret, the liquidator's encrypted keystore (Anvil's dev
account 1) and the configuration, and runs ``hedgeflow execute`` as a child process, so
that a failpoint can kill it. Every check of exactly-once reads the chain alone
(:meth:`ExecutorEnv.audit`).

With ``dex=True`` it also uses the real Uniswap pools and ``SplitSwap`` that
``connectors.contracts.deploy`` put on the chain (as on the dev chain: a WETH/USDC V2 pair
and V3 pools of fees 500 and 3000), configures them as the oracle's sources and the
signer's book as a DEX hedge of ETH (``risk.dex_hedges``), funds the book with WETH and
USDC and approves SplitSwap for both (``connectors.uniswap.fund``, :class:`DexSetup`).
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
from confluent_kafka import KafkaError, TopicPartition
from eth_account import Account
from web3 import Web3

from connectors.anvil import DevNode, mine, receipt, rpc, send_transaction, set_automine
from connectors.chain_audit import signer_txs
from connectors.chain_source import Rpc
from connectors.contracts import Deployed, bind, deploy, instrument_id
from connectors.executor import Executor
from connectors.executor_chain import ChainClient
from connectors.executor_kafka import ExecutorKafka
from connectors.executor_store import ExecutorStore
from connectors.kafka_clients import KafkaConnection, rd_consumer, rd_producer
from connectors.kafka_tools import create_topics
from connectors.uniswap import fund, read_states, token_balance
from flows.cli.execute import check_store, dev_keys, first_nonce, write_keystore
from operators import oracle_topic
from operators.config import (
    Config,
    DexHedgeConfig,
    ExecutionConfig,
    OracleConfig,
    OrdersConfig,
    RiskConfig,
    SourceConfig,
    TokenConfig,
    TopicsConfig,
    config_toml,
)
from operators.exactly_once import audit
from operators.model import Execution, ExecutionProgress, OraclePrice, Order, RawMessage, Rejected
from operators.order_auth import encode_signed
from operators.pool_state import PoolState
from operators.units import e18

_fills_decoder = msgspec.json.Decoder(Execution | ExecutionProgress)
PASSPHRASE = "correct horse battery staple"
SECRET = b"s" * 48
REPO = Path(__file__).resolve().parents[2]


_KEYSTORE: list[bytes] = []


def _liquidator_keystore(tmp: Path) -> bytes:
    """The liquidator's keystore file, encrypted once per test session (scrypt: 0.6 s)."""
    if not _KEYSTORE:
        write_keystore(tmp / "first-liquidator.json", dev_keys(2)[1], PASSPHRASE)
        _KEYSTORE.append((tmp / "first-liquidator.json").read_bytes())
    return _KEYSTORE[0]


def hedgeflow(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        **kw,
    )


BOOK_FUNDS = {"WETH": 10_000 * 10**18, "USDC": 30_000_000 * 10**6}
"""What the book gets of each test token with ``dex=True``, raw units."""
UNPOOLED = "0x" + "b7" * 20
"""A token the DEX set-up lists (as BTC, 8 decimals) and hedges, with no pool."""


class DexSetup:
    """The real Uniswap pools and SplitSwap on the set-up's chain, and the book's wallet."""

    def __init__(self, url: str, deployed: Deployed, book: str):
        self.url = url
        self.book = book
        self.uniswap = deployed.uniswap
        self.weth, self.usdc = self.uniswap.tokens["WETH"], self.uniswap.tokens["USDC"]
        self.split_swap = deployed.split_swap
        fund(url, self.uniswap, book, BOOK_FUNDS, spender=self.split_swap)

    def oracle(self) -> OracleConfig:
        """The pools as the oracle's sources, their tokens keyed by address."""
        u = self.uniswap
        v3 = [(u.v3_pools[fee], "uniswap_v3") for fee in sorted(u.v3_pools)]
        kinds = [(u.v2_pair, "uniswap_v2"), *v3]
        return OracleConfig(
            use_default_registry=False,
            assets=["BTC"],  # published with no source: the unpooled token's asset
            tokens={
                self.weth: TokenConfig(decimals=18, asset="ETH"),
                self.usdc: TokenConfig(decimals=6, asset="USDC"),
                UNPOOLED: TokenConfig(decimals=8, asset="BTC"),
            },
            sources=[
                SourceConfig(address=a, kind=k, token0=self.usdc, token1=self.weth)  # type: ignore[arg-type]
                for a, k in kinds
            ],
        )

    def hedges(self) -> dict[str, dict[str, DexHedgeConfig]]:
        return {self.book: {
            "ETH": DexHedgeConfig(token=self.weth, quote=self.usdc),
            "BTC": DexHedgeConfig(token=UNPOOLED, quote=self.usdc),
        }}  # fmt: skip

    def states(self, block: int) -> list[PoolState]:
        """Every pool's state at ``block``."""
        return read_states(self.url, self.uniswap, block=block)

    def balances(self, block: int | str = "latest") -> dict[str, int]:
        """The book's WETH and USDC at ``block``, raw units."""
        return {
            symbol: token_balance(self.url, address, self.book, block=block)
            for symbol, address in self.uniswap.tokens.items()
        }


class ExecutorEnv:
    def __init__(self, tmp: Path, brokers: str, *, dex: bool = False, **execution: Any):
        self.tmp = tmp
        self.brokers = brokers
        self.node = DevNode(state_path=tmp / "anvil.json")
        self.node.start()
        self.url = self.node.rpc_url
        self.deployed = deploy(self.url)
        self.w3 = Web3(Web3.HTTPProvider(self.url))
        self.venue = bind(self.w3, "MarginVenue", self.deployed.venue)
        weth = self.deployed.tokens["WETH"]
        self.perp = instrument_id(weth, 1, 0, 0)
        self.call(self.deployed.deployer, "list", [Web3.to_checksum_address(weth), 1, 0, 0])
        self.signer = self.deployed.liquidator
        self.dex = DexSetup(self.url, self.deployed, self.signer) if dex else None
        if self.dex is not None:
            execution = {"split_swap": self.dex.split_swap, **execution}
        self.price_end_ms = 0
        """The newest window end of the ETH rows made so far (:meth:`price_row`), ms."""
        suffix = uuid.uuid4().hex[:8]
        self.topics = TopicsConfig(**{
            f.name: f"{f.default}.{suffix}" for f in msgspec.structs.fields(TopicsConfig)
        })  # fmt: skip
        self.kafka = KafkaConnection(brokers)
        create_topics(self.kafka, list(msgspec.structs.asdict(self.topics).values()), 2)
        (tmp / "secret").write_bytes(SECRET)
        (tmp / "passphrase").write_text(PASSPHRASE + "\n")
        self.keystore = tmp / "liquidator.json"
        self.keystore.write_bytes(_liquidator_keystore(tmp))
        self.cfg = Config(
            topics=self.topics,
            oracle=OracleConfig() if self.dex is None else self.dex.oracle(),
            risk=RiskConfig(
                venue=self.deployed.venue,
                dex_hedges={} if self.dex is None else self.dex.hedges(),
            ),
            orders=OrdersConfig(secret_file=str(tmp / "secret")),
            execution=ExecutionConfig(
                signers=[self.signer],
                liquidator=self.signer,
                chain_id=self.deployed.chain_id,
                poll_interval_s=0.1,
                **execution,
            ),
        )
        self.cfg_path = tmp / "hedgeflow.toml"
        self.cfg_path.write_text(config_toml(self.cfg))
        self.out = tmp / "out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.in_process: Executor | None = None
        self.first_block = int(rpc(self.url, "eth_blockNumber"), 16)
        self.first_nonce = self.nonce()
        self.producer = rd_producer(self.kafka, {"enable.idempotence": True})

    # the chain ---------------------------------------------------------------------------
    def call(self, sender: str, fn: str, args: list[Any]) -> None:
        data = self.venue.encode_abi(fn, args=args)
        assert receipt(
            self.url, send_transaction(self.url, sender, self.venue.address, data, gas=300_000)
        ).ok

    def head_ms(self) -> int:
        return int(rpc(self.url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16) * 1000

    def mine(self, blocks: int = 1, timestamp: int | None = None) -> None:
        mine(self.url, blocks, timestamp=timestamp)

    def automine(self, enabled: bool) -> None:
        set_automine(self.url, enabled)

    def head_number(self) -> int:
        return int(rpc(self.url, "eth_blockNumber"), 16)

    def nonce(self, tag: str = "latest") -> int:
        """The signer's transaction count at ``tag``."""
        return int(rpc(self.url, "eth_getTransactionCount", [self.signer, tag]), 16)

    def set_next_base_fee(self, wei: int) -> None:
        rpc(self.url, "anvil_setNextBlockBaseFeePerGas", [hex(wei)])

    def signer_txs(self) -> list[Any]:
        """The signer's mined transactions since the set-up (``connectors.chain_audit``)."""
        chain = Rpc(self.url, 10.0)
        split_swap = "" if self.dex is None else self.dex.split_swap
        return signer_txs(
            chain,
            self.signer,
            self.deployed.venue,
            self.first_block + 1,
            self.head_number(),
            split_swap,
        )

    def audit(self, order_ids: list[str]) -> list[str]:
        """The exactly-once violations the chain shows for the signer since the set-up: an
        order id twice, an unknown one, a gap or a repeat in the nonces from the first."""
        return audit(self.signer_txs(), order_ids, self.signer, self.first_nonce)

    def venue_order_ids(self) -> list[str]:
        """The order ids of the signer's successful venue calls and routed swaps, each as
        often as on chain."""
        return [i for t in self.signer_txs() if t.status == 1 for i in t.order_ids]

    # the topics --------------------------------------------------------------------------
    def order(self, n: int, **fields: Any) -> Order:
        now = self.head_ms()
        base: dict[str, Any] = {
            "order_id": "0x" + format(n + 1, "064x"), "kind": "liquidation",
            "account": "0x" + format(0xA11CE + n, "040x"), "instrument": self.perp, "size": -1.0,
            "price": 2500.0, "oracle_price": 2500.0, "bonus_usd": 25.0, "reason": "test",
            "ts_event_ms": now, "health": 0.8, "worst_scenario": 0, "asset": "ETH",
            "underlying_price": 2500.0, "oracle_window_end_ms": self.price_end_ms,
            "position": 2.0, "valid_until_ms": now + 3_600_000,
        }  # fmt: skip
        merged = {**base, **fields}
        merged.setdefault("size_e18", str(e18(merged["size"])))
        return Order(**merged)

    def dex_order(self, n: int, size: float, price: float, **fields: Any) -> Order:
        """A ``dex_hedge`` order of the book (the signer) in WETH: ``size`` WETH to buy (> 0)
        or sell (< 0) at the oracle price ``price`` (USD)."""
        assert self.dex is not None
        fields = {"asset": "ETH", "instrument": self.dex.weth, **fields}
        return self.order(
            n, kind="dex_hedge", account=self.signer, size=size, price=price,
            oracle_price=price, underlying_price=price, position=0.0, **fields,
        )  # fmt: skip

    def publish_orders(self, orders: list[Order], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
        for o in orders:
            self.producer.produce(self.topics.orders, encode_signed(o, SECRET), o.account.encode())
        for value in raw:
            self.producer.produce(self.topics.orders, value, b"raw")
        assert self.producer.flush(30) == 0

    def publish_price(self, price: float = 2500.0, status: str = "ok") -> None:
        self.publish_prices([self.price_row(price, status)])

    def publish_prices(self, rows: list[bytes]) -> None:
        for row in rows:
            self.producer.produce(self.topics.oracle_prices, row, b"ETH")
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

    def price_row(
        self, price: float = 2500.0, status: str = "ok", age_ms: int = 0, asset: str = "ETH"
    ) -> bytes:
        """An encoded ``asset`` row of the window that ended ``age_ms`` before the head; the
        newest is what :meth:`order` says its price is from."""
        end = self.head_ms() - age_ms
        self.price_end_ms = max(self.price_end_ms, end)
        row = OraclePrice(
            asset=asset, window_start_ms=end - 60_000, window_end_ms=end, price=price,
            confidence=1.0, sources=3, status=status, held=False, revision=0,
        )  # fmt: skip
        return oracle_topic.encode(row)

    def read_topic(self, topic: str) -> list[RawMessage]:
        """Every record of ``topic`` so far, read by assignment (no consumer group)."""
        consumer = rd_consumer(self.kafka, {
            "group.id": "test-" + uuid.uuid4().hex[:8], "enable.auto.commit": False,
            "enable.partition.eof": True,
        })  # fmt: skip
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])  # offset 0: the start
        out, open_parts = [], set(parts)
        deadline = time.monotonic() + 30
        while open_parts and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                error = m.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error.str()
                    open_parts.discard(m.partition())
                    continue
                partition, offset = m.partition(), m.offset()
                assert partition is not None and offset is not None
                out.append(
                    RawMessage(topic, partition, offset, m.timestamp()[1], m.key(), m.value())
                )
        consumer.close()
        assert not open_parts, f"{topic}: partitions {open_parts} did not reach their end"
        return out

    def fills(self) -> tuple[list[Execution], dict[int, list[ExecutionProgress]]]:
        """The ``fills`` topic: its executions in topic order, and its progress records by
        partition."""
        executions: list[Execution] = []
        progress: dict[int, list[ExecutionProgress]] = {}
        for m in self.read_topic(self.topics.fills):
            item = _fills_decoder.decode(m.value or b"")
            if isinstance(item, Execution):
                executions.append(item)
            else:
                progress.setdefault(m.partition, []).append(item)
        return executions, progress

    def deadletter(self) -> list[Rejected]:
        """The ``deadletter`` topic's records."""
        return [
            msgspec.json.decode(m.value or b"", type=Rejected)
            for m in self.read_topic(self.topics.deadletter)
        ]

    def deadletter_rows(self) -> list[dict[str, Any]]:
        """The rows of ``deadletter/``."""
        import polars as pl

        files = sorted((self.out / "deadletter").glob("date=*/*.parquet"))
        return pl.concat([pl.read_parquet(f) for f in files]).to_dicts() if files else []

    def store_value(self, key: str) -> str | None:
        """A value of the executor's state file (``meta``), read while it runs."""
        store = ExecutorStore(self.out / "executor" / f"{self.signer}.sqlite")
        try:
            return store.get(key)
        finally:
            store.close()

    def attempts(self, order_id: str) -> list[Any]:
        """The transactions the executor signed for ``order_id`` (its state file)."""
        store = ExecutorStore(self.out / "executor" / f"{self.signer}.sqlite")
        try:
            return store.attempts(order_id)
        finally:
            store.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``hedgeflow execute`` with this set-up's config, keystore and output, and ``args``."""
        command = [
            sys.executable, "-m", "flows.cli", "execute", "--config", str(self.cfg_path),
            "--brokers", self.brokers, "--keystore", str(self.keystore), "--out", str(self.out),
        ]  # fmt: skip
        return subprocess.run(
            [*command, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )

    # the executor ------------------------------------------------------------------------
    def start_executor(self, failpoint: str | None = None, *args: str) -> subprocess.Popen[bytes]:
        """``hedgeflow execute`` as a child (with ``args`` added), its log appended to
        ``executor.log``."""
        env = {"HEDGEFLOW_FAILPOINT": failpoint} if failpoint else {}
        self.log = open(self.tmp / "executor.log", "ab")  # noqa: SIM115
        self.proc = hedgeflow(
            "execute", "--config", str(self.cfg_path), "--brokers", self.brokers,
            "--keystore", str(self.keystore), "--passphrase-file", str(self.tmp / "passphrase"),
            "--rpc", self.url, "--out", str(self.out), *args, env=env, stdout=self.log,
            stderr=self.log,
        )  # fmt: skip
        return self.proc

    def executor_in_process(self) -> Executor:
        """The executor of this set-up in this process, as ``hedgeflow execute`` builds it,
        to drive pass by pass (``Executor.step``); :meth:`close` closes it."""
        store = ExecutorStore(self.out / "executor" / f"{self.signer}.sqlite")
        chain = ChainClient(self.url, 10.0)
        check_store(store, self.signer, self.cfg.execution.chain_id)
        first_nonce(store, chain, self.signer)
        topics = self.topics
        kafka = ExecutorKafka(
            self.kafka, f"test-executor-{uuid.uuid4().hex[:8]}",
            {topics.orders: [0, 1], topics.oracle_prices: [0, 1]}, store.offsets,
            pausable=topics.orders,
        )  # fmt: skip
        self.in_process = Executor(
            cfg=self.cfg, account=Account.from_key(dev_keys(2)[1]), store=store, chain=chain,
            kafka=kafka, fills_partitions=2, secret=SECRET, out_dir=self.out,
        )  # fmt: skip
        return self.in_process

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

    def states(self, order_id: str) -> list[Execution]:
        """The state changes of one order in ``executions/``, by ``seq``."""
        return sorted((e for e in self.executions() if e.order_id == order_id), key=lambda e: e.seq)

    def final(self, order_ids: list[str]) -> dict[str, Execution]:
        done = {e.order_id: e for e in self.executions() if e.final}
        return {i: done[i] for i in order_ids if i in done}

    def executor_log(self) -> str:
        return (self.tmp / "executor.log").read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None:
            self.stop_executor()
        if self.in_process is not None:
            self.in_process.kafka.close()
            self.in_process.store.close()
        self.node.stop()
        self.producer.flush(10)


def mine_seen(env: ExecutorEnv, blocks: int = 1, timestamp: int | None = None) -> None:
    """Mine ``blocks`` blocks one at a time, each followed by the executor (its state file
    holds that head) before the next."""
    for _ in range(blocks):
        env.mine(timestamp=timestamp)
        number = str(env.head_number())
        wait_for(
            f"the executor at block {number}",
            lambda n=number: env.store_value("head") == n,  # type: ignore[misc]
            env,
        )


def wait_final(
    env: ExecutorEnv, order_ids: list[str], mine: bool = True, timeout_s: float = 60.0
) -> dict[str, Execution]:
    """Wait until every order in ``order_ids`` is final in ``executions/``, mining a block
    every pass with ``mine`` (for the confirmations); the final records."""
    wait_for(
        f"{order_ids} final",
        lambda: len(env.final(order_ids)) == len(order_ids),
        env,
        timeout_s,
        mine,
    )
    return env.final(order_ids)


def wait_for(
    what: str, ok: Callable[[], bool], env: ExecutorEnv, timeout_s: float = 60.0, mine: bool = False
) -> None:
    """Wait until ``ok()``, mining a block every pass with ``mine`` (automine off)."""
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; executor log:\n{env.executor_log()[-3000:]}"
            )
        if mine:
            rpc(env.url, "evm_mine", [])
        time.sleep(0.1)


MakeEnv = Callable[..., ExecutorEnv]
"""The ``make_env`` fixture (``tests/integration/conftest.py``): ``make_env(**execution)``."""


def assert_exactly_once(env: ExecutorEnv, order_ids: list[str], executed: list[str]) -> None:
    """From the chain: no violation, and each of ``executed`` on the venue exactly once (and
    no other); from ``executions/``: every order in ``order_ids`` final."""
    assert env.audit(order_ids) == []
    assert sorted(env.venue_order_ids()) == sorted(executed)
    assert sorted(env.final(order_ids)) == sorted(order_ids)
