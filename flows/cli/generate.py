"""Synthetic recordings of ``chain.logs`` and ``dex.quotes``, with known prices and faults.

``generate`` is pure: no I/O and no clock; the same ``GenerateParams`` give the same
messages, byte for byte. It simulates a jump-diffusion USD price path per asset on a 1 s
grid and writes what the chain and the quote feeds would show:

- Uniswap V3 ``Swap`` logs (``sqrtPriceX96`` and ``liquidity`` for the pool's price, token
  decimals and token0/token1 order), Uniswap V2 ``Sync`` and ``Swap`` logs, and Chainlink
  ``AnswerUpdated``/``NewRound`` logs (0.5 % deviation or 3600 s heartbeat, 8 decimals);
- ERC-20 ``Transfer`` logs of the (unregistered) token contracts;
- quotes from several sources, about one per ``quote_interval_ms`` per source and asset;
- the faults named in ``FAULTS``, each one switchable.

Blocks sit on the Ethereum mainnet slot grid (block 17173049 at 1683029999 s), so real
mainnet logs passed as ``extra_logs`` fit in with consistent numbers and times. Every
message's kind is returned beside it, so tests know what each one should decode to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from connectors.partitions import partition_of
from operators import abi
from operators.config import (
    Config,
    OracleConfig,
    SourceConfig,
    SourceKind,
    TokenConfig,
    TopicsConfig,
    config_toml,
)
from operators.model import RawMessage
from operators.pool_math import sqrt_price_x96, v2_reserves, v3_liquidity, v3_tick
from operators.units import YEAR_S

REF_BLOCK = 17_173_049
"""A mainnet block number; with ``REF_BLOCK_TS_S`` it anchors the synthetic block grid."""
REF_BLOCK_TS_S = 1_683_029_999
"""The timestamp of ``REF_BLOCK``, seconds since the epoch."""
CHAIN_ID = 1

FAULTS = frozenset(
    {
        "manipulated_pool",  # one V3 pool's price pushed +30 % for a stretch of the run
        "stale_source",  # the last quote source stops half-way through the run
        "malformed_json",  # truncated JSON, on both topics
        "not_utf8",  # a message encoded as UTF-16, on both topics
        "bad_data_length",  # a registered source's log one data word short
        "bad_quantity",  # blockNumber as a decimal string, or logIndex "0xZZ"
        "unexpected_topic",  # a registered source's log with another contract kind's topic0
        "invalid_quote",  # a quote with bid > ask
        "late",  # a pool log delivered 300-480 s after its block
        "reorg",  # a block's logs retracted (removed: true), then re-sent under a new hash
    }
)
"""The names of the faults ``generate`` can inject."""

MANIPULATION = 1.30
"""Factor applied to the manipulated pool's price during its stretch."""
FEED_DEVIATION = 0.005
"""A Chainlink feed updates when the price has moved this fraction since its last answer..."""
FEED_HEARTBEAT_S = 3600
"""...or when its last answer is this many seconds old."""
FEED_DECIMALS = 8

_NEW_ROUND = next(k for k, v in abi.CHAINLINK_EVENTS.items() if v.startswith("NewRound("))
_V2_SWAP = next(k for k, v in abi.V2_PAIR_EVENTS.items() if v.startswith("Swap("))
_FAULTS_PER_TOPIC = 2
"""How many messages each malformed-message fault injects on each topic it applies to."""
_LATE_COUNT = 4
_LATE_DELAY_S = (300.0, 480.0)
_V3_QUOTES = ("USDC", "WETH", "USDT")
"""Quote tokens of an asset's V3 pools, in turn (skipping the asset's own token)."""
_V2_QUOTES = ("USDT", "USDC", "WETH")
"""Quote tokens of an asset's V2 pairs, in turn."""
_PEGGED = frozenset({"USD", "USDC", "USDT"})
_PRICED_KINDS = frozenset({"v3_swap", "v2_sync", "feed_answer"})
_PLAIN_KINDS = _PRICED_KINDS | {"v2_swap", "feed_round", "transfer"}
"""Kinds of the valid synthetic logs; the reorged block holds only these."""
_ROUTER_V3 = "0x68b3465833fb72a70ecdf485e0e4c7bd8665fc45"  # Uniswap SwapRouter02
_ROUTER_V2 = "0x7a250d5630b4cf539739df2c5dacb4c659f2488d"  # Uniswap V2 Router02
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Token:
    """An ERC-20 token on mainnet: its address, decimals and the oracle asset it stands for."""

    symbol: str
    address: str
    decimals: int
    asset: str


TOKENS: dict[str, Token] = {
    t.symbol: t
    for t in (
        Token("USDC", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6, "USDC"),
        Token("USDT", "0xdac17f958d2ee523a2206206994597c13d831ec7", 6, "USDT"),
        Token("WETH", "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", 18, "ETH"),
        Token("WBTC", "0x2260fac5e5542a773aa44fbcfedf7c193bc2c599", 8, "BTC"),
        Token("LINK", "0x514910771af9ca656af840dff83e8264ecf986ca", 18, "LINK"),
    )
}


