"""A routed ``dex_hedge`` order as one ``SplitSwap.swap`` call, and its fill from the receipt.

``SplitSwap.swap(orderId, tokenIn, tokenOut, amountIn, minAmountOut, legs)``
(``infra/contracts/SplitSwap.sol``) sells exactly ``amountIn`` of ``tokenIn`` (raw units)
split into ``legs`` (pool, V3 or not, its ``amountIn``) and reverts unless the book
receives at least ``minAmountOut`` of ``tokenOut``.

The amounts, in raw units (``d_t``, ``d_q``: the token's and the quote's decimals; ``P``:
the order's ``underlying_price``, USD per token, taken as quote per token; ``b``:
``execution.price_band_bps`` / 10,000), all exact rationals, rounded once at the end:

- sell (``size_e18 < 0``): ``amountIn = floor(|size_e18| * 10**d_t / 10**18)`` of the token;
  ``minAmountOut = ceil(amountIn * P * 10**d_q / 10**d_t * (1 - b))`` of the quote;
- buy (``size_e18 > 0``): the order spends ``amountIn = floor(size_e18 * P * 10**d_q /
  10**18)`` of the quote (exact input); ``minAmountOut = ceil(amountIn / P * 10**d_t /
  10**d_q * (1 - b))`` of the token.

Inputs are floored (never more than the order), minimum outputs ceiled (rounding never
loosens the band). The route weighs gas (``operators.routing.route``'s ``gas_cost``) at
``floor(g * E * 10**d_out / (10**18 * P_out))`` raw units of the output per gas unit: ``g``
the expected gas price (wei), ``E`` the USD price of the chain's gas token
(``execution.gas_asset``), ``P_out`` the output's USD price (``P`` for the token, 1 for the
quote). ``P`` and ``b`` are read from their floats' shortest decimal text
(``Decimal(repr(x))``), as ``operators.units.e18`` does.

The fill is read from the receipt: the one ``Routed`` event of the SplitSwap for the order
id and the book, cross-checked against the ``Swap`` event of every leg's pool (V3:
``Swap(sender, recipient, amount0, amount1, ...)``, V2: ``Swap(sender, amount0In,
amount1In, amount0Out, amount1Out, to)``): each pool took its leg's input, paid the book,
and the outputs sum to ``Routed.amountOut``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec

from operators import abi
from operators.config import Config, ConfigError
from operators.model import Order
from operators.pool_state import PoolState, V3PoolState
from operators.pretrade import Denial
from operators.routing import Route, route

SWAP_SELECTOR = "2661664c"
"""keccak256("swap(bytes32,address,address,uint256,uint256,(address,bool,uint256)[])")[:4]."""
ROUTED = "0x6e56bcf9b267bba1bf19c72cee90ef5f5c676e4e90edab0f8f2e9e75cefc95ef"
"""keccak256("Routed(bytes32,address,address,address,uint256,uint256)")."""
V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
"""keccak256("Swap(address,uint256,uint256,uint256,uint256,address)"): a V2 pair's swap."""
E18 = 10**18


class RouteDenial(enum.StrEnum):
    """Why a ``dex_hedge`` order was refused before signing (``Execution.code``)."""

    NO_SPLIT_SWAP = "no_split_swap"
    """``execution.split_swap`` is empty."""
    NO_DEX_HEDGE = "no_dex_hedge"
    """``risk.dex_hedges`` has no entry for the order's account and asset, or another token."""
    NO_POOLS = "no_pools"
    """No ``oracle.sources`` pool trades the pair."""
    POOL_STATE = "pool_state"
    """A pool's state could not be read at the head."""
    UNROUTABLE = "unroutable"
    """The pools cannot take the order (their prices reach the end of their range)."""
    PRICE_IMPACT = "price_impact"
    """The route's quote is already below the minimum output: it would revert."""
    INVALID_ORDER = "invalid_order"
    """A zero size, a size that rounds to 0 raw units, or a price <= 0."""


class FillError(ValueError):
    """A receipt's logs do not show the routed swap the order sent."""


class DexPair(msgspec.Struct, frozen=True, kw_only=True):
    """A book's DEX hedge of one asset, resolved: the token and the quote (addresses), their
    decimals, and the pools that trade the pair as ``(address, kind)``."""

    token: str
    quote: str
    token_decimals: int
    quote_decimals: int
    pools: tuple[tuple[str, str], ...]


