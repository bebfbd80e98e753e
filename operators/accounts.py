"""Account books of one shard: collateral, positions and cash, kept exact and linear.

Sizes and prices are integers in 18 decimals, token amounts in the token's smallest unit.
A position is (size, cost), with cost = sum of size * price over its fills (36 decimals),
so its P&L at a mark price is size * mark - cost, and equity needs no entry-price
bookkeeping. Every fill is an addition, so fills do not depend on their order, and a
``removed`` event (a reorg) is undone by subtracting it. ``cash`` (USD, 36 decimals) holds
what settled options paid: a settled position leaves the book with its cost, and
size x intrinsic - cost goes to cash, so equity does not jump.

The book refuses (``Book.apply`` returns a ``code: detail`` reason, and nothing changes):

- ``out_of_bounds``: a size, price or notional beyond ``MAX_UNITS`` contracts or USD, or a
  collateral amount beyond ``MAX_UNITS`` whole tokens (a 256-bit word decodes to up to
  1.2e77: such a number is a corrupt or hostile event, not a position);
- ``withdraw_above_balance``: a withdrawal larger than the account's balance of the token;
- ``retraction_unknown``: a ``removed`` event that retracts nothing the book applied
  (within the last ``retain_blocks`` blocks; older blocks are not reorganised).

These are checks on the ledger (they need the balance and what was applied), so they are
the book's; ``operators.venue`` checks what one log says on its own.

Accounts are sharded by a hash of the address (``shard_of``): one oracle tick reprices a
whole shard at once, as a sparse accounts x instruments matrix.
"""

from __future__ import annotations

import zlib
from array import array
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from operators.units import E18, InstrumentKind
from operators.venue import CollateralMove, Fill, InstrumentListed

K = TypeVar("K")

MAX_UNITS = 10**15
"""Bound on sizes (contracts), prices and notionals (USD), and collateral amounts (whole
tokens): 10^15, a thousand times any market's total supply or value."""
_MAX_E18 = MAX_UNITS * E18
_MAX_DECIMALS = 36


def shard_key(index: int) -> str:
    """The key of shard ``index`` (0-based): ``shard-<index>``."""
    return f"shard-{index}"


def shard_keys(shards: int) -> tuple[str, ...]:
    """The keys of all ``shards`` shards, in order."""
    return tuple(shard_key(i) for i in range(shards))


def shard_of(account: str, shards: int) -> str:
    """The key of the shard that keeps ``account``: CRC-32 of its address mod ``shards``."""
    return shard_key(zlib.crc32(account.encode()) % shards)


@dataclass(frozen=True, kw_only=True)
class Settled:
    """One position settled at expiry: size (18 decimals) and what went to cash (USD, 36
    decimals: size x intrinsic - cost)."""

    account: str
    size_e18: int
    paid_e36: int
    """size x intrinsic, USD in 36 decimals: the option's value at expiry."""
    cash_e36: int


