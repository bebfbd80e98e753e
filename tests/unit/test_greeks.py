"""operators.greeks against vollib, Haug (via QuantLib's test suite), Hull and QuantLib itself.

Our conventions: vega per 1.00 vol, theta = dV/dt per year, rho per 1.00; Black-76 deltas and
rho are taken with the forward held fixed, BSM's with the spot held fixed. References that
quote other units (per vol point, per day) are converted in the test, never in the code.
The fixtures and their origin are described in tests/resources/SOURCES.md.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import QuantLib as ql  # a dev dependency: missing is a failure, not a skip
from hypothesis import given
from hypothesis import strategies as st

from flows.cli.greeks_csv import OUTPUT_COLUMNS, greeks_csv
from operators.greeks import Greeks, black76, black76_price, bsm, validate

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "greeks"
GREEK_NAMES = ("price", "delta", "gamma", "vega", "theta", "rho")


# --- vollib's 101 Black-Scholes cases ------------------------------------------------------


def _vollib_cases() -> dict[str, np.ndarray]:
    data = json.loads((RESOURCES / "py_vollib_test_data.json").read_text())
    table = np.array(data["data"], dtype=np.float64)
    return {name: table[:, i] for i, name in enumerate(data["columns"])}


@pytest.mark.parametrize(
    ("is_call", "prefix", "price_column"), [(True, "C", "bs_call"), (False, "P", "bs_put")]
)
def test_vollib_101_cases_match_price_and_greeks(
    is_call: bool, prefix: str, price_column: str
) -> None:
    # The file's conventions, checked against its own rows: Black-Scholes with no dividend
    # (q = 0), R a continuous rate, t in years, v the vol; theta per year (deep-ITM put row:
    # PT = r K exp(-rT) = 48.77), vega and rho per 1.00 (PR = -T K exp(-rT) = -487.65), so
    # they are ours unchanged. Values are printed to ~10 significant digits (6 in e-notation),
    # hence atol 1e-6 (the largest values, ~2e3, carry 6 decimals) and rtol 1e-5.
    c = _vollib_cases()
    assert len(c["S"]) == 101
    g = bsm(is_call, c["S"], c["K"], c["t"], c["R"], 0.0, c["v"])
    np.testing.assert_allclose(g.price, c[price_column], rtol=1e-5, atol=1e-6)
    for name, suffix in (
        ("delta", "D"),
        ("gamma", "G"),
        ("theta", "T"),
        ("vega", "V"),
        ("rho", "R"),
    ):
        ref = c[prefix + suffix]
        np.testing.assert_allclose(getattr(g, name), ref, rtol=1e-5, atol=1e-6, err_msg=name)


# --- Haug (QuantLib test suite), vollib docstrings and Hull (greeks_reference_cases.csv) -----


def _reference_rows() -> list[dict[str, str]]:
    with (RESOURCES / "greeks_reference_cases.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _reference_value(row: dict[str, str]) -> float:
    """Our number for one reference row, in the row's own units and conventions."""
    is_call = row["type"] == "call"
    s, k, r, q, t, vol = (float(row[c]) for c in ("S_or_F", "K", "r", "q", "T", "vol"))
    if row["source"].startswith("QuantLib test-suite/europeanoption.cpp testValues"):
        t = round(t * 360) / 360  # QuantLib built the expiry as round(T*360) days, Actual360
    model = row["model"]
    if model.startswith("BSM"):
        g = bsm(is_call, s, k, t, r, q, vol)
    elif model == "BS":
        g = bsm(is_call, s, k, t, r, 0.0, vol)
    elif model == "Black-76":
        g = black76(is_call, s, k, t, r, vol)
    elif model == "Black-76 undiscounted":
        g = black76(is_call, s, k, t, 0.0, vol)  # undiscounted is Black-76 with r = 0
    else:
        raise AssertionError(f"unknown model {model!r}")
    derived: dict[str, Callable[[Greeks], float]] = {
        "vega_per_1pct": lambda g: float(g.vega) / 100,
        "rho_per_1pct": lambda g: float(g.rho) / 100,
        "theta_per_day": lambda g: float(g.theta) / 365,
        "elasticity": lambda g: float(g.delta) * s / float(g.price),
        # dV/dq per 1.00 with S, r fixed: -T S exp(-qT) w N(w d1) = -T S delta
        "dividendRho": lambda g: -t * s * float(g.delta),
    }
    quantity = row["quantity"]
    return derived[quantity](g) if quantity in derived else float(getattr(g, quantity))