class SwapLeg(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One leg of a routed swap: the pool, whether it is a V3 pool, its input and its
    exact quoted output (raw units)."""

    pool: str
    v3: bool
    amount_in: int
    amount_out: int


class SwapPlan(msgspec.Struct, frozen=True, kw_only=True):
    """A routed swap as sent: ``amount_in`` of ``token_in`` for at least ``min_amount_out``
    of ``token_out`` (the route quoted ``quote_out``), over ``legs``, all raw units, from
    the pools' state at ``block``."""

    token_in: str
    token_out: str
    amount_in: int
    min_amount_out: int
    quote_out: int
    block: int
    legs: tuple[SwapLeg, ...]

    def describe(self) -> str:
        """One line: the route, its block, its quote and minimum."""
        legs = ", ".join(f"{leg.pool} {leg.amount_in}" for leg in self.legs)
        return (
            f"routed {self.amount_in} {self.token_in} -> {self.token_out} over {len(self.legs)} "
            f"pool(s) at the state of block {self.block} [{legs}]: quote {self.quote_out}, "
            f"min out {self.min_amount_out}"
        )


class SwapFill(msgspec.Struct, frozen=True, kw_only=True):
    """What a mined routed swap sold and bought, raw units (``Execution.token_in`` ...)."""

    token_in: str
    amount_in: int
    token_out: str
    amount_out: int


def dex_pairs(cfg: Config) -> dict[tuple[str, str], DexPair]:
    """Every ``risk.dex_hedges`` entry by (account, asset), with its decimals from
    ``oracle.tokens`` (keyed by the token's address) and the ``uniswap_v2``/``uniswap_v3``
    ``oracle.sources`` whose ``{token0, token1}`` is the pair. ``ConfigError`` names a token
    not in ``oracle.tokens``."""
    tokens = cfg.oracle.tokens
    out = {}
    for account, hedges in cfg.risk.dex_hedges.items():
        for asset, hedge in hedges.items():
            for key in ("token", "quote"):
                address = getattr(hedge, key)
                if address not in tokens:
                    raise ConfigError(
                        f"risk.dex_hedges.{account}.{asset}.{key}: {address} is not in "
                        f"oracle.tokens (keyed by address), so its decimals are unknown"
                    )
            pools = tuple(
                (s.address, s.kind)
                for s in cfg.oracle.sources
                if s.kind in ("uniswap_v2", "uniswap_v3")
                and {s.token0, s.token1} == {hedge.token, hedge.quote}
            )
            out[account, asset] = DexPair(
                token=hedge.token,
                quote=hedge.quote,
                token_decimals=tokens[hedge.token].decimals,
                quote_decimals=tokens[hedge.quote].decimals,
                pools=pools,
            )
    return out


def _exact(value: float) -> Fraction:
    return Fraction(Decimal(repr(value)))


def _ceil(x: Fraction) -> int:
    return -(-x.numerator // x.denominator)


def swap_amount_in(size_e18: int, price: float, pair: DexPair) -> int:
    """The exact input of the order, raw units: of the token for a sell (``size_e18`` < 0),
    of the quote for a buy (module docstring); floored."""
    if size_e18 < 0:
        return -size_e18 * 10**pair.token_decimals // E18
    spend = Fraction(size_e18) * _exact(price) * 10**pair.quote_decimals / E18
    return spend.numerator // spend.denominator


def min_amount_out(
    amount_in: int, *, sell: bool, price: float, band_bps: float, pair: DexPair
) -> int:
    """The least output accepted for ``amount_in`` (raw units): its value at ``price``
    less ``band_bps``, ceiled (module docstring); ``price`` > 0, 0 <= ``band_bps`` <= 10,000."""
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"price must be > 0; got {price!r}")
    if not 0 <= band_bps <= 10_000:  # False for a NaN too
        raise ValueError(f"band_bps must be in 0..10000; got {band_bps!r}")
    p, band = _exact(price), _exact(band_bps) / 10_000
    scale = Fraction(10**pair.quote_decimals, 10**pair.token_decimals)
    rate = p * scale if sell else 1 / (p * scale)
    return _ceil(amount_in * rate * (1 - band))


def gas_cost_per_unit(gas_price_wei: int, gas_usd: float, out_usd: float, out_decimals: int) -> int:
    """Raw units of the output token worth one unit of gas (module docstring), floored; 0
    when a price is not a positive number (gas is then not weighed)."""
    if not (math.isfinite(gas_usd) and gas_usd > 0 and math.isfinite(out_usd) and out_usd > 0):
        return 0
    cost = gas_price_wei * _exact(gas_usd) * 10**out_decimals / (E18 * _exact(out_usd))
    return cost.numerator // cost.denominator


def plan_order(
    order: Order,
    pair: DexPair,
    states: Sequence[PoolState],
    band_bps: float,
    gas_price_wei: int = 0,
    gas_usd: float = math.nan,
) -> SwapPlan | Denial:
    """The swap that executes the ``dex_hedge`` ``order`` over the pools ``states`` (one
    block), or why not (a :class:`RouteDenial` code): its exact input, the route
    (``operators.routing.route``, every pool of the pair, gas weighed at ``gas_price_wei``
    and the gas token's ``gas_usd``) and the least output at the order's
    ``underlying_price`` less ``band_bps``."""
    if order.instrument != pair.token:
        return Denial(
            code=RouteDenial.NO_DEX_HEDGE,
            detail=f"order {order.order_id} trades {order.instrument}; the book's DEX hedge "
            f"of {order.asset} trades {pair.token}",
        )
    size = int(order.size_e18)
    price_ok = math.isfinite(order.underlying_price) and order.underlying_price > 0
    amount_in = swap_amount_in(size, order.underlying_price, pair) if price_ok and size else 0
    if amount_in <= 0:
        return Denial(
            code=RouteDenial.INVALID_ORDER,
            detail=f"order {order.order_id}: size {order.size_e18} e18 at price "
            f"{order.underlying_price!r} is {amount_in} raw units of input",
        )
    sell = size < 0
    token_in, token_out = (pair.token, pair.quote) if sell else (pair.quote, pair.token)
    out_usd, out_decimals = (
        (1.0, pair.quote_decimals) if sell else (order.underlying_price, pair.token_decimals)
    )
    gas_cost = gas_cost_per_unit(gas_price_wei, gas_usd, out_usd, out_decimals)
    try:
        found = route(states, token_in, token_out, amount_in, gas_cost)
    except ValueError as exc:
        return Denial(code=RouteDenial.UNROUTABLE, detail=str(exc))
    least = min_amount_out(
        amount_in, sell=sell, price=order.underlying_price, band_bps=band_bps, pair=pair
    )
    plan = plan_swap(found, states, least)
    if found.amount_out < least:
        return Denial(
            code=RouteDenial.PRICE_IMPACT,
            detail=f"{plan.describe()}: the quote is below the minimum ({band_bps:g} bps "
            f"under the oracle price {order.underlying_price!r})",
        )
    return plan


def plan_swap(route: Route, pools: Sequence[PoolState], min_out: int) -> SwapPlan:
    """The swap that executes ``route`` (from the states ``pools``, one block) with at least
    ``min_out``."""
    v3 = {p.address for p in pools if isinstance(p, V3PoolState)}
    return SwapPlan(
        token_in=route.sell,
        token_out=route.buy,
        amount_in=route.amount_in,
        min_amount_out=min_out,
        quote_out=route.amount_out,
        block=route.legs[0].block,
        legs=tuple(
            SwapLeg(pool=leg.pool, v3=leg.pool in v3, amount_in=leg.amount_in,
                    amount_out=leg.amount_out)
            for leg in route.legs
        ),
    )  # fmt: skip


def swap_calldata(order_id: str, plan: SwapPlan) -> str:
    """The ``data`` of ``SplitSwap.swap`` for ``plan``: ``0x`` and hex digits (the legs are
    a dynamic array of static tuples: an offset in the head, then the length and the
    legs' words)."""
    head = [
        int(order_id, 16), int(plan.token_in, 16), int(plan.token_out, 16), plan.amount_in,
        plan.min_amount_out, 6 * 32,
    ]  # fmt: skip
    tail = [len(plan.legs)]
    for leg in plan.legs:
        tail += [int(leg.pool, 16), int(leg.v3), leg.amount_in]
    return "0x" + SWAP_SELECTOR + "".join(abi.encode_word(w) for w in head + tail)


def decode_fill(
    logs: Sequence[Any], *, split_swap: str, order_id: str, payer: str, plan: SwapPlan
) -> SwapFill:
    """The fill of ``plan`` from a successful receipt's ``logs`` (``eth_getTransactionReceipt``
    JSON): the ``Routed`` event of ``split_swap`` for ``order_id`` paid by ``payer``,
    checked against the legs' ``Swap`` events. ``FillError`` says what does not match."""
    split_swap, payer, order_id = split_swap.lower(), payer.lower(), order_id.lower()
    routed = [
        log for log in logs
        if _address(log) == split_swap and _topics(log)[:1] == [ROUTED]
    ]  # fmt: skip
    if len(routed) != 1:
        raise FillError(f"expected one Routed event of {split_swap}; got {len(routed)}")
    topics = _topics(routed[0])
    if len(topics) != 3:
        raise FillError(f"Routed: expected 3 topics; got {len(topics)}")
    if topics[1].lower() != "0x" + format(int(order_id, 16), "064x"):
        raise FillError(f"Routed: order id {topics[1]} is not {order_id}")
    if abi.address_of(abi.word(topics[2])) != payer:
        raise FillError(f"Routed: payer {topics[2]} is not {payer}")
    token_in, token_out, amount_in, amount_out = abi.data_words(_data(routed[0]), 4)
    fill = SwapFill(
        token_in=abi.address_of(token_in), amount_in=amount_in,
        token_out=abi.address_of(token_out), amount_out=amount_out,
    )  # fmt: skip
    expected = (plan.token_in, plan.amount_in, plan.token_out)
    if (fill.token_in, fill.amount_in, fill.token_out) != expected:
        raise FillError(
            f"Routed: sold {fill.amount_in} {fill.token_in} for {fill.token_out}; "
            f"the order sent {plan.amount_in} {plan.token_in} for {plan.token_out}"
        )
    paid = 0
    for leg in plan.legs:
        took, gave = _leg_swap(logs, leg, payer)
        if took != leg.amount_in:
            raise FillError(f"pool {leg.pool} took {took}; its leg is {leg.amount_in}")
        paid += gave
    if paid != fill.amount_out:
        raise FillError(f"the pools paid {paid}; Routed says {fill.amount_out}")
    return fill


def _leg_swap(logs: Sequence[Any], leg: SwapLeg, payer: str) -> tuple[int, int]:
    """(taken, paid) by ``leg``'s pool in its one ``Swap`` event, paid to ``payer``."""
    topic0 = abi.V3_SWAP if leg.v3 else V2_SWAP
    swaps = [log for log in logs if _address(log) == leg.pool and _topics(log)[:1] == [topic0]]
    if len(swaps) != 1:
        raise FillError(f"expected one Swap event of pool {leg.pool}; got {len(swaps)}")
    topics = _topics(swaps[0])
    if len(topics) != 3 or abi.address_of(abi.word(topics[2])) != payer:
        raise FillError(f"pool {leg.pool}: its Swap did not pay {payer}")
    if leg.v3:
        raw = abi.data_bytes(_data(swaps[0]), 5)
        amount0, amount1 = abi.signed(abi.uint_at(raw, 0)), abi.signed(abi.uint_at(raw, 1))
        if (amount0 > 0) == (amount1 > 0):
            raise FillError(f"pool {leg.pool}: Swap amounts {amount0}, {amount1} are not a trade")
        return max(amount0, amount1), -min(amount0, amount1)
    in0, in1, out0, out1 = abi.data_words(_data(swaps[0]), 4)
    if not ((in0 > 0 and in1 == 0 and out0 == 0) or (in1 > 0 and in0 == 0 and out1 == 0)):
        raise FillError(
            f"pool {leg.pool}: Swap amounts {in0}, {in1}, {out0}, {out1} are not a trade"
        )
    return in0 + in1, out0 + out1


def _address(log: Any) -> str:
    address = log.get("address") if isinstance(log, dict) else None
    return address.lower() if isinstance(address, str) else ""


def _topics(log: Any) -> list[str]:
    topics = log.get("topics") if isinstance(log, dict) else None
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        return []
    return [t.lower() for t in topics]


def _data(log: Any) -> str:
    data = log.get("data")
    if not isinstance(data, str):
        raise FillError(f"log of {_address(log)}: data is not hex text")
    return data
