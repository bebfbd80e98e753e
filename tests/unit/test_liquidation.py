"""operators.liquidation: Aave's close factor and bonus, liquidation orders, hedge bands."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.liquidation import (
    HedgeParams,
    LiquidationOrder,
    LiquidationParams,
    close_factor,
    hedge_band,
    hedge_horizon,
    hedge_order,
    liquidation_order,
    liquidation_orders,
    liquidation_price,
)
from operators.margin import (
    Instruments,
    MarginParams,
    PortfolioParams,
    account_margin,
    instrument_values,
    net_by_underlying,
)
from operators.units import InstrumentKind

S = 3000.0
T30 = 30 / 365
MARGIN = MarginParams()
LIQ = LiquidationParams()
INST = Instruments(
    kind=[
        InstrumentKind.PERP,
        InstrumentKind.SPOT,
        InstrumentKind.CALL,
        InstrumentKind.PUT,
        InstrumentKind.PUT,
        InstrumentKind.CALL,
    ],
    underlying=[0] * 6,
    strike=[0.0, 0.0, 3000.0, 3000.0, 2800.0, 3500.0],
    expiry_years=[0.0, 0.0, T30, T30, 7 / 365, 90 / 365],
)
RISK = instrument_values(
    INST, np.array([S]), np.array([0.0, 0.0, 0.6, 0.6, 0.7, 0.55]), np.array([0.6]), MARGIN
)


def row(*sizes: float) -> sp.csr_matrix:
    return sp.csr_matrix(np.array([sizes]))


def margins(sizes: np.ndarray, portfolio: bool = True) -> tuple[float, float]:
    mm, im, _ = account_margin(row(*sizes), RISK, MARGIN, np.array([portfolio]))
    return float(mm[0]), float(im[0])


def liquidate(sizes: tuple[float, ...], equity: float, **kw: bool) -> LiquidationOrder | None:
    flags = {"portfolio_margined": True} | kw
    return liquidation_order(row(*sizes), equity, RISK, MARGIN, LIQ, **flags)


def after(sizes: tuple[float, ...], order: LiquidationOrder) -> np.ndarray:
    held = np.array(sizes)
    for leg in order.legs:
        held[leg.instrument] += leg.size
    return held


# --- Aave V3 close factor and bonus -------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "weth", "expected"),
    [(0.94, 100.0, 1.0), (0.97, 0.5, 1.0), (0.97, 100.0, 0.5), (0.95, 100.0, 1.0)],
    ids=["hf-0.94-full", "hf-0.97-dust-full", "hf-0.97-large-half", "hf-0.95-inclusive"],
)
def test_close_factor_follows_aave_v3_branches(health: float, weth: float, expected: float) -> None:
    # Aave's Pool.Liquidations.CloseFactor.t.sol cases, with WETH at $2,000: 0.5 WETH is
    # $1,000 (< $2,000 dust), 100 WETH is $200,000. HF <= 0.95 is inclusive (Aave: `>`
    # for the 50 % branch).
    assert close_factor(health, weth * 2000.0, LIQ) == expected


def test_liquidation_price_reproduces_aave_bonus_arithmetic() -> None:
    # MARGIN_REFERENCE 1d (derived from LiquidationLogic): repaying 8,400 USDC of debt at a
    # 105 % bonus takes 4.41 WETH at $2,000, of which 0.21 WETH ($420) is the bonus.
    price = liquidation_price(2000.0, -4.41, 0.05)
    assert 4.41 * price == pytest.approx(8400.0)
    assert 4.41 * (2000.0 - price) == pytest.approx(420.0)
    assert liquidation_price(2000.0, 1.0, 0.05) == pytest.approx(2100.0)  # buying back a short


# --- liquidation orders -------------------------------------------------------------------


def test_liquidation_when_healthy_then_no_order() -> None:
    sizes = (0.5, 0, -1.0, 0, 0, 0)
    mm, _ = margins(np.array(sizes))
    assert liquidate(sizes, equity=mm + 1.0) is None


def test_liquidation_when_no_positions_then_no_order() -> None:
    assert liquidate((0, 0, 0, 0, 0, 0), equity=-5.0) is None


def test_liquidation_at_health_097_uses_half_close_factor_and_buys_back_riskiest_short() -> None:
    sizes = (-2.0, 0, -10.0, 0, -5.0, 0)
    mm, _ = margins(np.array(sizes))
    order = liquidate(sizes, equity=0.97 * mm)
    assert order is not None
    assert order.close_factor == 0.5 and order.health == pytest.approx(0.97)
    gross = sum(abs(n) * v for n, v in zip(sizes, RISK.value, strict=True))
    traded = sum(abs(leg.size) * leg.oracle_price for leg in order.legs)
    assert traded <= 0.5 * gross + 1e-6
    # Worst scenario is +20 % with vol up: the 10 short calls lose most; part of them is
    # enough to get back to IM.
    assert [leg.instrument for leg in order.legs] == [2]
    assert 0 < order.legs[0].size < 10 and order.equity_after >= order.im_after
    leg = order.legs[0]
    assert leg.price == pytest.approx(leg.oracle_price * 1.05)
    assert leg.bonus_usd == pytest.approx(leg.size * leg.oracle_price * 0.05)


def test_liquidation_legs_come_riskiest_first() -> None:
    # At 20 % health nothing short of closing everything reaches IM; the legs come in order
    # of loss in the worst scenario (+20 %, vol up): calls, perps, then the puts (a gain).
    sizes = (-2.0, 0, -10.0, 0, -5.0, 0)
    mm, _ = margins(np.array(sizes))
    order = liquidate(sizes, equity=0.2 * mm)
    assert order is not None and order.closes_account
    assert [(leg.instrument, leg.size) for leg in order.legs] == [(2, 10.0), (0, 2.0), (4, 5.0)]


def test_liquidation_below_095_reaches_im_with_the_smallest_last_leg() -> None:
    sizes = (-2.0, 0, -10.0, 0, -5.0, 0)
    mm, _ = margins(np.array(sizes))
    order = liquidate(sizes, equity=0.9 * mm)
    assert order is not None and order.close_factor == 1.0 and not order.closes_account
    held = after(sizes, order)
    assert (order.mm_after, order.im_after) == pytest.approx(margins(held))
    assert order.equity_after >= order.im_after
    paid = sum(leg.bonus_usd for leg in order.legs)
    assert order.equity_after == pytest.approx(0.9 * mm - paid)
    # One contract-millionth less on the last leg and the account stays below IM.
    last = order.legs[-1]
    less = held.copy()
    less[last.instrument] -= 1e-6 * np.sign(last.size)
    assert order.equity_after + 1e-6 * last.bonus_usd / abs(last.size) < margins(less)[1]


def test_liquidation_when_equity_negative_then_closes_account() -> None:
    sizes = (1.0, 0, -10.0, 0, 0, 0)
    order = liquidate(sizes, equity=-100.0)
    assert order is not None and order.closes_account
    assert not after(sizes, order).any()
    assert order.legs[0].instrument == 2  # the short calls first
    sold = next(leg for leg in order.legs if leg.instrument == 0)
    assert sold.size == -1.0 and sold.price == pytest.approx(S / 1.05)


def test_liquidation_that_would_leave_dust_closes_everything() -> None:
    # 20 short calls at 20 % health: reaching IM needs ~85 % of them, which would leave
    # ~$600 of market value, under Aave's $1,000 minimum leftover.
    sizes = (0, 0, -20.0, 0, 0, 0)
    mm, _ = margins(np.array(sizes))
    order = liquidate(sizes, equity=0.2 * mm)
    assert order is not None and order.closes_account
    assert [(leg.instrument, leg.size) for leg in order.legs] == [(2, 20.0)]


def test_liquidation_of_dust_account_uses_full_close_factor() -> None:
    sizes = (-0.5, 0, 0, 0, 0, 0)  # $1,500 of perps
    mm, _ = margins(np.array(sizes))
    order = liquidate(sizes, equity=0.97 * mm)
    assert order is not None and order.close_factor == 1.0


def test_liquidation_of_standard_margined_account_uses_standard_im() -> None:
    sizes = (-2.0, 0, -10.0, 0, 0, 0)
    mm, _ = margins(np.array(sizes), portfolio=False)
    order = liquidate(sizes, equity=0.9 * mm, portfolio_margined=False)
    assert order is not None
    assert order.im_after == pytest.approx(margins(after(sizes, order), portfolio=False)[1])
    assert order.equity_after >= order.im_after


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-10, 10).map(lambda x: round(x, 2)), min_size=6, max_size=6),
    st.floats(-0.5, 0.999),
)
def test_liquidation_never_breaks_close_factor_and_ends_above_im_or_closed(
    sizes_: list[float], health: float
) -> None:
    sizes = tuple(sizes_)
    mm, _ = margins(np.array(sizes))
    if mm <= 0:
        return
    order = liquidate(sizes, equity=health * mm)
    assert order is not None
    gross = sum(abs(n) * v for n, v in zip(sizes, RISK.value, strict=True))
    traded = sum(abs(leg.size) * leg.oracle_price for leg in order.legs)
    assert traded <= order.close_factor * gross + 1e-6 or order.closes_account
    for leg in order.legs:
        assert abs(leg.size) <= abs(sizes[leg.instrument]) + 1e-12
        assert np.sign(leg.size) == -np.sign(sizes[leg.instrument])
    if order.close_factor == 1.0:
        assert order.closes_account or order.equity_after >= order.im_after


# --- hedging ------------------------------------------------------------------------------

HEDGE = HedgeParams()


def test_hedge_band_is_whalley_wilmott_half_width() -> None:
    # 100 short 30-day ATM calls: book gamma 100 x 7.7e-4 per USD.
    gamma = 100 * RISK.gamma[2]
    hand = (1.5 * 0.0005 * S * gamma**2 / 1e-4) ** (1 / 3)
    assert hedge_band(gamma, S, T30, 0.0, HEDGE) == pytest.approx(hand)
    assert 5.0 < hand < 5.3  # contracts of ETH
    assert hedge_band(0.0, S, T30, 0.0, HEDGE) == pytest.approx(1000.0 / S)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 0.01), st.floats(0.0, 0.01))
def test_hedge_band_widens_with_gamma_and_cost(g1: float, g2: float, c1: float, c2: float) -> None:
    lo_g, hi_g = sorted((g1, g2))
    lo_c, hi_c = sorted((c1, c2))
    assert hedge_band(lo_g, S, T30, 0.0, HedgeParams(cost=lo_c)) <= hedge_band(
        hi_g, S, T30, 0.0, HedgeParams(cost=hi_c)
    )


def test_hedge_order_brings_book_delta_back_to_target() -> None:
    positions = row(0, 0, -100.0, 0, 0, 0)
    delta = float(net_by_underlying(positions, RISK.delta, INST, 1)[0, 0])
    gamma = float(net_by_underlying(positions, RISK.gamma, INST, 1)[0, 0])
    order = hedge_order(
        delta=delta, gamma=gamma, target=0.0, spot=S, expiry_years=T30, params=HEDGE,
    )  # fmt: skip
    assert not order.inside
    assert delta == pytest.approx(-100 * RISK.delta[2])
    assert order.size == pytest.approx(-delta)
    assert delta + order.size == pytest.approx(order.target)
    assert order.band == pytest.approx(hedge_band(gamma, S, T30, 0.0, HEDGE))


def test_hedge_inside_band_is_marked_inside() -> None:
    kw = {"gamma": 0.077, "target": 0.0, "spot": S, "expiry_years": T30}
    assert hedge_order(delta=3.0, params=HEDGE, **kw).inside
    assert not hedge_order(delta=10.0, params=HEDGE, **kw).inside


def test_hedge_band_horizon_is_gamma_weighted_not_the_shortest_expiry() -> None:
    # The finding: the code took expiries.min() while the docstring said gamma-weighted. A
    # book of 100 90-day calls and one 1-day call: the long-dated gamma sets the horizon.
    gamma = np.array([100 * RISK.gamma[5], 1 * RISK.gamma[4]])
    expiry = np.array([90 / 365, 7 / 365])
    horizon = hedge_horizon(gamma, expiry)
    assert horizon == pytest.approx(float(np.abs(gamma) @ expiry / np.abs(gamma).sum()))
    assert horizon > 0.9 * 90 / 365
    assert hedge_horizon(np.zeros(2), expiry) == 0.0
    # at a positive rate a later horizon discounts more: a narrower band than min() gave
    g = float(gamma.sum())
    assert hedge_band(g, S, horizon, 0.05, HEDGE) < hedge_band(g, S, 7 / 365, 0.05, HEDGE)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1.0, 1.0), st.floats(0.0, 2.0)), min_size=1, max_size=5),
    st.floats(0.0, 0.2),
)
def test_hedge_band_lies_between_the_bands_of_the_shortest_and_longest_expiry(
    book: list[tuple[float, float]], rate: float
) -> None:
    gamma = np.array([g for g, _ in book])
    expiry = np.array([t for _, t in book])
    g = abs(float(gamma.sum()))
    band = hedge_band(g, S, hedge_horizon(gamma, expiry), rate, HEDGE)
    shortest = hedge_band(g, S, float(expiry.min()), rate, HEDGE)
    longest = hedge_band(g, S, float(expiry.max()), rate, HEDGE)
    assert longest * (1 - 1e-12) <= band <= shortest * (1 + 1e-12)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LiquidationParams(close_factor=0.0), "close_factor.*0.0"),
        (lambda: LiquidationParams(bonus=1.5), "bonus.*1.5"),
        (lambda: HedgeParams(risk_aversion=0.0), "risk_aversion.*0.0"),
    ],
)
def test_bad_parameters_raise_naming_field_and_value(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        build()


def test_liquidation_rejects_more_than_one_account() -> None:
    with pytest.raises(ValueError, match="positions must be one account's row"):
        liquidation_order(
            sp.csr_matrix(np.ones((2, 6))), 0.0, RISK, MARGIN, LIQ, portfolio_margined=True
        )


def test_put_positions_are_liquidated_at_a_put_price() -> None:
    sizes = (0, 0, 0, -10.0, 0, 0)
    mm, _ = margins(np.array(sizes))
    order = liquidate(sizes, equity=0.5 * mm)
    assert order is not None
    assert order.legs[0].instrument == 3 and INST.kind[3] == InstrumentKind.PUT
    assert order.legs[0].oracle_price == pytest.approx(RISK.value[3])


# --- the vectorized sizing against the per-account bisection it replaced ------------------


def _bisection_reference(
    sizes: np.ndarray, equity: float, risk, margin: MarginParams, portfolio: bool
) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    """The sizes held after liquidation, by the former per-account Python loop: legs in
    rank order, the last leg's fraction found by 60 halvings of account_margin calls."""
    n = sizes.size
    cols = np.flatnonzero(sizes)

    def margins_of(held: np.ndarray) -> tuple[float, float]:
        mm, im, _ = account_margin(row(*held), risk, margin, np.array([portfolio]))
        return float(mm[0]), float(im[0])

    mm, _ = margins_of(sizes)
    if not cols.size or mm <= 0 or equity >= mm:
        return None
    value = risk.value
    market = np.abs(sizes) * value
    gross = float(market.sum())
    factor = close_factor(equity / mm, gross, LIQ)
    worst = {}
    for u in set(risk.underlying[cols]):
        mine = [j for j in cols if risk.underlying[j] == u]
        pnl = [sum(sizes[j] * risk.scenario_pnl[j, s] for j in mine) for s in range(23)]
        worst[u] = int(np.argmin(pnl))
    loss = np.array([-sizes[j] * risk.scenario_pnl[j, worst[risk.underlying[j]]] if j in cols
                     else 0.0 for j in range(n)])  # fmt: skip
    ranked = sorted(cols, key=lambda j: (-loss[j], -market[j], j))
    b = LIQ.bonus
    per = np.where(sizes > 0, value * b / (1 + b), value * b)
    held, paid, budget = sizes.copy(), 0.0, factor * gross

    def reaches(j: int, f: float) -> bool:
        trial = held.copy()
        trial[j] = sizes[j] * (1 - f)
        return equity - paid - f * abs(sizes[j]) * per[j] >= margins_of(trial)[1]

    losing = [j for j in ranked if loss[j] > 0]
    for j in losing if factor < 1 and losing else ranked:
        if budget <= 1e-12 * gross:
            break
        most = 1.0 if market[j] <= budget else budget / market[j]
        f, reached = most, reaches(j, most)
        if reached:
            lo = 0.0
            for _ in range(60):
                mid = 0.5 * (lo + f)
                lo, f = (lo, mid) if reaches(j, mid) else (mid, f)
        held[j] = sizes[j] * (1 - f)
        paid += f * abs(sizes[j]) * per[j]
        budget -= f * market[j]
        if reached:
            break
    if held.any() and float((np.abs(held) * value).sum()) < LIQ.min_leftover_usd:
        held[:] = 0.0
    return held


