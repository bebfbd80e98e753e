"""The executor's state: one SQLite file per signer, WAL, ``synchronous=FULL``.

It holds everything the executor must not forget across a crash:

- ``orders``: every order id it has seen (the duplicate check), the order's JSON, its
  current state, and the number of its last state change (``seq``);
- ``attempts``: every transaction it signed, one row per signature: the order, the nonce,
  the raw signed bytes, the hash, the fees, and what the chain said (``pending``,
  ``mined``, ``replaced``);
- ``meta``: the signer, the chain id, the next nonce, the trading state and why (and
  whether the executor has seen it halted, so a manual resume restarts the trip windows),
  the pre-trade windows, the newest head seen;
- ``offsets``: the next offset to read of each input partition (``orders``,
  ``oracle.prices``), so the executor reads by assignment, without a consumer group;
- ``oracle``: the newest ``oracle.prices`` row per asset;
- ``outbox``: the records not yet on ``fills`` (``Execution`` JSON) or ``deadletter``,
  written in the same transaction as the change itself, so none is lost.

A state change and everything it implies (nonce, attempt, offset, outbox) commit in one
transaction: :meth:`ExecutorStore.transaction`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (part TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS oracle (asset TEXT PRIMARY KEY, row TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    final INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    nonce INTEGER
);
CREATE TABLE IF NOT EXISTS attempts (
    tx_hash TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(order_id),
    nonce INTEGER NOT NULL,
    raw BLOB NOT NULL,
    max_fee_per_gas TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    cancel INTEGER NOT NULL,
    state TEXT NOT NULL,
    sent_block INTEGER NOT NULL,
    block_number INTEGER,
    block_hash TEXT,
    status INTEGER,
    gas_used INTEGER,
    fee_paid_wei TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_order ON attempts (order_id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    body BLOB NOT NULL
);
"""


class Attempt(msgspec.Struct, kw_only=True):
    """One signed transaction (a row of ``attempts``). Fees and amounts in wei."""

    tx_hash: str
    order_id: str
    nonce: int
    raw: bytes
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    cancel: bool
    """A 0-value self-transfer taking the nonce of an expired order's transaction."""
    state: str
    """``pending`` (sent, no receipt on the canonical chain), ``mined`` or ``replaced``."""
    sent_block: int
    """The head when it was signed: replacements count blocks from here."""
    block_number: int | None = None
    block_hash: str | None = None
    status: int | None = None
    gas_used: int | None = None
    fee_paid_wei: int | None = None


class StoredOrder(msgspec.Struct, kw_only=True):
    """One order the executor has seen (a row of ``orders``)."""

    order_id: str
    body: str
    """The order's JSON (``operators.model.Order``)."""
    state: str
    """``new`` before any transaction, else the state last reported on ``fills``."""
    final: bool
    seq: int
    nonce: int | None


_ATTEMPT_COLUMNS = ", ".join(f.name for f in msgspec.structs.fields(Attempt))
_ORDER_COLUMNS = ", ".join(f.name for f in msgspec.structs.fields(StoredOrder))


class ExecutorStore:
    """The state file of one signer (see the module docstring)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable change: everything inside commits together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # meta ------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # offsets and the oracle ----------------------------------------------------------
    def offsets(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT part, next_offset FROM offsets").fetchall())

    def put_offset(self, part: str, next_offset: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO offsets (part, next_offset) VALUES (?, ?)", (part, next_offset)
        )

    def oracle_rows(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT asset, row FROM oracle").fetchall())

    def put_oracle_row(self, asset: str, row: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO oracle (asset, row) VALUES (?, ?)", (asset, row))

    # orders and attempts -------------------------------------------------------------
    def order(self, order_id: str) -> StoredOrder | None:
        row = self.db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
        return None if row is None else _stored_order(row)

    def put_order(self, order: StoredOrder) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO orders ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (order.order_id, order.body, order.state, int(order.final), order.seq, order.nonce),
        )

    def unfinished_orders(self) -> list[StoredOrder]:
        """The orders not final, by nonce (unsigned ones last, in arrival order)."""
        rows = self.db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE final = 0 "
            "ORDER BY nonce IS NULL, nonce, rowid"
        ).fetchall()
        return [_stored_order(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Orders by state (``mined`` counts final and not final together)."""
        return dict(self.db.execute("SELECT state, COUNT(*) FROM orders GROUP BY state"))

    def attempts(self, order_id: str) -> list[Attempt]:
        rows = self.db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE order_id = ? ORDER BY rowid",
            (order_id,),
        ).fetchall()
        return [_attempt(r) for r in rows]

    def put_attempt(self, a: Attempt) -> None:
        values = [getattr(a, f.name) for f in msgspec.structs.fields(Attempt)]
        values = [str(v) if isinstance(v, int) and v >= 2**63 else v for v in values]
        marks = ", ".join("?" * len(values))
        self.db.execute(
            f"INSERT OR REPLACE INTO attempts ({_ATTEMPT_COLUMNS}) VALUES ({marks})", values
        )

    # the outbox ----------------------------------------------------------------------
    def add_outbox(self, topic: str, key: bytes, body: bytes) -> None:
        """A record for ``topic`` (``fills`` or ``deadletter``), published after commit."""
        self.db.execute(
            "INSERT INTO outbox (topic, key, body) VALUES (?, ?, ?)", (topic, key, body)
        )

    def outbox(self, limit: int = 1000) -> list[tuple[int, str, bytes, bytes]]:
        """The oldest records not yet published: (id, topic, key, value)."""
        rows = self.db.execute(
            "SELECT id, topic, key, body FROM outbox ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(i), str(t), bytes(k), bytes(b)) for i, t, k, b in rows]

    def drop_outbox(self, through_id: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id <= ?", (through_id,))


def _stored_order(row: tuple[object, ...]) -> StoredOrder:
    order_id, body, state, final, seq, nonce = row
    return StoredOrder(
        order_id=str(order_id), body=str(body), state=str(state), final=bool(final),
        seq=int(seq), nonce=None if nonce is None else int(nonce),  # type: ignore[call-overload]
    )  # fmt: skip


def _attempt(row: tuple[object, ...]) -> Attempt:
    names = [f.name for f in msgspec.structs.fields(Attempt)]
    values = dict(zip(names, row, strict=True))
    return msgspec.convert(values, Attempt, strict=False)
