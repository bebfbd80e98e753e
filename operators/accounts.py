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
from array import array
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from operators.units import E18
from operators.venue import CollateralMove, Fill


def shard_key(index: int) -> str:
    """The key of shard ``index`` (0-based): ``shard-<index>``."""
    return f"shard-{index}"


def shard_keys(shards: int) -> tuple[str, ...]:
    """The keys of all ``shards`` shards, in order."""
    return tuple(shard_key(i) for i in range(shards))


def shard_of(account: str, shards: int) -> str:
    """The key of the shard that keeps ``account``: CRC-32 of its address mod ``shards``."""
    return shard_key(zlib.crc32(account.encode()) % shards)


@dataclass(kw_only=True)
class Book:
    """Collateral and positions of the accounts of one shard.

    The exact integers live in dicts; alongside, every (account, instrument) and (account,
    token) pair has a slot in flat arrays holding its current value as a float, so that
    the matrices a reprice needs are built by numpy, not by a loop over accounts.
    """

    collateral: dict[tuple[str, str], int] = field(default_factory=dict)
    """(account, token) -> amount in the token's smallest unit."""
    size: dict[tuple[str, str], int] = field(default_factory=dict)
    """(account, instrument) -> signed size, 18 decimals."""
    cost: dict[tuple[str, str], int] = field(default_factory=dict)
    """(account, instrument) -> sum of size * price over fills, 36 decimals."""
    accounts: dict[str, int] = field(default_factory=dict)
    """account -> its row in ``positions``, in order of first appearance."""
    _positions: _Slots = field(default_factory=lambda: _Slots(2))
    """Per (account, instrument): size (units) and cost (USD)."""
    _collateral: _Slots = field(default_factory=lambda: _Slots(1))
    """Per (account, token): amount in the token's smallest unit."""

    def apply(self, event: CollateralMove | Fill) -> None:
        """Add an event to the book (subtract it when it is a ``removed`` retraction)."""
        sign = -1 if event.removed else 1
        row = self.accounts.setdefault(event.account, len(self.accounts))
        if isinstance(event, CollateralMove):
            key = (event.account, event.token)
            amount = _add(self.collateral, key, sign * event.amount)
            self._collateral.set(row, event.token, (float(amount),))
            return
        key = (event.account, event.instrument)
        size = _add(self.size, key, sign * event.size_e18)
        cost = _add(self.cost, key, sign * event.size_e18 * event.price_e18)
        self._positions.set(row, event.instrument, (size / E18, cost / E18 / E18))

    def positions(self, instruments: dict[str, int]) -> sp.csr_matrix:
        """Signed sizes (units, float) as an accounts x instruments sparse matrix.

        ``instruments`` maps an instrument id to its column; positions in instruments it
        does not list are left out.
        """
        rows, cols, (sizes, _) = self._positions.arrays(instruments)
        keep = sizes != 0
        shape = (len(self.accounts), len(instruments))
        return sp.csr_matrix((sizes[keep], (rows[keep], cols[keep])), shape=shape)

    def costs(self) -> npt.NDArray[np.float64]:
        """Sum of position costs per account row, in USD (float)."""
        rows, _, (_, costs) = self._positions.arrays(None)
        return np.bincount(rows, weights=costs, minlength=len(self.accounts)).astype(np.float64)

    def collateral_amounts(self, tokens: dict[str, tuple[int, int]]) -> sp.csr_matrix:
        """Amounts (whole tokens) as an accounts x tokens sparse matrix; ``tokens`` maps a
        token address to (its column, its decimals); other tokens are left out."""
        columns = {token: col for token, (col, _) in tokens.items()}
        rows, cols, (amounts,) = self._collateral.arrays(columns)
        scale = np.zeros(len(tokens))
        for col, decimals in tokens.values():
            scale[col] = 10.0**-decimals
        shape = (len(self.accounts), len(tokens))
        return sp.csr_matrix((amounts * scale[cols], (rows, cols)), shape=shape)


class _Slots:
    """Growable flat arrays: one slot per (row, name) pair, holding ``width`` floats."""

    def __init__(self, width: int) -> None:
        self.slot: dict[tuple[int, str], int] = {}
        self.names: dict[str, int] = {}
        self.rows = array("q")
        self.name_ids = array("q")
        self.values = [array("d") for _ in range(width)]

    def set(self, row: int, name: str, values: tuple[float, ...]) -> None:
        slot = self.slot.get((row, name))
        if slot is None:
            slot = self.slot[(row, name)] = len(self.rows)
            self.rows.append(row)
            self.name_ids.append(self.names.setdefault(name, len(self.names)))
            for column in self.values:
                column.append(0.0)
        for column, value in zip(self.values, values, strict=True):
            column[slot] = value

    def arrays(
        self, columns: dict[str, int] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], list[npt.NDArray[np.float64]]]:
        """(rows, columns, values) of the slots whose name has a column (all: ``None``)."""
        rows = np.frombuffer(self.rows, dtype=np.int64)
        ids = np.frombuffer(self.name_ids, dtype=np.int64)
        values = [np.frombuffer(v, dtype=np.float64) for v in self.values]
        if columns is None:
            return rows, ids, values
        remap = np.full(len(self.names), -1, dtype=np.int64)
        for name, index in self.names.items():
            remap[index] = columns.get(name, -1)
        cols = remap[ids]
        keep = cols >= 0
        return rows[keep], cols[keep], [v[keep] for v in values]


def _add(book: dict[tuple[str, str], int], key: tuple[str, str], amount: int) -> int:
    total = book.get(key, 0) + amount
    if total:
        book[key] = total
    else:
        book.pop(key, None)
    return total
