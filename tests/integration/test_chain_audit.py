"""The exactly-once audit read from the real chain (Anvil): a dev key's venue trades, one
repeating an order id, and the audit finds exactly that duplicate."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3

from connectors.anvil import DevNode, receipt, rpc, send_transaction
from connectors.chain_audit import signer_txs, venue_order_ids
from connectors.chain_source import Rpc
from connectors.contracts import Deployed, bind, deploy, instrument_id
from operators.exactly_once import audit
from operators.risk import order_id

GAS = 200_000


class _NoLogTimes(Rpc):
    """The real node, answering ``eth_getLogs`` as a node that leaves ``blockTimestamp`` out
    of its logs does (a recent addition that Anvil sends): the times come from headers."""

    def logs(self, start: int, end: int, addresses: list[str]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in log.items() if k != "blockTimestamp"}
            for log in super().logs(start, end, addresses)
        ]


@pytest.fixture(scope="module")
def deployed(devnode: DevNode) -> Deployed:
    return deploy(devnode.rpc_url)


def test_audit_of_a_dev_keys_trades_reports_exactly_the_repeated_order_id(
    devnode: DevNode, deployed: Deployed
) -> None:
    url = devnode.rpc_url
    venue = bind(Web3(), "MarginVenue", deployed.venue)
    weth = deployed.tokens["WETH"]
    perp = instrument_id(weth, 1, 0, 0)
    listing = venue.encode_abi("list", args=[Web3.to_checksum_address(weth), 1, 0, 0])
    assert receipt(url, send_transaction(url, deployed.deployer, deployed.venue, listing,
                                         gas=GAS)).ok  # fmt: skip
    signer = rpc(url, "eth_accounts")[7].lower()  # a dev key no other test sends from
    first_nonce = int(rpc(url, "eth_getTransactionCount", [signer, "latest"]), 16)
    ids = [order_id("hedge", signer, 1_900_000_000_000 + i, perp) for i in range(2)]
    unlisted = "0x" + "99" * 32

    def trade(instrument: str, oid: str) -> str:
        data = venue.encode_abi("trade", args=[instrument, 10**18, 2_000 * 10**18,
                                               bytes.fromhex(oid[2:])])  # fmt: skip
        return send_transaction(url, signer, deployed.venue, data, gas=GAS)

    sent = [
        trade(perp, ids[0]),
        trade(perp, ids[1]),
        trade(unlisted, ids[1]),  # reverts: "not listed"; it spends a nonce, executes nothing
        send_transaction(url, signer, signer, "0x", gas=21_000),  # a cancel: 0-value to self
        trade(perp, ids[0]),  # the same order again
    ]
    mined = [receipt(url, tx_hash) for tx_hash in sent]
    first, last = mined[0].block, mined[-1].block
    chain = Rpc(url, timeout_s=30.0)

    txs = signer_txs(chain, signer, deployed.venue, first, last)

    assert [tx.hash for tx in txs] == [h.lower() for h in sent]
    assert [tx.status for tx in txs] == [1, 1, 0, 1, 1]
    assert [tx.order_id for tx in txs] == [ids[0], ids[1], None, None, ids[0]]
    assert [tx.nonce for tx in txs] == list(range(first_nonce, first_nonce + 5))
    assert [tx.block_number for tx in txs] == [m.block for m in mined]
    assert venue_order_ids(chain, deployed.venue, first, last) == [ids[0], ids[1], ids[0]]
    assert venue_order_ids(_NoLogTimes(url, 30.0), deployed.venue, first, last) == [
        ids[0], ids[1], ids[0]
    ]  # fmt: skip
    assert audit(txs, ids, signer, first_nonce) == [
        f"duplicate: order {ids[0]} executed 2 times, in {txs[0].hash} (block "
        f"{txs[0].block_number}), {txs[4].hash} (block {txs[4].block_number})"
    ]
    # and the audit is not blind: the history less its repeat is clean, less a middle
    # transaction has a gap
    assert audit(txs[:4], ids, signer, first_nonce) == []
    assert audit([*txs[:2], *txs[3:4]], ids, signer, first_nonce) == [
        f"nonce: {signer} skipped nonces {first_nonce + 2} between {first_nonce} and "
        f"{first_nonce + 3}"
    ]
