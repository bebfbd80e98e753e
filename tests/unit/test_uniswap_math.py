"""Exact Uniswap maths against Uniswap's own test vectors, an exact rational reference and
hypothesis properties.

Vectors: v3-core @ d8b1c635c275 (``test/TickMath.spec.ts`` and its snapshot,
``test/SqrtPriceMath.spec.ts``, ``test/SwapMath.spec.ts``) and the exact-input cases of
``test/__snapshots__/UniswapV3Pool.swaps.spec.ts.snap`` in
``tests/resources/uniswap_v3_pool_swaps.json`` (see ``tests/resources/SOURCES.md``).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from operators.pool_state import V2PoolState, V3PoolState
from operators.uniswap_math import (
    MAX_SQRT_RATIO,
    MAX_TICK,
    MIN_SQRT_RATIO,
    MIN_TICK,
    Q96,
    compute_swap_step,
    get_amount0_delta,
    get_amount1_delta,
    get_next_sqrt_price_from_input,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
    v2_amount_out,
    v3_max_amount_in,
    v3_swap_exact_in,
)
from tests.unit.pool_examples import Position, full_range, v3_pool, v3_pools

E18 = 10**18
POOL_SWAPS = json.loads(
    (Path(__file__).parents[1] / "resources" / "uniswap_v3_pool_swaps.json").read_text()
)

# --- TickMath ------------------------------------------------------------------------

# test/__snapshots__/TickMath.spec.ts.snap: getSqrtRatioAtTick results
SQRT_RATIO_AT_TICK = [
    (MIN_TICK, 4295128739),
    (MIN_TICK + 1, 4295343490),
    (0, Q96),
    (MAX_TICK - 1, 1461373636630004318706518188784493106690254656249),
    (MAX_TICK, 1461446703485210103287273052203988822378723970342),
    (-50, 79030349367926598376800521322),
    (-100, 78833030112140176575862854579),
    (-250, 78244023372248365697264290337),
    (-500, 77272108795590369356373805297),
    (-1000, 75364347830767020784054125655),
    (-2500, 69919044979842180277688105136),
    (-3000, 68192822843687888778582228483),
    (-4000, 64867181785621769311890333195),
    (-5000, 61703726247759831737814779831),
    (-50000, 6504256538020985011912221507),
    (-150000, 43836292794701720435367485),
    (-250000, 295440463448801648376846),
    (-500000, 1101692437043807371),
    (-738203, 7409801140451),
    (50, 79426470787362580746886972461),
    (100, 79625275426524748796330556128),
    (250, 80224679980005306637834519095),
    (500, 81233731461783161732293370115),
    (1000, 83290069058676223003182343270),
    (2500, 89776708723587163891445672585),
    (3000, 92049301871182272007977902845),
    (4000, 96768528593268422080558758223),
    (5000, 101729702841318637793976746270),
    (50000, 965075977353221155028623082916),
    (150000, 143194173941309278083010301478497),
    (250000, 21246587762933397357449903968194344),
    (500000, 5697689776495288729098254600827762987878),
    (738203, 847134979253254120489401328389043031315994541),
]

# the same snapshot: getTickAtSqrtRatio of encodePriceSqrt(...) values
TICK_AT_SQRT_RATIO = [
    (MIN_SQRT_RATIO, MIN_TICK),
    (4295343490, MIN_TICK + 1),
    (79228162514264337593543, -276325),
    (79228162514264337593543950, -138163),
    (9903520314283042199192993792, -41591),
    (28011385487393069959365969113, -20796),
    (56022770974786139918731938227, -6932),
    (79228162514264337593543950336, 0),
    (112045541949572279837463876454, 6931),
    (224091083899144559674927752909, 20795),
    (633825300114114700748351602688, 41590),
    (79228162514264337593543950336000, 138162),
    (79228162514264337593543950336000000, 276324),
    (1461373636630004318706518188784493106690254656249, MAX_TICK - 1),
    (MAX_SQRT_RATIO - 1, MAX_TICK - 1),
]


@pytest.mark.parametrize(("tick", "expected"), SQRT_RATIO_AT_TICK)
def test_sqrt_ratio_at_tick_matches_uniswaps_vectors(tick: int, expected: int) -> None:
    assert sqrt_ratio_at_tick(tick) == expected


@pytest.mark.parametrize(("sqrt_price", "expected"), TICK_AT_SQRT_RATIO)
def test_tick_at_sqrt_ratio_matches_uniswaps_vectors(sqrt_price: int, expected: int) -> None:
    assert tick_at_sqrt_ratio(sqrt_price) == expected


@pytest.mark.parametrize("tick", [MIN_TICK - 1, MAX_TICK + 1])
def test_sqrt_ratio_at_tick_beyond_the_range_reverts_like_tickmath(tick: int) -> None:
    with pytest.raises(ValueError, match="TickMath: T"):
        sqrt_ratio_at_tick(tick)


@pytest.mark.parametrize("sqrt_price", [MIN_SQRT_RATIO - 1, MAX_SQRT_RATIO])
def test_tick_at_sqrt_ratio_beyond_the_range_reverts_like_tickmath(sqrt_price: int) -> None:
    with pytest.raises(ValueError, match="TickMath: R"):
        tick_at_sqrt_ratio(sqrt_price)


def _exact_sqrt_ratio(tick: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 80
        return (Decimal("1.0001") ** tick).sqrt() * Q96


@given(st.integers(MIN_TICK, MAX_TICK))
def test_sqrt_ratio_at_tick_is_sqrt_1_0001_pow_tick_within_its_fixed_point_error(
    tick: int,
) -> None:
    # TickMath multiplies up to 20 Q128.128 factors, truncating each product; the ratio is
    # at least 2**64 (at |MAX_TICK|), so each truncation costs at most 2**-64 of it; then it
    # rounds up to Q64.96: within 1 unit plus 20 * 2**-64 < 1.1e-18 (v3-core asks 1e-6)
    exact = _exact_sqrt_ratio(tick)
    assert abs(Decimal(sqrt_ratio_at_tick(tick)) - exact) <= 1 + exact * Decimal("1.1e-18")


@given(st.integers(MIN_TICK, MAX_TICK - 1))
def test_tick_at_sqrt_ratio_inverts_sqrt_ratio_at_tick(tick: int) -> None:
    assert tick_at_sqrt_ratio(sqrt_ratio_at_tick(tick)) == tick


@given(st.integers(MIN_SQRT_RATIO, MAX_SQRT_RATIO - 1))
def test_tick_at_sqrt_ratio_is_the_greatest_tick_at_or_below_the_price(sqrt_price: int) -> None:
    tick = tick_at_sqrt_ratio(sqrt_price)
    assert sqrt_ratio_at_tick(tick) <= sqrt_price < sqrt_ratio_at_tick(tick + 1)


# --- SqrtPriceMath -------------------------------------------------------------------


def encode_price_sqrt(reserve1: int, reserve0: int) -> int:
    """v3-core's encodePriceSqrt for simple ratios: floor(sqrt(r1 / r0) * 2**96)."""
    return math.isqrt(reserve1 * (1 << 192) // reserve0)


def test_next_sqrt_price_from_input_matches_uniswaps_vectors() -> None:
    # test/SqrtPriceMath.spec.ts, #getNextSqrtPriceFromInput
    one = encode_price_sqrt(1, 1)
    assert get_next_sqrt_price_from_input(one, E18, E18 // 10, False) == (
        87150978765690771352898345369
    )
    assert get_next_sqrt_price_from_input(one, E18, E18 // 10, True) == (
        72025602285694852357767227579
    )
    assert get_next_sqrt_price_from_input(one, 10 * E18, 2**100, True) == 624999999995069620
    assert get_next_sqrt_price_from_input(one, 1, (2**256 - 1) // 2, True) == 1
    assert get_next_sqrt_price_from_input(1, 1, 2**255, True) == 1
    assert get_next_sqrt_price_from_input(one, E18 // 10, 0, True) == one
    assert get_next_sqrt_price_from_input(one, E18 // 10, 0, False) == one


def test_next_sqrt_price_from_input_takes_the_contracts_overflow_path() -> None:
    # 'returns the minimum price for max inputs': amount * sqrtP overflows 256 bits, so the
    # contract computes L / (L / sqrtP + amount) instead, which rounds differently
    sqrt_p, liquidity = 2**160 - 1, 2**128 - 1
    amount = 2**256 - 1 - (liquidity << 96) // sqrt_p
    assert get_next_sqrt_price_from_input(sqrt_p, liquidity, amount, True) == 1


def test_next_sqrt_price_from_input_that_overflows_the_price_reverts() -> None:
    with pytest.raises(ValueError, match="overflows uint160"):
        get_next_sqrt_price_from_input(2**160 - 1, 1024, 1024, False)


@pytest.mark.parametrize(("sqrt_price", "liquidity"), [(0, 1), (1, 0)])
def test_next_sqrt_price_from_input_needs_a_price_and_liquidity(
    sqrt_price: int, liquidity: int
) -> None:
    with pytest.raises(ValueError, match="getNextSqrtPriceFromInput"):
        get_next_sqrt_price_from_input(sqrt_price, liquidity, E18 // 10, True)


def test_amount_deltas_match_uniswaps_vectors() -> None:
    # test/SqrtPriceMath.spec.ts: price 1 to 1.21 with liquidity 1e18
    a, b = encode_price_sqrt(1, 1), encode_price_sqrt(121, 100)
    assert get_amount0_delta(a, b, E18, True) == 90909090909090910
    assert get_amount0_delta(a, b, E18, False) == 90909090909090909
    assert get_amount1_delta(a, b, E18, True) == 100000000000000000
    assert get_amount1_delta(a, b, E18, False) == 99999999999999999
    assert get_amount0_delta(a, encode_price_sqrt(2, 1), 0, True) == 0
    assert get_amount1_delta(a, encode_price_sqrt(2, 1), 0, True) == 0
    high = (encode_price_sqrt(2**90, 1), encode_price_sqrt(2**96, 1))
    assert get_amount0_delta(*high, E18, True) == get_amount0_delta(*high, E18, False) + 1


sqrt_prices = st.integers(MIN_SQRT_RATIO, MAX_SQRT_RATIO - 1)
liquidities = st.integers(0, 2**128 - 1)


def _floor_or_ceil(value: Fraction, round_up: bool) -> int:
    return math.ceil(value) if round_up else math.floor(value)


@given(sqrt_prices, sqrt_prices, liquidities, st.booleans())
def test_amount_deltas_are_the_exact_amounts_rounded_as_asked(
    a: int, b: int, liquidity: int, round_up: bool
) -> None:
    # token0 = L * (1/sqrtA - 1/sqrtB), token1 = L * (sqrtB - sqrtA), prices in Q64.96; the
    # contract divides twice for token0, which rounds as one division would
    lo, hi = min(a, b), max(a, b)
    amount0 = Fraction(liquidity * Q96 * (hi - lo), lo * hi)
    amount1 = Fraction(liquidity * (hi - lo), Q96)
    assert get_amount0_delta(a, b, liquidity, round_up) == _floor_or_ceil(amount0, round_up)
    assert get_amount1_delta(a, b, liquidity, round_up) == _floor_or_ceil(amount1, round_up)


@given(sqrt_prices, st.integers(1, 2**128 - 1), st.integers(0, 2**128))
def test_next_sqrt_price_from_input_never_passes_the_exact_price(
    sqrt_price: int, liquidity: int, amount: int
) -> None:
    # token0 in: sqrtQ = L * sqrtP / (L + amount * sqrtP), rounded up (the price falls less);
    # token1 in: sqrtQ = sqrtP + amount / L, rounded down (it rises less)
    exact_down = Fraction(liquidity * Q96 * sqrt_price, liquidity * Q96 + amount * sqrt_price)
    down = get_next_sqrt_price_from_input(sqrt_price, liquidity, amount, True)
    assert down == math.ceil(exact_down)  # no 256-bit overflow for amounts below 2**128
    exact_up = sqrt_price + Fraction(amount * Q96, liquidity)
    assume(exact_up < 2**160)
    assert get_next_sqrt_price_from_input(sqrt_price, liquidity, amount, False) == math.floor(
        exact_up
    )


# --- SwapMath ------------------------------------------------------------------------


def test_compute_swap_step_matches_uniswaps_exact_input_vectors() -> None:
    # test/SwapMath.spec.ts, #computeSwapStep, the exact-input cases
    one = encode_price_sqrt(1, 1)
    capped = compute_swap_step(one, encode_price_sqrt(101, 100), 2 * E18, E18, 600)
    assert capped.sqrt_price_next_x96 == encode_price_sqrt(101, 100)
    assert (capped.amount_in, capped.fee_amount, capped.amount_out) == (
        9975124224178055, 5988667735148, 9925619580021728,
    )  # fmt: skip
    spent = compute_swap_step(one, encode_price_sqrt(1000, 100), 2 * E18, E18, 600)
    assert (spent.amount_in, spent.fee_amount, spent.amount_out) == (
        999400000000000000, 600000000000000, 666399946655997866,
    )  # fmt: skip
    assert spent.sqrt_price_next_x96 == get_next_sqrt_price_from_input(
        one, 2 * E18, E18 - spent.fee_amount, False
    )
    to_one = compute_swap_step(2, 1, 1, 3915081100057732413702495386755767, 1)
    assert (to_one.amount_in, to_one.fee_amount, to_one.amount_out) == (
        39614081257132168796771975168, 39614120871253040049813, 0,
    )  # fmt: skip
    assert to_one.sqrt_price_next_x96 == 1
    all_fee = compute_swap_step(2413, 79887613182836312, 1985041575832132834610021537970, 10, 1872)
    assert (all_fee.amount_in, all_fee.fee_amount, all_fee.amount_out) == (0, 10, 0)
    assert all_fee.sqrt_price_next_x96 == 2413


# --- UniswapV3Pool.swap --------------------------------------------------------------


def _fixture_pool(name: str) -> V3PoolState:
    spec = POOL_SWAPS["pools"][name]
    positions = [(lower, upper, int(amount)) for lower, upper, amount in spec["positions"]]
    return v3_pool(
        positions, sqrt_price_x96=int(spec["sqrt_price_x96"]), fee_pips=spec["fee_pips"],
        tick_spacing=spec["tick_spacing"],
    )  # fmt: skip


def _case_id(case: dict[str, Any]) -> str:
    side = "0for1" if case["zero_for_one"] else "1for0"
    limit = "" if case["sqrt_price_limit_x96"] is None else " to limit"
    return f"{case['pool']}: {case['amount_in'] or 'max'} {side}{limit}"


@pytest.mark.parametrize("case", POOL_SWAPS["swaps"], ids=_case_id)
def test_v3_swap_pays_what_uniswaps_pool_tests_recorded(case: dict[str, Any]) -> None:
    pool = _fixture_pool(case["pool"])
    amount = int(case["amount_in"]) if case["amount_in"] else 2**255 - 1  # swapTo...Price
    limit = case["sqrt_price_limit_x96"]
    if "error" in case:
        with pytest.raises(ValueError, match=case["error"]):
            v3_swap_exact_in(pool, case["zero_for_one"], amount, limit and int(limit))
        return
    swap = v3_swap_exact_in(pool, case["zero_for_one"], amount, limit and int(limit))
    paid_in, paid_out = (
        (case["amount0_delta"], case["amount1_delta"])
        if case["zero_for_one"]
        else (case["amount1_delta"], case["amount0_delta"])
    )
    assert (swap.amount_in, -swap.amount_out, swap.tick) == (
        int(paid_in), int(paid_out), case["tick_after"],
    )  # fmt: skip


def test_v3_swap_a_pool_cannot_fill_returns_what_it_filled() -> None:
    # 'stable swap' case: 2e18 of liquidity on [-10, 10] takes only 0.0010007 of 1 token0
    pool = _fixture_pool("low fee, large liquidity around current price (stable swap)")
    swap = v3_swap_exact_in(pool, True, E18)
    assert (swap.amount_in, swap.amount_out) == (1000700370186095, 999700069986002)
    assert swap.tick == MIN_TICK
    assert swap.ticks_crossed == 1
    assert v3_max_amount_in(pool, True) == swap.amount_in


def test_v3_swap_zero_amount_reverts_like_the_pool() -> None:
    pool = _fixture_pool("medium fee, 1:1 price, 2e18 max range liquidity")
    with pytest.raises(ValueError, match="AS"):
        v3_swap_exact_in(pool, True, 0)


# --- properties ----------------------------------------------------------------------

amounts = st.integers(1, 10**27)


@given(amounts, amounts, st.integers(10**3, 10**33), st.integers(10**3, 10**33))
def test_v2_amount_out_is_monotone_and_below_the_reserve(
    a: int, b: int, reserve_in: int, reserve_out: int
) -> None:
    small, large = sorted((a, b))
    assert v2_amount_out(small, reserve_in, reserve_out) <= v2_amount_out(
        large, reserve_in, reserve_out
    )
    assert v2_amount_out(large, reserve_in, reserve_out) < reserve_out


@given(amounts, st.integers(10**3, 10**33), st.integers(10**3, 10**33))
def test_v2_amount_out_is_getamountout_at_997_over_1000(
    amount: int, reserve_in: int, reserve_out: int
) -> None:
    # UniswapV2Library.getAmountOut, literally
    with_fee = amount * 997
    expected = with_fee * reserve_out // (reserve_in * 1000 + with_fee)
    assert v2_amount_out(amount, reserve_in, reserve_out, 3000) == expected


def _real_reserve_out(positions: list[Position], sqrt_price: int, zero_for_one: bool) -> Fraction:
    """What the positions hold of the token bought, exactly: token1 below the price,
    token0 above it."""
    total = Fraction(0)
    for lower, upper, liquidity in positions:
        lo, hi = sqrt_ratio_at_tick(lower), sqrt_ratio_at_tick(upper)
        if zero_for_one and sqrt_price > lo:
            total += Fraction(liquidity * (min(hi, sqrt_price) - lo), Q96)
        if not zero_for_one and sqrt_price < hi:
            p = max(lo, sqrt_price)
            total += Fraction(liquidity * Q96 * (hi - p), p * hi)
    return total


@settings(deadline=None)  # a pool of 1-tick spacing run dry walks 3,466 bitmap words
@given(v3_pools(), st.booleans(), amounts, amounts)
def test_v3_swap_is_monotone_and_never_pays_more_than_the_pool_holds(
    drawn: tuple[V3PoolState, list[Position]], zero_for_one: bool, a: int, b: int
) -> None:
    pool, positions = drawn
    small, large = sorted((a, b))
    first = v3_swap_exact_in(pool, zero_for_one, small)
    second = v3_swap_exact_in(pool, zero_for_one, large)
    assert first.amount_out <= second.amount_out
    assert first.amount_in <= small and second.amount_in <= large
    assert second.amount_out <= _real_reserve_out(positions, pool.sqrt_price_x96, zero_for_one)
    moved_down = second.sqrt_price_x96 <= pool.sqrt_price_x96
    assert moved_down == zero_for_one or second.sqrt_price_x96 == pool.sqrt_price_x96
    if second.amount_in < large:  # it ran out: every token it held at the start is paid
        assert second.amount_in == v3_max_amount_in(pool, zero_for_one)


@given(
    st.sampled_from(((500, 10), (3000, 60), (10000, 200))),
    st.integers(-50_000, 50_000),
    st.integers(10**12, 10**26),
    st.booleans(),
    st.integers(1, 10**4),
)
def test_v3_full_range_is_the_v2_constant_product_on_virtual_reserves(
    fee_and_spacing: tuple[int, int], tick: int, liquidity: int, zero_for_one: bool, permille: int
) -> None:
    # one full-range position: x = L / sqrtP and y = L * sqrtP (token0, token1), x * y = L**2,
    # and the output is getAmountOut's gamma * a * R_out / (R_in + gamma * a). The pool
    # rounds in its own favour once per step (one per 256-tick word): the price by 1 unit,
    # which costs at most 1e-15 of the output here, and the input by up to 3 units, which
    # costs 3 times the price (R_out / R_in before the swap, the highest on the way)
    fee, spacing = fee_and_spacing
    sqrt_price = sqrt_ratio_at_tick(tick)
    pool = v3_pool(
        [(*full_range(spacing), liquidity)], sqrt_price_x96=sqrt_price, fee_pips=fee,
        tick_spacing=spacing,
    )  # fmt: skip
    x, y = Fraction(liquidity * Q96, sqrt_price), Fraction(liquidity * sqrt_price, Q96)
    reserve_in, reserve_out = (x, y) if zero_for_one else (y, x)
    amount = max(1, math.floor(reserve_in * permille / 1000))  # up to 10x the reserve
    gamma = Fraction(1_000_000 - fee, 1_000_000)
    ideal = gamma * amount * reserve_out / (reserve_in + gamma * amount)
    swap = v3_swap_exact_in(pool, zero_for_one, amount)
    assert swap.amount_in == amount
    assert swap.ticks_crossed == 0
    steps = abs(swap.tick - tick) // (256 * spacing) + 2
    tolerance = steps * (ideal / 10**15 + 3 * (reserve_out / reserve_in + 1))
    assert 0 <= ideal - swap.amount_out <= tolerance
    # and the V2 formula on the virtual reserves, floored to integers, agrees within 1e-9
    floored_in, floored_out = math.floor(reserve_in), math.floor(reserve_out)
    v2 = v2_amount_out(amount, floored_in, floored_out, fee)
    assert v2 == pytest.approx(float(ideal), rel=1e-9, abs=2)


# --- pool state ----------------------------------------------------------------------


def _state(**changes: Any) -> V3PoolState:
    fields: dict[str, Any] = {
        "address": "0xv3", "token0": "T0", "token1": "T1", "fee_pips": 3000,
        "tick_spacing": 60, "sqrt_price_x96": Q96, "liquidity": 5, "tick": 0,
        "ticks": ((-60, 5), (60, -5)), "block": 7,
    }  # fmt: skip
    return V3PoolState(**(fields | changes))


def test_v3_state_after_a_swap_down_onto_a_tick_is_one_tick_below_it() -> None:
    # UniswapV3Pool.swap leaves tick = tickNext - 1 when it stops on tickNext's price
    state = _state(sqrt_price_x96=sqrt_ratio_at_tick(60), tick=59, liquidity=5)
    assert state.tick == 59


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tick": 1}, "tick: expected 0"),
        ({"liquidity": 4}, "liquidity: expected 5"),
        ({"ticks": ((-60, 5), (30, -5))}, r"ticks\[1\]: expected a multiple of tick_spacing 60"),
        ({"ticks": ((60, -5), (-60, 5))}, r"ticks\[1\]: expected indexes sorted"),
        ({"ticks": ((-60, 5), (60, -4))}, "ticks: expected liquidity_net summing to 0"),
        ({"fee_pips": 1_000_000}, "fee_pips"),
        ({"tick_spacing": 0}, "tick_spacing"),
        ({"sqrt_price_x96": MAX_SQRT_RATIO}, "sqrt_price_x96"),
        ({"token1": "T0"}, "token1"),
    ],
)
def test_v3_state_that_no_pool_could_hold_is_refused_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _state(**changes)


def test_v2_state_beyond_uint112_is_refused_naming_the_reserve() -> None:
    with pytest.raises(ValueError, match="reserve1: expected 0 <= reserve < 2\\*\\*112"):
        V2PoolState(address="0xv2", token0="A", token1="B", reserve0=1, reserve1=2**112, block=1)
