"""The executor's view of the chain over JSON-RPC (any node; Anvil here).

Every call goes through :class:`connectors.chain_source.Rpc`; a node that cannot be reached
raises (``OSError`` or a ``requests`` error, which the executor's loop backs off on), and a
node's error answer raises ``RpcError``, except where a method below says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from connectors.chain_source import Rpc, RpcError
from connectors.uniswap import read_v2_state, read_v3_state
from operators.fees import FeeHistory, parse_fee_history
from operators.pool_state import PoolState

ERROR_SELECTOR = "08c379a0"
"""``Error(string)``: the ABI form of a ``require`` message."""
PANIC_SELECTOR = "4e487b71"
"""``Panic(uint256)``: an assertion, an overflow, a division by zero."""


class Head(msgspec.Struct, frozen=True, kw_only=True):
    """A block header's number, hash and timestamp (Unix s)."""

    number: int
    hash: str
    timestamp: int


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction receipt: where it landed, whether it ran, what it cost (wei), and its
    logs as the node sent them (``eth_getTransactionReceipt`` JSON)."""

    block_number: int
    block_hash: str
    status: int
    gas_used: int
    effective_gas_price: int
    logs: tuple[Any, ...] = ()


def revert_reason(error: Any) -> str:
    """The reason in a node's error answer to ``eth_call``/``eth_estimateGas``: the
    ``require`` message, ``panic 0x..``, the raw error data, or the node's message."""
    data = error.get("data") if isinstance(error, dict) else None
    if isinstance(data, dict):  # some nodes nest it
        data = data.get("data")
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    if not isinstance(data, str) or not data.startswith("0x") or len(data) < 10:
        return message
    selector = data[2:10]
    try:
        body = bytes.fromhex(data[10:])
    except ValueError:
        return f"{message} (data {data[:138]})"
    if selector == ERROR_SELECTOR and len(body) >= 64:
        length = int.from_bytes(body[32:64])
        return body[64 : 64 + length].decode("utf-8", "replace")
    if selector == PANIC_SELECTOR and len(body) >= 32:
        return f"panic {int.from_bytes(body[:32]):#x}"
    return f"{message} (data {data[:138]})"


class ChainClient:
    """The calls the executor makes, with typed answers."""

    def __init__(self, url: str, timeout_s: float):
        self.rpc = Rpc(url, timeout_s)

    def chain_id(self) -> int:
        return self.rpc.chain_id()

    def head(self) -> Head:
        return self._block("latest")

    def block_hash(self, number: int) -> str | None:
        """The canonical hash at height ``number``, or None past the head."""
        block = self.rpc.call("eth_getBlockByNumber", [hex(number), False])
        return None if block is None else str(block["hash"])

    def finalized(self) -> int:
        """The ``finalized`` block's number; -1 when the node does not know the tag."""
        try:
            block = self.rpc.call("eth_getBlockByNumber", ["finalized", False])
        except RpcError:
            return -1
        return -1 if block is None else int(block["number"], 16)

    def nonce(self, address: str, tag: str) -> int:
        """``eth_getTransactionCount`` of ``address`` at ``tag`` (``latest``/``pending``)."""
        return int(self.rpc.call("eth_getTransactionCount", [address, tag]), 16)

    def fee_history(self, blocks: int, percentile: float) -> FeeHistory:
        return parse_fee_history(
            self.rpc.call("eth_feeHistory", [hex(blocks), "latest", [percentile]])
        )

    def simulate(self, sender: str, to: str, data: str, gas: int) -> str | None:
        """``eth_call`` at the head: None if it runs, else the revert reason."""
        call = {"from": sender, "to": to, "data": data, "gas": hex(gas)}
        try:
            self.rpc.call("eth_call", [call, "latest"])
        except RpcError as exc:
            return revert_reason(exc.error)
        return None

    def replay_reason(self, sender: str, to: str, data: str, gas: int, block: int) -> str:
        """Why a transaction that reverted in ``block`` reverted: its call replayed on the
        state after that block (which holds whatever ran ahead of it there; its own revert
        changed nothing), else on the state before it."""
        call = {"from": sender, "to": to, "data": data, "gas": hex(gas)}
        for at in (block, block - 1):
            try:
                self.rpc.call("eth_call", [call, hex(max(at, 0))])
            except RpcError as exc:
                return revert_reason(exc.error)
        return "reverted on chain (status 0); its call does not revert when replayed"

    def send_raw(self, raw: bytes) -> str | None:
        """Broadcast signed bytes; None when the node took them (or already had them),
        else its refusal (e.g. ``nonce too low`` once they were mined)."""
        try:
            self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        except RpcError as exc:
            message = (
                str(exc.error.get("message", exc.error))
                if isinstance(exc.error, dict)
                else str(exc.error)
            )
            return None if "already known" in message.lower() else message
        return None

    def knows(self, tx_hash: str) -> bool:
        """Whether the node holds the transaction (pending or mined)."""
        return self.rpc.call("eth_getTransactionByHash", [tx_hash]) is not None

    def receipt(self, tx_hash: str) -> Receipt | None:
        r = self.rpc.call("eth_getTransactionReceipt", [tx_hash])
        if r is None or r.get("blockNumber") is None:
            return None
        return Receipt(
            block_number=int(r["blockNumber"], 16),
            block_hash=str(r["blockHash"]),
            status=int(r["status"], 16),
            gas_used=int(r["gasUsed"], 16),
            effective_gas_price=int(r.get("effectiveGasPrice") or "0x0", 16),
            logs=tuple(r.get("logs") or ()),
        )

    def pool_states(self, pools: Sequence[tuple[str, str]], block: int) -> list[PoolState]:
        """The state of each ``(address, kind)`` pool (``uniswap_v2``/``uniswap_v3``) at
        ``block``, read with batched ``eth_call`` s (``connectors.uniswap``)."""
        return [
            read_v3_state(self.rpc.url, address, block=block)
            if kind == "uniswap_v3"
            else read_v2_state(self.rpc.url, address, block=block)
            for address, kind in pools
        ]

    def _block(self, tag: str) -> Head:
        block = self.rpc.call("eth_getBlockByNumber", [tag, False])
        return Head(
            number=int(block["number"], 16),
            hash=str(block["hash"]),
            timestamp=int(block["timestamp"], 16),
        )
