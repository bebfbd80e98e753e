"""The real Uniswap V2 and V3 contracts on Anvil: deployment, state reads, exact quotes.

One fresh Anvil per module holds the pools of ``connectors.uniswap.deploy_uniswap`` (a
WETH/USDC V2 pair, V3 pools with fees 500 and 3000, liquidity over many tick ranges). Each
swap test reads the pool's state, quotes it with ``operators.uniswap_math``, swaps at that
same state and compares, then puts the chain back (``evm_snapshot``/``evm_revert``), so
every example starts from the deployed pools. The pools are the reference: a quote must
equal, to the wei, what the pool takes and pays (its ``Swap`` log and the recipient's
balance) and the state it is left in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.anvil import DevNode, RpcError, rpc
from connectors.uniswap import (
    NODE_MODULES,
    UniswapDeployed,
    deploy_uniswap,
    read_states,
    read_v2_state,
    read_v3_state,
    token_balance,
    v2_swap,
    v3_swap,
)
from operators.pool_moves import v2_after, v2_swap_to_price, v3_after, v3_swap_to_price
from operators.pool_state import V2PoolState, V3PoolState
from operators.routing import Route, route
from operators.uniswap_math import (
    MAX_SQRT_RATIO,
    MIN_SQRT_RATIO,
    V3Swap,
    v2_amount_out,
    v3_swap_exact_in,
)

# CREATE2 init code hashes of the mainnet pair and pool (v2-periphery UniswapV2Library.sol,
# v3-periphery PoolAddress.sol): the addresses of the deployed pools follow from them only
# if the factories create the mainnet bytecode.
V2_PAIR_INIT_CODE_HASH = "96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f"
V3_POOL_INIT_CODE_HASH = "e34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54"

ETH = 10**18
USDC = 10**6
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
"""Each example is a few RPC round trips on Anvil (about 20 ms)."""


@dataclass(frozen=True)
class Pools:
    url: str
    deployed: UniswapDeployed
    trader: str
    """Pays for every swap: the deployer, which holds the tokens and approved the caller."""
    recipient: str
    """Receives every swap's output, so that its balance shows what the pool paid."""

    def token_out(self, zero_for_one: bool) -> str:
        token0, token1 = sorted(self.deployed.tokens.values())
        return token1 if zero_for_one else token0


@pytest.fixture(scope="module")
def pools() -> Iterator[Pools]:
    with DevNode() as node:
        accounts = [a.lower() for a in rpc(node.rpc_url, "eth_accounts")]
        deployed = deploy_uniswap(node.rpc_url, accounts[0])
        yield Pools(node.rpc_url, deployed, trader=accounts[0], recipient=accounts[1])


@pytest.fixture
def at_deployment(pools: Pools) -> Iterator[Pools]:
    """The deployed pools, put back as deployed after the test."""
    snapshot = rpc(pools.url, "evm_snapshot")
    yield pools
    assert rpc(pools.url, "evm_revert", [snapshot]) is True


def _amounts(maximum: int) -> st.SearchStrategy[int]:
    """Integers in [1, maximum], spread evenly over their bit lengths (1 wei to whales)."""
    return st.integers(1, maximum.bit_length()).flatmap(
        lambda bits: st.integers(1 << (bits - 1), min(maximum, (1 << bits) - 1))
    )


def _create2(factory: str, salt: bytes, init_code_hash: str) -> str:
    digest = keccak(b"\xff" + bytes.fromhex(factory[2:]) + salt + bytes.fromhex(init_code_hash))
    return "0x" + digest[12:].hex()


# --- deployment ---------------------------------------------------------------------------


def test_usdc_is_token0_and_weth_token1_of_every_pool_as_on_mainnet(pools: Pools) -> None:
    usdc, weth = pools.deployed.tokens["USDC"], pools.deployed.tokens["WETH"]
    assert usdc < weth
    states = [read_v2_state(pools.url, pools.deployed.v2_pair)]
    states += [read_v3_state(pools.url, p) for p in pools.deployed.v3_pools.values()]
    assert {(s.token0, s.token1) for s in states} == {(usdc, weth)}


