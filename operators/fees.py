"""EIP-1559 fees of the executor's transactions: a suggestion from ``eth_feeHistory`` and
the raise that replaces a stuck transaction. Every amount is an integer in wei.

Suggestion (per gas):

- priority fee = the median of the history's reward column (the configured percentile of
  each block's tips), and at least ``MIN_PRIORITY_FEE_WEI``;
- max fee = 2 x the next block's base fee + the priority fee: the rule of ethers.js v5
  ``Provider.getFeeData`` (``block.baseFeePerGas.mul(2).add(maxPriorityFeePerGas)``), which
  stays includable through six full blocks in a row, since EIP-1559 raises the base fee by
  at most 12.5% a block (1.125**6 = 2.03);
- both cut to the cap (``execution.max_fee_gwei``), the priority fee never above the max fee.

Replacement (geth ``core/txpool/legacypool/list.go``, ``list.Add``): geth takes a
transaction of the same nonce only when its fee cap and its tip are both strictly higher
than the old ones and both at least ``old * (100 + PriceBump) / 100`` (PriceBump 10% by
default). :func:`bumped` raises each field to
``max(suggested, ceil(old * (1e6 + bump_ppm) / 1e6), old + 1)`` in exact integer
arithmetic, so both rules hold for any bump >= 10%, wei-level fees included.
"""

from __future__ import annotations

import statistics
from decimal import Decimal
from typing import Any

import msgspec

from operators.abi import AbiError, quantity

MIN_PRIORITY_FEE_WEI = 1
"""The least priority fee suggested, wei. A history of empty blocks (Anvil's, or a quiet
chain's) reports tips of 0; geth's pool takes a tip of 1 wei (``txpool.pricelimit``'s
default, ``legacypool.DefaultConfig.PriceLimit``), and a tip > 0 lets a replacement raise it
by a percentage at all."""
PPM = 1_000_000
WEI_PER_GWEI = 10**9
WEI_PER_ETH = 10**18


class FeeHistory(msgspec.Struct, frozen=True, kw_only=True):
    """An ``eth_feeHistory`` answer for one reward percentile, in wei.

    ``base_fee_per_gas`` holds one base fee per block of the history and one more, the
    next block's (the last); ``reward`` one row per block, each holding the one requested
    percentile of that block's tips.
    """

    base_fee_per_gas: list[int]
    reward: list[list[int]]

    def __post_init__(self) -> None:
        if not self.base_fee_per_gas:
            msg = "fee history: base_fee_per_gas must hold the next block's base fee; got []"
            raise ValueError(msg)
        if len(self.reward) != len(self.base_fee_per_gas) - 1:
            msg = (
                f"fee history: expected {len(self.base_fee_per_gas) - 1} reward rows (one per "
                f"block); got {len(self.reward)}"
            )
            raise ValueError(msg)
        if any(len(row) != 1 for row in self.reward):
            msg = f"fee history: each reward row must hold one percentile; got {self.reward!r}"
            raise ValueError(msg)
        if any(fee < 0 for fee in self.base_fee_per_gas) or any(r[0] < 0 for r in self.reward):
            msg = f"fee history: fees must be >= 0 wei; got {self!r}"
            raise ValueError(msg)

    @property
    def next_base_fee(self) -> int:
        """The next block's base fee, wei."""
        return self.base_fee_per_gas[-1]


