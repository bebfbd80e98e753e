"""``hedgeflow route POOLS.json --sell TOKEN --amount N``: the split of one order, as JSON.

Input (the schema outside tools feed; amounts are decimal strings of raw integer units)::

    {"tokens": {"WETH": {"address": "0x...", "decimals": 18}, ...},
     "pools": [
       {"address": "0x...", "kind": "uniswap_v2", "token0": "USDC", "token1": "WETH",
        "reserve0": "...", "reserve1": "..."},
       {"address": "0x...", "kind": "uniswap_v3", "token0": "USDC", "token1": "WETH",
        "fee": 500, "tick_spacing": 10, "sqrt_price_x96": "...", "liquidity": "...",
        "tick": 0, "ticks": [{"index": -887270, "liquidity_net": "..."}, ...]}]}

``fee`` is in hundredths of a bip, as in the pool (500 = 0.05 %); a V2 pair's is optional
(default 3000, its 0.3 %). A V3 pool lists every initialized tick. An unknown key, a
missing one, a bad number, an unknown token, a tick off the pool's spacing or ticks that
do not add up to its liquidity is an error that names the key (``RouteInputError``).
The file carries no block number: its quotes record block 0.

Output (``RouteOut``, indented JSON): the order, the total output, each leg's pool, input
and output, what the best single pool pays, the gas estimate (gas units) and the price
impact in basis points; see ``operators.routing.Route``.
"""

from __future__ import annotations

from typing import Annotated, TextIO

import msgspec

from operators.pool_state import FEE_DENOMINATOR, MAX_TICK_SPACING, V2PoolState, V3PoolState
from operators.routing import Route, route

UINT = r"^(0|[1-9][0-9]{0,77})$"
"""A decimal string of a non-negative integer (at most 78 digits: uint256), as the input
writes raw amounts."""
Uint = Annotated[str, msgspec.Meta(pattern=UINT)]
Int = Annotated[str, msgspec.Meta(pattern=r"^(0|-?[1-9][0-9]{0,77})$")]
Address = Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{40}$")]
Fee = Annotated[int, msgspec.Meta(ge=0, lt=FEE_DENOMINATOR)]


class RouteInputError(ValueError):
    """The pools file is not JSON, lacks a key, names an unknown one or holds a bad value."""


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Token(_Strict, frozen=True):
    address: Address
    decimals: Annotated[int, msgspec.Meta(ge=0, le=255)]


class V2Pool(_Strict, frozen=True, tag_field="kind", tag="uniswap_v2"):
    address: Address
    token0: str
    token1: str
    reserve0: Uint
    reserve1: Uint
    fee: Fee = 3000


class Tick(_Strict, frozen=True):
    index: int
    liquidity_net: Int


class V3Pool(_Strict, frozen=True, tag_field="kind", tag="uniswap_v3"):
    address: Address
    token0: str
    token1: str
    fee: Fee
    tick_spacing: Annotated[int, msgspec.Meta(gt=0, lt=MAX_TICK_SPACING)]
    sqrt_price_x96: Uint
    liquidity: Uint
    tick: int
    ticks: tuple[Tick, ...]


class PoolsFile(_Strict, frozen=True):
    tokens: dict[str, Token]
    pools: tuple[V2Pool | V3Pool, ...]


class LegOut(_Strict, frozen=True):
    pool: str
    amount_in: str
    amount_out: str


class RouteOut(_Strict, frozen=True):
    """The output schema; amounts as decimal strings of raw units."""

    sell: str
    buy: str
    amount_in: str
    amount_out: str
    legs: tuple[LegOut, ...]
    best_single_pool_out: str
    gas: int
    price_impact_bps: float


