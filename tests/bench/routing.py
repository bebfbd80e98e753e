"""Routing time of one order across 5 Uniswap V3 pools of 50 initialized ticks each (make bench).

The pools: WETH/USDC at 2000 USDC per WETH in the four fee tiers (0.01 %, 0.05 % twice,
0.3 %, 1 %), each of 25 seeded positions (50 ticks) of widths from 1 % to 70 % around
the price, over a full-range one. The order sells 500 WETH, which crosses ticks in
every pool it uses. One run is ``operators.routing.route`` from the pool states to the
route: the split, the exact quote of every leg, the gas legs, the best single pool.
Prints the median of ``--runs`` runs, and the first (TickMath's cache cold).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from operators.pool_state import V3PoolState
from operators.routing import route
from operators.uniswap_math import MAX_TICK, Q96, tick_at_sqrt_ratio, v3_swap_exact_in

E18 = 10**18
TIERS = ((100, 1), (500, 10), (500, 10), (3000, 60), (10000, 200))
GAS_COST = 40
"""Raw USDC per gas unit: 20 gwei at 2000 USDC per ETH is 4e-5 USDC, 40 raw units."""


def pool(rng: random.Random, i: int, fee: int, spacing: int) -> V3PoolState:
    """A pool of one full-range position and 24 others: 50 distinct initialized ticks."""
    sqrt_price = math.isqrt(5 * 10**8 * Q96 * Q96)  # raw WETH per raw USDC: 1e18 / 2000e6
    tick = tick_at_sqrt_ratio(sqrt_price)
    edge = MAX_TICK // spacing * spacing
    nets = {-edge: 10**15, edge: -(10**15)}
    liquidity = 10**15
    while len(nets) < 50:
        # ticks each way: 0.5 % to 35 % in the narrow tiers, wider in the wide ones, so
        # that there are 50 distinct multiples of the spacing to draw from
        half_width = rng.randint(max(50, 3 * spacing), 3000 + 30 * spacing)
        shift = rng.randint(-10, 10) * spacing
        lower = (tick - half_width + shift) // spacing * spacing
        upper = (tick + half_width + shift) // spacing * spacing
        if lower in nets or upper in nets or lower >= upper:
            continue
        amount = rng.randint(10**14, 10**16)
        nets[lower], nets[upper] = amount, -amount
        liquidity += amount if lower <= tick < upper else 0
    return V3PoolState(
        address=f"0x{i:040x}", token0="USDC", token1="WETH", fee_pips=fee,
        tick_spacing=spacing, sqrt_price_x96=sqrt_price, liquidity=liquidity, tick=tick,
        ticks=tuple(sorted(nets.items())), block=1,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    parser.add_argument("--weth", type=int, default=500, help="WETH sold (default 500)")
    args = parser.parse_args()
    rng = random.Random(7)
    pools = [pool(rng, i, fee, spacing) for i, (fee, spacing) in enumerate(TIERS)]
    amount = args.weth * E18
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = route(pools, "WETH", "USDC", amount, gas_cost=GAS_COST)
        times.append(time.perf_counter() - started)
    by_address = {p.address: p for p in pools}
    crossed = sum(
        v3_swap_exact_in(by_address[leg.pool], False, leg.amount_in).ticks_crossed
        for leg in result.legs
    )
    print(f"routing {args.weth} WETH across {len(pools)} V3 pools of 50 initialized ticks each:")
    print(f"  {len(result.legs)} legs, {crossed} ticks crossed, gas {result.gas:,}")
    print(f"  median of {args.runs} runs: {statistics.median(times) * 1e3:6.2f} ms "
          f"(first run {times[0] * 1e3:.2f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
