"""The executor's state file: durable settings, atomic transactions, exact wei."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.executor_store import Attempt, ExecutorStore, StoredOrder


def _attempt(**fields: object) -> Attempt:
    base: dict[str, object] = {
        "tx_hash": "0x" + "aa" * 32, "order_id": "0x" + "01" * 32, "nonce": 7, "raw": b"\x02raw",
        "max_fee_per_gas": 3 * 10**30, "max_priority_fee_per_gas": 2**63, "cancel": False,
        "state": "pending", "sent_block": 5,
    }  # fmt: skip
    return Attempt(**{**base, **fields})  # type: ignore[arg-type]


def _order(order_id: str = "0x" + "01" * 32) -> StoredOrder:
    return StoredOrder(order_id=order_id, body="{}", state="queued", final=False, seq=0, nonce=None)


def test_store_when_opened_then_wal_and_synchronous_full(tmp_path: Path) -> None:
    store = ExecutorStore(tmp_path / "s.sqlite")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_transaction_when_it_raises_then_nothing_of_it_is_kept(tmp_path: Path) -> None:
    store = ExecutorStore(tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError), store.transaction():
        store.put("next_nonce", "8")
        store.put_order(_order())
        raise RuntimeError("crash between the nonce and the attempt")
    assert store.get("next_nonce") is None and store.order("0x" + "01" * 32) is None


def test_attempt_with_fees_beyond_64_bits_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = ExecutorStore(path)
    with store.transaction():
        store.put_order(_order())
        store.put_attempt(_attempt(fee_paid_wei=10**25))
    store.close()
    (again,) = ExecutorStore(path).attempts("0x" + "01" * 32)
    assert again == _attempt(fee_paid_wei=10**25)


def test_unfinished_orders_come_by_nonce_then_unsigned_in_arrival_order(tmp_path: Path) -> None:
    store = ExecutorStore(tmp_path / "s.sqlite")
    with store.transaction():
        for i, nonce in enumerate([None, 4, None, 2]):
            o = _order("0x" + format(i, "064x"))
            o.nonce = nonce
            store.put_order(o)
        done = _order("0x" + "ff" * 32)
        done.final = True
        store.put_order(done)
    assert [o.order_id[-1] for o in store.unfinished_orders()] == ["3", "1", "0", "2"]


def test_outbox_is_read_in_order_and_dropped_through_an_id(tmp_path: Path) -> None:
    store = ExecutorStore(tmp_path / "s.sqlite")
    with store.transaction():
        for i in range(3):
            store.add_outbox("fills", b"k", str(i).encode())
    rows = store.outbox()
    assert [r[3] for r in rows] == [b"0", b"1", b"2"]
    with store.transaction():
        store.drop_outbox(rows[1][0])
    assert [r[3] for r in store.outbox()] == [b"2"]
