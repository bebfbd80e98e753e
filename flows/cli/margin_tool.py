"""``hedgeflow margin PORTFOLIO.json``: a margin what-if for one account, like Deribit's simulator.

Input: one JSON object; an unknown key anywhere, a missing key or a bad value is an error
that names it (``PortfolioError``).

- ``collateral``: a list of ``{"asset", "amount", "price", "haircut"}``: ``amount`` in token
  units (negative: a debt, counted at full value), ``price`` in USD per token and
  ``haircut`` a fraction in [0, 1], optional: default ``MarginParams().haircuts`` for the
  asset (USDC 0, USDT 0.02, ETH/WETH 0.2, BTC/WBTC 0.25), else 0.
- ``prices``: spot per underlying, USD, e.g. ``{"ETH": 2000.0}``.
- ``vols``: annual vol per underlying (0.6 = 60 %), the same keys as ``prices``: the
  options' Black-76 vol.
- ``atm_vols``: optional, per underlying (default: ``vols``): the ATM vol that widens the
  portfolio scenarios' spot moves (``PortfolioParams``).
- ``positions``: a list of ``{"kind", "underlying", "size", "entry_price", "strike",
  "expiry_days"}``: ``kind`` is ``spot``, ``perp``, ``call`` or ``put``; ``size`` in
  contracts, signed (short < 0; one contract is one unit of the underlying);
  ``entry_price`` in USD per contract; ``strike`` (USD, > 0) and ``expiry_days`` (calendar
  days, 365 a year) for options only, and required for them.
- ``margin``: ``"portfolio"`` or ``"standard"``: the account's margin mode, which health
  and the liquidation use.

Output (``Report``, indented JSON): equity and its parts, collateral per asset, standard
and portfolio margin, health, the worst scenarios, Greeks per underlying and per position
and the liquidation order the account would get now (null when it is not below
maintenance margin). Everything is computed by ``operators.margin``,
``operators.liquidation`` and ``operators.greeks`` with their default parameters; the
account's positions are the columns of one instrument table, in input order.
"""

from __future__ import annotations

from typing import Annotated, Literal, NoReturn, TextIO

import msgspec
import numpy as np
import scipy.sparse as sp

from operators.liquidation import LiquidationOrder, LiquidationParams, liquidation_order
from operators.margin import (
    DAYS_PER_YEAR,
    VOL_DOWN,
    VOL_NONE,
    VOL_UP,
    FloatArray,
    Instruments,
    MarginParams,
    account_margin,
    collateral_value,
    equity,
    health,
    instrument_values,
    net_by_underlying,
    standard_margin,
    underlying_losses,
)
from operators.units import InstrumentKind

MARGIN = MarginParams()
LIQUIDATION = LiquidationParams()

Kind = Literal["spot", "perp", "call", "put"]
VolShock = Literal["up", "none", "down"]
_KINDS: dict[str, InstrumentKind] = {
    "spot": InstrumentKind.SPOT,
    "perp": InstrumentKind.PERP,
    "call": InstrumentKind.CALL,
    "put": InstrumentKind.PUT,
}
_VOL_SHOCKS: dict[int, VolShock] = {VOL_UP: "up", VOL_NONE: "none", VOL_DOWN: "down"}

