"""Split an order across the Uniswap V2 and V3 pools of a pair, for the most output net of gas.

The split (Angeris et al. 2022, "Optimal routing for constant function market makers"):
at the optimum every pool in use has the same marginal price lambda (output per unit of
input at the margin), and a pool not in use is worse at zero input. For a marginal price
lambda each pool's input has a closed form:

- V2 (getAmountOut, g = 1 - fee): out(x) = g x R_out / (R_in + g x), whose marginal
  price g R_in R_out / (R_in + g x)**2 = lambda at x = (sqrt(g R_in R_out / lambda) - R_in) / g.
  With V2 pairs only, the lambda that makes the inputs sum to the order is closed form too.
- V3: within a tick range of liquidity L the marginal price is g P (token0 in, P the price
  token1/token0) or g / P (token1 in); the input that moves the price to lambda / g is
  L (1 / w* - 1 / w) / g with w = sqrtP (token0 in) or 1 / sqrtP (token1 in), summed
  over the ranges crossed.

lambda is found by bisection (on the floats themselves, so it ends), in floating point;
the amounts are integers, and every leg is then quoted exactly (``operators.uniswap_math``).
Integers: each pool takes the floor of its input at the smallest lambda where the floors
still fall short, and the dust, the rest of the order, goes to the best pool (the highest
marginal price before the trade) first, as far as its input at the next float allows, then
to the next. Every pool's input thus grows with the order, so the output does too.

Gas, from the Uniswap Smart Order Router's heuristic gas models (``smart-order-router``,
``src/routers/alpha-router/gas-models/``), per leg, every leg being one hop:

- V2: ``BASE_SWAP_COST`` 135,000 (``v2/v2-heuristic-gas-model.ts``);
- V3: ``BASE_SWAP_COST`` 2,000 + ``COST_PER_HOP`` 80,000 + ``SINGLE_HOP_OVERHEAD`` 15,000,
  plus ``COST_PER_INIT_TICK`` 31,000 per initialized tick crossed, at least one
  (``v3/gas-costs.ts``, mainnet; ``v3-heuristic-gas-model.ts`` counts
  ``max(1, ticks crossed)``).

With ``gas_cost`` > 0 (raw units of the bought token per unit of gas) a pool stays in the
split only while dropping it would lose more output than its gas costs: the pool whose
removal gains the most net output goes, until none does. The route is never worse, net of
gas, than the best single pool able to fill the order: that is compared, and taken when
at least as good. The SOR's cap of 7 splits is left to the gas model.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from operators.pool_state import FEE_DENOMINATOR, PoolState, V2PoolState, V3PoolState
from operators.uniswap_math import (
    Q96,
    default_price_limit,
    sqrt_ratio_at_tick,
    v2_amount_out,
    v3_max_amount_in,
    v3_swap_exact_in,
)

V2_SWAP_GAS = 135_000
"""SOR ``v2-heuristic-gas-model.ts`` ``BASE_SWAP_COST``: a one-hop V2 swap."""
V3_SWAP_GAS = 2_000 + 80_000 + 15_000
"""SOR ``v3/gas-costs.ts`` ``BASE_SWAP_COST + COST_PER_HOP + SINGLE_HOP_OVERHEAD``."""
V3_TICK_GAS = 31_000
"""SOR ``v3/gas-costs.ts`` ``COST_PER_INIT_TICK``: per initialized tick crossed (at least 1)."""


class Leg(msgspec.Struct, frozen=True, kw_only=True):
    """One pool's part of a route: its address, the input it gets and its exact output
    (raw units), and the block its state was read at."""

    pool: str
    amount_in: int
    amount_out: int
    block: int


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """An order split across pools: ``amount_in`` of ``sell`` (raw units) for
    ``amount_out`` of ``buy``, the sum of the legs' exact outputs.

    ``best_single_pool_out``: what the best single pool able to fill the whole order pays
    (best net of gas; 0 when none can alone). ``gas``: the route's gas estimate (SOR
    model, gas units). ``price_impact_bps``: how far the route's price falls below the
    best pool's mid price before the trade (fees included), in basis points.
    """

    sell: str
    buy: str
    amount_in: int
    amount_out: int
    legs: tuple[Leg, ...]
    best_single_pool_out: int
    gas: int
    price_impact_bps: float


def leg_gas(pool: PoolState, ticks_crossed: int) -> int:
    """The SOR gas estimate of one leg (gas units)."""
    if isinstance(pool, V2PoolState):
        return V2_SWAP_GAS
    return V3_SWAP_GAS + V3_TICK_GAS * max(1, ticks_crossed)


class _Curve:
    """One pool seen from the order: its marginal price before the trade, the input that
    brings its marginal price down to a given lambda, and exact quotes (cached)."""

    def __init__(self, pool: PoolState, zero_for_one: bool, amount: int) -> None:
        self.pool = pool
        self.zero_for_one = zero_for_one
        self.gamma = (FEE_DENOMINATOR - pool.fee_pips) / FEE_DENOMINATOR
        self._quotes: dict[int, tuple[int, int]] = {}
        self.capacity: int | None = None  # exact, when it could bind this order
        if isinstance(pool, V2PoolState):
            r_in, r_out = (
                (pool.reserve0, pool.reserve1) if zero_for_one else (pool.reserve1, pool.reserve0)
            )
            self.r_in, self.r_out = float(r_in), float(r_out)
            self.spot = self.r_out / self.r_in if r_in and r_out else 0.0
            self.usable = r_in > 0 and r_out > 0
        else:
            self._segments(pool, amount)
        self.rate0 = self.gamma * self.spot

    def _segments(self, pool: V3PoolState, amount: int) -> None:
        """The tick ranges the swap walks, in w (sqrtP selling token0, 1 / sqrtP selling
        token1, so that w falls along the swap): where each starts, its liquidity and the
        gross input needed to reach its start."""

        def w(sqrt_x96: int) -> float:
            return sqrt_x96 / Q96 if self.zero_for_one else Q96 / sqrt_x96

        ahead = (
            [t for t in reversed(pool.ticks) if t[0] <= pool.tick]
            if self.zero_for_one
            else [t for t in pool.ticks if t[0] > pool.tick]
        )
        starts, liquidities, cumulative = [w(pool.sqrt_price_x96)], [pool.liquidity], [0.0]
        for index, net in ahead:
            end = w(sqrt_ratio_at_tick(index))
            cumulative.append(cumulative[-1] + liquidities[-1] * (1 / end - 1 / starts[-1]))
            starts.append(end)
            liquidities.append(liquidities[-1] + (-net if self.zero_for_one else net))
        self.w_limit = w(default_price_limit(self.zero_for_one))
        total = cumulative[-1] + liquidities[-1] * max(0.0, 1 / self.w_limit - 1 / starts[-1])
        self.neg_starts = [-s for s in starts]  # ascending, for bisect
        self.liquidities = liquidities
        self.cumulative = [c / self.gamma for c in cumulative]
        self.spot = starts[0] * starts[0]
        self.capacity_float = total / self.gamma
        if self.capacity_float < 2 * amount:  # it might bind: know it exactly
            self.capacity = v3_max_amount_in(pool, self.zero_for_one)
        self.usable = self.capacity != 0 and self.capacity_float > 0

    def input_at(self, rate: float) -> int:
        """The integer input (raw units) that brings the marginal price down to ``rate``
        (non-increasing in ``rate``), at most the pool's capacity."""
        if rate >= self.rate0:
            return 0
        if isinstance(self.pool, V2PoolState):
            x = (math.sqrt(self.gamma * self.r_in * self.r_out / rate) - self.r_in) / self.gamma
        else:
            target = math.sqrt(rate / self.gamma)
            if target <= self.w_limit:
                x = self.capacity_float
            else:
                k = bisect_right(self.neg_starts, -target) - 1
                start, liquidity = -self.neg_starts[k], self.liquidities[k]
                x = self.cumulative[k] + liquidity * (1 / target - 1 / start) / self.gamma
                if k + 1 < len(self.cumulative):
                    x = min(x, self.cumulative[k + 1])
        whole = math.floor(min(x, 1e300))  # a V2 input at a vanishing rate is unbounded
        return whole if self.capacity is None else min(whole, self.capacity)

    def can_fill(self, amount: int) -> bool:
        return self.capacity is None or self.capacity >= amount

    def quote(self, amount: int) -> tuple[int, int]:
        """(exact output, gas units) for ``amount`` in."""
        cached = self._quotes.get(amount)
        if cached is None:
            if isinstance(self.pool, V2PoolState):
                r_in, r_out = (
                    (self.pool.reserve0, self.pool.reserve1)
                    if self.zero_for_one
                    else (self.pool.reserve1, self.pool.reserve0)
                )
                cached = (v2_amount_out(amount, r_in, r_out, self.pool.fee_pips), V2_SWAP_GAS)
            else:
                swap = v3_swap_exact_in(self.pool, self.zero_for_one, amount)
                if swap.amount_in != amount:  # below its capacity, every wei is used
                    raise AssertionError(
                        f"pool {self.pool.address} took {swap.amount_in} of {amount}"
                    )
                cached = (swap.amount_out, leg_gas(self.pool, swap.ticks_crossed))
            self._quotes[amount] = cached
        return cached


