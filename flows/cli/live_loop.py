"""The whole loop on one broker and one dev chain, each stage its own process:

    devchain scenario (Anvil) --> hedgeflow ingest --> chain.logs --> hedgeflow run oracle
        --> oracle.prices --> hedgeflow run risk --> orders --> hedgeflow execute
        --> liquidations on the venue (Anvil) --> ingest ...; outcomes --> fills --> risk

1. start Anvil and deploy (``flows.cli.devchain.dev_chain``); open the DEX-hedging book
   (``flows.cli.dex_book``: the dev account after the traders, funded with WETH and USDC,
   SplitSwap approved, long puts on the venue); write the order secret, the liquidator's
   and the book's encrypted keystores and ``OUT/demo.toml``: the dev chain's
   configuration with ``PREFIX.*`` topics, the first trading account hedged in the perp,
   the DEX book hedged in WETH on the pools, orders signed with the secret, the liquidator
   and the book as the executors' signers;
2. start ``ingest``, ``run oracle``, ``run risk``, ``execute`` with the liquidator's key
   and ``execute`` with the book's as child processes (logs in ``OUT/logs/``; outputs in
   ``OUT/oracle/``, ``OUT/risk/``, ``OUT/executor/``, ``OUT/book-executor/``);
3. run the scenario paced (``pace_s`` per block), so that the pipeline keeps up: the crash
   leaves accounts under maintenance, and only hedgeflow liquidates them;
4. mine empty 12 s blocks, each followed by a wait for the stages' Parquet to stand still,
   until every liquidation and DEX-hedge order in ``orders/`` has a final row in
   ``executions/`` and neither changed for :data:`QUIET_BLOCKS` blocks
   (:data:`TAIL_BLOCKS` at most: an order the risk stage decides later is left
   unfinished, and the summary says so);
5. stop the children (SIGTERM; the executors stop cleanly) and write the chain's logs to
   ``OUT/recording.parquet``.

Bytewax 0.21.1 has no clean stop: a flow killed loses the rows of its current epoch. The
flows are stopped only after their outputs stood still for :data:`SETTLED_EPOCHS` epochs
past the last block, so every row is on disk.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.anvil import rpc
from connectors.contracts import UNDERLYING
from connectors.kafka_clients import KafkaConnection, rd_consumer
from connectors.kafka_tools import create_topics
from connectors.local_server import die_with_parent
from connectors.recording import iter_messages, load_recording
from flows.cli.devchain import (
    GENESIS_TIMESTAMP,
    STEPS,
    DevChain,
    Scenario,
    dev_chain,
    head,
    instruments,
    record_chain,
)
from flows.cli.dex_book import DexBook, dex_book_execution, dex_book_risk, open_dex_book
from flows.cli.execute import dev_keys, write_keystore
from flows.cli.summary import read_dataset
from operators.config import (
    Config,
    ExecutionConfig,
    OrdersConfig,
    RunConfig,
    TopicsConfig,
    config_toml,
)
from operators.units import InstrumentKind
from operators.venue import Fill, decode_venue

log = logging.getLogger("hedgeflow.demo")

PARTITIONS = 2
"""Partitions of every topic."""
PACE_S = 0.2
"""Wall-clock seconds per block of the scenario by default: the pipeline's latency from a
block to an order's transaction in the pool is well under a second on 2 cores."""
EPOCH_INTERVAL_S = 0.5
"""The flows' epoch (how often their Parquet files are cut), s."""
IDLE_TIMEOUT_S = 60.0
"""``oracle.idle_timeout_s``: nothing feeds ``dex.quotes`` here, and its partitions, never
heard from, would hold every window open; with idleness they are set aside once the chain
is a minute (5 blocks) ahead of them."""
VALID_FOR_S = 600.0
"""``orders.valid_for_s``: paced, 12 s of event time pass in ``pace_s`` of wall time, so
the pipeline's wall-clock latency counts 60 times over against an order's deadline; 50
blocks (10 s at the default pace) leave room for a loaded machine."""
POLL_INTERVAL_S = 0.1
"""How often ingest and the executor look for a new head when caught up, s."""
QUIET_BLOCKS = 3
"""Blocks after the scenario with no new order nor outcome before the loop ends."""
TAIL_BLOCKS = 20
"""Blocks after the scenario at most (240 s of event time, within the oracle's max age)."""
SETTLED_EPOCHS = 2
"""Epochs the stages' outputs must stand still after a block of the tail."""
START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
_LOG_TAIL_LINES = 30