@dataclass(frozen=True, kw_only=True)
class AssetModel:
    """How one asset's price and markets are simulated.

    ``price`` is the USD level at the start (about the 2023-05-02 12:00 UTC level), ``vol``
    the annualised diffusion volatility, ``jump_sd`` the standard deviation of a jump's
    log size, ``depth_usd`` the depth of its deepest pool in USD, ``quote_dp`` the decimal
    places of its quotes and ``quote_size`` a typical quote size in base units.
    """

    token: str
    price: float
    vol: float
    jump_sd: float
    depth_usd: float
    quote_dp: int
    quote_size: float


ASSETS: dict[str, AssetModel] = {
    "ETH": AssetModel(
        token="WETH",
        price=1_830.0,
        vol=0.60,
        jump_sd=0.02,
        depth_usd=60e6,
        quote_dp=2,
        quote_size=20.0,
    ),
    "BTC": AssetModel(
        token="WBTC",
        price=28_300.0,
        vol=0.50,
        jump_sd=0.02,
        depth_usd=30e6,
        quote_dp=2,
        quote_size=1.5,
    ),
    "LINK": AssetModel(
        token="LINK",
        price=6.95,
        vol=0.80,
        jump_sd=0.03,
        depth_usd=4e6,
        quote_dp=4,
        quote_size=3_000.0,
    ),
}

MAX_MINUTES = 10_080.0
"""The longest run generated (one week): every message is held in memory."""
_QUOTE_SOURCES = (
    # name, quote symbol, half-spread (fraction of mid)
    ("binance", "USDT", 0.5e-4),
    ("coinbase", "USD", 1.0e-4),
    ("kraken", "USD", 1.5e-4),
    ("okx", "USDT", 1.0e-4),
    ("bybit", "USDT", 1.0e-4),
    ("bitstamp", "USD", 2.0e-4),
)