def load_pools(data: bytes) -> tuple[dict[str, Token], list[V2PoolState | V3PoolState]]:
    """The tokens and the pool states of a pools file; ``RouteInputError`` names a bad key.

    Pool states name their tokens by the file's symbols, and record block 0.
    """
    try:
        file = msgspec.json.decode(data, type=PoolsFile)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise RouteInputError(f"invalid pools file: {exc}") from None
    states: list[V2PoolState | V3PoolState] = []
    seen: dict[str, int] = {}
    for i, pool in enumerate(file.pools):
        where = f"pools[{i}]"
        for key, token in (("token0", pool.token0), ("token1", pool.token1)):
            if token not in file.tokens:
                known = ", ".join(sorted(file.tokens)) or "none"
                raise RouteInputError(f"{where}.{key}: unknown token {token!r}; tokens: {known}")
        address = pool.address.lower()
        if address in seen:
            raise RouteInputError(f"{where}.address: {pool.address} is also pools[{seen[address]}]")
        seen[address] = i
        try:
            states.append(_state(pool))
        except ValueError as exc:  # the state no pool could hold; the message names the key
            raise RouteInputError(f"{where}.{exc}") from None
    return file.tokens, states


def _state(pool: V2Pool | V3Pool) -> V2PoolState | V3PoolState:
    if isinstance(pool, V2Pool):
        return V2PoolState(
            address=pool.address, token0=pool.token0, token1=pool.token1,
            reserve0=int(pool.reserve0), reserve1=int(pool.reserve1), fee_pips=pool.fee,
            block=0,
        )  # fmt: skip
    return V3PoolState(
        address=pool.address, token0=pool.token0, token1=pool.token1, fee_pips=pool.fee,
        tick_spacing=pool.tick_spacing, sqrt_price_x96=int(pool.sqrt_price_x96),
        liquidity=int(pool.liquidity), tick=pool.tick,
        ticks=tuple((t.index, int(t.liquidity_net)) for t in pool.ticks), block=0,
    )  # fmt: skip


def _buy_token(pools: list[V2PoolState | V3PoolState], sell: str) -> str:
    """The token the pools trade ``sell`` against, when there is one."""
    others = sorted({p.token1 if p.token0 == sell else p.token0
                     for p in pools if sell in (p.token0, p.token1)})  # fmt: skip
    if not others:
        raise RouteInputError(f"--sell: no pool trades {sell}")
    if len(others) > 1:
        msg = f"--buy: {sell} trades against {', '.join(others)}; name one with --buy"
        raise RouteInputError(msg)
    return others[0]


def route_out(result: Route) -> RouteOut:
    """A route in the output schema."""
    return RouteOut(
        sell=result.sell,
        buy=result.buy,
        amount_in=str(result.amount_in),
        amount_out=str(result.amount_out),
        legs=tuple(
            LegOut(pool=leg.pool, amount_in=str(leg.amount_in), amount_out=str(leg.amount_out))
            for leg in result.legs
        ),
        best_single_pool_out=str(result.best_single_pool_out),
        gas=result.gas,
        price_impact_bps=result.price_impact_bps,
    )


def route_json(
    data: bytes, out: TextIO, sell: str, amount: int, buy: str | None = None, gas_cost: int = 0
) -> None:
    """Route ``amount`` (raw units) of ``sell`` across the pools of ``data`` and write the
    route to ``out`` as indented JSON. ``ValueError``: bad input (``RouteInputError``,
    naming the key or flag) or a pool set that cannot fill the order."""
    tokens, pools = load_pools(data)
    for flag, token in (("--sell", sell), ("--buy", buy)):
        if token is not None and token not in tokens:
            known = ", ".join(sorted(tokens))
            raise RouteInputError(f"{flag}: unknown token {token!r}; tokens: {known}")
    if buy is None:
        buy = _buy_token(pools, sell)
    if buy == sell:
        raise RouteInputError(f"--buy: expected a token other than --sell; got {buy!r} for both")
    result = route(pools, sell, buy, amount, gas_cost)
    out.write(msgspec.json.format(msgspec.json.encode(route_out(result)), indent=2).decode())
    out.write("\n")