def test_pair_and_pools_are_at_the_create2_addresses_of_the_mainnet_init_code(
    pools: Pools,
) -> None:
    d = pools.deployed
    token0, token1 = (bytes.fromhex(t[2:]) for t in sorted(d.tokens.values()))
    pair_salt = keccak(token0 + token1)
    assert d.v2_pair == _create2(d.v2_factory, pair_salt, V2_PAIR_INIT_CODE_HASH)
    for fee, pool in d.v3_pools.items():
        salt = keccak(token0.rjust(32, b"\0") + token1.rjust(32, b"\0") + fee.to_bytes(32))
        assert pool == _create2(d.v3_factory, salt, V3_POOL_INIT_CODE_HASH)


def test_v2_pair_runs_the_runtime_code_of_the_npm_artifact_byte_for_byte(pools: Pools) -> None:
    # The V2 pair has no immutables, so its code on chain is the artifact's runtime code.
    shipped = json.loads((NODE_MODULES / "@uniswap/v2-core/build/UniswapV2Pair.json").read_text())
    code = rpc(pools.url, "eth_getCode", [pools.deployed.v2_pair, "latest"])
    assert code == "0x" + shipped["evm"]["deployedBytecode"]["object"]


# --- state ---------------------------------------------------------------------------------


def _liquidity_at(state: V3PoolState) -> int:
    """The in-range liquidity implied by the ticks: the sum of liquidityNet at or below the
    current tick (``Tick.cross`` adds it going up)."""
    return sum(net for index, net in state.ticks if index <= state.tick)


@pytest.mark.parametrize("fee", [500, 3000])
def test_v3_state_has_many_initialized_ticks_whose_net_liquidity_sums_to_zero(
    pools: Pools, fee: int
) -> None:
    state = read_v3_state(pools.url, pools.deployed.v3_pools[fee])
    indexes = [index for index, _ in state.ticks]
    assert len(indexes) >= 20
    assert indexes == sorted(set(indexes))
    assert all(index % state.tick_spacing == 0 for index in indexes)
    assert sum(net for _, net in state.ticks) == 0
    assert _liquidity_at(state) == state.liquidity > 0
    assert (state.fee_pips, state.tick_spacing) == (fee, {500: 10, 3000: 60}[fee])


def test_v2_state_is_the_pairs_reserves_at_the_block_read(at_deployment: Pools) -> None:
    p = at_deployment
    before = read_v2_state(p.url, p.deployed.v2_pair)
    v2_swap(p.url, p.deployed, p.deployed.v2_pair, p.trader, zero_for_one=True,
            amount_in=1000 * USDC, amount_out=1)  # fmt: skip
    after = read_v2_state(p.url, p.deployed.v2_pair)
    assert (after.reserve0, after.reserve1) == (before.reserve0 + 1000 * USDC, before.reserve1 - 1)
    assert after.block == before.block + 1
    assert read_v2_state(p.url, p.deployed.v2_pair, block=before.block) == before


@pytest.mark.parametrize("zero_for_one", [True, False], ids=["usdc-in", "weth-in"])
def test_v3_state_after_a_swap_across_ticks_is_what_its_swap_log_says(
    at_deployment: Pools, zero_for_one: bool
) -> None:
    p = at_deployment
    pool = p.deployed.v3_pools[500]
    before = read_v3_state(p.url, pool)
    amount = 2_000_000 * USDC if zero_for_one else 700 * ETH
    fill = v3_swap(p.url, p.deployed, pool, p.trader, zero_for_one=zero_for_one, amount_in=amount)
    after = read_v3_state(p.url, pool)
    assert (after.sqrt_price_x96, after.tick, after.liquidity) == (
        fill.sqrt_price_x96, fill.tick, fill.liquidity,
    )  # fmt: skip
    crossed = [
        i
        for i, _ in before.ticks
        if min(before.tick, after.tick) < i <= max(before.tick, after.tick)
    ]
    assert len(crossed) >= 5
    assert _liquidity_at(after) == after.liquidity
    assert after.ticks == before.ticks  # a swap moves no liquidity between ticks
    assert read_v3_state(p.url, pool, block=before.block) == before


# --- exact quotes against the pools ----------------------------------------------------------


