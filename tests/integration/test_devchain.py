"""The dev chain on a real Anvil: deployment, the events of every contract, the scenario's
prices set by real swaps, reorgs, restarts.

The pools are the real Uniswap V2 pair and V3 pools (``connectors.uniswap``). Pool, pair
and feed logs are fetched with ``eth_getLogs`` and decoded by the oracle's own ``Decoder``
(the code that decodes mainnet); venue logs by web3 with the artifact's ABI.
"""

from __future__ import annotations

import json
import math
import urllib.error
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3 import Web3

from connectors.anvil import DevNode, mine, receipt, reorg, rpc, send_transaction
from connectors.contracts import (
    FEED_DECIMALS,
    Deployed,
    bind,
    deploy,
    devchain_config,
    feed_answer,
    instrument_id,
)
from connectors.uniswap import (
    deploy_swap_load,
    fund,
    load_swaps,
    read_states,
    read_swapped,
    read_v2_state,
    read_v3_state,
    v2_swap,
    v2_swap_calldata,
    v3_swap,
    v3_swap_calldata,
)
from flows.cli.devchain import SOURCE_NOISE, Scenario, dev_chain, devchain, head
from operators import abi
from operators.config import load_config
from operators.decode import Decoder
from operators.model import Observation, RawMessage
from operators.pool_math import sqrt_price_x96, v3_depth, v3_price
from operators.pool_moves import v2_swap_to_price, v3_swap_to_price
from operators.pool_state import V2PoolState, V3PoolState
from operators.registry import PoolSource, Registry
from operators.risk import order_id
from operators.uniswap_math import tick_at_sqrt_ratio
from operators.venue import CollateralMove, Fill, InstrumentListed, decode_venue

GAS = 200_000
PRICES = [1234.5, 3000.0, 2999.99, 250.125, 9876.54321, 0.5, 41_000.0, 1.0]
"""ETH prices in USD to swap the pools to, including awkward ones."""
SWAPS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
"""Each example is a few RPC round trips on Anvil."""


@pytest.fixture(scope="module")
def deployed(devnode: DevNode) -> Deployed:
    return deploy(devnode.rpc_url)


@pytest.fixture(scope="module")
def registry(deployed: Deployed) -> Registry:
    return Registry.from_config(devchain_config(deployed).oracle)


def _call(node: DevNode, sender: str, contract: Any, fn: str, args: list[Any]) -> int:
    """Send a call (automine) and return its block; it must succeed."""
    data = contract.encode_abi(fn, args=args)
    tx_hash = send_transaction(node.rpc_url, sender, contract.address, data, gas=GAS)
    mined = receipt(node.rpc_url, tx_hash)
    assert mined.ok, f"{fn}{args} failed"
    return mined.block


def _logs(node: DevNode, address: str, first: int, last: int | str = "latest") -> list[dict]:
    last_q = last if isinstance(last, str) else hex(last)
    params = {"address": address, "fromBlock": hex(first), "toBlock": last_q}
    logs: list[dict] = rpc(node.rpc_url, "eth_getLogs", [params])
    return logs


def _decode(registry: Registry, logs: list[dict]) -> list[Any]:
    """Each log as a ``chain.logs`` message (keyed by address, with chainId) through Decoder."""
    decoder = Decoder(registry, "chain.logs", "dex.quotes")
    out = []
    for offset, log in enumerate(logs):
        value = json.dumps({**log, "chainId": "0x7a69"}).encode()
        msg = RawMessage("chain.logs", 0, offset, 0, log["address"].encode(), value)
        out.append(decoder.decode(msg))
    return out


def _source(registry: Registry, address: str) -> PoolSource:
    src = registry.by_address[address]
    assert isinstance(src, PoolSource)
    return src


