"""``hedgeflow devchain``: a local chain with the venue, the real Uniswap pools and the feed.

1. start Anvil (:class:`connectors.anvil.DevNode`), its chain kept in ``OUT/state.json``;
2. deploy (``connectors.contracts.deploy``) the test tokens USDC and WETH, the real
   Uniswap V2 pair and V3 pools (fees 500 and 3000) with their liquidity, the venue, the
   feed and SplitSwap;
3. write ``OUT/devchain.toml`` (the configuration whose oracle reads them) and
   ``OUT/deployed.json`` (their addresses, the RPC URL and the state file);
4. with ``scenario``, run a seeded scenario, one block per step: list instruments (spot,
   perp, calls and puts on ETH), deposit collateral for every account, then for an hour
   of 12 s blocks move the ETH price along a random path with a crash of about 25% while
   the accounts trade; then some accounts withdraw. The prices move by real swaps: in
   each block every pool (most blocks) is swapped to the path's price (each pool with its
   own noise), the input sized exactly for it (``operators.pool_moves``), so the pools'
   own ``Swap`` and ``Sync`` logs carry the path; the feed answers on deviation or
   heartbeat. The scenario liquidates nobody: the crash leaves accounts under maintenance
   margin, for hedgeflow's risk stage to order and its executor to liquidate (``hedgeflow
   demo`` runs that loop). The liquidator's key (account 1) sends nothing here.

The scenario's transactions are the same, and so is the chain, block hashes included, for
the same seed, account count and step count: the genesis time is fixed and every block is
mined at a set timestamp. Automine is off; each block includes whatever else the pool
holds (the executor's transactions, in the demo), whose own blocks then depend on when
they were sent. With ``pace_s`` each block is mined at least that long (wall clock) after
the one before, so that a live pipeline keeps up.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from web3 import Web3

from connectors.anvil import DevNode, mine, rpc, send_transaction, set_automine
from connectors.chain_source import chain_messages
from connectors.contracts import (
    UNDERLYING,
    Deployed,
    bind,
    deploy,
    devchain_config,
    feed_answer,
    instrument_id,
)
from connectors.recording import write_recording
from connectors.uniswap import read_states, read_swapped, v2_swap_calldata, v3_swap_calldata
from flows.cli.generate import FEED_DEVIATION
from flows.cli.runner import wait_for_interrupt
from operators.abi import quantity
from operators.config import Config, ConfigError, config_toml
from operators.greeks import bsm
from operators.pool_math import sqrt_price_x96
from operators.pool_moves import v2_swap_to_price, v3_swap_to_price
from operators.pool_state import V2PoolState, V3PoolState
from operators.registry import PoolSource, Registry
from operators.units import E18, YEAR_S, InstrumentKind

log = logging.getLogger("hedgeflow.devchain")

GENESIS_TIMESTAMP = 1_767_225_600
"""2026-01-01T00:00:00Z, Unix s."""
BLOCK_TIME_S = 12
"""Seconds between the scenario's blocks, as on mainnet."""
STEPS = 300
"""Price steps of the scenario by default, one block each: an hour of 12 s blocks."""
START_PRICE = 3000.0
"""ETH in USD at the start."""
STEP_VOL = 0.0015
"""Standard deviation of the log price per block."""
CRASH = 0.25
"""The crash's fall, a fraction of the price."""
CRASH_BLOCKS = 5
"""Blocks the crash is spread over (a minute)."""
SOURCE_NOISE = 0.0005
"""Standard deviation of each source's log price around the path."""
FEED_HEARTBEAT_BLOCKS = 20
"""The feed answers when the price moved ``FEED_DEVIATION`` since its last answer, or
after this many blocks (240 s, within the oracle's default max age of 300 s)."""
V3_SWAP_PROB = 0.9
"""Chance that a V3 pool is swapped to the path in a block..."""
V2_SWAP_PROB = 0.4
"""...and that the V2 pair is."""
TRADES_PER_ACCOUNT = 5.0
"""Mean trades per account over the scenario."""
OPTION_VOL = 0.6
"""Volatility at which options trade (Black-Scholes, no rates), per year."""
STRIKES = (0.8, 0.9, 1.0, 1.1, 1.2)
"""Option strikes, fractions of the start price (rounded to 100 USD)."""
EXPIRIES_DAYS = (7, 30, 90)
"""Option expiries, days after genesis at 08:00 UTC."""
WITHDRAW_FRACTION = 0.1
"""Share of accounts that withdraw half of their USDC at the end."""
NO_ORDER = bytes(32)
"""The ``orderId`` of a venue call that no order drives (the scenario's trades):
bytes32(0)."""
_CALL_GAS = 150_000
"""Gas limit of a scenario call to the venue or the feed (each uses under 100k)."""
_SWAP_GAS = 2_500_000
"""Gas limit of a scenario swap (measured: up to 987k, a crash step across a ladder of
initialized ticks, each crossing some 50k)."""
_PRICE_TXS = 4
"""Price updates per block at most: the three pools and the feed."""
_MAX_TXS_PER_BLOCK = 120
"""The scenario's transactions per block at most (3 x 2.5M + 117 x 150k gas, 25M, fits
Anvil's 30M block gas limit, with room for an executor's few transactions of 300k)."""


