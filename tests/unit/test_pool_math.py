"""operators.pool_math: the state written for a price reads back as that price.

Reading (``v3_price``, ``v3_depth``, ``v2_price_depth``) is checked against ``Fraction``
in test_decode.py; here the writers are checked as its inverses. Tolerances: the writers
floor to integers, so a value read back is off by at most one unit of each integer
(relative 1 / n for an integer n), plus a few float roundings (1e-15).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.pool_math import (
    Q96,
    sqrt_price_x96,
    v2_price_depth,
    v2_reserves,
    v3_amounts,
    v3_depth,
    v3_liquidity,
    v3_price,
    v3_tick,
)

REL = 1e-12
"""sqrtPriceX96 is above 2**60 for these prices: flooring it moves the price < 1e-17."""
ULPS = 1e-15


@dataclass(frozen=True)
class Pool:
    decimals0: int
    decimals1: int
    base_is_token0: bool


pools = st.builds(Pool, st.sampled_from([6, 8, 18]), st.sampled_from([6, 8, 18]), st.booleans())
prices = st.floats(1e-3, 1e5)
depths = st.floats(1e4, 1e9)


@given(price=prices, pool=pools)
def test_sqrt_price_x96_reads_back_as_the_price(price: float, pool: Pool) -> None:
    assert v3_price(sqrt_price_x96(price, pool), pool) == pytest.approx(price, rel=REL)


@given(price=prices, depth=depths, pool=pools)
def test_v3_liquidity_reads_back_as_the_depth(price: float, depth: float, pool: Pool) -> None:
    sqrt_p = sqrt_price_x96(price, pool)
    liquidity = v3_liquidity(depth, sqrt_p, pool)
    assert v3_depth(sqrt_p, liquidity, pool) == pytest.approx(depth, rel=1 / liquidity + ULPS)


@given(price=prices, depth=depths, pool=pools)
def test_v2_reserves_read_back_as_price_and_depth(price: float, depth: float, pool: Pool) -> None:
    reserve0, reserve1 = v2_reserves(price, depth, pool)
    got_price, got_depth = v2_price_depth(reserve0, reserve1, pool)
    floor = 1 / reserve0 + 1 / reserve1
    assert got_price == pytest.approx(price, rel=floor + ULPS)
    assert got_depth == pytest.approx(depth, rel=floor + ULPS)


@pytest.mark.parametrize(
    ("raw", "tick"),
    [(1.0 + 1e-9, 0), (1.0001**10.5, 10), (1.0001**-9.5, -10), (1.0001**-200_000.5, -200_001)],
)
def test_v3_tick_is_the_floor_of_log_base_1_0001_of_the_raw_price(raw: float, tick: int) -> None:
    sqrt_p = int(raw**0.5 * Q96)
    assert v3_tick(sqrt_p) == tick


def test_v3_amounts_pay_token1_in_when_the_price_rises() -> None:
    liquidity, before = 10**18, Q96
    amount0, amount1 = v3_amounts(liquidity, before, before * 2)
    assert amount1 == liquidity  # L * (2 - 1)
    assert amount0 == -(liquidity // 2)  # L * (1/2 - 1)
