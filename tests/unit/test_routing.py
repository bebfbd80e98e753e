"""The split router: examples, and hypothesis properties over thousands of random pool sets.

Every output is checked against quotes made here, pool by pool, with
``operators.uniswap_math`` directly, not through the router.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from operators.pool_state import V2PoolState, V3PoolState
from operators.routing import (
    V2_SWAP_GAS,
    V3_SWAP_GAS,
    V3_TICK_GAS,
    Route,
    _Curve,
    _v2_rate,
    leg_gas,
    route,
)
from operators.uniswap_math import Q96, tick_at_sqrt_ratio, v2_amount_out, v3_swap_exact_in
from tests.unit.pool_examples import full_range, pool_sets, v3_pool

E18 = 10**18
Pools = list[V2PoolState | V3PoolState]


def _quote(pool: V2PoolState | V3PoolState, sell: str, amount: int) -> tuple[int, int] | None:
    """(exact output, SOR gas) of one pool for ``amount`` of ``sell``; None when the pool
    cannot take all of it."""
    zero_for_one = sell == pool.token0
    if isinstance(pool, V2PoolState):
        reserves = (pool.reserve0, pool.reserve1)
        r_in, r_out = reserves if zero_for_one else reserves[::-1]
        return v2_amount_out(amount, r_in, r_out, pool.fee_pips), V2_SWAP_GAS
    swap = v3_swap_exact_in(pool, zero_for_one, amount)
    if swap.amount_in < amount:
        return None
    return swap.amount_out, V3_SWAP_GAS + V3_TICK_GAS * max(1, swap.ticks_crossed)


def _best_single_net(pools: Pools, sell: str, amount: int, gas_cost: int) -> int | None:
    nets = [q[0] - gas_cost * q[1] for p in pools if (q := _quote(p, sell, amount))]
    return max(nets, default=None)


def _check_route(result: Route, pools: Pools, sell: str, amount: int) -> None:
    """Allocations sum to the order; each leg is its pool's exact quote, at its block."""
    by_address = {p.address: p for p in pools}
    assert sum(leg.amount_in for leg in result.legs) == amount
    assert len({leg.pool for leg in result.legs}) == len(result.legs)  # no pool twice
    gas = 0
    for leg in result.legs:
        pool = by_address[leg.pool]
        assert leg.amount_in > 0
        quote = _quote(pool, sell, leg.amount_in)
        assert quote is not None
        assert leg.amount_out == quote[0]
        assert leg.block == pool.block
        gas += quote[1]
    assert result.amount_out == sum(leg.amount_out for leg in result.legs)
    assert result.gas == gas


def _depth(pools: Pools, sell: str) -> float:
    """What the pools hold of ``sell``, about: V2 reserves, V3 virtual reserves."""
    total = 0.0
    for pool in pools:
        if isinstance(pool, V2PoolState):
            total += pool.reserve0 if sell == pool.token0 else pool.reserve1
        elif sell == pool.token0:
            total += pool.liquidity * Q96 / pool.sqrt_price_x96
        else:
            total += pool.liquidity * pool.sqrt_price_x96 / Q96
    return total


@st.composite
def orders(draw: st.DrawFn, sizes: int = 1) -> tuple[Pools, str, str, list[int]]:
    """A pool set, the token sold and bought, and ``sizes`` order sizes: raw amounts from 1
    to 10**29, or from a millionth to 3 times what the pools hold of the token sold."""
    pools = draw(pool_sets())
    sell, buy = draw(st.sampled_from((("T0", "T1"), ("T1", "T0"))))
    depth = _depth(pools, sell)
    share = st.floats(-6, 0.5).map(lambda e: max(1, int(depth * 10**e)))
    raw = st.integers(0, 28).flatmap(lambda e: st.integers(1, 10 * 10**e))
    amounts = [draw(st.one_of(share, raw)) for _ in range(sizes)]
    return pools, sell, buy, amounts


gas_costs = st.sampled_from((0, 0, 1, 10**3, 10**6, 10**9))


@settings(max_examples=1500, deadline=None)
@given(orders(), gas_costs)
def test_route_is_exact_sums_to_the_order_and_never_loses_to_the_best_single_pool(
    order: tuple[Pools, str, str, list[int]], gas_cost: int
) -> None:
    pools, sell, buy, (amount,) = order
    try:
        result = route(pools, sell, buy, amount, gas_cost)
    except ValueError as exc:  # only V3 pools that run dry can refuse an order
        assert "short by" in str(exc)
        assert all(isinstance(p, V3PoolState) for p in pools)
        assert _best_single_net(pools, sell, amount, gas_cost) is None
        return
    _check_route(result, pools, sell, amount)
    single = _best_single_net(pools, sell, amount, gas_cost)
    if single is not None:
        assert result.amount_out - gas_cost * result.gas >= single
        assert result.best_single_pool_out >= 0
    assert result.price_impact_bps >= 0