def devchain(
    out_dir: Path,
    scenario: bool,
    seed: int,
    accounts: int,
    keep_running: bool,
    record: bool = False,
) -> int:
    """Start a dev chain, deploy, write the configuration, maybe run the scenario.

    With ``record``, the chain's logs are written to ``OUT/recording.parquet`` as
    ``hedgeflow ingest`` would publish them (2 partitions of ``chain.logs``).

    ``accounts`` trading accounts (Anvil accounts 2, 3, ...; account 0 deploys and keeps
    the prices, account 1 liquidates). With ``keep_running`` the node stays up, its RPC
    URL printed, until Ctrl-C or SIGTERM; its chain is then saved in ``OUT/state.json``.
    """
    with dev_chain(out_dir, accounts) as chain:
        if scenario:
            Scenario(chain, seed, accounts).run()
        if record:
            record_chain(chain, out_dir / "recording.parquet")
        if keep_running:
            _serve(chain.node)
    log.info("node stopped; its chain is saved in %s", out_dir / "state.json")
    return 0


@dataclass(frozen=True)
class DevChain:
    """A started dev node with the contracts deployed, and the configuration that reads
    them (``chain`` follows the node)."""

    node: DevNode
    deployed: Deployed
    cfg: Config

    @property
    def rpc_url(self) -> str:
        return self.node.rpc_url


