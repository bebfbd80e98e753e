"""Liquidation and hedge decisions, one account or one book at a time.

Anchors: Aave V3 ``LiquidationLogic`` (close factor, dust, bonus), Derive's liquidation
penalty, Whalley and Wilmott (1997) for the hedging band.

These run only for the few accounts below maintenance margin and the few hedging books,
so they are plain Python over one account's positions; the shard-wide work stays in
``operators.margin``. Prices and values in USD, sizes in contracts (signed). The results
carry no ids and no time: the flow derives a deterministic ``order_id`` from the trigger.

Close factor (Aave V3, read for an account of positions): an order may trade at most
``close_factor`` (50 %) of the account's gross market value, sum |size| x value over its
positions, just as Aave repays at most 50 % of a user's total debt. It is 100 % when
health <= ``full_close_health`` (0.95) or the gross market value is below ``dust_usd``
($2,000). An order that would leave less than ``min_leftover_usd`` ($1,000) of market
value closes everything instead (Aave's MIN_LEFTOVER_BASE), even past the close factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from operators.margin import (
    FloatArray,
    InstrumentRisk,
    MarginParams,
    Params,
    account_margin,
    fail,
    portfolio_margin,
)

_BISECTIONS = 50
"""Halvings of the last leg's fraction: 2**-50 of the position, far below any lot size."""


class LiquidationParams(Params, frozen=True, kw_only=True):
    """Close factor, dust and bonus (fractions; USD amounts).

    Defaults: Aave V3 ``LiquidationLogic.sol`` @ 027aaed7: DEFAULT_LIQUIDATION_CLOSE_FACTOR
    0.5e4, CLOSE_FACTOR_HF_THRESHOLD 0.95e18, MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD 2000e8,
    MIN_LEFTOVER_BASE 1000e8. ``bonus`` 5 %: Derive's liquidation penalty (500 bps) and
    Aave's usual 105 % liquidation bonus.
    """

    close_factor: float = 0.5
    full_close_health: float = 0.95
    dust_usd: float = 2_000.0
    min_leftover_usd: float = 1_000.0
    bonus: float = 0.05

    def __post_init__(self) -> None:
        checks = {
            "close_factor": 0 < self.close_factor <= 1,
            "full_close_health": 0 <= self.full_close_health <= 1,
            "dust_usd": self.dust_usd >= 0,
            "min_leftover_usd": self.min_leftover_usd >= 0,
            "bonus": 0 <= self.bonus < 1,
        }
        for name, ok in checks.items():
            if not ok:
                fail(f"LiquidationParams.{name}", getattr(self, name), "in range (see docstring)")


def close_factor(health: float, gross_value_usd: float, params: LiquidationParams) -> float:
    """Share of the account's gross market value one order may trade (Aave V3's rule)."""
    if health <= params.full_close_health or gross_value_usd < params.dust_usd:
        return 1.0
    return params.close_factor


def liquidation_price(oracle_price: float, trade_size: float, bonus: float) -> float:
    """Price (USD) of a liquidation trade: the liquidator earns ``bonus`` on it.

    Selling the account's long (``trade_size`` < 0) at oracle / (1 + bonus), as Aave hands
    over collateral worth (1 + bonus) x the debt repaid; buying back a short at
    oracle x (1 + bonus).
    """
    if trade_size < 0:
        return oracle_price / (1.0 + bonus)
    return oracle_price * (1.0 + bonus)


@dataclass(frozen=True, kw_only=True)
class LiquidationLeg:
    """One instrument of a liquidation order."""

    instrument: int
    """Column of the instrument in the positions matrix."""
    size: float
    """Signed trade, contracts: opposite in sign to the position it reduces."""
    oracle_price: float
    """The instrument's value per contract at the tick, USD."""
    price: float
    """Liquidation price per contract, USD (``liquidation_price``)."""
    bonus_usd: float
    """What the liquidator earns against the oracle price, USD."""


@dataclass(frozen=True, kw_only=True)
class LiquidationOrder:
    """One order for one account: legs riskiest first, and the account before and after."""

    legs: tuple[LiquidationLeg, ...]
    health: float
    close_factor: float
    bonus: float
    closes_account: bool
    equity_after: float
    mm_after: float
    im_after: float