def test_deploy_when_run_then_every_contract_has_code_and_config_registers_sources(
    devnode: DevNode, deployed: Deployed, registry: Registry
) -> None:
    for address in deployed.contracts:
        assert len(rpc(devnode.rpc_url, "eth_getCode", [address, "latest"])) > 2, address
    for address in deployed.tokens.values():  # real tokens, no made-up addresses
        assert len(rpc(devnode.rpc_url, "eth_getCode", [address, "latest"])) > 2, address
    assert all(a == a.lower() and len(a) == 42 for a in deployed.contracts)
    assert set(registry.by_address) == {*deployed.pools, deployed.feed}
    assert len(deployed.pools) == 3
    assert registry.assets == ("ETH",)
    venue = bind(Web3(Web3.HTTPProvider(devnode.rpc_url)), "MarginVenue", deployed.venue)
    assert venue.functions.isLiquidator(Web3.to_checksum_address(deployed.liquidator)).call()
    assert venue.functions.owner().call().lower() == deployed.deployer


def _swap_v3_to(node: DevNode, deployed: Deployed, pool: str, target: int) -> int:
    """Swap the real V3 ``pool`` to ``target`` (``sqrtPriceX96``) with the input
    ``operators.pool_moves`` sizes; the block. The pool must land on it exactly."""
    state = read_v3_state(node.rpc_url, pool)
    move = v3_swap_to_price(state, target)
    assert move is not None
    swap = move.swap
    fill = v3_swap(node.rpc_url, deployed.uniswap, pool, deployed.deployer,
                   zero_for_one=move.zero_for_one, amount_in=move.amount_in,
                   sqrt_price_limit_x96=target)  # fmt: skip
    assert (fill.amount_in, fill.amount_out) == (swap.amount_in, swap.amount_out)
    assert (fill.sqrt_price_x96, fill.tick, fill.liquidity) == (target, swap.tick, swap.liquidity)
    return fill.block


def _swap_v2_to(node: DevNode, deployed: Deployed, target: int) -> tuple[int, V2PoolState]:
    """Swap the real V2 pair to ``target`` with the input ``operators.pool_moves`` sizes;
    the block and the pair's state after."""
    pair = deployed.uniswap.v2_pair
    move = v2_swap_to_price(read_v2_state(node.rpc_url, pair), target)
    assert move is not None
    fill = v2_swap(node.rpc_url, deployed.uniswap, pair, deployed.deployer,
                   zero_for_one=move.zero_for_one, amount_in=move.amount_in,
                   amount_out=move.amount_out)  # fmt: skip
    return fill.block, read_v2_state(node.rpc_url, pair, block=fill.block)


@pytest.mark.parametrize("fee", [500, 3000])
def test_v3_swaps_when_decoded_then_prices_and_depth_are_the_pools_own(
    devnode: DevNode, deployed: Deployed, registry: Registry, fee: int
) -> None:
    pool = deployed.uniswap.v3_pools[fee]
    src = _source(registry, pool)
    targets = [sqrt_price_x96(price, src) for price in PRICES]
    blocks = [_swap_v3_to(devnode, deployed, pool, target) for target in targets]

    observations = _decode(registry, _logs(devnode, pool, blocks[0], blocks[-1]))

    assert len(observations) == len(PRICES)
    for obs, price, target, block in zip(observations, PRICES, targets, blocks, strict=True):
        state = read_v3_state(devnode.rpc_url, pool, block=block)
        assert state.sqrt_price_x96 == target  # slot0 at that block: what the Swap log says
        assert isinstance(obs, Observation) and (obs.base, obs.quote) == ("ETH", "USDC")
        # exact: USDC per ETH = 2**192 / sqrtP**2 * 10**(18 - 6), rounded to a float once
        assert obs.price == float(Fraction(2**192 * 10**12, target * target))
        # and sqrtPriceX96 is floored, which moves the price by < 1e-12 relative
        assert obs.price == pytest.approx(price, rel=1e-12)
        assert obs.weight == v3_depth(target, state.liquidity, src)


