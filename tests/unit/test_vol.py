"""Volatility: implied vol, SVI smiles and their arbitrage checks, EWMA vol, the pick."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.integrate import quad

from operators.greeks import black76, black76_price
from operators.vol import (
    MAX_CONDITION,
    YEAR_MS,
    EwmaVol,
    IvStatus,
    QuotedIv,
    SviFit,
    SviParams,
    SviSurface,
    TaggedVol,
    calendar_violations,
    ewma_update,
    fit_svi,
    has_butterfly_arbitrage,
    implied_vol,
    implied_vol_status,
    pick_vol,
    svi_density,
    svi_total_variance,
    vol_at,
)

# --- implied vol ---------------------------------------------------------------------------

PRICER_REL_ERROR = 1e-10
"""Bound on greeks.black76_price's relative error over the wide grid's domain: it evaluates
F N(d1) - K N(d2) as is, and the two terms nearly cancel far out of the money when
sigma sqrt(T) is small (measured up to 4e-11). A relative price error e moves the
implied vol by kappa * e relative, kappa = price / (sigma vega)."""


def wide_grid() -> dict[str, np.ndarray]:
    """Calls and puts: sigma 5 %..300 %, T 1 day..3 years, ln(K/F) to +-9 sigma sqrt(T)."""
    sigma, t, z, is_call, r = np.meshgrid(
        np.geomspace(0.05, 3.0, 12),
        np.geomspace(1 / 365, 3.0, 10),
        np.linspace(-9.0, 9.0, 37),
        [True, False],
        [0.0, 0.05],
        indexing="ij",
    )
    sigma, t, z, is_call, r = (a.reshape(-1) for a in (sigma, t, z, is_call, r))
    strike = 100.0 * np.exp(z * sigma * np.sqrt(t))
    price = black76_price(is_call, 100.0, strike, t, r, sigma)
    greeks = black76(is_call, 100.0, strike, t, r, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = greeks.price / (sigma * greeks.vega)
    otm = np.where(is_call, strike > 100.0, strike < 100.0)
    return {
        "sigma": sigma,
        "t": t,
        "strike": strike,
        "is_call": is_call,
        "r": r,
        "price": price,
        "kappa": kappa,
        "otm": otm,
    }


def test_implied_vol_round_trips_over_wide_grid_within_conditioning_tolerance() -> None:
    g = wide_grid()
    assert g["sigma"].size == 17_760

    result = implied_vol_status(g["is_call"], g["price"], 100.0, g["strike"], g["t"], g["r"])

    ok = result.status == IvStatus.OK
    assert ok.sum() > 0.75 * ok.size
    error = np.abs(result.vol[ok] - g["sigma"][ok]) / g["sigma"][ok]
    tolerance = 1e-12 + PRICER_REL_ERROR * g["kappa"][ok]
    assert np.all(error <= tolerance), float(np.max(error / tolerance))


def test_implied_vol_far_otm_wings_never_fail() -> None:
    g = wide_grid()
    otm = g["otm"]

    result = implied_vol_status(
        g["is_call"][otm], g["price"][otm], 100.0, g["strike"][otm], g["t"][otm], g["r"][otm]
    )

    assert np.all(result.status == IvStatus.OK)
    assert np.all(np.isfinite(result.vol))
    error = np.abs(result.vol - g["sigma"][otm]) / g["sigma"][otm]
    assert error.max() < 1e-11  # kappa <= 1 out of the money: the pricer's 1e-10 shrinks


def test_implied_vol_gives_nan_exactly_where_price_is_uninformative() -> None:
    # Status OK where kappa is comfortably within MAX_CONDITION, NaN with a reason where it is
    # comfortably beyond; a factor 10 each side absorbs the pricer's own rounding.
    g = wide_grid()

    result = implied_vol_status(g["is_call"], g["price"], 100.0, g["strike"], g["t"], g["r"])

    informative = g["kappa"] <= MAX_CONDITION / 10
    assert np.all(result.status[informative] == IvStatus.OK)
    hopeless = ~(g["kappa"] <= MAX_CONDITION * 10)  # NaN kappa: the price has no time value
    assert hopeless.any()
    assert np.all(np.isnan(result.vol[hopeless]))
    assert set(np.unique(result.status[hopeless])) <= {
        IvStatus.BELOW_INTRINSIC,
        IvStatus.ABOVE_UPPER_BOUND,
        IvStatus.UNINFORMATIVE,
    }


def otm_call_price_by_quadrature(forward: float, strike: float, s: float) -> float:
    """Undiscounted call price for strike >= forward as a lognormal integral (slow reference).

    With z* = (ln(K/F) + s^2/2) / s and z = z* + u, the payoff is K (e^{s u} - 1), so
    price = K phi(z*) int_0^inf e^{-z* u - u^2/2} (e^{s u} - 1) du: no cancellation.
    """
    z_star = (math.log(strike / forward) + 0.5 * s * s) / s

    def integrand(u: float) -> float:
        return math.exp(-z_star * u - 0.5 * u * u + s * u) * -math.expm1(-s * u)

    integral, _ = quad(integrand, 0.0, math.inf, epsabs=0.0, epsrel=1e-13, limit=200)
    return strike * math.exp(-0.5 * z_star * z_star) / math.sqrt(2.0 * math.pi) * integral


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 3.0])
@pytest.mark.parametrize("t", [1 / 365, 0.25, 3.0])
def test_implied_vol_far_otm_wing_matches_quadrature_reference(sigma: float, t: float) -> None:
    # Up to 15 standard deviations out, where prices reach 1e-50 of the forward. The
    # reference is good to 1e-13 relative and kappa < 1 there, so the vol is good to 1e-12.
    s = sigma * math.sqrt(t)
    for z in (1.0, 3.0, 6.0, 9.0, 12.0, 15.0):
        strike = 100.0 * math.exp(z * s)
        price = otm_call_price_by_quadrature(100.0, strike, s)
        mirrored_put = price * 100.0 / strike  # put at F^2 / K, by the symmetry of Black-76

        strikes = [strike, 1e4 / strike]
        vols = implied_vol([True, False], [price, mirrored_put], 100.0, strikes, t, 0.0)

        assert np.all(np.abs(vols - sigma) <= 1e-12 * sigma), (z, vols)


@given(  # the wide grid's domain, drawn at random
    sigma=st.floats(0.05, 3.0),
    t=st.floats(1 / 365, 3.0),
    z=st.floats(-9.0, 9.0),
    r=st.floats(-0.05, 0.2),
)
def test_informative_otm_price_round_trips(sigma: float, t: float, z: float, r: float) -> None:
    # Large sigma sqrt(T) pushes even an OTM price against its upper bound: informative only
    # while kappa stays within MAX_CONDITION (a factor 10 below it, for the pricer's rounding).
    strike = 100.0 * math.exp(z * sigma * math.sqrt(t))
    is_call = strike >= 100.0
    greeks = black76(is_call, 100.0, strike, t, r, sigma)
    kappa = float(greeks.price / (sigma * greeks.vega))
    assume(kappa <= MAX_CONDITION / 10)

    vol = implied_vol(is_call, greeks.price, 100.0, strike, t, r)

    assert abs(float(vol) - sigma) <= (1e-12 + PRICER_REL_ERROR * kappa) * sigma


def test_call_and_put_at_parity_give_same_vol() -> None:
    call = black76_price(True, 100.0, 80.0, 0.5, 0.03, 0.6)
    put = call - math.exp(-0.03 * 0.5) * (100.0 - 80.0)

    vols = implied_vol([True, False], [call, put], 100.0, 80.0, 0.5, 0.03)

    assert vols[0] == pytest.approx(0.6, rel=1e-12)
    assert vols[1] == pytest.approx(0.6, rel=1e-12)


def test_prices_outside_no_arbitrage_bounds_give_nan_with_reason() -> None:
    disc = math.exp(-0.05)
    cases = [
        # (is_call, price, F, K, T, expected)
        (True, disc * 19.0, 120.0, 100.0, 1.0, IvStatus.BELOW_INTRINSIC),
        (False, 0.0, 120.0, 100.0, 1.0, IvStatus.BELOW_INTRINSIC),
        (False, -1.0, 120.0, 100.0, 1.0, IvStatus.BELOW_INTRINSIC),
        (True, disc * 121.0, 120.0, 100.0, 1.0, IvStatus.ABOVE_UPPER_BOUND),
        (False, disc * 101.0, 120.0, 100.0, 1.0, IvStatus.ABOVE_UPPER_BOUND),
        (True, float(black76_price(True, 100.0, 100.0, 1.0, 0.05, 12.0)), 100.0, 100.0, 1.0,
         IvStatus.VOL_ABOVE_RANGE),
        (True, float(black76_price(True, 100.0, 100.0, 1.0, 0.05, 1e-7)), 100.0, 100.0, 1.0,
         IvStatus.VOL_BELOW_RANGE),
        (True, float("nan"), 100.0, 100.0, 1.0, IvStatus.BAD_INPUT),
        (True, 5.0, 0.0, 100.0, 1.0, IvStatus.BAD_INPUT),
        (True, 5.0, 100.0, -1.0, 1.0, IvStatus.BAD_INPUT),
        (True, 5.0, 100.0, 100.0, 0.0, IvStatus.BAD_INPUT),
    ]  # fmt: skip
    is_call, price, forward, strike, t, expected = (list(c) for c in zip(*cases, strict=True))

    result = implied_vol_status(is_call, price, forward, strike, t, 0.05)

    assert result.status.tolist() == [int(e) for e in expected]
    assert np.all(np.isnan(result.vol))


def test_deep_itm_price_with_time_value_near_rounding_is_uninformative() -> None:
    # Time value 5e-10 on a price of 35: kappa ~ 2e9, far beyond MAX_CONDITION.
    price = float(black76_price(True, 100.0, 65.0, 0.02, 0.0, 0.5))
    assert 0.0 < price - 35.0 < 1e-9

    result = implied_vol_status(True, price, 100.0, 65.0, 0.02, 0.0)

    assert int(result.status) == IvStatus.UNINFORMATIVE
    assert math.isnan(float(result.vol))


def test_price_at_intrinsic_value_gives_nan() -> None:
    # Equal to the intrinsic value up to rounding: either side of it, no vol.
    intrinsic = math.exp(-0.05) * 20.0

    result = implied_vol_status(True, intrinsic, 120.0, 100.0, 1.0, 0.05)

    assert int(result.status) in (IvStatus.BELOW_INTRINSIC, IvStatus.UNINFORMATIVE)
    assert math.isnan(float(result.vol))


def test_implied_vol_keeps_the_broadcast_shape() -> None:
    strikes = np.array([[90.0, 100.0], [110.0, 120.0]])
    prices = black76_price(True, 100.0, strikes, 0.5, 0.0, 0.4)

    assert implied_vol(True, prices, 100.0, strikes, 0.5, 0.0).shape == (2, 2)
    assert implied_vol(True, float(prices[0, 1]), 100.0, 100.0, 0.5, 0.0).shape == ()


def test_implied_vol_is_deterministic() -> None:
    g = wide_grid()
    args = (g["is_call"], g["price"], 100.0, g["strike"], g["t"], g["r"])

    first, second = implied_vol(*args), implied_vol(*args)

    assert np.array_equal(first, second, equal_nan=True)


# --- SVI -----------------------------------------------------------------------------------

CLEAN = SviParams(a=0.02, b=0.1, rho=-0.5, m=0.05, sigma=0.2)
GATHERAL_JACQUIER = SviParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)
"""Gatheral & Jacquier (2014), Example 3.1: no negative variance and within Lee's bounds,
yet g(k) < 0 for k in about (0.64, 1.26): butterfly arbitrage."""
K_GRID = np.linspace(-1.0, 1.0, 25)


def params_close(p: SviParams, q: SviParams, tol: float) -> bool:
    return all(
        abs(getattr(p, name) - getattr(q, name)) <= tol for name in ("a", "b", "rho", "m", "sigma")
    )


def test_fit_svi_recovers_parameters_of_noiseless_smile() -> None:
    fit = fit_svi(K_GRID, svi_total_variance(CLEAN, K_GRID))

    assert params_close(fit.params, CLEAN, 1e-9)
    assert fit.rmse < 1e-12
    assert fit.flags == ()


def test_fit_svi_recovers_vols_of_noisy_smile() -> None:
    # 0.5 % relative noise in vol (1 % in total variance); 25 points against 5 parameters
    # average it down, so the fitted vols sit within 1 % of the true ones.
    rng = np.random.default_rng(7)
    true_vol = np.sqrt(svi_total_variance(CLEAN, K_GRID))
    noisy = (true_vol * (1.0 + 0.005 * rng.standard_normal(K_GRID.size))) ** 2

    fit = fit_svi(K_GRID, noisy)

    fitted_vol = np.sqrt(svi_total_variance(fit.params, K_GRID))
    assert np.max(np.abs(fitted_vol / true_vol - 1.0)) < 0.01
    assert fit.flags == ()


def test_gatheral_jacquier_example_has_negative_density_and_butterfly_flag() -> None:
    k = np.linspace(-1.5, 1.5, 301)
    g = svi_density(GATHERAL_JACQUIER, k)
    assert np.all(svi_total_variance(GATHERAL_JACQUIER, k) > 0.0)
    assert g.min() < -0.03
    assert k[g < 0].min() > 0.6 and k[g < 0].max() < 1.3

    fit = fit_svi(K_GRID, svi_total_variance(GATHERAL_JACQUIER, K_GRID))

    assert params_close(fit.params, GATHERAL_JACQUIER, 1e-9)
    assert "butterfly" in fit.flags


def test_clean_smile_has_positive_density_and_no_butterfly() -> None:
    assert np.all(svi_density(CLEAN, np.linspace(-5.0, 5.0, 1001)) > 0.0)
    assert not has_butterfly_arbitrage(CLEAN, -1.0, 1.0)


def test_wing_steeper_than_lee_bound_is_butterfly() -> None:
    steep = SviParams(a=0.01, b=1.5, rho=0.5, m=0.0, sigma=0.1)  # b (1 + rho) = 2.25 > 2

    assert has_butterfly_arbitrage(steep, -0.1, 0.1)


def test_fit_svi_flags_poor_fit_on_data_no_smile_matches() -> None:
    zigzag = np.where(np.arange(K_GRID.size) % 2 == 0, 0.04, 0.08)

    fit = fit_svi(K_GRID, zigzag)

    assert "poor_fit" in fit.flags


def test_fit_svi_rejects_fewer_points_than_parameters() -> None:
    with pytest.raises(ValueError, match=">= 5"):
        fit_svi([-0.1, 0.0, 0.1, 0.2], [0.04, 0.03, 0.04, 0.05])


def fit_of(params: SviParams, k_min: float = -1.0, k_max: float = 1.0) -> SviFit:
    return SviFit(params=params, rmse=0.0, k_min=k_min, k_max=k_max, flags=())


def test_calendar_violation_when_short_expiry_wings_cross_above_long_expiry() -> None:
    short = fit_of(SviParams(a=0.01, b=0.3, rho=0.0, m=0.0, sigma=0.1))  # steep wings
    long = fit_of(SviParams(a=0.04, b=0.05, rho=0.0, m=0.0, sigma=0.3))  # higher at k = 0

    violations = calendar_violations({0.1: short, 0.5: long})

    assert len(violations) == 1
    v = violations[0]
    assert (v.t_short, v.t_long) == (0.1, 0.5)
    assert abs(v.k) == pytest.approx(1.0)  # the worst point is at the end of the wings
    assert v.w_long < v.w_short


def test_no_calendar_violation_when_total_variance_grows_with_expiry() -> None:
    fits = {
        t: fit_of(SviParams(a=0.04 * t, b=0.1 * t, rho=-0.3, m=0.0, sigma=0.2))
        for t in (0.1, 0.5, 1.0)
    }

    assert calendar_violations(fits) == []


def test_vol_at_interpolates_total_variance_and_keeps_vol_flat_outside() -> None:
    short, long = (
        SviParams(a=0.01, b=0.1, rho=-0.3, m=0.0, sigma=0.2),
        SviParams(a=0.05, b=0.1, rho=-0.3, m=0.0, sigma=0.2),
    )
    fits = {0.25: fit_of(short), 1.0: fit_of(long)}
    k = np.array([-0.5, 0.0, 0.5])
    w1, w2 = svi_total_variance(short, k), svi_total_variance(long, k)

    middle = vol_at(fits, k, 0.5)
    before = vol_at(fits, k, 0.1)
    after = vol_at(fits, k, 2.0)

    expected = np.sqrt((w1 + (0.5 - 0.25) / 0.75 * (w2 - w1)) / 0.5)
    np.testing.assert_allclose(middle, expected, rtol=1e-14)
    np.testing.assert_allclose(before, np.sqrt(w1 / 0.25), rtol=1e-14)
    np.testing.assert_allclose(after, np.sqrt(w2 / 1.0), rtol=1e-14)
    np.testing.assert_allclose(vol_at(fits, k, 0.25), np.sqrt(w1 / 0.25), rtol=1e-14)


# --- EWMA ----------------------------------------------------------------------------------

EWMA = {"half_life_s": 86_400.0, "floor": 0.1, "cap": 5.0}
T0 = 1_700_000_000_000


def run_ewma(prices: np.ndarray, ts_ms: np.ndarray) -> tuple[EwmaVol, TaggedVol]:
    state: EwmaVol | None = None
    vol = TaggedVol(0.0, "floor")
    for price, ts in zip(prices.tolist(), ts_ms.tolist(), strict=True):
        state, vol = ewma_update(state, price, ts, **EWMA)
    assert state is not None
    return state, vol


def test_ewma_constant_prices_give_floor() -> None:
    ts = T0 + 60_000 * np.arange(100)

    _, vol = run_ewma(np.full(100, 2000.0), ts)

    assert vol == TaggedVol(0.1, "floor")


def test_ewma_first_price_gives_floor() -> None:
    _, vol = ewma_update(None, 2000.0, T0, **EWMA)

    assert vol == TaggedVol(0.1, "floor")


def gbm_path(sigma: float, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A GBM path (annual vol ``sigma``) sampled at irregular steps of 30 to 90 s."""
    rng = np.random.default_rng(seed)
    steps_ms = rng.integers(30_000, 90_001, n - 1)
    dt_years = steps_ms / 1000.0 / (365 * 86_400)
    returns = sigma * np.sqrt(dt_years) * rng.standard_normal(n - 1) - 0.5 * sigma**2 * dt_years
    prices = 2000.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    ts = T0 + np.concatenate([[0], np.cumsum(steps_ms)])
    return prices, ts