def _check_v3_quote(
    p: Pools, fee: int, zero_for_one: bool, amount_in: int, limit: int | None = None
) -> V3Swap:
    """Quote a V3 swap from the state read, swap at that state, compare; the quote.

    The chain is put back after the swap.
    """
    pool = p.deployed.v3_pools[fee]
    snapshot = rpc(p.url, "evm_snapshot")
    try:
        state = read_v3_state(p.url, pool)
        quote = v3_swap_exact_in(state, zero_for_one, amount_in, limit)
        token_out = p.token_out(zero_for_one)
        before = token_balance(p.url, token_out, p.recipient)
        fill = v3_swap(
            p.url, p.deployed, pool, p.trader, zero_for_one=zero_for_one, amount_in=amount_in,
            sqrt_price_limit_x96=limit, recipient=p.recipient,
        )  # fmt: skip
        paid = token_balance(p.url, token_out, p.recipient) - before
        after = read_v3_state(p.url, pool, block=fill.block)
    finally:
        assert rpc(p.url, "evm_revert", [snapshot]) is True
    assert fill.block == state.block + 1
    assert (quote.amount_in, quote.amount_out) == (fill.amount_in, fill.amount_out)
    assert paid == quote.amount_out
    assert (quote.sqrt_price_x96, quote.tick, quote.liquidity) == (
        after.sqrt_price_x96, after.tick, after.liquidity,
    )  # fmt: skip
    return quote


def _check_v2_quote(p: Pools, zero_for_one: bool, amount_in: int) -> int:
    """Quote a V2 swap from the reserves read; the pair pays the quote and refuses one wei
    more (``UniswapV2: K``): the quote is the most it pays. The chain is put back."""
    pair = p.deployed.v2_pair
    snapshot = rpc(p.url, "evm_snapshot")
    try:
        state = read_v2_state(p.url, pair)
        reserves = (state.reserve0, state.reserve1)
        reserve_in, reserve_out = reserves if zero_for_one else reserves[::-1]
        quote = v2_amount_out(amount_in, reserve_in, reserve_out, state.fee_pips)
        with pytest.raises(RpcError, match="UniswapV2: K"):
            v2_swap(p.url, p.deployed, pair, p.trader, zero_for_one=zero_for_one,
                    amount_in=amount_in, amount_out=quote + 1, recipient=p.recipient)  # fmt: skip
        if quote > 0:  # a pair refuses to pay nothing (INSUFFICIENT_OUTPUT_AMOUNT)
            token_out = p.token_out(zero_for_one)
            before = token_balance(p.url, token_out, p.recipient)
            fill = v2_swap(
                p.url, p.deployed, pair, p.trader, zero_for_one=zero_for_one,
                amount_in=amount_in, amount_out=quote, recipient=p.recipient,
            )  # fmt: skip
            assert (fill.amount_in, fill.amount_out) == (amount_in, quote)
            assert token_balance(p.url, token_out, p.recipient) - before == quote
    finally:
        assert rpc(p.url, "evm_revert", [snapshot]) is True
    return quote


@SETTINGS
@given(amount_in=_amounts(4_000 * ETH))
@example(amount_in=1)
@example(amount_in=500 * ETH)
def test_v2_quote_selling_weth_is_what_the_pair_pays_to_the_wei(
    pools: Pools, amount_in: int
) -> None:
    _check_v2_quote(pools, zero_for_one=False, amount_in=amount_in)


@SETTINGS
@given(amount_in=_amounts(12_000_000 * USDC))
@example(amount_in=1)
@example(amount_in=1_500_000 * USDC)
def test_v2_quote_selling_usdc_is_what_the_pair_pays_to_the_wei(
    pools: Pools, amount_in: int
) -> None:
    _check_v2_quote(pools, zero_for_one=True, amount_in=amount_in)


@pytest.mark.parametrize("fee", [500, 3000])
@SETTINGS
@given(amount_in=_amounts(3_000 * ETH))
@example(amount_in=1)
@example(amount_in=500 * ETH)
def test_v3_quote_selling_weth_is_what_the_pool_pays_to_the_wei(
    pools: Pools, fee: int, amount_in: int
) -> None:
    _check_v3_quote(pools, fee, zero_for_one=False, amount_in=amount_in)