class Fees(msgspec.Struct, frozen=True, kw_only=True):
    """The two EIP-1559 fee fields of a transaction, wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def gwei_to_wei(gwei: float) -> int:
    """A configured amount in gwei as wei, read from its decimal text (``0.1`` gwei is
    exactly 100,000,000 wei), rounded down to a whole wei."""
    return int(Decimal(repr(gwei)).scaleb(9))


def eth_to_wei(eth: float) -> int:
    """A configured amount in ETH as wei, read from its decimal text, rounded down."""
    return int(Decimal(repr(eth)).scaleb(18))


def parse_fee_history(result: dict[str, Any]) -> FeeHistory:
    """The ``result`` of ``eth_feeHistory(blocks, "latest", [percentile])`` as a
    :class:`FeeHistory`: quantities as ``0x`` hex strings (the JSON-RPC way) or integers.

    Example: ``parse_fee_history({"baseFeePerGas": ["0x7", "0x8"], "reward": [["0x1"]]})``.
    A malformed answer raises ``ValueError`` naming the field.
    """
    try:
        base = [quantity(v, "baseFeePerGas") for v in result["baseFeePerGas"]]
        reward = [[quantity(v, "reward") for v in row] for row in result.get("reward", [])]
    except (KeyError, TypeError) as exc:
        msg = f"fee history: malformed answer, missing or bad {exc}: {result!r:.200}"
        raise ValueError(msg) from None
    except AbiError as exc:
        raise ValueError(f"fee history: {exc}") from None
    return FeeHistory(base_fee_per_gas=base, reward=reward)


def suggest_fees(history: FeeHistory, cap_wei: int) -> Fees:
    """The fees for a new transaction (the rule in the module's docstring), wei per gas.

    The median of an even count of blocks is the higher middle tip (``median_high``: a tip
    some block paid, never below the lower half). Example: base fees [10, 12], rewards
    [[3]], cap 100 -> max fee 2 x 12 + 3 = 27, priority 3.
    """
    _check_cap(cap_wei)
    priority = _priority(history)
    max_fee = min(2 * history.next_base_fee + priority, cap_wei)
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(priority, max_fee))


def expected_gas_price(history: FeeHistory, cap_wei: int) -> int:
    """What a unit of gas of a new transaction is expected to cost, wei: the next base fee
    plus the suggested priority fee, at most the cap (what routing weighs gas at)."""
    _check_cap(cap_wei)
    return min(history.next_base_fee + _priority(history), cap_wei)


def _priority(history: FeeHistory) -> int:
    tips = [row[0] for row in history.reward]
    return max(statistics.median_high(tips) if tips else 0, MIN_PRIORITY_FEE_WEI)


def bumped(previous: Fees, suggested: Fees, bump_ppm: int, cap_wei: int) -> Fees | None:
    """The fees of a replacement of a transaction sent with ``previous``, or None when the
    raised max fee would exceed ``cap_wei`` (it cannot be replaced).

    Each field is ``max(suggested, ceil(previous x (1e6 + bump_ppm) / 1e6), previous + 1)``,
    the suggestion first cut to the cap; so the priority fee stays <= the max fee. Example:
    previous (100, 10), suggested (50, 5), 125,000 ppm -> (113, 12).
    """
    _check_cap(cap_wei)
    _check_fees(previous, "previous")
    _check_fees(suggested, "suggested")
    if bump_ppm < 0:
        raise ValueError(f"bump_ppm must be >= 0; got {bump_ppm!r}")
    max_fee = max(
        min(suggested.max_fee_per_gas, cap_wei), _raised(previous.max_fee_per_gas, bump_ppm)
    )
    if max_fee > cap_wei:
        return None
    priority = max(
        min(suggested.max_priority_fee_per_gas, max_fee),
        _raised(previous.max_priority_fee_per_gas, bump_ppm),
    )
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority)


def _raised(fee: int, bump_ppm: int) -> int:
    """``max(ceil(fee x (1e6 + bump_ppm) / 1e6), fee + 1)``: exact integer ceiling."""
    return max(-(-fee * (PPM + bump_ppm) // PPM), fee + 1)


def _check_cap(cap_wei: int) -> None:
    if cap_wei < 1:
        raise ValueError(f"the fee cap must be >= 1 wei; got {cap_wei!r}")


def _check_fees(fees: Fees, name: str) -> None:
    if not 0 <= fees.max_priority_fee_per_gas <= fees.max_fee_per_gas:
        msg = f"{name} fees must have 0 <= priority fee <= max fee; got {fees!r}"
        raise ValueError(msg)
