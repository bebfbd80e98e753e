"""SplitSwap itself on Anvil, against the real Uniswap pools: its minimum is exact to the wei,
and it refuses legs that do not add up and callbacks from anyone but the pool it swaps.

Everything here is an ``eth_call`` from the funded, approving book (``DexSetup``) at the
head, so the module shares one chain and changes nothing on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from web3 import Web3

from connectors.anvil import DevNode, rpc
from connectors.contracts import load_artifact
from connectors.executor_chain import ChainClient
from connectors.uniswap import deploy_uniswap
from operators.routing import route
from operators.swap_calls import SwapPlan, plan_swap, swap_calldata
from tests.integration.executor_env import DexSetup

ORDER_ID = "0x" + "0d" * 32


@pytest.fixture(scope="module")
def dex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DexSetup]:
    with DevNode(state_path=tmp_path_factory.mktemp("split") / "anvil.json") as node:
        deployer, book = (a.lower() for a in rpc(node.rpc_url, "eth_accounts")[:2])
        yield DexSetup(node.rpc_url, deploy_uniswap(node.rpc_url, deployer), deployer, book)


def _plan(dex: DexSetup, weth_in: int) -> SwapPlan:
    head = int(rpc(dex.url, "eth_blockNumber"), 16)
    states = dex.states(head)
    found = route(states, dex.weth, dex.usdc, weth_in)
    return plan_swap(found, states, found.amount_out)


def _simulate(dex: DexSetup, data: str) -> str | None:
    return ChainClient(dex.url, 30.0).simulate(dex.book, dex.split_swap, data, 3_000_000)


def test_a_minimum_at_the_quote_passes_and_one_wei_above_it_reverts(dex: DexSetup) -> None:
    plan = _plan(dex, 200 * 10**18)
    assert len(plan.legs) == 3
    assert _simulate(dex, swap_calldata(ORDER_ID, plan)) is None
    above = msgspec.structs.replace(plan, min_amount_out=plan.quote_out + 1)
    assert _simulate(dex, swap_calldata(ORDER_ID, above)) == "SplitSwap: output below minimum"


def test_legs_that_do_not_sum_to_the_amount_in_revert(dex: DexSetup) -> None:
    plan = msgspec.structs.replace(_plan(dex, 10**18), min_amount_out=0)
    more = msgspec.structs.replace(plan, amount_in=plan.amount_in + 1)
    assert _simulate(dex, swap_calldata(ORDER_ID, more)) == "SplitSwap: legs do not sum to amountIn"
    same = msgspec.structs.replace(plan, token_out=plan.token_in)
    assert _simulate(dex, swap_calldata(ORDER_ID, same)) == "SplitSwap: tokenIn is tokenOut"


def test_a_swap_callback_from_anyone_but_the_pool_being_swapped_is_refused(dex: DexSetup) -> None:
    split = Web3().eth.contract(abi=load_artifact("SplitSwap").abi)
    data = str(split.encode_abi("uniswapV3SwapCallback", [10**18, -(10**6), b""]))
    assert _simulate(dex, data) == "SplitSwap: callback from a pool not being swapped"
    # nor from a real pool outside a swap: it cannot draw on the book's approval
    pool = dex.uniswap.v3_pools[500]
    reason = ChainClient(dex.url, 30.0).simulate(pool, dex.split_swap, data, 3_000_000)
    assert reason == "SplitSwap: callback from a pool not being swapped"
