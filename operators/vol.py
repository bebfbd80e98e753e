"""Volatility for the risk engine: implied vol, SVI smiles, EWMA realised vol, and the pick.

Anchors: Jaeckel (2015) "Let's Be Rational" (normalised Black prices, the objective
functions); Gatheral (2004) raw SVI and Gatheral & Jacquier (2014) "Arbitrage-free SVI
volatility surfaces" (the butterfly density and calendar conditions); RiskMetrics (1996)
EWMA.

Units: ``T`` in years of 365 days; vols are annual fractions (0.8 is 80 %); ``r`` is a
continuously compounded annual rate; prices, forwards and strikes share one currency;
``k = ln(K / F)`` is the log-moneyness; total variance ``w = sigma^2 T``; times ``*_ms`` are
event times in ms since the Unix epoch.

Which vol is used (``pick_vol``), for an option struck at ``k`` expiring at ``expiry_ms``,
as of ``now_ms``:

1. the option's quoted IV, if one is at most ``max_quote_age_ms`` old and lies in
   [``VOL_MIN``, ``VOL_MAX``]: source ``quote_iv``;
2. else the underlying's SVI surface, if it is at most ``max_surface_age_ms`` old and has at
   least one fit without flags (the flagged ones are left out): source ``svi``;
3. else the underlying's EWMA realised vol from oracle prices, clipped to a floor and a cap:
   source ``ewma``, or ``floor`` / ``cap`` when the clip bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares
from scipy.special import erfcx, ndtr, ndtri

from operators.units import YEAR_MS, YEAR_S

FloatArray = npt.NDArray[np.float64]

VOL_MIN = 1e-6
"""The implied-vol solver's range (annual): a price implying a vol outside it gets NaN."""
VOL_MAX = 10.0

MAX_CONDITION = 1e6
"""A price is informative when the vol's condition number is at most this (see below)."""

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT_2 = math.sqrt(2.0)
_MAX_ITERATIONS = 100
_STEP_TOL = 1e-13
"""The solver stops when a step moves ``s = sigma sqrt(T)`` by at most this fraction."""


# --- implied volatility ------------------------------------------------------------------


class IvStatus(IntEnum):
    """Why ``implied_vol`` gave NaN for a row (``OK``: it did not)."""

    OK = 0
    BAD_INPUT = 1
    """A non-finite input, or ``F``, ``K`` or ``T`` not > 0."""
    BELOW_INTRINSIC = 2
    """price <= exp(-rT) max(w (F - K), 0): no time value left (vol 0 or arbitrage)."""
    ABOVE_UPPER_BOUND = 3
    """price >= exp(-rT) F (call) or exp(-rT) K (put): no vol reaches it."""
    VOL_BELOW_RANGE = 4
    """The price implies a vol below ``VOL_MIN``."""
    VOL_ABOVE_RANGE = 5
    """The price implies a vol above ``VOL_MAX``."""
    UNINFORMATIVE = 6
    """The vol's condition number exceeds ``MAX_CONDITION`` (deep in the money, usually)."""


@dataclass(frozen=True)
class IvResult:
    """Implied vols (annual; NaN unless ``status == IvStatus.OK``) and a status per row."""

    vol: FloatArray
    status: npt.NDArray[np.int8]


def implied_vol(
    is_call: npt.ArrayLike,
    price: npt.ArrayLike,
    F: npt.ArrayLike,
    K: npt.ArrayLike,
    T: npt.ArrayLike,
    r: npt.ArrayLike,
) -> FloatArray:
    """Black-76 implied vol (annual) of option prices (currency); arrays broadcast.

    NaN where ``implied_vol_status`` says why; see that function for the method.

    >>> round(float(implied_vol(True, 7.965567455405804, 100.0, 100.0, 1.0, 0.0)), 12)
    0.2
    """
    return implied_vol_status(is_call, price, F, K, T, r).vol


