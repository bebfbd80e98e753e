"""The report's data shaping (operators.report_data): examples, and properties over random
frames (never raises; keeps row counts and sums)."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import report_data as rd

T0 = 1_767_225_600_000
MIN = 60_000

times = st.integers(min_value=-(2**40), max_value=2**42)
healths = st.one_of(st.floats(min_value=-5.0, max_value=1e6, allow_nan=False), st.just(math.inf))


def _prices(rows: list[tuple[str, int, int, str, bool, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "asset": a,
                "window_start_ms": s,
                "window_end_ms": s + MIN,
                "price": p,
                "confidence": 1.0,
                "sources": 3,
                "status": status,
                "held": held,
                "revision": rev,
            }
            for a, s, p, status, held, rev in rows
        ],
        schema={
            "asset": pl.String,
            "window_start_ms": pl.Int64,
            "window_end_ms": pl.Int64,
            "price": pl.Float64,
            "confidence": pl.Float64,
            "sources": pl.Int32,
            "status": pl.String,
            "held": pl.Boolean,
            "revision": pl.Int32,
        },
    )


def test_flagged_windows_when_corrected_then_latest_revision_counts() -> None:
    prices = _prices(
        [
            ("ETH", T0, 2000, "degraded", False, 0),
            ("ETH", T0, 2001, "ok", False, 1),  # the correction is ok
            ("ETH", T0 + MIN, 2002, "stale", True, 0),
            ("BTC", T0, 60000, "ok", False, 0),
        ]
    )
    flagged = rd.flagged_windows(prices)
    assert sorted(flagged.select("asset", "flag", "window_start_ms").rows()) == [
        ("ETH", "held", T0 + MIN),
        ("ETH", "stale", T0 + MIN),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ETH", "BTC"]),
            st.integers(0, 20),
            st.sampled_from(["ok", "degraded", "stale"]),
            st.booleans(),
            st.integers(0, 2),
        ),
        max_size=60,
    )
)
def test_flagged_windows_count_each_flag_of_each_latest_window(rows: list) -> None:
    prices = _prices([(a, T0 + w * MIN, 1.0, s, h, r) for a, w, s, h, r in rows])
    latest = rd.latest_revisions(prices)
    flagged = rd.flagged_windows(prices)
    expected = (latest["status"] != "ok").sum() + latest["held"].sum() if latest.height else 0
    assert flagged.height == expected
    assert latest.select("asset", "window_start_ms").is_unique().all()


def test_deadletter_by_reason_groups_by_code_before_the_colon() -> None:
    dl = pl.DataFrame(
        {
            "stage": ["decode", "decode", "intake"],
            "reason": ["invalid_json: at 3", "invalid_json: at 9", "late: window ending 5"],
            "timestamp_ms": [T0, T0 + 5_000, T0 + 70_000],
        }
    )
    out = rd.deadletter_by_reason(dl, MIN)
    assert out.rows() == [(T0, "decode", "invalid_json", 2), (T0 + MIN, "intake", "late", 1)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=3), st.text(max_size=12), times), max_size=80),
    st.integers(1, 10**8),
)
def test_deadletter_by_reason_counts_sum_to_the_rows(rows: list, bucket_ms: int) -> None:
    dl = pl.DataFrame(
        rows, schema={"stage": pl.String, "reason": pl.String, "timestamp_ms": pl.Int64},
        orient="row",
    )  # fmt: skip
    out = rd.deadletter_by_reason(dl, bucket_ms)
    assert out["count"].sum() == len(rows)
    assert out.select("bucket_ms", "stage", "code").is_unique().all()
    assert ((out["bucket_ms"] % bucket_ms) == 0).all()


def test_deadletter_by_reason_when_bucket_not_positive_then_error_names_it() -> None:
    with pytest.raises(ValueError, match="bucket_ms must be > 0; got 0"):
        rd.deadletter_by_reason(pl.DataFrame(), 0)


def _risk(rows: list[tuple[str, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"account": pl.String, "ts_event_ms": pl.Int64, "health": pl.Float64},
        orient="row",
    )  # fmt: skip


def test_health_over_time_carries_an_account_forward_between_its_rows() -> None:
    risk = _risk([("a", T0, 2.0), ("a", T0 + 3 * MIN, 0.5), ("b", T0 + MIN, math.inf)])
    out = rd.health_over_time(risk, MIN)
    assert out.rows() == [
        (T0, "a", 2.0),
        (T0 + MIN, "a", 2.0),
        (T0 + MIN, "b", math.inf),
        (T0 + 2 * MIN, "a", 2.0),
        (T0 + 2 * MIN, "b", math.inf),
        (T0 + 3 * MIN, "a", 0.5),
        (T0 + 3 * MIN, "b", math.inf),
    ]
    q = rd.health_quantiles(out)
    assert q["accounts"].to_list() == [1, 2, 2, 2]
    assert q["under_mm"].to_list() == [0, 0, 0, 1]
    assert q["p50"].to_list() == [2.0, 2.0, 2.0, 0.5]  # +inf is not a quantile


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 50 * MIN), healths), max_size=60),
    st.sampled_from([1_000, MIN, 7 * MIN]),
)
def test_health_over_time_one_row_per_bucket_and_account_ending_on_its_last(
    rows: list, bucket_ms: int
) -> None:
    risk = _risk([(a, T0 + t, h) for a, t, h in rows])
    out = rd.health_over_time(risk, bucket_ms)
    assert out.select("bucket_ms", "account").is_unique().all()
    for account in {a for a, _, _ in rows}:
        mine = sorted((t, i) for i, (a, t, _) in enumerate(rows) if a == account)
        first_bucket = (T0 + mine[0][0]) // bucket_ms * bucket_ms
        last_health = rows[mine[-1][1]][2]
        # a stable sort keeps the rows' order among equal times: the last given wins
        series = out.filter(pl.col("account") == account)
        assert series["bucket_ms"][0] == first_bucket
        assert series["health"][-1] == last_health
    q = rd.health_quantiles(out)
    assert q["accounts"].sum() == out.height
    ends = rd.first_and_last_health(risk)
    assert ends.height == len({a for a, _, _ in rows})
    assert dict(ends.select("account", "last").rows()) == dict(
        out.group_by("account").agg(pl.col("health").last()).rows()
    )
    assert (q["under_mm"] <= q["accounts"]).all()


def test_order_outcomes_take_the_latest_seq_else_not_executed() -> None:
    orders = pl.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "kind": ["liquidation", "liquidation", "hedge"],
            "account": ["a", "a", "b"],
            "instrument": ["i", "i", "p"],
            "ts_event_ms": [T0, T0, T0 + MIN],
            "size": [-1.0, -2.0, 0.5],
        }
    )
    executions = pl.DataFrame(
        {"order_id": ["o1", "o1", "o2"], "seq": [2, 1, 1], "state": ["mined", "sent", "denied"]}
    )
    out = rd.order_outcomes(orders, executions)
    assert out["outcome"].to_list() == ["mined", "denied", rd.NO_EXECUTION]
    assert rd.order_outcomes(orders, None)["outcome"].to_list() == [rd.NO_EXECUTION] * 3


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["o1", "o2", "o3", "o4"]), max_size=20),
    st.lists(
        st.tuples(
            st.sampled_from(["o1", "o2", "o5"]),
            st.integers(1, 5),
            st.sampled_from(["sent", "mined", "reverted"]),
        ),
        max_size=20,
    ),
)
def test_order_outcomes_keep_one_row_per_order_row(ids: list, execs: list) -> None:
    orders = pl.DataFrame(
        {
            "order_id": ids,
            "kind": ["hedge"] * len(ids),
            "account": ["a"] * len(ids),
            "instrument": ["i"] * len(ids),
            "ts_event_ms": [T0] * len(ids),
            "size": [1.0] * len(ids),
        },
        schema_overrides={"order_id": pl.String, "ts_event_ms": pl.Int64},
    )
    executions = pl.DataFrame(
        execs, schema={"order_id": pl.String, "seq": pl.Int32, "state": pl.String}, orient="row"
    )
    out = rd.order_outcomes(orders, executions)
    assert out["order_id"].to_list() == ids
    for order_id, outcome in out.select("order_id", "outcome").rows():
        seqs = [(s, state) for o, s, state in execs if o == order_id]
        if not seqs:
            assert outcome == rd.NO_EXECUTION
        else:
            top = max(s for s, _ in seqs)
            assert outcome in {state for s, state in seqs if s == top}


def test_book_greeks_add_the_wallet_to_delta() -> None:
    risk = pl.DataFrame(
        {
            "account": ["a"],
            "ts_event_ms": [T0],
            "greeks": [json.dumps({"ETH": {"delta": -3.0, "gamma": 0.01, "vega": 50.0}})],
            "wallet": [json.dumps({"ETH": 2.5, "BTC": 0.1})],
        }
    )
    out = rd.book_greeks(risk)
    assert out.rows() == [("a", T0, "BTC", 0.1, 0.0, 0.0), ("a", T0, "ETH", -0.5, 0.01, 50.0)]
    assert rd.top_books(out, 5) == ["a"]


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), json_values, json_values), max_size=10))
def test_book_greeks_never_raise_and_give_one_row_per_underlying(rows: list) -> None:
    risk = pl.DataFrame(
        [(a, T0, json.dumps(g), json.dumps(w)) for a, g, w in rows],
        schema={
            "account": pl.String,
            "ts_event_ms": pl.Int64,
            "greeks": pl.String,
            "wallet": pl.String,
        },
        orient="row",
    )
    out = rd.book_greeks(risk)
    expected = sum(
        len(set(g if isinstance(g, dict) else {}) | set(w if isinstance(w, dict) else {}))
        for _, g, w in rows
    )
    assert out.height == expected
    assert len(rd.top_books(out, 1)) == min(1, out["account"].n_unique())


@given(times, times, st.integers(1, 500))
def test_bucket_width_gives_at_most_the_buckets_asked(a: int, b: int, buckets: int) -> None:
    start, end = min(a, b), max(a, b)
    width = rd.bucket_width_ms(start, end, buckets)
    assert width > 0 and (end - start) / width <= buckets
    assert width < rd.DAY_MS or width % rd.DAY_MS == 0
