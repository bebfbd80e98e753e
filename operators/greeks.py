"""European option prices and Greeks: Black-76 on the forward, and Black-Scholes-Merton.

Anchors: Black (1976), Haug (2007) "The Complete Guide to Option Pricing Formulas",
QuantLib's ``BlackCalculator`` and vollib's analytical Greeks.

Units and conventions (the contract):

- Prices, forwards, spots and strikes share one currency unit; ``T`` is in years; ``r``, ``q``
  and ``sigma`` are continuously compounded annual rates and annual volatilities as
  fractions (0.05 is 5 %). ``is_call`` is a boolean (True: call, False: put).
- Black-76 values an option on the forward ``F`` with discount ``exp(-r T)``. BSM with a
  continuous dividend (or carry) yield ``q`` is Black-76 with ``F = S exp((r - q) T)``.
- ``delta`` and ``gamma`` are first and second derivatives with respect to the underlying
  the model is written on: ``F`` for Black-76, ``S`` for BSM.
- ``vega`` = dV/dsigma per 1.00 of vol (divide by 100 for a vol point).
- ``theta`` = dV/dt = -dV/dT per year (divide by 365 for a calendar day), with the
  underlying (``F`` or ``S``) and the rates held fixed.
- ``rho`` = dV/dr per 1.00 of rate. For Black-76 ``F`` is held fixed, so rho = -T V; for
  BSM ``S`` and ``q`` are held fixed (the usual rho).

Degenerate cases. Where ``sigma * sqrt(T) == 0`` (expiry ``T = 0`` or no vol) the price is the
limit sigma -> 0: the discounted intrinsic value on the forward, ``exp(-r T) max(w (F - K), 0)``
(the plain intrinsic value at ``T = 0``). The Greeks are the same limits: delta is
``exp(-r T) w`` in the money and 0 out of it (BSM: ``exp(-q T) w``), and gamma is 0. At the
money (``F == K`` exactly) there is no finite limit for gamma or, at ``T = 0``, for theta; we
report gamma 0, theta from the carry term only, and delta half the in-the-money value
(``w / 2`` at ``T = 0``), which is the limit as ``sigma * sqrt(T) -> 0+``. Vega at the money
keeps its finite limit ``exp(-r T) F sqrt(T) / sqrt(2 pi)``.

Invalid inputs (``S``, ``F`` or ``K`` not > 0; ``T`` or ``sigma`` negative; non-finite values)
are the caller's to reject; ``validate`` gives the reason per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

FloatArray = npt.NDArray[np.float64]

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


@dataclass(frozen=True, kw_only=True)
class Greeks:
    """Price and raw Greeks, each a float64 array of the inputs' broadcast shape.

    price in currency; delta per unit of underlying; gamma per unit of underlying squared;
    vega per 1.00 vol; theta per year (dV/dt); rho per 1.00 rate.
    """

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    rho: FloatArray


def _sign(is_call: npt.ArrayLike) -> FloatArray:
    """+1.0 for a call, -1.0 for a put."""
    return np.where(np.asarray(is_call, dtype=bool), 1.0, -1.0)


def _broadcast(*arrays: npt.ArrayLike) -> tuple[FloatArray, ...]:
    """The inputs as float64 arrays of one broadcast shape."""
    return np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))


def _array(x: npt.ArrayLike) -> FloatArray:
    """``x`` as a float64 array (numpy turns 0-d results into scalars; this undoes it)."""
    return np.asarray(x, dtype=np.float64)


def _d1_d2(F: FloatArray, K: FloatArray, stdev: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Black's d1 and d2 for total standard deviation ``stdev = sigma sqrt(T)``.

    Where ``stdev == 0``, d1 = d2 = +inf in the money (F > K), -inf out of it, 0 at the money:
    the sigma -> 0 limits, so that N(d) is the step function with N(0) = 1/2.
    """
    log_fk = np.log(F / K)
    positive = stdev > 0.0
    safe = np.where(positive, stdev, 1.0)
    step = np.where(log_fk > 0.0, np.inf, np.where(log_fk < 0.0, -np.inf, 0.0))
    with np.errstate(over="ignore"):  # a tiny stdev gives |d1| = inf: the right limit
        d1 = np.where(positive, log_fk / safe + 0.5 * safe, step)
    d2 = np.where(positive, d1 - safe, step)
    return d1, d2


def _pdf(d: FloatArray) -> FloatArray:
    """Standard normal density; 0 for |d| = inf."""
    with np.errstate(over="ignore"):  # d * d overflows to inf for |d| > 1e154: density 0
        return _array(np.exp(-0.5 * d * d) * _INV_SQRT_2PI)


def black76_price(
    is_call: npt.ArrayLike,
    F: npt.ArrayLike,
    K: npt.ArrayLike,
    T: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
) -> FloatArray:
    """Black-76 price (currency) of a European option on the forward ``F``; arrays broadcast.

    ``T`` in years, ``r`` and ``sigma`` annual fractions. The fast path for scenario
    repricing and the implied-vol solver: no Greeks are computed.

    >>> float(black76_price(True, 100.0, 100.0, 1.0, 0.0, 0.2))  # doctest: +ELLIPSIS
    7.965567...
    """
    w = _sign(is_call)
    F_ = np.asarray(F, dtype=np.float64)
    K_ = np.asarray(K, dtype=np.float64)
    T_ = np.asarray(T, dtype=np.float64)
    d1, d2 = _d1_d2(F_, K_, np.asarray(sigma, dtype=np.float64) * np.sqrt(T_))
    discount = np.exp(-np.asarray(r, dtype=np.float64) * T_)
    return _array(discount * w * (F_ * ndtr(w * d1) - K_ * ndtr(w * d2)))


