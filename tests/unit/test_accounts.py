"""Account books: exact, linear, order-independent fills, undone by retractions; and
what the book refuses (bounds, withdrawals above the balance, unknown retractions)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.accounts import E18, MAX_UNITS, Book, listing_rejection, shard_keys, shard_of
from operators.units import InstrumentKind
from operators.venue import CollateralMove, Fill, InstrumentListed

TOKEN = "0x" + "f" * 40
RETAIN = 64

ACCOUNTS = ["0x" + c * 40 for c in "abc"]
INSTRUMENTS = ["0x" + c * 64 for c in "de"]

fills = st.builds(
    Fill,
    account=st.sampled_from(ACCOUNTS),
    instrument=st.sampled_from(INSTRUMENTS),
    size_e18=st.integers(-10 * E18, 10 * E18),
    price_e18=st.integers(1, 5_000 * E18),
    liquidator=st.none(),
    order_id=st.none(),
    ts_ms=st.just(0),
    seq=st.integers(0, 100),
    removed=st.just(False),
)
deposits = st.builds(
    CollateralMove,
    account=st.sampled_from(ACCOUNTS),
    token=st.just(TOKEN),
    amount=st.integers(0, 10**12),
    ts_ms=st.just(0),
    seq=st.integers(0, 100),
    removed=st.just(False),
)
events = st.lists(st.one_of(fills, deposits), max_size=30)


def _book(evs: list) -> Book:
    book = Book()
    for e in evs:
        assert book.apply(e, 6, RETAIN) is None
    return book


def _removed(event):  # type: ignore[no-untyped-def]
    return msgspec.structs.replace(event, removed=True)


@given(events, st.randoms())
def test_book_does_not_depend_on_event_order(evs: list, rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    a, b = _book(evs), _book(shuffled)
    assert (a.collateral, a.size, a.cost) == (b.collateral, b.size, b.cost)


@given(events, events)
def test_retracting_events_undoes_them_exactly(kept: list, orphaned: list) -> None:
    book = _book(kept + orphaned)
    for e in orphaned:
        assert book.apply(_removed(e), 6, RETAIN) is None
    clean = _book(kept)
    assert (book.collateral, book.size, book.cost) == (clean.collateral, clean.size, clean.cost)


def _fill(size_e18: int, price_e18: int = 2_000 * E18, seq: int = 1 << 20) -> Fill:
    return Fill(
        account=ACCOUNTS[0], instrument=INSTRUMENTS[0], size_e18=size_e18, price_e18=price_e18,
        liquidator=None, order_id=None, ts_ms=0, seq=seq, removed=False,
    )  # fmt: skip


def _move(amount: int, seq: int = 1 << 20) -> CollateralMove:
    return CollateralMove(
        account=ACCOUNTS[0], token=TOKEN, amount=amount, ts_ms=0, seq=seq, removed=False
    )


def test_removed_trade_never_added_goes_to_the_deadletter_not_a_phantom_position() -> None:
    # The finding: a removed: true Trade that was never added created a position (and 8
    # liquidation legs for an account that never existed).
    book = Book()
    reason = book.apply(_removed(_fill(5 * E18)), 6, RETAIN)
    assert reason is not None and reason.startswith("retraction_unknown:")
    assert book.size == {} and book.accounts == {}


@given(st.one_of(fills, deposits), st.lists(st.one_of(fills, deposits), max_size=10))
def test_a_retraction_must_match_an_applied_event(event, others: list) -> None:  # type: ignore[no-untyped-def]
    book = _book(others)
    before = (dict(book.collateral), dict(book.size), dict(book.cost))
    matches = any(_removed(o) == _removed(event) for o in others)
    reason = book.apply(_removed(event), 6, RETAIN)
    assert (reason is None) == matches
    if reason is not None:
        assert reason.startswith("retraction_unknown:")
        assert (book.collateral, book.size, book.cost) == before


def test_retraction_older_than_the_retained_blocks_is_unknown() -> None:
    book = Book()
    old = _fill(E18, seq=1 << 20)
    assert book.apply(old, 6, RETAIN) is None
    assert book.apply(_fill(E18, seq=(2 + RETAIN) << 20), 6, RETAIN) is None
    assert (book.apply(_removed(old), 6, RETAIN) or "").startswith("retraction_unknown:")


def test_trade_of_size_2_pow_255_minus_1_goes_to_the_deadletter_never_a_position() -> None:
    # The finding: it produced orders of -2.5e58 contracts.
    book = Book()
    reason = book.apply(_fill(2**255 - 1), 6, RETAIN)
    assert reason is not None and reason.startswith("out_of_bounds: size")
    assert book.size == {}


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (_fill(MAX_UNITS * E18 + 1), "out_of_bounds: size"),
        (_fill(-(MAX_UNITS * E18) - 1), "out_of_bounds: size"),
        (_fill(E18, MAX_UNITS * E18 + 1), "out_of_bounds: price"),
        (_fill(E18, -1), "out_of_bounds: price"),
        (_fill(10**9 * E18, 10**9 * E18), "out_of_bounds: notional"),
        (_move(MAX_UNITS * 10**6 + 1), "out_of_bounds: amount"),
    ],
)
def test_sizes_prices_and_amounts_beyond_the_bounds_are_refused(event, code: str) -> None:  # type: ignore[no-untyped-def]
    book = Book()
    assert (book.apply(event, 6, RETAIN) or "").startswith(code)
    assert (book.size, book.collateral) == ({}, {})
    assert book.apply(_fill(MAX_UNITS * E18, 1), 6, RETAIN) is None  # the bound itself is fine


def test_withdrawal_above_the_balance_goes_to_the_deadletter() -> None:
    # The finding: such a Withdraw produced 35 liquidation legs at health -4.8e19.
    book = Book()
    assert book.apply(_move(100 * 10**6), 6, RETAIN) is None
    reason = book.apply(_move(-101 * 10**6, seq=2 << 20), 6, RETAIN)
    assert reason is not None and reason.startswith("withdraw_above_balance:")
    assert book.collateral == {(ACCOUNTS[0], TOKEN): 100 * 10**6}
    assert book.apply(_move(-100 * 10**6, seq=3 << 20), 6, RETAIN) is None
    assert book.collateral == {}


@given(st.lists(st.integers(-(10**9), 10**9), max_size=20))
def test_no_withdrawal_takes_a_balance_below_zero(amounts: list[int]) -> None:
    book = Book()
    balance = 0
    for n, amount in enumerate(amounts):
        reason = book.apply(_move(amount, seq=(n + 1) << 20), 6, RETAIN)
        assert (reason is None) == (balance + amount >= 0 or amount >= 0)
        balance += amount if reason is None else 0
        assert book.collateral.get((ACCOUNTS[0], TOKEN), 0) == balance >= 0


def test_settlement_moves_size_times_intrinsic_less_cost_to_cash_exactly() -> None:
    book = _book([_fill(3 * E18, 80 * E18), _fill(-E18, 95 * E18, seq=2 << 20)])
    (settled,) = book.settle(INSTRUMENTS[0], 120 * E18)
    # held 2; cost 3 x 80 - 95 = 145: paid 2 x 120 = 240, cash 95
    assert (settled.size_e18, settled.paid_e36, settled.cash_e36) == (
        2 * E18, 240 * E18 * E18, 95 * E18 * E18
    )  # fmt: skip
    assert book.size == {} and book.cost == {} and book.cash == {ACCOUNTS[0]: 95 * E18 * E18}
    assert book.cash_usd().tolist() == [95.0]
    assert book.positions({INSTRUMENTS[0]: 0}).nnz == 0


@pytest.mark.parametrize(
    ("kind", "strike_e18", "expiry_s", "bad"),
    [
        (InstrumentKind.CALL, 0, 1, True),
        (InstrumentKind.PUT, MAX_UNITS * E18 + 1, 1, True),
        (InstrumentKind.CALL, E18, 0, True),
        (InstrumentKind.CALL, E18, 2**64 - 1, True),
        (InstrumentKind.CALL, 2_000 * E18, 1_767_225_600, False),
        (InstrumentKind.PERP, 0, 0, False),
    ],
)
def test_listing_of_an_option_needs_a_strike_and_an_expiry_in_bounds(
    kind: InstrumentKind, strike_e18: int, expiry_s: int, bad: bool
) -> None:
    listing = InstrumentListed(
        instrument=INSTRUMENTS[0], underlying=TOKEN, kind=kind, strike_e18=strike_e18,
        expiry_s=expiry_s, ts_ms=0, seq=0, removed=False,
    )  # fmt: skip
    assert (listing_rejection(listing) is not None) == bad


def test_pnl_is_size_times_mark_minus_cost_after_partial_close() -> None:
    a, perp = ACCOUNTS[0], INSTRUMENTS[0]
    book = _book(
        [
            Fill(
                account=a,
                instrument=perp,
                size_e18=2 * E18,
                price_e18=100 * E18,
                liquidator=None,
                order_id=None,
                ts_ms=0,
                seq=1,
                removed=False,
            ),
            Fill(
                account=a,
                instrument=perp,
                size_e18=-1 * E18,
                price_e18=130 * E18,
                liquidator=None,
                order_id=None,
                ts_ms=0,
                seq=2,
                removed=False,
            ),
        ]
    )
    size, cost = book.size[(a, perp)], book.cost[(a, perp)]
    # Bought 2 at 100, sold 1 at 130: realised 30; 1 left, marked at 120: unrealised 20.
    assert size * 120 - cost // E18 == 50 * E18


def test_positions_matrix_has_one_row_per_account_and_signed_units() -> None:
    a, b = ACCOUNTS[:2]
    book = _book(
        [
            Fill(
                account=a,
                instrument=INSTRUMENTS[0],
                size_e18=3 * E18,
                price_e18=E18,
                liquidator=None,
                order_id=None,
                ts_ms=0,
                seq=1,
                removed=False,
            ),
            Fill(
                account=b,
                instrument=INSTRUMENTS[1],
                size_e18=-E18 // 2,
                price_e18=E18,
                liquidator=None,
                order_id=None,
                ts_ms=0,
                seq=2,
                removed=False,
            ),
            CollateralMove(
                account=b, token="0x" + "f" * 40, amount=5, ts_ms=0, seq=3, removed=False
            ),
        ]
    )
    m = book.positions({INSTRUMENTS[0]: 0, INSTRUMENTS[1]: 1}).toarray()
    assert m.tolist() == [[3.0, 0.0], [0.0, -0.5]]
    assert book.costs().tolist() == [3.0, -0.5]


def test_shard_is_stable_and_in_range() -> None:
    assert [shard_of(a, 4) for a in ACCOUNTS] == [shard_of(a, 4) for a in ACCOUNTS]
    assert all(shard_of(a, 4) in shard_keys(4) for a in ACCOUNTS)