TWO = Instruments(
    kind=[InstrumentKind.PERP, InstrumentKind.CALL, InstrumentKind.PUT] * 2,
    underlying=[0, 0, 0, 1, 1, 1],
    strike=[0.0, 3000.0, 2800.0, 0.0, 60_000.0, 55_000.0],
    expiry_years=[0.0, T30, 7 / 365, 0.0, T30, 90 / 365],
)
RISK_TWO = instrument_values(
    TWO, np.array([S, 60_000.0]), np.array([0.0, 0.6, 0.7, 0.0, 0.5, 0.55]),
    np.array([0.6, 0.5]), MARGIN,
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-10, 10).map(lambda x: round(x, 1)), min_size=6, max_size=6),
            st.floats(-0.5, 0.999),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([0.0, 0.5]),
)
def test_vectorized_liquidation_equals_the_bisection_it_replaced(
    accounts: list[tuple[list[float], float, bool]], offset: float
) -> None:
    # Tolerance: the bisection stops 2**-60 above the root of the last leg; the closed form
    # steps 1e-9 past it. Both are far below any lot size.
    margin = MarginParams(portfolio=PortfolioParams(cross_offset=offset))
    sizes = np.array([[s / (20 if j >= 3 else 1) for j, s in enumerate(a[0])] for a in accounts])
    pm = np.array([a[2] for a in accounts])
    mm, _, _ = account_margin(sp.csr_matrix(sizes), RISK_TWO, margin, pm)
    equity = np.array([a[1] for a in accounts]) * mm
    orders = liquidation_orders(sp.csr_matrix(sizes), equity, RISK_TWO, margin, LIQ, pm)
    for i, order in enumerate(orders):
        expected = _bisection_reference(sizes[i], float(equity[i]), RISK_TWO, margin, bool(pm[i]))
        if expected is None:
            assert order is None
            continue
        assert order is not None
        held = sizes[i].copy()
        for leg in order.legs:
            held[leg.instrument] += leg.size
        np.testing.assert_allclose(held, expected, rtol=1e-7, atol=1e-7 * np.abs(sizes[i]).max())
        single = liquidation_order(
            sp.csr_matrix(sizes[i : i + 1]), float(equity[i]), RISK_TWO, margin, LIQ,
            portfolio_margined=bool(pm[i]),
        )  # fmt: skip
        assert single == order  # an account's order does not depend on the others