@dataclass(kw_only=True)
class Book:
    """Collateral, positions and cash of the accounts of one shard.

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
    cash: dict[str, int] = field(default_factory=dict)
    """account -> USD from settlements, 36 decimals."""
    accounts: dict[str, int] = field(default_factory=dict)
    """account -> its row in ``positions``, in order of first appearance."""
    holders: dict[str, set[str]] = field(default_factory=dict)
    """instrument -> accounts with a size or a cost in it."""
    applied: dict[tuple[object, ...], int] = field(default_factory=dict)
    """What was applied (an event's identity, see ``_identity``) -> how many times, for the
    blocks retained; a ``removed`` event must retract one of them."""
    blocks: dict[int, list[tuple[object, ...]]] = field(default_factory=dict)
    """block number -> identities applied in it (for pruning)."""
    newest_block: int = -1
    _positions: _Slots = field(default_factory=lambda: _Slots(2))
    """Per (account, instrument): size (units) and cost (USD)."""
    _collateral: _Slots = field(default_factory=lambda: _Slots(1))
    """Per (account, token): amount in the token's smallest unit."""
    _cash: array[float] = field(default_factory=lambda: array("d"))
    """Per account row: cash in USD."""

    def apply(
        self, event: CollateralMove | Fill, decimals: int | None, retain_blocks: int
    ) -> str | None:
        """Add an event to the book (subtract it when it is a ``removed`` retraction); or
        refuse it and return why (``code: detail``, see the module). ``decimals`` are the
        collateral token's (``None``: not configured, 36 assumed for the bound)."""
        reason = _out_of_bounds(event, _MAX_DECIMALS if decimals is None else decimals)
        if reason is not None:
            return reason
        identity = _identity(event)
        block = event.seq >> 20
        if event.removed:
            if not self.applied.get(identity):
                return (
                    f"retraction_unknown: no {type(event).__name__} of account "
                    f"{event.account} at block {block}, log {event.seq & 0xFFFFF} was applied"
                )
            self.applied[identity] -= 1
            if not self.applied[identity]:
                del self.applied[identity]
        elif isinstance(event, CollateralMove) and event.amount < 0:
            balance = self.collateral.get((event.account, event.token), 0)
            if balance + event.amount < 0:
                return (
                    f"withdraw_above_balance: {-event.amount} of token {event.token} from "
                    f"{event.account}, whose balance is {balance}"
                )
        if not event.removed:
            self.applied[identity] = self.applied.get(identity, 0) + 1
            self.blocks.setdefault(block, []).append(identity)
            self._prune(block, retain_blocks)
        self._add_event(event, -1 if event.removed else 1)
        return None

    def _prune(self, block: int, retain_blocks: int) -> None:
        """Forget what was applied more than ``retain_blocks`` blocks before the newest."""
        if block <= self.newest_block:
            return
        self.newest_block = block
        for old in [b for b in self.blocks if b < block - retain_blocks]:
            for identity in self.blocks.pop(old):
                left = self.applied.get(identity, 0) - 1
                if left > 0:
                    self.applied[identity] = left
                else:
                    self.applied.pop(identity, None)

    def _add_event(self, event: CollateralMove | Fill, sign: int) -> None:
        row = self._row(event.account)
        if isinstance(event, CollateralMove):
            key = (event.account, event.token)
            amount = _add(self.collateral, key, sign * event.amount)
            self._collateral.set(row, event.token, (float(amount),))
            return
        key = (event.account, event.instrument)
        size = _add(self.size, key, sign * event.size_e18)
        cost = _add(self.cost, key, sign * event.size_e18 * event.price_e18)
        self.holders.setdefault(event.instrument, set()).add(event.account)
        self._positions.set(row, event.instrument, (size / E18, cost / E18 / E18))

    def _row(self, account: str) -> int:
        row = self.accounts.setdefault(account, len(self.accounts))
        if row == len(self._cash):
            self._cash.append(0.0)
        return row

    def settle(self, instrument: str, intrinsic_e18: int) -> list[Settled]:
        """Settle every position in ``instrument`` at ``intrinsic_e18`` (USD per contract,
        18 decimals, >= 0): size x intrinsic - cost goes to cash and the position leaves
        the book. Returns the positions of nonzero size, by account."""
        out = []
        for account in sorted(self.holders.pop(instrument, ())):
            key = (account, instrument)
            size, cost = self.size.pop(key, 0), self.cost.pop(key, 0)
            paid = size * intrinsic_e18
            row = self.accounts[account]
            total = _add(self.cash, account, paid - cost)
            self._cash[row] = total / E18 / E18
            self._positions.set(row, instrument, (0.0, 0.0))
            if size:
                out.append(
                    Settled(account=account, size_e18=size, paid_e36=paid, cash_e36=paid - cost)
                )
        return out

    def positions(self, instruments: dict[str, int]) -> sp.csr_matrix:
        """Signed sizes (units, float) as an accounts x instruments sparse matrix.

        ``instruments`` maps an instrument id to its column; positions in instruments it
        does not list are left out.
        """
        rows, cols, (sizes, _) = self._positions.arrays(instruments)
        keep = sizes != 0
        shape = (len(self.accounts), len(instruments))
        return sp.csr_matrix((sizes[keep], (rows[keep], cols[keep])), shape=shape)

    def unlisted(self, instruments: dict[str, int]) -> npt.NDArray[np.bool_]:
        """Per account row: whether it holds a position in an instrument ``instruments``
        does not list (one that is not priced: its value is unknown)."""
        rows, ids, (sizes, _) = self._positions.arrays(None)
        listed = np.zeros(len(self._positions.names), dtype=bool)
        for name, index in self._positions.names.items():
            listed[index] = name in instruments
        out = np.zeros(len(self.accounts), dtype=bool)
        out[rows[(sizes != 0) & ~listed[ids]]] = True
        return out

    def costs(self) -> npt.NDArray[np.float64]:
        """Sum of position costs per account row, in USD (float)."""
        rows, _, (_, costs) = self._positions.arrays(None)
        return np.bincount(rows, weights=costs, minlength=len(self.accounts)).astype(np.float64)

    def cash_usd(self) -> npt.NDArray[np.float64]:
        """Cash per account row, in USD (float)."""
        return np.frombuffer(self._cash, dtype=np.float64).copy()

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


def listing_rejection(event: InstrumentListed) -> str | None:
    """Why a listing cannot be priced (``out_of_bounds: ...``), or None: an option needs a
    strike in (0, ``MAX_UNITS``] USD and an expiry; spot and perps have neither."""
    if event.kind.is_option:
        if not 0 < event.strike_e18 <= _MAX_E18:
            return f"out_of_bounds: strike {event.strike_e18} (18 decimals) of an option"
        if not 0 < event.expiry_s < 2**40:
            return f"out_of_bounds: expiry {event.expiry_s} s of an option"
    elif event.kind not in (InstrumentKind.SPOT, InstrumentKind.PERP):
        return f"out_of_bounds: instrument kind {event.kind}"
    return None


def _identity(event: CollateralMove | Fill) -> tuple[object, ...]:
    """What a retraction must match: the event but its time (the intake may move a late
    event's time) and its ``removed`` flag."""
    if isinstance(event, CollateralMove):
        return ("move", event.seq, event.account, event.token, event.amount)
    return (
        "fill", event.seq, event.account, event.instrument, event.size_e18, event.price_e18,
        event.liquidator,
    )  # fmt: skip


def _out_of_bounds(event: CollateralMove | Fill, decimals: int) -> str | None:
    if isinstance(event, CollateralMove):
        if abs(event.amount) > MAX_UNITS * 10**decimals:
            return f"out_of_bounds: amount {event.amount} of token {event.token}"
        return None
    if abs(event.size_e18) > _MAX_E18:
        return f"out_of_bounds: size {event.size_e18} (18 decimals)"
    if not 0 <= event.price_e18 <= _MAX_E18:
        return f"out_of_bounds: price {event.price_e18} (18 decimals)"
    if abs(event.size_e18) * event.price_e18 > _MAX_E18 * E18:
        return f"out_of_bounds: notional of size {event.size_e18} x price {event.price_e18}"
    return None


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


def _add(book: dict[K, int], key: K, amount: int) -> int:
    """Add ``amount`` to ``book[key]``; a total of 0 leaves the book. The new total."""
    total = book.get(key, 0) + amount
    if total:
        book[key] = total
    else:
        book.pop(key, None)
    return total