@pytest.mark.parametrize(
    "row",
    _reference_rows(),
    ids=lambda row: f"{row['model']}-{row['type']}-{row['quantity']}-{row['S_or_F']}-{row['vol']}",
)
def test_reference_case_within_its_tolerance(row: dict[str, str]) -> None:
    # Each row carries its own absolute tolerance: 1e-4 for Haug's 4-decimal tables, 1e-2 or
    # 1e-3 for Hull's rounded textbook numbers, 1e-6 for vollib's computed values.
    assert abs(_reference_value(row) - float(row["expected"])) <= float(row["tolerance_abs"])


def test_reference_cases_cover_all_72_rows() -> None:
    assert len(_reference_rows()) == 72


# --- Hull examples from vollib's ref_python doctests not in the CSV ------------------------


def test_hull_black76_call_on_futures_example() -> None:
    # Hull (Black's model, eq. 16.9): F = 620, K = 600, r = 5 %, sigma = 20 %, T = 0.5:
    # textbook 44.19 (2 decimals; vollib ref_python/black, computed 44.1868533121).
    price = black76_price(True, 620.0, 600.0, 0.5, 0.05, 0.2)
    assert abs(price - 44.19) < 0.01
    assert abs(price - 44.1868533121) < 1e-9  # vollib's 12-digit value, rounded at 1e-10


def test_hull_black76_put_on_futures_example() -> None:
    # Hull (eq. 16.10): F = K = 20, r = 9 %, sigma = 25 %, T = 4 months: textbook 1.12.
    price = black76_price(False, 20.0, 20.0, 4 / 12, 0.09, 0.25)
    assert abs(price - 1.12) < 0.01
    assert abs(price - 1.11664145656) < 1e-10  # vollib's 12-digit value


def test_haug_bs_call_to_vollib_precision() -> None:
    # vollib ref_python/black_scholes: S = 60, K = 65, T = 0.25, r = 8 %, sigma = 30 %
    # (Haug p. 2); vollib asserts 2.13336844492 to 1e-11, so do we.
    assert abs(bsm(True, 60.0, 65.0, 0.25, 0.08, 0.0, 0.3).price - 2.13336844492) < 1e-11


def test_vollib_black_doctest_to_vollib_precision() -> None:
    # vollib ref_python/black: F = K = 100, r = 2 %, sigma = 20 %, T = 0.5, to 1e-12.
    assert abs(black76_price(True, 100.0, 100.0, 0.5, 0.02, 0.2) - 5.5811067246048118) < 1e-12


# --- QuantLib as the peer on a seeded random grid -------------------------------------------


def _quantlib_grid(n: int = 2000, seed: int = 20240515) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = rng.integers(1, 3 * 365, n)  # whole days: T = days / 365 exactly (Actual365Fixed)
    sigma = rng.uniform(0.05, 2.0, n)
    s = np.exp(rng.uniform(np.log(1.0), np.log(1e5), n))
    # strikes from 6 standard deviations in the money to 6 out of it
    k = s * np.exp(rng.uniform(-6.0, 6.0, n) * sigma * np.sqrt(days / 365))
    return {
        "is_call": rng.random(n) < 0.5,
        "S": s,
        "K": k,
        "days": days,
        "T": days / 365,
        "r": rng.uniform(-0.02, 0.15, n),
        "q": rng.uniform(-0.05, 0.15, n),
        "sigma": sigma,
    }


