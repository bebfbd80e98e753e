"""Liquidation and hedge decisions, one account or one book at a time.

Anchors: Aave V3 ``LiquidationLogic`` (close factor, dust, bonus), Derive's liquidation
penalty, Whalley and Wilmott (1997) for the hedging band.

Liquidation orders are sized for every account below maintenance at once
(``liquidation_orders``: numpy over all their positions, no Python per account but
building the output); hedges are decided per book. Prices and values in USD, sizes in
contracts (signed). The results carry no ids and no time: the flow derives a
deterministic ``order_id`` from the trigger.

Close factor (Aave V3, read for an account of positions): an order may trade at most
``close_factor`` (50 %) of the account's gross market value, sum |size| x value over its
positions, just as Aave repays at most 50 % of a user's total debt. It is 100 % when
health <= ``full_close_health`` (0.95) or the gross market value is below ``dust_usd``
($2,000). An order that would leave less than ``min_leftover_usd`` ($1,000) of market
value closes everything instead (Aave's MIN_LEFTOVER_BASE), even past the close factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from operators.margin import (
    FloatArray,
    InstrumentRisk,
    MarginParams,
    Params,
    account_margin,
    fail,
    underlying_pnl,
)

BoolArray = npt.NDArray[np.bool_]


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


class LiquidationLeg(msgspec.Struct, frozen=True, kw_only=True):
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


class LiquidationOrder(msgspec.Struct, frozen=True, kw_only=True):
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
) -> LiquidationOrder | None:
    """The liquidation order of one account (``positions``: its 1 x instruments row); see
    ``liquidation_orders``."""
    if positions.shape[0] != 1:
        fail("positions", positions.shape, "one account's row (1 x instruments)")
    return liquidation_orders(
        positions, np.array([equity]), risk, margin, params, np.array([portfolio_margined])
    )[0]


def liquidation_orders(
    positions: sp.csr_matrix,
    equity: FloatArray,
    risk: InstrumentRisk,
    margin: MarginParams,
    params: LiquidationParams,
    portfolio_margined: BoolArray,
) -> list[LiquidationOrder | None]:
    """The liquidation order of each account (a row of ``positions``), all at once.

    None for an account not below maintenance (equity >= MM, or MM = 0: nothing to
    reduce). Otherwise its positions are reduced in order of their loss in the worst
    portfolio scenario of their underlying (whatever the account's margin mode), largest
    first (ties: larger market value, then lower column), until equity after the bonus
    paid is at least IM, the close factor is used up, or everything is closed. The last
    leg is the smallest part of its position that reaches IM. Under a partial close factor
    only positions that lose in their worst scenario are reduced (all of them if none
    does): a hedge is never cut alone. Whether the prices may be acted on is the caller's
    to decide (``operators.risk`` denies the order otherwise).

    Vectorized: round k takes every account's k-th candidate at once. With the other
    positions fixed, IM + bonus paid is a convex piecewise-linear function of the share f
    of the candidate closed (a max of lines: one per scenario and the zero loss, or one
    line under standard margin), so the smallest f that reaches IM is the largest root of
    the lines that fall with f, in closed form (no bisection).
    """
    book = sp.csr_matrix(positions, dtype=np.float64, copy=True)
    book.eliminate_zeros()
    book.sort_indices()
    m = book.shape[0]
    pm = np.asarray(portfolio_margined, dtype=bool)
    mm, _, _ = account_margin(book, risk, margin, pm)
    equity = np.asarray(equity, dtype=np.float64)
    below = (mm > 0) & (equity < mm)
    if not below.any():
        return [None] * m
    # Per position entry (row-major): account, column, size, value, market value.
    acct = np.repeat(np.arange(m), np.diff(book.indptr))
    col, size = book.indices.astype(np.int64), book.data.copy()
    value = risk.value[col]
    market = np.abs(size) * value
    gross = np.bincount(acct, weights=market, minlength=m)
    health = np.where(mm > 0, equity / np.where(mm > 0, mm, 1.0), np.inf)
    full = (health <= params.full_close_health) | (gross < params.dust_usd)
    factor = np.where(full, 1.0, params.close_factor)
    b = params.bonus
    # Bonus paid per contract closed: v b / (1 + b) selling a long, v b buying a short.
    bonus_per_contract = np.where(size > 0, value * b / (1.0 + b), value * b)
    long, short = np.maximum(size, 0.0), np.maximum(-size, 0.0)
    cont_j = (long + short) * risk.contingency_abs[col] + short * risk.contingency_short[col]
    std_im_j = (long + short) * risk.standard_im_abs[col] + short * risk.standard_im_short[col]

    pairs = underlying_pnl(book, risk)
    pair_of = pairs.entry_pair
    pnl = pairs.pnl.copy()  # the held book's P&L per (account, underlying) and scenario
    worst = np.argmin(pnl, axis=1) if pnl.size else np.zeros(0, dtype=np.int64)
    scen = risk.scenario_pnl
    loss = -size * scen[col, worst[pair_of]]
    ranked = np.lexsort((col, -market, -loss, acct))
    losing = loss > 0
    any_losing = np.bincount(acct, weights=losing, minlength=m) > 0
    only_losing = (factor < 1.0) & any_losing
    candidates = ranked[(~only_losing[acct[ranked]] | losing[ranked]) & below[acct[ranked]]]
    starts = np.searchsorted(acct[candidates], np.arange(m))
    slot = np.arange(candidates.size) - starts[acct[candidates]]
    rounds = int(slot.max()) + 1 if candidates.size else 0
    table = np.full((m, max(rounds, 1)), -1, dtype=np.int64)
    table[acct[candidates], slot] = candidates

    r, imf = margin.portfolio.cross_offset, margin.portfolio.im_factor
    pair_loss = np.maximum(-pnl.min(axis=1), 0.0) if pnl.size else np.zeros(0)
    sum_loss = np.bincount(pairs.account, weights=pair_loss, minlength=m)
    joint = np.asarray(book @ scen) if r > 0 else np.zeros((m, 0))
    cont = np.bincount(acct, weights=cont_j, minlength=m)
    std_im = np.bincount(acct, weights=std_im_j, minlength=m)
    held = size.copy()
    paid = np.zeros(m)
    budget = factor * gross
    taken = np.full(size.size, -1, dtype=np.int64)
    """Per entry: the round it was taken in (-1: not taken)."""
    done = ~below
    for k in range(rounds):
        a = np.flatnonzero(~done & (table[:, k] >= 0) & (budget > 1e-12 * gross))
        if not a.size:
            break
        e = table[a, k]
        most = np.where(market[e] <= budget[a], 1.0, budget[a] / np.maximum(market[e], 1e-300))
        spare = equity[a] - paid[a]
        bonus_j = np.abs(size[e]) * bonus_per_contract[e]
        beta = size[e][:, None] * scen[col[e]]  # the candidate's whole P&L per scenario
        # Lines A + B f of IM(f) + bonus(f) - spare; the account reaches IM where all <= 0.
        zero = np.zeros((a.size, 1))
        alpha_u = np.hstack([-pnl[pair_of[e]], zero])
        beta_u = np.hstack([beta, zero])
        other = (sum_loss[a] - pair_loss[pair_of[e]])[:, None]
        if r > 0:
            alpha_j = np.hstack([-joint[a], zero])
            lines_a = (1 - r) * (alpha_u + other)[:, :, None] + r * alpha_j[:, None, :]
            lines_b = (1 - r) * beta_u[:, :, None] + r * beta_u[:, None, :]
            lines_a, lines_b = lines_a.reshape(a.size, -1), lines_b.reshape(a.size, -1)
        else:
            lines_a, lines_b = alpha_u + other, beta_u
        lines_a = imf * (lines_a + cont[a][:, None]) - spare[:, None]
        lines_b = imf * (lines_b - cont_j[e][:, None]) + bonus_j[:, None]
        standard = ~pm[a]
        lines_a[standard] = (std_im[a] - spare)[standard][:, None]
        lines_b[standard] = (bonus_j - std_im_j[e])[standard][:, None]
        reached = (lines_a + lines_b * most[:, None]).max(axis=1) <= 0
        falling = lines_b < 0
        roots = np.where(falling, -lines_a / np.where(falling, lines_b, -1.0), 0.0)
        smallest = np.maximum(roots.max(axis=1), 0.0)
        # A hair past the root, so that rounding cannot leave the account under IM.
        f = np.where(reached, np.minimum(most, smallest * (1 + 1e-9) + 1e-12), most)
        held[e] = size[e] * (1.0 - f)
        paid[a] += f * bonus_j
        budget[a] -= f * market[e]
        taken[e] = k
        pnl[pair_of[e]] -= f[:, None] * beta
        new_loss = np.maximum(-pnl[pair_of[e]].min(axis=1), 0.0)
        sum_loss[a] += new_loss - pair_loss[pair_of[e]]
        pair_loss[pair_of[e]] = new_loss
        if r > 0:
            joint[a] -= f[:, None] * beta
        cont[a] -= f * cont_j[e]
        std_im[a] -= f * std_im_j[e]
        done[a] |= reached

    # Aave's minimum leftover: an order that would leave less market value closes it all.
    left = np.bincount(acct, weights=np.abs(held) * value, minlength=m)
    has_left = np.bincount(acct, weights=held != 0, minlength=m) > 0
    sweep = below & has_left & (left < params.min_leftover_usd)
    swept = sweep[acct] & (held != 0)
    paid += np.bincount(
        acct, weights=np.where(swept, np.abs(held) * bonus_per_contract, 0.0), minlength=m
    )
    rank_of = np.empty(size.size, dtype=np.int64)
    rank_of[ranked] = np.arange(size.size)
    first_swept = swept & (taken < 0)
    held[swept] = 0.0
    order_key = np.where(taken >= 0, taken, np.where(first_swept, rounds + rank_of, -1))

    after = sp.csr_matrix((held, book.indices, book.indptr), shape=book.shape)
    mm_after, im_after, _ = account_margin(after, risk, margin, pm)
    out: list[LiquidationOrder | None] = [None] * m
    # Python lists from here: building the records is the only per-account work.
    keys, held_l, size_l = order_key.tolist(), held.tolist(), size.tolist()
    value_l, col_l, indptr = value.tolist(), col.tolist(), book.indptr.tolist()
    for i in np.flatnonzero(below).tolist():
        lo, hi = indptr[i], indptr[i + 1]
        legs = []
        for j in sorted((j for j in range(lo, hi) if keys[j] >= 0), key=keys.__getitem__):
            trade = held_l[j] - size_l[j]
            price = liquidation_price(value_l[j], trade, b)
            legs.append(
                LiquidationLeg(
                    instrument=col_l[j],
                    size=trade,
                    oracle_price=value_l[j],
                    price=price,
                    bonus_usd=abs(trade) * abs(price - value_l[j]),
                )
            )
        out[i] = LiquidationOrder(
            legs=tuple(legs),
            health=float(health[i]),
            close_factor=float(factor[i]),
            bonus=b,
            closes_account=not any(held_l[lo:hi]),
            equity_after=float(equity[i] - paid[i]),
            mm_after=float(mm_after[i]),
            im_after=float(im_after[i]),
        )
    return out


class HedgeParams(Params, frozen=True, kw_only=True):
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

    Whalley and Wilmott (1997), "An asymptotic analysis of an optimal hedging model for
    option pricing with transaction costs", Mathematical Finance 7(3), 307-324: the band
    around the target delta is +-(3/2 exp(-r (T - t)) cost S gamma**2 / risk_aversion)
    ** (1/3), with gamma the book's (net, per unit of spot) and T - t the time to the
    horizon of the hedged options, ``expiry_years`` (``hedge_horizon`` for a book of
    several expiries); ``spot`` in USD. At least ``min_band_usd / spot``.
    """
    discount = np.exp(-rate * expiry_years)
    ww = (1.5 * discount * params.cost * spot * gamma * gamma / params.risk_aversion) ** (1 / 3)
    return max(float(ww), params.min_band_usd / spot)


def hedge_horizon(gamma: FloatArray, expiry_years: FloatArray) -> float:
    """The horizon (years) of a book of several expiries: the mean of its positions'
    times to expiry weighted by |gamma| (size x gamma per contract, per USD); 0 without
    gamma.

    Whalley-Wilmott's band comes from one option's expiry; in a book, the band is set by
    the book's gamma, so each expiry counts as much as the gamma it brings. The shortest
    expiry (what the band used before) lets a small short-dated position set the horizon
    of a book whose gamma is long-dated.
    """
    weight = np.abs(np.asarray(gamma, dtype=np.float64))
    total = float(weight.sum())
    return float(weight @ np.asarray(expiry_years, dtype=np.float64)) / total if total > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class HedgeOrder:
    """A trade in a delta-one instrument (a perp or spot on the venue, or the token on the
    DEX) that brings a book to its target."""

    size: float
    """Signed, contracts."""
    oracle_price: float
    """USD per contract at the tick."""
    delta_before: float
    target: float
    band: float
    """Half-width of the band, contracts."""
    inside: bool
    """The book is within its band: nothing to trade."""


def hedge_order(
    *,
    delta: float,
    gamma: float,
    target: float,
    spot: float,
    expiry_years: float,
    params: HedgeParams,
    rate: float = 0.0,
) -> HedgeOrder:
    """The hedge of a book whose ``delta`` (contracts of underlying) is ``delta``.

    The order trades a delta-one instrument (delta 1 per contract or unit) by ``target -
    delta``: back to the target, not to the band's edge; ``inside`` says whether the book
    is within its band (no order is sent then: ``operators.risk`` reports a
    ``within_band`` denial).
    """
    band = hedge_band(gamma, spot, expiry_years, rate, params)
    return HedgeOrder(
        size=target - delta,
        oracle_price=spot,
        delta_before=delta,
        target=target,
        band=band,
        inside=abs(delta - target) <= band,
    )
