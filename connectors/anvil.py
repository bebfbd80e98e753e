"""The dev chain: Anvil, from the npm package ``@foundry-rs/anvil-linux-amd64``, on loopback.

``make install`` puts the binary under ``node_modules/`` (``npm ci``). Tests,
``hedgeflow devchain`` and benchmarks start it through :class:`DevNode`::

    with DevNode(state_path=Path("out/chain/state.json")) as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))

The node has the accounts of Anvil's default mnemonic (account 0 is
``0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266``); how its process is started, watched and
stopped is ``connectors.local_server``'s. With
``state_path``, Anvil writes its whole chain (blocks, receipts, logs, accounts) there on a
clean stop and loads it at the next start, so a stopped node starts again with its chain.

The JSON-RPC helpers :func:`rpc`, :func:`send_transaction`, :func:`receipt`, :func:`mine`,
:func:`set_automine` and :func:`reorg` work on any Anvil URL.
"""

from __future__ import annotations

import http.client
import shutil
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from connectors.local_server import LocalServer

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
"""Anvil's default mnemonic: its accounts and keys are public, for dev chains only."""
CHAIN_ID = 31337
"""Anvil's default chain id, passed explicitly."""
ANVIL_BIN = (
    Path(__file__).resolve().parents[1] / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
)
"""Where ``npm ci`` at the repository root puts the Anvil binary."""


