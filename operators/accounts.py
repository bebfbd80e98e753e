"""Account books of one shard: collateral and positions, kept exact and linear.

Sizes and prices are integers in 18 decimals, token amounts in the token's smallest unit.
A position is (size, cost), with cost = sum of size * price over its fills (36 decimals),
so its P&L at a mark price is size * mark - cost, and equity needs no entry-price
bookkeeping. Every update is an addition, so the book does not depend on the order of
events, and a ``removed`` event (a reorg) is undone by subtracting it.

Accounts are sharded by a hash of the address (``shard_of``): one oracle tick reprices a
whole shard at once, as a sparse accounts x instruments matrix.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from operators.venue import CollateralMove, Fill

E18 = 10**18


def shard_of(account: str, shards: int) -> int:
    """The shard (0..shards-1) that keeps ``account``: CRC-32 of its address."""
    return zlib.crc32(account.encode()) % shards


@dataclass
class Book:
    """Collateral and positions of the accounts of one shard."""

    collateral: dict[tuple[str, str], int] = field(default_factory=dict)
    """(account, token) -> amount in the token's smallest unit."""
    size: dict[tuple[str, str], int] = field(default_factory=dict)
    """(account, instrument) -> signed size, 18 decimals."""
    cost: dict[tuple[str, str], int] = field(default_factory=dict)
    """(account, instrument) -> sum of size * price over fills, 36 decimals."""
    accounts: dict[str, int] = field(default_factory=dict)
    """account -> its row in ``positions``, in order of first appearance."""

    def apply(self, event: CollateralMove | Fill) -> None:
        """Add an event to the book (subtract it when it is a ``removed`` retraction)."""
        sign = -1 if event.removed else 1
        self.accounts.setdefault(event.account, len(self.accounts))
        if isinstance(event, CollateralMove):
            key = (event.account, event.token)
            _add(self.collateral, key, sign * event.amount)
            return
        key = (event.account, event.instrument)
        _add(self.size, key, sign * event.size_e18)
        _add(self.cost, key, sign * event.size_e18 * event.price_e18)

    def positions(self, instruments: dict[str, int]) -> sp.csr_matrix:
        """Signed sizes (units, float) as an accounts x instruments sparse matrix.

        ``instruments`` maps an instrument id to its column; positions in instruments it
        does not list are left out.
        """
        keys = [(self.accounts[a], instruments[i], s) for (a, i), s in self.size.items()
                if i in instruments]  # fmt: skip
        rows = np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))
        cols = np.fromiter((k[1] for k in keys), dtype=np.int64, count=len(keys))
        vals = np.fromiter((k[2] / E18 for k in keys), dtype=np.float64, count=len(keys))
        shape = (len(self.accounts), len(instruments))
        return sp.csr_matrix((vals, (rows, cols)), shape=shape)

    def costs(self) -> np.ndarray:
        """Sum of position costs per account row, in USD (float)."""
        out = np.zeros(len(self.accounts))
        for (account, _), cost in self.cost.items():
            out[self.accounts[account]] += cost / E18 / E18
        return out


def _add(book: dict[tuple[str, str], int], key: tuple[str, str], amount: int) -> None:
    total = book.get(key, 0) + amount
    if total:
        book[key] = total
    else:
        book.pop(key, None)