def _quantlib_greeks(grid: dict[str, np.ndarray], black: bool) -> np.ndarray:
    """QuantLib's (n, 6) price and Greeks: AnalyticEuropeanEngine with flat curves."""
    today = ql.Date(15, ql.May, 2024)
    ql.Settings.instance().evaluationDate = today
    day_count = ql.Actual365Fixed()

    def curve(rate: float) -> object:
        return ql.YieldTermStructureHandle(ql.FlatForward(today, rate, day_count))  # continuous

    rows = []
    for is_call, s, k, days, r, q, sigma in zip(
        *(grid[c] for c in ("is_call", "S", "K", "days", "r", "q", "sigma")), strict=True
    ):
        spot = ql.QuoteHandle(ql.SimpleQuote(float(s)))
        vol = ql.BlackVolTermStructureHandle(
            ql.BlackConstantVol(today, ql.NullCalendar(), float(sigma), day_count)
        )
        if black:  # BlackProcess: the underlying is the forward, its dividend curve is r's
            process = ql.BlackProcess(spot, curve(float(r)), vol)
        else:
            process = ql.BlackScholesMertonProcess(spot, curve(float(q)), curve(float(r)), vol)
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, float(k))
        option = ql.VanillaOption(payoff, ql.EuropeanExercise(today + int(days)))
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        # QuantLib's rho moves r with the dividend curve fixed; BlackProcess's dividend curve
        # is r itself, so F fixed (our Black-76 rho) means moving both: rho + dividendRho.
        rho = option.rho() + option.dividendRho() if black else option.rho()
        rows.append(
            [option.NPV(), option.delta(), option.gamma(), option.vega(), option.theta(), rho]
        )
    return np.array(rows)


@pytest.mark.parametrize("black", [False, True], ids=["bsm", "black76"])
def test_quantlib_agrees_on_2000_seeded_points(black: bool) -> None:
    # Tolerance: both sides are the closed-form Black formula in double precision, so they
    # differ by rounding only, which is of order eps * (S + K) in each Greek's units
    # (S + K for price, vega, theta; (S + K) T for rho; (S + K) / S^2 for gamma; 1 for delta):
    # atol = 1e-13 of that scale (observed <= 1.2e-15). rtol = 1e-10 because QuantLib's
    # CumulativeNormalDistribution switches to an asymptotic series below 1e-8, where its
    # relative error reaches ~1e-7 (about 4e-16 absolute); relative differences up to 1.1e-10
    # appear on the tiny deep-OTM values it feeds, far below atol in absolute terms.
    grid = _quantlib_grid()
    ref = _quantlib_greeks(grid, black)
    s, k, t = grid["S"], grid["K"], grid["T"]
    if black:
        g = black76(grid["is_call"], s, k, t, grid["r"], grid["sigma"])
    else:
        g = bsm(grid["is_call"], s, k, t, grid["r"], grid["q"], grid["sigma"])
    scales = {
        "price": s + k,
        "delta": np.ones_like(s),
        "gamma": (s + k) / s**2,
        "vega": s + k,
        "theta": s + k,
        "rho": (s + k) * t,
    }
    for j, name in enumerate(GREEK_NAMES):
        _assert_close(getattr(g, name), ref[:, j], atol=1e-13 * scales[name], rtol=1e-10, what=name)


def _assert_close(
    ours: np.ndarray, ref: np.ndarray, *, atol: np.ndarray | float, rtol: float, what: str
) -> None:
    """Elementwise |ours - ref| <= atol + rtol |ref|, naming the first offenders."""
    err = np.abs(ours - ref)
    bad = ~(err <= atol + rtol * np.abs(ref))
    assert not bad.any(), (
        f"{what}: rows {np.flatnonzero(bad)[:5]}, ours {ours[bad][:3]}, ref {ref[bad][:3]}"
    )


# --- properties (hypothesis) ----------------------------------------------------------------

# Inputs in the valid domain, including the edges T = 0 and sigma = 0. Strikes are drawn
# around the forward in units of total standard deviation, up to 8 either side.
underlying_st = st.floats(1e-2, 1e6)
moneyness_st = st.floats(-8.0, 8.0)
expiry_st = st.one_of(st.just(0.0), st.floats(1e-6, 10.0))
vol_st = st.one_of(st.just(0.0), st.floats(1e-4, 3.0))
rate_st = st.floats(-0.05, 0.25)


