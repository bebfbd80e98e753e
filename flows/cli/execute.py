"""``hedgeflow execute`` and ``hedgeflow keystore``: the executor process and its key.

Start-up refuses, with one line naming the key or the value, whatever would make the
executor act wrongly: no ``execution.chain_id``, Anvil's public dev keys off the dev
chain, no venue or order secret, a signer not in ``execution.signers`` (all before it
contacts anything), a node on another chain, or a state file of another signer or chain.

The key comes only from an encrypted keystore (Web3 Secret Storage, scrypt), its
passphrase from ``HEDGEFLOW_KEYSTORE_PASSPHRASE`` or a file; neither is ever logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import threading
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from connectors.anvil import ANVIL_MNEMONIC, CHAIN_ID
from connectors.executor import Executor, set_trading_state
from connectors.executor_chain import ChainClient
from connectors.executor_kafka import ExecutorKafka
from connectors.executor_store import ExecutorStore
from connectors.kafka_tools import check_brokers, topic_partitions
from connectors.metrics import serve
from operators.config import Config, ConfigError
from operators.order_auth import load_secret
from operators.pretrade import TradingState
from operators.swap_calls import dex_pairs

log = logging.getLogger("hedgeflow.execute")

PASSPHRASE_ENV = "HEDGEFLOW_KEYSTORE_PASSPHRASE"
DEV_ACCOUNTS = 10
"""Anvil's default accounts: their keys are public, so they sign only on chain 31337."""


def dev_keys(count: int = DEV_ACCOUNTS) -> list[bytes]:
    """The private keys of Anvil's first ``count`` default accounts (public knowledge)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        bytes(Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key)
        for i in range(count)
    ]


def dev_addresses() -> set[str]:
    return {Account.from_key(k).address.lower() for k in dev_keys()}


def passphrase(passphrase_file: Path | None) -> str:
    """The keystore passphrase: the file's first line, else ``HEDGEFLOW_KEYSTORE_PASSPHRASE``."""
    if passphrase_file is not None:
        try:
            return (
                passphrase_file.read_text().splitlines()[0]
                if passphrase_file.stat().st_size
                else ""
            )
        except OSError as exc:
            raise ConfigError(
                f"--passphrase-file {str(passphrase_file)!r}: {exc.strerror}"
            ) from None
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        raise ConfigError(
            f"the keystore passphrase: set {PASSPHRASE_ENV} or pass --passphrase-file"
        )
    return value


def keystore_address(path: Path) -> str:
    """The address a keystore file names (readable without the passphrase)."""
    try:
        data = json.loads(path.read_text())
        return "0x" + str(data["address"]).lower().removeprefix("0x")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--keystore {str(path)!r} is not a Web3 Secret Storage file: {exc}"
        ) from None


def unlock(path: Path, phrase: str) -> LocalAccount:
    """The account of an encrypted keystore; ``ConfigError`` (without the passphrase) if
    the passphrase is wrong."""
    try:
        key = Account.decrypt(json.loads(path.read_text()), phrase)
    except ValueError:
        raise ConfigError(
            f"--keystore {str(path)!r}: wrong passphrase, or a corrupt file"
        ) from None
    return Account.from_key(key)


def write_keystore(path: Path, key: bytes, phrase: str) -> str:
    """Encrypt ``key`` into a new keystore file at ``path`` (scrypt); its address."""
    if path.exists():
        raise ConfigError(f"--out {str(path)!r} exists; a keystore is never overwritten")
    data = Account.encrypt(key, phrase, kdf="scrypt")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return "0x" + str(data["address"]).lower()


def state_path(out_dir: Path, signer: str, given: Path | None) -> Path:
    return given if given is not None else out_dir / "executor" / f"{signer}.sqlite"


def check_config(cfg: Config, signer: str) -> None:
    """Refuse a configuration the executor cannot act on safely, naming the key."""
    ex = cfg.execution
    if ex.chain_id == 0:
        raise ConfigError("execution.chain_id must name the chain the executor acts on; got 0")
    if signer in dev_addresses() and ex.chain_id != CHAIN_ID:
        raise ConfigError(
            f"--keystore holds one of Anvil's public dev keys ({signer}); they sign only on the "
            f"dev chain {CHAIN_ID}, not on execution.chain_id {ex.chain_id}"
        )
    if not cfg.risk.venue:
        raise ConfigError("risk.venue must name the venue the executor calls; got ''")
    if not cfg.orders.secret_file:
        raise ConfigError(
            "orders.secret_file must name the order secret; the executor refuses unsigned orders"
        )
    if signer not in ex.signers:
        raise ConfigError(
            f"execution.signers must list this executor's address {signer} (the risk stage "
            f"waits for each listed signer's progress); got {ex.signers!r}"
        )
    dex_pairs(cfg)  # every DEX hedge's token and quote in oracle.tokens, for their decimals