@dataclass(frozen=True, kw_only=True)
class LoopParams:
    """The scenario and the topics of one run of the loop."""

    seed: int = 7
    accounts: int = 50
    steps: int = STEPS
    pace_s: float = PACE_S
    topic_prefix: str = "devchain"
    """Topics are ``PREFIX.chain.logs``, ``PREFIX.oracle.prices``, ..."""


@dataclass(frozen=True, kw_only=True)
class LoopResult:
    """Where the loop's outputs are, and what the chain says was liquidated."""

    cfg: Config
    stage_dirs: list[Path]
    """The output directories of ``run oracle``, ``run risk``, ``execute`` (the
    liquidator's) and ``execute`` (the DEX book's)."""
    liquidations: list[Fill]
    """The venue's ``Liquidated`` events, read back from the chain."""
    dex_book: DexBook
    """The DEX-hedging book."""


def live_loop(brokers: str, out_dir: Path, params: LoopParams) -> LoopResult:
    """Run the loop (the module's docstring) under ``out_dir``; what it left there."""
    started = time.monotonic()
    _remove_earlier_run(out_dir)
    stage_dirs = [out_dir / d for d in ("oracle", "risk", "executor", "book-executor")]
    with dev_chain(out_dir, params.accounts, books=1) as chain:
        book_index = params.accounts + 2  # the dev account after the traders
        book_address = str(rpc(chain.rpc_url, "eth_accounts")[book_index]).lower()
        book = open_dex_book(chain.rpc_url, chain.deployed, book_address, GENESIS_TIMESTAMP)
        cfg = loop_config(chain, out_dir, params.topic_prefix, book)
        config_path = out_dir / "demo.toml"
        config_path.write_text(config_toml(cfg))
        kafka = KafkaConnection(brokers)  # the demo's own embedded broker: plaintext
        create_topics(kafka, list(msgspec.structs.asdict(cfg.topics).values()), PARTITIONS)
        passphrase = _passphrase(out_dir)
        keys = dev_keys(book_index + 1)
        keystores = [_keystore(out_dir, name, keys[i], passphrase)
                     for name, i in (("liquidator", 1), ("book", book_index))]  # fmt: skip
        common = ["--config", str(config_path), "--brokers", brokers]
        commands = {
            "ingest": ["ingest", *common, "--from-block", str(chain.deployed.block)],
            "oracle": ["run", "oracle", *common, "--out", str(stage_dirs[0])],
            "risk": ["run", "risk", *common, "--out", str(stage_dirs[1])],
        }
        for name, keystore, out in zip(("execute", "execute-book"), keystores, stage_dirs[2:],
                                       strict=True):  # fmt: skip
            commands[name] = ["execute", *common, "--keystore", str(keystore),
                              "--passphrase-file", str(passphrase), "--out", str(out)]  # fmt: skip
        children: list[_Child] = []

        def check_children() -> None:
            for child in children:
                child.check()

        try:
            for name, argv in commands.items():
                children.append(_Child(name, argv, out_dir / "logs"))
            _wait_for_first_messages(kafka, [cfg.topics.chain_logs, cfg.topics.fills], children)
            scenario = Scenario(
                chain, params.seed, params.accounts, params.steps, params.pace_s, check_children
            )
            log.info("scenario: %d steps, %.2f s per block", params.steps, params.pace_s)
            scenario.run()
            _tail(scenario, stage_dirs, cfg.run.epoch_interval_s)
        finally:
            for child in reversed(children):  # the executor first: it stops cleanly
                child.stop()
        record_chain(chain, out_dir / "recording.parquet", cfg.topics.chain_logs)
        last = head(chain.rpc_url)
    recorded = iter_messages(load_recording(out_dir / "recording.parquet"))
    events = (decode_venue(m, cfg.risk.venue) for m in recorded)
    liquidations = [e for e in events if isinstance(e, Fill) and e.liquidator is not None]
    log.info(
        "loop done in %.1f s: blocks up to %d, %d Liquidated events on chain",
        time.monotonic() - started, last, len(liquidations),
    )  # fmt: skip
    return LoopResult(cfg=cfg, stage_dirs=stage_dirs, liquidations=liquidations, dex_book=book)


