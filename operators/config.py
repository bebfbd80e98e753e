"""The configuration file's schema, its defaults and its validation.

The file is TOML. Every table rejects unknown keys, and every value is checked when the
file is loaded, so a misspelt key or a bad value stops the program at start-up with a
message naming both. See README.md, "Configuration", for every key.

No number anywhere in the file may be ``inf`` or ``nan`` (TOML allows both); every
duration (``*_s``) is at most ``bounds.DURATION_MAX_S`` (100 years), so that its ms are
an exact int; prices, strikes and weights keep to ``operators.bounds`` too.
"""

from __future__ import annotations

import math
import tomllib
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from operators.bounds import DURATION_MAX_S, EXPIRY_MAX_S, PRICE_MAX, PRICE_MIN, WEIGHT_MAX
from operators.liquidation import HedgeParams, LiquidationParams
from operators.margin import MarginParams
from operators.units import InstrumentKind

SourceKind = Literal["uniswap_v3", "uniswap_v2", "chainlink"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
MarginMode = Literal["portfolio", "standard"]


class ConfigError(ValueError):
    """The configuration names an unknown key or holds a bad value."""


class _Strict(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A configuration table: frozen, strict about its keys, written without its defaults.
    msgspec applies ``kw_only`` to a class's own fields only, so every table sets it too."""


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _durations(struct: msgspec.Struct, *keys: str, zero: bool = False) -> None:
    """Each of ``keys`` is a duration in seconds: > 0 (>= 0 with ``zero``), at most
    ``DURATION_MAX_S``."""
    for key in keys:
        value = getattr(struct, key)
        if value is None:
            continue
        if zero:
            _require(value >= 0, f"{key} must be >= 0; got {value!r}")
        else:
            _require(value > 0, f"{key} must be > 0; got {value!r}")
        _require(
            value <= DURATION_MAX_S,
            f"{key} must be <= {DURATION_MAX_S:g} s (100 years); got {value!r}",
        )


def _is_address(text: str) -> bool:
    return (
        len(text) == 42 and text.startswith("0x") and all(c in "0123456789abcdef" for c in text[2:])
    )


class TopicsConfig(_Strict, frozen=True, kw_only=True):
    """Topic names; rename them to fit an existing cluster."""

    chain_logs: str = "chain.logs"
    dex_quotes: str = "dex.quotes"
    oracle_prices: str = "oracle.prices"
    orders: str = "orders"
    fills: str = "fills"
    deadletter: str = "deadletter"

    def __post_init__(self) -> None:
        names = msgspec.structs.asdict(self)
        for key, name in names.items():
            _require(
                bool(name) and " " not in name, f"topics.{key} must be a topic name; got {name!r}"
            )
        _require(len(set(names.values())) == len(names), f"topic names must differ; got {names!r}")


class TokenConfig(_Strict, frozen=True, kw_only=True):
    """An ERC-20 token: its decimals and the oracle asset it stands for (WETH -> ETH)."""

    decimals: int
    asset: str

    def __post_init__(self) -> None:
        _require(0 <= self.decimals <= 36, f"decimals must be in 0..36; got {self.decimals!r}")
        _require(bool(self.asset), f"asset must be a symbol; got {self.asset!r}")


class SourceConfig(_Strict, frozen=True, kw_only=True):
    """A contract the oracle reads.

    Pools (``uniswap_v3``, ``uniswap_v2``) name ``token0`` and ``token1`` from ``tokens``;
    ``base`` picks the token priced (default: token0 when token1 is the quote, see
    ``Registry``). Feeds (``chainlink``) name ``base``, ``quote`` and ``decimals``.
    ``weight`` (quote units) overrides the depth-derived weight; ``max_age_s`` the
    oracle's.
    """

    address: str
    kind: SourceKind
    token0: str | None = None
    token1: str | None = None
    base: str | None = None
    quote: str | None = None
    decimals: int | None = None
    weight: float | None = None
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        _require(
            _is_address(self.address),
            f"address must be a lower-case 0x-prefixed 20-byte hex string; got {self.address!r}",
        )
        if self.kind == "chainlink":
            _require(
                self.base is not None and self.quote is not None and self.decimals is not None,
                f"a chainlink source needs base, quote and decimals; got {self.address!r}",
            )
            assert self.decimals is not None
            _require(0 <= self.decimals <= 36, f"decimals must be in 0..36; got {self.decimals!r}")
        else:
            _require(
                self.token0 is not None and self.token1 is not None,
                f"a {self.kind} source needs token0 and token1; got {self.address!r}",
            )
            _require(
                self.base is None or self.base in (self.token0, self.token1),
                f"base must be token0 or token1; got {self.base!r}",
            )
        _require(self.weight is None or self.weight > 0, f"weight must be > 0; got {self.weight!r}")
        _require(
            self.weight is None or self.weight <= WEIGHT_MAX,
            f"weight must be <= {WEIGHT_MAX:g}; got {self.weight!r}",
        )
        _durations(self, "max_age_s")


class OracleConfig(_Strict, frozen=True, kw_only=True):
    """The oracle: windows, robust aggregation, status and the jump circuit breaker."""

    window_s: float = 60.0
    """Event-time window length, seconds."""
    cadence: (
        Literal["window", "block"] | Annotated[float, msgspec.Meta(gt=0, le=DURATION_MAX_S)]
    ) = "window"
    """When prices are published: ``window`` (each window's close, plus its lateness),
    ``block`` (also at every block of ``chain.logs``, over the window trailing it) or a
    number of seconds (also every that many seconds); ``operators.ticks``."""
    allowed_lateness_s: float = 10.0
    """How far behind its partition's newest event an event may be and still count."""
    max_age_s: float = 300.0
    """A source's last observation counts for this long after its event time, seconds."""
    max_future_s: float = 60.0
    """An event time further after its message's broker timestamp is rejected, seconds."""
    max_quote_delay_s: float = 600.0
    """A quote ``ts`` further before its message's broker timestamp is rejected, seconds."""
    idle_timeout_s: float = 0.0
    """A partition this far behind the newest broker timestamp stops holding windows open
    (0: never), seconds."""
    min_sources: int = 3
    """Sources needed for status ``ok``; fewer gives ``degraded``, none ``stale``."""
    mad_k: float = 5.0
    """Drop sources farther than k scaled MADs from the median."""
    mad_floor_bps: float = 10.0
    """Lower bound on the MAD scale, basis points of the median price."""
    jump_threshold: float = 0.10
    """A move larger than this fraction of the last published price trips the breaker."""
    breaker_confirm_sources: int = 3
    """A jump is published at once when this many sources agree on it."""
    breaker_confirm_windows: int = 3
    """Else it is published once it has persisted this many windows in a row."""
    correction_windows: int = 60
    """Closed windows kept for corrections from ``removed`` logs."""
    assets: list[str] = msgspec.field(default_factory=list)
    """Assets published besides those the sources imply (e.g. quote-only assets)."""
    pegs: dict[str, str] = msgspec.field(
        default_factory=lambda: {"USD": "1", "USDC": "1", "USDT": "1"}
    )
    """USD value of quote assets taken at a fixed price, as decimal strings."""
    use_default_registry: bool = True
    """Include the built-in Ethereum mainnet tokens and pools."""
    tokens: dict[str, TokenConfig] = msgspec.field(default_factory=dict)
    sources: list[SourceConfig] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        _durations(self, "window_s", "max_age_s", "max_future_s", "max_quote_delay_s")
        _durations(self, "allowed_lateness_s", "idle_timeout_s", zero=True)
        for key in ("mad_k", "jump_threshold"):
            value = getattr(self, key)
            _require(value > 0, f"{key} must be > 0; got {value!r}")
        _require(self.mad_floor_bps >= 0, f"mad_floor_bps must be >= 0; got {self.mad_floor_bps!r}")
        for key in ("min_sources", "breaker_confirm_sources", "breaker_confirm_windows"):
            value = getattr(self, key)
            _require(value >= 1, f"{key} must be >= 1; got {value!r}")
        _require(
            self.correction_windows >= 0,
            f"correction_windows must be >= 0; got {self.correction_windows!r}",
        )
        _require(
            (self.window_s * 1000).is_integer(),
            f"window_s must be a whole number of ms; got {self.window_s!r}",
        )
        _require(
            isinstance(self.cadence, str) or (self.cadence * 1000).is_integer(),
            f"$.oracle.cadence must be a whole number of ms; got {self.cadence!r}",
        )
        for asset, peg in self.pegs.items():
            try:
                ok = Decimal(peg).is_finite() and PRICE_MIN <= Decimal(peg) <= PRICE_MAX
            except ArithmeticError:
                ok = False
            _require(
                ok,
                f"pegs.{asset} must be a positive decimal string, {PRICE_MIN:g}..{PRICE_MAX:g}; "
                f"got {peg!r}",
            )


class RunConfig(_Strict, frozen=True, kw_only=True):
    """Engine settings."""

    batch_size: int = 1000
    """Messages per batch read from a partition."""
    epoch_interval_s: float = 2.0
    """Bytewax epoch length: how often state is snapshotted and Parquet files are cut."""

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, f"batch_size must be >= 1; got {self.batch_size!r}")
        _durations(self, "epoch_interval_s")


class ChainConfig(_Strict, frozen=True, kw_only=True):
    """Following an EVM node (``hedgeflow ingest``)."""

    rpc_url: str = "http://127.0.0.1:8545"
    """The node's JSON-RPC endpoint (HTTP)."""
    chain_id: int = 0
    """Expected chain id; 0 accepts whatever the node reports."""
    confirmations: int = 0
    """Publish a block's logs once it is this deep (0: at once, reorgs are retracted)."""
    reorg_depth: int = 64
    """Recent blocks whose hashes and logs are kept to detect and retract reorgs."""
    backfill_blocks: int = 1000
    """A cold start without ``--from-block`` begins this many blocks below the head."""
    min_range: int = 1
    """Smallest ``eth_getLogs`` range, blocks."""
    max_range: int = 2000
    """Largest ``eth_getLogs`` range, blocks (the range adapts between the two)."""
    poll_interval_s: float = 1.0
    """How often to look for a new head once caught up, s."""
    rpc_timeout_s: float = 10.0
    """Timeout of one JSON-RPC request, s."""
    contracts: list[str] = msgspec.field(default_factory=list)
    """Addresses followed besides the oracle's sources (e.g. the venue)."""

    def __post_init__(self) -> None:
        _require(
            self.rpc_url.startswith(("http://", "https://")),
            f"rpc_url must be an http(s) URL; got {self.rpc_url!r}",
        )
        for key in ("chain_id", "confirmations", "backfill_blocks"):
            value = getattr(self, key)
            _require(value >= 0, f"{key} must be >= 0; got {value!r}")
        _require(
            self.reorg_depth > self.confirmations,
            f"reorg_depth must exceed confirmations ({self.confirmations}); "
            f"got {self.reorg_depth!r}",
        )
        _require(self.min_range >= 1, f"min_range must be >= 1; got {self.min_range!r}")
        _require(
            self.max_range >= self.min_range,
            f"max_range must be >= min_range ({self.min_range}); got {self.max_range!r}",
        )
        _durations(self, "poll_interval_s", "rpc_timeout_s")
        for address in self.contracts:
            _require(
                _is_address(address),
                f"contracts: expected lower-case 0x-prefixed 20-byte hex; got {address!r}",
            )


class CollateralToken(_Strict, frozen=True, kw_only=True):
    """A collateral token: the asset that prices it (oracle or peg) and its decimals."""

    asset: str
    decimals: int

    def __post_init__(self) -> None:
        _require(0 <= self.decimals <= 36, f"decimals must be in 0..36; got {self.decimals!r}")


class InstrumentConfig(_Strict, frozen=True, kw_only=True):
    """An instrument listed by configuration (besides the venue's ``InstrumentListed``):
    ``kind`` an ``InstrumentKind`` (0 spot, 1 perp, 2 call, 3 put); strike in USD; expiry
    in Unix seconds."""

    underlying: str
    kind: InstrumentKind
    strike: float = 0.0
    expiry_s: int = 0

    def __post_init__(self) -> None:
        _require(
            _is_address(self.underlying), f"underlying must be an address; got {self.underlying!r}"
        )
        option = self.kind.is_option
        _require(
            not option or PRICE_MIN <= self.strike <= PRICE_MAX,
            f"an option needs a strike in {PRICE_MIN:g}..{PRICE_MAX:g}; got {self.strike!r}",
        )
        _require(
            not option or 0 < self.expiry_s < EXPIRY_MAX_S,
            f"an option needs expiry_s before 2100; got {self.expiry_s!r}",
        )


class DexHedgeConfig(_Strict, frozen=True, kw_only=True):
    """A book's hedge of one asset in spot on the DEX: it buys or sells ``token`` for
    ``quote`` (token addresses; decimals from the oracle's tokens) in one routed swap over
    the oracle's ``uniswap_v2``/``uniswap_v3`` sources of that pair (``Order.kind``
    ``dex_hedge``)."""

    token: str
    quote: str
    initial: float = 0.0
    """The book's wallet holdings of ``token`` at the start, units of the token; each
    mined ``dex_hedge`` fill adds what it bought and takes what it sold."""

    def __post_init__(self) -> None:
        for key in ("token", "quote"):
            value = getattr(self, key)
            _require(_is_address(value), f"{key} must be a lower-case 0x address; got {value!r}")
        _require(self.token != self.quote, f"quote must differ from token; got {self.quote!r}")
        _require(
            math.isfinite(self.initial), f"initial must be a finite number; got {self.initial!r}"
        )


class RiskConfig(_Strict, frozen=True, kw_only=True):
    """The risk engine: the venue it follows, its shards, and how it reports and acts.

    ``margin``, ``liquidation`` and ``hedge`` are ``operators.margin.MarginParams``,
    ``operators.liquidation.LiquidationParams`` and ``HedgeParams`` themselves (their
    defaults and sources are documented there): a key left out keeps its default, an
    unknown key or a bad value fails naming its path, e.g. ``$.risk.margin.tier``.
    """

    venue: str = ""
    """The MarginVenue address; empty: no risk stage."""
    shards: int = 4
    """Account shards (keys): each reprices its accounts at once on a tick."""
    underlyings: dict[str, str] = msgspec.field(default_factory=dict)
    """Underlying token address -> oracle asset (e.g. WETH -> ETH)."""
    collateral: dict[str, CollateralToken] = msgspec.field(default_factory=dict)
    """Collateral token address -> its asset and decimals."""
    books: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    """Accounts we run -> {asset: hedge instrument id (a perp or spot)}."""
    dex_hedges: dict[str, dict[str, DexHedgeConfig]] = msgspec.field(default_factory=dict)
    """Accounts we run -> {asset: its hedge in spot on the DEX}; an (account, asset) is
    hedged here or in ``books``, not both."""
    targets: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """Accounts we run -> {asset: delta target, contracts of the underlying}; default 0."""
    instruments: dict[str, InstrumentConfig] = msgspec.field(default_factory=dict)
    """Instrument id (0x + 32 bytes hex) -> instrument, listed besides the venue's events."""
    margin_mode: MarginMode = "portfolio"
    """Every account's margin: ``portfolio`` (PMRM scenarios) or ``standard`` (per position)."""
    margin_modes: dict[str, MarginMode] = msgspec.field(default_factory=dict)
    """Account -> its own margin mode, over ``margin_mode``."""
    liquidation_timeout_s: float = 300.0
    """A liquidation order without a ``Liquidated`` event is retried after this, s."""
    risk_change: float = 0.01
    """An account's risk row is written when its health moves by this fraction..."""
    risk_min_interval_s: float = 0.0
    """...but not more often than this, s..."""
    risk_interval_s: float = 3600.0
    """...or at least this often, s."""
    vol_half_life_s: float = 86_400.0
    """EWMA realised-vol half-life, s."""
    vol_floor: float = 0.2
    vol_cap: float = 3.0
    iv_max_age_s: float = 300.0
    """A quoted IV (and an SVI smile fitted to such quotes) counts for this long, s."""
    margin: MarginParams = msgspec.field(default_factory=MarginParams)
    liquidation: LiquidationParams = msgspec.field(default_factory=LiquidationParams)
    hedge: HedgeParams = msgspec.field(default_factory=HedgeParams)

    def __post_init__(self) -> None:
        _require(
            self.venue == "" or _is_address(self.venue),
            f"venue must be an address; got {self.venue!r}",
        )
        _require(1 <= self.shards <= 65_536, f"shards must be in 1..65536; got {self.shards!r}")
        for instrument in self.instruments:
            _require(
                len(instrument) == 66 and instrument.startswith("0x"),
                f"instruments: an id is 0x and 32 bytes of hex; got {instrument!r}",
            )
        for address in (
            *self.underlyings, *self.collateral, *self.books, *self.targets, *self.margin_modes,
        ):  # fmt: skip
            _require(_is_address(address), f"expected a lower-case 0x address; got {address!r}")
        for account, hedges in self.dex_hedges.items():
            _require(
                _is_address(account),
                f"dex_hedges: an account is a lower-case 0x address; got {account!r}",
            )
            both = sorted(set(hedges) & set(self.books.get(account, {})))
            _require(
                not both,
                f"dex_hedges.{account}: {both} hedged in books too; hedge an asset in one place",
            )
        haircuts = self.margin.haircut_table()
        for address, token in self.collateral.items():
            _require(
                token.asset in haircuts,
                f"collateral.{address}.asset {token.asset!r} has no haircut: name it in "
                f"risk.margin.haircuts (known: {sorted(haircuts)})",
            )
        _durations(self, "liquidation_timeout_s", "risk_interval_s", "vol_half_life_s")
        _durations(self, "iv_max_age_s")
        _durations(self, "risk_min_interval_s", zero=True)
        _require(self.vol_floor > 0, f"vol_floor must be > 0; got {self.vol_floor!r}")
        _require(self.risk_change >= 0, f"risk_change must be >= 0; got {self.risk_change!r}")
        _require(
            0 <= self.risk_min_interval_s <= self.risk_interval_s,
            f"risk_min_interval_s must be in 0..risk_interval_s; got {self.risk_min_interval_s!r}",
        )
        _require(
            self.vol_cap >= self.vol_floor,
            f"vol_cap must be >= vol_floor ({self.vol_floor}); got {self.vol_cap!r}",
        )


class OrdersConfig(_Strict, frozen=True, kw_only=True):
    """How the risk stage's orders reach the executor (``orders`` topic)."""

    secret_file: str = ""
    """A file holding the shared HMAC-SHA256 secret (at least 32 bytes) that signs every
    order on the topic (``operators.order_auth``); empty: orders go out unsigned, and an
    executor refuses them. The secret never sits in the configuration itself."""
    valid_for_s: float = 120.0
    """An order's deadline (``Order.valid_until_ms``), after its event time, s."""

    def __post_init__(self) -> None:
        _durations(self, "valid_for_s")


class ExecutionConfig(_Strict, frozen=True, kw_only=True):
    """The executor (``hedgeflow execute``): one process per signing key."""

    signers: list[str] = msgspec.field(default_factory=list)
    """The executors' addresses (lower-case hex). With signers listed, the risk stage reads
    ``fills`` and waits for each signer's progress there before it evaluates past it."""
    liquidator: str = ""
    """The address that sends the liquidation orders; hedges go from the book's own key."""
    chain_id: int = 0
    """The chain the executor acts on; it refuses to start against any other (required)."""
    gas_limit: int = 300_000
    """Gas limit of one venue call."""
    max_fee_gwei: float = 500.0
    """Cap on ``maxFeePerGas``, gwei: a fee suggestion above it is cut to it."""
    priority_fee_percentile: float = 50.0
    """The ``eth_feeHistory`` reward percentile taken as the priority fee."""
    fee_history_blocks: int = 10
    """Blocks of ``eth_feeHistory`` the fee suggestion reads."""
    replace_after_blocks: int = 3
    """A transaction pending this many blocks is replaced with higher fees."""
    max_replacements: int = 5
    """Replacements of one order's transaction at most."""
    fee_bump_ppm: int = 125_000
    """The least raise of both fee fields in a replacement, ppm (12.5%; geth needs 10%)."""
    max_in_flight: int = 4
    """Unfinished transactions per signer at most; further orders wait."""
    confirmations: int = 2
    """A receipt is final this many blocks deep, or at the ``finalized`` tag."""
    poll_interval_s: float = 0.5
    """How often the executor polls the topic and the chain when idle, s."""
    rpc_timeout_s: float = 10.0
    """Timeout of one JSON-RPC request, s."""
    max_order_notional_usd: float = 5_000_000.0
    """Largest notional of one order (|size| x the underlying's oracle price), USD."""
    max_hourly_notional_usd: float = 50_000_000.0
    """Largest notional per asset over the last hour, USD."""
    max_submits_per_s: float = 20.0
    """Transactions a signer sends per rolling 1000 ms at most, floored (replacements
    included); >= 1."""
    price_band_bps: float = 200.0
    """Largest distance of an order's oracle price from the latest ``oracle.prices`` row
    of its asset, bps."""
    oracle_heartbeat_s: float = 300.0
    """The latest oracle row of an order's asset must be younger than this, s."""
    stale_oracle_halt_s: float = 900.0
    """An asset's oracle stale (not ``ok``, or older than the heartbeat) this long trips
    the signer to HALTED, s."""
    max_error_rate: float = 0.5
    """Share of failed outcomes (reverted, simulation refusals) among the last
    ``error_window`` orders that trips the signer to HALTED."""
    error_window: int = 20
    """Orders the error rate is taken over."""
    max_gas_per_hour_eth: float = 1.0
    """Fees paid per rolling hour that trip the signer to HALTED, ETH."""
    split_swap: str = ""
    """The SplitSwap contract (``infra/contracts/SplitSwap.sol``) that runs a routed
    ``dex_hedge`` order in one transaction; empty: such orders are denied."""
    swap_gas_limit: int = 1_500_000
    """Gas limit of one routed swap."""
    gas_asset: str = "ETH"
    """The oracle asset of the chain's gas token: a route weighs the gas of each extra pool
    at its ``oracle.prices`` row (not weighed while that row is missing or not ``ok``)."""

    def __post_init__(self) -> None:
        for key in ("signers",):
            for address in getattr(self, key):
                _require(_is_address(address), f"{key} holds {address!r}, not an address")
        _require(
            self.liquidator == "" or _is_address(self.liquidator),
            f"liquidator must be a lower-case hex address; got {self.liquidator!r}",
        )
        _require(self.chain_id >= 0, f"chain_id must be >= 0; got {self.chain_id!r}")
        _require(
            self.split_swap == "" or _is_address(self.split_swap),
            f"split_swap must be a lower-case hex address; got {self.split_swap!r}",
        )
        for key in (
            "gas_limit", "fee_history_blocks", "replace_after_blocks", "max_in_flight",
            "error_window", "fee_bump_ppm", "swap_gas_limit",
        ):  # fmt: skip
            _require(getattr(self, key) >= 1, f"{key} must be >= 1; got {getattr(self, key)!r}")
        for key in ("max_replacements", "confirmations"):
            _require(getattr(self, key) >= 0, f"{key} must be >= 0; got {getattr(self, key)!r}")
        _require(
            self.fee_bump_ppm >= 100_000,
            f"fee_bump_ppm must be >= 100000 (geth refuses a smaller raise); "
            f"got {self.fee_bump_ppm!r}",
        )
        _require(
            0 <= self.priority_fee_percentile <= 100,
            f"priority_fee_percentile must be in 0..100; got {self.priority_fee_percentile!r}",
        )
        _require(
            0 < self.max_error_rate <= 1,
            f"max_error_rate must be in (0, 1]; got {self.max_error_rate!r}",
        )
        for key in (
            "max_fee_gwei", "max_order_notional_usd", "max_hourly_notional_usd",
            "price_band_bps", "max_gas_per_hour_eth",
        ):  # fmt: skip
            _require(getattr(self, key) > 0, f"{key} must be > 0; got {getattr(self, key)!r}")
        _require(
            self.max_submits_per_s >= 1,
            f"max_submits_per_s must be >= 1 (submits per 1000 ms window); "
            f"got {self.max_submits_per_s!r}",
        )
        _durations(
            self, "poll_interval_s", "rpc_timeout_s", "oracle_heartbeat_s", "stale_oracle_halt_s"
        )


class KafkaConfig(_Strict, frozen=True, kw_only=True):
    """How every Kafka client (sources, sinks, admin, record, publish, the executor)
    authenticates and encrypts: Kafka's ``security.protocol``, ``sasl.mechanism`` and
    TLS files. The password never sits in the file: it comes from the environment variable
    ``sasl_password_env`` names, or from the file ``sasl_password_file`` names (read at
    start-up by ``connectors.kafka_clients.kafka_security``, which also checks that the
    TLS files can be read). The keys fit together as :func:`kafka_problem` checks."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    """Required with ``SASL_PLAINTEXT`` and ``SASL_SSL``."""
    sasl_username: str = ""
    sasl_password_env: str = ""
    """The environment variable holding the password (exactly one of this and the file)."""
    sasl_password_file: str = ""
    """The file holding the password (surrounding whitespace stripped)."""
    ssl_ca_location: str = ""
    """The CA certificate (PEM) the brokers' certificates are checked against; empty: the
    system's CAs. With ``SSL`` and ``SASL_SSL`` only, as are the two below."""
    ssl_certificate_location: str = ""
    """The client's certificate (PEM), for brokers that authenticate clients by TLS."""
    ssl_key_location: str = ""
    """The client certificate's private key (PEM, unencrypted); needs the certificate."""

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


def kafka_problem(k: KafkaConfig) -> tuple[str, str] | None:
    """The first key of ``k`` that does not fit the others, and why; None when they fit."""
    sasl_keys = ("sasl_username", "sasl_password_env", "sasl_password_file")
    if k.sasl:
        if k.sasl_mechanism is None:
            return "sasl_mechanism", f"{k.security_protocol} needs a sasl_mechanism; got none"
        if not k.sasl_username:
            return "sasl_username", f"{k.security_protocol} needs a sasl_username; got none"
        if bool(k.sasl_password_env) == bool(k.sasl_password_file):
            return "sasl_password_env", (
                "expected exactly one of sasl_password_env and sasl_password_file; got "
                f"{k.sasl_password_env!r} and {k.sasl_password_file!r}"
            )
    else:
        if k.sasl_mechanism is not None:
            return "sasl_mechanism", (
                f"{k.sasl_mechanism!r} needs security_protocol SASL_PLAINTEXT or SASL_SSL; "
                f"got {k.security_protocol}"
            )
        for key in sasl_keys:
            if getattr(k, key):
                return key, (
                    f"{key} needs security_protocol SASL_PLAINTEXT or SASL_SSL; "
                    f"got {k.security_protocol}"
                )
    if not k.ssl:
        for key in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            if getattr(k, key):
                why = f"{key} needs security_protocol SSL or SASL_SSL; got {k.security_protocol}"
                return key, why
    if bool(k.ssl_certificate_location) != bool(k.ssl_key_location):
        return "ssl_key_location", (
            "expected both ssl_certificate_location and ssl_key_location, or neither; got "
            f"{k.ssl_certificate_location!r} and {k.ssl_key_location!r}"
        )
    return None


class Config(_Strict, frozen=True, kw_only=True):
    """The whole configuration file."""

    topics: TopicsConfig = msgspec.field(default_factory=TopicsConfig)
    oracle: OracleConfig = msgspec.field(default_factory=OracleConfig)
    chain: ChainConfig = msgspec.field(default_factory=ChainConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    run: RunConfig = msgspec.field(default_factory=RunConfig)
    orders: OrdersConfig = msgspec.field(default_factory=OrdersConfig)
    execution: ExecutionConfig = msgspec.field(default_factory=ExecutionConfig)
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a decoded TOML document; raise ``ConfigError`` naming the key and value.

    The cross-references between tokens and sources are checked when the registry is
    built (``operators.stages.stage_params``, at every start-up).
    """
    _finite_numbers(data, "$")
    try:
        config = msgspec.convert(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if problem := kafka_problem(config.kafka):
        key, why = problem
        raise ConfigError(f"invalid configuration: {why} - at `$.kafka.{key}`")
    return config


def _finite_numbers(data: Any, path: str) -> None:
    """Raise ``ConfigError`` at the first ``inf`` or ``nan`` in a decoded document."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(
            f"invalid configuration: expected a finite number, got {data!r} - at `{path}`"
        )
    if isinstance(data, dict):
        for key, value in data.items():
            _finite_numbers(value, f"{path}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _finite_numbers(value, f"{path}[{i}]")


def load_config(text: str | None) -> Config:
    """Parse TOML text (``None`` gives the defaults)."""
    if text is None:
        return parse_config({})
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration is not valid TOML: {exc}") from None
    return parse_config(data)


def config_toml(cfg: Config) -> str:
    """``cfg`` as the TOML text of a configuration file, holding only non-default values.

    The inverse of :func:`load_config`: ``load_config(config_toml(cfg)) == cfg``. Tables
    whose values are all defaults are left out, so a tool can append one of them.
    """
    import tomli_w  # the standard library reads TOML but does not write it

    return tomli_w.dumps(_non_defaults(cfg))


def _non_defaults(struct: msgspec.Struct) -> dict[str, Any]:
    """The fields of ``struct`` that differ from their defaults, as TOML-ready builtins
    (``omit_defaults`` leaves out defaults inside lists and dicts of structs)."""
    table: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct):
        value = getattr(struct, field.name)
        if isinstance(value, msgspec.Struct):
            if sub := _non_defaults(value):
                table[field.encode_name] = sub
        elif field.required or value != (
            field.default if field.default_factory is msgspec.NODEFAULT
            else field.default_factory()
        ):  # fmt: skip
            table[field.encode_name] = msgspec.to_builtins(value)
    return table
