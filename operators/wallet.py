"""A book's wallet: the tokens it hedges in spot on the DEX (``RiskConfig.dex_hedges``),
held outside the venue and moved by the book's own ``dex_hedge`` swaps.

Holdings are kept in raw integer units of the token (``10**-decimals``), exactly as the
chain moves them: a mined swap adds the ``amount_out`` it bought of the token and takes the
``amount_in`` it sold (``Execution.token_in/amount_in/token_out/amount_out``, from the
receipt's ``Swap`` logs). Only the delta (units of the token, delta 1 each) is a float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.model import Execution


@dataclass(frozen=True, kw_only=True)
class DexHedge:
    """A book's hedge of one asset in spot on the DEX: it buys or sells ``token`` for
    ``quote`` (lower-case addresses); ``decimals`` is the token's, ``initial`` the book's
    holdings of it at the start, raw units."""

    token: str
    quote: str
    decimals: int
    initial: int


def swap_change(outcome: Execution, token: str) -> int:
    """Raw units of ``token`` a mined swap added to (+) or took from (-) the wallet:
    ``amount_out`` if it bought ``token``, minus ``amount_in`` if it sold it."""
    change = 0
    if outcome.token_out == token and outcome.amount_out is not None:
        change += int(outcome.amount_out)
    if outcome.token_in == token and outcome.amount_in is not None:
        change -= int(outcome.amount_in)
    return change


@dataclass
class Wallet:
    """The books' DEX-hedge holdings as their swaps moved them: (account, token) -> raw
    units gained (+) or spent (-) since the start, and the order ids applied, each once."""

    moved: dict[tuple[str, str], int] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)

    def apply(self, outcome: Execution, hedge: DexHedge) -> bool:
        """Take a mined, final swap of the book's ``hedge`` once per order id; whether it
        was new (a repeat, or another seq of the same order, changes nothing)."""
        if outcome.order_id in self.applied:
            return False
        self.applied.add(outcome.order_id)
        key = (outcome.account, hedge.token)
        self.moved[key] = self.moved.get(key, 0) + swap_change(outcome, hedge.token)
        return True

    def holdings(self, account: str, hedge: DexHedge) -> int:
        """The book's holdings of the hedge's token now, raw units."""
        return hedge.initial + self.moved.get((account, hedge.token), 0)

    def units(self, account: str, hedge: DexHedge) -> float:
        """The book's holdings of the hedge's token now, units of the token (its delta)."""
        return self.holdings(account, hedge) / 10**hedge.decimals
