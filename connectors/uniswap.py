"""Real Uniswap V2 and V3 on a dev chain: deployment, state read with ``eth_call``, swaps.

The factories, pairs and pools are the mainnet bytecode as the npm packages ship it
(``@uniswap/v2-core`` 1.0.1: ``build/UniswapV2Factory.json``, ``UniswapV2Pair.json``;
``@uniswap/v3-core`` 1.0.1: ``artifacts/contracts/UniswapV3Factory.sol/...``), deployed
unchanged. Two contracts of our own go with them (``infra/contracts/``): ``TestERC20``,
the WETH and USDC of the dev chain, and ``UniswapCaller``, which adds liquidity and swaps
for an account and pays the pools in their callbacks (a V3 pool takes its tokens in
``uniswapV3MintCallback``/``uniswapV3SwapCallback`` on ``msg.sender``).

:func:`deploy_uniswap` puts on the chain a WETH/USDC V2 pair and two V3 pools (fees 500
and 3000) around one ETH price, the V3 liquidity spread over several tick ranges
(:data:`V3_POSITIONS`). :func:`read_v2_state` and :func:`read_v3_state` read a pool's
state at one block with batched ``eth_call`` s (a JSON-RPC batch, on any node): V2
``getReserves``; V3 ``slot0``, ``liquidity``, ``fee``, ``tickSpacing`` and every
initialized tick's ``liquidityNet``, found through ``tickBitmap``. :func:`v3_swap` and
:func:`v2_swap` trade through the caller and return what the pool's ``Swap`` log says it
took and paid. For load tests, :func:`load_swaps` makes many real swaps per transaction
through ``SwapLoad`` (:func:`deploy_swap_load`), one ``Swap`` log each.

Units: token amounts are integers in smallest units; prices are ETH in USD (USDC), whole
tokens; ``fee`` is in hundredths of a bip (pips), as in the pools.
"""

from __future__ import annotations

import functools
import math
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from web3 import Web3
from web3.types import Nonce
from web3.utils.address import get_create_address

from connectors.anvil import RpcError, receipt, rpc, send_transaction
from connectors.artifacts import DEPLOY_GAS, Artifact, deploy_artifact, load_artifact
from operators import abi
from operators.pool_math import sqrt_price_x96, v3_liquidity
from operators.pool_state import V2PoolState, V3PoolState
from operators.uniswap_math import MAX_TICK, MIN_TICK, default_price_limit, tick_at_sqrt_ratio

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
"""Where ``npm ci`` at the repository root puts the Uniswap packages."""
_NPM_ARTIFACTS = {
    "UniswapV2Factory": "@uniswap/v2-core/build/UniswapV2Factory.json",
    "UniswapV2Pair": "@uniswap/v2-core/build/UniswapV2Pair.json",
    "UniswapV3Factory": (
        "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json"
    ),
    "UniswapV3Pool": "@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
}

