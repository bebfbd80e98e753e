"""Uniswap pool maths, both ways: price and depth from a pool's state, and the state for a price.

Units. A pool's raw price is token1 per token0 in smallest units; a price is ``base`` in
``quote`` in whole tokens (``10**(decimals0 - decimals1)`` times the raw price, inverted
when token1 is the base). A V3 pool keeps sqrtP = sqrt(raw) as the Q64.96 integer
``sqrtPriceX96 = sqrtP * 2**96`` and its ``liquidity`` L; its virtual reserves at the
current price are x = L / sqrtP (token0) and y = L * sqrtP (token1), in smallest units. A
V2 pair's reserves are real, and raw = reserve1 / reserve0. The depth of a pool (the
oracle's weight for it) is twice its quote-side reserve, in whole quote tokens, so a V3
pool's and a V2 pair's are comparable.

Sources: Uniswap v3-core ``TickMath`` (tick = floor(log base 1.0001 of raw)) and
``SqrtPriceMath`` (amounts within a tick range); v2-core ``UniswapV2Pair`` (reserves).
Reading a pool is exact integer work, rounded to a float once; the state for a float price
is computed exactly from that float (with ``Fraction``) and floored to integers.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Protocol

Q96 = 1 << 96
"""2**96, the fixed-point scale of ``sqrtPriceX96``."""
_Q192 = 1 << 192
_LOG_TICK_BASE = math.log(1.0001)


class Orientation(Protocol):
    """What the formulas need of a pool: its tokens' decimals and which token is the base."""

    @property
    def decimals0(self) -> int: ...

    @property
    def decimals1(self) -> int: ...

    @property
    def base_is_token0(self) -> bool: ...


def v3_price(sqrt_price_x96: int, pool: Orientation) -> float:
    """``base`` in ``quote`` (whole tokens) from a V3 ``sqrtPriceX96``, rounded once.

    raw = sqrtPriceX96**2 / 2**192 is token1 per token0 in smallest units; times
    10**(decimals0 - decimals1) in whole tokens; inverted when token1 is the base.
    """
    num, den = sqrt_price_x96 * sqrt_price_x96, _Q192
    shift = pool.decimals0 - pool.decimals1
    if shift >= 0:
        num *= 10**shift
    else:
        den *= 10**-shift
    return num / den if pool.base_is_token0 else den / num


def sqrt_price_x96(price: float, pool: Orientation) -> int:
    """The V3 ``sqrtPriceX96`` for ``price`` (``base`` in ``quote``, whole tokens).

    The inverse of :func:`v3_price`: raw = token1 per token0 in smallest units,
    sqrtPriceX96 = floor(sqrt(raw) * 2**96), computed exactly from the float.
    """
    ratio = Fraction(price) if pool.base_is_token0 else 1 / Fraction(price)
    raw = ratio * Fraction(10**pool.decimals1, 10**pool.decimals0)
    return math.isqrt(raw.numerator * Q96 * Q96 // raw.denominator)


def v3_tick(sqrt_price_x96: int) -> int:
    """The V3 tick of a ``sqrtPriceX96``: floor(log base 1.0001 of the raw price)."""
    return math.floor(2 * math.log(sqrt_price_x96 / Q96) / _LOG_TICK_BASE)


def v3_depth(sqrt_price_x96: int, liquidity: int, pool: Orientation) -> float:
    """Twice the quote-side virtual reserve of a V3 pool, whole quote tokens.

    y = L * sqrtP (token1) or x = L / sqrtP (token0) in smallest units, with
    sqrtP = sqrtPriceX96 / 2**96; the depth grows with ``liquidity``.
    """
    if pool.base_is_token0:  # quote is token1
        return 2 * liquidity * sqrt_price_x96 / Q96 / 10**pool.decimals1
    return 2 * liquidity * Q96 / sqrt_price_x96 / 10**pool.decimals0


def v3_liquidity(depth: float, sqrt_price_x96: int, pool: Orientation) -> int:
    """The V3 ``liquidity`` L whose :func:`v3_depth` is ``depth`` (whole quote tokens).

    The inverse of :func:`v3_depth`: L = y / sqrtP or x * sqrtP for a quote-side virtual
    reserve of ``depth / 2``, floored.
    """
    if pool.base_is_token0:  # quote is token1: y = L * sqrtP
        return int(depth * 10**pool.decimals1 * Q96 / (2 * sqrt_price_x96))
    return int(depth * 10**pool.decimals0 * sqrt_price_x96 / (2 * Q96))  # x = L / sqrtP


def v3_amounts(liquidity: int, sqrt_before: int, sqrt_after: int) -> tuple[int, int]:
    """(amount0, amount1) into the pool (negative: out), smallest units, for a move of
    ``sqrtPriceX96`` from ``sqrt_before`` to ``sqrt_after``.

    Within one tick range: amount1 = L * delta(sqrtP), amount0 = L * delta(1 / sqrtP).
    """
    amount1 = liquidity * (sqrt_after - sqrt_before) // Q96
    amount0 = liquidity * Q96 // sqrt_after - liquidity * Q96 // sqrt_before
    return amount0, amount1


def v2_price_depth(reserve0: int, reserve1: int, pool: Orientation) -> tuple[float, float]:
    """(``base`` in ``quote``, twice the quote reserve) from V2 reserves, whole tokens.

    price = (reserve1 / 10**decimals1) / (reserve0 / 10**decimals0), inverted when token1
    is the base; each rounded once.
    """
    num = reserve1 * 10**pool.decimals0
    den = reserve0 * 10**pool.decimals1
    if pool.base_is_token0:
        return num / den, 2 * reserve1 / 10**pool.decimals1
    return den / num, 2 * reserve0 / 10**pool.decimals0


def v2_reserves(price: float, depth: float, pool: Orientation) -> tuple[int, int]:
    """(reserve0, reserve1) in smallest units for ``price`` and a quote reserve of
    ``depth / 2`` (whole quote tokens).

    The inverse of :func:`v2_price_depth`: quote reserve = depth / 2, base reserve =
    quote reserve / price, computed exactly from the floats and floored.
    """
    quote_reserve = Fraction(depth) / 2
    base_reserve = quote_reserve / Fraction(price)
    if pool.base_is_token0:
        return int(base_reserve * 10**pool.decimals0), int(quote_reserve * 10**pool.decimals1)
    return int(quote_reserve * 10**pool.decimals0), int(base_reserve * 10**pool.decimals1)
