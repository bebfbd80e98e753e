"""The executor's pre-trade checks (one test per denial code), its trips to HALTED, the
rolling windows as hypothesis properties, and its state across a restart."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.config import ExecutionConfig
from operators.model import Order
from operators.pretrade import (
    HOUR_MS,
    Denial,
    OracleView,
    Pretrade,
    TradingState,
    awaits_oracle,
    reduces,
)
from operators.units import e18

NOW = 1_700_000_000_000
ACTIVE = TradingState.ACTIVE
OK = OracleView(price=2_000.0, status="ok", window_end_ms=NOW - 1_000)
CFG = ExecutionConfig(
    max_order_notional_usd=100_000.0,
    max_hourly_notional_usd=250_000.0,
    max_submits_per_s=3.0,
    price_band_bps=200.0,
    oracle_heartbeat_s=300.0,
    stale_oracle_halt_s=900.0,
    max_error_rate=0.5,
    error_window=4,
    max_gas_per_hour_eth=0.01,
)


def _order(
    *,
    size: float = -10.0,
    position: float = 20.0,
    oracle_price: float = 2_000.0,
    asset: str = "ETH",
    valid_until_ms: int = NOW + 10**10,
    n: int = 0,
) -> Order:
    return Order(
        order_id="0x" + format(n, "064x"),
        kind="liquidation",
        account="0x" + "ab" * 20,
        instrument="0x" + "cd" * 32,
        size=size,
        size_e18=str(e18(size)) if math.isfinite(size) else "0",  # NaN sizes are tested too
        price=oracle_price,
        oracle_price=oracle_price,
        bonus_usd=0.0,
        reason="test",
        ts_event_ms=NOW - 1_000,
        health=0.9,
        worst_scenario=0,
        asset=asset,
        underlying_price=oracle_price,
        oracle_window_end_ms=NOW - 1_000,
        position=position,
        valid_until_ms=valid_until_ms,
    )


def _code(denial: Denial | None) -> str | None:
    return None if denial is None else denial.code


def test_order_within_every_limit_is_admitted() -> None:
    assert Pretrade(CFG).check(_order(), ACTIVE, OK, NOW) is None


def test_order_past_its_deadline_is_denied_expired_before_anything_else() -> None:
    denial = Pretrade(CFG).check(_order(valid_until_ms=NOW - 1), TradingState.HALTED, None, NOW)
    assert denial == Denial(code="expired", detail=f"now {NOW} ms is past valid_until {NOW - 1} ms")
    assert Pretrade(CFG).check(_order(valid_until_ms=NOW), ACTIVE, OK, NOW) is None


def test_order_when_halted_is_denied_halted() -> None:
    assert _code(Pretrade(CFG).check(_order(), TradingState.HALTED, OK, NOW)) == "halted"


@pytest.mark.parametrize(
    ("position", "size", "admitted"),
    [
        (20.0, -10.0, True),  # a long partly closed
        (20.0, -20.0, True),  # closed
        (20.0, -39.9, True),  # flipped to a smaller short
        (20.0, -40.0, False),  # flipped to as large a short
        (20.0, 5.0, False),  # grown
        (-5.0, 3.0, True),
        (-5.0, -1.0, False),
        (0.0, 1.0, False),  # opens a position
    ],
)
def test_order_when_reducing_is_admitted_only_if_it_reduces_the_position(
    position: float, size: float, admitted: bool
) -> None:
    order = _order(position=position, size=size, oracle_price=2_000.0)
    denial = Pretrade(CFG).check(order, TradingState.REDUCING, OK, NOW)
    assert (denial is None) == admitted
    if not admitted:
        assert _code(denial) == "reducing_only" and f"position {position:g}" in denial.detail


@given(st.floats(allow_nan=True), st.floats(allow_nan=True))
def test_reducing_property_admits_exactly_the_reducing_orders(position: float, size: float) -> None:
    cfg = ExecutionConfig(max_order_notional_usd=1e300, max_hourly_notional_usd=1e300)
    order = _order(position=position, size=size, oracle_price=1e-300)
    denial = Pretrade(cfg).check(
        order, TradingState.REDUCING, msgspec.structs.replace(OK, price=1e-300), NOW
    )
    reducing = abs(position + size) < abs(position)
    assert reduces(order) is reducing
    assert (_code(denial) != "reducing_only") is reducing


@given(
    st.lists(st.sampled_from(["ok", "stale"]), min_size=1, max_size=8),
    st.data(),
)
def test_an_order_is_checked_against_its_own_row_or_a_later_one_however_the_topics_interleave(
    statuses: list[str], data: st.DataObject
) -> None:
    # oracle rows of windows 1..n (one status each); an order computed from row k arrives
    # at any point of that stream, the executor's head time passing 1 window per row
    w = 60_000
    rows = [OracleView(price=2_000.0, status=s, window_end_ms=NOW + (n + 1) * w)
            for n, s in enumerate(statuses)]  # fmt: skip
    k = data.draw(st.integers(0, len(rows) - 1), label="computed from row")
    arrives = data.draw(st.integers(0, len(rows)), label="arrives after rows read")
    order = msgspec.structs.replace(
        _order(), oracle_window_end_ms=rows[k].window_end_ms,
        valid_until_ms=rows[k].window_end_ms + 2 * w,
    )  # fmt: skip
    pretrade = Pretrade(msgspec.structs.replace(CFG, max_submits_per_s=100.0))
    for read in range(arrives, len(rows) + 1):
        view = rows[read - 1] if read else None
        now = NOW + read * w  # the head time: the newest row read is fresh
        if not awaits_oracle(order, view, now):
            denial = pretrade.check(order, ACTIVE, view, now)
            if denial is not None and denial.code == "expired":
                return
            assert view is not None and view.window_end_ms >= order.oracle_window_end_ms
            expected = None if view.status == "ok" else "oracle_not_ok"
            assert _code(denial) == expected  # the row read, never an older one
            return
    pytest.fail("the order still waits with every row read")


def test_an_order_waits_for_its_row_only_until_its_deadline() -> None:
    order = msgspec.structs.replace(_order(), oracle_window_end_ms=NOW, valid_until_ms=NOW + 5)
    older = msgspec.structs.replace(OK, window_end_ms=NOW - 1)
    assert awaits_oracle(order, None, NOW + 5) and awaits_oracle(order, older, NOW + 5)
    assert not awaits_oracle(order, None, NOW + 6)
    assert _code(Pretrade(CFG).check(order, ACTIVE, None, NOW + 6)) == "expired"
    assert not awaits_oracle(order, msgspec.structs.replace(OK, window_end_ms=NOW), NOW)


def test_order_with_no_oracle_row_is_denied_no_oracle() -> None:
    assert _code(Pretrade(CFG).check(_order(), ACTIVE, None, NOW)) == "no_oracle"


@pytest.mark.parametrize("status", ["degraded", "stale", "OK", ""])
def test_order_when_oracle_not_ok_is_denied_oracle_not_ok(status: str) -> None:
    view = OracleView(price=2_000.0, status=status, window_end_ms=NOW)
    assert _code(Pretrade(CFG).check(_order(), ACTIVE, view, NOW)) == "oracle_not_ok"


def test_order_when_oracle_row_older_than_heartbeat_is_denied_oracle_stale() -> None:
    at_heartbeat = OracleView(price=2_000.0, status="ok", window_end_ms=NOW - 300_000)
    past = OracleView(price=2_000.0, status="ok", window_end_ms=NOW - 300_001)
    assert Pretrade(CFG).check(_order(), ACTIVE, at_heartbeat, NOW) is None
    denial = Pretrade(CFG).check(_order(), ACTIVE, past, NOW)
    assert denial == Denial(
        code="oracle_stale",
        detail="ETH: the latest oracle row is 300001 ms old > heartbeat 300000 ms",
    )


@pytest.mark.parametrize(
    ("order_price", "admitted"),
    [(2_039.9, True), (1_960.1, True), (2_040.1, False), (1_959.9, False), (math.nan, False)],
)
def test_order_price_outside_the_band_is_denied_price_band(
    order_price: float, admitted: bool
) -> None:
    order = _order(oracle_price=order_price, size=-1.0)
    denial = Pretrade(CFG).check(order, ACTIVE, OK, NOW)
    assert (denial is None) == admitted
    if not admitted:
        assert _code(denial) == "price_band" and "from the oracle's 2000" in denial.detail


def test_oracle_row_with_no_positive_price_is_denied_price_band_not_a_crash() -> None:
    zero = OracleView(price=0.0, status="ok", window_end_ms=NOW)
    assert _code(Pretrade(CFG).check(_order(), ACTIVE, zero, NOW)) == "price_band"


def test_order_over_the_notional_cap_is_denied_notional() -> None:
    assert Pretrade(CFG).check(_order(size=-50.0, position=50.0), ACTIVE, OK, NOW) is None
    denial = Pretrade(CFG).check(_order(size=-50.001, position=60.0), ACTIVE, OK, NOW)
    assert _code(denial) == "notional"
    assert denial is not None and "100002.00 USD > 100000.00 USD" in denial.detail


@pytest.mark.parametrize("size", [math.nan, math.inf, -math.inf])
def test_order_with_nan_or_infinite_size_is_denied_notional(size: float) -> None:
    assert _code(Pretrade(CFG).check(_order(size=size), ACTIVE, OK, NOW)) == "notional"


def test_orders_over_the_hourly_notional_of_their_asset_are_denied_hourly_notional() -> None:
    pretrade = Pretrade(CFG)
    for i in range(2):  # 2 x 100k of ETH
        order = _order(size=-50.0, position=50.0, n=i)
        assert pretrade.check(order, ACTIVE, OK, NOW + i * SECOND) is None
        pretrade.record_submit(order, NOW + i * SECOND)

    big = _order(size=-25.0005, position=50.0, n=3)  # 50.001k more: 250.001k in the hour
    denial = pretrade.check(big, ACTIVE, OK, NOW + 2 * SECOND)
    btc = OracleView(price=2_000.0, status="ok", window_end_ms=NOW)

    assert _code(denial) == "hourly_notional"
    assert denial is not None and denial.detail.startswith("ETH: 200000.00 USD in the last 3600 s")
    assert pretrade.check(_order(size=-25.0, n=4), ACTIVE, OK, NOW + 2 * SECOND) is None
    assert pretrade.check(_order(size=-40.0, asset="BTC"), ACTIVE, btc, NOW + 2 * SECOND) is None
    # the first submit leaves the window 3600 s after it: 3,599,999 ms after, it still counts
    later = OracleView(price=2_000.0, status="ok", window_end_ms=NOW + HOUR_MS)
    assert _code(pretrade.check(big, ACTIVE, later, NOW + HOUR_MS - 1)) == "hourly_notional"
    assert pretrade.check(big, ACTIVE, later, NOW + HOUR_MS) is None


SECOND = 1_000


def test_submits_over_the_rate_in_1000_ms_are_denied_submit_rate() -> None:
    pretrade = Pretrade(CFG)  # 3 per second
    for t in (0, 10, 999):
        assert pretrade.check(_order(n=t), ACTIVE, OK, NOW + t) is None
        pretrade.record_submit(_order(n=t, size=-0.01), NOW + t)

    denial = pretrade.check(_order(n=5), ACTIVE, OK, NOW + 999)

    assert denial == Denial(code="submit_rate", detail="3 submits in the last 1000 ms; at most 3")
    assert pretrade.check(_order(n=5), ACTIVE, OK, NOW + 1_000) is None  # the first left


def test_replacements_count_in_the_rate_window() -> None:
    pretrade = Pretrade(CFG)
    for t in range(3):
        pretrade.record_replacement(NOW + t)
    assert _code(pretrade.rate_denial(NOW + 3)) == "submit_rate"
    assert _code(pretrade.check(_order(), ACTIVE, OK, NOW + 3)) == "submit_rate"
    assert pretrade.rate_denial(NOW + 1_000) is None


def test_fractional_rate_limit_admits_its_floor_and_below_one_is_refused_at_start() -> None:
    pretrade = Pretrade(ExecutionConfig(max_submits_per_s=2.5))
    pretrade.record_replacement(NOW)
    assert pretrade.rate_denial(NOW) is None
    pretrade.record_replacement(NOW)
    assert _code(pretrade.rate_denial(NOW)) == "submit_rate"
    with pytest.raises(ValueError, match=r"max_submits_per_s must be >= 1.*got 0.5"):
        Pretrade(ExecutionConfig(max_submits_per_s=0.5))


def test_checks_run_in_their_documented_order() -> None:
    stale = OracleView(price=1.0, status="ok", window_end_ms=0)
    order = _order(size=-1e9, position=0.0, oracle_price=10.0)  # grows, far off, huge
    pretrade = Pretrade(CFG)
    assert _code(pretrade.check(order, TradingState.REDUCING, stale, NOW)) == "reducing_only"
    assert _code(pretrade.check(order, ACTIVE, None, NOW)) == "no_oracle"
    assert _code(pretrade.check(order, ACTIVE, stale, NOW)) == "oracle_stale"
    assert _code(pretrade.check(order, ACTIVE, OK, NOW)) == "price_band"
    near = OracleView(price=10.0, status="ok", window_end_ms=NOW)
    assert _code(pretrade.check(order, ACTIVE, near, NOW)) == "notional"


# the windows, as properties: a stream of orders in time order, each sent when admitted

HOURLY_CAP = 1.0
"""USD an hour in the property below: orders of 1 USD at most, at a price of 1 USD."""
hour_gaps = st.one_of(
    st.sampled_from([0, 1, HOUR_MS // 2, HOUR_MS - 1, HOUR_MS, HOUR_MS + 1]),
    st.integers(min_value=0, max_value=2 * HOUR_MS),
)  # ms since the previous order: the edges of the window, and anything
sizes = st.one_of(
    st.sampled_from([0.1, 0.2, 0.3, 0.25, 0.5, 1.0, 1 / 3]),  # sums that floats round
    st.floats(min_value=0.0, max_value=1.0),
)


@given(st.lists(st.tuples(hour_gaps, sizes), max_size=40))
def test_hourly_property_no_3600_s_window_of_submits_exceeds_the_cap(
    steps: list[tuple[int, float]],
) -> None:
    cfg = ExecutionConfig(max_hourly_notional_usd=HOURLY_CAP, max_submits_per_s=1e6,
                          oracle_heartbeat_s=1e9)  # fmt: skip
    pretrade = Pretrade(cfg)
    sent: list[tuple[int, float]] = []
    now = NOW
    for n, (gap, size) in enumerate(steps):
        now += gap
        order = _order(size=-size, position=size, oracle_price=1.0, n=n)
        denial = pretrade.check(order, ACTIVE, OK_AT_1, now)
        window = sum((Fraction(x) for t, x in sent if now - t < HOUR_MS), Fraction(0))
        fits = window + Fraction(size) <= HOURLY_CAP  # exact: the floats' own values
        assert (denial is None) == fits, (denial, float(window))
        if denial is None:
            pretrade.record_submit(order, now)
            sent.append((now, size))
    for start, _ in sent:  # every window that starts at a submit (the fullest ones)
        assert sum(Fraction(x) for t, x in sent if 0 <= t - start < HOUR_MS) <= HOURLY_CAP


OK_AT_1 = OracleView(price=1.0, status="ok", window_end_ms=NOW)


def test_hourly_sum_is_exact_so_float_rounding_never_admits_past_the_cap() -> None:
    # ten orders of 0.1 USD: the float running sum is 0.9999999999999999, but the ten
    # floats 0.1 hold 1.0000000000000000555 USD: the tenth would pass a cap of 1 USD
    pretrade = Pretrade(ExecutionConfig(max_hourly_notional_usd=1.0))
    for n in range(9):
        order = _order(size=-0.1, position=1.0, oracle_price=1.0, n=n)
        assert pretrade.check(order, ACTIVE, OK_AT_1, NOW) is None
        pretrade.record_submit(order, NOW)
    tenth = _order(size=-0.1, position=1.0, oracle_price=1.0, n=9)
    assert sum([0.1] * 10) < 1.0
    assert _code(pretrade.check(tenth, ACTIVE, OK_AT_1, NOW)) == "hourly_notional"


rate_gaps = st.sampled_from([0, 1, 499, 998, 999, 1_000, 1_001])
"""ms since the previous submit: the window's edges, reached from every start."""