def implied_vol_status(
    is_call: npt.ArrayLike,
    price: npt.ArrayLike,
    F: npt.ArrayLike,
    K: npt.ArrayLike,
    T: npt.ArrayLike,
    r: npt.ArrayLike,
) -> IvResult:
    """Black-76 implied vols and per-row statuses; ``T`` in years, ``r`` annual; broadcast.

    Method. Prices are normalised as in Jaeckel: ``x = -|ln(F/K)|``, ``beta = price /
    (exp(-rT) sqrt(F K))`` less the normalised intrinsic value, which turns every option into
    an out-of-the-money call ``b(x, s)`` of total vol ``s = sigma sqrt(T)``; ``b`` is computed
    with scaled complementary error functions (``erfcx``) so the far wings neither underflow
    nor cancel. ``b`` is convex in ``s`` below ``s_c = sqrt(2|x|)`` and concave above; below
    it Newton runs on ``1 / ln b``, above it on ``b``, from ``s_c`` (or an asymptotic guess
    above it), inside a bracket on ``sigma`` in [``VOL_MIN``, ``VOL_MAX``] that each step
    narrows; a step that would leave the bracket is replaced by a geometric bisection.

    Wing criterion. The price carries information about the vol where the vol's condition
    number ``kappa = price / (sigma * vega)`` (vega = dprice/dsigma) is at most
    ``MAX_CONDITION``: a relative error ``e`` in the price moves the vol by ``kappa * e``
    relative, so a price exact to the last bits (1e-16) fixes the vol to 1e-10. Out of the
    money ``kappa`` is small even far in the wings (there ``kappa ~ s^2 / x^2``); deep in the
    money the time value drowns in the intrinsic value and ``kappa`` grows without bound.
    Rows beyond it get NaN with ``UNINFORMATIVE``.
    """
    w, p, F_, K_, T_, r_ = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (is_call, price, F, K, T, r))
    )
    shape = w.shape
    w, p, F_, K_, T_, r_ = (a.reshape(-1) for a in (w, p, F_, K_, T_, r_))
    n = p.size
    vol = np.full(n, np.nan)
    status = np.full(n, IvStatus.OK, dtype=np.int8)

    finite = np.isfinite(p) & np.isfinite(F_) & np.isfinite(K_) & np.isfinite(T_)
    finite &= np.isfinite(r_) & np.isfinite(w)
    good = finite & (F_ > 0.0) & (K_ > 0.0) & (T_ > 0.0)
    status[~good] = IvStatus.BAD_INPUT
    safe_f, safe_k, safe_t = (np.where(good, a, 1.0) for a in (F_, K_, T_))
    log_fk = np.log(safe_f / safe_k)
    theta = np.where(w != 0.0, 1.0, -1.0)
    beta = np.where(good, p / (np.exp(-r_ * safe_t) * np.sqrt(safe_f * safe_k)), 0.0)
    intrinsic = np.maximum(theta * 2.0 * np.sinh(0.5 * log_fk), 0.0)
    x = -np.abs(log_fk)
    otm = beta - intrinsic
    status[good & (otm <= 0.0)] = IvStatus.BELOW_INTRINSIC
    status[good & (otm >= np.exp(0.5 * x))] = IvStatus.ABOVE_UPPER_BOUND

    rows = np.flatnonzero(status == IvStatus.OK)
    s_lo = VOL_MIN * np.sqrt(safe_t[rows])
    s_hi = VOL_MAX * np.sqrt(safe_t[rows])
    log_target = np.log(otm[rows])
    below = log_target < _log_b(x[rows], s_lo)
    above = log_target > _log_b(x[rows], s_hi)
    status[rows[below]] = IvStatus.VOL_BELOW_RANGE
    status[rows[above]] = IvStatus.VOL_ABOVE_RANGE
    inside = ~below & ~above
    rows, s_lo, s_hi = rows[inside], s_lo[inside], s_hi[inside]

    s = _solve(x[rows], otm[rows], s_lo, s_hi)
    log_b, q = _log_b_and_ratio(x[rows], s)
    # kappa = beta / (s * b') with b' = q * b, in logs where b underflows (inf: no information).
    with np.errstate(over="ignore"):
        kappa = np.exp(np.log(beta[rows]) - log_b) / (s * q)
    informative = kappa <= MAX_CONDITION
    vol[rows[informative]] = s[informative] / np.sqrt(safe_t[rows[informative]])
    status[rows[~informative]] = IvStatus.UNINFORMATIVE
    return IvResult(vol=vol.reshape(shape), status=status.reshape(shape))


