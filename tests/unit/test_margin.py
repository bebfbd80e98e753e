"""operators.margin: dYdX tiers, Derive SRM and PMRM, equity, health, the sparse reprice."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.greeks import black76 as black76_greeks
from operators.margin import (
    MAX_CROSS_OFFSET,
    InstrumentRisk,
    Instruments,
    LiquidityTier,
    MarginParams,
    OptionMarginParams,
    PortfolioParams,
    collateral_value,
    equity,
    health,
    instrument_values,
    net_by_underlying,
    portfolio_margin,
    reprice,
    standard_margin,
)
from operators.units import InstrumentKind

CASES = Path(__file__).parents[1] / "resources" / "margin" / "dydx_v4_liquidity_tier_cases.csv"
S = 3000.0
T30 = 30 / 365
PARAMS = MarginParams()


def black76(is_call: bool, F: float, K: float, T: float, sigma: float) -> float:
    """Scalar Black-76 with r = 0 from math.erf: the reference the tests reprice with."""
    N = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    sd = sigma * math.sqrt(T)
    d1 = math.log(F / K) / sd + 0.5 * sd
    d2 = d1 - sd
    if is_call:
        return F * N(d1) - K * N(d2)
    return K * N(-d2) - F * N(-d1)


def book() -> Instruments:
    """One underlying at $3,000: perp, spot, 30-day ATM call and put, 7-day 2,800 put,
    90-day 3,500 call."""
    return Instruments(
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


VOLS = np.array([0.0, 0.0, 0.6, 0.6, 0.7, 0.55])


def risk_at(atm_vol: float = 0.6, params: MarginParams = PARAMS):  # type: ignore[no-untyped-def]
    return instrument_values(book(), np.array([S]), VOLS, np.array([atm_vol]), params)


def row(*sizes: float) -> sp.csr_matrix:
    return sp.csr_matrix(np.array([sizes]))


# --- dYdX v4 liquidity tiers (the 22 cases of liquidity_tier_test.go) -----------------------


def _cases() -> list[dict[str, str]]:
    with CASES.open(newline="") as f:
        return list(csv.DictReader(f))


def _int(text: str) -> int:
    return int(text) if text else 0


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["case_name"])
def test_dydx_liquidity_tier_case(case: dict[str, str]) -> None:
    tier = LiquidityTier(
        initial_margin_ppm=_int(case["initial_margin_ppm"]),
        maintenance_fraction_ppm=_int(case["maintenance_fraction_ppm"]),
        open_interest_lower_cap=_int(case["open_interest_lower_cap"]),
        open_interest_upper_cap=_int(case["open_interest_upper_cap"]),
    )
    oi = _int(case["open_interest_notional"])
    expected = int(case["expected"])
    match case["test_function"]:
        case "TestLiquidityTierGetMaintenanceMarginPpm":
            assert tier.maintenance_margin_ppm() == expected
        case "TestGetInitialMarginQuoteQuantums":
            assert tier.initial_margin_quote_quantums(int(case["quote_quantums"]), oi) == expected
        case "TestGetAdjustedInitialMarginPpm":
            assert tier.adjusted_initial_margin_ppm(oi) == expected
        case other:
            pytest.fail(f"unknown test function {other}")


def test_dydx_cases_file_has_all_22_cases() -> None:
    assert len(_cases()) == 22


def test_default_tier_is_dydx_mid_cap_imf_5pct_mmf_3pct() -> None:
    assert LiquidityTier().fractions(0.0) == (0.05, 0.03)
    # Halfway between the 40M and 100M USDC caps: 5 % + 0.5 x 95 % = 52.5 %.
    assert LiquidityTier().fractions(70e6) == (0.525, 0.03)


# --- standard margin: dYdX for perps and spot, Derive SRM for options -----------------------


def test_standard_margin_of_perp_and_spot_is_notional_times_mmf_and_imf() -> None:
    mm, im = standard_margin(row(-2.0, 0.5, 0, 0, 0, 0), risk_at())
    assert mm[0] == pytest.approx(2.5 * S * 0.03)
    assert im[0] == pytest.approx(2.5 * S * 0.05)


def test_standard_margin_of_short_atm_call_follows_derive_srm() -> None:
    # ATM: otm = 0, so IM = max(0.15 - 0, 0.13) S; MM = 0.09 S (both less the call's value).
    mm, im = standard_margin(row(0, 0, -1.0, 0, 0, 0), risk_at())
    assert (mm[0], im[0]) == pytest.approx((0.09 * S, 0.15 * S))


def test_standard_margin_of_otm_call_is_floored_at_min_spot_req() -> None:
    # 3,500 call: otm = 500 / 3000 = 0.1667 > 0.15 - 0.13, so IM = 0.13 S.
    _, im = standard_margin(row(0, 0, 0, 0, 0, -1.0), risk_at())
    assert im[0] == pytest.approx(0.13 * S)


def test_standard_margin_of_short_puts_uses_mm_offset_and_mtm_floor() -> None:
    # 2,800 put: otm = 200 / 3000; IM = max((0.15 - 0.0667) S, 0.13 S) = 0.13 S, unless
    # 1.05 x (V + 0.09 S) - V is larger (it is not here).
    risk = risk_at()
    v = black76(False, S, 2800.0, 7 / 365, 0.7)
    mm, im = standard_margin(row(0, 0, 0, 0, -1.0, 0), risk)
    assert mm[0] == pytest.approx(0.09 * S)
    assert im[0] == pytest.approx(max(0.13 * S, 1.05 * (v + 0.09 * S) - v))
    # A deep in-the-money put (K = 3 S) is worth about 2 S, so 0.09 V beats 0.09 S.
    deep = Instruments(
        kind=[InstrumentKind.PUT], underlying=[0], strike=[3 * S], expiry_years=[T30]
    )
    r = instrument_values(deep, np.array([S]), np.array([0.6]), np.array([0.6]), PARAMS)
    mm, im = standard_margin(row(-1.0), r)
    assert mm[0] == pytest.approx(0.09 * r.value[0])
    assert im[0] == pytest.approx(1.05 * (1.09 * r.value[0]) - r.value[0])


def test_long_options_need_no_standard_margin() -> None:
    mm, im = standard_margin(row(0, 0, 3.0, 2.0, 1.0, 5.0), risk_at())
    assert (mm[0], im[0]) == (0.0, 0.0)


# --- portfolio margin ---------------------------------------------------------------------


def test_scenario_grid_is_derive_pmrm_default() -> None:
    moves, vol = PortfolioParams().scenarios()
    assert len(moves) == 23  # 7 spot moves x (up, none, down) + 2 tails
    assert moves[:3].tolist() == [-0.15] * 3 and vol[:3].tolist() == [1, 0, -1]
    assert moves[-2:].tolist() == [-0.2, 0.2] and vol[-2:].tolist() == [1, 1]


def test_portfolio_margin_of_short_call_and_long_perp_equals_hand_computation() -> None:
    # Short one 30-day ATM call (vol 60 %) and long half a perp, spot $3,000.
    # At 30 days the vol shock multiplier is (30/30)^0.3 = 1: vol x 1.6 up, x 0.7 down.
    risk = risk_at()
    value = black76(True, S, S, T30, 0.6)
    moves, vol_dir = PortfolioParams().scenarios()
    hand = []
    for move, d in zip(moves, vol_dir, strict=True):
        shocked = black76(True, S * (1 + move), S, T30, 0.6 * {1: 1.6, 0: 1.0, -1: 0.7}[d])
        hand.append(0.5 * S * move - (shocked - value))
    worst = int(np.argmin(hand))
    contingency = 0.5 * 0.03 * S + 1 * 0.02 * S  # perp 3 %, short option 2 % of spot
    mm, index = portfolio_margin(row(0.5, 0, -1.0, 0, 0, 0), risk)
    assert index[0] == worst == 22  # +20 % with vol up: the tail hurts the short call most
    assert mm[0] == pytest.approx(-hand[worst] + contingency, rel=1e-12)


def test_vol_shock_scales_with_30_over_dte_to_the_power_p() -> None:
    risk = risk_at()
    up = 9  # spot unchanged, vol up
    for j, (K, T, sigma, is_call) in enumerate(
        [(2800.0, 7 / 365, 0.7, False), (3500.0, 90 / 365, 0.55, True)], start=4
    ):
        power = 0.3 if T * 365 <= 30 else 0.13
        m = (30 / (T * 365)) ** power
        hand = black76(is_call, S, K, T, sigma * (1 + 0.6 * m)) - black76(is_call, S, K, T, sigma)
        assert risk.scenario_pnl[j, up] == pytest.approx(hand, rel=1e-10)


def test_spot_range_widens_with_atm_vol_against_reference_vol() -> None:
    # ATM vol 120 % against 80 %: every spot move x 1.5; at 240 % capped at 2x.
    moves, _ = PortfolioParams().scenarios()
    assert risk_at(1.2).scenario_pnl[0] == pytest.approx(S * moves * 1.5)
    assert risk_at(2.4).scenario_pnl[0] == pytest.approx(S * moves * 2.0)
    assert risk_at(0.3).scenario_pnl[0] == pytest.approx(S * moves)  # never narrower


def test_portfolio_margin_im_is_factor_times_mm() -> None:
    risk = risk_at()
    positions = row(0.5, 0, -1.0, 0, 0, 0)
    mm, _ = portfolio_margin(positions, risk)
    out = reprice(positions, np.zeros(1), np.zeros(1), risk, PARAMS, np.array([True]))
    assert out.im[0] == pytest.approx(1.25 * mm[0])


# --- collateral, equity, health ------------------------------------------------------------


def test_collateral_haircut_matches_aave_health_factor_example() -> None:
    # Aave docs: $10,000 of ETH at an 80 % liquidation threshold against $6,000 borrowed
    # gives HF = 10000 x 0.8 / 6000 = 1.333. A haircut of 1 - LT on the supply and none on
    # the debt (a negative balance) gives the same threshold-weighted collateral.
    amounts = sp.csr_matrix(np.array([[5.0, -6000.0]]))  # 5 ETH at $2,000; -6,000 GHO
    value = collateral_value(amounts, np.array([2000.0, 1.0]), np.array([0.2, 0.0]))
    assert value[0] == pytest.approx(10_000 * 0.8 - 6000)
    assert (value[0] + 6000) / 6000 == pytest.approx(1.3333333, rel=1e-6)


def test_equity_is_collateral_plus_unrealised_pnl() -> None:
    # 2 perps bought at $2,900 (cost 5,800) marked at $3,000; a short call sold at $250.
    risk = risk_at()
    positions = row(2.0, 0, -1.0, 0, 0, 0)
    cost = np.array([2 * 2900.0 - 250.0])
    eq = equity(np.array([1000.0]), positions, risk, cost)
    assert eq[0] == pytest.approx(1000 + 2 * (S - 2900) + (250 - risk.value[2]))


def test_health_is_equity_over_mm_and_inf_without_margin() -> None:
    assert health(np.array([150.0, 5.0, -1.0]), np.array([100.0, 0.0, 10.0])).tolist() == [
        1.5,
        math.inf,
        -0.1,
    ]


def test_haircut_defaults_and_unknown_token() -> None:
    assert PARAMS.haircut_vector(["USDC", "ETH", "BTC"]).tolist() == [0.0, 0.2, 0.25]
    with pytest.raises(ValueError, match="collateral tokens must be listed"):
        PARAMS.haircut_vector(["DOGE"])


# --- validation names the field and the value -------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LiquidityTier(initial_margin_ppm=2_000_000), "initial_margin_ppm"),
        (
            lambda: LiquidityTier(open_interest_lower_cap=5, open_interest_upper_cap=1),
            "open_interest_lower_cap",
        ),
        (lambda: OptionMarginParams(mm_offset_scale=0.5), "mm_offset_scale.*0.5"),
        (lambda: PortfolioParams(im_factor=0.9), "im_factor.*0.9"),
        (lambda: PortfolioParams(tail_spot_shocks=(-0.6,)), "spot_shocks.*-0.6"),
        (lambda: PortfolioParams(vol_down=0.5), "vol_down.*0.5"),
        (lambda: PortfolioParams(cross_offset=0.6), "cross_offset.*0.6"),
        (lambda: PortfolioParams(cross_offset=float("inf")), "cross_offset.*inf"),
        (lambda: MarginParams(haircuts={"ETH": 1.5}), "haircuts.*1.5"),
        (
            lambda: Instruments(
                kind=[InstrumentKind.CALL], underlying=[0], strike=[0.0], expiry_years=[1.0]
            ),
            r"strike\[0\]",
        ),
        (lambda: Instruments(kind=[7], underlying=[0], strike=[0.0], expiry_years=[0.0]), "kind"),
    ],
)
def test_bad_parameters_raise_naming_field_and_value(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        build()


def test_negative_option_vol_raises() -> None:
    with pytest.raises(ValueError, match=r"vol\[2\]"):
        instrument_values(book(), np.array([S]), -VOLS, np.array([0.6]), PARAMS)


# --- properties -------------------------------------------------------------------------

OPTIONS = [2, 3, 4, 5]
sizes = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False).map(lambda x: round(x, 3))
books = st.lists(sizes, min_size=6, max_size=6)


@settings(max_examples=200, deadline=None)
@given(books, st.sampled_from(OPTIONS), st.floats(min_value=0.001, max_value=10.0))
def test_adding_long_option_never_raises_margin_beyond_its_premium(
    sizes_: list[float], j: int, q: float
) -> None:
    risk = risk_at()
    before = np.array(sizes_)
    after = before.copy()
    after[j] += q
    pm_before, _ = portfolio_margin(row(*before), risk)
    pm_after, _ = portfolio_margin(row(*after), risk)
    assert pm_after[0] <= pm_before[0] + q * risk.value[j] + 1e-9
    sm_before, _ = standard_margin(row(*before), risk)
    sm_after, _ = standard_margin(row(*after), risk)
    assert sm_after[0] <= sm_before[0] + 1e-9


@settings(max_examples=200, deadline=None)
@given(books, st.sampled_from(OPTIONS), st.floats(min_value=0.0, max_value=5.0))
def test_standard_margin_is_monotonic_in_short_option_size(
    sizes_: list[float], j: int, extra: float
) -> None:
    risk = risk_at()
    more = np.array(sizes_)
    more[j] -= extra
    mm, im = standard_margin(row(*sizes_), risk)
    mm_more, im_more = standard_margin(row(*more), risk)
    assert mm_more[0] >= mm[0] - 1e-9 and im_more[0] >= im[0] - 1e-9


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(OPTIONS), st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_portfolio_margin_of_naked_short_is_monotonic_in_size(j: int, a: float, b: float) -> None:
    risk = risk_at()
    small, large = sorted((a, b))
    sizes_small, sizes_large = np.zeros(6), np.zeros(6)
    sizes_small[j], sizes_large[j] = -small, -large
    assert portfolio_margin(row(*sizes_large), risk)[0][0] >= (
        portfolio_margin(row(*sizes_small), risk)[0][0] - 1e-9
    )


@settings(max_examples=100, deadline=None)
@given(books, st.floats(min_value=1.0, max_value=10.0))
def test_scaling_a_book_up_scales_its_portfolio_margin(sizes_: list[float], k: float) -> None:
    risk = risk_at()
    mm, _ = portfolio_margin(row(*sizes_), risk)
    mm_k, _ = portfolio_margin(row(*(k * np.array(sizes_))), risk)
    assert mm_k[0] == pytest.approx(k * mm[0], rel=1e-9, abs=1e-9)


def _slow_reference(  # type: ignore[no-untyped-def]
    dense: np.ndarray, risk, cost, collateral, underlying, offset: float = 0.0
) -> tuple[list, list, list]:
    """Per account, per underlying, per scenario, per instrument: the loops the sparse
    products replace. Each underlying takes its own worst scenario; ``offset`` credits that
    share of the netting a common scenario would give."""
    mms, worsts, equities = [], [], []
    scenarios = range(risk.scenario_pnl.shape[1])
    for a in range(dense.shape[0]):
        losses, worst_of = {}, {}
        for u in sorted({int(underlying[j]) for j in np.flatnonzero(dense[a])}):
            pnl = [
                sum(dense[a, j] * risk.scenario_pnl[j, s] for j in range(dense.shape[1])
                    if underlying[j] == u)
                for s in scenarios
            ]  # fmt: skip
            worst_of[u] = min(scenarios, key=lambda s: (pnl[s], s))
            losses[u] = max(-pnl[worst_of[u]], 0.0)
        joint = [
            sum(dense[a, j] * risk.scenario_pnl[j, s] for j in range(dense.shape[1]))
            for s in scenarios
        ]
        total = sum(losses.values())
        scenario_loss = total - offset * (total - max(-min(joint), 0.0))
        top = max(sorted(losses), key=lambda u: losses[u], default=None)
        contingency = sum(
            abs(n) * risk.contingency_abs[j] + max(-n, 0.0) * risk.contingency_short[j]
            for j, n in enumerate(dense[a])
        )
        mms.append(scenario_loss + contingency)
        worsts.append(0 if top is None else worst_of[top])
        value = sum(n * risk.value[j] for j, n in enumerate(dense[a]))
        equities.append(collateral[a] + value - cost[a])
    return mms, worsts, equities


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from([0.0, 0.3, 0.5]))
def test_sparse_reprice_equals_slow_per_account_loop(seed: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    n_underlyings, n_accounts = 3, 40
    kinds = np.array(
        [
            InstrumentKind.PERP,
            InstrumentKind.SPOT,
            InstrumentKind.CALL,
            InstrumentKind.PUT,
            InstrumentKind.CALL,
            InstrumentKind.PUT,
        ]
        * n_underlyings
    )
    inst = Instruments(
        kind=kinds,
        # shuffled, so that the instruments are not ordered by underlying
        underlying=rng.permutation(np.repeat(np.arange(n_underlyings), 6)),
        strike=np.where(kinds >= InstrumentKind.CALL, rng.uniform(2000, 4000, kinds.size), 0.0),
        expiry_years=np.where(
            kinds >= InstrumentKind.CALL, rng.uniform(0.001, 0.5, kinds.size), 0.0
        ),
    )
    spot = rng.uniform(2500, 3500, n_underlyings)
    risk = instrument_values(
        inst, spot, rng.uniform(0.2, 1.2, inst.n), rng.uniform(0.3, 1.5, n_underlyings), PARAMS
    )
    shape = (n_accounts, inst.n)
    dense = np.where(rng.random(shape) < 0.3, rng.normal(0, 3, shape), 0.0)
    cost = rng.normal(0, 1000, n_accounts)
    collateral = rng.uniform(0, 20_000, n_accounts)
    params = MarginParams(portfolio=PortfolioParams(cross_offset=offset))
    out = reprice(sp.csr_matrix(dense), cost, collateral, risk, params, np.ones(n_accounts, bool))
    mms, worsts, equities = _slow_reference(dense, risk, cost, collateral, inst.underlying, offset)
    assert out.mm == pytest.approx(mms, rel=1e-9, abs=1e-6)
    assert out.equity == pytest.approx(equities, rel=1e-9, abs=1e-6)
    has_risk = np.abs(dense).sum(axis=1) > 0
    assert out.worst[has_risk].tolist() == np.array(worsts)[has_risk].tolist()


def test_reprice_picks_standard_or_portfolio_margin_per_account() -> None:
    risk = risk_at()
    positions = sp.csr_matrix(np.array([[0.5, 0, -1.0, 0, 0, 0]] * 2))
    out = reprice(positions, np.zeros(2), np.full(2, 5000.0), risk, PARAMS, np.array([True, False]))
    pm, _ = portfolio_margin(positions, risk)
    sm_mm, sm_im = standard_margin(positions, risk)
    assert out.mm.tolist() == [pm[0], sm_mm[1]]
    assert out.im.tolist() == [1.25 * pm[0], sm_im[1]]
    assert out.health.tolist() == pytest.approx((out.equity / out.mm).tolist())


def test_net_by_underlying_sums_delta_per_underlying() -> None:
    inst = Instruments(
        kind=[InstrumentKind.PERP, InstrumentKind.PERP],
        underlying=[0, 1],
        strike=[0, 0],
        expiry_years=[0, 0],
    )
    risk = instrument_values(inst, np.array([S, 60_000.0]), np.zeros(2), np.ones(2), PARAMS)
    net = net_by_underlying(sp.csr_matrix(np.array([[2.0, -1.0]])), risk.delta, inst, 2)
    assert net.tolist() == [[2.0, -1.0]]


def test_instrument_greeks_are_per_unit_of_spot_at_a_nonzero_rate() -> None:
    # Central differences of the value in spot at rate 5 %, h = 0.1 USD: truncation
    # h^2 V''' / 6 up to 5e-9 (the 7-day put's V''' ~ 3e-6 per USD^2), rounding ~ 1e-13.
    params = MarginParams(rate=0.05)
    inst = book()

    def values(spot: float) -> np.ndarray:
        return instrument_values(inst, np.array([spot]), VOLS, np.array([0.6]), params).value

    risk = instrument_values(inst, np.array([S]), VOLS, np.array([0.6]), params)
    h = 0.1
    up, mid, down = values(S + h), values(S), values(S - h)
    np.testing.assert_allclose(risk.delta, (up - down) / (2 * h), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(risk.gamma, (up - 2 * mid + down) / h**2, rtol=1e-4, atol=1e-8)
    # vega and theta are Black-76's, 0 for spot and perps (theta with the forward fixed)
    greeks = black76_greeks(
        inst.kind[2:] == InstrumentKind.CALL,
        S * np.exp(0.05 * inst.expiry_years[2:]),
        inst.strike[2:],
        inst.expiry_years[2:],
        0.05,
        VOLS[2:],
    )
    assert risk.vega[:2].tolist() == risk.theta[:2].tolist() == [0.0, 0.0]
    assert risk.vega[2:].tolist() == greeks.vega.tolist()
    assert risk.theta[2:].tolist() == greeks.theta.tolist()


def _btc_eth_perps() -> InstrumentRisk:
    inst = Instruments(
        kind=[InstrumentKind.PERP, InstrumentKind.PERP], underlying=[0, 1], strike=[0, 0],
        expiry_years=[0, 0],
    )  # fmt: skip
    return instrument_values(
        inst, np.array([60_000.0, 3_000.0]), np.zeros(2), np.ones(2) * 0.5, PARAMS
    )


def test_300k_long_btc_perp_against_300k_short_eth_perp_is_charged_both_losses() -> None:
    # The finding: netted as if perfectly correlated, this book was charged the add-ons
    # only (scenario loss 0, MM 18,000). Per underlying, BTC loses 20 % in the -20 % tail
    # and ETH 20 % in the +20 % tail: 60,000 each, plus 3 % add-ons on 600,000 of notional.
    risk = _btc_eth_perps()
    book = sp.csr_matrix(np.array([[5.0, -100.0]]))  # $300k each
    mm, worst = portfolio_margin(book, risk)
    assert mm[0] == pytest.approx(60_000.0 + 60_000.0 + 18_000.0)
    moves, _ = PortfolioParams().scenarios()
    assert moves[worst[0]] == -0.20  # BTC's worst (ties with ETH's: the lower underlying)
    # An offset is explicit and bounded: at most half of the netting is credited.
    half, _ = portfolio_margin(book, risk, cross_offset=0.5)
    assert half[0] == pytest.approx(60_000.0 + 18_000.0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=2, max_size=2),
    st.floats(0.0, MAX_CROSS_OFFSET),
)
def test_margin_per_underlying_is_the_sum_alone_and_an_offset_credits_at_most_half(
    sizes_: list[float], offset: float
) -> None:
    risk = _btc_eth_perps()
    both = portfolio_margin(sp.csr_matrix(np.array([sizes_])), risk, offset)[0][0]
    alone = [
        portfolio_margin(sp.csr_matrix(np.array([[sizes_[0], 0.0]])), risk)[0][0],
        portfolio_margin(sp.csr_matrix(np.array([[0.0, sizes_[1]]])), risk)[0][0],
    ]
    full = portfolio_margin(sp.csr_matrix(np.array([sizes_])), risk)[0][0]
    assert full == pytest.approx(sum(alone), rel=1e-12, abs=1e-9)
    assert both <= full + 1e-9 and both >= max(alone) * (1 - MAX_CROSS_OFFSET) - 1e-9
