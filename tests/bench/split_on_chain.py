"""A crash-sized order split across the real Uniswap pools on Anvil (``make bench``).

Deploys ``connectors.uniswap.deploy_uniswap`` on a fresh Anvil (a WETH/USDC V2 pair and V3
pools with fees 500 and 3000 at 3,000 USDC/ETH), reads the three states at one block,
routes ``--eth`` ETH for USDC (``operators.routing.route``), then executes each leg on its
pool and checks that together they pay exactly the route's output. Prints each pool alone,
the split, and the split's gain over the best single pool in bps; then the same with gas
priced at ``--gwei`` (gas in USDC at the start price), for the reverse order (the same
value of USDC for WETH), and for 1 ETH, where the gas of a second leg outweighs its gain.
"""

from __future__ import annotations

import argparse
import time

from connectors.anvil import DevNode, rpc
from connectors.uniswap import (
    START_PRICE,
    UniswapDeployed,
    deploy_uniswap,
    read_states,
    token_balance,
    v2_swap,
    v3_swap,
)
from operators.pool_state import V2PoolState, V3PoolState
from operators.routing import Route, route
from operators.uniswap_math import v2_amount_out, v3_swap_exact_in

ETH = 10**18
USDC = 10**6


def states(url: str, deployed: UniswapDeployed) -> tuple[list[V2PoolState | V3PoolState], float]:
    """Every pool's state at the latest block, and the seconds the reads took."""
    block = int(rpc(url, "eth_blockNumber"), 16)
    started = time.perf_counter()
    read = read_states(url, deployed, block=block)
    return read, time.perf_counter() - started


def single_out(state: V2PoolState | V3PoolState, sell: str, amount_in: int) -> int:
    """What one pool alone pays for the whole order (0 if it cannot fill it)."""
    zero_for_one = state.token0 == sell
    if isinstance(state, V2PoolState):
        reserves = (state.reserve0, state.reserve1)
        reserve_in, reserve_out = reserves if zero_for_one else reserves[::-1]
        return v2_amount_out(amount_in, reserve_in, reserve_out, state.fee_pips)
    swap = v3_swap_exact_in(state, zero_for_one, amount_in)
    return swap.amount_out if swap.amount_in == amount_in else 0


def execute(url: str, deployed: UniswapDeployed, plan: Route, recipient: str) -> int:
    """Execute every leg on its pool, then put the chain back; what ``recipient`` got."""
    zero_for_one = plan.sell == min(plan.sell, plan.buy)
    before = token_balance(url, plan.buy, recipient)
    snapshot = rpc(url, "evm_snapshot")
    for leg in plan.legs:
        if leg.pool == deployed.v2_pair:
            v2_swap(
                url, deployed, leg.pool, deployed.deployer, zero_for_one=zero_for_one,
                amount_in=leg.amount_in, amount_out=leg.amount_out, recipient=recipient,
            )  # fmt: skip
        else:
            v3_swap(
                url, deployed, leg.pool, deployed.deployer, zero_for_one=zero_for_one,
                amount_in=leg.amount_in, recipient=recipient,
            )  # fmt: skip
    received = token_balance(url, plan.buy, recipient) - before
    rpc(url, "evm_revert", [snapshot])
    return received


def report(
    url: str, deployed: UniswapDeployed, sell: str, amount_in: int, gwei: float, recipient: str
) -> None:
    tokens, decimals = deployed.tokens, deployed.decimals
    buy = "USDC" if sell == "WETH" else "WETH"
    # the gas price in raw units of the bought token per gas unit: wei, or USDC at 3,000
    gas_cost = round(gwei * 1e9) if buy == "WETH" else round(gwei * 1e-9 * START_PRICE * USDC)
    read, read_s = states(url, deployed)
    names = {deployed.v2_pair: "V2 0.30%"} | {
        pool: f"V3 {fee / 10_000:.2f}%" for fee, pool in deployed.v3_pools.items()
    }
    started = time.perf_counter()
    plan = route(read, tokens[sell], tokens[buy], amount_in, gas_cost)
    route_ms = (time.perf_counter() - started) * 1e3
    paid = execute(url, deployed, plan, recipient)
    scale_in, scale_out = 10 ** decimals[sell], 10 ** decimals[buy]
    timing = f"states read in {read_s * 1e3:.0f} ms, routed in {route_ms:.1f} ms"
    print(f"sell {amount_in / scale_in:,.0f} {sell} for {buy}, gas at {gas_cost:,} raw {buy} "
          f"a unit ({timing})")  # fmt: skip
    for state in read:
        out = single_out(state, tokens[sell], amount_in)
        print(f"  {names[state.address]} alone: {out / scale_out:,.2f} {buy}")
    for leg in plan.legs:
        print(f"  leg {names[leg.pool]}: {leg.amount_in / scale_in:,.4f} {sell} -> "
              f"{leg.amount_out / scale_out:,.2f} {buy}")  # fmt: skip
    gain = (plan.amount_out / plan.best_single_pool_out - 1) * 10_000
    print(f"  split: {plan.amount_out / scale_out:,.2f} {buy} ({len(plan.legs)} legs, gas "
          f"{plan.gas:,}), best single pool {plan.best_single_pool_out / scale_out:,.2f}: "
          f"{gain:+.1f} bps; price impact {plan.price_impact_bps:.1f} bps")  # fmt: skip
    exact = "equal to the wei" if paid == plan.amount_out else f"DIFFERENT: {paid}"
    print(f"  executed leg by leg on the pools: {paid / scale_out:,.2f} {buy}, {exact}")
    if paid != plan.amount_out:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eth", type=int, default=500, help="order size, ETH")
    parser.add_argument("--gwei", type=float, default=20.0, help="gas price for the net route")
    args = parser.parse_args()
    with DevNode() as node:
        accounts = rpc(node.rpc_url, "eth_accounts")
        deployed = deploy_uniswap(node.rpc_url, accounts[0])
        recipient = accounts[1].lower()
        report(node.rpc_url, deployed, "WETH", args.eth * ETH, 0.0, recipient)
        report(node.rpc_url, deployed, "WETH", args.eth * ETH, args.gwei, recipient)
        usdc_in = round(args.eth * START_PRICE) * USDC
        report(node.rpc_url, deployed, "USDC", usdc_in, args.gwei, recipient)
        report(node.rpc_url, deployed, "WETH", ETH, args.gwei, recipient)  # gas decides


if __name__ == "__main__":
    main()