@SWAPS
@given(price=st.floats(100.0, 100_000.0), fee=st.sampled_from([500, 3000]))
@example(price=2999.0, fee=500)  # within the tick the pool sits in
def test_v3_swap_sized_by_pool_moves_lands_the_real_pool_on_any_price(
    devnode: DevNode, deployed: Deployed, registry: Registry, price: float, fee: int
) -> None:
    pool = deployed.uniswap.v3_pools[fee]
    target = sqrt_price_x96(price, _source(registry, pool))
    snapshot = rpc(devnode.rpc_url, "evm_snapshot")
    try:
        if target != read_v3_state(devnode.rpc_url, pool).sqrt_price_x96:
            block = _swap_v3_to(devnode, deployed, pool, target)  # asserts it lands exactly
            [obs] = _decode(registry, _logs(devnode, pool, block, block))
            assert obs.price == pytest.approx(price, rel=1e-12)
    finally:
        assert rpc(devnode.rpc_url, "evm_revert", [snapshot]) is True


def test_v2_swaps_when_decoded_then_sync_gives_the_reserves_and_swap_is_skipped(
    devnode: DevNode, deployed: Deployed, registry: Registry
) -> None:
    pair = deployed.uniswap.v2_pair
    src = _source(registry, pair)
    sent = [_swap_v2_to(devnode, deployed, sqrt_price_x96(price, src)) for price in PRICES]
    first, last = sent[0][0], sent[-1][0]

    logs = _logs(devnode, pair, first, last)
    decoded = _decode(registry, logs)

    assert len(logs) == 2 * len(PRICES)  # Sync then Swap, as the pair emits them
    assert decoded[1::2] == [None] * len(PRICES)
    for obs, log, price, (_, state) in zip(decoded[0::2], logs[0::2], PRICES, sent, strict=True):
        # the Sync log holds getReserves at its block
        assert abi.data_words(log["data"], 2) == [state.reserve0, state.reserve1]
        assert isinstance(obs, Observation) and (obs.base, obs.quote) == ("ETH", "USDC")
        # exact: USDC per ETH = (reserve0 / 10**6) / (reserve1 / 10**18)
        assert obs.price == float(Fraction(state.reserve0 * 10**12, state.reserve1))
        assert obs.price == pytest.approx(price, rel=1e-9)  # within one unit of input
        assert obs.weight == pytest.approx(2 * state.reserve0 / 10**6, rel=1e-12)


def test_feed_answers_when_decoded_then_answer_over_10_pow_decimals(
    devnode: DevNode, deployed: Deployed, registry: Registry
) -> None:
    feed = bind(Web3(), "TestAggregator", deployed.feed)
    first = None
    for price in PRICES:
        block = _call(devnode, deployed.deployer, feed, "update", [feed_answer(price)])
        first = first or block

    decoded = _decode(registry, _logs(devnode, deployed.feed, first))

    assert decoded[1::2] == [None] * len(PRICES)  # NewRound carries no price
    prices = [obs.price for obs in decoded[0::2] if isinstance(obs, Observation)]
    assert prices == [feed_answer(p) / 10**FEED_DECIMALS for p in PRICES]
    assert prices == pytest.approx(PRICES, rel=1e-15)