@pytest.mark.parametrize("fee", [500, 3000])
@SETTINGS
@given(amount_in=_amounts(9_000_000 * USDC))
@example(amount_in=1)
@example(amount_in=1_500_000 * USDC)
def test_v3_quote_selling_usdc_is_what_the_pool_pays_to_the_wei(
    pools: Pools, fee: int, amount_in: int
) -> None:
    _check_v3_quote(pools, fee, zero_for_one=True, amount_in=amount_in)


@pytest.mark.parametrize("fee", [500, 3000])
@pytest.mark.parametrize("zero_for_one", [True, False], ids=["usdc-in", "weth-in"])
def test_v3_quote_of_a_crash_sized_swap_crosses_many_ticks_and_is_exact(
    pools: Pools, fee: int, zero_for_one: bool
) -> None:
    amount_in = 1_500_000 * USDC if zero_for_one else 500 * ETH
    quote = _check_v3_quote(pools, fee, zero_for_one, amount_in)
    assert quote.amount_in == amount_in
    assert quote.ticks_crossed >= 5


@pytest.mark.parametrize("zero_for_one", [True, False], ids=["usdc-in", "weth-in"])
def test_v3_quote_beyond_the_last_tick_stops_at_the_price_limit_and_is_exact(
    pools: Pools, zero_for_one: bool
) -> None:
    # The fee-500 pool has no full-range position: past its last tick the swap runs dry,
    # walks to the limit and consumes only part of the input.
    amount_in = 10**15 * USDC if zero_for_one else 10**9 * ETH
    quote = _check_v3_quote(pools, 500, zero_for_one, amount_in)
    assert quote.amount_in < amount_in
    assert quote.liquidity == 0
    assert quote.sqrt_price_x96 == (MIN_SQRT_RATIO + 1 if zero_for_one else MAX_SQRT_RATIO - 1)


@pytest.mark.parametrize("zero_for_one", [True, False], ids=["usdc-in", "weth-in"])
@SETTINGS
@given(move=st.integers(1, 2_000), amount_in=_amounts(10**9 * ETH))
def test_v3_quote_with_a_price_limit_stops_where_the_pool_stops(
    pools: Pools, zero_for_one: bool, move: int, amount_in: int
) -> None:
    # A limit `move` ticks' worth of price away (1 bip each, up to about 20%).
    state = read_v3_state(pools.url, pools.deployed.v3_pools[3000])
    ratio = 1.0001 ** (move / 2)
    limit = int(state.sqrt_price_x96 / ratio if zero_for_one else state.sqrt_price_x96 * ratio)
    _check_v3_quote(pools, 3000, zero_for_one, amount_in, limit)


# --- a swap to a target price (the dev chain's scenario) -------------------------------------