@dataclass(frozen=True)
class _Split:
    """A candidate route: its legs (curve, amount in, exact amount out), output and gas."""

    legs: tuple[tuple[_Curve, int, int], ...]
    amount_out: int
    gas: int

    def net(self, gas_cost: int) -> int:
        return self.amount_out - gas_cost * self.gas


def _bits(x: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", x))[0])


def _float(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<q", bits))[0])


def _v2_rate(curves: Sequence[_Curve], amount: int) -> float:
    """With V2 pairs only: the marginal price lambda at which their inputs sum to
    ``amount``: 1 / sqrt(lambda) = (A + sum R_in / g) / sum(sqrt(g R_in R_out) / g) over
    the pairs in use, the pairs whose marginal price before the trade is above lambda."""
    active = sorted(curves, key=lambda c: -c.rate0)
    rate = _v2_closed_rate(active, amount)
    while len(active) > 1 and active[-1].rate0 <= rate:
        without = _v2_closed_rate(active[:-1], amount)
        if without < active[-1].rate0:
            return rate  # float rounding only: the last pair is at the margin, not out
        active.pop()
        rate = without
    return rate


def _v2_closed_rate(active: Sequence[_Curve], amount: int) -> float:
    """lambda with every pair of ``active`` in use (see :func:`_v2_rate`)."""
    inverse = (amount + sum(c.r_in / c.gamma for c in active)) / sum(
        math.sqrt(c.gamma * c.r_in * c.r_out) / c.gamma for c in active
    )
    return 1 / (inverse * inverse)


def _allocate(curves: Sequence[_Curve], amount: int) -> list[int]:
    """Integer inputs summing to ``amount`` at a common marginal price (module docstring).
    The pools must be able to take ``amount`` together."""

    def total(rate: float) -> int:
        return sum(c.input_at(rate) for c in curves)

    high = max(c.rate0 for c in curves)  # every input is 0 there
    if all(isinstance(c.pool, V2PoolState) for c in curves):
        guess = _v2_rate(curves, amount)
        low, high = guess * (1 - 1e-9), min(high, guess * (1 + 1e-9))
        if total(high) >= amount:  # float error put the bracket off: widen it
            high = max(c.rate0 for c in curves)
    else:
        low = high / 2
    while total(low) < amount:
        if low == 0.0:
            raise AssertionError(f"the pools cannot take {amount}; checked before")
        low /= 2
    lo, hi = _bits(low), _bits(high)
    while hi - lo > 1:  # the largest float with total >= amount
        mid = (lo + hi) // 2
        if total(_float(mid)) >= amount:
            lo = mid
        else:
            hi = mid
    base = [c.input_at(_float(hi)) for c in curves]
    room = [c.input_at(_float(lo)) - b for c, b in zip(curves, base, strict=True)]
    dust = amount - sum(base)
    for i in sorted(range(len(curves)), key=lambda i: -curves[i].rate0):  # best first
        take = min(dust, room[i])
        base[i] += take
        dust -= take
    return base


def _split(curves: Sequence[_Curve], amount: int) -> _Split:
    legs = []
    for curve, amount_in in zip(curves, _allocate(curves, amount), strict=True):
        if amount_in > 0:
            out, _ = curve.quote(amount_in)
            legs.append((curve, amount_in, out))
    gas = sum(c.quote(a)[1] for c, a, _ in legs)
    return _Split(tuple(legs), sum(out for _, _, out in legs), gas)


def _fills(curves: Sequence[_Curve], amount: int) -> bool:
    return any(c.capacity is None for c in curves) or sum(c.capacity or 0 for c in curves) >= amount


def route(
    pools: Sequence[V2PoolState | V3PoolState],
    sell: str,
    buy: str,
    amount_in: int,
    gas_cost: int = 0,
) -> Route:
    """Split ``amount_in`` of ``sell`` (raw units) across the pools of ``sell``/``buy``
    for the most output net of gas (``gas_cost``: raw units of ``buy`` per gas unit).

    Raises ``ValueError`` when no pool trades the pair, or when the pools together cannot
    take the order (naming the shortfall).
    """
    if amount_in <= 0:
        raise ValueError(f"amount_in: expected > 0 raw units of {sell}; got {amount_in}")
    if gas_cost < 0:
        raise ValueError(f"gas_cost: expected >= 0; got {gas_cost}")
    pair = [p for p in pools if {p.token0, p.token1} == {sell, buy}]
    if not pair:
        raise ValueError(f"no pool trades {sell} for {buy}")
    curves = [c for p in pair if (c := _Curve(p, p.token0 == sell, amount_in)).usable]
    if not _fills(curves, amount_in):
        most = sum(c.capacity or 0 for c in curves)
        raise ValueError(
            f"the {len(pair)} pool(s) of {sell}/{buy} take at most {most} {sell} before their "
            f"prices reach the limit; the order of {amount_in} is short by {amount_in - most}"
        )
    best = _split(curves, amount_in)
    while gas_cost > 0 and len(best.legs) > 1:  # drop the pool whose gas is worth the most
        in_use = [c for c, _, _ in best.legs]
        fewer = []
        for dropped in in_use:
            others = [c for c in in_use if c is not dropped]
            if _fills(others, amount_in):
                fewer.append(_split(others, amount_in))
        better = max(fewer, key=lambda s: s.net(gas_cost), default=None)
        if better is None or better.net(gas_cost) <= best.net(gas_cost):
            break
        best = better
    singles = [_single(c, amount_in) for c in curves if c.can_fill(amount_in)]
    best_single = max(singles, key=lambda s: s.net(gas_cost), default=None)
    if best_single is not None and best_single.net(gas_cost) >= best.net(gas_cost):
        best = best_single
    spot = max(c.spot for c in curves)
    impact = (1 - best.amount_out / (amount_in * spot)) * 10_000
    return Route(
        sell=sell,
        buy=buy,
        amount_in=amount_in,
        amount_out=best.amount_out,
        legs=tuple(
            Leg(pool=c.pool.address, amount_in=a, amount_out=out, block=c.pool.block)
            for c, a, out in best.legs
        ),
        best_single_pool_out=0 if best_single is None else best_single.amount_out,
        gas=best.gas,
        price_impact_bps=round(impact, 2),
    )


def _single(curve: _Curve, amount: int) -> _Split:
    out, gas = curve.quote(amount)
    return _Split(((curve, amount, out),), out, gas)