def test_venue_events_when_decoded_with_abi_then_values_are_those_sent(
    devnode: DevNode, deployed: Deployed
) -> None:
    w3 = Web3(Web3.HTTPProvider(devnode.rpc_url))
    venue = bind(w3, "MarginVenue", deployed.venue)
    trader = w3.eth.accounts[3].lower()
    weth, usdc = deployed.tokens["WETH"], deployed.tokens["USDC"]
    strike, expiry = 3100 * 10**18, 1_900_000_000
    option = instrument_id(weth, 2, strike, expiry)
    cs = Web3.to_checksum_address

    first = _call(devnode, deployed.deployer, venue, "list", [cs(weth), 2, strike, expiry])
    _call(devnode, trader, venue, "deposit", [cs(usdc), 25_000 * 10**6])
    _call(devnode, trader, venue, "trade", [option, -3 * 10**18, 155 * 10**18, bytes(32)])
    leg = order_id("liquidation", trader, 1_900_000_000_000, option)  # a risk order's leg id
    liquidation = [cs(trader), option, 10**18, 160 * 10**18, bytes.fromhex(leg[2:])]
    _call(devnode, deployed.liquidator, venue, "liquidate", liquidation)
    _call(devnode, trader, venue, "withdraw", [cs(usdc), 5_000 * 10**6])
    data = venue.encode_abi("liquidate", args=liquidation)
    not_liquidator = send_transaction(devnode.rpc_url, trader, venue.address, data, gas=GAS)
    logs = _logs(devnode, deployed.venue, first)

    events = [
        ("InstrumentListed", {"id": bytes.fromhex(option[2:]), "underlying": cs(weth),
                              "kind": 2, "strike": strike, "expiry": expiry}),
        ("Deposit", {"account": cs(trader), "token": cs(usdc), "amount": 25_000 * 10**6}),
        ("Trade", {"account": cs(trader), "instrument": bytes.fromhex(option[2:]),
                   "size": -3 * 10**18, "price": 155 * 10**18, "orderId": bytes(32)}),
        ("Liquidated", {"account": cs(trader), "liquidator": cs(deployed.liquidator),
                        "instrument": bytes.fromhex(option[2:]), "size": 10**18,
                        "price": 160 * 10**18, "orderId": bytes.fromhex(leg[2:])}),
        ("Withdraw", {"account": cs(trader), "token": cs(usdc), "amount": 5_000 * 10**6}),
    ]  # fmt: skip
    assert len(logs) == len(events)
    for log, (name, args) in zip(logs, events, strict=True):
        event = _venue_event(venue, log)
        assert (event["event"], dict(event["args"])) == (name, args)

    # The risk engine's decoder (operators.venue) reads the same values, exactly.
    decoded = []
    for offset, log in enumerate(logs):
        block = rpc(devnode.rpc_url, "eth_getBlockByNumber", [log["blockNumber"], False])
        value = json.dumps({**log, "blockTimestamp": block["timestamp"], "chainId": 31337})
        msg = RawMessage("chain.logs", 0, offset, 0, deployed.venue.encode(), value.encode())
        decoded.append(decode_venue(msg, deployed.venue))
    listed, deposit, trade, liquidated, withdraw = decoded
    assert isinstance(listed, InstrumentListed)
    assert (listed.instrument, listed.underlying, listed.kind, listed.strike_e18) == (
        option,
        weth,
        2,
        strike,
    )
    assert isinstance(deposit, CollateralMove) and deposit.amount == 25_000 * 10**6
    assert isinstance(trade, Fill) and (trade.account, trade.size_e18, trade.price_e18) == (
        trader,
        -3 * 10**18,
        155 * 10**18,
    )
    assert trade.order_id is None  # bytes32(0): no order drove it
    assert isinstance(liquidated, Fill) and liquidated.liquidator == deployed.liquidator
    assert liquidated.order_id == leg  # the order id went on chain and comes back
    assert isinstance(withdraw, CollateralMove) and withdraw.amount == -5_000 * 10**6
    assert not receipt(devnode.rpc_url, not_liquidator).ok
    assert venue.functions.instrumentId(cs(weth), 2, strike, expiry).call().hex() == option[2:]


def test_load_contract_when_20k_real_swaps_then_get_logs_returns_each_in_order(
    devnode: DevNode, deployed: Deployed, registry: Registry
) -> None:
    pool = deployed.uniswap.v3_pools[500]
    src = _source(registry, pool)
    _swap_v3_to(devnode, deployed, pool, sqrt_price_x96(3000.0, src))  # amid its liquidity
    load = deploy_swap_load(devnode.rpc_url, deployed.uniswap)

    blocks = load_swaps(devnode.rpc_url, load, pool, deployed.deployer, 20_000, per_tx=500)
    logs = _logs(devnode, pool, blocks[0], blocks[-1])

    assert len(blocks) == 40
    assert len(logs) == 20_000
    assert all(log["topics"][0] == abi.V3_SWAP for log in logs)
    # swap i sells 1 USDC (token0) when i is even, and the WETH it bought back when odd
    amounts = [abi.signed(abi.data_words(log["data"], 5)[0]) for log in logs]
    assert amounts[0::2] == [10**6] * 10_000
    assert all(amount < 0 for amount in amounts[1::2])
    decoded = _decode(registry, [logs[0], logs[-1]])
    # back and forth: the price stays where it was, less the fees
    assert [obs.price for obs in decoded] == pytest.approx([3000.0] * 2, rel=1e-6)


