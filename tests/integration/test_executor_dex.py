"""Routed DEX hedges through the real executor, on the real Uniswap pools and SplitSwap.

A ``dex_hedge`` order is split over the WETH/USDC V2 pair and V3 pools (``operators.routing``)
at the head's state and sent as one ``SplitSwap.swap`` with a minimum output from the
oracle price and band (``operators.swap_calls``). Checked from the chain: the fill equals
the route's quote to the wei and the book's balances moved by exactly it; a same-block
sandwich makes the swap revert, the book losing only gas; exactly once, by SplitSwap's
``Routed(orderId)`` events.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from web3 import Web3

from connectors.anvil import rpc
from connectors.contracts import load_artifact
from connectors.failpoints import FAILPOINT_EXIT
from operators.routing import route
from operators.uniswap_math import default_price_limit
from tests.integration.executor_env import (
    UNPOOLED,
    ExecutorEnv,
    MakeEnv,
    assert_exactly_once,
    wait_final,
    wait_for,
)

PRICE = 3000.0
"""The pools' ETH price at deployment (``connectors.uniswap.START_PRICE``), USD."""


def _route_block(env: ExecutorEnv, order_id: str) -> int:
    """The block whose pool state the executor routed ``order_id`` at (its ``sent`` detail)."""
    sent = next(e for e in env.states(order_id) if e.state == "sent")
    found = re.search(r"at the state of block (\d+)", sent.detail)
    assert found is not None, sent.detail
    return int(found.group(1))


def test_a_routed_sell_of_500_weth_and_a_buy_split_over_the_pools_fill_the_quote_to_the_wei(
    make_env: MakeEnv,
) -> None:
    env = make_env(dex=True, confirmations=1, price_band_bps=300.0)
    assert env.dex is not None
    env.publish_price(PRICE)
    order = env.dex_order(0, -500.0, PRICE)
    env.start_executor()
    env.publish_orders([order])

    final = wait_final(env, [order.order_id])[order.order_id]

    assert final.state == "mined", final
    block = _route_block(env, order.order_id)
    quote = route(env.dex.states(block), env.dex.weth, env.dex.usdc, 500 * 10**18)
    assert len(quote.legs) >= 3  # the V2 pair and both V3 pools
    assert (final.token_in, final.amount_in, final.token_out, final.amount_out) == (
        env.dex.weth, str(500 * 10**18), env.dex.usdc, str(quote.amount_out),
    )  # fmt: skip
    mined = final.block_number or 0
    ahead = route(env.dex.states(mined - 1), env.dex.weth, env.dex.usdc, 500 * 10**18)
    assert ahead.amount_out == quote.amount_out  # nothing traded between the route and the swap
    before, after = env.dex.balances(mined - 1), env.dex.balances(mined)
    assert before["WETH"] - after["WETH"] == 500 * 10**18
    assert after["USDC"] - before["USDC"] == quote.amount_out
    assert env.executions() and all(  # only the mined changes carry the fill
        (e.amount_out is not None) == (e.state == "mined") for e in env.states(order.order_id)
    )

    # a buy of 100 WETH spends 100 x 3000 USDC, exact in
    buy = env.dex_order(1, 100.0, PRICE)
    env.publish_orders([buy])
    bought = wait_final(env, [buy.order_id])[buy.order_id]
    assert bought.state == "mined", bought
    spend = 300_000 * 10**6
    states = env.dex.states(_route_block(env, buy.order_id))
    quote = route(states, env.dex.usdc, env.dex.weth, spend)
    assert (bought.token_in, bought.amount_in, bought.token_out, bought.amount_out) == (
        env.dex.usdc, str(spend), env.dex.weth, str(quote.amount_out),
    )  # fmt: skip
    mined = bought.block_number or 0
    before, after = env.dex.balances(mined - 1), env.dex.balances(mined)
    assert (before["USDC"] - after["USDC"], after["WETH"] - before["WETH"]) == (
        spend, quote.amount_out,
    )  # fmt: skip
    ids = [order.order_id, buy.order_id]
    assert_exactly_once(env, ids, executed=ids)


@pytest.mark.parametrize("point", ["after_persist", "after_receipt"])
def test_a_routed_swap_crashed_then_restarted_is_mined_once_with_the_same_fill(
    make_env: MakeEnv, point: str
) -> None:
    env = make_env(dex=True, confirmations=1, price_band_bps=300.0)
    assert env.dex is not None
    env.publish_price(PRICE)
    order = env.dex_order(0, -50.0, PRICE)
    env.publish_orders([order])
    crashed = env.start_executor(failpoint=f"{point}@1")
    assert crashed.wait(60) == FAILPOINT_EXIT
    env.proc = None
    env.start_executor()

    final = wait_final(env, [order.order_id])[order.order_id]

    block = _route_block(env, order.order_id)
    quote = route(env.dex.states(block), env.dex.weth, env.dex.usdc, 50 * 10**18)
    mined = [e for e in env.states(order.order_id) if e.state == "mined"]
    assert final.state == "mined" and mined[-1] == final
    filled = {(e.amount_in, e.amount_out) for e in mined}
    assert filled == {(str(50 * 10**18), str(quote.amount_out))}
    assert_exactly_once(env, [order.order_id], executed=[order.order_id])


