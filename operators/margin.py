"""Margin for a whole shard of accounts per oracle tick: values, scenarios, equity, health.

Anchors: dYdX v4 liquidity tiers (IMF/MMF), Derive's standard manager (SRM) and portfolio
manager (PMRM), Aave's health factor.

Units: prices, values and margins in USD; sizes in contracts, one contract being one unit
of the underlying (multiplier 1); ``T`` in years (365-day year); vols per 1.00 (0.6 = 60 %).

Per tick, everything that depends on one instrument is computed once
(``instrument_values``): its value and Greeks (one Black-76 call), its P&L under every
scenario (full Black-76 repricing, no Greek approximation) and its per-contract
requirements. Every consumer (account Greeks, hedging, liquidation, the ``instruments/``
rows, the margin tool) reads them from there. Accounts then come from sparse products:
positions (a ``scipy.sparse.csr_matrix``, accounts x instruments, signed sizes) times
those vectors, with no Python per account.

Delta and gamma are per unit of spot (dV/dS, d2V/dS2), not of the Black-76 forward
F = S exp(rate T): hedges trade spot and perps on the underlying, and Deribit quotes delta
per underlying. By the chain rule dV/dS = exp(rate T) dV/dF and
d2V/dS2 = exp(2 rate T) d2V/dF2; the two agree at rate 0 only.

A position of signed size ``n`` needs ``|n| * x_abs + max(-n, 0) * x_short`` of every
per-contract requirement pair ``(x_abs, x_short)``: spot and perps are charged on ``|n|``,
options only when short.

Accounting follows ``operators.accounts``: ``cost`` is the sum of size x price over an
account's fills, so equity = haircut collateral + positions x value - cost (unrealised
P&L included; realised P&L has gone into collateral).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import msgspec
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from operators.greeks import black76, black76_price
from operators.units import DAYS_PER_YEAR, InstrumentKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

VOL_DOWN, VOL_NONE, VOL_UP = -1, 0, 1
"""Scenario vol shock directions."""
PPM = 1_000_000
MAX_CROSS_OFFSET = 0.5
"""The largest ``PortfolioParams.cross_offset``: at least half of what perfect correlation
between underlyings would net is always charged (hedgeflow's bound)."""
_KINDS = [int(k) for k in InstrumentKind]


def fail(name: str, value: object, expected: str) -> NoReturn:
    """Raise the ``ValueError`` of a bad parameter: ``name must be expected; got value``."""
    msg = f"{name} must be {expected}; got {value!r}"
    raise ValueError(msg)


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Model parameters: frozen and keyword-only. They are also the configuration's
    ``[risk.margin]``, ``[risk.liquidation]`` and ``[risk.hedge]`` tables
    (``operators.config``), where an unknown key or a bad value fails naming its path.
    msgspec applies ``kw_only`` to a class's own fields only, so every subclass sets it too."""


@dataclass(frozen=True)
class Instruments:
    """The instrument table as arrays, one row per instrument (the positions' columns).

    ``kind`` holds ``InstrumentKind`` values; ``underlying`` indexes the spot
    vector; ``strike`` in USD and ``expiry_years`` (T, years) matter for options only.
    """

    kind: IntArray
    underlying: IntArray
    strike: FloatArray
    expiry_years: FloatArray

    def __post_init__(self) -> None:
        for name in ("kind", "underlying"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        for name in ("strike", "expiry_years"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        n = self.kind.shape
        for name in ("underlying", "strike", "expiry_years"):
            if getattr(self, name).shape != n:
                fail(f"Instruments.{name}", getattr(self, name).shape, f"of shape {n}")
        for i in np.flatnonzero(~np.isin(self.kind, _KINDS)):
            fail(f"Instruments.kind[{i}]", int(self.kind[i]), f"an InstrumentKind {_KINDS}")
        for i in np.flatnonzero(self.underlying < 0):
            fail(f"Instruments.underlying[{i}]", int(self.underlying[i]), ">= 0")
        option = self.kind >= InstrumentKind.CALL
        for i in np.flatnonzero(option & ~(np.isfinite(self.strike) & (self.strike > 0))):
            fail(f"Instruments.strike[{i}]", float(self.strike[i]), "> 0 (USD) for an option")
        bad_t = option & ~(np.isfinite(self.expiry_years) & (self.expiry_years >= 0))
        for i in np.flatnonzero(bad_t):
            fail(f"Instruments.expiry_years[{i}]", float(self.expiry_years[i]), ">= 0 years")

    @property
    def n(self) -> int:
        """Number of instruments."""
        return int(self.kind.shape[0])


class LiquidityTier(Params, frozen=True, kw_only=True):
    """A dYdX v4 liquidity tier: margin fractions of perp and spot notional.

    Integer math as dYdX does it (``protocol/x/perpetuals/types/liquidity_tier.go``): ppm
    is parts per million; open-interest caps and quote amounts are USDC quote quantums
    (1e-6 USD). MMF = IMF x maintenance fraction (``maintenance_margin_ppm``, rounded
    down). The IMF rises linearly from its base at the lower open-interest cap to 100 % at
    the upper cap (no scaling when the upper cap is 0); the MMF does not scale.

    Defaults: the Mid-Cap tier of dYdX v4's genesis (``protocol/testing/genesis.sh`` @
    84d4664b): IMF 5 %, maintenance fraction 60 % (MMF 3 %), caps 40M and 100M USDC.
    """

    initial_margin_ppm: int = 50_000
    maintenance_fraction_ppm: int = 600_000
    open_interest_lower_cap: int = 40_000_000_000_000
    """USDC quote quantums (40M USDC)."""
    open_interest_upper_cap: int = 100_000_000_000_000
    """USDC quote quantums (100M USDC)."""

    def __post_init__(self) -> None:
        for name in ("initial_margin_ppm", "maintenance_fraction_ppm"):
            if not 0 <= getattr(self, name) <= PPM:
                fail(f"LiquidityTier.{name}", getattr(self, name), "in 0..1_000_000 ppm")
        if not 0 <= self.open_interest_lower_cap <= self.open_interest_upper_cap:
            fail(
                "LiquidityTier.open_interest_lower_cap",
                self.open_interest_lower_cap,
                f">= 0 and <= open_interest_upper_cap ({self.open_interest_upper_cap})",
            )

    def maintenance_margin_ppm(self) -> int:
        """MMF in ppm: initial margin x maintenance fraction, rounded down."""
        return self.initial_margin_ppm * self.maintenance_fraction_ppm // PPM

    def adjusted_initial_margin_ppm(self, open_interest: int) -> int:
        """IMF in ppm at an open notional of ``open_interest`` quote quantums (rounded down)."""
        lower, upper = self.open_interest_lower_cap, self.open_interest_upper_cap
        if upper == 0 or open_interest <= lower:
            return self.initial_margin_ppm
        if open_interest >= upper:
            return PPM
        scaled = (PPM - self.initial_margin_ppm) * (open_interest - lower) // (upper - lower)
        return self.initial_margin_ppm + scaled

    def initial_margin_quote_quantums(self, notional: int, open_interest: int) -> int:
        """Initial margin (quote quantums, rounded up) of an absolute ``notional``."""
        return -(-notional * self.adjusted_initial_margin_ppm(open_interest) // PPM)

    def fractions(self, open_interest_usd: float) -> tuple[float, float]:
        """(IMF, MMF) as fractions at an open notional of ``open_interest_usd`` USD."""
        imf = self.adjusted_initial_margin_ppm(round(open_interest_usd * 1e6)) / PPM
        return imf, self.maintenance_margin_ppm() / PPM


class OptionMarginParams(Params, frozen=True, kw_only=True):
    """Standard margin of a short option, Derive SRM-style (fractions).

    With spot S, the option's value V per contract and OTM ratios
    ``otm_call = max(K - S, 0) / S`` and ``otm_put = max(S - K, 0) / S``, Derive requires
    per short contract (``StandardManager._getIsolatedMarginFor{Call,Put}``):

    - call MM = V + mm_call_spot_req S;
      call IM = V + max(max_spot_req - otm_call, min_spot_req) S;
    - put MM = V + max(mm_put_spot_req S, mm_put_mtm_req V);
      put IM = max(V + max(max_spot_req - otm_put, min_spot_req) S, mm_offset_scale put MM).

    Derive counts V as part of the requirement because its margin is cash plus
    requirements. Here equity already carries a short's value as a liability
    (size x value < 0), so the margin used is each formula less V. Long options need
    nothing (Derive: a long option does not offset other positions).

    Defaults: Derive v2-core ``scripts/config-mainnet.sol`` ``getSRMParams`` (the values for
    every market but SNX) @ 7736900d.
    """

    max_spot_req: float = 0.15
    min_spot_req: float = 0.13
    mm_call_spot_req: float = 0.09
    mm_put_spot_req: float = 0.09
    mm_put_mtm_req: float = 0.09
    mm_offset_scale: float = 1.05

    def __post_init__(self) -> None:
        ranges = {  # Derive's own bounds (StandardManager.setOptionMarginParams)
            "max_spot_req": (0.0, 1.2),
            "min_spot_req": (0.0, 1.2),
            "mm_call_spot_req": (0.0, 1.0),
            "mm_put_spot_req": (0.0, 1.0),
            "mm_put_mtm_req": (0.0, 1.0),
            "mm_offset_scale": (1.0, 3.0),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                fail(f"OptionMarginParams.{name}", value, f"in [{lo}, {hi}]")


class PortfolioParams(Params, frozen=True, kw_only=True):
    """Portfolio margin: the worst loss over a spot x vol scenario grid, plus add-ons.

    Scenarios: every spot move in ``spot_shocks`` with the vol shocked up, not at all, and
    down, then every move in ``tail_spot_shocks`` with the vol up. Spot and perps move by
    the shock; options are repriced with Black-76 on the shocked forward and vol.

    Vol shock of an option with T years to expiry (Derive ``PMRMLib._addVolShocks``):
    ``m = (30 / max(T * 365, dte_floor_days)) ** p``, ``p = short_term_power`` when
    T <= 30 days and ``long_term_power`` otherwise; vol x (1 + vol_up m) up and
    vol x (1 - vol_down m) down.

    Volatility-adjusted range: the spot moves of an underlying are widened by
    ``clip(atm_vol / reference_vol, 1, max_widening)``.

    Per underlying (Deribit and Derive margin per currency): each underlying's positions
    take their own worst scenario, and the losses add up; ``cross_offset`` (default 0)
    credits at most that share of the netting across underlyings (``portfolio_margin``).

    Contingency add-ons (Derive ``PMRMLib``), in MM: ``option_contingency`` x spot per
    short option contract, ``perp_contingency`` x spot per perp contract and
    ``spot_contingency`` x spot per spot contract (long or short). IM = ``im_factor`` x MM.

    Defaults: Derive v2-core ``scripts/config-mainnet.sol`` ``getDefaultScenarios`` and
    ``getPMRMParams`` @ 7736900d (the first portfolio manager), except ``reference_vol``
    and ``max_widening``, which are hedgeflow's choices: 80 % is a high ATM vol for ETH
    or BTC, so the grid widens only in stress, by at most 2x.
    """

    spot_shocks: tuple[float, ...] = (-0.15, -0.10, -0.05, 0.0, 0.05, 0.10, 0.15)
    """Relative spot moves crossed with vol up / none / down."""
    tail_spot_shocks: tuple[float, ...] = (-0.20, 0.20)
    """Relative spot moves taken with the vol up only."""
    vol_up: float = 0.6
    vol_down: float = 0.3
    short_term_power: float = 0.3
    long_term_power: float = 0.13
    dte_floor_days: float = 1.0
    reference_vol: float = 0.8
    max_widening: float = 2.0
    option_contingency: float = 0.02
    perp_contingency: float = 0.03
    spot_contingency: float = 0.03
    im_factor: float = 1.25
    cross_offset: float = 0.0
    """Share of the netting across underlyings credited (see ``portfolio_margin``), in
    [0, ``MAX_CROSS_OFFSET``]; 0, the default, margins each underlying on its own."""

    def __post_init__(self) -> None:
        shocks = self.spot_shocks + self.tail_spot_shocks
        if not self.spot_shocks or not all(np.isfinite(s) for s in shocks):
            fail("PortfolioParams.spot_shocks", self.spot_shocks, "a non-empty tuple of moves")
        checks = {
            "vol_up": self.vol_up >= 0,
            "vol_down": self.vol_down >= 0,
            "short_term_power": self.short_term_power >= 0,
            "long_term_power": self.long_term_power >= 0,
            "dte_floor_days": self.dte_floor_days > 0,
            "reference_vol": self.reference_vol > 0,
            "max_widening": self.max_widening >= 1,
            "option_contingency": self.option_contingency >= 0,
            "perp_contingency": self.perp_contingency >= 0,
            "spot_contingency": self.spot_contingency >= 0,
            "im_factor": self.im_factor >= 1,
            "cross_offset": 0 <= self.cross_offset <= MAX_CROSS_OFFSET,
        }
        for name, ok in checks.items():
            if not (ok and np.isfinite(getattr(self, name))):
                fail(f"PortfolioParams.{name}", getattr(self, name), "in range (see docstring)")
        if min(shocks) * self.max_widening <= -1:
            fail(
                "PortfolioParams.spot_shocks",
                min(shocks),
                f"> -1 / max_widening ({-1 / self.max_widening:.4f}) so that spot stays > 0",
            )
        widest = max(1.0, (30.0 / self.dte_floor_days) ** self.short_term_power)
        if self.vol_down * widest >= 1:
            fail("PortfolioParams.vol_down", self.vol_down, "small enough that vols stay > 0")

    def scenarios(self) -> tuple[FloatArray, IntArray]:
        """(relative spot move, vol direction) per scenario, in grid order then tails."""
        grid = [(s, v) for s in self.spot_shocks for v in (VOL_UP, VOL_NONE, VOL_DOWN)]
        rows = grid + [(s, VOL_UP) for s in self.tail_spot_shocks]
        return (
            np.array([r[0] for r in rows], dtype=np.float64),
            np.array([r[1] for r in rows], dtype=np.int64),
        )


def _default_haircuts() -> dict[str, float]:
    return {"USDC": 0.0, "USDT": 0.02, "ETH": 0.2, "WETH": 0.2, "BTC": 0.25, "WBTC": 0.25}


class MarginParams(Params, frozen=True, kw_only=True):
    """Every margin parameter; see each part's docstring for its formula and sources.

    ``tiers`` overrides ``tier`` per underlying index. ``rate`` is the annual rate of the
    Black-76 forward and discount, F = S exp(rate T); default 0 (Deribit's convention).
    ``haircuts`` per collateral token, fraction of value: default 1 - Derive's SRM base
    margin factor (ETH 0.8, BTC 0.75, USDT 0.98; ``config-mainnet.sol`` @ 7736900d), and 0
    for USDC, the settlement currency. The haircuts in force are ``haircut_table()``: the
    given ones over these defaults, so a table names only the tokens it changes.
    """

    tier: LiquidityTier = msgspec.field(default_factory=LiquidityTier)
    tiers: dict[int, LiquidityTier] = msgspec.field(default_factory=dict)
    option: OptionMarginParams = msgspec.field(default_factory=OptionMarginParams)
    portfolio: PortfolioParams = msgspec.field(default_factory=PortfolioParams)
    rate: float = 0.0
    haircuts: dict[str, float] = msgspec.field(default_factory=_default_haircuts)

    def __post_init__(self) -> None:
        if not np.isfinite(self.rate):
            fail("MarginParams.rate", self.rate, "finite")
        for token, h in self.haircuts.items():
            if not 0 <= h <= 1:
                fail(f"MarginParams.haircuts[{token!r}]", h, "in [0, 1]")
        for u in self.tiers:
            if u < 0:
                fail("MarginParams.tiers key", u, "an underlying index >= 0")

    def haircut_table(self) -> dict[str, float]:
        """Haircut per token, fraction of value: ``haircuts`` over the defaults."""
        return {**_default_haircuts(), **self.haircuts}

    def haircut_vector(self, tokens: Sequence[str]) -> FloatArray:
        """Haircut per token, in the order of ``tokens``; unknown tokens are an error."""
        table = self.haircut_table()
        unknown = [t for t in tokens if t not in table]
        if unknown:
            fail("collateral tokens", unknown, f"listed in MarginParams.haircuts {table}")
        return np.array([table[t] for t in tokens], dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class InstrumentRisk:
    """Per-instrument vectors for one tick; per contract, in USD unless said.

    Each ``*_abs`` / ``*_short`` pair is a requirement per contract: a position of size n
    needs |n| x_abs + max(-n, 0) x_short. ``contingency_*`` are the portfolio add-ons,
    ``standard_mm_*`` and ``standard_im_*`` the standard MM and IM.
    """

    value: FloatArray
    """Mark: the spot price for spot and perps, the Black-76 price for options."""
    delta: FloatArray
    """dV/dS per unit of spot (not of the forward), contracts of underlying per contract
    (1 for spot and perps)."""
    gamma: FloatArray
    """d2V/dS2 per unit of spot, per USD (0 for spot and perps)."""
    vega: FloatArray
    """dV/dsigma, USD per 1.00 of vol (0 for spot and perps)."""
    theta: FloatArray
    """dV/dt with the forward held fixed (Black-76's), USD per year (0 for spot and
    perps)."""
    scenario_pnl: FloatArray
    """(instruments, scenarios): P&L of one long contract under each scenario."""
    underlying: IntArray
    """Index of each instrument's underlying (``Instruments.underlying``)."""
    n_underlyings: int
    contingency_abs: FloatArray
    contingency_short: FloatArray
    standard_mm_abs: FloatArray
    standard_mm_short: FloatArray
    standard_im_abs: FloatArray
    standard_im_short: FloatArray


def instrument_values(
    inst: Instruments,
    spot: FloatArray,
    vol: FloatArray,
    atm_vol: FloatArray,
    params: MarginParams,
    open_interest_usd: FloatArray | None = None,
) -> InstrumentRisk:
    """Value, Greeks, scenario P&L and per-contract requirements of every instrument.

    ``spot`` (USD), ``atm_vol`` and ``open_interest_usd`` (open notional, USD; default 0)
    are per underlying; ``vol`` is per instrument (read for options only).
    """
    S = np.asarray(spot, dtype=np.float64)[inst.underlying]
    p = params.portfolio
    option = inst.kind >= InstrumentKind.CALL
    opt = np.flatnonzero(option)
    T = inst.expiry_years[opt]
    K = inst.strike[opt]
    sigma = np.asarray(vol, dtype=np.float64)[opt]
    for i in opt[~(np.isfinite(sigma) & (sigma >= 0))]:
        fail(f"vol[{i}]", float(vol[i]), ">= 0 for an option")
    is_call = inst.kind[opt] == InstrumentKind.CALL
    growth = np.exp(params.rate * T)  # dF/dS
    F = S[opt] * growth
    greeks = black76(is_call, F, K, T, params.rate, sigma)

    value = S.copy()
    value[opt] = greeks.price
    delta = np.where(option, 0.0, 1.0)
    delta[opt] = greeks.delta * growth
    gamma = np.zeros(inst.n)
    gamma[opt] = greeks.gamma * growth * growth
    vega = np.zeros(inst.n)
    vega[opt] = greeks.vega
    theta = np.zeros(inst.n)
    theta[opt] = greeks.theta

    moves, vol_dir = p.scenarios()
    widening = np.clip(np.asarray(atm_vol, dtype=np.float64) / p.reference_vol, 1.0, p.max_widening)
    move = moves[None, :] * widening[inst.underlying][:, None]  # (instruments, scenarios)
    scenario_pnl = S[:, None] * move
    dte = np.maximum(T * DAYS_PER_YEAR, p.dte_floor_days)
    power = np.where(T * DAYS_PER_YEAR <= 30.0, p.short_term_power, p.long_term_power)
    m = (30.0 / dte) ** power
    vol_mult = np.where(
        vol_dir[None, :] == VOL_UP,
        1.0 + p.vol_up * m[:, None],
        np.where(vol_dir[None, :] == VOL_DOWN, 1.0 - p.vol_down * m[:, None], 1.0),
    )
    shocked = black76_price(
        is_call[:, None],
        F[:, None] * (1.0 + move[opt]),
        K[:, None],
        T[:, None],
        params.rate,
        sigma[:, None] * vol_mult,
    )
    scenario_pnl[opt] = shocked - greeks.price[:, None]

    imf = np.zeros(inst.n)
    mmf = np.zeros(inst.n)
    oi = np.zeros(len(spot)) if open_interest_usd is None else open_interest_usd
    for u in np.unique(inst.underlying[~option]):
        tier = params.tiers.get(int(u), params.tier)
        on = (inst.underlying == u) & ~option
        imf[on], mmf[on] = tier.fractions(float(oi[u]))
    linear_abs = np.where(option, 0.0, S)
    contingency = np.where(inst.kind == InstrumentKind.PERP, p.perp_contingency, p.spot_contingency)
    mm_short, im_short = _short_option_margin(is_call, S[opt], K, greeks.price, params.option)
    standard_mm_short = np.zeros(inst.n)
    standard_mm_short[opt] = mm_short
    standard_im_short = np.zeros(inst.n)
    standard_im_short[opt] = im_short
    return InstrumentRisk(
        value=value,
        delta=delta,
        gamma=gamma,
        vega=vega,
        theta=theta,
        scenario_pnl=np.ascontiguousarray(scenario_pnl),
        underlying=inst.underlying,
        n_underlyings=len(spot),
        contingency_abs=linear_abs * contingency,
        contingency_short=np.where(option, p.option_contingency * S, 0.0),
        standard_mm_abs=linear_abs * mmf,
        standard_mm_short=standard_mm_short,
        standard_im_abs=linear_abs * imf,
        standard_im_short=standard_im_short,
    )


def _short_option_margin(
    is_call: npt.NDArray[np.bool_],
    S: FloatArray,
    K: FloatArray,
    V: FloatArray,
    p: OptionMarginParams,
) -> tuple[FloatArray, FloatArray]:
    """(MM, IM) per short contract, less the option's value (see ``OptionMarginParams``)."""
    otm = np.where(is_call, np.maximum(K - S, 0.0), np.maximum(S - K, 0.0)) / S
    im_spot = np.maximum(p.max_spot_req - otm, p.min_spot_req) * S
    put_mm = np.maximum(p.mm_put_spot_req * S, p.mm_put_mtm_req * V)
    mm = np.where(is_call, p.mm_call_spot_req * S, put_mm)
    im = np.where(is_call, im_spot, np.maximum(im_spot, p.mm_offset_scale * (put_mm + V) - V))
    return mm, im


def _long_short(matrix: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """max(matrix, 0) and max(-matrix, 0), sharing the matrix's sparsity pattern."""
    shape, indices, indptr, data = matrix.shape, matrix.indices, matrix.indptr, matrix.data
    return (
        sp.csr_matrix((np.maximum(data, 0.0), indices, indptr), shape=shape),
        sp.csr_matrix((np.maximum(-data, 0.0), indices, indptr), shape=shape),
    )


def _charge(positions: sp.csr_matrix, x_abs: FloatArray, x_short: FloatArray) -> FloatArray:
    """Per account, the sum over positions n of |n| x_abs + max(-n, 0) x_short."""
    long, short = _long_short(positions)
    return np.asarray(long @ x_abs + short @ (x_abs + x_short))


_CHUNK = 8192
"""Pairs per block of the scenario product, so that each block stays in cache."""


@dataclass(frozen=True, kw_only=True)
class UnderlyingPnl:
    """Scenario P&L per (account, underlying) pair that holds a position, USD.

    Pairs are in order of account, then underlying; ``pnl`` is (pairs, scenarios).
    """

    account: IntArray
    underlying: IntArray
    pnl: FloatArray
    entry_pair: IntArray
    """The pair of each stored entry of the positions (in sorted-index CSR order)."""


def _by_underlying(
    positions: sp.csr_matrix, risk: InstrumentRisk
) -> tuple[sp.csr_matrix, IntArray, IntArray, IntArray]:
    """The positions' entries regrouped by (account, underlying) pair, as a (pairs x
    instruments) matrix, with each pair's account and underlying, and each entry's pair
    (entries in sorted-index CSR order).

    When the instruments are ordered by underlying (as ``operators.risk`` lists them), a
    pair's entries are already contiguous in a row: the matrix is the positions' own arrays
    with a finer ``indptr``, built in one pass.
    """
    accounts, nnz = positions.shape[0], positions.nnz
    if not positions.has_sorted_indices:
        positions = positions.sorted_indices()
    u_of = risk.underlying[positions.indices]
    rows = np.repeat(np.arange(accounts, dtype=np.int64), np.diff(positions.indptr))
    if np.all(risk.underlying[1:] >= risk.underlying[:-1]):
        new_pair = np.zeros(nnz, dtype=bool)
        new_pair[positions.indptr[:-1][np.diff(positions.indptr) > 0]] = True
        new_pair[1:] |= u_of[1:] != u_of[:-1]
        starts = np.flatnonzero(new_pair)
        indptr = np.r_[starts, nnz]
        shape = (starts.size, positions.shape[1])
        grouped = sp.csr_matrix((positions.data, positions.indices, indptr), shape=shape)
        return (
            grouped,
            rows[starts],
            u_of[starts],
            np.repeat(np.arange(starts.size), np.diff(indptr)),
        )
    n_u = risk.n_underlyings
    key = rows * n_u + u_of
    present = np.zeros(accounts * n_u, dtype=bool)
    present[key] = True
    pairs = np.flatnonzero(present)
    pair_of = (np.cumsum(present) - 1)[key]
    shape = (pairs.size, positions.shape[1])
    grouped = sp.csr_matrix((positions.data, (pair_of, positions.indices)), shape=shape)
    return grouped, pairs // n_u, pairs % n_u, pair_of


def underlying_pnl(positions: sp.csr_matrix, risk: InstrumentRisk) -> UnderlyingPnl:
    """The scenario P&L of each account's positions per underlying (for a few accounts:
    the whole (pairs x scenarios) array is kept)."""
    grouped, account, underlying, entry_pair = _by_underlying(positions, risk)
    pnl = np.asarray(grouped @ risk.scenario_pnl).reshape(account.size, -1)
    return UnderlyingPnl(account=account, underlying=underlying, pnl=pnl, entry_pair=entry_pair)


def _rows(matrix: sp.csr_matrix, lo: int, hi: int) -> sp.csr_matrix:
    """Rows ``lo:hi`` of a CSR matrix, sharing its arrays."""
    a, b = matrix.indptr[lo], matrix.indptr[hi]
    return sp.csr_matrix(
        (matrix.data[a:b], matrix.indices[a:b], matrix.indptr[lo : hi + 1] - a),
        shape=(hi - lo, matrix.shape[1]),
    )


def _min_over_columns(values: FloatArray) -> FloatArray:
    """Row minima of a short, wide-row array (numpy's own reduction along a short last
    axis costs a call per row)."""
    out = values[:, 0].copy()
    for k in range(1, values.shape[1]):
        np.minimum(out, values[:, k], out=out)
    return out


def underlying_losses(
    positions: sp.csr_matrix, risk: InstrumentRisk
) -> tuple[IntArray, FloatArray, IntArray]:
    """Per (account, underlying) pair holding a position: its account and its loss in its
    worst scenario (>= 0, USD); and per account, the worst scenario of its pair with the
    largest loss (ties: the lower underlying; 0 without positions).

    One sparse product with ``risk.scenario_pnl``, taken in blocks of whole accounts that
    stay in cache.
    """
    grouped, account, _, _ = _by_underlying(positions, risk)
    n = account.size
    loss = np.zeros(n)
    worst = np.zeros(positions.shape[0], dtype=np.int64)
    lo = 0
    while lo < n:
        hi = min(n, lo + _CHUNK)
        if hi < n:  # end the block at an account's first pair
            hi = int(np.searchsorted(account, account[hi], side="left"))
            hi = hi if hi > lo else min(n, lo + _CHUNK)
        pnl = np.asarray(_rows(grouped, lo, hi) @ risk.scenario_pnl)
        block = np.maximum(-_min_over_columns(pnl), 0.0)
        loss[lo:hi] = block
        top = _largest_per_account(account[lo:hi], block)
        worst[account[lo:hi][top]] = np.argmin(pnl[top], axis=1)
        lo = hi
    return account, loss, worst


def _largest_per_account(account: IntArray, value: FloatArray) -> IntArray:
    """Per account present in ``account`` (sorted), the index of its largest ``value``
    (ties: the first)."""
    if not account.size:
        return np.zeros(0, dtype=np.int64)
    new = np.empty(account.size, dtype=bool)
    new[0] = True
    np.not_equal(account[1:], account[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    top = np.maximum.reduceat(value, starts)
    counts = np.diff(np.append(starts, account.size))
    index = np.where(value == np.repeat(top, counts), np.arange(account.size), account.size)
    return np.minimum.reduceat(index, starts)


def portfolio_margin(
    positions: sp.csr_matrix, risk: InstrumentRisk, cross_offset: float = 0.0
) -> tuple[FloatArray, IntArray]:
    """Portfolio MM per account (USD) and the index of its worst scenario.

    Per underlying u, the loss L_u = max(0, -min over scenarios of the P&L of the
    account's positions on u) (Deribit and Derive: a risk matrix per currency); the joint
    loss L_joint is the same over all positions at once (as if every underlying moved
    together, perfect correlation, so L_joint <= sum L_u). Then

        MM = sum_u L_u - cross_offset x (sum_u L_u - L_joint) + contingency add-ons,

    with ``cross_offset`` in [0, ``MAX_CROSS_OFFSET``] (0: no offset across underlyings).
    IM is ``PortfolioParams.im_factor`` x MM. The worst scenario reported is that of the
    underlying with the largest loss (ties: the lower underlying index).
    """
    if not 0 <= cross_offset <= MAX_CROSS_OFFSET:
        fail("cross_offset", cross_offset, f"in [0, {MAX_CROSS_OFFSET}]")
    accounts = positions.shape[0]
    account, loss, worst = underlying_losses(positions, risk)
    scenario_loss = np.bincount(account, weights=loss, minlength=accounts)
    if cross_offset > 0:
        joint = np.asarray(positions @ risk.scenario_pnl)
        joint_loss = np.maximum(-joint.min(axis=1), 0.0)
        scenario_loss = scenario_loss - cross_offset * (scenario_loss - joint_loss)
    contingency = _charge(positions, risk.contingency_abs, risk.contingency_short)
    return scenario_loss + contingency, worst


def standard_margin(
    positions: sp.csr_matrix, risk: InstrumentRisk
) -> tuple[FloatArray, FloatArray]:
    """Standard (per position) MM and IM per account, USD: the sum over its positions."""
    mm = _charge(positions, risk.standard_mm_abs, risk.standard_mm_short)
    im = _charge(positions, risk.standard_im_abs, risk.standard_im_short)
    return mm, im


def collateral_value(amounts: sp.csr_matrix, price: FloatArray, haircut: FloatArray) -> FloatArray:
    """Haircut collateral per account, USD: accounts x tokens ``amounts`` in token units.

    A positive balance counts price x (1 - haircut); a negative one (a debt) its full value.
    """
    long, short = _long_short(amounts)
    return np.asarray(long @ (price * (1.0 - haircut)) - short @ price)


def equity(
    collateral: FloatArray, positions: sp.csr_matrix, risk: InstrumentRisk, cost: FloatArray
) -> FloatArray:
    """Equity per account, USD: collateral value + positions at value - cost of fills."""
    return np.asarray(collateral + positions @ risk.value - cost)


def health(equity_usd: FloatArray, mm: FloatArray) -> FloatArray:
    """Equity / MM per account; +inf where MM is 0. Below 1 the account is liquidatable."""
    safe = np.where(mm > 0, mm, 1.0)
    return np.where(mm > 0, equity_usd / safe, np.inf)


@dataclass(frozen=True, kw_only=True)
class AccountRisk:
    """Per-account results of one reprice, USD (``worst``: index of the worst scenario)."""

    equity: FloatArray
    mm: FloatArray
    im: FloatArray
    health: FloatArray
    worst: IntArray


def account_margin(
    positions: sp.csr_matrix,
    risk: InstrumentRisk,
    params: MarginParams,
    portfolio_margined: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray, IntArray]:
    """(MM, IM, worst scenario) per account: portfolio margin where ``portfolio_margined``,
    standard margin elsewhere (the worst scenario is reported for both)."""
    accounts = positions.shape[0]
    pm, worst = portfolio_margin(positions, risk, params.portfolio.cross_offset)
    sm_mm, sm_im = np.zeros(accounts), np.zeros(accounts)
    if not np.all(portfolio_margined):  # else nobody reads it
        sm_mm, sm_im = standard_margin(positions, risk)
    mm = np.where(portfolio_margined, pm, sm_mm)
    im = np.where(portfolio_margined, params.portfolio.im_factor * pm, sm_im)
    return mm, im, worst


def reprice(
    positions: sp.csr_matrix,
    cost: FloatArray,
    collateral: FloatArray,
    risk: InstrumentRisk,
    params: MarginParams,
    portfolio_margined: npt.NDArray[np.bool_],
) -> AccountRisk:
    """Equity, MM, IM and health of every account of a shard, from sparse products only.

    ``collateral`` is ``collateral_value`` per account and ``cost`` the accounts' cost of
    fills (USD).
    """
    mm, im, worst = account_margin(positions, risk, params, portfolio_margined)
    eq = equity(collateral, positions, risk, cost)
    return AccountRisk(equity=eq, mm=mm, im=im, health=health(eq, mm), worst=worst)


def net_by_underlying(
    positions: sp.csr_matrix, per_contract: FloatArray, inst: Instruments, n_underlyings: int
) -> FloatArray:
    """Accounts x underlyings sums of size x ``per_contract`` (e.g. ``risk.delta``)."""
    columns = sp.csr_matrix(
        (per_contract, (np.arange(inst.n), inst.underlying)), shape=(inst.n, n_underlyings)
    )
    return np.asarray((positions @ columns).toarray())