def check_chain(cfg: Config, node_chain_id: int) -> None:
    """Refuse a node on another chain than ``execution.chain_id``."""
    if node_chain_id != cfg.execution.chain_id:
        raise ConfigError(
            f"execution.chain_id is {cfg.execution.chain_id}, but the node is on chain "
            f"{node_chain_id}"
        )


def check_store(store: ExecutorStore, signer: str, chain_id: int) -> None:
    """Bind a new state file to the signer and chain, or refuse one bound to others."""
    for key, value in (("signer", signer), ("chain_id", str(chain_id))):
        held = store.get(key)
        if held is None:
            with store.transaction():
                store.put(key, value)
        elif held != value:
            raise ConfigError(f"--state {str(store.path)!r} belongs to {key} {held}, not {value}")


def first_nonce(store: ExecutorStore, chain: ChainClient, signer: str) -> None:
    """A new state file starts at the chain's pending nonce."""
    if store.get("next_nonce") is None:
        with store.transaction():
            store.put("next_nonce", str(chain.nonce(signer, "pending")))


def cmd_execute(args: argparse.Namespace) -> int:
    cfg: Config = args.cfg
    keystore: Path = args.keystore
    signer = keystore_address(keystore)
    out_dir: Path = args.out
    store = ExecutorStore(state_path(out_dir, signer, args.state))
    command = next((c for c in ("halt", "resume", "reduce_only") if getattr(args, c)), None)
    if command is not None:
        state = {
            "halt": TradingState.HALTED,
            "resume": TradingState.ACTIVE,
            "reduce_only": TradingState.REDUCING,
        }[command]
        with store.transaction():
            set_trading_state(store, state, f"manual: {args.reason}")
        print(f"{signer}: trading state {state.value.upper()} ({store.path})")
        return 0
    if not args.brokers:
        raise ConfigError(
            "execute needs --brokers (only --halt, --resume and --reduce-only do not)"
        )
    check_config(cfg, signer)
    account = unlock(keystore, passphrase(args.passphrase_file))
    secret = load_secret(cfg.orders.secret_file)
    check_brokers(args.kafka, args.broker_timeout)
    chain = ChainClient(
        cfg.chain.rpc_url if args.rpc is None else args.rpc, cfg.execution.rpc_timeout_s
    )
    check_chain(cfg, chain.chain_id())
    check_store(store, signer, cfg.execution.chain_id)
    first_nonce(store, chain, signer)
    topics = cfg.topics
    counts = topic_partitions(args.kafka, [topics.orders, topics.oracle_prices, topics.fills])
    wanted = args.partitions or list(range(counts[topics.orders]))
    kafka = ExecutorKafka(
        args.kafka, f"hedgeflow-executor-{signer}",
        {topics.orders: wanted, topics.oracle_prices: list(range(counts[topics.oracle_prices]))},
        store.offsets, pausable=topics.orders, group=args.group,
    )  # fmt: skip
    executor = Executor(
        cfg=cfg, account=account, store=store, chain=chain, kafka=kafka,
        fills_partitions=counts[topics.fills], secret=secret, out_dir=out_dir,
    )  # fmt: skip
    if args.metrics_port is not None:
        serve(args.metrics_port)
        log.info("metrics on http://0.0.0.0:%d/metrics", args.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "executing for %s on chain %d: orders partitions %s, state %s, trading state %s",
        signer, cfg.execution.chain_id, wanted, store.path, executor.trading_state().value.upper(),
    )  # fmt: skip
    try:
        executor.run(stop)
    finally:
        kafka.close()
        store.close()
    return 0


def cmd_keystore(args: argparse.Namespace) -> int:
    """Write an encrypted keystore: a new random key, or Anvil's dev account N."""
    n = args.dev_account
    key = secrets.token_bytes(32) if n is None else dev_keys(n + 1)[n]
    address = write_keystore(args.out, key, passphrase(args.passphrase_file))
    print(address)
    return 0