@given(st.lists(rate_gaps, max_size=60), st.booleans())
def test_rate_property_no_1000_ms_window_holds_more_than_the_limit(
    gaps: list[int], replacements: bool
) -> None:
    pretrade = Pretrade(CFG)  # 3 per second
    sent: list[int] = []
    now = NOW
    for n, gap in enumerate(gaps):
        now += gap
        admitted = (
            pretrade.rate_denial(now) is None
            if replacements and n % 2
            else pretrade.check(_order(size=-0.001, n=n), ACTIVE, OK, now) is None
        )
        assert admitted == (sum(1 for t in sent if now - t < 1_000) < 3)
        if admitted:
            if replacements and n % 2:
                pretrade.record_replacement(now)
            else:
                pretrade.record_submit(_order(size=-0.001, n=n), now)
            sent.append(now)
    for start in sent:
        assert sum(1 for t in sent if 0 <= t - start < 1_000) <= 3


# trips


def test_error_rate_trips_only_once_the_window_is_full_and_over_the_limit() -> None:
    pretrade = Pretrade(CFG)  # 4 outcomes, > 50%
    for failed in (True, True, True):
        pretrade.record_outcome(failed)
    assert pretrade.trip(NOW, {}) is None  # 3 of 3 failed, but the window holds 4
    pretrade.record_outcome(False)
    assert pretrade.trip(NOW, {}) == (
        "error_rate",
        "3 of the last 4 outcomes failed (75%) > 50%",
    )
    pretrade.record_outcome(False)  # the oldest failure leaves: 2 of 4 is not > 50%
    assert pretrade.trip(NOW, {}) is None


