"""Uniswap pools for the tests: built from positions as a pool is, and hypothesis strategies.

A V3 pool here is what ``mint`` leaves: each position (lower, upper, L) adds L to
``liquidity_net`` at its lower tick and takes it away at its upper one, and the in-range
liquidity is the sum over the positions with lower <= tick < upper.
"""

from __future__ import annotations

import msgspec
from hypothesis import strategies as st

from operators.pool_state import V2PoolState, V3PoolState
from operators.uniswap_math import MAX_TICK, sqrt_ratio_at_tick, tick_at_sqrt_ratio

Position = tuple[int, int, int]
"""(tick_lower, tick_upper, liquidity)."""

FEES_AND_SPACINGS = ((100, 1), (500, 10), (3000, 60), (10000, 200))
"""``UniswapV3Factory``'s fee tiers (pips) and their tick spacings."""


def full_range(spacing: int) -> tuple[int, int]:
    """The widest ticks usable at ``spacing`` (v3-core tests' getMinTick/getMaxTick)."""
    return -(MAX_TICK // spacing) * spacing, (MAX_TICK // spacing) * spacing


def v3_pool(
    positions: list[Position],
    *,
    sqrt_price_x96: int,
    fee_pips: int = 3000,
    tick_spacing: int = 60,
    address: str = "0xv3",
    token0: str = "T0",
    token1: str = "T1",
    block: int = 1,
) -> V3PoolState:
    """The pool that ``positions`` minted at ``sqrt_price_x96`` make."""
    tick = tick_at_sqrt_ratio(sqrt_price_x96)
    nets: dict[int, int] = {}
    liquidity = 0
    for lower, upper, amount in positions:
        nets[lower] = nets.get(lower, 0) + amount
        nets[upper] = nets.get(upper, 0) - amount
        if lower <= tick < upper:
            liquidity += amount
    return V3PoolState(
        address=address,
        token0=token0,
        token1=token1,
        fee_pips=fee_pips,
        tick_spacing=tick_spacing,
        sqrt_price_x96=sqrt_price_x96,
        liquidity=liquidity,
        tick=tick,
        ticks=tuple(sorted(nets.items())),
        block=block,
    )


@st.composite
def v3_pools(
    draw: st.DrawFn,
    *,
    address: str = "0xv3",
    token0: str = "T0",
    token1: str = "T1",
    max_positions: int = 5,
    near_tick: int = 0,
    spread: int = 20_000,
) -> tuple[V3PoolState, list[Position]]:
    """A V3 pool of 1 to ``max_positions`` positions at a tick within ``spread`` of
    ``near_tick``, and its positions: some full range, some narrow, some away from the
    price."""
    fee, spacing = draw(st.sampled_from(FEES_AND_SPACINGS))
    low, high = full_range(spacing)
    tick = draw(st.integers(near_tick - spread, near_tick + spread))
    sqrt_price = draw(st.integers(sqrt_ratio_at_tick(tick), sqrt_ratio_at_tick(tick + 1) - 1))
    positions = []
    for _ in range(draw(st.integers(1, max_positions))):
        if draw(st.booleans()):
            lower, upper = low, high
        else:
            a = draw(st.integers(tick - 30_000, tick + 30_000)) // spacing * spacing
            width = draw(st.integers(1, 600)) * spacing
            lower, upper = max(a, low), min(a + width, high)
            if lower >= upper:
                lower, upper = low, high
        positions.append((lower, upper, draw(st.integers(10**6, 10**24))))
    pool = v3_pool(
        positions, sqrt_price_x96=sqrt_price, fee_pips=fee, tick_spacing=spacing,
        address=address, token0=token0, token1=token1,
    )  # fmt: skip
    return pool, positions


@st.composite
def v2_pools(
    draw: st.DrawFn, *, address: str = "0xv2", token0: str = "T0", token1: str = "T1"
) -> V2PoolState:
    """A V2 pair with reserves from 10**6 to 10**27 raw units and a common fee."""
    return V2PoolState(
        address=address,
        token0=token0,
        token1=token1,
        reserve0=draw(st.integers(10**6, 10**27)),
        reserve1=draw(st.integers(10**6, 10**27)),
        fee_pips=draw(st.sampled_from((3000, 3000, 2500, 1000))),
        block=1,
    )


@st.composite
def pool_sets(
    draw: st.DrawFn, *, max_pools: int = 5, token0: str = "T0", token1: str = "T1"
) -> list[V2PoolState | V3PoolState]:
    """1 to ``max_pools`` V2 pairs and V3 pools of one pair, at prices within about 0.5 % of
    each other (a tick near ``base``), with distinct addresses and blocks."""
    base = draw(st.integers(-100_000, 100_000))
    pools: list[V2PoolState | V3PoolState] = []
    for i in range(draw(st.integers(1, max_pools))):
        address, block = f"0x{i:040x}", 100 + i
        if draw(st.booleans()):
            reserve0 = draw(st.integers(10**9, 10**26))
            price = 1.0001 ** draw(st.integers(base - 50, base + 50))
            reserve1 = max(1, min(int(reserve0 * price), 2**112 - 1))
            pools.append(V2PoolState(
                address=address, token0=token0, token1=token1, reserve0=reserve0,
                reserve1=reserve1, fee_pips=draw(st.sampled_from((3000, 3000, 2500))),
                block=block,
            ))  # fmt: skip
        else:
            pool, _ = draw(v3_pools(address=address, token0=token0, token1=token1,
                                    near_tick=base, spread=50))  # fmt: skip
            pools.append(msgspec.structs.replace(pool, block=block))
    return pools