@contextmanager
def dev_chain(out_dir: Path, accounts: int, books: int = 0) -> Iterator[DevChain]:
    """Start Anvil with ``accounts`` trading accounts (and the deployer and liquidator,
    and after the traders ``books`` accounts the scenario does not trade), deploy, write
        ``OUT/devchain.toml`` and ``OUT/deployed.json``; stop the node on exit, its chain
    saved in ``OUT/state.json`` (a fresh chain each time)."""
    if accounts < 1:
        raise ConfigError(f"accounts must be >= 1; got {accounts!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out_dir / "state.json", out_dir / "anvil.log"
    for stale in (state_path, log_path):
        stale.unlink(missing_ok=True)
    node = DevNode(
        accounts=accounts + 2 + books,
        state_path=state_path,
        genesis_timestamp=GENESIS_TIMESTAMP,
        log_path=log_path,
    )
    with node:
        log.info("Anvil on %s (log %s)", node.rpc_url, log_path)
        deployed = deploy(node.rpc_url, timestamp=GENESIS_TIMESTAMP + BLOCK_TIME_S)
        log.info("deployed in block %d: venue %s", deployed.block, deployed.venue)
        cfg = devchain_config(deployed, node.rpc_url)
        (out_dir / "devchain.toml").write_text(config_toml(cfg))
        info = msgspec.structs.asdict(deployed) | {
            "contracts": deployed.contracts,
            "rpc_url": node.rpc_url,
            "state_path": str(state_path),
        }
        (out_dir / "deployed.json").write_bytes(msgspec.json.format(msgspec.json.encode(info)))
        print(out_dir / "devchain.toml")
        print(out_dir / "deployed.json")
        yield DevChain(node, deployed, cfg)


def record_chain(chain: DevChain, path: Path, topic: str = "chain.logs") -> int:
    """Write the logs of every deployed contract, from the deployment to the head, to the
    recording ``path`` as ``hedgeflow ingest`` publishes them (2 partitions of ``topic``);
    the count written."""
    messages = chain_messages(
        chain.rpc_url, chain.deployed.contracts, chain.deployed.block, head(chain.rpc_url),
        topic, 2,
    )  # fmt: skip
    count = write_recording(messages, path)
    log.info("recorded %d logs to %s", count, path)
    return count


def _serve(node: DevNode) -> None:
    """Keep the node up, mining each transaction as it comes, until Ctrl-C or SIGTERM."""
    set_automine(node.rpc_url, True)
    print(node.rpc_url, flush=True)
    log.info("dev chain on %s; Ctrl-C or SIGTERM stops it", node.rpc_url)
    wait_for_interrupt()


@dataclass(frozen=True)
class Instrument:
    """A listed instrument of the scenario: its venue id (0x hex) and its terms."""

    id: str
    kind: InstrumentKind
    strike: float
    """USD; 0 for spot and perps."""
    expiry: int
    """Unix s; 0 for spot and perps."""


def instruments(underlying: str) -> list[Instrument]:
    """The scenario's instruments on ``underlying`` (the WETH token's address): ETH spot
    and perp, calls and puts at every strike/expiry."""
    terms = [(InstrumentKind.SPOT, 0.0, 0), (InstrumentKind.PERP, 0.0, 0)]
    for days in EXPIRIES_DAYS:
        expiry = GENESIS_TIMESTAMP + days * 86_400 + 8 * 3600
        for fraction in STRIKES:
            strike = round(START_PRICE * fraction / 100) * 100.0
            terms += [(InstrumentKind.CALL, strike, expiry), (InstrumentKind.PUT, strike, expiry)]
    return [
        Instrument(instrument_id(underlying, kind, _e18(strike), expiry), kind, strike, expiry)
        for kind, strike, expiry in terms
    ]


def price_path(seed: int, steps: int = STEPS) -> tuple[np.ndarray, int]:
    """ETH in USD at each step (``steps + 1`` values) and the step the crash starts.

    A driftless log random walk; the crash falls by ``CRASH`` over ``CRASH_BLOCKS`` blocks,
    starting somewhere in the middle third.
    """
    if steps < 3 * CRASH_BLOCKS:
        raise ConfigError(
            f"steps must be >= {3 * CRASH_BLOCKS} (room for the crash); got {steps!r}"
        )
    rng = np.random.default_rng([seed, 1])
    moves = rng.normal(0.0, STEP_VOL, steps)
    crash_at = int(rng.integers(steps // 3, 2 * steps // 3))
    moves[crash_at : crash_at + CRASH_BLOCKS] += math.log(1 - CRASH) / CRASH_BLOCKS
    path = START_PRICE * np.exp(np.concatenate([[0.0], np.cumsum(moves)]))
    return path, crash_at


def option_price(spot: float, strike: float, years: float, kind: InstrumentKind) -> float:
    """Black-Scholes price (``operators.greeks.bsm``) of a call or put at ``OPTION_VOL``, no
    rates; USD for ``spot`` and ``strike`` in USD, ``years`` to expiry."""
    is_call = kind == InstrumentKind.CALL
    return float(bsm(is_call, spot, strike, years, 0.0, 0.0, OPTION_VOL).price)


def _e18(value: float) -> int:
    """A USD or ETH amount with 18 decimals, rounded to 1e-6."""
    return round(value * 1e6) * (E18 // 10**6)


class Scenario:
    """Sends the scenario's transactions, one block per step, and checks their receipts.

    ``steps`` price steps (one block each) after the listing and deposit blocks; each block
    is mined at least ``pace_s`` seconds (wall clock) after the one before, and
    ``on_block()`` is called after each (the demo checks its processes there).

    Others may trade on the pools too (a book's DEX hedge, in the demo): before each block
    the scenario reads what swaps moved in every pool at the latest mined block
    (``connectors.uniswap.read_swapped``; the initialized ticks, which only ``Mint`` and
    ``Burn`` change, are read once at the start) and sizes its swaps from that, so that an
    outside trade in an earlier block neither makes them revert nor moves the pools off
    the path; trading alone, its transactions are the same whatever else joins its blocks.
    An outside trade on a pool ahead of the scenario's swap in the same block may make that
    swap revert: it is then counted ``outrun_swaps``, its move dropped from ``moves``, and
    the next block moves the pool from where it is (any other failure stops the run).
    ``moves`` lists each swap's (step, block, pool, target ``sqrtPriceX96``): the V3 pools
    land on it exactly, the V2 pair's reserve ratio within one unit of input (when no
    outside trade follows in the same block).
    """

    def __init__(
        self,
        chain: DevChain,
        seed: int,
        accounts: int,
        steps: int = STEPS,
        pace_s: float = 0.0,
        on_block: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= pace_s < math.inf:
            raise ConfigError(f"pace_s must be >= 0 s; got {pace_s!r}")
        self.url = chain.rpc_url
        self.deployed = chain.deployed
        self.rng = np.random.default_rng([seed, 2])
        self.steps = steps
        self.path, self.crash_at = price_path(seed, steps)
        self.pace_s = pace_s
        self.on_block = on_block
        self.instruments = instruments(chain.deployed.tokens[UNDERLYING])
        self.accounts = [a.lower() for a in rpc(self.url, "eth_accounts")][2 : 2 + accounts]
        registry = Registry.from_config(chain.cfg.oracle)
        self.sources: dict[str, PoolSource] = {}
        for address in chain.deployed.pools:
            source = registry.by_address[address]
            assert isinstance(source, PoolSource)
            self.sources[address] = source
        self.states = read_states(self.url, self.deployed.uniswap)
        """Every pool's state at the latest block the scenario read it at."""
        self.moves: list[tuple[int, int, str, int]] = []
        w3 = Web3()
        self.venue = bind(w3, "MarginVenue", chain.deployed.venue)
        self.feed = bind(w3, "TestAggregator", chain.deployed.feed)
        latest = rpc(self.url, "eth_getBlockByNumber", ["latest", False])
        self.block = quantity(latest["number"], "number")
        self.block_ts = quantity(latest["timestamp"], "timestamp")  # the deployment's last
        self.pending: list[str] = []
        self.swaps: dict[str, str] = {}
        """The pending swaps' transaction hashes -> their pools."""
        self.counts: dict[str, int] = {}
        self.others = 0
        """Transactions in the scenario's blocks that it did not send (the executor's)."""
        self.usdc: dict[str, int] = {}
        self.feed_price = 0.0
        self.feed_step = 0
        self.next_block_at = 0.0

    def run(self) -> None:
        started = time.monotonic()
        set_automine(self.url, False)
        for inst in self.instruments:
            args = [self._token(UNDERLYING), inst.kind]
            self._send(
                "listed", self.deployed.deployer, self.venue, "list",
                [*args, _e18(inst.strike), inst.expiry],
            )  # fmt: skip
        self._move_prices(0)
        self.mine()
        log.info("listed %d instruments; prices set", len(self.instruments))
        for account in self.accounts:
            if len(self.pending) > _MAX_TXS_PER_BLOCK - 2:  # a deposit sends up to 2
                self.mine()
            self._deposit(account)
        self.mine()
        log.info("deposits for %d accounts", len(self.accounts))
        trades_per_step = TRADES_PER_ACCOUNT * len(self.accounts) / self.steps
        for step in range(1, self.steps + 1):
            self._move_prices(step)
            room = _MAX_TXS_PER_BLOCK - _PRICE_TXS
            for _ in range(min(int(self.rng.poisson(trades_per_step)), room)):
                self._trade(step)
            self.mine()
            if step % 50 == 0 or step in (self.crash_at, self.crash_at + CRASH_BLOCKS):
                log.info(
                    "step %d/%d: ETH %.2f USD, block %d, %d transactions, %d others",
                    step, self.steps, self.path[step], head(self.url), sum(self.counts.values()),
                    self.others,
                )  # fmt: skip
        self._withdraw()
        log.info(
            "scenario done in %.1f s: blocks up to %d, crash at step %d; %s; %d others",
            time.monotonic() - started, head(self.url), self.crash_at,
            ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())), self.others,
        )  # fmt: skip

    def _move_prices(self, step: int) -> None:
        """Swap the pools to the path (each with its own noise); answer the feed if due."""
        price = float(self.path[step])
        self.block = head(self.url)  # the scenario's last, or one mined by someone else
        self.states = read_swapped(self.url, self.states, block=self.block)
        for state in self.states:
            address = state.address
            chance = V2_SWAP_PROB if isinstance(state, V2PoolState) else V3_SWAP_PROB
            if step == 0 or self.rng.random() < chance:
                target = sqrt_price_x96(self._noisy(price), self.sources[address])
                self._swap_to(step, state, target)
        moved = step > 0 and abs(price / self.feed_price - 1) >= FEED_DEVIATION
        if step == 0 or moved or step - self.feed_step >= FEED_HEARTBEAT_BLOCKS:
            self._send("feed_answers", self.deployed.deployer, self.feed, "update",
                       [feed_answer(round(price, 8))])  # fmt: skip
            self.feed_price, self.feed_step = price, step

    def _swap_to(self, step: int, state: V2PoolState | V3PoolState, target: int) -> None:
        """Send the swap that moves the pool from ``state`` (at the latest block) to
        ``target`` (``sqrtPriceX96``) in the next block, through the caller, the deployer
        paying and receiving."""
        block, deployer = self.block + 1, self.deployed.deployer
        if isinstance(state, V3PoolState):
            move = v3_swap_to_price(state, target)
            if move is None:
                return
            data = v3_swap_calldata(state.address, move.zero_for_one, move.amount_in, target,
                                    deployer)  # fmt: skip
            what = "v3_swaps"
        else:
            v2_move = v2_swap_to_price(state, target)
            if v2_move is None:
                return
            data = v2_swap_calldata(state.address, v2_move.zero_for_one, v2_move.amount_in,
                                    v2_move.amount_out, deployer)  # fmt: skip
            what = "v2_swaps"
        caller = self.deployed.uniswap.caller
        tx_hash = send_transaction(self.url, deployer, caller, data, gas=_SWAP_GAS)
        self.pending.append(tx_hash)
        self.swaps[tx_hash] = state.address
        self.counts[what] = self.counts.get(what, 0) + 1
        self.moves.append((step, block, state.address, target))

    def _noisy(self, price: float) -> float:
        return price * math.exp(self.rng.normal(0.0, SOURCE_NOISE))

    def _deposit(self, account: str) -> None:
        usdc = int(self.rng.integers(10_000, 500_000)) * 10**6
        self.usdc[account] = usdc
        self._send("deposits", account, self.venue, "deposit", [self._token("USDC"), usdc])
        if self.rng.random() < 0.3:
            weth = int(self.rng.integers(1, 50)) * E18
            self._send("deposits", account, self.venue, "deposit", [self._token("WETH"), weth])

    def _trade(self, step: int) -> None:
        account = self.accounts[int(self.rng.integers(len(self.accounts)))]
        roll = self.rng.random()
        if roll < 0.1:
            inst = self.instruments[0]  # spot
        elif roll < 0.5:
            inst = self.instruments[1]  # perp
        else:
            inst = self.instruments[int(self.rng.integers(2, len(self.instruments)))]
        spot = float(self.path[step])
        if not inst.kind.is_option:
            size = round(float(self.rng.uniform(0.1, 20.0)), 2)
            price = spot * (1 + float(self.rng.normal(0.0, 0.0005)))
        else:
            size = float(self.rng.integers(1, 20))
            years = (inst.expiry - self.block_ts) / YEAR_S
            price = max(option_price(spot, inst.strike, years, inst.kind), 0.01)
        size = size if self.rng.random() < 0.5 else -size
        args = [inst.id, _e18(size), _e18(price), NO_ORDER]
        self._send("trades", account, self.venue, "trade", args)

    def _withdraw(self) -> None:
        """Some accounts withdraw half of their USDC, in the blocks after the last step."""
        count = max(1, int(len(self.accounts) * WITHDRAW_FRACTION))
        for index in self.rng.choice(len(self.accounts), size=count, replace=False):
            if len(self.pending) >= _MAX_TXS_PER_BLOCK:
                self.mine()
            account = self.accounts[int(index)]
            amount = self.usdc[account] // 2
            self._send("withdrawals", account, self.venue, "withdraw",
                       [self._token("USDC"), amount])  # fmt: skip
        self.mine()

    def _token(self, symbol: str) -> str:
        return Web3.to_checksum_address(self.deployed.tokens[symbol])

    def _send(self, what: str, sender: str, contract: Any, fn: str, args: list[Any]) -> None:
        data = contract.encode_abi(fn, args=args)
        to = str(contract.address)
        self.pending.append(send_transaction(self.url, sender, to, data, gas=_CALL_GAS))
        self.counts[what] = self.counts.get(what, 0) + 1

    def mine(self) -> None:
        """Mine what the pool holds into one block, 12 s after the last and at least
        ``pace_s`` after it on the wall clock; each of the scenario's transactions must be
        in it and succeed (others may be there too)."""
        time.sleep(max(0.0, self.next_block_at - time.monotonic()))
        self.block_ts += BLOCK_TIME_S
        mine(self.url, timestamp=self.block_ts)
        self.block = head(self.url)
        self.next_block_at = time.monotonic() + self.pace_s
        raw = rpc(self.url, "eth_getBlockReceipts", ["latest"])
        receipts = {r.transactionHash: r for r in msgspec.convert(raw, list[_Receipt])}
        missing = [h for h in self.pending if h not in receipts]
        failed = [h for h in self.pending if h in receipts and receipts[h].status != "0x1"]
        outrun = [h for h in failed if self._outrun(h, receipts)]
        if outrun:
            lost = {(self.block, self.swaps[h]) for h in outrun}
            self.moves = [m for m in self.moves if (m[1], m[2]) not in lost]
            self.counts["outrun_swaps"] = self.counts.get("outrun_swaps", 0) + len(outrun)
            log.info("block %d: %d swaps outrun by another's trade on their pool before "
                     "them; the next block moves the pool from where it is", self.block,
                     len(outrun))  # fmt: skip
            failed = [h for h in failed if h not in outrun]
        if missing or failed:
            msg = (
                f"block at {self.block_ts}: of {len(self.pending)} transactions sent, "
                f"{len(missing)} not included (first {missing[:1]}), {len(failed)} failed "
                f"(first {failed[:1]})"
            )
            raise RuntimeError(msg)
        self.others += len(receipts) - len(self.pending)
        self.pending, self.swaps = [], {}
        if self.on_block is not None:
            self.on_block()

    def _outrun(self, tx_hash: str, receipts: dict[str, _Receipt]) -> bool:
        """Whether ``tx_hash``, a failed swap of the scenario, was outrun: a transaction not
        the scenario's traded on its pool before it in the block (its swap was sized from
        the state before that trade, and the pair refuses it, ``UniswapV2: K``, or the pool
        is already past its price limit, ``SPL``)."""
        pool = self.swaps.get(tx_hash)
        index = int(receipts[tx_hash].transactionIndex, 16)
        return pool is not None and any(
            int(r.transactionIndex, 16) < index and any(g.address.lower() == pool for g in r.logs)
            for h, r in receipts.items()
            if h not in self.swaps
        )


class _Log(msgspec.Struct, frozen=True):
    address: str


class _Receipt(msgspec.Struct, frozen=True):
    """The fields of a block's receipt that the scenario checks."""

    transactionHash: str
    transactionIndex: str
    status: str
    logs: list[_Log]


def head(rpc_url: str) -> int:
    """The node's latest block number."""
    return quantity(rpc(rpc_url, "eth_blockNumber"), "blockNumber")
