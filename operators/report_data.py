"""The report's data shaping: the output datasets (polars frames) in, plot-ready frames out.

Pure functions, no I/O: ``flows.cli.report`` reads the Parquet outputs and draws what
these return. Times are ms since the epoch (event time) as in ``operators.model``; a
bucket is labelled by its start, ``bucket_ms`` wide.
"""

from __future__ import annotations

import json

import polars as pl

STATUS_FLAGS = ("degraded", "stale", "held")
"""The kinds of oracle window the report marks, besides ``ok`` ones."""
NO_EXECUTION = "not executed"
"""The outcome of an order with no row in ``executions/``."""


TIME_AXIS_MS = (946_684_800_000, 4_102_444_800_000)
"""The event times a chart's time axis can show, [2000-01-01, 2100-01-01) UTC in ms: a
deadletter row's ``timestamp_ms`` is the message's as it was, and may be anything."""
DAY_MS = 86_400_000


def bucket_width_ms(start_ms: int, end_ms: int, buckets: int = 40) -> int:
    """A round bucket width (1 s, 10 s, 1 min, 5 min, 15 min, 1 h, 6 h, else whole days),
    the first giving at most ``buckets`` buckets over [start, end]."""
    if buckets <= 0:
        raise ValueError(f"buckets must be > 0; got {buckets!r}")
    span = max(end_ms - start_ms, 1)
    for width in (1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000):
        if span / width <= buckets:
            return width
    return -(-span // (buckets * DAY_MS)) * DAY_MS


def on_time_axis(ms: pl.Expr) -> pl.Expr:
    """Whether an event time (ms) lies in ``TIME_AXIS_MS``."""
    return (ms >= TIME_AXIS_MS[0]) & (ms < TIME_AXIS_MS[1])


def latest_revisions(prices: pl.DataFrame) -> pl.DataFrame:
    """``oracle_prices/`` with only the latest revision of each (asset, window), sorted by
    asset and window."""
    return (
        prices.sort("asset", "window_start_ms", "revision")
        .group_by("asset", "window_start_ms", maintain_order=True)
        .last()
    )


def flagged_windows(prices: pl.DataFrame) -> pl.DataFrame:
    """One row per (asset, window, flag) for the windows that were degraded, stale or held
    (a held window that was also degraded gives two rows): ``asset``, ``flag``,
    ``window_start_ms``, ``window_end_ms``."""
    latest = latest_revisions(prices)
    parts = [
        latest.filter(cond).select(
            "asset", pl.lit(flag).alias("flag"), "window_start_ms", "window_end_ms"
        )
        for flag, cond in (
            ("degraded", pl.col("status") == "degraded"),
            ("stale", pl.col("status") == "stale"),
            ("held", pl.col("held")),
        )
    ]
    return pl.concat(parts)


def thin_sources(observations: pl.DataFrame, points: int) -> pl.DataFrame:
    """At most ``points`` observations per (asset, source), so a long run's chart stays
    small: the last of each of ``points`` equal buckets of that source's time span (every
    observation when the span is shorter). Columns as given (``asset``, ``source``,
    ``ts_ms``, ...), sorted by asset, source and time; each source's last observation is
    kept."""
    if points <= 0:
        raise ValueError(f"points must be > 0; got {points!r}")
    group = ["asset", "source"]
    first = pl.col("ts_ms").min().over(group)
    span = pl.col("ts_ms").max().over(group) - first + 1
    bucket = ((pl.col("ts_ms") - first).cast(pl.Float64) * points / span.cast(pl.Float64)).floor()
    return (
        observations.sort("asset", "source", "ts_ms", maintain_order=True)
        .with_columns(bucket.alias("_bucket"))
        .group_by([*group, "_bucket"], maintain_order=True)
        .last()
        .drop("_bucket")
        .select(observations.columns)
    )


def reason_code(reason: pl.Expr) -> pl.Expr:
    """The code of a ``Rejected.reason``: the text before its first colon."""
    return reason.str.split(":").list.first().str.strip_chars()


def deadletter_by_reason(deadletter: pl.DataFrame, bucket_ms: int) -> pl.DataFrame:
    """Rejects per (bucket of ``timestamp_ms``, stage, reason code): ``bucket_ms`` (the
    bucket's start), ``stage``, ``code``, ``count``; the counts sum to the rows given."""
    if bucket_ms <= 0:
        raise ValueError(f"bucket_ms must be > 0; got {bucket_ms!r}")
    return (
        deadletter.select(
            (pl.col("timestamp_ms") // bucket_ms * bucket_ms).alias("bucket_ms"),
            pl.col("stage"),
            reason_code(pl.col("reason")).alias("code"),
        )
        .group_by("bucket_ms", "stage", "code")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort("bucket_ms", "stage", "code")
    )


def health_over_time(risk: pl.DataFrame, bucket_ms: int) -> pl.DataFrame:
    """Each account's latest health at the end of every bucket from its first row on
    (carried forward between its rows, since ``account_risk/`` has a row only when health
    moved): ``bucket_ms``, ``account``, ``health``. One row per (bucket, account) once the
    account has appeared; +inf (no positions) stays +inf."""
    if bucket_ms <= 0:
        raise ValueError(f"bucket_ms must be > 0; got {bucket_ms!r}")
    rows = (
        risk.select(
            (pl.col("ts_event_ms") // bucket_ms * bucket_ms).alias("bucket_ms"),
            "account",
            "ts_event_ms",
            "health",
        )
        .sort("account", "ts_event_ms", maintain_order=True)
        .group_by("account", "bucket_ms", maintain_order=True)
        .agg(pl.col("health").last())
    )
    if rows.height == 0:
        return rows.select("bucket_ms", "account", "health")
    first, last = rows["bucket_ms"].min(), rows["bucket_ms"].max()
    assert isinstance(first, int) and isinstance(last, int)
    grid = pl.DataFrame(
        {"bucket_ms": pl.int_range(first, last + 1, bucket_ms, eager=True).cast(pl.Int64)}
    )
    accounts = rows.select("account").unique()
    return (
        accounts.join(grid, how="cross")
        .join(
            rows.with_columns(pl.col("bucket_ms").cast(pl.Int64)),
            on=["account", "bucket_ms"],
            how="left",
        )
        .sort("account", "bucket_ms")
        .with_columns(pl.col("health").forward_fill().over("account"))
        .drop_nulls("health")
        .select("bucket_ms", "account", "health")
        .sort("bucket_ms", "account")
    )


def first_and_last_health(risk: pl.DataFrame) -> pl.DataFrame:
    """Each account's health at its first and at its last ``account_risk/`` row:
    ``account``, ``first``, ``last``; one row per account, sorted by account."""
    return (
        risk.sort("account", "ts_event_ms", maintain_order=True)
        .group_by("account", maintain_order=True)
        .agg(pl.col("health").first().alias("first"), pl.col("health").last().alias("last"))
    )


def health_quantiles(health: pl.DataFrame) -> pl.DataFrame:
    """Per bucket of ``health_over_time``: ``accounts``, ``under_mm`` (health < 1), and the
    min, 10 %, 50 % and 90 % quantiles of the finite healths (null when none is finite)."""
    finite = pl.col("health").filter(pl.col("health").is_finite())
    return (
        health.group_by("bucket_ms")
        .agg(
            pl.len().cast(pl.Int64).alias("accounts"),
            (pl.col("health") < 1.0).sum().cast(pl.Int64).alias("under_mm"),
            finite.min().alias("min"),
            finite.quantile(0.1, "linear").alias("p10"),
            finite.quantile(0.5, "linear").alias("p50"),
            finite.quantile(0.9, "linear").alias("p90"),
        )
        .sort("bucket_ms")
    )


def order_outcomes(orders: pl.DataFrame, executions: pl.DataFrame | None) -> pl.DataFrame:
    """Each order leg with its outcome: the state of its latest ``executions/`` row (the
    highest ``seq``), or ``not executed``. Columns ``order_id``, ``kind``, ``account``,
    ``instrument``, ``ts_event_ms``, ``size``, ``outcome``; one row per order row."""
    legs = orders.select("order_id", "kind", "account", "instrument", "ts_event_ms", "size")
    if executions is None or executions.height == 0:
        return legs.with_columns(pl.lit(NO_EXECUTION).alias("outcome"))
    last = (
        executions.sort("order_id", "seq")
        .group_by("order_id", maintain_order=True)
        .agg(pl.col("state").last().alias("outcome"))
    )
    return legs.join(last, on="order_id", how="left", maintain_order="left").with_columns(
        pl.col("outcome").fill_null(NO_EXECUTION)
    )


_GREEK = pl.Struct({"delta": pl.Float64, "gamma": pl.Float64, "vega": pl.Float64})


def book_greeks(risk: pl.DataFrame) -> pl.DataFrame:
    """``account_risk/``'s Greeks, long: one row per (account row, underlying) with
    ``account``, ``ts_event_ms``, ``underlying``, ``delta`` (the positions' plus the
    wallet's DEX hedge, contracts), ``gamma`` (per USD) and ``vega`` (per 1.00 vol)."""
    rows = []
    for account, ts, greeks, wallet in risk.select(
        "account", "ts_event_ms", "greeks", "wallet"
    ).iter_rows():
        g = _json_object(greeks)
        w = _json_object(wallet)
        for underlying in sorted(set(g) | set(w)):
            per = g.get(underlying)
            per = per if isinstance(per, dict) else {}
            rows.append(
                {
                    "account": account,
                    "ts_event_ms": ts,
                    "underlying": underlying,
                    "delta": _num(per.get("delta")) + _num(w.get(underlying)),
                    "gamma": _num(per.get("gamma")),
                    "vega": _num(per.get("vega")),
                }
            )
    schema = {
        "account": pl.String,
        "ts_event_ms": pl.Int64,
        "underlying": pl.String,
        "delta": pl.Float64,
        "gamma": pl.Float64,
        "vega": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def top_books(greeks: pl.DataFrame, n: int) -> list[str]:
    """The ``n`` accounts whose latest |delta| (summed over underlyings) is largest, in
    that order (ties by account)."""
    latest = (
        greeks.sort("ts_event_ms")
        .group_by("account", "underlying")
        .agg(pl.col("delta").last())
        .group_by("account")
        .agg(pl.col("delta").abs().sum().alias("abs_delta"))
        .sort(["abs_delta", "account"], descending=[True, False])
    )
    return latest["account"].head(n).to_list()


def _json_object(text: object) -> dict[str, object]:
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