def _strike(f: float, moneyness: float, sigma: float, t: float) -> float:
    """A strike ``moneyness`` total standard deviations from ``f`` (at least 1 % vol-year)."""
    return f * float(np.exp(moneyness * max(sigma * np.sqrt(t), 0.01)))


@given(underlying_st, moneyness_st, expiry_st, rate_st, rate_st, vol_st)
def test_put_call_parity_holds(
    s: float, m: float, t: float, r: float, q: float, sigma: float
) -> None:
    # C - P = exp(-rT) (F - K); rounding in D (F N(d1) - K N(d2)) is of order eps (F + K).
    k = _strike(s, m, sigma, t)
    b = black76([True, False], s, k, t, r, sigma)  # s is the forward
    assert abs((b.price[0] - b.price[1]) - np.exp(-r * t) * (s - k)) <= 1e-13 * (s + k)
    fwd = s * np.exp((r - q) * t)
    g = bsm([True, False], s, k, t, r, q, sigma)
    assert abs((g.price[0] - g.price[1]) - np.exp(-r * t) * (fwd - k)) <= 1e-13 * (fwd + k + s)


@given(st.booleans(), underlying_st, moneyness_st, expiry_st, rate_st, rate_st, vol_st)
def test_greeks_are_finite_signed_and_bounded(
    is_call: bool, s: float, m: float, t: float, r: float, q: float, sigma: float
) -> None:
    k = _strike(s, m, sigma, t)
    for g, carry, fwd in (
        (black76(is_call, s, k, t, r, sigma), np.exp(-r * t), s),
        (bsm(is_call, s, k, t, r, q, sigma), np.exp(-q * t), s * np.exp((r - q) * t)),
    ):
        for name in GREEK_NAMES:
            assert np.isfinite(getattr(g, name)), name
        assert abs(g.delta) <= carry  # <= 1 for Black-76 with r >= 0; e^{-qT} for BSM
        assert g.delta * (1 if is_call else -1) >= 0
        assert g.gamma >= 0
        assert g.vega >= 0
        # no-arbitrage bounds: discounted intrinsic on the forward <= V <= D F (call), D K (put)
        discount = np.exp(-r * t)
        slack = 1e-13 * (fwd + k)
        intrinsic = discount * max((fwd - k) if is_call else (k - fwd), 0.0)
        upper = discount * (fwd if is_call else k)
        assert intrinsic - slack <= g.price <= upper + slack


@given(underlying_st, moneyness_st, expiry_st, rate_st, rate_st, vol_st)
def test_call_and_put_share_gamma_and_vega(
    s: float, m: float, t: float, r: float, q: float, sigma: float
) -> None:
    k = _strike(s, m, sigma, t)
    for g in (black76([True, False], s, k, t, r, sigma), bsm([True, False], s, k, t, r, q, sigma)):
        assert g.gamma[0] == g.gamma[1]
        assert g.vega[0] == g.vega[1]


@given(st.booleans(), underlying_st, moneyness_st, expiry_st, rate_st, rate_st, vol_st)
def test_bsm_is_black76_on_the_forward(
    is_call: bool, s: float, m: float, t: float, r: float, q: float, sigma: float
) -> None:
    # Same price and vega; delta and gamma by the chain rule dF/dS = exp((r - q) T).
    k = _strike(s, m, sigma, t)
    growth = np.exp((r - q) * t)
    g = bsm(is_call, s, k, t, r, q, sigma)
    b = black76(is_call, s * growth, k, t, r, sigma)
    scale = 1e-12 * (s * growth + k)
    assert abs(g.price - b.price) <= scale
    assert abs(g.vega - b.vega) <= 1e-12 * abs(b.vega) + scale
    assert abs(g.delta - b.delta * growth) <= 1e-12
    assert abs(g.gamma - b.gamma * growth**2) <= 1e-12 * abs(g.gamma)


