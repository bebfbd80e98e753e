"""The chain as the exactly-once checker reads it (``operators.exactly_once``): a signer's
transactions with the order ids of their venue events and of SplitSwap's ``Routed`` events
(a routed ``dex_hedge``), and the venue's order ids.

Everything comes from plain JSON-RPC (``connectors.chain_source.Rpc``): a block with its
transactions (``eth_getBlockByNumber(n, true)``), each of the signer's receipts
(``eth_getTransactionReceipt``: status and logs) and the venue's logs (``eth_getLogs``).
Venue logs are decoded by the risk stage's own decoder (``operators.venue``), so the audit
reads order ids exactly as the risk stage does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from connectors.chain_source import Rpc
from operators.abi import quantity
from operators.chain import ChainError
from operators.exactly_once import ChainTx
from operators.model import RawMessage, Rejected
from operators.swap_calls import ROUTED
from operators.venue import Fill, decode_venue


def signer_txs(
    rpc: Rpc, signer: str, venue: str, from_block: int, to_block: int, split_swap: str = ""
) -> list[ChainTx]:
    """The transactions ``signer`` sent in blocks ``from_block..to_block`` (inclusive), in
    chain order, each with the order ids of the ``venue`` events and the ``split_swap``
    ``Routed`` events its receipt holds.

    Addresses are lower-case hex. Raises ``ChainError`` for a missing block or receipt and
    for a venue or ``Routed`` log it cannot read (the audit must not skip what it cannot read).
    """
    signer, venue, split_swap = signer.lower(), venue.lower(), split_swap.lower()
    out = []
    for number in range(from_block, to_block + 1):
        block = rpc.call("eth_getBlockByNumber", [hex(number), True])
        if block is None:
            raise ChainError(f"block {number} not found")
        for tx in block["transactions"]:
            if str(tx["from"]).lower() != signer:
                continue
            receipt = rpc.call("eth_getTransactionReceipt", [tx["hash"]])
            if receipt is None:
                raise ChainError(f"no receipt for {tx['hash']} of block {number}")
            ids = [
                order_id
                for log in receipt["logs"]
                if (order_id := _order_id(log, venue, block["timestamp"])) is not None
                or (order_id := _routed_id(log, split_swap)) is not None
            ]
            out.append(
                ChainTx(
                    hash=str(tx["hash"]).lower(),
                    sender=signer,
                    nonce=quantity(tx["nonce"], "nonce"),
                    block_number=number,
                    status=quantity(receipt["status"], "status"),
                    order_id=ids[0] if ids else None,
                    more_order_ids=tuple(ids[1:]),
                )
            )
    return out


def venue_order_ids(rpc: Rpc, venue: str, from_block: int, to_block: int) -> list[str]:
    """The order ids of the ``venue``'s ``Trade`` and ``Liquidated`` events in blocks
    ``from_block..to_block``, in chain order, each as often as it was emitted (events
    without one are left out). One ``eth_getLogs`` call: keep the range within what the
    node serves."""
    venue = venue.lower()
    timestamps: dict[str, Any] = {}
    ids = []
    for log in rpc.logs(from_block, to_block, [venue]):
        ts = log.get("blockTimestamp")
        if ts is None:
            number = log["blockNumber"]
            if number not in timestamps:
                timestamps[number] = rpc.header(quantity(number, "blockNumber")).ts
            ts = timestamps[number]
        if (order_id := _order_id(log, venue, ts)) is not None:
            ids.append(order_id)
    return ids


def _order_id(log: dict[str, Any], venue: str, block_ts: Any) -> str | None:
    """The order id of a venue ``Trade`` or ``Liquidated`` log; None for another log."""
    if str(log.get("address", "")).lower() != venue:
        return None
    value = msgspec.json.encode({"blockTimestamp": block_ts, **log})
    event = decode_venue(RawMessage("chain.logs", 0, 0, 0, venue.encode(), value), venue)
    if isinstance(event, Rejected):
        raise ChainError(f"venue log of {log.get('transactionHash')} rejected: {event.reason}")
    return event.order_id if isinstance(event, Fill) else None


def _routed_id(log: dict[str, Any], split_swap: str) -> str | None:
    """The order id of a SplitSwap ``Routed`` log (its first indexed topic); None for
    another log."""
    if not split_swap or str(log.get("address", "")).lower() != split_swap:
        return None
    topics = log.get("topics") or []
    if not topics or str(topics[0]).lower() != ROUTED:
        return None
    if len(topics) != 3 or len(str(topics[1])) != 66:
        raise ChainError(f"Routed log of {log.get('transactionHash')} has topics {topics!r:.200}")
    return str(topics[1]).lower()