@SETTINGS
@given(ratio=st.floats(0.5, 2.0), fee=st.sampled_from([0, 500, 3000]))
@example(ratio=0.75, fee=500)  # a crash: down across the ladder of bands
@example(ratio=1.0000001, fee=3000)  # within the tick the pool sits in
@example(ratio=1.0, fee=500)  # at the target already: no move
@example(ratio=1.0, fee=0)
def test_swap_sized_to_a_price_lands_the_real_pool_on_it(
    at_deployment: Pools, ratio: float, fee: int
) -> None:
    # fee 0 stands for the V2 pair; the target is the price times ratio (sqrtPriceX96 of the
    # pool's raw token1/token0, so the ETH price in USDC moves by 1 / ratio)
    p = at_deployment
    if fee == 0:
        pair = read_v2_state(p.url, p.deployed.v2_pair)
        target = int(math.isqrt(pair.reserve1 * 2**192 // pair.reserve0) * ratio**0.5)
        move = v2_swap_to_price(pair, target)
        goal = Fraction(target * target, 2**192)
        if move is None:  # the pair sits at the target, or too close for a swap to be paid
            assert abs(Fraction(pair.reserve1, pair.reserve0) / goal - 1) < Fraction(1, 10**9)
            return
        v2_swap(p.url, p.deployed, pair.address, p.trader, zero_for_one=move.zero_for_one,
                amount_in=move.amount_in, amount_out=move.amount_out)  # fmt: skip
        after = read_v2_state(p.url, pair.address)
        assert after == v2_after(pair, move, after.block)
        # within one unit of input: a relative step of at most 1 / reserve_in, and less
        assert abs(Fraction(after.reserve1, after.reserve0) / goal - 1) < Fraction(1, 10**9)
        return
    state = read_v3_state(p.url, p.deployed.v3_pools[fee])
    target = int(state.sqrt_price_x96 * ratio**0.5)
    v3_move = v3_swap_to_price(state, target)
    if v3_move is None:  # ratio 1: the pool sits at the target already
        assert state.sqrt_price_x96 == target
        return
    fill = v3_swap(p.url, p.deployed, state.address, p.trader, zero_for_one=v3_move.zero_for_one,
                   amount_in=v3_move.amount_in, sqrt_price_limit_x96=target)  # fmt: skip
    after = read_v3_state(p.url, state.address)
    assert after == v3_after(state, v3_move.swap, fill.block)
    assert after.sqrt_price_x96 == fill.sqrt_price_x96 == target
    assert fill.amount_in == v3_move.swap.amount_in


# --- the split, executed leg by leg ------------------------------------------------------------


def _execute(p: Pools, plan: Route) -> int:
    """Execute every leg of ``plan`` on its pool, one swap each, from the states the route
    was computed on; what the recipient received in all. Each leg must pay its quote (a V2
    leg also refuses one wei more). The chain is put back."""
    sell = plan.sell
    zero_for_one = sell == min(plan.sell, plan.buy)
    before = token_balance(p.url, plan.buy, p.recipient)
    snapshot = rpc(p.url, "evm_snapshot")
    try:
        for leg in plan.legs:
            if leg.pool == p.deployed.v2_pair:
                with pytest.raises(RpcError, match="UniswapV2: K"):
                    v2_swap(
                        p.url, p.deployed, leg.pool, p.trader, zero_for_one=zero_for_one,
                        amount_in=leg.amount_in, amount_out=leg.amount_out + 1,
                        recipient=p.recipient,
                    )  # fmt: skip
                fill = v2_swap(
                    p.url, p.deployed, leg.pool, p.trader, zero_for_one=zero_for_one,
                    amount_in=leg.amount_in, amount_out=leg.amount_out, recipient=p.recipient,
                )  # fmt: skip
            else:
                fill = v3_swap(
                    p.url, p.deployed, leg.pool, p.trader, zero_for_one=zero_for_one,
                    amount_in=leg.amount_in, recipient=p.recipient,
                )  # fmt: skip
            assert (fill.amount_in, fill.amount_out) == (leg.amount_in, leg.amount_out)
        received = token_balance(p.url, plan.buy, p.recipient) - before
    finally:
        assert rpc(p.url, "evm_revert", [snapshot]) is True
    return received


def _states(p: Pools) -> list[V2PoolState | V3PoolState]:
    """Every pool's state at one block."""
    return read_states(p.url, p.deployed)


@pytest.mark.parametrize(
    ("sell", "amount_in"),
    [
        pytest.param("WETH", 500 * ETH, id="crash-500-weth"),
        pytest.param("WETH", 20 * ETH, id="20-weth"),
        pytest.param("USDC", 1_500_000 * USDC, id="1.5m-usdc"),
        pytest.param("USDC", 30_000 * USDC, id="30k-usdc"),
    ],
)
def test_split_executed_leg_by_leg_on_the_real_pools_pays_the_routes_amount_out(
    pools: Pools, sell: str, amount_in: int
) -> None:
    tokens = pools.deployed.tokens
    buy = "USDC" if sell == "WETH" else "WETH"
    plan = route(_states(pools), tokens[sell], tokens[buy], amount_in)
    assert sum(leg.amount_in for leg in plan.legs) == amount_in
    assert _execute(pools, plan) == plan.amount_out >= plan.best_single_pool_out


@SETTINGS
@given(sell=st.sampled_from(["WETH", "USDC"]), size=st.integers(1, 10**6))
def test_split_of_any_size_pays_exactly_the_route_on_chain(
    pools: Pools, sell: str, size: int
) -> None:
    # size in millionths of 1,000 ETH (or of 3M USDC): from dust to a whale's order
    tokens = pools.deployed.tokens
    buy = "USDC" if sell == "WETH" else "WETH"
    amount_in = size * (10**15 if sell == "WETH" else 3 * USDC)
    plan = route(_states(pools), tokens[sell], tokens[buy], amount_in)
    assert _execute(pools, plan) == plan.amount_out