def test_reorg_when_last_blocks_replaced_then_hashes_change_and_orphaned_logs_vanish(
    devnode: DevNode, deployed: Deployed, registry: Registry
) -> None:
    pool = deployed.uniswap.v3_pools[3000]
    src = _source(registry, pool)
    prices = (3000.0, 3010.0, 3020.0, 3030.0)
    blocks = [_swap_v3_to(devnode, deployed, pool, sqrt_price_x96(p, src)) for p in prices]
    assert blocks == list(range(blocks[0], blocks[0] + 4))
    before = _logs(devnode, pool, blocks[0])
    hashes = [_block_hash(devnode, b) for b in blocks]
    # from the state at blocks[1], which the reorg goes back to
    target = sqrt_price_x96(2500.0, src)
    move = v3_swap_to_price(read_v3_state(devnode.rpc_url, pool, block=blocks[1]), target)
    assert move is not None
    data = v3_swap_calldata(pool, move.zero_for_one, move.amount_in, target, deployed.deployer)
    replacement = {"from": deployed.deployer, "to": deployed.uniswap.caller, "data": data,
                   "gas": hex(1_000_000)}  # fmt: skip

    reorg(devnode.rpc_url, 2, [(replacement, 1)])
    after = _logs(devnode, pool, blocks[0])

    assert int(rpc(devnode.rpc_url, "eth_blockNumber"), 16) == blocks[-1]
    assert [_block_hash(devnode, b) for b in blocks[:2]] == hashes[:2]
    assert all(_block_hash(devnode, b) != h for b, h in zip(blocks[2:], hashes[2:], strict=True))
    assert after[:2] == before[:2]
    orphaned = {log["blockHash"] for log in before[2:]}
    assert orphaned.isdisjoint(log["blockHash"] for log in after)
    assert [int(log["blockNumber"], 16) for log in after] == [blocks[0], blocks[1], blocks[3]]
    prices_after = [obs.price for obs in _decode(registry, after)]
    assert prices_after == pytest.approx([3000.0, 3010.0, 2500.0], rel=1e-12)
    assert read_v3_state(devnode.rpc_url, pool).sqrt_price_x96 == target


def test_restart_when_node_stopped_then_blocks_and_logs_are_kept(
    devnode: DevNode, deployed: Deployed
) -> None:
    head = rpc(devnode.rpc_url, "eth_getBlockByNumber", ["latest", False])
    logs = _logs(devnode, deployed.uniswap.v3_pools[500], 0)
    url = devnode.rpc_url

    devnode.stop()
    with pytest.raises(urllib.error.URLError):
        rpc(url, "eth_blockNumber", timeout_s=2.0)
    devnode.start()

    assert devnode.rpc_url == url
    assert rpc(url, "eth_getBlockByNumber", [head["number"], False])["hash"] == head["hash"]
    assert rpc(url, "eth_blockNumber") == head["number"]
    assert _logs(devnode, deployed.uniswap.v3_pools[500], 0) == logs
    feed = bind(Web3(), "TestAggregator", deployed.feed)
    assert _call(devnode, deployed.deployer, feed, "update", [1]) == int(head["number"], 16) + 1