def black76(
    is_call: npt.ArrayLike,
    F: npt.ArrayLike,
    K: npt.ArrayLike,
    T: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
) -> Greeks:
    """Black-76 price and Greeks of a European option on the forward ``F``; arrays broadcast.

    delta = dV/dF, gamma = d2V/dF2, vega per 1.00 vol, theta = -dV/dT per year and
    rho = dV/dr = -T V, all with ``F`` held fixed.
    """
    w, F_, K_, T_, r_, sigma_ = _broadcast(_sign(is_call), F, K, T, r, sigma)
    sqrt_t = np.sqrt(T_)
    stdev = sigma_ * sqrt_t
    d1, d2 = _d1_d2(F_, K_, stdev)
    discount = np.exp(-r_ * T_)
    n_d1 = _pdf(d1)
    nw_d1 = ndtr(w * d1)
    price = discount * w * (F_ * nw_d1 - K_ * ndtr(w * d2))
    positive = stdev > 0.0
    safe_stdev = np.where(positive, stdev, 1.0)
    safe_sqrt_t = np.where(positive, sqrt_t, 1.0)
    gamma = np.where(positive, discount * n_d1 / (F_ * safe_stdev), 0.0)
    decay = np.where(positive, discount * F_ * n_d1 * sigma_ / (2.0 * safe_sqrt_t), 0.0)
    return Greeks(
        price=_array(price),
        delta=_array(discount * w * nw_d1),
        gamma=_array(gamma),
        vega=_array(discount * F_ * n_d1 * sqrt_t),
        theta=_array(r_ * price - decay),
        rho=_array(-T_ * price),
    )


def bsm(
    is_call: npt.ArrayLike,
    S: npt.ArrayLike,
    K: npt.ArrayLike,
    T: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    sigma: npt.ArrayLike,
) -> Greeks:
    """Black-Scholes-Merton price and Greeks on spot ``S`` with continuous yield ``q``.

    Equal to Black-76 with ``F = S exp((r - q) T)``. delta = dV/dS, gamma = d2V/dS2, vega per
    1.00 vol, theta = -dV/dT per year and rho = dV/dr per 1.00, all with ``S`` and ``q`` fixed.
    """
    w, S_, K_, T_, r_, q_, sigma_ = _broadcast(_sign(is_call), S, K, T, r, q, sigma)
    sqrt_t = np.sqrt(T_)
    stdev = sigma_ * sqrt_t
    carry = np.exp(-q_ * T_)
    discount = np.exp(-r_ * T_)
    F_ = S_ * np.exp((r_ - q_) * T_)
    d1, d2 = _d1_d2(F_, K_, stdev)
    n_d1 = _pdf(d1)
    nw_d1 = ndtr(w * d1)
    nw_d2 = ndtr(w * d2)
    spot_leg = S_ * carry * nw_d1  # = discount * F N(w d1)
    strike_leg = K_ * discount * nw_d2
    positive = stdev > 0.0
    safe_stdev = np.where(positive, stdev, 1.0)
    safe_sqrt_t = np.where(positive, sqrt_t, 1.0)
    gamma = np.where(positive, carry * n_d1 / (S_ * safe_stdev), 0.0)
    decay = np.where(positive, S_ * carry * n_d1 * sigma_ / (2.0 * safe_sqrt_t), 0.0)
    return Greeks(
        price=_array(w * (spot_leg - strike_leg)),
        delta=_array(w * carry * nw_d1),
        gamma=_array(gamma),
        vega=_array(S_ * carry * n_d1 * sqrt_t),
        theta=_array(-decay + w * (q_ * spot_leg - r_ * strike_leg)),
        rho=_array(w * T_ * strike_leg),
    )


def validate(
    S: npt.ArrayLike,
    K: npt.ArrayLike,
    T: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    sigma: npt.ArrayLike,
) -> npt.NDArray[np.str_]:
    """Per-row reasons the inputs are invalid, "" for a valid row; arrays broadcast.

    ``S`` is the spot (BSM) or the forward (Black-76; pass ``q = 0``). Rules: every input
    finite, ``S > 0``, ``K > 0``, ``T >= 0`` (years), ``sigma >= 0``. Several failures in one
    row are joined with "; ".

    >>> validate([100.0, 100.0], 100.0, [1.0, -1.0], 0.0, 0.0, 0.2).tolist()
    ['', 'T must be >= 0 (years); got -1.0']
    """
    arrays = _broadcast(S, K, T, r, q, sigma)
    shape = arrays[0].shape
    by_name = {
        name: a.reshape(-1)
        for name, a in zip(("S", "K", "T", "r", "q", "sigma"), arrays, strict=True)
    }
    reasons = [""] * arrays[0].size
    for name, value in by_name.items():
        for i in np.flatnonzero(~np.isfinite(value)):
            reasons[i] = _join(reasons[i], f"{name} must be finite; got {float(value[i])!r}")
    rules = (
        ("S", by_name["S"] > 0.0, "S must be > 0"),
        ("K", by_name["K"] > 0.0, "K must be > 0"),
        ("T", by_name["T"] >= 0.0, "T must be >= 0 (years)"),
        ("sigma", by_name["sigma"] >= 0.0, "sigma must be >= 0"),
    )
    for name, ok, text in rules:
        value = by_name[name]
        for i in np.flatnonzero(~ok & np.isfinite(value)):
            reasons[i] = _join(reasons[i], f"{text}; got {float(value[i])!r}")
    return np.array(reasons, dtype=str).reshape(shape)


def _join(existing: str, reason: str) -> str:
    """Append ``reason`` to a "; "-separated list of reasons."""
    return f"{existing}; {reason}" if existing else reason