def test_gas_spend_over_the_hourly_cap_trips_and_leaves_with_the_hour() -> None:
    pretrade = Pretrade(CFG)  # 0.01 ETH an hour
    pretrade.record_fee(6 * 10**15, NOW)
    pretrade.record_fee(4 * 10**15, NOW + 1)
    assert pretrade.trip(NOW + 1, {}) is None  # exactly the cap is not over it
    pretrade.record_fee(1, NOW + 2)

    tripped = pretrade.trip(NOW + 2, {})

    assert tripped == (
        "gas_spend",
        "10000000000000001 wei of fees in the last 3600 s > 10000000000000000 wei (0.01 ETH)",
    )
    assert pretrade.trip(NOW + HOUR_MS, {}) is None  # the 6e15 left the hour


def test_stale_oracle_trips_after_a_continuous_stale_streak_of_its_assets() -> None:
    pretrade = Pretrade(CFG)  # heartbeat 300 s, halt after 900 s
    pretrade.check(_order(), ACTIVE, OK, NOW)  # an ETH order was seen
    degraded = {"ETH": OracleView(price=2_000.0, status="degraded", window_end_ms=NOW)}
    unrelated = {"ETH": OK, "BTC": OracleView(price=1.0, status="stale", window_end_ms=0)}

    assert pretrade.trip(NOW, unrelated) is None  # no order for BTC seen
    assert pretrade.trip(NOW + 1, degraded) is None  # the streak starts
    assert pretrade.trip(NOW + 1 + 900_000, degraded) is None  # 900 s is not > 900 s
    tripped = pretrade.trip(NOW + 2 + 900_000, degraded)
    assert tripped is not None and tripped[0] == "stale_oracle"
    assert tripped[1] == (
        f"ETH: oracle stale since {NOW + 1} ms (status 'degraded', window end {NOW} ms): "
        "900001 ms > 900000 ms"
    )