def test_ewma_gbm_path_recovers_true_vol() -> None:
    # Half-life 1 day over ~60 s steps: about 2 * 86400 / (ln 2 * 60) = 4150 effective returns,
    # so the variance has a relative standard error of sqrt(2 / 4150) = 2.2 % and the vol
    # 1.1 %; 5 % is over 4 standard errors. Irregular steps check the dt scaling.
    prices, ts = gbm_path(sigma=0.8, seed=11, n=30_000)

    _, vol = run_ewma(prices, ts)

    assert vol.source == "ewma"
    assert vol.value == pytest.approx(0.8, rel=0.05)


def test_ewma_jump_beyond_cap_gives_cap() -> None:
    state, _ = ewma_update(None, 2000.0, T0, **EWMA)

    _, vol = ewma_update(state, 1000.0, T0 + 60_000, **EWMA)

    assert vol == TaggedVol(5.0, "cap")


def test_ewma_ignores_price_not_newer_than_last() -> None:
    prices, ts = gbm_path(sigma=0.8, seed=3, n=50)
    state, vol = run_ewma(prices, ts)

    same_time, vol_same = ewma_update(state, 1.0, int(ts[-1]), **EWMA)
    older, vol_older = ewma_update(state, 1.0, int(ts[-2]), **EWMA)

    assert same_time == state and older == state
    assert vol_same == vol and vol_older == vol