def _log_b_and_ratio(x: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``ln b(x, s)`` and ``b'(s) / b`` for the normalised OTM call, ``x <= 0``, ``s > 0``.

    ``b = exp(x/2) N(d1) - exp(-x/2) N(d2)``, ``d1,2 = x/s +- s/2``. Both terms share the
    factor ``E = exp(-x^2/(2 s^2) - s^2/8)`` and ``b' = E / sqrt(2 pi)``. Where ``d1 <= 0``,
    ``b = E (erfcx(-d1/sqrt2) - erfcx(-d2/sqrt2)) / 2``, computed in logs; elsewhere the
    first term is at least ``exp(x/2) / 2``, nothing underflows, and ``b`` is computed as is.
    """
    h = x / s
    d1 = h + 0.5 * s
    d2 = h - 0.5 * s
    log_e = -0.5 * h * h - 0.125 * s * s
    tail = d1 <= 0.0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        diff = erfcx(-d1 / _SQRT_2) - erfcx(-d2 / _SQRT_2)
        direct = np.exp(0.5 * x) * ndtr(d1) - np.exp(-0.5 * x) * ndtr(d2)
        log_b = np.where(tail, log_e + np.log(0.5 * diff), np.log(direct))
        ratio = np.where(tail, 2.0 / (_SQRT_2PI * diff), np.exp(log_e - log_b) / _SQRT_2PI)
    return log_b, ratio


def _log_b(x: FloatArray, s: FloatArray) -> FloatArray:
    """``ln b(x, s)``, the normalised OTM call price in logs."""
    return _log_b_and_ratio(x, s)[0]


def _solve(x: FloatArray, beta: FloatArray, s_lo: FloatArray, s_hi: FloatArray) -> FloatArray:
    """``s`` with ``b(x, s) = beta``, given ``b(s_lo) <= beta <= b(s_hi)``; vectorised.

    Safeguarded Newton: below ``s_c`` on ``1/ln b - 1/ln beta``, above it on ``b - beta``;
    both are monotone from the starting side, and the bracket catches any overshoot.
    """
    log_beta = np.log(beta)
    s_c = np.sqrt(-2.0 * x)
    lower = log_beta < _log_b(x, np.clip(s_c, s_lo, s_hi))
    lo = np.where(lower, s_lo, np.maximum(s_lo, np.minimum(s_c, s_hi)))
    hi = np.where(lower, np.minimum(s_hi, np.maximum(s_c, s_lo)), s_hi)
    # Above s_c, b ~ exp(x/2) - 2 cosh(x/2) N(-s/2): invert it for a start.
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = (np.exp(0.5 * x) - beta) / (2.0 * np.cosh(0.5 * x))
        s_upper = -2.0 * ndtri(np.clip(gap, 0.0, 0.5))
    s = np.clip(np.where(lower, s_c, np.maximum(s_c, s_upper)), lo, hi)
    active = np.arange(x.size)
    for _ in range(_MAX_ITERATIONS):
        if active.size == 0:
            break
        xa, sa, lb, ba = x[active], s[active], log_beta[active], beta[active]
        log_b, q = _log_b_and_ratio(xa, sa)
        rising = log_b < lb
        lo[active] = np.where(rising, sa, lo[active])
        hi[active] = np.where(rising, hi[active], sa)
        b = np.exp(log_b)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            step = np.where(
                lower[active],
                log_b * (lb - log_b) / (lb * q),
                (ba - b) / (q * b),
            )
        new = sa + step
        la, ha = lo[active], hi[active]
        small = np.abs(step) <= _STEP_TOL * sa
        bisect = ~small & ~((new > la) & (new < ha))
        new = np.where(bisect, np.sqrt(la * ha), new)
        s[active] = new
        done = small | (ha - la <= _STEP_TOL * ha)
        active = active[~done]
    return s


# --- SVI smiles --------------------------------------------------------------------------

SVI_MIN_POINTS = 5
"""A smile needs at least as many quotes as raw SVI has parameters."""

POOR_FIT_REL_RMSE = 0.05
"""Default ``poor_fit`` threshold: rmse over mean total variance (about 2.5 % in vol)."""

_SVI_RHO_MAX = 0.999
_SVI_SIGMA_MIN = 1e-5
_SVI_GRID = 801
"""Points of the grid on which the butterfly and calendar conditions are checked."""


@dataclass(frozen=True, kw_only=True)
class SviParams:
    """Raw SVI: ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``.

    ``w`` is total variance (annual variance times ``T`` in years) at ``k = ln(K / F)``.
    """

    a: float
    b: float
    rho: float
    m: float
    sigma: float


@dataclass(frozen=True, kw_only=True)
class SviFit:
    """One expiry's fitted smile.

    ``rmse`` is the weighted root-mean-square error in total variance; ``k_min``/``k_max``
    the quoted range. ``flags``: ``butterfly`` (the Gatheral-Jacquier density ``g`` is
    negative on the check grid, or a wing is steeper than Lee's bound
    ``b (1 + |rho|) <= 2``) and ``poor_fit`` (rmse above the threshold). A fit with flags is
    not used for pricing.
    """

    params: SviParams
    rmse: float
    k_min: float
    k_max: float
    flags: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class CalendarViolation:
    """Total variance falls from expiry ``t_short`` to ``t_long`` (years) at ``k``."""

    t_short: float
    t_long: float
    k: float
    w_short: float
    w_long: float


def svi_total_variance(p: SviParams, k: npt.ArrayLike) -> FloatArray:
    """Raw SVI total variance at log-moneyness ``k``."""
    d = np.asarray(k, dtype=np.float64) - p.m
    return np.asarray(p.a + p.b * (p.rho * d + np.sqrt(d * d + p.sigma * p.sigma)))


def svi_density(p: SviParams, k: npt.ArrayLike) -> FloatArray:
    """Gatheral-Jacquier's ``g(k)``; the risk-neutral density is ``g`` times a positive factor.

    ``g = (1 - k w' / (2 w))^2 - w'^2 / 4 (1 / w + 1 / 4) + w'' / 2``; ``g < 0`` somewhere
    is butterfly arbitrage. NaN where ``w <= 0``.
    """
    k_ = np.asarray(k, dtype=np.float64)
    d = k_ - p.m
    root = np.sqrt(d * d + p.sigma * p.sigma)
    w = p.a + p.b * (p.rho * d + root)
    w1 = p.b * (p.rho + d / root)
    w2 = p.b * p.sigma * p.sigma / root**3
    safe = np.where(w > 0.0, w, np.nan)
    g = (1.0 - k_ * w1 / (2.0 * safe)) ** 2 - 0.25 * w1 * w1 * (1.0 / safe + 0.25) + 0.5 * w2
    return np.asarray(g)


def has_butterfly_arbitrage(p: SviParams, k_min: float, k_max: float) -> bool:
    """Whether the smile admits butterfly arbitrage near the quoted range ``[k_min, k_max]``.

    True if ``g < 0`` (or ``w <= 0``) on that range widened by its width on each side, or if
    a wing breaks Lee's moment bound ``b (1 + |rho|) <= 2`` (then ``g < 0`` far out).
    """
    span = max(k_max - k_min, 0.1)
    g = svi_density(p, np.linspace(k_min - span, k_max + span, _SVI_GRID))
    return bool(np.any(~(g >= 0.0))) or p.b * (1.0 + abs(p.rho)) > 2.0


def fit_svi(
    k: npt.ArrayLike,
    total_variance: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    *,
    max_rel_rmse: float = POOR_FIT_REL_RMSE,
) -> SviFit:
    """Fit raw SVI to one expiry's total variances at log-moneyness ``k``; ``weights`` >= 0.

    Start: for ``(m, sigma)`` on a grid, ``w`` is linear in ``(a, b rho, b)``; the best
    feasible solve (Zeliade's quasi-explicit step) starts ``scipy.optimize.least_squares``
    over ``(v, b, rho, m, sigma)`` with ``v = a + b sigma sqrt(1 - rho^2)``, the minimum of
    ``w``, so the box ``v >= 0, b >= 0, |rho| <= 0.999, sigma >= 1e-5`` holds every
    constraint. ``poor_fit`` when ``rmse > max_rel_rmse * mean(total_variance)``.
    """
    k_ = np.asarray(k, dtype=np.float64).reshape(-1)
    w_ = np.asarray(total_variance, dtype=np.float64).reshape(-1)
    wt = np.ones_like(k_) if weights is None else np.asarray(weights, dtype=np.float64)
    wt = np.broadcast_to(wt, k_.shape)
    if k_.shape != w_.shape or k_.size < SVI_MIN_POINTS:
        msg = f"need >= {SVI_MIN_POINTS} (k, w) pairs of one length; got {k_.size}, {w_.size}"
        raise ValueError(msg)
    finite = np.all(np.isfinite(k_)) and np.all(np.isfinite(w_)) and np.all(np.isfinite(wt))
    if not finite or np.any(w_ < 0.0) or np.any(wt < 0.0) or not np.any(wt > 0.0):
        msg = "k, total variance and weights must be finite, w and weights >= 0, some weight > 0"
        raise ValueError(msg)
    k_lo, k_hi = float(k_.min()), float(k_.max())
    span = max(k_hi - k_lo, 0.1)
    root_wt = np.sqrt(wt)

    def residuals(theta: FloatArray) -> FloatArray:
        return root_wt * (svi_total_variance(_svi_from_theta(theta), k_) - w_)

    lower = [0.0, 0.0, -_SVI_RHO_MAX, k_lo - span, _SVI_SIGMA_MIN]
    upper = [np.inf, np.inf, _SVI_RHO_MAX, k_hi + span, 10.0 * span]
    start = np.clip(_svi_start(k_, w_, root_wt, span), lower, upper)
    result = least_squares(
        residuals, start, bounds=(lower, upper), x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12
    )
    params = _svi_from_theta(result.x)
    error = svi_total_variance(params, k_) - w_
    rmse = math.sqrt(float(np.sum(wt * error * error) / np.sum(wt)))
    flags: list[str] = []
    if has_butterfly_arbitrage(params, k_lo, k_hi):
        flags.append("butterfly")
    if rmse > max_rel_rmse * float(np.mean(w_)):
        flags.append("poor_fit")
    return SviFit(params=params, rmse=rmse, k_min=k_lo, k_max=k_hi, flags=tuple(flags))


def _svi_from_theta(theta: FloatArray) -> SviParams:
    """Raw SVI from the fit's variables ``(v, b, rho, m, sigma)``, ``v`` the minimum of w."""
    v, b, rho, m, sigma = (float(t) for t in theta)
    return SviParams(a=v - b * sigma * math.sqrt(1.0 - rho * rho), b=b, rho=rho, m=m, sigma=sigma)


def _svi_start(k: FloatArray, w: FloatArray, root_wt: FloatArray, span: float) -> FloatArray:
    """The best ``(v, b, rho, m, sigma)`` over a grid of ``(m, sigma)``, each solved linearly."""
    best = np.array([float(np.min(w)), 0.0, 0.0, float(k[np.argmin(w)]), 0.1 * span])
    best_cost = math.inf
    for m in np.linspace(k.min() - 0.5 * span, k.max() + 0.5 * span, 21):
        for sigma in span * np.geomspace(0.01, 2.0, 12):
            d = k - m
            root = np.sqrt(d * d + sigma * sigma)
            design = np.column_stack([np.ones_like(k), d, root]) * root_wt[:, None]
            (a, c, b), *_ = np.linalg.lstsq(design, root_wt * w, rcond=None)
            b = max(float(b), 1e-8)
            rho = float(np.clip(c / b, -_SVI_RHO_MAX, _SVI_RHO_MAX))
            v = max(float(a) + b * sigma * math.sqrt(1.0 - rho * rho), 0.0)
            theta = np.array([v, b, rho, m, sigma])
            fitted = svi_total_variance(_svi_from_theta(theta), k)
            cost = float(np.sum((root_wt * (fitted - w)) ** 2))
            if cost < best_cost:
                best, best_cost = theta, cost
    return best


def calendar_violations(fits: Mapping[float, SviFit]) -> list[CalendarViolation]:
    """Adjacent expiries (``T`` in years) whose total variance falls with ``T`` at some ``k``.

    Checked on a grid over the union of the two fits' quoted ranges; one entry per pair, at
    its worst ``k``. None when total variance is non-decreasing in ``T`` at every ``k``.
    """
    ordered = sorted(fits.items())
    out = []
    for (t1, f1), (t2, f2) in pairwise(ordered):
        k = np.linspace(min(f1.k_min, f2.k_min), max(f1.k_max, f2.k_max), _SVI_GRID)
        w1 = svi_total_variance(f1.params, k)
        w2 = svi_total_variance(f2.params, k)
        drop = w1 - w2
        i = int(np.argmax(drop))
        if drop[i] > 1e-12:
            out.append(
                CalendarViolation(
                    t_short=t1, t_long=t2, k=float(k[i]), w_short=float(w1[i]), w_long=float(w2[i])
                )
            )
    return out


def vol_at(fits: Mapping[float, SviFit], k: npt.ArrayLike, T: float) -> FloatArray:
    """Annual vol at log-moneyness ``k`` and ``T`` years from fits keyed by ``T`` (years).

    Between two expiries ``T1 < T < T2`` total variance is linear in ``T`` at fixed ``k``
    (``w = w1 + (T - T1) / (T2 - T1) (w2 - w1)``), which keeps a calendar-arbitrage-free
    pair free of it; before the first and after the last expiry the vol is flat in ``T``
    (``sqrt(w1 / T1)``, ``sqrt(wN / TN)``). Negative total variance reads as 0.
    """
    if not fits or T <= 0.0:
        msg = f"need at least one fit and T > 0 (years); got {len(fits)} fits, T={T!r}"
        raise ValueError(msg)
    ts = sorted(fits)
    i = int(np.searchsorted(ts, T))  # ts[i - 1] < T <= ts[i]
    if i == 0 or i == len(ts):
        edge = ts[min(i, len(ts) - 1)]
        variance = svi_total_variance(fits[edge].params, k) / edge
    else:
        t1, t2 = ts[i - 1], ts[i]
        w1 = svi_total_variance(fits[t1].params, k)
        w2 = svi_total_variance(fits[t2].params, k)
        variance = (w1 + (T - t1) / (t2 - t1) * (w2 - w1)) / T
    return np.sqrt(np.maximum(variance, 0.0))


# --- EWMA realised vol -------------------------------------------------------------------

VolSource = Literal["quote_iv", "svi", "ewma", "floor", "cap"]


@dataclass(frozen=True)
class TaggedVol:
    """An annual vol and where it came from."""

    value: float
    source: VolSource


@dataclass(frozen=True)
class EwmaVol:
    """EWMA state of one underlying: its last price, that price's time (ms), and the sums.

    ``weighted_variance`` is the EWMA sum of per-second variance estimates ``r^2 / dt``
    (``r`` a log return over ``dt`` seconds); ``weight`` the EWMA sum of the weights, so
    ``weighted_variance / weight`` is the bias-corrected per-second variance.
    """

    price: float
    ts_ms: int
    weighted_variance: float
    weight: float


def ewma_update(
    state: EwmaVol | None,
    price: float,
    ts_ms: int,
    *,
    half_life_s: float,
    floor: float,
    cap: float,
) -> tuple[EwmaVol, TaggedVol]:
    """Fold an oracle price (currency, event time ``ts_ms``) into the EWMA realised vol.

    Each log return ``r`` over ``dt`` seconds gives the per-second variance ``r^2 / dt``
    (zero mean, as RiskMetrics), weighted ``alpha = 1 - 2^(-dt / half_life_s)`` against the
    past, so irregular steps count by the time they cover. The vol is
    ``sqrt(variance_per_s * YEAR_S)`` (a 365-day year), clipped to ``[floor, cap]`` and
    tagged ``ewma``, or ``floor`` / ``cap`` where the clip bound (``floor`` before the
    first return). A price not later than the last one leaves the state as it is: the
    realised path is not rewritten by corrections.
    """
    if not (half_life_s > 0.0 and 0.0 <= floor <= cap):
        msg = f"need half_life_s > 0 and 0 <= floor <= cap; got {half_life_s!r}, {floor!r}, {cap!r}"
        raise ValueError(msg)
    if not (math.isfinite(price) and price > 0.0):
        msg = f"price must be finite and > 0; got {price!r}"
        raise ValueError(msg)
    if state is None:
        state = EwmaVol(price=price, ts_ms=ts_ms, weighted_variance=0.0, weight=0.0)
    elif ts_ms > state.ts_ms:
        dt = (ts_ms - state.ts_ms) / 1000.0
        alpha = -math.expm1(-math.log(2.0) * dt / half_life_s)
        r = math.log(price / state.price)
        state = EwmaVol(
            price=price,
            ts_ms=ts_ms,
            weighted_variance=(1.0 - alpha) * state.weighted_variance + alpha * r * r / dt,
            weight=(1.0 - alpha) * state.weight + alpha,
        )
    if state.weight == 0.0:
        return state, TaggedVol(floor, "floor")
    vol = math.sqrt(state.weighted_variance / state.weight * YEAR_S)
    return state, _clip(vol, floor, cap)


def _clip(vol: float, floor: float, cap: float) -> TaggedVol:
    """``vol`` tagged ``ewma``, or the bound it crossed tagged ``floor`` / ``cap``."""
    if vol <= floor:
        return TaggedVol(floor, "floor")
    if vol >= cap:
        return TaggedVol(cap, "cap")
    return TaggedVol(vol, "ewma")


# --- the pick ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotedIv:
    """An option's implied vol (annual) from ``dex.quotes`` at event time ``ts_ms``."""

    iv: float
    ts_ms: int


@dataclass(frozen=True)
class SviSurface:
    """One underlying's smiles fitted at ``ts_ms``, keyed by expiry (ms since the epoch)."""

    ts_ms: int
    fits: Mapping[int, SviFit]


def pick_vol(
    *,
    k: float,
    expiry_ms: int,
    now_ms: int,
    quote: QuotedIv | None,
    surface: SviSurface | None,
    fallback: TaggedVol,
    max_quote_age_ms: int,
    max_surface_age_ms: int,
) -> TaggedVol:
    """The vol for an option at log-moneyness ``k = ln(K / F)`` expiring at ``expiry_ms``.

    The rule is the module's: a fresh quoted IV in [``VOL_MIN``, ``VOL_MAX``], else a fresh
    surface's unflagged fits (``vol_at`` at the surface's own time, so an expiry keeps its
    fitted vol while the surface is fresh), else ``fallback`` (``ewma_update``'s vol).
    """
    if (
        quote is not None
        and now_ms - quote.ts_ms <= max_quote_age_ms
        and VOL_MIN <= quote.iv <= VOL_MAX
    ):
        return TaggedVol(quote.iv, "quote_iv")
    if surface is not None and now_ms - surface.ts_ms <= max_surface_age_ms:
        fits = {
            (expiry - surface.ts_ms) / YEAR_MS: fit
            for expiry, fit in surface.fits.items()
            if expiry > surface.ts_ms and not fit.flags
        }
        t_fit = (expiry_ms - surface.ts_ms) / YEAR_MS
        if fits and t_fit > 0.0:
            vol = float(vol_at(fits, k, t_fit))
            if vol > 0.0:
                return TaggedVol(vol, "svi")
    return fallback
