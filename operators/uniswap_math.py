"""Exact Uniswap quotes: V2 ``getAmountOut`` and a V3 exact-input swap across ticks.

Integer arithmetic with the contracts' rounding, so a quote is what the pool pays, to the
wei. Each function names the Solidity function it follows:

- v2-core ``UniswapV2Library.getAmountOut`` (periphery) and ``UniswapV2Pair.swap``;
- v3-core ``libraries/TickMath.sol``, ``SqrtPriceMath.sol``, ``SwapMath.sol``,
  ``TickBitmap.nextInitializedTickWithinOneWord`` and ``UniswapV3Pool.swap``.

Python's integers replace ``FullMath``'s 512-bit products; every ``mulDiv`` (floor) and
``mulDivRoundingUp`` (ceiling) keeps its direction, and where the contract takes another
path when a 256-bit product overflows (``getNextSqrtPriceFromAmount0RoundingUp``), so does
this port, since the two paths round differently. A call the contract would revert
raises ``ValueError`` with the contract's reason.

Units: amounts in raw token units; ``sqrt_price_x96`` is sqrt(token1/token0) as a Q64.96
number (``sqrtPriceX96``); ``fee_pips`` in hundredths of a bip (3000 = 0.3 %). Only the
exact-input side of ``SwapMath.computeSwapStep`` is ported: the router sells a known
amount.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from functools import lru_cache
from math import gcd
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from operators.pool_state import V3PoolState

MIN_TICK = -887272
"""``TickMath.MIN_TICK``: log base 1.0001 of 2**-128."""
MAX_TICK = -MIN_TICK
"""``TickMath.MAX_TICK``."""
MIN_SQRT_RATIO = 4295128739
"""``TickMath.MIN_SQRT_RATIO`` = ``getSqrtRatioAtTick(MIN_TICK)``."""
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
"""``TickMath.MAX_SQRT_RATIO`` = ``getSqrtRatioAtTick(MAX_TICK)``."""
Q96 = 1 << 96
"""``FixedPoint96.Q96``."""
_PIPS = 1_000_000  # SwapMath's 1e6: fee_pips per unit
_UINT256 = 1 << 256
_UINT256_MAX = _UINT256 - 1
_UINT160 = 1 << 160
_INT256_MAX = (1 << 255) - 1

# TickMath.getSqrtRatioAtTick: 2**128 / sqrt(1.0001) ** (2**i) for bit i of |tick|, Q128.128
_RATIO_BITS = (
    (0x2, 0xFFF97272373D413259A46990580E213A),
    (0x4, 0xFFF2E50F5F656932EF12357CF3C7FDCC),
    (0x8, 0xFFE5CACA7E10E4E61C3624EAA0941CD0),
    (0x10, 0xFFCB9843D60F6159C9DB58835C926644),
    (0x20, 0xFF973B41FA98C081472E6896DFB254C0),
    (0x40, 0xFF2EA16466C96A3843EC78B326B52861),
    (0x80, 0xFE5DEE046A99A2A811C461F1969C3053),
    (0x100, 0xFCBE86C7900A88AEDCFFC83B479AA3A4),
    (0x200, 0xF987A7253AC413176F2B074CF7815E54),
    (0x400, 0xF3392B0822B70005940C7A398E4B70F3),
    (0x800, 0xE7159475A2C29B7443B29C7FA6E889D9),
    (0x1000, 0xD097F3BDFD2022B8845AD8F792AA5825),
    (0x2000, 0xA9F746462D870FDF8A65DC1F90E061E5),
    (0x4000, 0x70D869A156D2A1B890BB3DF62BAF32F7),
    (0x8000, 0x31BE135F97D08FD981231505542FCFA6),
    (0x10000, 0x9AA508B5B7A84E1C677DE54F3E99BC9),
    (0x20000, 0x5D6AF8DEDB81196699C329225EE604),
    (0x40000, 0x2216E584F5FA1EA926041BEDFE98),
    (0x80000, 0x48A170391F7DC42444E8FA2),
)
_LOG_SQRT10001 = 255738958999603826347141  # 2**64 / log2(sqrt(1.0001)), Q64.64 factor
_TICK_LOW_OFFSET = 3402992956809132418596140100660247210  # TickMath's error bounds, Q128.128
_TICK_HI_OFFSET = 291339464771989622907027621153398088495


def _mul_div(a: int, b: int, denominator: int) -> int:
    """``FullMath.mulDiv``: floor(a * b / denominator); reverts when it needs 257 bits."""
    result = a * b // denominator
    if result > _UINT256_MAX:
        raise ValueError(f"FullMath.mulDiv overflows uint256: {a} * {b} / {denominator}")
    return result


def _mul_div_rounding_up(a: int, b: int, denominator: int) -> int:
    """``FullMath.mulDivRoundingUp``: ceil(a * b / denominator)."""
    result = -(-a * b // denominator)
    if result > _UINT256_MAX:
        raise ValueError(f"FullMath.mulDivRoundingUp overflows uint256: {a} * {b} / {denominator}")
    return result


def _div_rounding_up(x: int, y: int) -> int:
    """``UnsafeMath.divRoundingUp``: ceil(x / y)."""
    return -(-x // y)


def v2_amount_out(amount_in: int, reserve_in: int, reserve_out: int, fee_pips: int = 3000) -> int:
    """What a V2 pair pays for ``amount_in`` (raw units): ``UniswapV2Library.getAmountOut``.

    out = floor(a * g * R_out / (R_in * D + a * g)) with g / D = (1e6 - fee_pips) / 1e6
    reduced to lowest terms, so 3000 pips is the library's 997 / 1000 exactly.

    >>> v2_amount_out(10**18, 10**21, 2 * 10**24)
    1992013962079806432986
    """
    if amount_in <= 0:
        raise ValueError(f"UniswapV2Library: INSUFFICIENT_INPUT_AMOUNT; got {amount_in}")
    if reserve_in <= 0 or reserve_out <= 0:
        raise ValueError(
            f"UniswapV2Library: INSUFFICIENT_LIQUIDITY; reserves {reserve_in}, {reserve_out}"
        )
    gamma, denominator = _fee_fraction(fee_pips)
    amount_in_with_fee = amount_in * gamma
    return amount_in_with_fee * reserve_out // (reserve_in * denominator + amount_in_with_fee)


@lru_cache(maxsize=64)
def _fee_fraction(fee_pips: int) -> tuple[int, int]:
    """(1e6 - fee_pips) / 1e6 in lowest terms: 3000 pips -> (997, 1000)."""
    g = gcd(_PIPS - fee_pips, _PIPS)
    return (_PIPS - fee_pips) // g, _PIPS // g


@lru_cache(maxsize=1 << 16)
def sqrt_ratio_at_tick(tick: int) -> int:
    """``TickMath.getSqrtRatioAtTick``: sqrt(1.0001 ** tick) * 2**96, rounded up (Q64.96).

    >>> sqrt_ratio_at_tick(0) == Q96
    True
    """
    abs_tick = -tick if tick < 0 else tick
    if abs_tick > MAX_TICK:
        raise ValueError(f"TickMath: T (|tick| <= {MAX_TICK}); got {tick}")
    ratio = 0xFFFCB933BD6FAD37AA2D162D1A594001 if abs_tick & 0x1 else 1 << 128
    for bit, factor in _RATIO_BITS:
        if abs_tick & bit:
            ratio = (ratio * factor) >> 128
    if tick > 0:
        ratio = _UINT256_MAX // ratio
    # Q128.128 to Q64.96, rounding up so that tick_at_sqrt_ratio of the result is the tick
    return (ratio >> 32) + (1 if ratio & 0xFFFFFFFF else 0)


def tick_at_sqrt_ratio(sqrt_price_x96: int) -> int:
    """``TickMath.getTickAtSqrtRatio``: the greatest tick whose sqrt ratio <= the input.

    >>> tick_at_sqrt_ratio(Q96), tick_at_sqrt_ratio(MIN_SQRT_RATIO)
    (0, -887272)
    """
    if not MIN_SQRT_RATIO <= sqrt_price_x96 < MAX_SQRT_RATIO:
        raise ValueError(
            f"TickMath: R ({MIN_SQRT_RATIO} <= sqrtPriceX96 < {MAX_SQRT_RATIO}); "
            f"got {sqrt_price_x96}"
        )
    ratio = sqrt_price_x96 << 32
    msb = ratio.bit_length() - 1  # the contract's binary search for the most significant bit
    r = ratio >> (msb - 127) if msb >= 128 else ratio << (127 - msb)
    log_2 = (msb - 128) << 64
    for shift in range(63, 49, -1):  # 14 bits of the fraction by repeated squaring
        r = (r * r) >> 127
        f = r >> 128
        log_2 |= f << shift
        r >>= f
    log_sqrt10001 = log_2 * _LOG_SQRT10001  # Q128.128
    tick_low = (log_sqrt10001 - _TICK_LOW_OFFSET) >> 128
    tick_hi = (log_sqrt10001 + _TICK_HI_OFFSET) >> 128
    if tick_low == tick_hi:
        return tick_low
    return tick_hi if sqrt_ratio_at_tick(tick_hi) <= sqrt_price_x96 else tick_low


def get_amount0_delta(sqrt_a_x96: int, sqrt_b_x96: int, liquidity: int, round_up: bool) -> int:
    """``SqrtPriceMath.getAmount0Delta``: token0 between two prices, L * (1/sqrtA - 1/sqrtB).

    Computed as L * 2**96 * (sqrtB - sqrtA) / sqrtB / sqrtA, each division rounded the
    same way (``round_up``).
    """
    if sqrt_a_x96 > sqrt_b_x96:
        sqrt_a_x96, sqrt_b_x96 = sqrt_b_x96, sqrt_a_x96
    if sqrt_a_x96 <= 0:
        raise ValueError(f"SqrtPriceMath.getAmount0Delta: sqrtRatioA must be > 0; got {sqrt_a_x96}")
    numerator1 = liquidity << 96
    numerator2 = sqrt_b_x96 - sqrt_a_x96
    if round_up:
        return _div_rounding_up(
            _mul_div_rounding_up(numerator1, numerator2, sqrt_b_x96), sqrt_a_x96
        )
    return _mul_div(numerator1, numerator2, sqrt_b_x96) // sqrt_a_x96


def get_amount1_delta(sqrt_a_x96: int, sqrt_b_x96: int, liquidity: int, round_up: bool) -> int:
    """``SqrtPriceMath.getAmount1Delta``: token1 between two prices, L * (sqrtB - sqrtA)."""
    if sqrt_a_x96 > sqrt_b_x96:
        sqrt_a_x96, sqrt_b_x96 = sqrt_b_x96, sqrt_a_x96
    if round_up:
        return _mul_div_rounding_up(liquidity, sqrt_b_x96 - sqrt_a_x96, Q96)
    return _mul_div(liquidity, sqrt_b_x96 - sqrt_a_x96, Q96)


def _next_sqrt_price_from_amount0_in(sqrt_p_x96: int, liquidity: int, amount: int) -> int:
    """``getNextSqrtPriceFromAmount0RoundingUp(..., add=true)``: the price after adding
    ``amount`` of token0, rounded up: L * sqrtP / (L + amount * sqrtP), or, when the
    contract's 256-bit product would overflow, L / (L / sqrtP + amount)."""
    if amount == 0:
        return sqrt_p_x96
    numerator1 = liquidity << 96
    product = amount * sqrt_p_x96
    if product < _UINT256:  # the contract's `product / amount == sqrtPX96`
        denominator = numerator1 + product
        if denominator < _UINT256:  # the contract's `denominator >= numerator1`
            return _mul_div_rounding_up(numerator1, sqrt_p_x96, denominator)
    return _div_rounding_up(numerator1, numerator1 // sqrt_p_x96 + amount)


def _next_sqrt_price_from_amount1_in(sqrt_p_x96: int, liquidity: int, amount: int) -> int:
    """``getNextSqrtPriceFromAmount1RoundingDown(..., add=true)``: sqrtP + amount / L,
    the quotient rounded down (both of the contract's paths compute the same floor)."""
    result = sqrt_p_x96 + (amount << 96) // liquidity
    if result >= _UINT160:
        raise ValueError(f"SqrtPriceMath: next price {result} overflows uint160")
    return result


def get_next_sqrt_price_from_input(
    sqrt_p_x96: int, liquidity: int, amount_in: int, zero_for_one: bool
) -> int:
    """``SqrtPriceMath.getNextSqrtPriceFromInput``: the price after ``amount_in`` (net of
    fee) goes in, rounded so that it never passes the target: up for token0 in (price
    falls), down for token1 in (price rises)."""
    if sqrt_p_x96 <= 0 or liquidity <= 0:
        raise ValueError(
            f"SqrtPriceMath.getNextSqrtPriceFromInput: needs sqrtP > 0 and liquidity > 0; "
            f"got {sqrt_p_x96}, {liquidity}"
        )
    if zero_for_one:
        return _next_sqrt_price_from_amount0_in(sqrt_p_x96, liquidity, amount_in)
    return _next_sqrt_price_from_amount1_in(sqrt_p_x96, liquidity, amount_in)


class SwapStep(msgspec.Struct, frozen=True, kw_only=True):
    """One ``SwapMath.computeSwapStep``: the price reached, the input used (net of fee),
    the output and the fee, raw units."""

    sqrt_price_next_x96: int
    amount_in: int
    amount_out: int
    fee_amount: int


def compute_swap_step(
    sqrt_current_x96: int,
    sqrt_target_x96: int,
    liquidity: int,
    amount_remaining: int,
    fee_pips: int,
) -> SwapStep:
    """``SwapMath.computeSwapStep`` for an exact input (``amount_remaining`` >= 0, gross of
    fee): swap within one range of liquidity towards ``sqrt_target_x96``, stopping there
    or where the input runs out. Direction: token0 in when the target is at or below the
    current price."""
    zero_for_one = sqrt_current_x96 >= sqrt_target_x96
    remaining_less_fee = _mul_div(amount_remaining, _PIPS - fee_pips, _PIPS)
    if zero_for_one:
        amount_in = get_amount0_delta(sqrt_target_x96, sqrt_current_x96, liquidity, True)
    else:
        amount_in = get_amount1_delta(sqrt_current_x96, sqrt_target_x96, liquidity, True)
    if remaining_less_fee >= amount_in:
        sqrt_next = sqrt_target_x96
    else:
        sqrt_next = get_next_sqrt_price_from_input(
            sqrt_current_x96, liquidity, remaining_less_fee, zero_for_one
        )
    reached = sqrt_next == sqrt_target_x96
    if zero_for_one:
        if not reached:
            amount_in = get_amount0_delta(sqrt_next, sqrt_current_x96, liquidity, True)
        amount_out = get_amount1_delta(sqrt_next, sqrt_current_x96, liquidity, False)
    else:
        if not reached:
            amount_in = get_amount1_delta(sqrt_current_x96, sqrt_next, liquidity, True)
        amount_out = get_amount0_delta(sqrt_current_x96, sqrt_next, liquidity, False)
    if not reached:  # the input ran out: the rest of it is the fee
        fee_amount = amount_remaining - amount_in
    else:
        fee_amount = _mul_div_rounding_up(amount_in, fee_pips, _PIPS - fee_pips)
    return SwapStep(
        sqrt_price_next_x96=sqrt_next,
        amount_in=amount_in,
        amount_out=amount_out,
        fee_amount=fee_amount,
    )


class V3Swap(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of an exact-input V3 swap: input consumed (gross of fee, at most the
    amount asked), output paid, the pool's price, tick and liquidity after it, and how
    many initialized ticks it crossed."""

    amount_in: int
    amount_out: int
    sqrt_price_x96: int
    tick: int
    liquidity: int
    ticks_crossed: int


def default_price_limit(zero_for_one: bool) -> int:
    """The price limit of an unlimited swap, as the periphery's ``SwapRouter`` and
    ``Quoter`` pass it: ``MIN_SQRT_RATIO + 1`` selling token0, ``MAX_SQRT_RATIO - 1``
    selling token1."""
    return MIN_SQRT_RATIO + 1 if zero_for_one else MAX_SQRT_RATIO - 1


def _next_initialized_tick(
    indexes: list[int], tick: int, spacing: int, lte: bool
) -> tuple[int, int | None]:
    """``TickBitmap.nextInitializedTickWithinOneWord``: the next initialized tick at or
    below ``tick`` (``lte``) or above it, searched only within one 256-bit word of the
    bitmap; returns (tick, its position in ``indexes``) or (the word's last tick, None).

    The word boundary matters for exactness: the pool ends a swap step there, and each
    step rounds on its own.
    """
    compressed = tick // spacing  # floor, as the contract's `compressed--` for negatives
    if lte:
        word_start = (compressed >> 8) << 8
        i = bisect_right(indexes, compressed * spacing) - 1
        if i >= 0 and indexes[i] >= word_start * spacing:
            return indexes[i], i
        return word_start * spacing, None
    word_end = (((compressed + 1) >> 8) << 8) + 255
    i = bisect_left(indexes, (compressed + 1) * spacing)
    if i < len(indexes) and indexes[i] <= word_end * spacing:
        return indexes[i], i
    return word_end * spacing, None


def v3_swap_exact_in(
    pool: V3PoolState,
    zero_for_one: bool,
    amount_in: int,
    sqrt_price_limit_x96: int | None = None,
) -> V3Swap:
    """``UniswapV3Pool.swap`` with ``amountSpecified = amount_in`` > 0 (exact input).

    Sells token0 (``zero_for_one``) or token1; steps through the initialized ticks,
    crossing each with its ``liquidity_net``, and stops when the input is used or the
    price reaches the limit (default: ``default_price_limit``). An order the pool cannot
    fill returns what it filled: ``amount_in`` consumed is then below the amount asked.
    Fee growth and protocol fees change neither amounts nor price and are left out.
    """
    if not 0 < amount_in <= _INT256_MAX:
        raise ValueError(f"UniswapV3Pool.swap: AS (0 < amountSpecified < 2**255); got {amount_in}")
    limit = sqrt_price_limit_x96
    if limit is None:
        limit = default_price_limit(zero_for_one)
    start = pool.sqrt_price_x96
    if zero_for_one and not MIN_SQRT_RATIO < limit < start:
        raise ValueError(f"UniswapV3Pool.swap: SPL (MIN_SQRT_RATIO < limit < price {start}); "
                         f"got {limit}")  # fmt: skip
    if not zero_for_one and not start < limit < MAX_SQRT_RATIO:
        raise ValueError(f"UniswapV3Pool.swap: SPL (price {start} < limit < MAX_SQRT_RATIO); "
                         f"got {limit}")  # fmt: skip
    return _swap(pool, zero_for_one, amount_in, limit, until_dry=False)


def v3_max_amount_in(pool: V3PoolState, zero_for_one: bool) -> int:
    """The most input (raw units, gross of fee) the pool takes before its price reaches
    ``default_price_limit``: what a swap of 2**255 - 1 consumes. Any amount up to it is
    used in full. 0 when the price already sits at the limit."""
    limit = default_price_limit(zero_for_one)
    if pool.sqrt_price_x96 <= limit if zero_for_one else pool.sqrt_price_x96 >= limit:
        return 0
    return _swap(pool, zero_for_one, _INT256_MAX, limit, until_dry=True).amount_in


def _swap(
    pool: V3PoolState, zero_for_one: bool, amount_in: int, limit: int, until_dry: bool
) -> V3Swap:
    """The pool's swap loop. ``until_dry``: return as soon as no liquidity is left on the
    way (the rest of the walk to the limit would pay and take nothing), for
    ``v3_max_amount_in``; the price and tick returned are then where it stopped."""
    indexes = [index for index, _ in pool.ticks]
    remaining = amount_in
    amount_out = crossed = 0
    sqrt_price, tick, liquidity = pool.sqrt_price_x96, pool.tick, pool.liquidity
    while remaining != 0 and sqrt_price != limit:
        if until_dry and liquidity == 0 and _dry(indexes, tick, zero_for_one):
            break
        step_start = sqrt_price
        tick_next, position = _next_initialized_tick(indexes, tick, pool.tick_spacing, zero_for_one)
        tick_next = min(max(tick_next, MIN_TICK), MAX_TICK)
        sqrt_next = sqrt_ratio_at_tick(tick_next)
        beyond = sqrt_next < limit if zero_for_one else sqrt_next > limit
        step = compute_swap_step(
            sqrt_price, limit if beyond else sqrt_next, liquidity, remaining, pool.fee_pips
        )
        sqrt_price = step.sqrt_price_next_x96
        remaining -= step.amount_in + step.fee_amount
        amount_out += step.amount_out
        if sqrt_price == sqrt_next:
            if position is not None:
                net = pool.ticks[position][1]
                liquidity += -net if zero_for_one else net
                if not 0 <= liquidity < 1 << 128:
                    raise ValueError(
                        f"LiquidityMath.addDelta: {'LS' if liquidity < 0 else 'LA'} crossing "
                        f"tick {tick_next} of pool {pool.address}: its ticks do not add up"
                    )
                crossed += 1
            tick = tick_next - 1 if zero_for_one else tick_next
        elif sqrt_price != step_start:
            tick = tick_at_sqrt_ratio(sqrt_price)
    return V3Swap(
        amount_in=amount_in - remaining,
        amount_out=amount_out,
        sqrt_price_x96=sqrt_price,
        tick=tick,
        liquidity=liquidity,
        ticks_crossed=crossed,
    )


def _dry(indexes: list[int], tick: int, zero_for_one: bool) -> bool:
    """No initialized tick is left to cross on the way: at or below ``tick`` going down,
    above it going up."""
    if zero_for_one:
        return bisect_right(indexes, tick) == 0
    return bisect_right(indexes, tick) == len(indexes)