def loop_config(chain: DevChain, out_dir: Path, topic_prefix: str, book: DexBook) -> Config:
    """The dev chain's configuration for the loop (the module's docstring, step 1); the
    order secret is written to ``OUT/order.secret``."""
    deployed = chain.deployed
    names = [f.name for f in msgspec.structs.fields(TopicsConfig)]
    topics = TopicsConfig(**{n: f"{topic_prefix}.{n.replace('_', '.')}" for n in names})
    hedged = str(rpc(chain.rpc_url, "eth_accounts")[2]).lower()  # the first trading account
    underlying = deployed.tokens[UNDERLYING]
    perp = next(i.id for i in instruments(underlying) if i.kind == InstrumentKind.PERP)
    secret = out_dir / "order.secret"
    # hex text: the secret is read stripped of whitespace, which random bytes may end with
    _private_file(secret, (secrets.token_hex(32) + "\n").encode())
    liquidator = deployed.liquidator
    return msgspec.structs.replace(
        chain.cfg,
        topics=topics,
        chain=msgspec.structs.replace(chain.cfg.chain, poll_interval_s=POLL_INTERVAL_S),
        oracle=msgspec.structs.replace(chain.cfg.oracle, idle_timeout_s=IDLE_TIMEOUT_S),
        risk=dex_book_risk(
            msgspec.structs.replace(chain.cfg.risk, books={hedged: {"ETH": perp}}), book
        ),
        orders=OrdersConfig(secret_file=str(secret), valid_for_s=VALID_FOR_S),
        execution=dex_book_execution(
            ExecutionConfig(
                signers=[liquidator],
                liquidator=liquidator,
                chain_id=deployed.chain_id,
                poll_interval_s=POLL_INTERVAL_S,
            ),
            book,
        ),
        run=RunConfig(epoch_interval_s=EPOCH_INTERVAL_S),
    )


def _passphrase(out_dir: Path) -> Path:
    """A new random passphrase for the loop's keystores, in ``OUT/keystore.passphrase``."""
    passphrase = out_dir / "keystore.passphrase"
    _private_file(passphrase, (secrets.token_urlsafe(24) + "\n").encode())
    return passphrase


def _keystore(out_dir: Path, name: str, key: bytes, passphrase: Path) -> Path:
    """``key`` (an Anvil dev key) as the encrypted keystore ``OUT/NAME.keystore.json``."""
    keystore = out_dir / f"{name}.keystore.json"
    write_keystore(keystore, key, passphrase.read_text().strip())
    return keystore


def _private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


_EARLIER = ("oracle", "risk", "executor", "book-executor", "logs", "demo.toml",
            "order.secret", "keystore.passphrase", "liquidator.keystore.json",
            "book.keystore.json", "recording.parquet")  # fmt: skip
"""What a run of the loop writes under ``OUT`` (besides ``dev_chain``'s own files)."""


def _remove_earlier_run(out_dir: Path) -> None:
    for name in _EARLIER:
        path = out_dir / name
        if path.is_dir():
            log.info("removing %s of an earlier run", path)
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _wait_for_first_messages(
    kafka: KafkaConnection, topics: list[str], children: list[_Child]
) -> None:
    """Wait until each of ``topics`` holds a message (ingest has published its first range,
    the executor its first progress), so that the scenario starts with the stages up."""
    consumer = rd_consumer(kafka, {"group.id": "hedgeflow-demo", "enable.auto.commit": False})
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(PARTITIONS)]
    )
    waiting, deadline = set(topics), time.monotonic() + START_TIMEOUT_S
    try:
        while waiting:
            for child in children:
                child.check()
            if time.monotonic() > deadline:
                msg = f"expected messages on {sorted(waiting)} within {START_TIMEOUT_S} s"
                raise TimeoutError(msg)
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                waiting.discard(message.topic())
    finally:
        consumer.close()
    log.info("the stages are up: %s hold messages", ", ".join(topics))