def test_ewma_is_deterministic_and_its_state_pickles() -> None:
    prices, ts = gbm_path(sigma=0.5, seed=5, n=500)

    first = run_ewma(prices, ts)
    second = run_ewma(prices, ts)

    assert first == second
    assert pickle.loads(pickle.dumps(first[0])) == first[0]


def test_ewma_rejects_bad_configuration_and_prices() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        ewma_update(None, 2000.0, T0, half_life_s=0.0, floor=0.1, cap=5.0)
    with pytest.raises(ValueError, match="floor <= cap"):
        ewma_update(None, 2000.0, T0, half_life_s=60.0, floor=1.0, cap=0.5)
    with pytest.raises(ValueError, match="price"):
        ewma_update(None, 0.0, T0, **EWMA)


# --- the pick ------------------------------------------------------------------------------

EXPIRY = T0 + 30 * 86_400_000
FALLBACK = TaggedVol(0.7, "ewma")
AGES = {"max_quote_age_ms": 60_000, "max_surface_age_ms": 600_000}


def surface(*fits: SviFit) -> SviSurface:
    return SviSurface(ts_ms=T0, fits={EXPIRY + i * 86_400_000: f for i, f in enumerate(fits)})


def test_pick_vol_uses_fresh_quote_first() -> None:
    vol = pick_vol(
        k=0.0,
        expiry_ms=EXPIRY,
        now_ms=T0 + 30_000,
        quote=QuotedIv(iv=0.9, ts_ms=T0),
        surface=surface(fit_of(CLEAN)),
        fallback=FALLBACK,
        **AGES,
    )

    assert vol == TaggedVol(0.9, "quote_iv")