# Finite differences pin the units (vega per 1.00, theta per year, rho per 1.00). They need a
# smooth price, so T >= 0.02 y, sigma >= 0.05 and strikes within 4 standard deviations; the
# spot/forward steps are relative to the total standard deviation sigma sqrt(T). A central
# difference with step h has a truncation error ~ h^2 (relative, covered by rtol 1e-5) and a
# rounding error ~ eps (F + K) / h^order (absolute, "noise" below). 20 x noise leaves ~6x room
# over the worst of 200,000 seeded trials (gamma, which needed rtol 1e-5 + 3.5 x noise).
EPS = float(np.finfo(np.float64).eps)
smooth_st = st.tuples(
    st.booleans(),
    st.floats(1.0, 1e5),
    st.floats(-4.0, 4.0),
    st.floats(0.02, 5.0),
    st.floats(-0.02, 0.2),
    st.floats(-0.05, 0.2),
    st.floats(0.05, 2.0),
)


def _fd_check(name: str, fd: float, analytic: float, noise: float) -> None:
    assert abs(fd - analytic) <= 1e-5 * abs(analytic) + 20 * noise, (name, fd, analytic)


def _fd_checks(
    g: Greeks, v: Callable[..., float], x: float, k: float, t: float, r: float, sigma: float
) -> None:
    """Central differences of ``v(x=, t=, r=, sigma=)`` against ``g`` (x is F or S)."""
    value = x + k  # the scale of V and of its rounding
    h = 1e-4 * x * sigma * np.sqrt(t)
    _fd_check("delta", (v(x=x + h) - v(x=x - h)) / (2 * h), float(g.delta), EPS * value / h)
    h = 1e-3 * x * sigma * np.sqrt(t)
    gamma = (v(x=x + h) - 2 * v() + v(x=x - h)) / h**2
    _fd_check("gamma", gamma, float(g.gamma), EPS * value / h**2)
    h = 1e-5
    vega = (v(sigma=sigma + h) - v(sigma=sigma - h)) / (2 * h)
    _fd_check("vega", vega, float(g.vega), EPS * value / h)
    _fd_check("rho", (v(r=r + h) - v(r=r - h)) / (2 * h), float(g.rho), EPS * value / h)
    h = 1e-5 * t
    theta = -(v(t=t + h) - v(t=t - h)) / (2 * h)  # dV/dt = -dV/dT, per year
    _fd_check("theta", theta, float(g.theta), EPS * value / h)


@given(smooth_st)
def test_black76_greeks_match_finite_differences_of_the_price(
    case: tuple[bool, float, float, float, float, float, float],
) -> None:
    is_call, f, m, t, r, _, sigma = case
    k = _strike(f, m, sigma, t)

    def v(x: float = f, t: float = t, r: float = r, sigma: float = sigma) -> float:
        return float(black76_price(is_call, x, k, t, r, sigma))  # F held fixed in t and r

    _fd_checks(black76(is_call, f, k, t, r, sigma), v, f, k, t, r, sigma)


@given(smooth_st)
def test_bsm_greeks_match_finite_differences_of_the_price(
    case: tuple[bool, float, float, float, float, float, float],
) -> None:
    is_call, s, m, t, r, q, sigma = case
    k = _strike(s * np.exp((r - q) * t), m, sigma, t)

    def v(x: float = s, t: float = t, r: float = r, sigma: float = sigma) -> float:
        return float(bsm(is_call, x, k, t, r, q, sigma).price)  # S and q held fixed

    _fd_checks(bsm(is_call, s, k, t, r, q, sigma), v, s, k, t, r, sigma)


# --- edge cases -----------------------------------------------------------------------------


