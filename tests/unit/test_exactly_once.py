"""The chain-only exactly-once checker: injected duplicates, unknown orders, nonce gaps
and repeats are always found, and a clean history gives no violation."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from operators.exactly_once import ChainTx, audit

SIGNER = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20


def _id(n: int) -> str:
    return "0x" + format(n, "064x")


def _tx(nonce: int, order: int | None, *, status: int = 1, sender: str = SIGNER) -> ChainTx:
    return ChainTx(
        hash="0x" + format(nonce * 1_000 + (order or 0), "064x"),
        sender=sender,
        nonce=nonce,
        block_number=100 + nonce,
        status=status,
        order_id=None if order is None else _id(order),
    )


def test_clean_history_of_orders_reverts_and_cancels_has_no_violation() -> None:
    txs = [_tx(5, 1), _tx(6, 2, status=0), _tx(7, None), _tx(8, 2), _tx(0, 9, sender=OTHER)]
    assert audit(txs, [_id(1), _id(2), _id(3), _id(9)], SIGNER, first_nonce=5) == []


def test_order_executed_twice_is_a_duplicate_naming_both_transactions() -> None:
    txs = [_tx(0, 1), _tx(1, 2), _tx(2, 1)]

    violations = audit(txs, [_id(1), _id(2)], SIGNER)

    assert violations == [
        f"duplicate: order {_id(1)} executed 2 times, in {txs[0].hash} (block 100), "
        f"{txs[2].hash} (block 102)"
    ]


def test_reverted_repeat_of_an_order_is_not_a_duplicate() -> None:
    assert audit([_tx(0, 1), _tx(1, 1, status=0)], [_id(1)], SIGNER) == []


def test_duplicate_across_signers_is_found() -> None:
    txs = [_tx(0, 1), _tx(0, 1, sender=OTHER)]
    assert [v.split(":")[0] for v in audit(txs, [_id(1)], SIGNER)] == ["duplicate"]


def test_order_twice_in_one_transaction_is_a_duplicate() -> None:
    tx = msgspec.structs.replace(_tx(0, 1), more_order_ids=(_id(1),))
    assert [v.split(":")[0] for v in audit([tx], [_id(1)], SIGNER)] == ["duplicate"]


def test_order_on_chain_that_was_not_expected_is_unknown() -> None:
    violations = audit([_tx(0, 1), _tx(1, 7)], [_id(1)], SIGNER)
    assert violations == [
        f"unknown: order {_id(7)} executed in {_tx(1, 7).hash} (block 101) is not an expected order"
    ]


def test_ids_and_addresses_compare_case_insensitively() -> None:
    tx = msgspec.structs.replace(_tx(0, None), order_id="0x" + "AB" * 32, sender=SIGNER.upper())
    assert audit([tx], ["0x" + "ab" * 32], SIGNER) == []


def test_nonce_gap_repeat_and_below_first_are_each_reported() -> None:
    txs = [_tx(2, 1), _tx(3, None), _tx(3, None), _tx(6, 2), _tx(9, 3), _tx(0, None)]

    violations = audit(txs, [_id(1), _id(2), _id(3)], SIGNER, first_nonce=1)

    assert violations == [
        f"nonce: {SIGNER} used nonces [0] below the first nonce 1",
        f"nonce: {SIGNER} used nonces [3] more than once",
        f"nonce: {SIGNER} skipped nonces 1, 4-5, 7-8 between 1 and 9",
    ]


def test_other_senders_nonces_are_not_the_signers() -> None:
    assert audit([_tx(0, None), _tx(5, None, sender=OTHER)], [], SIGNER) == []


def test_no_transactions_is_clean() -> None:
    assert audit([], [_id(1)], SIGNER, first_nonce=3) == []


# properties: a clean history, then one kind of fault injected


@dataclass
class History:
    txs: list[ChainTx]
    expected: list[str]
    first_nonce: int


@st.composite
def clean_histories(draw: st.DrawFn) -> History:
    """The signer's transactions from ``first_nonce`` on: each an order executed once, a
    reverted attempt of one (retried later) or a cancel; other senders interleaved; and
    expected orders never sent."""
    first = draw(st.integers(min_value=0, max_value=50))
    kinds = draw(st.lists(st.sampled_from(["order", "revert", "cancel"]), max_size=30))
    txs, expected = [], []
    order = 0
    for offset, kind in enumerate(kinds):
        nonce = first + offset
        if kind == "order":
            order += 1
            expected.append(_id(order))
            txs.append(_tx(nonce, order))
        elif kind == "revert":
            txs.append(_tx(nonce, order + 1, status=0))
        else:
            txs.append(_tx(nonce, None))
    others = draw(st.lists(st.integers(min_value=0, max_value=order + 5), max_size=5))
    txs += [_tx(i, None, sender=OTHER) for i in others]  # outsiders' nonces are theirs
    expected += [_id(order + k) for k in range(1, draw(st.integers(0, 3)) + 1)]  # never sent
    shuffled = draw(st.permutations(txs))  # the checker must not rely on chain order
    return History(list(shuffled), expected, first)


@given(clean_histories())
def test_property_clean_histories_give_no_violation(history: History) -> None:
    assert audit(history.txs, history.expected, SIGNER, history.first_nonce) == []


def _executed(history: History) -> list[ChainTx]:
    return [tx for tx in history.txs if tx.sender == SIGNER and tx.status == 1 and tx.order_id]


@given(clean_histories(), st.data())
def test_property_an_injected_duplicate_is_always_found(history: History, data: st.DataObject):
    executed = _executed(history)
    if not executed:
        return
    again = data.draw(st.sampled_from(executed))
    nonce = history.first_nonce + sum(1 for tx in history.txs if tx.sender == SIGNER)
    txs = [*history.txs, msgspec.structs.replace(again, nonce=nonce, hash="0x" + "ff" * 32)]

    violations = audit(txs, history.expected, SIGNER, history.first_nonce)

    assert violations == [v for v in violations if v.startswith("duplicate")]
    assert len(violations) == 1 and again.order_id in violations[0]


@given(clean_histories(), st.data())
def test_property_an_injected_nonce_gap_is_always_found(history: History, data: st.DataObject):
    ours = sorted((tx for tx in history.txs if tx.sender == SIGNER), key=lambda tx: tx.nonce)
    if len(ours) < 2:
        return
    dropped = data.draw(st.sampled_from(ours[:-1]))  # not the last: a gap, not a shorter run
    txs = [tx for tx in history.txs if tx is not dropped]

    violations = audit(txs, history.expected, SIGNER, history.first_nonce)

    assert violations == [f"nonce: {SIGNER} skipped nonces {dropped.nonce} between "
                          f"{history.first_nonce} and {ours[-1].nonce}"]  # fmt: skip


@given(clean_histories(), st.data())
def test_property_an_injected_nonce_repeat_is_always_found(history: History, data: st.DataObject):
    ours = [tx for tx in history.txs if tx.sender == SIGNER]
    if not ours:
        return
    repeated = data.draw(st.sampled_from(ours))
    txs = [*history.txs, msgspec.structs.replace(repeated, order_id=None, hash="0x" + "ee" * 32)]

    violations = audit(txs, history.expected, SIGNER, history.first_nonce)

    assert violations == [f"nonce: {SIGNER} used nonces [{repeated.nonce}] more than once"]


@given(clean_histories(), st.integers(min_value=10_000, max_value=20_000))
def test_property_an_injected_unknown_order_is_always_found(history: History, stray: int):
    nonce = history.first_nonce + sum(1 for tx in history.txs if tx.sender == SIGNER)

    violations = audit([*history.txs, _tx(nonce, stray)], history.expected, SIGNER,
                       history.first_nonce)  # fmt: skip

    assert len(violations) == 1 and violations[0].startswith(f"unknown: order {_id(stray)}")