def liquidation_order(
    positions: sp.csr_matrix,
    equity: float,
    risk: InstrumentRisk,
    margin: MarginParams,
    params: LiquidationParams,
    *,
    portfolio_margined: bool,
    oracle_ok: bool,
) -> LiquidationOrder | None:
    """The liquidation order of one account (``positions``: its 1 x instruments row).

    None when the oracle price is not ``ok`` (never liquidate on a stale or degraded
    price), or the account is not below maintenance (equity >= MM, or MM = 0: nothing to
    reduce). Otherwise positions are reduced in order of their loss in the account's worst
    portfolio scenario (whatever its margin mode), largest first (ties: larger market
    value, then lower column), until equity after the bonus paid is at least IM, the close
    factor is used up, or everything is closed. The last leg is the smallest part of its
    position that reaches IM. Under a partial close factor only positions that lose in the
    worst scenario are reduced (all of them if none does): a hedge is never cut alone.
    """
    row = sp.csr_matrix(positions, copy=True)
    if row.shape[0] != 1:
        fail("positions", row.shape, "one account's row (1 x instruments)")
    row.eliminate_zeros()
    if not oracle_ok or row.nnz == 0:
        return None
    columns, sizes = row.indices.copy(), row.data.copy()
    n = row.shape[1]

    def book(held: FloatArray) -> sp.csr_matrix:
        return sp.csr_matrix((held, columns, [0, len(columns)]), shape=(1, n))

    def margins(held: FloatArray) -> tuple[float, float]:
        mm, im, _ = account_margin(book(held), risk, margin, np.array([portfolio_margined]))
        return float(mm[0]), float(im[0])

    mm, _ = margins(sizes)
    if mm <= 0 or equity >= mm:
        return None
    health = equity / mm
    value = risk.value[columns]
    market = np.abs(sizes) * value
    gross = float(market.sum())
    factor = close_factor(health, gross, params)
    _, worst = portfolio_margin(book(sizes), risk)
    loss = -sizes * risk.scenario_pnl[columns, worst[0]]
    ranked = sorted(range(len(columns)), key=lambda j: (-loss[j], -market[j], columns[j]))
    # Bonus paid per contract closed: v b / (1 + b) selling a long, v b buying a short.
    b = params.bonus
    bonus_per_contract = np.where(sizes > 0, value * b / (1.0 + b), value * b)

    held = sizes.copy()
    paid = 0.0
    budget = factor * gross
    taken: list[int] = []

    def above_im(j: int, fraction: float) -> bool:
        trial = held.copy()
        trial[j] = sizes[j] * (1.0 - fraction)
        cost = paid + fraction * abs(sizes[j]) * bonus_per_contract[j]
        return equity - cost >= margins(trial)[1]

    losing = [j for j in ranked if loss[j] > 0]
    candidates = losing if factor < 1.0 and losing else ranked
    for j in candidates:
        if budget <= 1e-12 * gross:
            break
        most = 1.0 if market[j] <= budget else budget / market[j]
        reached = above_im(j, most)
        fraction = most
        if reached:
            lo = 0.0
            for _ in range(_BISECTIONS):
                mid = 0.5 * (lo + fraction)
                lo, fraction = (lo, mid) if above_im(j, mid) else (mid, fraction)
        held[j] = sizes[j] * (1.0 - fraction)
        paid += fraction * abs(sizes[j]) * bonus_per_contract[j]
        budget -= fraction * market[j]
        taken.append(j)
        if reached:
            break

    if held.any() and float((np.abs(held) * value).sum()) < params.min_leftover_usd:
        for j in ranked:
            if held[j] != 0:
                paid += abs(held[j]) * bonus_per_contract[j]
                held[j] = 0.0
                if j not in taken:
                    taken.append(j)

    legs: list[LiquidationLeg] = []
    for j in taken:
        trade = float(held[j] - sizes[j])
        price = liquidation_price(float(value[j]), trade, b)
        legs.append(
            LiquidationLeg(
                instrument=int(columns[j]),
                size=trade,
                oracle_price=float(value[j]),
                price=price,
                bonus_usd=abs(trade) * abs(price - float(value[j])),
            )
        )
    mm_after, im_after = margins(held)
    return LiquidationOrder(
        legs=tuple(legs),
        health=health,
        close_factor=factor,
        bonus=b,
        closes_account=not held.any(),
        equity_after=equity - paid,
        mm_after=mm_after,
        im_after=im_after,
    )


class HedgeParams(Params, frozen=True):
    """The hedging band (Whalley-Wilmott) of a book.

    Half-width in contracts of the underlying, around the delta target:
    ``h = (3/2 exp(-r T) cost S gamma**2 / risk_aversion) ** (1/3)``, at least
    ``min_band_usd / S``. ``cost`` is the proportional trading cost (fraction of notional),
    ``risk_aversion`` the absolute risk aversion (per USD). Defaults are hedgeflow's
    choices: 5 bp (a perp taker fee), 1e-4 per USD, and $1,000 so that a book without
    gamma does not trade on noise.
    """

    cost: float = 0.0005
    risk_aversion: float = 1e-4
    min_band_usd: float = 1_000.0

    def __post_init__(self) -> None:
        checks = {
            "cost": 0 <= self.cost < 1,
            "risk_aversion": self.risk_aversion > 0,
            "min_band_usd": self.min_band_usd >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                fail(f"HedgeParams.{name}", getattr(self, name), "in range (see docstring)")


def hedge_band(
    gamma: float, spot: float, expiry_years: float, rate: float, params: HedgeParams
) -> float:
    """Half-width (contracts) of the no-trade band of a book with ``gamma`` (per USD).

    ``expiry_years`` is the time to expiry of the book's options (the gamma-weighted
    mean for several expiries); ``spot`` in USD.
    """
    discount = np.exp(-rate * expiry_years)
    ww = (1.5 * discount * params.cost * spot * gamma * gamma / params.risk_aversion) ** (1 / 3)
    return max(float(ww), params.min_band_usd / spot)


@dataclass(frozen=True, kw_only=True)
class HedgeOrder:
    """A trade in a delta-one instrument (perp or spot) that brings a book to its target."""

    instrument: int
    size: float
    """Signed, contracts."""
    oracle_price: float
    """USD per contract at the tick."""
    delta_before: float
    target: float
    band: float
    """Half-width of the band that was breached, contracts."""


def hedge_order(
    *,
    delta: float,
    gamma: float,
    target: float,
    spot: float,
    expiry_years: float,
    instrument: int,
    oracle_ok: bool,
    params: HedgeParams,
    rate: float = 0.0,
) -> HedgeOrder | None:
    """A hedge order when the book's ``delta`` (contracts of underlying) leaves the band.

    The order trades ``instrument`` (delta 1 per contract) by ``target - delta``: back to
    the target, not to the band's edge. None inside the band or on a price that is not
    ``ok``.
    """
    if not oracle_ok:
        return None
    band = hedge_band(gamma, spot, expiry_years, rate, params)
    if abs(delta - target) <= band:
        return None
    return HedgeOrder(
        instrument=instrument,
        size=target - delta,
        oracle_price=spot,
        delta_before=delta,
        target=target,
        band=band,
    )