class RpcError(RuntimeError):
    """The node answered a JSON-RPC request with an error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method} failed: {message} (code {code})")
        self.method = method
        self.code = code


class _RpcError(msgspec.Struct, frozen=True):
    code: int
    message: str


class _RpcResponse(msgspec.Struct, frozen=True):
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: _RpcError | None = None


_response_decoder = msgspec.json.Decoder(_RpcResponse)


def rpc(rpc_url: str, method: str, params: Sequence[Any] = (), *, timeout_s: float = 60.0) -> Any:
    """One JSON-RPC call over HTTP; the decoded ``result``, or ``RpcError``.

    Quantities stay as the node sends them (``0x`` hex strings). ``timeout_s`` bounds the
    whole request, in seconds. Example: ``int(rpc(url, "eth_blockNumber"), 16)``.
    """
    return msgspec.json.decode(_call(rpc_url, method, params, timeout_s))


class Receipt(msgspec.Struct, frozen=True):
    """The fields of a transaction receipt that say where it landed and whether it ran."""

    status: str
    blockNumber: str
    contractAddress: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "0x1"

    @property
    def block(self) -> int:
        return int(self.blockNumber, 16)


def receipt(rpc_url: str, tx_hash: str, *, timeout_s: float = 30.0) -> Receipt:
    """The receipt of a transaction, once mined (its logs are skipped, however many).

    Waits up to ``timeout_s`` seconds: under automine, Anvil answers
    ``eth_sendTransaction`` just before it mines the block.
    """
    deadline = time.monotonic() + timeout_s
    while (raw := _call(rpc_url, "eth_getTransactionReceipt", [tx_hash], 60.0)) == b"null":
        if time.monotonic() > deadline:
            msg = f"transaction {tx_hash} was not mined within {timeout_s} s"
            raise RuntimeError(msg)
        time.sleep(0.005)
    return msgspec.json.decode(raw, type=Receipt)


def _call(rpc_url: str, method: str, params: Sequence[Any], timeout_s: float) -> bytes:
    """The raw JSON ``result`` of a JSON-RPC call."""
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(
        rpc_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = _response_decoder.decode(response.read())
    if answer.error is not None:
        raise RpcError(method, answer.error.code, answer.error.message)
    return bytes(answer.result)


def mine(rpc_url: str, blocks: int = 1, *, timestamp: int | None = None) -> None:
    """Mine ``blocks`` blocks now (``evm_mine``), pending transactions in the first.

    With ``timestamp`` (Unix s) the blocks carry it, and the node's clock runs on from it
    (Anvil accepts a timestamp equal to the parent's, not an earlier one).
    """
    if blocks < 1:
        msg = f"blocks must be >= 1; got {blocks!r}"
        raise ValueError(msg)
    rpc(rpc_url, "evm_mine", [{"timestamp": timestamp, "blocks": blocks}])


def set_automine(rpc_url: str, enabled: bool) -> None:
    """Mine each transaction in its own block as it arrives (Anvil's default), or not.

    With automine off, transactions wait in the pool until :func:`mine`.
    """
    rpc(rpc_url, "evm_setAutomine", [enabled])


def reorg(
    rpc_url: str, depth: int, replacements: Sequence[tuple[dict[str, Any], int]] = ()
) -> None:
    """Replace the last ``depth`` blocks with new ones (``anvil_reorg``).

    The head keeps its number; every replaced block gets a new hash, and the transactions
    and logs of the orphaned blocks are gone (``eth_getLogs`` no longer returns them; they
    are not put back in the pool). ``replacements`` are ``(transaction, offset)`` pairs to
    include in the new blocks: ``transaction`` as for ``eth_sendTransaction`` (``from``,
    ``to``, ``data``; Anvil fills in the nonce), ``offset`` the index in ``0..depth-1`` of
    the new block that holds it, counted from the oldest replaced block.
    """
    if depth < 1:
        msg = f"depth must be >= 1; got {depth!r}"
        raise ValueError(msg)
    for _, offset in replacements:
        if not 0 <= offset < depth:
            msg = f"a replacement's offset must be in 0..{depth - 1}; got {offset!r}"
            raise ValueError(msg)
    rpc(rpc_url, "anvil_reorg", [depth, [[tx, offset] for tx, offset in replacements]])


def send_transaction(rpc_url: str, sender: str, to: str | None, data: str, *, gas: int) -> str:
    """Send a transaction from an unlocked dev account (``eth_sendTransaction``); its hash.

    ``to`` is None to create a contract (``data`` is then its init code). ``gas`` is the
    gas limit, given so that the node does not estimate it. Under automine the transaction
    is mined at once, though possibly just after this returns (:func:`receipt` waits for
    it); otherwise it waits in the pool for :func:`mine`.
    """
    tx = {"from": sender, "data": data, "gas": hex(gas)}
    if to is not None:
        tx["to"] = to
    tx_hash: str = rpc(rpc_url, "eth_sendTransaction", [tx])
    return tx_hash


def anvil_binary() -> Path:
    """The Anvil binary: the one ``npm ci`` installed, else ``anvil`` on ``PATH``."""
    if ANVIL_BIN.is_file():
        return ANVIL_BIN
    found = shutil.which("anvil")
    if found is None:
        msg = (
            f"Anvil not found: expected {ANVIL_BIN} (run `make install`, which runs `npm ci`) "
            "or `anvil` on PATH"
        )
        raise FileNotFoundError(msg)
    return Path(found)


class DevNode(LocalServer):
    """An Anvil node on ``127.0.0.1``; a context manager.

    ``accounts`` dev accounts are unlocked and funded with 10,000 ETH each, from
    :data:`ANVIL_MNEMONIC`. ``state_path`` (a JSON file) keeps the chain across a stop and
    a start; without it the chain lives in memory only. ``gas_limit`` sets the block gas
    limit (Anvil's default: 30M). ``genesis_timestamp`` (Unix s) fixes the genesis block's
    time, so that a run that also mines at set timestamps builds the same chain, hashes
    included, every time (default: the clock). ``log_path`` receives Anvil's output,
    appended to at each start (default: a new temp file, kept after stop).
    ``start_timeout_s`` bounds the wait, in seconds, for ``eth_chainId`` to answer. The
    port is chosen free at the first start and kept: :meth:`start` after :meth:`stop`
    serves the same :attr:`rpc_url`. On SIGTERM Anvil writes its chain to ``state_path``
    before it exits; a large chain takes a while (measured: 0.6 s and 256 MB for 200k
    logs), hence a stop waits up to 30 s. Killed otherwise, the node loses what it had not
    written.
    """

    name = "Anvil"

    def __init__(
        self,
        *,
        accounts: int = 10,
        chain_id: int = CHAIN_ID,
        state_path: Path | None = None,
        gas_limit: int | None = None,
        genesis_timestamp: int | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 20.0,
    ) -> None:
        if accounts < 1:
            msg = f"accounts must be >= 1; got {accounts!r}"
            raise ValueError(msg)
        super().__init__(log_path=log_path, start_timeout_s=start_timeout_s, stop_timeout_s=30.0)
        self.accounts = accounts
        self.chain_id = chain_id
        self.state_path = state_path
        self.gas_limit = gas_limit
        self.genesis_timestamp = genesis_timestamp

    @property
    def rpc_url(self) -> str:
        """``"http://127.0.0.1:PORT"``; the same URL across a stop and a start."""
        if self._port is None:
            msg = "the node has never started; expected start() before rpc_url"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._port}"

    def command(self, port: int) -> list[str]:
        command = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--chain-id", str(self.chain_id), "--accounts", str(self.accounts)]
        command += ["--mnemonic", ANVIL_MNEMONIC, "--color", "never"]
        if self.gas_limit is not None:
            command += ["--gas-limit", str(self.gas_limit)]
        if self.genesis_timestamp is not None:
            command += ["--timestamp", str(self.genesis_timestamp)]
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            command += ["--state", str(self.state_path)]
        return command

    def ready(self, port: int) -> bool:
        url = f"http://127.0.0.1:{port}"
        chain_id = _chain_id(url)
        if chain_id is not None and chain_id != self.chain_id:
            msg = (
                f"the node on {url} answers chain id {chain_id}; expected {self.chain_id} "
                "(is another node on that port?)"
            )
            raise RuntimeError(msg)
        return chain_id is not None


def _chain_id(url: str) -> int | None:
    """The chain id the node at ``url`` answers, or None while it does not answer."""
    try:
        return int(rpc(url, "eth_chainId", timeout_s=1.0), 16)
    except (OSError, http.client.HTTPException, RpcError, msgspec.DecodeError):
        return None
