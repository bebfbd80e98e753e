"""The demo's loop on the real broker and the real chain, on a short scenario: the dev
chain, ``ingest``, ``run oracle``, ``run risk`` and two ``execute`` (the liquidator's and
the DEX book's) as their own processes; the chain's liquidations made by hedgeflow's
executor alone, and the DEX book's hedges routed over the real pools, each once, its
wallet moved by exactly their fills.

The checks are read from the chain: the venue's ``Liquidated`` events (``eth_getLogs`` after
the loop) against the risk stage's ``orders/`` and the executor's ``executions/``; the
book's transactions, SplitSwap's ``Routed`` events and its WETH balance from the loop's
chain, restarted from its state file.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import polars as pl
import pytest

from connectors.anvil import DevNode
from connectors.broker import EmbeddedBroker
from connectors.chain_audit import signer_txs
from connectors.chain_source import Rpc
from connectors.uniswap import head, token_balance
from flows.cli.dex_book import BOOK_WETH
from flows.cli.live_loop import LoopParams, LoopResult, live_loop
from flows.cli.summary import read_dataset, summary_text
from operators.exactly_once import audit

SHORT = LoopParams(seed=1, accounts=40, steps=60, pace_s=0.2)
"""40 accounts make an hour's worth of trades in 60 blocks; the crash (seed 1, at step 31)
puts some of them under maintenance (3 in a replay of the scenario alone)."""


@pytest.fixture(scope="module")
def loop(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> LoopResult:
    """One run of the loop for the module's tests."""
    params = dataclasses.replace(SHORT, topic_prefix=f"loop-{uuid.uuid4().hex[:8]}")
    return live_loop(broker.bootstrap, tmp_path_factory.mktemp("loop"), params)


def test_loop_after_the_crash_each_liquidation_on_chain_is_a_hedgeflow_order_once(
    loop: LoopResult,
) -> None:
    result = loop
    _, risk_dir, executor_dir, _ = result.stage_dirs
    orders = read_dataset("orders", risk_dir)
    executions = read_dataset("executions", executor_dir)
    assert orders is not None and executions is not None
    legs = set(orders.filter(pl.col("kind") == "liquidation")["order_id"])
    on_chain = [f.order_id for f in result.liquidations]
    sent = set(executions.filter(pl.col("state") == "sent")["order_id"])
    mined = set(executions.filter(pl.col("state") == "mined")["order_id"])

    assert on_chain, "the crash left nobody for hedgeflow to liquidate"
    assert {f.liquidator for f in result.liquidations} == {result.cfg.execution.liquidator}
    assert set(on_chain) <= legs  # each Liquidated.orderId is an order of orders/...
    assert len(on_chain) == len(set(on_chain))  # ...and none twice
    assert set(on_chain) <= sent  # the executor sent each...
    assert mined and mined <= set(on_chain)  # ...and what it saw mined, the chain holds
    text = summary_text(*result.stage_dirs, liquidations=result.liquidations)
    assert f"on chain: {len(on_chain)} Liquidated events" in text
    assert f"{len(on_chain)} carry the id of a hedgeflow liquidation order, 0 carry none" in text


def test_loop_dex_book_each_hedge_routed_and_mined_once_its_wallet_moved_by_its_fills(
    loop: LoopResult,
) -> None:
    """The DEX book's ``dex_hedge`` orders: each mined exactly once (its transactions and
    SplitSwap's ``Routed`` events on chain, nonces without gaps), the ``wallet`` column of
    ``account_risk`` moving by exactly each fill, the book's WETH on chain the initial plus
    the fills' net, and each later order (and the ``within_band`` denial after a fill)
    seeing the wallet with every earlier fill in it: no order hedges an exposure again."""
    book = loop.dex_book
    _, risk_dir, _, book_dir = loop.stage_dirs
    orders, executions = read_dataset("orders", risk_dir), read_dataset("executions", book_dir)
    risk, denials = read_dataset("account_risk", risk_dir), read_dataset("order_denials", risk_dir)
    assert orders is not None and executions is not None and risk is not None
    assert denials is not None
    hedges = orders.filter(pl.col("kind") == "dex_hedge").sort("ts_event_ms")
    final = executions.filter(pl.col("final")).sort("block_number")
    fills = final.filter(pl.col("state") == "mined")
    out_dir = loop.stage_dirs[0].parent
    accounts = SHORT.accounts + 3
    with DevNode(state_path=out_dir / "state.json", accounts=accounts) as node:
        last = head(node.rpc_url)
        txs = signer_txs(Rpc(node.rpc_url, 10.0), book.address, loop.cfg.risk.venue,
                         book.opened_block + 1, last, book.split_swap)  # fmt: skip
        weth = token_balance(node.rpc_url, book.weth, book.address)
    deployed = json.loads((out_dir / "deployed.json").read_text())

    assert hedges.height >= 1 and set(hedges["account"]) == {book.address}
    assert set(executions["order_id"]) == set(hedges["order_id"])  # only the book's orders
    assert final.height == hedges.height and fills.height == hedges.height  # each mined
    assert audit(txs, hedges["order_id"], book.address, book.first_nonce) == []
    routed = [t.order_id for t in txs if t.status == 1]
    assert sorted(routed) == sorted(fills["order_id"])  # one Routed event per order, on chain
    assert {t.block_number for t in txs} == set(fills["block_number"])
    assert deployed["split_swap"] == book.split_swap
    # the fill moves the wallet: WETH bought (token_out) or sold (token_in), raw units
    changes = [
        int(f["amount_out"]) if f["token_out"] == book.weth else -int(f["amount_in"])
        for f in fills.to_dicts()
    ]
    assert all({f["token_in"], f["token_out"]} == {book.weth, book.usdc} for f in fills.to_dicts())
    assert weth == BOOK_WETH + sum(changes)  # on chain: the initial plus the fills' net
    # each order saw the wallet with every earlier fill applied (never the same exposure)
    by_order = dict(zip(fills["order_id"], changes, strict=True))
    held = BOOK_WETH
    for order in hedges.to_dicts():
        assert order["position"] == held / 10**18
        held += by_order[order["order_id"]]
    # account_risk's wallet column: exactly the initial, then after each fill its sum
    wallets = [
        json.loads(w)["ETH"]
        for w in risk.filter(pl.col("account") == book.address).sort("ts_event_ms")["wallet"]
    ]
    steps = [BOOK_WETH + sum(changes[:n]) for n in range(len(changes) + 1)]
    assert [w for i, w in enumerate(wallets) if i == 0 or w != wallets[i - 1]] == [
        s / 10**18 for s in steps
    ]
    # after a fill, inside the band: a within_band denial with the new wallet, no order
    inside = denials.filter(
        (pl.col("account") == book.address) & (pl.col("reason") == "within_band")
    )
    after_fill = [f"(wallet {s / 10**18:.6g})" for s in steps[1:]]
    assert any(any(w in d for w in after_fill) for d in inside["detail"])
    text = summary_text(*loop.stage_dirs, liquidations=loop.liquidations)
    assert f"DEX hedges: {hedges.height} orders" in text
    assert f"wallet of {book.address} after: " in text