START_PRICE = 3000.0
"""ETH in USD at which the pools are deployed."""
V2_DEPTH_USD = 12e6
"""The V2 pair's depth: twice its USDC reserve, USD (6M USDC and 2,000 WETH at 3,000)."""
FULL_RANGE = (0.0, math.inf)
"""A position over every usable tick."""
V3_POSITIONS: dict[int, tuple[tuple[float, float, float], ...]] = {
    500: (
        (2850.0, 3150.0, 40e6),
        (2700.0, 3300.0, 20e6),
        (2400.0, 3600.0, 10e6),
        (1500.0, 6000.0, 5e6),
        *((3000.0 * (1 - 0.01 * (i + 1)), 3000.0 * (1 - 0.01 * i), 8e6) for i in range(1, 9)),
        *((3000.0 * (1 + 0.01 * i), 3000.0 * (1 + 0.01 * (i + 1)), 8e6) for i in range(1, 9)),
    ),
    3000: (
        (*FULL_RANGE, 10e6),
        (2400.0, 3750.0, 15e6),
        (2000.0, 4500.0, 8e6),
        *((3000.0 * (1 - 0.02 * (i + 1)), 3000.0 * (1 - 0.02 * i), 6e6) for i in range(1, 7)),
        *((3000.0 * (1 + 0.02 * i), 3000.0 * (1 + 0.02 * (i + 1)), 6e6) for i in range(1, 7)),
    ),
}
"""Per V3 fee: the positions minted, as (low, high, depth): the ETH price range in USD and
the liquidity, given as the depth (twice the USDC-side virtual reserve, USD) that it has at
:data:`START_PRICE` (``operators.pool_math.v3_liquidity``). Each range is widened to the
pool's tick spacing. Wide positions, a narrow one at the price, and a ladder of adjacent
bands on both sides, so that a large swap crosses many initialized ticks."""
TOKENS = (("USDC", "USD Coin", 6), ("WETH", "Wrapped Ether", 18))
"""(symbol, name, decimals) of the test tokens; USDC gets the lower address, so it is
token0 of every pool, as on mainnet."""
TOKEN_SUPPLY = {"USDC": 10**12 * 10**6, "WETH": 10**9 * 10**18}
"""What the deployer mints itself of each token, smallest units."""

_CALL_GAS = 8_000_000
"""Gas limit of a mint or a swap (measured: 665k for 3,000 ETH across the fee-3000 pool's
ticks; 2.7M for a swap past the fee-500 pool's last tick, walking every bitmap word to the
end of the price range)."""
_V2_SWAP = next(topic for topic, sig in abi.V2_PAIR_EVENTS.items() if sig.startswith("Swap("))


def uniswap_artifact(name: str, node_modules: Path = NODE_MODULES) -> Artifact:
    """The artifact of a Uniswap contract (``"UniswapV3Pool"``, ...) from its npm package."""
    if name not in _NPM_ARTIFACTS:
        msg = f"no Uniswap artifact named {name!r}; expected one of {sorted(_NPM_ARTIFACTS)}"
        raise ValueError(msg)
    path = node_modules / _NPM_ARTIFACTS[name]
    try:
        raw = msgspec.json.decode(path.read_bytes(), type=_NpmArtifact)
    except FileNotFoundError:
        msg = f"no artifact for {name}: expected {path} (run `make install`, which runs `npm ci`)"
        raise FileNotFoundError(msg) from None
    bytecode = raw.bytecode if raw.bytecode.startswith("0x") else "0x" + raw.bytecode
    return Artifact(contractName=name, abi=raw.abi, bytecode=bytecode)


class _NpmArtifact(msgspec.Struct, frozen=True):
    abi: list[dict[str, Any]]
    bytecode: str


@functools.cache
def _contract(name: str) -> Any:
    """A web3 contract object (for encoding calls) of a Uniswap or an own contract."""
    artifact = uniswap_artifact(name) if name in _NPM_ARTIFACTS else load_artifact(name)
    return Web3().eth.contract(abi=artifact.abi)


def _encode(name: str, fn: str, *args: Any) -> str:
    """The calldata of ``fn(*args)`` of contract ``name``; string arguments are addresses."""
    checked = [Web3.to_checksum_address(a) if isinstance(a, str) else a for a in args]
    data: str = _contract(name).encode_abi(fn, checked)
    return data