def test_at_expiry_price_is_intrinsic_and_delta_a_step() -> None:
    # T = 0: no discounting left; delta 1/0 in/out of the money and w/2 exactly at the money
    # (the limit as sigma sqrt(T) -> 0+); gamma and vega 0; theta the carry term r V.
    f = np.array([120.0, 80.0, 100.0])
    for is_call, intrinsic, delta in (
        (True, [20.0, 0.0, 0.0], [1.0, 0.0, 0.5]),
        (False, [0.0, 20.0, 0.0], [0.0, -1.0, -0.5]),
    ):
        for g in (
            black76(is_call, f, 100.0, 0.0, 0.05, 0.4),
            bsm(is_call, f, 100.0, 0.0, 0.05, 0.02, 0.4),
        ):
            np.testing.assert_array_equal(g.price, intrinsic)
            np.testing.assert_array_equal(g.delta, delta)
            np.testing.assert_array_equal(g.gamma, 0.0)
            np.testing.assert_array_equal(g.vega, 0.0)
            np.testing.assert_array_equal(g.rho, 0.0)
        np.testing.assert_array_equal(
            black76(is_call, f, 100.0, 0.0, 0.05, 0.4).theta, 0.05 * np.array(intrinsic)
        )


def test_zero_vol_price_is_discounted_intrinsic_on_the_forward() -> None:
    t, r, q = 0.5, 0.05, 0.01
    s = np.array([90.0, 110.0])
    fwd = s * np.exp((r - q) * t)
    g = bsm(True, s, 100.0, t, r, q, 0.0)
    np.testing.assert_allclose(g.price, np.exp(-r * t) * np.maximum(fwd - 100.0, 0.0), rtol=1e-15)
    np.testing.assert_array_equal(g.delta, [0.0, np.exp(-q * t)])
    b = black76(False, s, 100.0, t, r, 0.0)
    np.testing.assert_allclose(b.price, np.exp(-r * t) * np.maximum(100.0 - s, 0.0), rtol=1e-15)
    np.testing.assert_allclose(b.theta, r * b.price, rtol=1e-15)  # F fixed: only discounting
    np.testing.assert_allclose(b.rho, -t * b.price, rtol=1e-15)


def test_zero_vol_at_the_money_vega_keeps_its_limit() -> None:
    # V(sigma) = D F (2 N(sigma sqrt(T) / 2) - 1), so dV/dsigma at 0 is D F sqrt(T) / sqrt(2 pi).
    g = black76(True, 100.0, 100.0, 0.25, 0.04, 0.0)
    assert g.vega == pytest.approx(np.exp(-0.01) * 100.0 * 0.5 / np.sqrt(2 * np.pi), rel=1e-15)
    assert g.price == 0.0
    assert g.delta == pytest.approx(0.5 * np.exp(-0.01), rel=1e-15)
    assert g.gamma == 0.0


