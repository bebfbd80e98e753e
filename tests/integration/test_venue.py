"""The venue's events on a real Anvil, decoded by ``operators.venue`` for the risk engine."""

from __future__ import annotations

import json

from web3 import Web3

from connectors.anvil import DevNode, receipt, rpc, send_transaction
from connectors.contracts import DEV_TOKENS, bind, deploy, instrument_id
from operators import abi
from operators.model import RawMessage, Rejected
from operators.venue import CollateralMove, Fill, InstrumentListed, decode_venue

GAS = 200_000


def test_venue_events_decode_to_the_values_sent(devnode: DevNode) -> None:
    deployed = deploy(devnode.rpc_url)
    w3 = Web3(Web3.HTTPProvider(devnode.rpc_url))
    venue = bind(w3, "MarginVenue", deployed.venue)
    trader = w3.eth.accounts[4].lower()
    weth, usdc = DEV_TOKENS["WETH"].address, DEV_TOKENS["USDC"].address
    strike, expiry = 3100 * 10**18, 1_900_000_000
    option = instrument_id(weth, 2, strike, expiry)
    cs = Web3.to_checksum_address
    calls = [
        (deployed.deployer, "list", [cs(weth), 2, strike, expiry]),
        (trader, "deposit", [cs(usdc), 25_000 * 10**6]),
        (trader, "trade", [option, -3 * 10**18, 155 * 10**18]),
        (deployed.liquidator, "liquidate", [cs(trader), option, 10**18, 160 * 10**18]),
        (trader, "withdraw", [cs(usdc), 5_000 * 10**6]),
    ]
    blocks = []
    for sender, fn, args in calls:
        data = venue.encode_abi(fn, args=args)
        mined = receipt(
            devnode.rpc_url, send_transaction(devnode.rpc_url, sender, venue.address, data, gas=GAS)
        )
        assert mined.ok
        blocks.append(mined.block)
    params = {"address": deployed.venue, "fromBlock": hex(blocks[0]), "toBlock": hex(blocks[-1])}
    logs = rpc(devnode.rpc_url, "eth_getLogs", [params])

    decoded = []
    for offset, log in enumerate(logs):
        block = rpc(devnode.rpc_url, "eth_getBlockByNumber", [log["blockNumber"], False])
        value = json.dumps({**log, "blockTimestamp": block["timestamp"], "chainId": 31337})
        msg = RawMessage("chain.logs", 0, offset, 0, deployed.venue.encode(), value.encode())
        decoded.append(decode_venue(msg, deployed.venue))

    listed, deposit, trade, liquidated, withdraw = decoded
    assert isinstance(listed, InstrumentListed)
    assert (
        listed.instrument,
        listed.underlying,
        listed.kind,
        listed.strike_e18,
        listed.expiry_s,
    ) == (option, weth, 2, strike, expiry)
    assert deposit == CollateralMove(
        trader, usdc, 25_000 * 10**6, deposit.ts_ms, deposit.seq, False
    )
    assert isinstance(trade, Fill) and (
        trade.account,
        trade.instrument,
        trade.size_e18,
        trade.price_e18,
        trade.liquidator,
    ) == (trader, option, -3 * 10**18, 155 * 10**18, None)
    assert isinstance(liquidated, Fill) and (liquidated.liquidator, liquidated.size_e18) == (
        deployed.liquidator,
        10**18,
    )
    assert isinstance(withdraw, CollateralMove) and withdraw.amount == -5_000 * 10**6
    seqs = [e.seq for e in decoded if not isinstance(e, Rejected) and e is not None]
    assert seqs == sorted(seqs) and all(e.ts_ms > 0 for e in decoded if isinstance(e, Fill))


def test_venue_log_with_wrong_topic_count_is_rejected_with_its_coordinates() -> None:
    log = {"address": "0x" + "11" * 20, "topics": [abi.VENUE_DEPOSIT], "data": "0x" + "00" * 32,
           "blockNumber": "0x1", "logIndex": "0x0", "blockTimestamp": "0x5"}  # fmt: skip
    msg = RawMessage("chain.logs", 2, 7, 0, None, json.dumps(log).encode())
    rejected = decode_venue(msg, "0x" + "11" * 20)
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("bad_topics") and (rejected.partition, rejected.offset) == (
        2,
        7,
    )
    assert decode_venue(msg, "0x" + "33" * 20) is None
