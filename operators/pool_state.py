"""The state of a Uniswap pool that an exact quote needs, and the block it was read at.

Amounts are raw integer units of the token (wei for WETH); ``fee_pips`` is in hundredths
of a bip, as the pool keeps it (3000 = 0.3 %). Both records check themselves on
construction (and on ``msgspec`` decoding): a bad value raises ``ValueError`` naming the
field, the value and what was expected.

- ``V2PoolState``: a pair's reserves (``UniswapV2Pair.getReserves``).
- ``V3PoolState``: ``slot0`` (``sqrtPriceX96``, ``tick``), the in-range ``liquidity`` and
  every initialized tick with its ``liquidityNet`` (``UniswapV3Pool.ticks``), which must
  be consistent as on chain: the in-range liquidity is the sum of ``liquidity_net`` over
  the ticks at or below ``tick``, and the nets of all ticks sum to 0 (each position adds
  its liquidity at its lower tick and takes it away at its upper one).
"""

from __future__ import annotations

import msgspec

from operators.uniswap_math import (
    MAX_SQRT_RATIO,
    MAX_TICK,
    MIN_SQRT_RATIO,
    MIN_TICK,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
)

FEE_DENOMINATOR = 1_000_000
"""``fee_pips`` per unit: the pools' fee unit, hundredths of a bip."""
MAX_TICK_SPACING = 16384
"""``UniswapV3Factory.enableFeeAmount``: ``tickSpacing > 0 && tickSpacing < 16384``."""
_UINT112 = 1 << 112  # a V2 pair's reserves are uint112
_UINT128 = 1 << 128  # a V3 pool's liquidity is uint128, liquidityNet int128


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _check_fee(fee_pips: int) -> None:
    if not 0 <= fee_pips < FEE_DENOMINATOR:
        _fail(f"fee_pips: expected 0 <= fee < {FEE_DENOMINATOR} (pips); got {fee_pips!r}")


class V2PoolState(msgspec.Struct, frozen=True, kw_only=True):
    """A Uniswap V2 pair at ``block``: reserves in raw units of ``token0`` and ``token1``.

    ``fee_pips`` defaults to the pair's 0.3 % (``UniswapV2Library.getAmountOut``'s 997/1000).
    """

    address: str
    token0: str
    token1: str
    reserve0: int
    reserve1: int
    fee_pips: int = 3000
    block: int

    def __post_init__(self) -> None:
        if self.token0 == self.token1:
            _fail(f"token1: expected a token other than token0; got {self.token1!r} twice")
        for name, value in (("reserve0", self.reserve0), ("reserve1", self.reserve1)):
            if not 0 <= value < _UINT112:
                _fail(f"{name}: expected 0 <= reserve < 2**112 (uint112); got {value!r}")
        _check_fee(self.fee_pips)


class V3PoolState(msgspec.Struct, frozen=True, kw_only=True):
    """A Uniswap V3 pool at ``block``.

    ``sqrt_price_x96`` and ``tick`` are ``slot0``'s; ``liquidity`` the in-range liquidity;
    ``ticks`` every initialized tick as ``(index, liquidity_net)``, sorted by index, each a
    multiple of ``tick_spacing``.
    """

    address: str
    token0: str
    token1: str
    fee_pips: int
    tick_spacing: int
    sqrt_price_x96: int
    liquidity: int
    tick: int
    ticks: tuple[tuple[int, int], ...]
    block: int

    def __post_init__(self) -> None:
        if self.token0 == self.token1:
            _fail(f"token1: expected a token other than token0; got {self.token1!r} twice")
        _check_fee(self.fee_pips)
        if not 0 < self.tick_spacing < MAX_TICK_SPACING:
            _fail(f"tick_spacing: expected 0 < spacing < {MAX_TICK_SPACING}; "
                  f"got {self.tick_spacing!r}")  # fmt: skip
        if not MIN_SQRT_RATIO <= self.sqrt_price_x96 < MAX_SQRT_RATIO:
            _fail(f"sqrt_price_x96: expected {MIN_SQRT_RATIO} <= sqrtPriceX96 < "
                  f"{MAX_SQRT_RATIO} (TickMath); got {self.sqrt_price_x96!r}")  # fmt: skip
        if not 0 <= self.liquidity < _UINT128:
            _fail(f"liquidity: expected 0 <= liquidity < 2**128; got {self.liquidity!r}")
        self._check_tick()
        self._check_ticks()

    def _check_tick(self) -> None:
        # slot0.tick is the tick of the price, or one below when a swap down stopped exactly
        # on a tick's price (UniswapV3Pool.swap: state.tick = step.tickNext - 1)
        of_price = tick_at_sqrt_ratio(self.sqrt_price_x96)
        on_boundary = sqrt_ratio_at_tick(of_price) == self.sqrt_price_x96
        if self.tick != of_price and not (on_boundary and self.tick == of_price - 1):
            _fail(f"tick: expected {of_price}, the tick of sqrt_price_x96 "
                  f"{self.sqrt_price_x96}; got {self.tick!r}")  # fmt: skip

    def _check_ticks(self) -> None:
        previous = MIN_TICK - 1
        in_range = total = 0
        for i, (index, net) in enumerate(self.ticks):
            if index <= previous:
                _fail(f"ticks[{i}]: expected indexes sorted, each once; got {index} "
                      f"after {previous}")  # fmt: skip
            if index > MAX_TICK or index % self.tick_spacing:
                _fail(f"ticks[{i}]: expected a multiple of tick_spacing {self.tick_spacing} "
                      f"within [{MIN_TICK}, {MAX_TICK}]; got index {index}")  # fmt: skip
            if not -_UINT128 // 2 < net < _UINT128 // 2:
                _fail(f"ticks[{i}]: expected liquidity_net within int128; got {net}")
            previous = index
            total += net
            if index <= self.tick:
                in_range += net
        if total != 0:
            _fail(f"ticks: expected liquidity_net summing to 0 over all ticks (every position "
                  f"opens and closes); got {total}")  # fmt: skip
        if in_range != self.liquidity:
            _fail(f"liquidity: expected {in_range}, the sum of liquidity_net of the ticks at "
                  f"or below tick {self.tick}; got {self.liquidity}")  # fmt: skip


PoolState = V2PoolState | V3PoolState
"""Either kind of pool the router splits across."""