def _tail(scenario: Scenario, stage_dirs: Sequence[Path], epoch_s: float) -> None:
    """Mine empty blocks, each followed by a wait for the stages' outputs to stand still,
    until every liquidation and DEX-hedge order has a final outcome and neither the orders
    nor the outcomes changed for :data:`QUIET_BLOCKS` blocks; :data:`TAIL_BLOCKS` at most."""
    risk_dir, executor_dirs = stage_dirs[1], stage_dirs[2:]
    seen: tuple[int, int] | None = None
    quiet = 0
    for n in range(1, TAIL_BLOCKS + 1):
        scenario.mine()
        _settle(stage_dirs, epoch_s)
        progress = _progress(risk_dir, executor_dirs)
        quiet = quiet + 1 if progress.counts == seen else 0
        seen = progress.counts
        if progress.settled and quiet >= QUIET_BLOCKS:
            log.info("tail: settled after %d empty blocks (%s)", n, progress)
            return
    log.warning("tail: not settled after %d empty blocks (%s)", TAIL_BLOCKS, seen)


@dataclass(frozen=True)
class _Progress:
    orders: int
    """Liquidation and DEX-hedge orders in ``orders/``."""
    taken: int
    """Of them, those with a row in ``executions/``."""
    unfinished: int
    """Orders whose latest row in ``executions/`` is not final."""
    rows: int
    """Rows in ``executions/``."""

    @property
    def counts(self) -> tuple[int, int]:
        return self.orders, self.rows

    @property
    def settled(self) -> bool:
        return self.taken == self.orders and self.unfinished == 0


def _progress(risk_dir: Path, executor_dirs: Sequence[Path]) -> _Progress:
    orders = read_dataset("orders", risk_dir)
    executions = read_dataset("executions", *executor_dirs)
    executed = pl.col("kind").is_in(["liquidation", "dex_hedge"])
    ids = set() if orders is None else set(orders.filter(executed)["order_id"])
    if executions is None:
        return _Progress(len(ids), 0, 0, 0)
    latest = executions.sort("seq").group_by("order_id").last()
    taken = len(ids & set(latest["order_id"]))
    return _Progress(len(ids), taken, int((~latest["final"]).sum()), executions.height)


def _settle(stage_dirs: Sequence[Path], epoch_s: float) -> None:
    """Wait until the Parquet files under ``stage_dirs`` stood still for
    :data:`SETTLED_EPOCHS` epochs (at most :data:`SETTLE_TIMEOUT_S`)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last, since = _files(stage_dirs), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(epoch_s / 2)
        now = _files(stage_dirs)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLED_EPOCHS * epoch_s:
            return
    log.warning("the flows' outputs still changed after %.0f s; stopping them", SETTLE_TIMEOUT_S)


def _files(stage_dirs: Sequence[Path]) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_size) for d in stage_dirs for p in d.glob("*/**/*.parquet"))


class _Child:
    """``hedgeflow ARGV`` as a child process in its own session, output to ``LOGS/NAME.log``,
    killed by the kernel if this process dies (``PR_SET_PDEATHSIG``)."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        self.name = name
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent(os.getpid()),
            )  # fmt: skip
        log.info("started %s (pid %d), log %s", name, self.process.pid, self.log_path)

    def check(self) -> None:
        """A ``RuntimeError`` with the tail of its log if the child has exited."""
        code = self.process.poll()
        if code is not None:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            msg = f"{self.name} exited with code {code}; log {self.log_path}:\n" + "\n".join(lines)
            raise RuntimeError(msg)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT_S)
                self.process.kill()
                self.process.wait()
        log.info("stopped %s (exit status %d)", self.name, self.process.returncode)