def test_devnode_when_anvil_cannot_start_then_error_names_it_with_log_tail(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    state.write_text("not a state file")

    with pytest.raises(RuntimeError, match=r"(?s)Anvil exited with code \d+.*state\.json"):
        DevNode(state_path=state, start_timeout_s=10.0).start()


def test_devchain_when_scenario_then_config_addresses_and_a_crash_on_chain(
    tmp_path: Path,
) -> None:
    assert devchain(tmp_path, scenario=True, seed=3, accounts=6, keep_running=False) == 0

    cfg = load_config((tmp_path / "devchain.toml").read_text())
    info = json.loads((tmp_path / "deployed.json").read_text())
    deployed = msgspec.json.decode((tmp_path / "deployed.json").read_bytes(), type=Deployed)
    registry = Registry.from_config(cfg.oracle)
    with DevNode(state_path=tmp_path / "state.json", accounts=8) as node:
        oracle_logs = [log for a in registry.by_address for log in _logs(node, a, 0)]
        venue_logs = _logs(node, deployed.venue, 0)
        liquidator_nonce = rpc(
            node.rpc_url, "eth_getTransactionCount", [deployed.liquidator, "latest"]
        )
    prices = [o.price for o in _decode(registry, oracle_logs) if isinstance(o, Observation)]
    venue = bind(Web3(), "MarginVenue", deployed.venue)
    names = [_venue_event(venue, log)["event"] for log in venue_logs]

    assert info["contracts"] == deployed.contracts
    assert 2800 < max(prices) < 3600  # it starts at 3000 USD...
    assert 2000 < min(prices) < 2600  # ...and crashes by about 25%
    assert names.count("InstrumentListed") == 32
    assert names.count("Deposit") >= 6
    assert {"Trade", "Withdraw"} <= set(names)
    # the liquidations are left to hedgeflow: the liquidator's key has sent nothing
    assert "Liquidated" not in names and liquidator_nonce == "0x0"


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(15, 40))
@example(seed=3, steps=30)
def test_scenario_prices_read_from_the_real_pools_events_follow_the_path(
    tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int
) -> None:
    with dev_chain(tmp_path_factory.mktemp("scenario"), accounts=2) as chain:
        scenario = Scenario(chain, seed, accounts=2, steps=steps)
        start = head(chain.rpc_url) + 1
        scenario.run()
        url, pools = chain.rpc_url, chain.deployed.pools
        logs = {pool: _logs_at(url, pool, start) for pool in pools}
        slot0 = {(p, b): _slot0(url, p, b) for _, b, p, _ in scenario.moves if p != pools[0]}
        reserves = {b: read_v2_state(url, pools[0], block=b) for _, b, p, _ in scenario.moves
                    if p == pools[0]}  # fmt: skip
    registry = Registry.from_config(chain.cfg.oracle)

    for pool in pools:
        src = _source(registry, pool)
        moves = [(step, b, target) for step, b, p, target in scenario.moves if p == pool]
        events = [log for log in logs[pool] if log["topics"][0] in (abi.V2_SYNC, abi.V3_SWAP)]
        observations = _decode(registry, events)
        assert len(events) == len(moves) > 0  # one swap per move, all the pool's own
        for (step, block, target), log, obs in zip(moves, events, observations, strict=True):
            assert int(log["blockNumber"], 16) == block
            assert isinstance(obs, Observation)
            # each source is the path with its own noise (sigma SOURCE_NOISE), 6 sigma at most
            assert abs(math.log(obs.price / scenario.path[step])) < 6 * SOURCE_NOISE
            if pool == pools[0]:  # the V2 pair: Sync holds getReserves at its block
                state = reserves[block]
                assert abi.data_words(log["data"], 2) == [state.reserve0, state.reserve1]
                # the reserve ratio lands within one unit of input of the target
                assert obs.price == pytest.approx(v3_price(target, src), rel=1e-9)
            else:  # a V3 pool lands on the target: its price and tick, as slot0 says
                words = abi.data_words(log["data"], 5)
                assert words[2] == target == slot0[pool, block][0]
                assert abi.signed(words[4]) == tick_at_sqrt_ratio(target) == slot0[pool, block][1]
                assert obs.price == v3_price(target, src)