@settings(max_examples=600, deadline=None)
@given(orders(sizes=2))
def test_route_output_grows_with_the_order(order: tuple[Pools, str, str, list[int]]) -> None:
    pools, sell, buy, amounts = order
    small, large = sorted(amounts)
    try:
        larger = route(pools, sell, buy, large)
    except ValueError:
        return  # more than the pools hold
    assert route(pools, sell, buy, small).amount_out <= larger.amount_out


@settings(max_examples=200, deadline=None)
@given(orders(), st.integers(1, 999))
def test_moving_input_between_two_legs_gains_nothing_beyond_rounding(
    order: tuple[Pools, str, str, list[int]], permille: int
) -> None:
    # the split equalises marginal prices: shifting a share of one leg's input to another
    # can only gain rounding, at most a few units of output per step of each leg
    pools, sell, buy, (amount,) = order
    try:
        result = route(pools, sell, buy, amount)
    except ValueError:
        return
    by_address = {p.address: p for p in pools}
    for giver in result.legs:
        for taker in result.legs:
            if giver is taker:
                continue
            moved = max(1, giver.amount_in * permille // 1000)
            if moved >= giver.amount_in:
                continue
            given_up = _quote(by_address[giver.pool], sell, giver.amount_in - moved)
            taken = _quote(by_address[taker.pool], sell, taker.amount_in + moved)
            if given_up is None or taken is None:
                continue
            before = giver.amount_out + taker.amount_out
            after = given_up[0] + taken[0]
            rate = result.amount_out / amount  # the output of one unit of input, about
            assert after - before <= 8 * (rate + 1) + before * 1e-9


def _pair(address: str, reserve0: int, reserve1: int, block: int = 7) -> V2PoolState:
    return V2PoolState(
        address=address, token0="USDC", token1="WETH", reserve0=reserve0, reserve1=reserve1,
        block=block,
    )  # fmt: skip


def test_two_equal_pairs_share_an_order_half_and_half() -> None:
    pools: Pools = [_pair("0xa", 2 * 10**13, 10**22), _pair("0xb", 2 * 10**13, 10**22)]
    result = route(pools, "WETH", "USDC", 100 * E18 + 1)
    first, second = (leg.amount_in for leg in result.legs)
    # halves to the float resolution of the marginal price (1e-15), the dust to the first
    assert first >= second
    assert first - second <= 10**-12 * first
    assert result.amount_out > result.best_single_pool_out
    assert result.gas == 2 * V2_SWAP_GAS


def test_pairs_in_proportion_to_their_depth_take_the_order_in_that_proportion() -> None:
    # same price, same fee: equal marginal prices mean equal relative moves
    pools: Pools = [_pair("0xa", 2 * 10**13, 10**22), _pair("0xb", 6 * 10**13, 3 * 10**22)]
    result = route(pools, "WETH", "USDC", 400 * E18)
    shares = [leg.amount_in for leg in result.legs]
    assert shares == pytest.approx([100 * E18, 300 * E18], rel=1e-12)


def test_a_split_is_kept_only_if_its_extra_output_beats_its_extra_gas() -> None:
    pools: Pools = [_pair("0xa", 2 * 10**13, 10**22), _pair("0xb", 2 * 10**13, 10**22)]
    amount = 10 * E18
    split = route(pools, "WETH", "USDC", amount)
    gain = split.amount_out - split.best_single_pool_out  # raw USDC the second leg adds
    assert len(split.legs) == 2
    threshold = gain / V2_SWAP_GAS  # raw USDC per gas at which the second leg pays its way
    kept = route(pools, "WETH", "USDC", amount, gas_cost=math.floor(threshold * 0.99))
    dropped = route(pools, "WETH", "USDC", amount, gas_cost=math.ceil(threshold * 1.01))
    assert len(kept.legs) == 2
    assert len(dropped.legs) == 1
    assert dropped.amount_out == split.best_single_pool_out


def _weth_usdc_v3(address: str, liquidity: int, width: int, block: int = 9) -> V3PoolState:
    # 2000 USDC per WETH: raw token1 / token0 = 1e18 / 2000e6
    sqrt_price = math.isqrt(5 * 10**8 * Q96 * Q96)
    tick = tick_at_sqrt_ratio(sqrt_price)
    lower, upper = (tick - width) // 10 * 10, (tick + width) // 10 * 10
    return v3_pool(
        [(lower, upper, liquidity)], sqrt_price_x96=sqrt_price, fee_pips=500, tick_spacing=10,
        address=address, token0="USDC", token1="WETH", block=block,
    )  # fmt: skip


def test_v3_and_v2_legs_each_record_their_block_and_the_route_its_gas() -> None:
    pools: Pools = [_pair("0xa", 2 * 10**13, 10**22, block=11), _weth_usdc_v3("0xc", 10**17, 4000)]
    result = route(pools, "WETH", "USDC", 300 * E18)
    _check_route(result, pools, "WETH", 300 * E18)
    assert {leg.pool: leg.block for leg in result.legs} == {"0xa": 11, "0xc": 9}
    assert result.gas == V2_SWAP_GAS + leg_gas(pools[1], 0)


def test_pools_that_cannot_fill_the_order_name_the_shortfall() -> None:
    narrow = _weth_usdc_v3("0xc", 10**15, 20)  # a little USDC within 20 ticks
    with pytest.raises(ValueError, match=r"take at most \d+ WETH .* short by \d+"):
        route([narrow], "WETH", "USDC", 1000 * E18)


def test_an_order_for_a_pair_no_pool_trades_is_refused() -> None:
    with pytest.raises(ValueError, match="no pool trades WETH for DAI"):
        route([_pair("0xa", 10**13, 10**22)], "WETH", "DAI", E18)


def test_pools_of_other_pairs_are_left_out() -> None:
    other = V2PoolState(address="0xd", token0="DAI", token1="WETH", reserve0=10**30,
                        reserve1=10**25, block=1)  # fmt: skip
    result = route([other, _pair("0xa", 2 * 10**13, 10**22)], "WETH", "USDC", E18)
    assert [leg.pool for leg in result.legs] == ["0xa"]


def test_a_single_v3_pool_crossing_ticks_pays_gas_per_tick() -> None:
    sqrt_price = math.isqrt(5 * 10**8 * Q96 * Q96)
    tick = tick_at_sqrt_ratio(sqrt_price) // 10 * 10
    positions = [(*full_range(10), 10**15)] + [
        (tick - 10 * (k + 1), tick + 10 * (k + 1), 10**14) for k in range(5)
    ]
    pool = v3_pool(positions, sqrt_price_x96=sqrt_price, fee_pips=500, tick_spacing=10,
                   address="0xc", token0="USDC", token1="WETH")  # fmt: skip
    result = route([pool], "WETH", "USDC", 50 * E18)
    swap = v3_swap_exact_in(pool, False, 50 * E18)
    assert swap.ticks_crossed == 5
    assert result.gas == V3_SWAP_GAS + 5 * V3_TICK_GAS
    assert result.amount_out == swap.amount_out


@given(st.lists(st.tuples(st.integers(10**9, 10**26), st.integers(-50, 50)), min_size=1,
                max_size=5), st.integers(1, 10**27))  # fmt: skip
# a tie at float precision: 1 wei over two pairs at one price, one 10^14 times deeper
@example(pairs=[(10**9, 0), (127_869_479_499_801_389_170_688, 0)], amount=1)
def test_v2_closed_form_rate_is_where_the_pairs_inputs_sum_to_the_order(
    pairs: list[tuple[int, int]], amount: int
) -> None:
    # sum over the pairs in use of (sqrt(g R_in R_out / lambda) - R_in) / g = A
    pools: Pools = [
        V2PoolState(address=f"0x{i}", token0="T0", token1="T1", reserve0=r,
                    reserve1=max(1, int(r * 1.0001**t)), block=1)
        for i, (r, t) in enumerate(pairs)
    ]  # fmt: skip
    curves = [_Curve(p, True, amount) for p in pools]
    rate = _v2_rate(curves, amount)
    inputs = [
        max(0.0, (math.sqrt(c.gamma * c.r_in * c.r_out / rate) - c.r_in) / c.gamma) for c in curves
    ]
    # float cancellation in sqrt(...) - R_in: about 1e-16 of the reserves
    assert sum(inputs) == pytest.approx(amount, rel=1e-9, abs=1e-12 * sum(c.r_in for c in curves))
    unused = [c for c, x in zip(curves, inputs, strict=True) if x == 0]
    assert all(c.rate0 <= rate * (1 + 1e-9) for c in unused)  # not worth it at lambda