def test_extreme_inputs_give_finite_values_without_warnings() -> None:
    # deep ITM/OTM, vanishing and huge total vol: limits, never NaN, and no RuntimeWarning.
    f = np.array([1e-6, 1e6, 1.0, 1.0, 1.0, 100.0, 100.0])
    t = np.array([1.0, 1.0, 1e-300, 1e-12, 30.0, 1e-320, 2.0])
    sigma = np.array([0.2, 0.2, 0.5, 1e-200, 5.0, 1e-3, 1e-300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for is_call in (True, False):
            for g in (
                black76(is_call, f, 1.0, t, 0.05, sigma),
                bsm(is_call, f, 1.0, t, 0.05, 0.02, sigma),
            ):
                for name in GREEK_NAMES:
                    assert np.isfinite(getattr(g, name)).all(), name
            assert np.isfinite(black76_price(is_call, f, 1.0, t, 0.05, sigma)).all()
    deep = black76([True, False], [1e6, 1e-6], 1.0, 1.0, 0.0, 0.2)
    np.testing.assert_allclose(deep.price, [1e6 - 1.0, 1.0 - 1e-6], rtol=1e-15)
    np.testing.assert_array_equal(deep.delta, [1.0, -1.0])


def test_inputs_broadcast_and_outputs_are_float64_arrays() -> None:
    g = black76([[True], [False]], [90.0, 100.0, 110.0], 100.0, 0.5, 0.0, 0.3)
    for name in GREEK_NAMES:
        value = getattr(g, name)
        assert isinstance(value, np.ndarray)
        assert value.dtype == np.float64
        assert value.shape == (2, 3)
    scalar = bsm(True, 100.0, 100.0, 1.0, 0.05, 0.0, 0.2)
    assert all(getattr(scalar, name).shape == () for name in GREEK_NAMES)
    np.testing.assert_array_equal(
        black76_price([[True], [False]], [90.0, 100.0, 110.0], 100.0, 0.5, 0.0, 0.3), g.price
    )


def test_validate_names_each_invalid_input_per_row() -> None:
    reasons = validate(
        S=[100.0, 0.0, 100.0, 100.0, 100.0],
        K=[100.0, 100.0, -5.0, 100.0, 100.0],
        T=[0.0, 1.0, 1.0, -1.0, 1.0],
        r=0.05,
        q=0.0,
        sigma=[0.0, 0.2, 0.2, -0.1, float("nan")],
    )
    assert reasons.tolist() == [
        "",
        "S must be > 0; got 0.0",
        "K must be > 0; got -5.0",
        "T must be >= 0 (years); got -1.0; sigma must be >= 0; got -0.1",
        "sigma must be finite; got nan",
    ]


# --- the greeks CSV command -----------------------------------------------------------------


def _run_csv(text: str) -> tuple[int, list[dict[str, str]]]:
    out = io.StringIO()
    errors = greeks_csv(io.StringIO(text), out)
    out.seek(0)
    reader = csv.DictReader(out)
    assert tuple(reader.fieldnames or ()) == OUTPUT_COLUMNS
    return errors, list(reader)


def test_greeks_csv_reports_bad_rows_and_prices_the_rest() -> None:
    text = (
        "kind,model,S,K,T,r,q,sigma\n"
        "call,bsm,49,50,0.3846,0.05,0,0.2\n"
        "straddle,bsm,100,100,1,0.05,0,0.2\n"
        "put,bsm,100,100,-1,0.05,0,0.2\n"
        "put,black76,49,50,0.3846,0.05,,0.2\n"
        "call,black76,100,100,1,0.05,0.01,0.2\n"
        "call,bsm,abc,100,1,0.05,0,0.2\n"
    )
    errors, rows = _run_csv(text)
    assert errors == 4
    assert [r["error"] for r in rows] == [
        "",
        "kind must be call or put; got 'straddle'",
        "T must be >= 0 (years); got -1.0",
        "",
        "q must be empty or 0 for black76 (S is the forward); got '0.01'",
        "S must be a number; got 'abc'",
    ]
    assert all(r[name] == "" for r in rows if r["error"] for name in GREEK_NAMES)
    assert [r["kind"] for r in rows] == ["call", "straddle", "put", "put", "call", "call"]
    call = bsm(True, 49.0, 50.0, 0.3846, 0.05, 0.0, 0.2)
    put = black76(False, 49.0, 50.0, 0.3846, 0.05, 0.2)
    for name in GREEK_NAMES:  # written with repr: the float round-trips exactly
        assert float(rows[0][name]) == float(getattr(call, name))
        assert float(rows[3][name]) == float(getattr(put, name))


def test_greeks_csv_header_with_missing_or_unknown_columns_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"missing \['sigma'\], unknown \['vol'\]"):
        greeks_csv(io.StringIO("kind,model,S,K,T,r,q,vol\n"), io.StringIO())
    with pytest.raises(ValueError, match=r"missing \['q'\]"):
        greeks_csv(io.StringIO("kind,model,S,K,T,r,sigma\n"), io.StringIO())


def test_greeks_csv_accepts_columns_in_any_order_and_no_rows() -> None:
    errors, rows = _run_csv("sigma,q,r,T,K,S,model,kind\n0.2,0,0.05,1,100,100,bsm,call\n")
    assert errors == 0
    assert float(rows[0]["price"]) == pytest.approx(10.450583572185565, rel=1e-14)
    assert _run_csv("kind,model,S,K,T,r,q,sigma\n") == (0, [])
