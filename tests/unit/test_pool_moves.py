"""The swap that moves a pool to a target price (``operators.pool_moves``), as properties
over random pools and targets. The real pools' side (the same swap lands a real pool on
the target) is in ``tests/integration/test_devchain.py``."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from operators.pool_moves import v2_after, v2_swap_to_price, v3_after, v3_swap_to_price
from operators.pool_state import V2PoolState, V3PoolState
from operators.uniswap_math import sqrt_ratio_at_tick, v2_amount_out, v3_swap_exact_in
from tests.unit.pool_examples import Position, v2_pools, v3_pool, v3_pools

_Q192 = 1 << 192


@given(pool=v3_pools(), ticks=st.integers(-5_000, 5_000), fraction=st.floats(0.0, 1.0))
def test_v3_move_lands_on_the_target_exactly_and_the_pool_after_is_consistent(
    pool: tuple[V3PoolState, list[Position]], ticks: int, fraction: float
) -> None:
    state, _ = pool
    low, high = sqrt_ratio_at_tick(state.tick + ticks), sqrt_ratio_at_tick(state.tick + ticks + 1)
    target = low + int((high - low - 1) * fraction)

    move = v3_swap_to_price(state, target)

    if target == state.sqrt_price_x96:
        assert move is None
        return
    assert move is not None
    assert move.zero_for_one == (target < state.sqrt_price_x96)
    assert move.swap.sqrt_price_x96 == target
    # sent with the target as its limit, the input is used up (the pool stops there)
    assert move.amount_in - move.swap.amount_in in (0, 1)
    again = v3_swap_exact_in(state, move.zero_for_one, move.amount_in, target)
    assert again == move.swap
    after = v3_after(state, move.swap, block=state.block + 1)  # checks its own liquidity
    assert (after.sqrt_price_x96, after.tick, after.ticks) == (target, move.swap.tick, state.ticks)


def test_v3_move_across_an_empty_stretch_sends_one_more_unit_which_the_pool_does_not_take() -> None:
    # liquidity only above the price: going down, the walk ends in empty space
    state = v3_pool([(0, 600, 10**18)], sqrt_price_x96=sqrt_ratio_at_tick(300), tick_spacing=60)
    target = sqrt_ratio_at_tick(-1200)

    move = v3_swap_to_price(state, target)

    assert move is not None and move.zero_for_one
    assert move.swap.sqrt_price_x96 == target and move.swap.liquidity == 0
    assert move.amount_in == move.swap.amount_in + 1


@given(pool=v2_pools(), ratio=st.fractions(Fraction(1, 10**6), Fraction(10**6)))
def test_v2_move_is_the_smallest_input_that_reaches_the_target(
    pool: V2PoolState, ratio: Fraction
) -> None:
    # a target within a factor 10**6 of the pair's price
    price = Fraction(pool.reserve1, pool.reserve0) * ratio
    target = int((price * _Q192) ** 0.5)  # sqrtPriceX96, near enough: the test uses it as is
    goal = Fraction(target * target, _Q192)

    move = v2_swap_to_price(pool, target)

    if move is None:
        return
    after = v2_after(pool, move, block=2)
    reached = Fraction(after.reserve1, after.reserve0)
    reserves = (pool.reserve0, pool.reserve1)
    reserve_in, reserve_out = reserves if move.zero_for_one else reserves[::-1]
    assert move.amount_out == v2_amount_out(move.amount_in, reserve_in, reserve_out, pool.fee_pips)
    assert reached <= goal if move.zero_for_one else reached >= goal
    if move.amount_in > 1:  # one unit less falls short
        less = move.amount_in - 1
        out = v2_amount_out(less, reserve_in, reserve_out, pool.fee_pips)
        if move.zero_for_one:
            assert Fraction(pool.reserve1 - out, pool.reserve0 + less) > goal
        else:
            assert Fraction(pool.reserve1 + less, pool.reserve0 - out) < goal


def test_v2_move_when_the_pair_sits_at_the_target_is_none() -> None:
    pool = V2PoolState(address="0xv2", token0="T0", token1="T1", reserve0=10**18,
                       reserve1=4 * 10**18, block=1)  # fmt: skip
    assert v2_swap_to_price(pool, 2 << 96) is None  # ratio 4 = (2 * 2**96)**2 / 2**192