@dataclass(frozen=True, kw_only=True)
class GenerateParams:
    """What to generate. Times are ms since the epoch; rates are per block of the chain."""

    seed: int = 7
    start_ms: int = 1_683_028_800_000
    """Start of the run (default 2023-05-02 12:00:00 UTC), ms."""
    minutes: float = 60.0
    """Length of the run, minutes, at most ``MAX_MINUTES``."""
    assets: tuple[str, ...] = ("ETH", "BTC", "LINK")
    """Assets to simulate, from ``ASSETS``."""
    start_prices: dict[str, float] = field(default_factory=dict)
    """USD prices at the start overriding ``ASSETS`` (e.g. to match merged real logs)."""
    v3_pools_per_asset: int = 2
    v2_pools_per_asset: int = 1
    swaps_per_block: float = 2.0
    """Mean swaps per block in an asset's first V3 pool; pool j of a kind gets 1/(j+1) of
    it, and V2 pairs a quarter of that."""
    transfers_per_block: float = 2.0
    """Mean ERC-20 Transfer logs (unregistered contracts) per block."""
    jumps_per_hour: float = 1.0
    """Mean price jumps per hour and asset."""
    quote_sources: int = 2
    """Quote sources on ``dex.quotes``, 0..6; each quotes every asset."""
    quote_interval_ms: int = 1000
    """Mean time between two quotes of one source and asset, ms."""
    block_time_s: int = 12
    partitions: int = 2
    faults: frozenset[str] = FAULTS
    """Faults to inject, a subset of ``FAULTS``; empty for a clean recording."""
    chain_logs_topic: str = "chain.logs"
    dex_quotes_topic: str = "dex.quotes"
    extra_logs: tuple[dict[str, Any], ...] = ()
    """JSON-RPC logs (with ``blockTimestamp``) merged in event-time order and published 1 s
    after their block; no synthetic logs are made in their blocks."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.assets) - set(ASSETS))
        if unknown or not self.assets or len(set(self.assets)) != len(self.assets):
            msg = f"assets must be distinct names from {sorted(ASSETS)}; got {self.assets!r}"
            raise ValueError(msg)
        if not set(self.start_prices) <= set(self.assets) or not all(
            p > 0 for p in self.start_prices.values()
        ):
            msg = f"start_prices must map generated assets to prices > 0; got {self.start_prices!r}"
            raise ValueError(msg)
        if not self.faults <= FAULTS:
            msg = f"faults must be a subset of {sorted(FAULTS)}; got {sorted(self.faults)!r}"
            raise ValueError(msg)
        if not 0 <= self.quote_sources <= len(_QUOTE_SOURCES):
            msg = f"quote_sources must be in 0..{len(_QUOTE_SOURCES)}; got {self.quote_sources!r}"
            raise ValueError(msg)
        checks = {
            "seed": self.seed >= 0,
            "minutes": 0 < self.minutes <= MAX_MINUTES,
            "v3_pools_per_asset": self.v3_pools_per_asset >= 0,
            "v2_pools_per_asset": self.v2_pools_per_asset >= 0,
            "swaps_per_block": self.swaps_per_block >= 0,
            "transfers_per_block": self.transfers_per_block >= 0,
            "jumps_per_hour": self.jumps_per_hour >= 0,
            "quote_interval_ms": self.quote_interval_ms > 0,
            "block_time_s": self.block_time_s > 0,
            "partitions": self.partitions >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                msg = f"{name} is out of range; got {getattr(self, name)!r}"
                raise ValueError(msg)
        if self.chain_logs_topic == self.dex_quotes_topic:
            msg = f"the two topics must differ; got {self.chain_logs_topic!r} twice"
            raise ValueError(msg)

    @property
    def end_ms(self) -> int:
        """End of the run (exclusive), ms."""
        return self.start_ms + round(self.minutes * 60_000)


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """Where the faults that are not single messages were put (``None``: not injected).

    ``manipulated_ms`` and ``stale_from_ms`` are event times in ms; ``reorg_block`` is the
    number of the block that was replaced.
    """

    manipulated_pool: str | None
    manipulated_ms: tuple[int, int]
    stale_source: str | None
    stale_from_ms: int
    reorg_block: int | None


@dataclass(frozen=True, eq=False, kw_only=True)
class Generated:
    """A generated recording.

    ``messages`` are sorted by publication time, so each (topic, partition) is in offset
    order; ``kinds[i]`` names what ``messages[i]`` is (``v3_swap``, ``quote``, a fault name,
    ...). ``counts`` counts messages by kind; ``faults`` counts each fault of ``FAULTS``:
    messages injected, except ``stale_source`` (quotes withheld) and ``reorg`` (logs
    retracted, each also re-sent). ``prices[asset]`` is the USD path, one value per second
    from ``start_ms``.
    """

    messages: list[RawMessage]
    kinds: list[str]
    config: Config
    faults: dict[str, int]
    counts: dict[str, int]
    prices: dict[str, np.ndarray]
    start_ms: int
    plan: FaultPlan

    @property
    def config_toml(self) -> str:
        """``config`` as the text of a configuration file."""
        return config_toml(self.config)

    def price_at(self, asset: str, ts_ms: int) -> float:
        """The USD price of a generated asset at ``ts_ms`` (within the run), 1 for a peg."""
        if asset in _PEGGED:
            return 1.0
        return float(self.prices[asset][(ts_ms - self.start_ms) // 1000])


@dataclass(frozen=True, kw_only=True)
class _Pool:
    address: str
    kind: SourceKind  # "uniswap_v3" or "uniswap_v2"
    base: str  # the asset priced
    quote: Token
    token0: Token
    token1: Token
    price0: float  # base in quote (whole tokens) at the start
    depth_quote: float  # twice the quote-side reserve at the start, whole quote tokens
    noise: float  # standard deviation of the log price around the path
    rate: float  # mean swaps per block

    @property
    def base_is_token0(self) -> bool:
        return self.token0.asset == self.base

    @property
    def decimals0(self) -> int:
        return self.token0.decimals

    @property
    def decimals1(self) -> int:
        return self.token1.decimals

    @property
    def base_token(self) -> Token:
        return self.token0 if self.base_is_token0 else self.token1

    def liquidity(self) -> int:
        """The V3 liquidity whose depth is ``depth_quote`` at ``price0``."""
        return v3_liquidity(self.depth_quote, sqrt_price_x96(self.price0, self), self)


@dataclass(frozen=True)
class _Feed:
    address: str
    asset: str
    transmitter: str


_Source = _Pool | _Feed
_LogSpec = tuple[str, list[str], str, str]
"""(address, topics, data, kind) of one log."""


@dataclass(slots=True)
class _Tx:
    block: int  # index in the block table
    order: float  # position within the block, in [0, 1)
    logs: list[_LogSpec]
    variant: int = 0  # which form of a fault to write


class _Log(msgspec.Struct, frozen=True, kw_only=True):
    """A log as ``eth_getLogs`` returns it, plus ``blockTimestamp`` and ``chainId``."""

    address: str
    topics: list[str]
    data: str
    blockNumber: int | str
    blockHash: str
    transactionHash: str
    transactionIndex: int | str
    logIndex: int | str
    removed: bool
    blockTimestamp: int | str
    chainId: int | str


class _Quote(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    base: str
    quote: str
    bid: str | float
    ask: str | float
    bid_size: str | float
    ask_size: str | float
    ts: int


@dataclass(frozen=True)
class _Blocks:
    numbers: np.ndarray  # block numbers
    ts_s: np.ndarray  # block timestamps, s
    sec: np.ndarray  # index into the 1 s price grid
    delay_ms: np.ndarray  # how long after its timestamp a block's logs are published, ms


_Entry = tuple[int, int, int, int, bytes, bytes, int, str]
"""(publish ms, tier, sequence, topic index, key, value, timestamp ms, kind); sorting
entries orders them by publication. Tier 0 goes before a block's logs (reorg notices),
tier 2 after them (late deliveries)."""


def generate(params: GenerateParams) -> Generated:
    """Generate a recording of the two input topics; see the module docstring."""
    paths = _paths(params)
    extra = sorted(params.extra_logs, key=_extra_order)
    blocks = _blocks(params, {abi.quantity(log["blockNumber"], "blockNumber") for log in extra})
    pools = _pools(params, paths)
    feeds = [_Feed(_address("chainlink", a), a, _address("transmitter", a)) for a in params.assets]
    plan = _plan(params, pools)

    txs: list[_Tx] = []
    for pool in pools:
        txs += _pool_txs(params, pool, blocks, paths, plan)
    for feed in feeds:
        txs += _feed_txs(params, feed, blocks, paths)
    txs += _transfer_txs(params, blocks)
    txs += _chain_fault_txs(params, [*pools, *feeds], blocks, paths)
    txs.sort(key=lambda tx: (tx.block, tx.order))
    rows = _rows(params, txs, blocks)

    seq = itertools.count()
    reorg = _reorg_block(rows, blocks) if "reorg" in params.faults else None
    late = _late_rows(params, rows, blocks, reorg) if "late" in params.faults else {}
    entries: list[_Entry] = []
    for i, (b, log, kind) in enumerate(rows):
        p, tier, kind = (late[i], 2, "late") if i in late else (b, 1, kind)
        publish = int(blocks.ts_s[p]) * 1000
        timestamp = publish + int(blocks.delay_ms[p])
        value = _encode(log, kind)
        entries.append((publish, tier, next(seq), 0, log.address.encode(), value, timestamp, kind))
    if reorg is not None:
        plan = dataclasses.replace(plan, reorg_block=int(blocks.numbers[reorg]))
        entries += _reorg_entries(params, rows, blocks, reorg, seq)
    for log_dict in extra:
        publish = abi.quantity(log_dict["blockTimestamp"], "blockTimestamp") * 1000
        key = str(log_dict["address"]).lower().encode()
        value = _encoder.encode(log_dict)
        entries.append((publish, 1, next(seq), 0, key, value, publish + 1000, "extra"))
    withheld, quotes = _quote_entries(params, paths, plan, seq)
    entries += quotes
    messages, kinds = _messages(params, entries)

    counts = dict(sorted(Counter(kinds).items()))
    faults = {name: counts.get(name, 0) for name in sorted(FAULTS)}
    faults["stale_source"] = withheld
    faults["reorg"] = counts.get("reorg_removed", 0)
    return Generated(
        messages=messages,
        kinds=kinds,
        config=_config(params, pools, feeds),
        faults=faults,
        counts=counts,
        prices=paths,
        start_ms=params.start_ms,
        plan=plan,
    )


def _messages(params: GenerateParams, entries: list[_Entry]) -> tuple[list[RawMessage], list[str]]:
    """Order entries by publication; give each its partition (crc32 of the key) and offset."""
    entries.sort()
    topics = (params.chain_logs_topic, params.dex_quotes_topic)
    next_offset: dict[tuple[int, int], int] = {}
    messages: list[RawMessage] = []
    kinds: list[str] = []
    for _publish, _tier, _seq, t, key, value, timestamp, kind in entries:
        part = partition_of(key.decode(), params.partitions)
        offset = next_offset.get((t, part), 0)
        next_offset[t, part] = offset + 1
        messages.append(RawMessage(topics[t], part, offset, timestamp, key, value))
        kinds.append(kind)
    return messages, kinds


def _plan(params: GenerateParams, pools: list[_Pool]) -> FaultPlan:
    """Pick the manipulated pool (the first asset's last V3 pool) and the stale source."""
    start, span = params.start_ms, params.end_ms - params.start_ms
    manipulated = [
        p.address for p in pools if p.kind == "uniswap_v3" and p.base == params.assets[0]
    ]
    manipulate = "manipulated_pool" in params.faults and bool(manipulated)
    stale = "stale_source" in params.faults and params.quote_sources > 0
    return FaultPlan(
        manipulated_pool=manipulated[-1] if manipulate else None,
        manipulated_ms=(start + span * 40 // 100, start + span * 55 // 100),
        stale_source=_QUOTE_SOURCES[params.quote_sources - 1][0] if stale else None,
        stale_from_ms=start + span // 2,
        reorg_block=None,
    )


def _paths(params: GenerateParams) -> dict[str, np.ndarray]:
    """USD price per asset on a 1 s grid from ``start_ms``: a log random walk with jumps."""
    n = (params.end_ms - params.start_ms - 1) // 1000 + 1
    paths: dict[str, np.ndarray] = {}
    for asset in params.assets:
        model = ASSETS[asset]
        rng = _rng(params.seed, "path", asset)
        steps = rng.normal(0.0, model.vol / math.sqrt(YEAR_S), n - 1)
        jumps = rng.poisson(params.jumps_per_hour / 3600, n - 1)
        steps += np.sqrt(jumps) * rng.normal(0.0, model.jump_sd, n - 1)
        start = params.start_prices.get(asset, model.price)
        paths[asset] = start * np.exp(np.concatenate(([0.0], np.cumsum(steps))))
    return paths


def _pool_price(pool: _Pool, paths: dict[str, np.ndarray], sec: np.ndarray) -> np.ndarray:
    """The path's price of ``pool.base`` in ``pool.quote`` at grid indexes ``sec``."""
    if pool.quote.asset in _PEGGED:
        return paths[pool.base][sec]
    return paths[pool.base][sec] / paths[pool.quote.asset][sec]


def _blocks(params: GenerateParams, skip: set[int]) -> _Blocks:
    """The run's blocks on the mainnet slot grid, less the blocks numbered in ``skip``."""
    step_ms, ref_ms = params.block_time_s * 1000, REF_BLOCK_TS_S * 1000
    first = REF_BLOCK - (ref_ms - params.start_ms) // step_ms
    stop = REF_BLOCK - (ref_ms - params.end_ms) // step_ms
    if first < 1:
        msg = f"start_ms must come after block 1 of the grid; got {params.start_ms!r}"
        raise ValueError(msg)
    numbers = np.array([n for n in range(first, stop) if n not in skip], dtype=np.int64)
    ts_s = REF_BLOCK_TS_S + (numbers - REF_BLOCK) * params.block_time_s
    delay_ms = _rng(params.seed, "delay").integers(300, 2000, len(numbers))
    return _Blocks(numbers, ts_s, (ts_s * 1000 - params.start_ms) // 1000, delay_ms)


def _pools(params: GenerateParams, paths: dict[str, np.ndarray]) -> list[_Pool]:
    """Each asset's V3 pools, then its V2 pairs, quoted in turn in USDC, USDT and WETH."""
    pools: list[_Pool] = []
    kinds: tuple[tuple[SourceKind, int, tuple[str, ...], float, float], ...] = (
        ("uniswap_v3", params.v3_pools_per_asset, _V3_QUOTES, 1.0, 2e-4),
        ("uniswap_v2", params.v2_pools_per_asset, _V2_QUOTES, 0.25, 5e-4),
    )
    for asset in params.assets:
        model = ASSETS[asset]
        token = TOKENS[model.token]
        for kind, count, quotes, share, noise in kinds:
            usable = [
                TOKENS[q] for q in quotes
                if q != token.symbol and (q != "WETH" or "ETH" in params.assets)
            ]  # fmt: skip
            for j in range(count):
                quote = usable[j % len(usable)]
                quote_usd = 1.0 if quote.asset in _PEGGED else float(paths[quote.asset][0])
                token0, token1 = sorted((token, quote), key=lambda t: t.address)
                pools.append(
                    _Pool(
                        address=_address(kind, asset, quote.symbol, str(j)),
                        kind=kind,
                        base=asset,
                        quote=quote,
                        token0=token0,
                        token1=token1,
                        price0=float(paths[asset][0]) / quote_usd,
                        depth_quote=model.depth_usd * share / (j + 1) / quote_usd,
                        noise=noise * (1 + j / 2),
                        rate=params.swaps_per_block * share / (j + 1),
                    )
                )
    return pools


def _pool_txs(
    params: GenerateParams,
    pool: _Pool,
    blocks: _Blocks,
    paths: dict[str, np.ndarray],
    plan: FaultPlan,
) -> list[_Tx]:
    """A pool's swaps: a Poisson number per block, priced at the path with a little noise."""
    rng = _rng(params.seed, "pool", pool.address)
    b = np.repeat(np.arange(len(blocks.numbers)), rng.poisson(pool.rate, len(blocks.numbers)))
    n = len(b)
    sec = blocks.sec[b]
    price = _pool_price(pool, paths, sec) * np.exp(rng.normal(0.0, pool.noise, n))
    ts_ms = blocks.ts_s[b] * 1000
    lo, hi = plan.manipulated_ms
    manipulated = (ts_ms >= lo) & (ts_ms < hi) & (pool.address == plan.manipulated_pool)
    price = np.where(manipulated, price * MANIPULATION, price)
    size = rng.lognormal(math.log(pool.depth_quote * 1e-4), 1.0, n)  # quote tokens
    buy = np.diff(price, prepend=price[:1]) > 0  # the price rose: the base was bought
    order = rng.random(n)
    trader = rng.integers(0, len(_TRADERS), n)
    kind = "v3_swap" if pool.kind == "uniswap_v3" else "v2_sync"
    liquidity = pool.liquidity()
    return [
        _Tx(bi, oi, _swap_logs(
            pool, pi, si, ui, liquidity, _TRADERS[ti], "manipulated_pool" if mi else kind
        ))
        for bi, oi, pi, si, ui, ti, mi in zip(
            b.tolist(), order.tolist(), price.tolist(), size.tolist(), buy.tolist(),
            trader.tolist(), manipulated.tolist(), strict=True,
        )
    ]  # fmt: skip


def _swap_logs(
    pool: _Pool, price: float, size: float, buy: bool, liquidity: int, trader: str, kind: str
) -> list[_LogSpec]:
    """One swap of ``size`` quote tokens at ``price``: a V3 ``Swap``, or a V2 ``Sync`` and
    ``Swap``. ``kind`` labels the log that carries the price."""
    base_units = int(size / price * 10.0**pool.base_token.decimals)
    quote_units = int(size * 10.0**pool.quote.decimals)
    if pool.kind == "uniswap_v3":  # amounts are the pool's deltas: positive flows in
        base, quote = (-base_units, quote_units) if buy else (base_units, -quote_units)
        amount0, amount1 = (base, quote) if pool.base_is_token0 else (quote, base)
        sqrt_price = sqrt_price_x96(price, pool)
        words = (amount0, amount1, sqrt_price, liquidity, v3_tick(sqrt_price))
        topics = [abi.V3_SWAP, abi.address_topic(_ROUTER_V3), abi.address_topic(trader)]
        return [(pool.address, topics, abi.encode_data(*words), kind)]
    depth = pool.depth_quote * math.sqrt(price / pool.price0)  # x * y constant
    sync = v2_reserves(price, depth, pool)
    base_in, quote_in = (0, quote_units) if buy else (base_units, 0)
    base_out, quote_out = (base_units, 0) if buy else (0, quote_units)
    if pool.base_is_token0:
        swap = (base_in, quote_in, base_out, quote_out)
    else:
        swap = (quote_in, base_in, quote_out, base_out)
    swap_topics = [_V2_SWAP, abi.address_topic(_ROUTER_V2), abi.address_topic(trader)]
    return [
        (pool.address, [abi.V2_SYNC], abi.encode_data(*sync), kind),
        (pool.address, swap_topics, abi.encode_data(*swap), "v2_swap"),
    ]


def _feed_txs(
    params: GenerateParams, feed: _Feed, blocks: _Blocks, paths: dict[str, np.ndarray]
) -> list[_Tx]:
    """A feed's rounds: on a ``FEED_DEVIATION`` move or after ``FEED_HEARTBEAT_S``."""
    order = _rng(params.seed, "feed", feed.asset).random(len(blocks.numbers)).tolist()
    prices = paths[feed.asset][blocks.sec].tolist()
    txs: list[_Tx] = []
    answer, updated_at, round_id = 0, 0, 10_000
    for b, (price, ts) in enumerate(zip(prices, blocks.ts_s.tolist(), strict=True)):
        new = round(price * 10**FEED_DECIMALS)
        if (
            answer
            and abs(new / answer - 1) <= FEED_DEVIATION
            and ts - updated_at < FEED_HEARTBEAT_S
        ):
            continue
        answer, updated_at, round_id = new, ts, round_id + 1
        txs.append(_Tx(b, order[b], _feed_logs(feed, answer, round_id, ts)))
    return txs


def _feed_logs(feed: _Feed, answer: int, round_id: int, ts: int) -> list[_LogSpec]:
    """A Chainlink round: ``AnswerUpdated(current, roundId, updatedAt)`` and ``NewRound``."""
    answered = [abi.CHAINLINK_ANSWER_UPDATED, abi.int_topic(answer), abi.int_topic(round_id)]
    new_round = [_NEW_ROUND, abi.int_topic(round_id), abi.address_topic(feed.transmitter)]
    return [
        (feed.address, answered, abi.encode_data(ts), "feed_answer"),
        (feed.address, new_round, abi.encode_data(ts), "feed_round"),
    ]


def _transfer_txs(params: GenerateParams, blocks: _Blocks) -> list[_Tx]:
    """ERC-20 ``Transfer`` logs of the token contracts, which no source registers."""
    rng = _rng(params.seed, "transfers")
    per_block = rng.poisson(params.transfers_per_block, len(blocks.numbers))
    b = np.repeat(np.arange(len(blocks.numbers)), per_block)
    n = len(b)
    tokens = list(TOKENS.values())
    token = rng.integers(0, len(tokens), n).tolist()
    sender, receiver = rng.integers(0, len(_TRADERS), (2, n)).tolist()
    amount = rng.lognormal(math.log(100.0), 2.0, n).tolist()  # whole tokens
    txs: list[_Tx] = []
    for bi, oi, ti, si, ri, ai in zip(
        b.tolist(), rng.random(n).tolist(), token, sender, receiver, amount, strict=True
    ):
        t = tokens[ti]
        topics = [abi.TRANSFER, abi.address_topic(_TRADERS[si]), abi.address_topic(_TRADERS[ri])]
        value = abi.encode_data(int(ai * 10.0**t.decimals))
        txs.append(_Tx(bi, oi, [(t.address, topics, value, "transfer")]))
    return txs


def _chain_fault_txs(
    params: GenerateParams,
    sources: list[_Source],
    blocks: _Blocks,
    paths: dict[str, np.ndarray],
) -> list[_Tx]:
    """Malformed logs of registered sources, spread evenly over the run, last in their block.

    The JSON and UTF-8 faults are written by ``_encode`` and the quantity faults by
    ``_rows``; the data and topic faults are made here.
    """
    kinds = ("malformed_json", "not_utf8", "bad_data_length", "bad_quantity", "unexpected_topic")
    schedule = [(k, v) for k in kinds if k in params.faults for v in range(_FAULTS_PER_TOPIC)]
    nb = len(blocks.numbers)
    if nb == 0:
        return []
    txs: list[_Tx] = []
    for i, (kind, variant) in enumerate(schedule):
        b = (i + 1) * nb // (len(schedule) + 1)
        source = sources[i % len(sources)]
        sec = blocks.sec[b : b + 1]
        if isinstance(source, _Feed):
            answer = round(float(paths[source.asset][sec[0]]) * 10**FEED_DECIMALS)
            spec = _feed_logs(source, answer, 1, int(blocks.ts_s[b]))
            foreign = abi.TRANSFER
        else:
            price = float(_pool_price(source, paths, sec)[0])
            size = source.depth_quote * 1e-4
            spec = _swap_logs(source, price, size, True, source.liquidity(), _TRADERS[0], kind)
            foreign = abi.V2_SYNC if source.kind == "uniswap_v3" else abi.V3_SWAP
        address, topics, data, _kind = spec[0]
        if kind == "bad_data_length":
            data = data[:-64]
        elif kind == "unexpected_topic":
            topics = [foreign, *topics[1:]]
        txs.append(_Tx(b, 1.0, [(address, topics, data, kind)], variant))
    return txs


def _rows(params: GenerateParams, txs: list[_Tx], blocks: _Blocks) -> list[tuple[int, _Log, str]]:
    """Number the transactions and logs of each block: (block index, log, kind) in order.

    Quantities are hex strings, except in every fifth block, where they are integers.
    """
    rows: list[tuple[int, _Log, str]] = []
    current = -1
    number = tx_index = log_index = 0
    block_hash = ""
    as_int = False
    number_q: int | str = 0
    ts_q: int | str = 0
    chain_q: int | str = 0
    for tx in txs:
        if tx.block != current:
            current, tx_index, log_index = tx.block, 0, 0
            number = int(blocks.numbers[current])
            as_int = number % 5 == 0
            block_hash = _hash(f"{params.seed}:block:{number}")
            number_q = _quantity(number, as_int)
            ts_q = _quantity(int(blocks.ts_s[current]), as_int)
            chain_q = _quantity(CHAIN_ID, as_int)
        tx_hash = _hash(f"{params.seed}:tx:{number}:{tx_index}")
        for address, topics, data, kind in tx.logs:
            log = _Log(
                address=address,
                topics=topics,
                data=data,
                blockNumber=number_q,
                blockHash=block_hash,
                transactionHash=tx_hash,
                transactionIndex=_quantity(tx_index, as_int),
                logIndex=_quantity(log_index, as_int),
                removed=False,
                blockTimestamp=ts_q,
                chainId=chain_q,
            )
            if kind == "bad_quantity":
                log = (
                    msgspec.structs.replace(log, blockNumber=str(number))
                    if tx.variant == 0
                    else msgspec.structs.replace(log, logIndex="0xZZ")
                )
            rows.append((current, log, kind))
            log_index += 1
        tx_index += 1
    return rows


def _encode(record: _Log | _Quote, kind: str) -> bytes:
    """JSON bytes of a record, broken as the ``malformed_json`` and ``not_utf8`` faults say."""
    value = _encoder.encode(record)
    if kind == "malformed_json":
        return value[: len(value) // 2]
    if kind == "not_utf8":
        return value.decode().encode("utf-16")
    return value


def _reorg_block(rows: list[tuple[int, _Log, str]], blocks: _Blocks) -> int | None:
    """The block to replace: among 55-75 % of the run, the one with the fewest logs that has
    at least two priced logs and no fault."""
    nb = len(blocks.numbers)
    lo, hi = nb * 55 // 100, min(nb * 75 // 100, nb - 1)
    kinds: dict[int, list[str]] = {}
    for b, _log, kind in rows:
        if lo <= b < hi:
            kinds.setdefault(b, []).append(kind)
    candidates = [
        (len(k), b)
        for b, k in kinds.items()
        if set(k) <= _PLAIN_KINDS and sum(x in _PRICED_KINDS for x in k) >= 2
    ]
    return min(candidates)[1] if candidates else None


def _reorg_entries(
    params: GenerateParams,
    rows: list[tuple[int, _Log, str]],
    blocks: _Blocks,
    b: int,
    seq: Iterator[int],
) -> list[_Entry]:
    """Block ``b`` replaced when block ``b + 1`` arrives: its logs re-sent with
    ``removed: true``, then again under a new block hash."""
    new_hash = _hash(f"{params.seed}:reorg:{blocks.numbers[b]}")
    publish = int(blocks.ts_s[b + 1]) * 1000
    timestamp = publish + int(blocks.delay_ms[b + 1])
    logs = [log for rb, log, _kind in rows if rb == b]
    removed = [(msgspec.structs.replace(log, removed=True), "reorg_removed") for log in logs]
    again = [
        (msgspec.structs.replace(log, blockHash=new_hash), "reorg_replacement") for log in logs
    ]
    return [
        (publish, 0, next(seq), 0, log.address.encode(), _encode(log, kind), timestamp, kind)
        for log, kind in removed + again
    ]


def _late_rows(
    params: GenerateParams, rows: list[tuple[int, _Log, str]], blocks: _Blocks, reorg: int | None
) -> dict[int, int]:
    """Pool logs to deliver late: row index -> index of the block they are published with."""
    ts = blocks.ts_s.tolist()
    candidates = [
        i
        for i, (b, _log, kind) in enumerate(rows)
        if kind in ("v3_swap", "v2_sync") and b != reorg and ts[b] + _LATE_DELAY_S[1] <= ts[-1]
    ]
    rng = _rng(params.seed, "late")
    picks = rng.choice(len(candidates), min(_LATE_COUNT, len(candidates)), replace=False)
    late: dict[int, int] = {}
    for p in sorted(picks.tolist()):
        i = candidates[p]
        delay = rng.uniform(*_LATE_DELAY_S)
        late[i] = int(np.searchsorted(blocks.ts_s, ts[rows[i][0]] + delay))
    return late


def _quote_entries(
    params: GenerateParams, paths: dict[str, np.ndarray], plan: FaultPlan, seq: Iterator[int]
) -> tuple[int, list[_Entry]]:
    """Every source's quotes of every asset, and the quote faults: (quotes withheld, entries).

    Quote times are ``quote_interval_ms`` apart with up to a quarter of it of jitter, and
    are published 3-60 ms later.
    """
    start, span = params.start_ms, params.end_ms - params.start_ms
    interval = params.quote_interval_ms
    n = span // interval
    withheld = 0
    entries: list[_Entry] = []
    for s, (name, _symbol, half_spread) in enumerate(_QUOTE_SOURCES[: params.quote_sources]):
        key = name.encode()
        for asset in params.assets:
            model = ASSETS[asset]
            rng = _rng(params.seed, "quotes", name, asset)
            ts = start + np.arange(n) * interval + rng.integers(0, interval // 4 + 1, n)
            mid = paths[asset][(ts - start) // 1000] * np.exp(rng.normal(0.0, 1e-4, n))
            tick = 10.0**-model.quote_dp
            bid = np.round(mid * (1 - half_spread), model.quote_dp)
            ask = np.maximum(np.round(mid * (1 + half_spread), model.quote_dp), bid + tick)
            bid_size, ask_size = rng.lognormal(math.log(model.quote_size), 0.5, (2, n))
            delay = rng.integers(3, 61, n)
            for t, b, a, bs, as_, d in zip(
                ts.tolist(), bid.tolist(), ask.tolist(), bid_size.tolist(), ask_size.tolist(),
                delay.tolist(), strict=True,
            ):  # fmt: skip
                if name == plan.stale_source and t >= plan.stale_from_ms:
                    withheld += 1
                    continue
                value = _encoder.encode(_quote(s, asset, b, a, bs, as_, t))
                entries.append((t, 1, next(seq), 1, key, value, t + d, "quote"))

    kinds = ("malformed_json", "not_utf8", "invalid_quote")
    schedule = [k for k in kinds if k in params.faults for _ in range(_FAULTS_PER_TOPIC)]
    if params.quote_sources == 0:
        schedule = []
    for i, kind in enumerate(schedule):
        t = start + (i + 1) * span // (len(schedule) + 1)
        asset = params.assets[0]
        mid = float(paths[asset][(t - start) // 1000])
        bid, ask = mid * 0.9999, mid * 1.0001
        if kind == "invalid_quote":
            bid, ask = ask, bid
        q = _quote(0, asset, bid, ask, ASSETS[asset].quote_size, ASSETS[asset].quote_size, t)
        entries.append((t, 1, next(seq), 1, q.source.encode(), _encode(q, kind), t + 10, kind))
    return withheld, entries


def _quote(
    source: int, asset: str, bid: float, ask: float, bid_size: float, ask_size: float, ts: int
) -> _Quote:
    """Quote source number ``source``'s quote; odd-numbered sources write JSON numbers."""
    name, quote, _half_spread = _QUOTE_SOURCES[source]
    dp = ASSETS[asset].quote_dp
    if source % 2:
        return _Quote(
            source=name,
            base=asset,
            quote=quote,
            bid=round(bid, dp),
            ask=round(ask, dp),
            bid_size=round(bid_size, 4),
            ask_size=round(ask_size, 4),
            ts=ts,
        )
    return _Quote(
        source=name,
        base=asset,
        quote=quote,
        bid=f"{bid:.{dp}f}",
        ask=f"{ask:.{dp}f}",
        bid_size=f"{bid_size:.4f}",
        ask_size=f"{ask_size:.4f}",
        ts=ts,
    )


def _config(params: GenerateParams, pools: list[_Pool], feeds: list[_Feed]) -> Config:
    """The configuration declaring the generated tokens and sources, over the defaults."""
    tokens = {t.symbol: t for p in pools for t in (p.token0, p.token1)}
    sources = [
        SourceConfig(address=p.address, kind=p.kind, token0=p.token0.symbol, token1=p.token1.symbol)
        for p in pools
    ]
    sources += [
        SourceConfig(
            address=f.address, kind="chainlink", base=f.asset, quote="USD", decimals=FEED_DECIMALS
        )
        for f in feeds
    ]
    oracle = OracleConfig(
        tokens={
            s: TokenConfig(decimals=t.decimals, asset=t.asset) for s, t in sorted(tokens.items())
        },
        sources=sources,
    )
    topics = TopicsConfig(chain_logs=params.chain_logs_topic, dex_quotes=params.dex_quotes_topic)
    return Config(topics=topics, oracle=oracle)


def _extra_order(log: dict[str, Any]) -> tuple[int, int, int]:
    """(timestamp s, block, log index) of an extra log, for merging in event-time order."""
    return (
        abi.quantity(log["blockTimestamp"], "blockTimestamp"),
        abi.quantity(log["blockNumber"], "blockNumber"),
        abi.quantity(log["logIndex"], "logIndex"),
    )


def _rng(seed: int, *labels: str) -> np.random.Generator:
    """An independent random stream per purpose, so that one part changes nothing else."""
    return np.random.default_rng([seed, *(zlib.crc32(label.encode()) for label in labels)])


def _address(*labels: str) -> str:
    """A deterministic pseudo-address (independent of the seed) for a synthetic contract."""
    return "0x" + hashlib.sha256(":".join(("hedgeflow", *labels)).encode()).hexdigest()[:40]


def _hash(text: str) -> str:
    """A deterministic 32-byte pseudo-hash of ``text`` (a block or transaction hash)."""
    return "0x" + hashlib.blake2b(text.encode(), digest_size=32).hexdigest()


def _quantity(value: int, as_int: bool) -> int | str:
    """A JSON-RPC quantity: a hex string, or a plain integer as some producers write it."""
    return value if as_int else abi.encode_quantity(value)


_TRADERS = tuple(_address("trader", str(i)) for i in range(32))
"""Addresses that swap and transfer."""