Name = Annotated[str, msgspec.Meta(min_length=1)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class PortfolioError(ValueError):
    """The portfolio is not JSON, lacks a key, names an unknown one or holds a bad value."""


def _fail(msg: str) -> NoReturn:
    raise ValueError(msg)


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Collateral(_Strict, frozen=True):
    """A collateral balance: token units, USD per token, haircut fraction (None: default)."""

    asset: Name
    amount: float
    price: Positive
    haircut: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class Position(_Strict, frozen=True, kw_only=True):
    """A position: signed contracts, entry price USD; strike USD and days for options."""

    kind: Kind
    underlying: Name
    size: float
    entry_price: NonNegative
    strike: Positive | None = None
    expiry_days: NonNegative | None = None

    def __post_init__(self) -> None:
        got = f"got strike={self.strike!r}, expiry_days={self.expiry_days!r}"
        if self.kind in ("call", "put"):
            if self.strike is None or self.expiry_days is None:
                _fail(f"a {self.kind} needs strike and expiry_days; {got}")
        elif self.strike is not None or self.expiry_days is not None:
            _fail(f"a {self.kind} takes no strike or expiry_days; {got}")


class Portfolio(_Strict, frozen=True, kw_only=True):
    """The what-if input; see the module docstring for every key and its units."""

    collateral: tuple[Collateral, ...]
    prices: dict[Name, float]
    vols: dict[Name, float]
    positions: tuple[Position, ...]
    margin: Literal["portfolio", "standard"]
    atm_vols: dict[Name, float] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here, not by msgspec.Meta, which would not name the key of a bad value.
        for key, price in self.prices.items():
            if not price > 0:
                _fail(f"prices[{key!r}] must be > 0 (USD); got {price!r}")
        for table, vols in (("vols", self.vols), ("atm_vols", self.atm_vols)):
            for key, vol in vols.items():
                if not vol >= 0:
                    _fail(f"{table}[{key!r}] must be >= 0; got {vol!r}")
        underlyings = sorted(self.prices)
        if sorted(self.vols) != underlyings:
            _fail(f"vols must have the keys of prices {underlyings}; got {sorted(self.vols)}")
        unknown = sorted(set(self.atm_vols) - set(self.prices))
        if unknown:
            _fail(f"atm_vols must name underlyings of prices {underlyings}; got {unknown}")
        for i, p in enumerate(self.positions):
            if p.underlying not in self.prices:
                got = p.underlying
                _fail(f"positions[{i}].underlying must be in prices {underlyings}; got {got!r}")


class CollateralValue(msgspec.Struct, frozen=True, kw_only=True):
    """One collateral balance and what it counts for."""

    asset: str
    amount: float
    price_usd: float
    haircut: float
    """The haircut applied: the input's, else the default."""
    value_usd: float
    """amount x price x (1 - haircut); a debt at its full value."""


class Equity(msgspec.Struct, frozen=True, kw_only=True):
    """Equity = collateral + positions value - cost at entry, USD."""

    equity_usd: float
    collateral_usd: float
    positions_value_usd: float
    """Sum of size x value (a short's value counts as a liability)."""
    pnl_vs_entry_usd: float
    """positions_value_usd - sum of size x entry_price."""


class StandardMargin(msgspec.Struct, frozen=True, kw_only=True):
    """Standard margin (dYdX tiers for spot and perps, Derive SRM for short options), USD."""

    mm_usd: float
    im_usd: float


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """One scenario of the portfolio-margin grid and the account's P&L in it."""

    index: int
    """Position in ``PortfolioParams.scenarios()``."""
    spot_shock: float
    """The grid's relative spot move (-0.15 = -15 %) before widening by ATM vol."""
    vol_shock: VolShock
    """Vol direction; its size per option depends on expiry (``PortfolioParams``)."""
    spot_usd: dict[str, float]
    """Spot per underlying in the scenario, after widening."""
    pnl_usd: float


class PortfolioMargin(msgspec.Struct, frozen=True, kw_only=True):
    """Portfolio margin (Derive PMRM), USD: MM = scenario loss + add-ons, IM = factor x MM."""

    mm_usd: float
    im_usd: float
    scenario_loss_usd: float
    """The sum over underlyings of each one's worst-scenario loss (0 where it gains)."""
    add_ons_usd: float
    """Contingency add-ons."""
    worst_scenario: Scenario


class Greeks(msgspec.Struct, frozen=True, kw_only=True):
    """Raw Greeks (``operators.greeks`` units), summed over contracts."""

    delta: float
    """dV/dS, units of the underlying."""
    gamma_per_usd: float
    """d2V/dS2, units of the underlying per USD."""
    vega_per_1_vol: float
    """dV/dsigma, USD per 1.00 of vol (divide by 100 for a vol point)."""
    theta_per_year: float
    """dV/dt with the forward held fixed, USD per year (divide by 365 for a day)."""


class PositionRisk(msgspec.Struct, frozen=True, kw_only=True):
    """One input position, in input order."""

    kind: Kind
    underlying: str
    size: float
    value_usd: float
    """Mark per contract: spot for spot and perps, Black-76 for options."""
    market_value_usd: float
    pnl_vs_entry_usd: float
    standard_mm_usd: float
    standard_im_usd: float
    greeks: Greeks


class Leg(msgspec.Struct, frozen=True, kw_only=True):
    """One trade of a liquidation order."""

    position: int
    """Index in ``positions``."""
    size: float
    """Signed contracts, opposite to the position."""
    oracle_price_usd: float
    price_usd: float
    bonus_usd: float


class Liquidation(msgspec.Struct, frozen=True, kw_only=True):
    """The order ``liquidation_order`` gives the account now (oracle price taken as ok)."""

    health: float
    close_factor: float
    bonus: float
    closes_account: bool
    equity_after_usd: float
    mm_after_usd: float
    im_after_usd: float
    legs: list[Leg]


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """What ``hedgeflow margin`` prints."""

    margin: Literal["portfolio", "standard"]
    equity: Equity
    collateral: list[CollateralValue]
    standard_margin: StandardMargin
    portfolio_margin: PortfolioMargin
    health: float | None
    """Equity / MM of the ``margin`` mode; null when that MM is 0. Below 1: liquidatable."""
    worst_scenarios: list[Scenario]
    """The worst scenarios by P&L, worst first (ties: grid order)."""
    greeks: dict[str, Greeks]
    """Per underlying."""
    positions: list[PositionRisk]
    liquidation: Liquidation | None


def load_portfolio(data: bytes) -> Portfolio:
    """Decode a portfolio from JSON; ``PortfolioError`` names the bad key or value."""
    try:
        return msgspec.json.decode(data, type=Portfolio)
    except msgspec.DecodeError as exc:  # ValidationError included
        msg = f"invalid portfolio: {exc}"
        raise PortfolioError(msg) from None


def margin_report(portfolio: Portfolio, worst: int = 5) -> Report:
    """Margin, health, the ``worst`` worst scenarios, Greeks and liquidation of a portfolio."""
    if worst < 1:
        _fail(f"worst must be >= 1; got {worst!r}")
    names = list(portfolio.prices)
    column = {name: i for i, name in enumerate(names)}
    spot = np.array([portfolio.prices[u] for u in names], dtype=np.float64)
    atm_vol = np.array(
        [portfolio.atm_vols.get(u, portfolio.vols[u]) for u in names], dtype=np.float64
    )
    positions = portfolio.positions
    inst = Instruments(
        kind=np.array([_KINDS[p.kind] for p in positions], dtype=np.int64),
        underlying=np.array([column[p.underlying] for p in positions], dtype=np.int64),
        strike=np.array([0.0 if p.strike is None else p.strike for p in positions]),
        expiry_years=np.array(
            [0.0 if p.expiry_days is None else p.expiry_days / DAYS_PER_YEAR for p in positions]
        ),
    )
    vol = np.array([portfolio.vols[p.underlying] for p in positions], dtype=np.float64)
    risk = instrument_values(inst, spot, vol, atm_vol, MARGIN)

    n = inst.n
    sizes = np.array([p.size for p in positions], dtype=np.float64)
    account = sp.csr_matrix(sizes.reshape(1, n))
    # One row per position: the operators' per-account sums become per-position values.
    each = sp.csr_matrix((sizes, (np.arange(n), np.arange(n))), shape=(n, n))
    entry = np.array([p.entry_price for p in positions], dtype=np.float64)
    cost = np.array([sizes @ entry])

    collateral, per_asset = _collateral(portfolio.collateral)
    eq = equity(collateral, account, risk, cost)
    positions_value = float((account @ risk.value)[0])

    sm_mm, sm_im = standard_margin(account, risk)
    each_mm, each_im = standard_margin(each, risk)
    pm_mm, pm_im, pm_worst = account_margin(account, risk, MARGIN, np.array([True]))
    portfolio_margined = portfolio.margin == "portfolio"
    mm = pm_mm if portfolio_margined else sm_mm
    account_health = float(health(eq, mm)[0])

    pnl = np.asarray(account @ risk.scenario_pnl)[0]
    scenarios = _scenarios(pnl, names, spot, atm_vol)
    worst_index = int(pm_worst[0])
    scenario_loss = float(underlying_losses(account, risk)[1].sum())

    per_contract = {  # per long contract, from instrument_values (0 for spot and perps)
        "delta": risk.delta,
        "gamma_per_usd": risk.gamma,
        "vega_per_1_vol": risk.vega,
        "theta_per_year": risk.theta,
    }
    per_position = {key: sizes * x for key, x in per_contract.items()}
    by_underlying = {
        key: net_by_underlying(account, x, inst, len(names))[0] for key, x in per_contract.items()
    }
    order = liquidation_order(
        account,
        float(eq[0]),
        risk,
        MARGIN,
        LIQUIDATION,
        portfolio_margined=portfolio_margined,
    )
    return Report(
        margin=portfolio.margin,
        equity=Equity(
            equity_usd=float(eq[0]),
            collateral_usd=float(collateral[0]),
            positions_value_usd=positions_value,
            pnl_vs_entry_usd=positions_value - float(cost[0]),
        ),
        collateral=per_asset,
        standard_margin=StandardMargin(mm_usd=float(sm_mm[0]), im_usd=float(sm_im[0])),
        portfolio_margin=PortfolioMargin(
            mm_usd=float(pm_mm[0]),
            im_usd=float(pm_im[0]),
            scenario_loss_usd=scenario_loss,
            add_ons_usd=float(pm_mm[0]) - scenario_loss,
            worst_scenario=scenarios[worst_index],
        ),
        health=account_health if np.isfinite(account_health) else None,
        worst_scenarios=[scenarios[k] for k in np.argsort(pnl, kind="stable")[:worst]],
        greeks={name: _greeks(by_underlying, i) for i, name in enumerate(names)},
        positions=[
            PositionRisk(
                kind=p.kind,
                underlying=p.underlying,
                size=p.size,
                value_usd=float(risk.value[j]),
                market_value_usd=p.size * float(risk.value[j]),
                pnl_vs_entry_usd=p.size * (float(risk.value[j]) - p.entry_price),
                standard_mm_usd=float(each_mm[j]),
                standard_im_usd=float(each_im[j]),
                greeks=_greeks(per_position, j),
            )
            for j, p in enumerate(positions)
        ],
        liquidation=None if order is None else _liquidation(order),
    )


def margin_json(data: bytes, dst: TextIO, worst: int = 5) -> None:
    """Decode a portfolio from JSON ``data`` and write its ``Report`` to ``dst``, indented."""
    report = margin_report(load_portfolio(data), worst)
    dst.write(msgspec.json.format(msgspec.json.encode(report), indent=2).decode() + "\n")


def _collateral(balances: tuple[Collateral, ...]) -> tuple[FloatArray, list[CollateralValue]]:
    """The account's haircut collateral (USD, a 1-vector) and each balance's part of it."""
    amounts = np.array([c.amount for c in balances], dtype=np.float64)
    price = np.array([c.price for c in balances], dtype=np.float64)
    haircut = np.array(
        [MARGIN.haircuts.get(c.asset, 0.0) if c.haircut is None else c.haircut for c in balances],
        dtype=np.float64,
    )
    m = len(balances)
    total = collateral_value(sp.csr_matrix(amounts.reshape(1, m)), price, haircut)
    # One row per balance: collateral_value's per-account sums become per-balance values.
    each = collateral_value(
        sp.csr_matrix((amounts, (np.arange(m), np.arange(m))), shape=(m, m)), price, haircut
    )
    return total, [
        CollateralValue(
            asset=c.asset,
            amount=c.amount,
            price_usd=c.price,
            haircut=float(haircut[i]),
            value_usd=float(each[i]),
        )
        for i, c in enumerate(balances)
    ]


def _scenarios(
    pnl: FloatArray, names: list[str], spot: FloatArray, atm_vol: FloatArray
) -> list[Scenario]:
    """Every grid scenario with the account's P&L (USD) in it.

    The spot of each underlying in a scenario comes from one probe perp per underlying:
    its scenario P&L is the (widened) spot move in USD.
    """
    moves, vol_dirs = MARGIN.portfolio.scenarios()
    u = len(names)
    probe = Instruments(
        kind=np.full(u, InstrumentKind.PERP),
        underlying=np.arange(u),
        strike=np.zeros(u),
        expiry_years=np.zeros(u),
    )
    shocked = (
        spot[:, None] + instrument_values(probe, spot, np.zeros(u), atm_vol, MARGIN).scenario_pnl
    )
    return [
        Scenario(
            index=k,
            spot_shock=float(moves[k]),
            vol_shock=_VOL_SHOCKS[int(vol_dirs[k])],
            spot_usd={name: float(shocked[i, k]) for i, name in enumerate(names)},
            pnl_usd=float(pnl[k]),
        )
        for k in range(len(moves))
    ]


def _greeks(values: dict[str, FloatArray], i: int) -> Greeks:
    """The ``Greeks`` at index ``i`` of per-key arrays."""
    return Greeks(
        delta=float(values["delta"][i]),
        gamma_per_usd=float(values["gamma_per_usd"][i]),
        vega_per_1_vol=float(values["vega_per_1_vol"][i]),
        theta_per_year=float(values["theta_per_year"][i]),
    )


def _liquidation(order: LiquidationOrder) -> Liquidation:
    """The order as output (numbers as Python floats); a leg's column is its position."""
    return Liquidation(
        health=float(order.health),
        close_factor=float(order.close_factor),
        bonus=float(order.bonus),
        closes_account=bool(order.closes_account),
        equity_after_usd=float(order.equity_after),
        mm_after_usd=float(order.mm_after),
        im_after_usd=float(order.im_after),
        legs=[
            Leg(
                position=int(leg.instrument),
                size=float(leg.size),
                oracle_price_usd=float(leg.oracle_price),
                price_usd=float(leg.price),
                bonus_usd=float(leg.bonus_usd),
            )
            for leg in order.legs
        ],
    )