def _caller_swap(env: ExecutorEnv, pool: str, weth_in: int, sender: str) -> str:
    """The UniswapCaller calldata that sells ``weth_in`` WETH on the V3 ``pool`` (WETH is
    token1: not zero for one) for ``sender``."""
    caller = Web3().eth.contract(abi=load_artifact("UniswapCaller").abi)
    cs = Web3.to_checksum_address
    return str(
        caller.encode_abi(
            "v3Swap", [cs(pool), False, weth_in, default_price_limit(False), cs(sender)]
        )
    )


def test_a_sandwich_ahead_in_the_same_block_reverts_the_swap_and_the_book_loses_only_gas(
    make_env: MakeEnv,
) -> None:
    env = make_env(dex=True, confirmations=1, price_band_bps=100.0, replace_after_blocks=50)
    assert env.dex is not None
    dex = env.dex
    attacker = rpc(env.url, "eth_accounts")[2].lower()
    _fund_attacker(env, attacker, 400 * 10**18)
    env.publish_price(PRICE)
    order = env.dex_order(0, -100.0, PRICE)  # impact about 63 bps: inside the 100 bps band
    env.automine(False)
    env.start_executor()
    env.publish_orders([order])
    wait_for("the swap broadcast", lambda: _broadcast(env, order.order_id), env)
    ours = rpc(env.url, "eth_getTransactionByHash", [env.attempts(order.order_id)[0].tx_hash])
    base = int(rpc(env.url, "eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    before = dex.balances()
    eth_before = int(rpc(env.url, "eth_getBalance", [env.signer, "latest"]), 16)

    # the attacker sells 400 WETH on the deepest pool, paying more priority to go first
    tip = int(ours["maxPriorityFeePerGas"], 16) * 10 + 10**9
    front = rpc(env.url, "eth_sendTransaction", [{
        "from": attacker, "to": dex.uniswap.caller, "gas": hex(3_000_000),
        "data": _caller_swap(env, dex.uniswap.v3_pools[500], 400 * 10**18, attacker),
        "maxPriorityFeePerGas": hex(tip), "maxFeePerGas": hex(2 * base + tip),
    }])  # fmt: skip
    env.mine()

    block = rpc(env.url, "eth_getBlockByNumber", ["latest", False])
    assert block["transactions"] == [front, ours["hash"]]  # the attacker first, same block
    final = wait_final(env, [order.order_id])[order.order_id]
    assert final.state == "reverted" and final.final
    assert "SplitSwap: output below minimum" in final.detail
    assert final.block_number == int(block["number"], 16)
    assert final.amount_out is None and final.token_in is None
    assert dex.balances() == before  # the book kept every WETH and USDC
    eth_after = int(rpc(env.url, "eth_getBalance", [env.signer, "latest"]), 16)
    assert eth_before - eth_after == int(final.fee_paid_wei or 0) > 0  # it paid only gas
    assert_exactly_once(env, [order.order_id], executed=[])


def _fund_attacker(env: ExecutorEnv, attacker: str, weth: int) -> None:
    from connectors.uniswap import fund

    assert env.dex is not None
    fund(env.url, env.dex.uniswap, attacker, {"WETH": weth})


def _broadcast(env: ExecutorEnv, order_id: str) -> bool:
    attempts = env.attempts(order_id)
    return bool(attempts) and (
        rpc(env.url, "eth_getTransactionByHash", [attempts[0].tx_hash]) is not None
    )


def test_dex_hedges_are_denied_without_split_swap_or_without_pools(make_env: MakeEnv) -> None:
    bare = make_env(confirmations=1)  # no SplitSwap configured
    bare.publish_price(PRICE)
    unset = bare.order(0, kind="dex_hedge", account=bare.signer, size=-1.0, position=0.0,
                       instrument="0x" + "e7" * 20, underlying_price=PRICE)  # fmt: skip
    bare.start_executor()
    bare.publish_orders([unset])
    denied = wait_final(bare, [unset.order_id])[unset.order_id]
    assert (denied.state, denied.code) == ("denied", "no_split_swap")
    assert "execution.split_swap is not set" in denied.detail
    assert bare.signer_txs() == []

    env = make_env(
        dex=True, confirmations=1, max_order_notional_usd=1e12, max_hourly_notional_usd=1e13
    )
    btc = env.price_row(60_000.0, asset="BTC")
    env.publish_prices([env.price_row(PRICE), btc])
    orders = [
        env.dex_order(0, -1.0, 60_000.0, asset="BTC", instrument=UNPOOLED),  # no pool
        env.dex_order(1, -1.0, PRICE, instrument=UNPOOLED),  # not the book's ETH token
        env.dex_order(2, -1e6, PRICE),  # the pools pay far less than the band allows
    ]
    env.start_executor()
    env.publish_orders(orders)
    final = wait_final(env, [o.order_id for o in orders])
    got: dict[str, Any] = {i: (e.state, e.code) for i, e in final.items()}
    assert got == {
        orders[0].order_id: ("denied", "no_pools"),
        orders[1].order_id: ("denied", "no_dex_hedge"),
        orders[2].order_id: ("denied", "price_impact"),
    }
    assert "trades " + UNPOOLED in final[orders[0].order_id].detail
    assert env.signer_txs() == []