class UniswapDeployed(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`deploy_uniswap` put on the chain; addresses are lower-case hex.

    ``tokens`` maps a symbol (``"WETH"``, ``"USDC"``) to its address; ``v3_pools`` a fee
    (pips) to its pool. ``block`` is the last block of the deployment: the pools' state
    at it is as deployed.
    """

    deployer: str
    tokens: dict[str, str]
    decimals: dict[str, int]
    caller: str
    v2_factory: str
    v3_factory: str
    v2_pair: str
    v3_pools: dict[int, str]
    block: int

    @property
    def pools(self) -> list[str]:
        """Every pool: the V2 pair, then the V3 pools by fee."""
        return [self.v2_pair, *(self.v3_pools[fee] for fee in sorted(self.v3_pools))]


@dataclass(frozen=True)
class _Orientation:
    """``operators.pool_math.Orientation`` of a WETH/USDC pool, ETH the base."""

    decimals0: int
    decimals1: int
    base_is_token0: bool


def deploy_uniswap(
    rpc_url: str, deployer: str, *, price: float = START_PRICE, fees: tuple[int, ...] = (500, 3000)
) -> UniswapDeployed:
    """Deploy the tokens, the V2 and V3 factories, the caller, a WETH/USDC pair and one V3
    pool per fee at ``price`` (ETH in USD), and add their liquidity; what was deployed.

    ``deployer`` is an unlocked dev account; it holds the tokens and the liquidity. Each
    transaction is mined before the next is sent (the node's automine must be on). The V2
    pair gets :data:`V2_DEPTH_USD`, each V3 pool the positions :data:`V3_POSITIONS` lists
    for its fee (scaled to ``price``).
    """
    for fee in fees:
        if fee not in V3_POSITIONS:
            msg = f"no V3 positions for fee {fee!r}; expected one of {sorted(V3_POSITIONS)}"
            raise ValueError(msg)
    deployer = deployer.lower()
    tokens = _deploy_tokens(rpc_url, deployer)
    decimals = {symbol: d for symbol, _, d in TOKENS}
    caller = deploy_artifact(rpc_url, deployer, load_artifact("UniswapCaller"), [])
    v2_factory = deploy_artifact(
        rpc_url, deployer, uniswap_artifact("UniswapV2Factory"), [_cs(deployer)]
    )
    v3_factory = deploy_artifact(rpc_url, deployer, uniswap_artifact("UniswapV3Factory"), [])
    for symbol, token in tokens.items():
        _transact(
            rpc_url, deployer, token, _encode("TestERC20", "mint", deployer, TOKEN_SUPPLY[symbol])
        )
        _transact(rpc_url, deployer, token, _encode("TestERC20", "approve", caller, 2**256 - 1))
    token0, token1 = sorted(tokens.values())
    create_pair = _encode("UniswapV2Factory", "createPair", token0, token1)
    _transact(rpc_url, deployer, v2_factory, create_pair, DEPLOY_GAS)
    v2_pair = _address(
        _call(rpc_url, v2_factory, _encode("UniswapV2Factory", "getPair", token0, token1))
    )
    v3_pools: dict[int, str] = {}
    for fee in fees:
        create_pool = _encode("UniswapV3Factory", "createPool", token0, token1, fee)
        _transact(rpc_url, deployer, v3_factory, create_pool, DEPLOY_GAS)
        get_pool = _encode("UniswapV3Factory", "getPool", token0, token1, fee)
        v3_pools[fee] = _address(_call(rpc_url, v3_factory, get_pool))
    weth_is_token0 = tokens["WETH"] == token0
    orientation = _Orientation(
        decimals0=decimals["WETH" if weth_is_token0 else "USDC"],
        decimals1=decimals["USDC" if weth_is_token0 else "WETH"],
        base_is_token0=weth_is_token0,
    )
    weth = round(V2_DEPTH_USD / 2 / price * 10 ** decimals["WETH"])
    usdc = round(V2_DEPTH_USD / 2 * 10 ** decimals["USDC"])
    amount0, amount1 = (weth, usdc) if weth_is_token0 else (usdc, weth)
    _transact(
        rpc_url, deployer, caller, _encode("UniswapCaller", "v2Mint", v2_pair, amount0, amount1)
    )
    sqrt_price = sqrt_price_x96(price, orientation)
    scale = price / START_PRICE
    block = 0
    for fee, pool in v3_pools.items():
        _transact(rpc_url, deployer, pool, _encode("UniswapV3Pool", "initialize", sqrt_price))
        spacing = _word(_call(rpc_url, pool, _encode("UniswapV3Pool", "tickSpacing")), signed=True)
        for low, high, depth in V3_POSITIONS[fee]:
            lower, upper = _tick_range(low * scale, high * scale, spacing, orientation)
            liquidity = v3_liquidity(depth * scale, sqrt_price, orientation)
            mint = _encode("UniswapCaller", "v3Mint", pool, lower, upper, liquidity)
            block = _transact(rpc_url, deployer, caller, mint)
    return UniswapDeployed(
        deployer=deployer, tokens=tokens, decimals=decimals, caller=caller,
        v2_factory=v2_factory, v3_factory=v3_factory, v2_pair=v2_pair, v3_pools=v3_pools,
        block=block,
    )  # fmt: skip


def _deploy_tokens(rpc_url: str, deployer: str) -> dict[str, str]:
    """Deploy the :data:`TOKENS` in their order at the next two addresses of ``deployer``,
    the lower address first, so that the first token (USDC) is every pool's token0."""
    nonce = int(rpc(rpc_url, "eth_getTransactionCount", [deployer, "pending"]), 16)
    nonces = sorted(
        range(nonce, nonce + len(TOKENS)),
        key=lambda n: get_create_address(Web3.to_checksum_address(deployer), Nonce(n)).lower(),
    )
    by_nonce = dict(zip(nonces, TOKENS, strict=True))
    tokens: dict[str, str] = {}
    artifact = load_artifact("TestERC20")
    for n in range(nonce, nonce + len(TOKENS)):
        symbol, name, decimals = by_nonce[n]
        tokens[symbol] = deploy_artifact(rpc_url, deployer, artifact, [name, symbol, decimals])
    return tokens


def _tick_range(low: float, high: float, spacing: int, pool: _Orientation) -> tuple[int, int]:
    """The ticks (lower, upper) of the ETH price range [low, high] USD, widened to
    multiples of ``spacing``; ``high = inf`` or ``low = 0`` reach the usable end."""
    ends = [
        None if price <= 0 or math.isinf(price) else tick_at_sqrt_ratio(sqrt_price_x96(price, pool))
        for price in (low, high)
    ]
    usable_min = -(-MIN_TICK // spacing) * spacing
    usable_max = MAX_TICK // spacing * spacing
    # ETH up is tick up when WETH is token0, tick down otherwise.
    lo_tick, hi_tick = ends if pool.base_is_token0 else ends[::-1]
    lower = usable_min if lo_tick is None else lo_tick // spacing * spacing
    upper = usable_max if hi_tick is None else -(-hi_tick // spacing) * spacing
    return lower, upper


def _transact(rpc_url: str, sender: str, to: str, data: str, gas: int = _CALL_GAS) -> int:
    """Send a call that must succeed; the block it was mined in."""
    mined = _receipt(rpc_url, send_transaction(rpc_url, sender, to, data, gas=gas))
    if mined["status"] != "0x1":
        msg = f"transaction to {to} failed: {mined!r}"
        raise RuntimeError(msg)
    return int(mined["blockNumber"], 16)


def _receipt(rpc_url: str, tx_hash: str) -> dict[str, Any]:
    """The receipt of a transaction, logs included, once mined (automine on: within
    ``connectors.anvil.receipt``'s wait)."""
    receipt(rpc_url, tx_hash)
    mined: dict[str, Any] = rpc(rpc_url, "eth_getTransactionReceipt", [tx_hash])
    return mined


def _call(rpc_url: str, to: str, data: str, block: int | str = "latest") -> str:
    tag = block if isinstance(block, str) else abi.encode_quantity(block)
    result: str = rpc(rpc_url, "eth_call", [{"to": to, "data": data}, tag])
    return result


def rpc_batch(rpc_url: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """Several JSON-RPC calls in one HTTP request (a JSON-RPC batch); their results in order.

    An error in any of them raises :class:`connectors.anvil.RpcError`.
    """
    if not calls:
        return []
    body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    answers = rpc_json(rpc_url, body)
    by_id = {answer["id"]: answer for answer in answers}
    results = []
    for i, (method, _) in enumerate(calls):
        answer = by_id[i]
        if "error" in answer:
            raise RpcError(method, answer["error"]["code"], answer["error"]["message"])
        results.append(answer["result"])
    return results


def rpc_json(rpc_url: str, body: Any, timeout_s: float = 60.0) -> Any:
    """POST a JSON-RPC ``body`` (one request or a batch); the decoded answer."""
    request = urllib.request.Request(
        rpc_url,
        data=msgspec.json.encode(body),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return msgspec.json.decode(response.read())


@functools.cache
def _selector(signature: str) -> str:
    """The 4-byte function selector of ``signature`` (e.g. ``"slot0()"``), 8 hex digits."""
    return Web3.keccak(text=signature)[:4].hex()


def _calldata(signature: str, *words: int) -> str:
    """The calldata of a function with static arguments only (ints), one ABI word each."""
    return "0x" + _selector(signature) + "".join(abi.encode_word(w) for w in words)


def _eth_calls(rpc_url: str, block: int, calls: list[tuple[str, str]]) -> list[bytes]:
    """``eth_call`` (to, data) at ``block`` for each call, in one batch; the raw results."""
    tag = abi.encode_quantity(block)
    results = rpc_batch(rpc_url, [("eth_call", [{"to": to, "data": d}, tag]) for to, d in calls])
    return [bytes.fromhex(r[2:]) for r in results]


def _word(result: str | bytes, index: int = 0, *, signed: bool = False, bits: int = 256) -> int:
    raw = bytes.fromhex(result[2:]) if isinstance(result, str) else result
    value = abi.uint_at(raw, index)
    return abi.signed(value & ((1 << bits) - 1), bits) if signed else value


def _address(result: str | bytes, index: int = 0) -> str:
    return abi.address_of(_word(result, index))


def head(rpc_url: str) -> int:
    """The node's latest block number."""
    return int(rpc(rpc_url, "eth_blockNumber"), 16)


def read_v2_state(rpc_url: str, pair: str, *, block: int | None = None) -> V2PoolState:
    """A V2 pair's state at ``block`` (default: the latest): its tokens and
    ``getReserves``, read in one batch of ``eth_call`` s. The fee is V2's 0.3%."""
    at = head(rpc_url) if block is None else block
    calls = [(pair, _calldata(f"{name}()")) for name in ("token0", "token1", "getReserves")]
    token0, token1, reserves = _eth_calls(rpc_url, at, calls)
    return V2PoolState(
        address=pair.lower(),
        token0=_address(token0),
        token1=_address(token1),
        reserve0=_word(reserves, 0),
        reserve1=_word(reserves, 1),
        fee_pips=3000,
        block=at,
    )


def read_v3_state(rpc_url: str, pool: str, *, block: int | None = None) -> V3PoolState:
    """A V3 pool's state at ``block`` (default: the latest), in three batches of
    ``eth_call`` s: its tokens, ``fee``, ``tickSpacing``, ``slot0`` and ``liquidity``; then
    every word of ``tickBitmap`` (one bit per initialized tick, ``TickBitmap.position``);
    then ``ticks(i).liquidityNet`` of each initialized tick, sorted by index."""
    at = head(rpc_url) if block is None else block
    names = ("token0", "token1", "fee", "tickSpacing", "slot0", "liquidity")
    calls = [(pool, _calldata(f"{name}()")) for name in names]
    token0, token1, fee, spacing_raw, slot0, liquidity = _eth_calls(rpc_url, at, calls)
    spacing = _word(spacing_raw, signed=True, bits=24)
    # TickBitmap.position: word = compressed >> 8, bit = compressed % 256 (floor division)
    words = range((MIN_TICK // spacing) >> 8, ((MAX_TICK // spacing) >> 8) + 1)
    bitmaps = _eth_calls(rpc_url, at, [(pool, _calldata("tickBitmap(int16)", w)) for w in words])
    initialized = [
        ((w << 8) + bit) * spacing
        for w, raw in zip(words, bitmaps, strict=True)
        for bitmap in (abi.uint_at(raw, 0),)
        if bitmap
        for bit in range(256)
        if bitmap >> bit & 1
    ]
    infos = _eth_calls(rpc_url, at, [(pool, _calldata("ticks(int24)", t)) for t in initialized])
    ticks = tuple(
        (t, _word(info, 1, signed=True, bits=128))
        for t, info in zip(initialized, infos, strict=True)
    )
    return V3PoolState(
        address=pool.lower(),
        token0=_address(token0),
        token1=_address(token1),
        fee_pips=_word(fee),
        tick_spacing=spacing,
        sqrt_price_x96=_word(slot0, 0),
        liquidity=_word(liquidity),
        tick=_word(slot0, 1, signed=True, bits=24),
        ticks=ticks,
        block=at,
    )


def read_states(
    rpc_url: str, deployed: UniswapDeployed, *, block: int | None = None
) -> list[V2PoolState | V3PoolState]:
    """Every deployed pool's state at one block (default: the head): the pair, then the
    V3 pools."""
    at = head(rpc_url) if block is None else block
    v3 = [read_v3_state(rpc_url, pool, block=at) for pool in deployed.v3_pools.values()]
    return [read_v2_state(rpc_url, deployed.v2_pair, block=at), *v3]


def read_swapped(
    rpc_url: str, states: Sequence[V2PoolState | V3PoolState], *, block: int
) -> list[V2PoolState | V3PoolState]:
    """``states`` brought to ``block``: what a swap moves, read in one batch of
    ``eth_call`` s (a pair's ``getReserves``; a V3 pool's ``slot0`` and ``liquidity``).

    A V3 pool's initialized ticks are kept from ``states``: only ``Mint`` and ``Burn``
    change them, never a swap, so the result equals :func:`read_states` at ``block`` as
    long as nobody minted or burnt liquidity since ``states`` were read.
    """
    calls: list[tuple[str, str]] = []
    for state in states:
        names = ("getReserves",) if isinstance(state, V2PoolState) else ("slot0", "liquidity")
        calls += [(state.address, _calldata(f"{name}()")) for name in names]
    results = iter(_eth_calls(rpc_url, block, calls))
    out: list[V2PoolState | V3PoolState] = []
    for state in states:
        if isinstance(state, V2PoolState):
            reserves = next(results)
            out.append(msgspec.structs.replace(
                state, reserve0=_word(reserves, 0), reserve1=_word(reserves, 1), block=block
            ))  # fmt: skip
        else:
            slot0, liquidity = next(results), next(results)
            out.append(msgspec.structs.replace(
                state, sqrt_price_x96=_word(slot0, 0), tick=_word(slot0, 1, signed=True, bits=24),
                liquidity=_word(liquidity), block=block,
            ))  # fmt: skip
    return out


class SwapFill(msgspec.Struct, frozen=True, kw_only=True):
    """What a pool's ``Swap`` log says a swap took and paid, smallest units, and where it
    landed. For a V3 pool also its state after the swap (``sqrt_price_x96``, ``tick``,
    ``liquidity``); None for a V2 pair."""

    pool: str
    amount_in: int
    amount_out: int
    block: int
    tx_hash: str
    sqrt_price_x96: int | None = None
    tick: int | None = None
    liquidity: int | None = None


def v3_swap(
    rpc_url: str,
    deployed: UniswapDeployed,
    pool: str,
    sender: str,
    *,
    zero_for_one: bool,
    amount_in: int,
    sqrt_price_limit_x96: int | None = None,
    recipient: str | None = None,
) -> SwapFill:
    """Sell ``amount_in`` (exact input) on the V3 ``pool`` through the caller, ``sender``
    paying and ``recipient`` (default: ``sender``) receiving; the pool's ``Swap`` log.

    Without a limit the swap may run to the end of the price range
    (``operators.uniswap_math.default_price_limit``, as the periphery's quoter).
    ``sender`` is an unlocked account that holds the input token and has approved the
    caller. A swap that would
    revert raises :class:`connectors.anvil.RpcError` with its reason, nothing sent.
    """
    if sqrt_price_limit_x96 is None:
        sqrt_price_limit_x96 = default_price_limit(zero_for_one)
    data = v3_swap_calldata(
        pool, zero_for_one, amount_in, sqrt_price_limit_x96, recipient or sender
    )
    mined = _simulate_and_send(rpc_url, sender, deployed.caller, data)
    log = _only_log(mined, pool, abi.V3_SWAP)
    raw = abi.data_bytes(log["data"], 5)
    amount0, amount1 = abi.signed(abi.uint_at(raw, 0)), abi.signed(abi.uint_at(raw, 1))
    paid_in, paid_out = (amount0, -amount1) if zero_for_one else (amount1, -amount0)
    return SwapFill(
        pool=pool.lower(),
        amount_in=paid_in,
        amount_out=paid_out,
        block=int(mined["blockNumber"], 16),
        tx_hash=mined["transactionHash"],
        sqrt_price_x96=abi.uint_at(raw, 2),
        liquidity=abi.uint_at(raw, 3),
        tick=abi.signed(abi.uint_at(raw, 4)),
    )


def v2_swap(
    rpc_url: str,
    deployed: UniswapDeployed,
    pair: str,
    sender: str,
    *,
    zero_for_one: bool,
    amount_in: int,
    amount_out: int,
    recipient: str | None = None,
) -> SwapFill:
    """Pay ``amount_in`` into the V2 ``pair`` and take ``amount_out`` of the other token,
    through the caller; the pair's ``Swap`` log. A V2 pair pays what is asked if its
    invariant holds after the fee, so ``amount_out`` is the quote; more than
    ``getAmountOut`` reverts with ``UniswapV2: K``: :class:`connectors.anvil.RpcError`, nothing
    sent."""
    data = v2_swap_calldata(pair, zero_for_one, amount_in, amount_out, recipient or sender)
    mined = _simulate_and_send(rpc_url, sender, deployed.caller, data)
    log = _only_log(mined, pair, _V2_SWAP)
    in0, in1, out0, out1 = abi.data_words(log["data"], 4)
    return SwapFill(
        pool=pair.lower(),
        amount_in=in0 + in1,
        amount_out=out0 + out1,
        block=int(mined["blockNumber"], 16),
        tx_hash=mined["transactionHash"],
    )


def v3_swap_calldata(
    pool: str, zero_for_one: bool, amount_in: int, sqrt_price_limit_x96: int, recipient: str
) -> str:
    """The calldata of the caller's ``v3Swap``: sell ``amount_in`` (exact input) on ``pool``
    down (``zero_for_one``) or up to ``sqrt_price_limit_x96``, the output to ``recipient``;
    the transaction's sender pays."""
    return _encode("UniswapCaller", "v3Swap", pool, zero_for_one, amount_in,
                   sqrt_price_limit_x96, recipient)  # fmt: skip


def v2_swap_calldata(
    pair: str, zero_for_one: bool, amount_in: int, amount_out: int, recipient: str
) -> str:
    """The calldata of the caller's ``v2Swap``: pay ``amount_in`` into ``pair`` and take
    ``amount_out`` of the other token to ``recipient``; the transaction's sender pays."""
    return _encode("UniswapCaller", "v2Swap", pair, zero_for_one, amount_in, amount_out,
                   recipient)  # fmt: skip


def _simulate_and_send(rpc_url: str, sender: str, to: str, data: str) -> dict[str, Any]:
    """``eth_call`` the transaction first, so that a revert raises
    :class:`connectors.anvil.RpcError` with its reason and nothing is sent; then send it;
    its receipt."""
    rpc(rpc_url, "eth_call", [{"from": sender, "to": to, "data": data, "gas": hex(_CALL_GAS)}])
    mined = _receipt(rpc_url, send_transaction(rpc_url, sender, to, data, gas=_CALL_GAS))
    if mined["status"] != "0x1":
        msg = f"transaction {mined['transactionHash']} to {to} reverted though its eth_call did not"
        raise RuntimeError(msg)
    return mined


def _only_log(mined: dict[str, Any], address: str, topic0: str) -> dict[str, Any]:
    logs = [
        log
        for log in mined["logs"]
        if log["address"].lower() == address.lower() and log["topics"][0] == topic0
    ]
    if len(logs) != 1:
        tx = mined["transactionHash"]
        msg = f"expected one {topic0[:10]} log of {address} in {tx}; got {len(logs)}"
        raise RuntimeError(msg)
    return logs[0]


def token_balance(rpc_url: str, token: str, holder: str, *, block: int | str = "latest") -> int:
    """``balanceOf(holder)`` of an ERC-20, smallest units."""
    return _word(_call(rpc_url, token, _encode("TestERC20", "balanceOf", holder), block))


def fund(
    rpc_url: str,
    deployed: UniswapDeployed,
    account: str,
    amounts: dict[str, int],
    spender: str | None = None,
) -> None:
    """Mint ``amounts`` (symbol to smallest units) of the test tokens to ``account`` and
    approve ``spender`` (by default the caller) for all of it, so that ``account`` (an
    unlocked dev account) can swap through it; the node's automine on."""
    for symbol, amount in amounts.items():
        token = deployed.tokens[symbol]
        _transact(rpc_url, deployed.deployer, token, _encode("TestERC20", "mint", account, amount))
        approve = _encode("TestERC20", "approve", spender or deployed.caller, 2**256 - 1)
        _transact(rpc_url, account, token, approve)


def _cs(address: str) -> str:
    """The checksummed form of an address, as web3's encoders require."""
    return str(Web3.to_checksum_address(address))


LOAD_SWAP_GAS = 50_000
"""Gas of one swap of ``SwapLoad.swaps``, with margin (measured: 29-33k each in a
transaction of 500 or 1,000, the pool's storage warm; 127k for a lone swap)."""
_LOAD_TX_GAS = 100_000
"""Gas of a ``SwapLoad.swaps`` transaction besides its swaps."""
LOAD_FUNDS_USDC = 10**9 * 10**6
"""What :func:`deploy_swap_load` mints to the load contract, USDC smallest units."""


def deploy_swap_load(rpc_url: str, deployed: UniswapDeployed) -> str:
    """Deploy ``SwapLoad`` (``infra/contracts/SwapLoad.sol``) and mint it
    :data:`LOAD_FUNDS_USDC` to pay the pools with; its address. USDC must be token0 of the
    pools it trades on (:data:`TOKENS`: it is)."""
    load = deploy_artifact(rpc_url, deployed.deployer, load_artifact("SwapLoad"), [])
    mint = _encode("TestERC20", "mint", load, LOAD_FUNDS_USDC)
    _transact(rpc_url, deployed.deployer, deployed.tokens["USDC"], mint)
    return load


def load_swaps(
    rpc_url: str,
    load: str,
    pool: str,
    sender: str,
    count: int,
    *,
    per_tx: int = 500,
    amount0: int = 10**6,
) -> list[int]:
    """Make ``count`` real swaps on the V3 ``pool`` through the load contract ``load``,
    ``per_tx`` in each transaction (each swap is one ``Swap`` log of the pool); the blocks
    that hold them, each transaction mined before the next is sent.

    Swaps alternate: ``amount0`` of token0 (default 1 USDC) sold, then the token1 bought
    sold back (``SwapLoad.swaps``). A transaction's gas is :data:`LOAD_SWAP_GAS` per swap:
    about 600 fit Anvil's default 30M block gas limit; for more, start the node with a
    larger ``gas_limit``.
    """
    if count < 1 or per_tx < 1:
        msg = f"count and per_tx must be >= 1; got {count!r} and {per_tx!r}"
        raise ValueError(msg)
    blocks = []
    for start in range(0, count, per_tx):
        n = min(per_tx, count - start)
        data = _encode("SwapLoad", "swaps", pool, n, amount0)
        blocks.append(_transact(rpc_url, sender, load, data, _LOAD_TX_GAS + LOAD_SWAP_GAS * n))
    return sorted(set(blocks))