@settings(max_examples=3, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shocks=st.lists(st.floats(-0.02, 0.02).filter(lambda x: abs(x) > 1e-4), min_size=6, max_size=6),
)
@example(seed=5, shocks=[0.01, -0.01, 0.005, -0.02, 0.02, -0.001])
def test_scenario_when_an_outsider_swaps_between_its_blocks_then_it_still_lands_on_the_path(
    tmp_path_factory: pytest.TempPathFactory, seed: int, shocks: list[float]
) -> None:
    """An outside trader (another account, as the demo's DEX book) swaps each pool by a
    few percent, mostly in a block of its own between the scenario's blocks: the
    scenario's swaps, sized from the pools' state at the head, neither revert (``mine``
    checks every receipt) nor miss: each pool lands on its target of the path. Every third
    time the outside swaps join the scenario's next block instead, ahead of its swaps:
    those may be outrun (reverted, their moves dropped) or land off the path, and the run
    goes on, the next block moving each pool from where it is."""
    with dev_chain(tmp_path_factory.mktemp("outsider"), accounts=2, books=1) as chain:
        url, uniswap = chain.rpc_url, chain.deployed.uniswap
        outsider = rpc(url, "eth_accounts")[4].lower()  # after the traders
        fund(url, uniswap, outsider, {"WETH": 10**6 * 10**18, "USDC": 10**12 * 10**6})
        pools = read_states(url, uniswap)
        blocks: list[int] = []
        shared: list[int] = []
        scenario = Scenario(chain, seed, accounts=2, steps=20)

        def outside_swaps() -> None:  # after each of the scenario's blocks
            at = head(url)
            if at in shared:  # leave the pools to the scenario's block after a shared one
                return
            for i, state in enumerate(read_swapped(url, pools, block=at)):
                shock = shocks[(at + i) % len(shocks)]
                price = state.sqrt_price_x96 if isinstance(state, V3PoolState) else None
                if price is None:
                    assert isinstance(state, V2PoolState)
                    price = math.isqrt((state.reserve1 << 192) // state.reserve0)
                target = round(price * math.sqrt(1 + shock))
                if isinstance(state, V3PoolState):
                    move = v3_swap_to_price(state, target)
                    assert move is not None
                    data = v3_swap_calldata(state.address, move.zero_for_one, move.amount_in,
                                            target, outsider)  # fmt: skip
                else:
                    v2 = v2_swap_to_price(state, target)
                    assert v2 is not None
                    data = v2_swap_calldata(state.address, v2.zero_for_one, v2.amount_in,
                                            v2.amount_out, outsider)  # fmt: skip
                send_transaction(url, outsider, uniswap.caller, data, gas=2_500_000)
            if (len(blocks) + len(shared)) % 3 == 2:
                shared.append(at + 1)  # pending: ahead of the scenario's swaps in its block
                return
            mine(url, timestamp=scenario.block_ts + 1)
            blocks.append(head(url))
            assert all(r["status"] == "0x1" for r in rpc(url, "eth_getBlockReceipts", ["latest"]))

        scenario.on_block = outside_swaps
        scenario.run()
        landed = {
            (block, pool): state
            for _, block, pool, _ in scenario.moves
            for state in read_swapped(url, pools, block=block)
            if state.address == pool
        }

    assert len(blocks) > 10 and len(shared) > 5
    assert {b for _, b, _, _ in scenario.moves}.isdisjoint(blocks)
    alone = [m for m in scenario.moves if m[1] not in shared]
    assert len(alone) > 20
    for _, block, pool, target in alone:
        state = landed[block, pool]
        if isinstance(state, V3PoolState):
            assert state.sqrt_price_x96 == target
        else:  # the pair's reserve ratio within one unit of input of the target
            assert isinstance(state, V2PoolState)
            ratio = Fraction(state.reserve1, state.reserve0) / Fraction(target**2, 2**192)
            assert abs(float(ratio) - 1) < 1e-9


def _logs_at(url: str, address: str, first: int) -> list[dict[str, Any]]:
    params = {"address": address, "fromBlock": hex(first), "toBlock": "latest"}
    logs: list[dict[str, Any]] = rpc(url, "eth_getLogs", [params])
    return logs


def _slot0(url: str, pool: str, block: int) -> tuple[int, int]:
    """A V3 pool's ``slot0`` (sqrtPriceX96, tick) at ``block``."""
    data = "0x" + Web3.keccak(text="slot0()")[:4].hex()
    raw = rpc(url, "eth_call", [{"to": pool, "data": data}, hex(block)])
    words = abi.data_words(raw[: 2 + 64 * 2], 2)
    return words[0], abi.signed(words[1], 24)


def test_scenario_when_paced_or_joined_by_outside_transactions_then_its_own_chain_is_the_same(
    tmp_path: Path,
) -> None:
    """The pace changes the wall clock only (the same blocks, hashes included); another
    sender's transactions (as the executor's) join the scenario's blocks and leave the
    scenario's own transactions as they were, block by block."""

    def run(out: Path, pace_s: float, outside: bool) -> list[dict[str, Any]]:
        with dev_chain(out, accounts=4) as chain:
            scenario = Scenario(chain, seed=3, accounts=4, steps=30, pace_s=pace_s)
            if outside:
                feed = bind(Web3(), "TestAggregator", chain.deployed.feed)
                data = feed.encode_abi("update", args=[1])
                mine = scenario.mine

                def mine_with_an_outside_transaction() -> None:
                    send_transaction(
                        chain.rpc_url, chain.deployed.liquidator, feed.address, data, gas=GAS
                    )
                    mine()

                scenario.mine = mine_with_an_outside_transaction  # type: ignore[method-assign]
            start = head(chain.rpc_url)  # the deployment's last block
            scenario.run()
            last = head(chain.rpc_url)
            blocks = [
                rpc(chain.rpc_url, "eth_getBlockByNumber", [hex(n), True]) for n in range(last + 1)
            ]
        assert scenario.others == (last - start if outside else 0)  # one in each block
        return blocks

    def own(blocks: list[dict[str, Any]], liquidator: str) -> list[tuple[str, ...]]:
        return [
            (block["number"], block["timestamp"], tx["from"], tx["to"], tx["nonce"], tx["input"])
            for block in blocks
            for tx in block["transactions"]
            if tx["from"] != liquidator
        ]

    plain = run(tmp_path / "plain", 0.0, outside=False)
    paced = run(tmp_path / "paced", 0.01, outside=False)
    joined = run(tmp_path / "joined", 0.0, outside=True)

    assert [b["hash"] for b in paced] == [b["hash"] for b in plain]
    liquidator = json.loads((tmp_path / "plain" / "deployed.json").read_text())["liquidator"]
    assert own(joined, liquidator) == own(plain, liquidator)
    assert len(own(plain, liquidator)) > 30


def _web3_log(log: dict) -> dict:
    """A JSON-RPC log as web3's ``process_log`` takes it (bytes, integers)."""
    return {
        **log,
        "topics": [bytes.fromhex(t[2:]) for t in log["topics"]],
        "data": bytes.fromhex(log["data"][2:]),
        "blockNumber": int(log["blockNumber"], 16),
        "logIndex": int(log["logIndex"], 16),
        "transactionIndex": int(log["transactionIndex"], 16),
        "address": Web3.to_checksum_address(log["address"]),
    }


def _venue_event(venue: Any, log: dict) -> Any:
    """A venue log decoded by web3 with the event of the artifact's ABI its topic0 names."""
    by_topic = {event().topic: event for event in venue.events}
    return by_topic[log["topics"][0]]().process_log(_web3_log(log))


def _block_hash(node: DevNode, number: int) -> str:
    block_hash: str = rpc(node.rpc_url, "eth_getBlockByNumber", [hex(number), False])["hash"]
    return block_hash
