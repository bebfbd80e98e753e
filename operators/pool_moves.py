"""The swap that moves a Uniswap pool to a target price, exactly, and the pool after it.

The dev chain's scenario drives its prices with real swaps: each block it moves every pool
to the path's price. The target is a V3 ``sqrtPriceX96`` (``operators.pool_math.
sqrt_price_x96``); for a V2 pair it stands for the reserve ratio reserve1 / reserve0 =
sqrtPriceX96**2 / 2**192, in smallest units.

- V3 (``UniswapV3Pool.swap`` with a price limit): a swap whose limit is the target stops
  there. Its input is what ``operators.uniswap_math.v3_swap_exact_in`` consumes walking to
  the limit; that input sent with that limit lands the pool on the target exactly (each
  step's ``amountIn + feeAmount`` is what the pool takes to reach the step's end), checked
  by running the pool's swap loop on it.
- V2 (``UniswapV2Pair.swap``): the smallest input whose ``getAmountOut`` takes the reserve
  ratio to or past the target; the ratio then misses it by at most one smallest unit of
  input.

Amounts are raw integer units; ``fee_pips`` as in the pools.
"""

from __future__ import annotations

import msgspec

from operators.pool_state import V2PoolState, V3PoolState
from operators.uniswap_math import V3Swap, v2_amount_out, v3_swap_exact_in

_Q192 = 1 << 192
_INT256_MAX = (1 << 255) - 1


class V2Move(msgspec.Struct, frozen=True, kw_only=True):
    """A V2 swap: pay ``amount_in`` of token0 (``zero_for_one``) or token1, take
    ``amount_out`` (``getAmountOut``) of the other."""

    zero_for_one: bool
    amount_in: int
    amount_out: int


class V3Move(msgspec.Struct, frozen=True, kw_only=True):
    """A V3 swap to a target price: sell ``amount_in`` (``amountSpecified``) of token0
    (``zero_for_one``) or token1 with the target as the price limit; ``swap`` is what the
    pool does with it (the input it takes may be less: see :func:`v3_swap_to_price`)."""

    zero_for_one: bool
    amount_in: int
    swap: V3Swap


def v3_swap_to_price(pool: V3PoolState, target_sqrt_price_x96: int) -> V3Move | None:
    """The exact-input swap that moves ``pool`` to ``target_sqrt_price_x96``, sent with
    that target as its price limit; None when the pool sits at the target already.

    Its input is what the walk to the target consumes. Where the walk ends across a
    stretch of no liquidity, the pool crosses it for nothing but only while input is left:
    one more unit is then sent, which the pool does not take (a swap of nothing reverts,
    ``UniswapV3Pool.swap``: ``AS``, hence at least 1 unit). Raises ``ValueError`` if that
    input still stops short of the target.
    """
    start = pool.sqrt_price_x96
    if target_sqrt_price_x96 == start:
        return None
    zero_for_one = target_sqrt_price_x96 < start
    walk = v3_swap_exact_in(pool, zero_for_one, _INT256_MAX, target_sqrt_price_x96)
    for amount_in in (max(walk.amount_in, 1), walk.amount_in + 1):
        swap = v3_swap_exact_in(pool, zero_for_one, amount_in, target_sqrt_price_x96)
        if swap.sqrt_price_x96 == target_sqrt_price_x96:
            return V3Move(zero_for_one=zero_for_one, amount_in=amount_in, swap=swap)
    msg = (
        f"pool {pool.address}: an input of {amount_in} stops at sqrtPriceX96 "
        f"{swap.sqrt_price_x96}, short of the target {target_sqrt_price_x96}"
    )
    raise ValueError(msg)


def v3_after(pool: V3PoolState, swap: V3Swap, block: int) -> V3PoolState:
    """``pool`` after ``swap``, mined in ``block`` (a swap moves no liquidity between
    ticks)."""
    return msgspec.structs.replace(
        pool,
        sqrt_price_x96=swap.sqrt_price_x96,
        tick=swap.tick,
        liquidity=swap.liquidity,
        block=block,
    )


def v2_swap_to_price(pool: V2PoolState, target_sqrt_price_x96: int) -> V2Move | None:
    """The smallest swap that takes the pair's reserve ratio reserve1 / reserve0 to or past
    ``target_sqrt_price_x96 ** 2 / 2**192``; None when the pair sits at the target, or
    when that swap would be paid nothing (the target is that close: the pair refuses it,
    ``INSUFFICIENT_OUTPUT_AMOUNT``)."""
    r0, r1, fee = pool.reserve0, pool.reserve1, pool.fee_pips
    target = target_sqrt_price_x96 * target_sqrt_price_x96
    zero_for_one = target * r0 < r1 * _Q192  # the ratio must fall: sell token0

    def reached(amount_in: int) -> bool:
        if zero_for_one:
            out = v2_amount_out(amount_in, r0, r1, fee)
            return (r1 - out) * _Q192 <= target * (r0 + amount_in)
        out = v2_amount_out(amount_in, r1, r0, fee)
        return (r1 + amount_in) * _Q192 >= target * (r0 - out)

    if target * r0 == r1 * _Q192:
        return None
    high = 1
    while not reached(high):
        high *= 2
    low = high // 2  # not reached (or 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reached(mid) else (mid, high)
    reserve_in, reserve_out = (r0, r1) if zero_for_one else (r1, r0)
    amount_out = v2_amount_out(high, reserve_in, reserve_out, fee)
    if amount_out == 0:
        return None
    return V2Move(zero_for_one=zero_for_one, amount_in=high, amount_out=amount_out)


def v2_after(pool: V2PoolState, move: V2Move, block: int) -> V2PoolState:
    """``pool`` after ``move``, mined in ``block``."""
    if move.zero_for_one:
        reserves = (pool.reserve0 + move.amount_in, pool.reserve1 - move.amount_out)
    else:
        reserves = (pool.reserve0 - move.amount_out, pool.reserve1 + move.amount_in)
    return msgspec.structs.replace(pool, reserve0=reserves[0], reserve1=reserves[1], block=block)