def test_pick_vol_uses_surface_when_quote_is_stale() -> None:
    vol = pick_vol(
        k=0.1,
        expiry_ms=EXPIRY,
        now_ms=T0 + 120_000,
        quote=QuotedIv(iv=0.9, ts_ms=T0),
        surface=surface(fit_of(CLEAN)),
        fallback=FALLBACK,
        **AGES,
    )

    t_fit = (EXPIRY - T0) / YEAR_MS
    assert vol.source == "svi"
    assert vol.value == pytest.approx(math.sqrt(float(svi_total_variance(CLEAN, 0.1)) / t_fit))


def test_pick_vol_skips_out_of_range_quote() -> None:
    vol = pick_vol(
        k=0.0,
        expiry_ms=EXPIRY,
        now_ms=T0,
        quote=QuotedIv(iv=50.0, ts_ms=T0),
        surface=None,
        fallback=FALLBACK,
        **AGES,
    )

    assert vol == FALLBACK


def test_pick_vol_falls_back_to_ewma_when_surface_is_stale_or_flagged() -> None:
    flagged = SviFit(params=CLEAN, rmse=1.0, k_min=-1.0, k_max=1.0, flags=("poor_fit",))

    stale = pick_vol(
        k=0.0,
        expiry_ms=EXPIRY,
        now_ms=T0 + 700_000,
        quote=None,
        surface=surface(fit_of(CLEAN)),
        fallback=FALLBACK,
        **AGES,
    )
    only_flagged = pick_vol(
        k=0.0,
        expiry_ms=EXPIRY,
        now_ms=T0,
        quote=None,
        surface=surface(flagged),
        fallback=FALLBACK,
        **AGES,
    )

    assert stale == FALLBACK
    assert only_flagged == FALLBACK