def test_stale_oracle_streak_is_broken_by_a_fresh_ok_row() -> None:
    pretrade = Pretrade(CFG)
    pretrade.check(_order(), ACTIVE, OK, NOW)
    old = {"ETH": OracleView(price=2_000.0, status="ok", window_end_ms=NOW - 400_000)}
    fresh = {"ETH": OracleView(price=2_000.0, status="ok", window_end_ms=NOW + 500_000)}
    assert pretrade.trip(NOW, old) is None  # older than the heartbeat: the streak starts
    assert pretrade.trip(NOW + 500_000, fresh) is None  # broken
    assert pretrade.trip(NOW + 1_000_000, {}) is None  # no row: a new streak starts here
    tripped = pretrade.trip(NOW + 1_900_001, {})
    assert tripped is not None and "no row" in tripped[1]


def test_resume_starts_the_trip_windows_afresh() -> None:
    pretrade = Pretrade(CFG)
    for _ in range(4):
        pretrade.record_outcome(True)
    pretrade.record_fee(10**17, NOW)
    assert pretrade.trip(NOW, {}) is not None
    pretrade.resume()
    assert pretrade.trip(NOW, {}) is None


def test_state_round_trips_through_json_and_checks_the_same_after_a_restart() -> None:
    pretrade = Pretrade(CFG)
    pretrade.check(_order(), ACTIVE, OK, NOW)
    pretrade.record_submit(_order(size=-50.0, position=50.0, n=1), NOW)
    pretrade.record_submit(_order(size=-50.0, position=50.0, n=2), NOW)
    pretrade.record_submit(_order(size=-0.1 * 3, position=50.0, n=3), NOW + 1)  # 200.6k
    pretrade.record_replacement(NOW + 2)
    pretrade.record_outcome(True)
    pretrade.record_fee(2**70, NOW)  # wei beyond 64 bits
    pretrade.trip(NOW + 3, {})  # starts the ETH stale streak

    stored = json.loads(json.dumps(pretrade.to_builtins()))
    restored = Pretrade.from_builtins(CFG, stored)

    assert restored.to_builtins() == pretrade.to_builtins()
    assert _code(restored.check(_order(n=9), ACTIVE, OK, NOW + 3)) == "submit_rate"
    for probe in (_order(size=-24.6, n=9), _order(size=-24.8, n=9), _order(n=9)):
        for now in (NOW + 3, NOW + 1_002):
            assert restored.check(probe, ACTIVE, OK, now) == pretrade.check(probe, ACTIVE, OK, now)
    assert restored.check(_order(size=-24.6, n=9), ACTIVE, OK, NOW + 1_002) is None
    assert _code(restored.check(_order(size=-24.8, n=9), ACTIVE, OK, NOW + 1_002)) == (
        "hourly_notional"
    )
    assert restored.trip(NOW + 3, {}) == pretrade.trip(NOW + 3, {})
    assert restored.trip(NOW + 900_004, {}) == pretrade.trip(NOW + 900_004, {})
    assert restored.trip(NOW + 900_004, {}) is not None


def test_option_leg_when_its_premium_is_far_from_spot_then_the_band_reads_the_underlying() -> None:
    # The demo's finding: every option leg was denied price_band, its premium (oracle_price)
    # compared with the underlying's oracle row.
    option = msgspec.structs.replace(_order(oracle_price=2_000.0), price=95.0, oracle_price=90.0)
    view = OracleView(price=2_000.0, status="ok", window_end_ms=NOW - 1_000)
    assert Pretrade(CFG).check(option, TradingState.ACTIVE, view, NOW) is None
    moved = msgspec.structs.replace(option, underlying_price=2_100.0)
    assert _code(Pretrade(CFG).check(moved, TradingState.ACTIVE, view, NOW)) == "price_band"
