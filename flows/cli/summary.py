"""The run summary, read back from the Parquet outputs with polars."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def _dataset(out_dir: Path, name: str) -> pl.DataFrame | None:
    if not any((out_dir / name).glob("**/*.parquet")):
        return None
    return pl.read_parquet(out_dir / name / "**/*.parquet", hive_partitioning=True)


def latest_prices(out_dir: Path) -> pl.DataFrame:
    """``oracle_prices/`` with only the latest revision of each (asset, window)."""
    prices = _dataset(out_dir, "oracle_prices")
    if prices is None:
        return pl.DataFrame()
    return (
        prices.sort("asset", "window_start_ms", "revision")
        .group_by("asset", "window_start_ms", maintain_order=True)
        .last()
    )


def summary_text(out_dir: Path, unread: dict[str, int] | None = None, identical: int = 0) -> str:
    """Per asset: windows, price range and status counts; rejects by stage and reason.

    ``unread`` (rows per topic the configuration does not name) and ``identical``
    (repeated rows replayed once) come from the replay's check of its recording. An
    ``out_dir`` that does not exist or holds no dataset is a ``FileNotFoundError``.
    """
    if not out_dir.is_dir():
        msg = f"expected an output directory; got {str(out_dir)!r}, which does not exist"
        raise FileNotFoundError(msg)
    if not any(out_dir.glob("*/**/*.parquet")):
        msg = f"expected datasets (Parquet files) under {str(out_dir)!r}; found none"
        raise FileNotFoundError(msg)
    lines = [f"hedgeflow summary of {out_dir}"]
    prices = latest_prices(out_dir)
    if prices.height:
        per_asset = (
            prices.group_by("asset")
            .agg(
                pl.len().alias("windows"),
                pl.col("price").min().alias("min_price"),
                pl.col("price").max().alias("max_price"),
                (pl.col("status") == "ok").sum().alias("ok"),
                (pl.col("status") == "degraded").sum().alias("degraded"),
                (pl.col("status") == "stale").sum().alias("stale"),
                pl.col("held").sum().alias("held"),
                (pl.col("revision") > 0).sum().alias("corrected"),
            )
            .sort("asset")
        )
        lines.append("oracle prices (USD, latest revision per window):")
        lines.append(
            f"  {'asset':<6} {'windows':>7} {'min':>12} {'max':>12} {'ok':>5} "
            f"{'degraded':>8} {'stale':>5} {'held':>5} {'corrected':>9}"
        )
        for r in per_asset.iter_rows(named=True):
            lines.append(
                f"  {r['asset']:<6} {r['windows']:>7} {r['min_price']:>12.4f} "
                f"{r['max_price']:>12.4f} {r['ok']:>5} {r['degraded']:>8} {r['stale']:>5} "
                f"{r['held']:>5} {r['corrected']:>9}"
            )
    else:
        lines.append("oracle prices: none")
    stats = _dataset(out_dir, "partition_stats")
    if stats is not None:
        last = stats.sort("messages").group_by("part").last()
        lines.append(
            f"input: {last['messages'].sum()} messages, {last['observations'].sum()} "
            f"observations, {last['retractions'].sum()} retractions, {last['skipped'].sum()} "
            f"skipped (unregistered or not a price), {last['rejected'].sum()} rejected"
        )
    if unread:
        named = ", ".join(f"{topic} {n}" for topic, n in sorted(unread.items()))
        lines.append(
            f"not replayed: {sum(unread.values())} rows of topics the configuration does "
            f"not name ({named})"
        )
    if identical:
        lines.append(f"replayed once: {identical} identical repeated rows")
    risk = _dataset(out_dir, "account_risk")
    if risk is not None:
        orders = _dataset(out_dir, "orders")
        if orders is None:
            orders = pl.DataFrame(schema={"kind": pl.String, "account": pl.String})
        liquidations = orders.filter(pl.col("kind") == "liquidation")
        hedges = orders.filter(pl.col("kind") == "hedge")
        worst = risk.sort("health").row(0, named=True)
        lines.append(
            f"risk: {risk['account'].n_unique()} accounts; {liquidations.height} liquidation "
            f"order legs for {liquidations['account'].n_unique()} accounts; {hedges.height} "
            f"hedge orders; worst health {worst['health']:.4f} ({worst['account']} at "
            f"{worst['ts_event_ms']} ms)"
        )
        denials = _dataset(out_dir, "order_denials")
        if denials is not None and denials.height:
            by_reason = denials.group_by("kind", "reason").len().sort("kind", "reason")
            counts = ", ".join(
                f"{r['kind']} {r['reason']} {r['len']}" for r in by_reason.iter_rows(named=True)
            )
            lines.append(f"order denials: {denials.height} ({counts})")
        settlements = _dataset(out_dir, "settlements")
        if settlements is not None and settlements.height:
            lines.append(
                f"settlements: {settlements.height} positions in "
                f"{settlements['instrument'].n_unique()} options, "
                f"{settlements['cash_usd'].sum():.2f} USD to cash"
            )
        bad_debt = risk.sort("ts_event_ms").group_by("account").last()["bad_debt_usd"]
        if bad_debt.sum() > 0:
            lines.append(
                f"bad debt: {bad_debt.sum():.2f} USD over {(bad_debt > 0).sum()} accounts "
                "(latest row of each)"
            )
    rejects = _dataset(out_dir, "deadletter")
    if rejects is not None and rejects.height:
        by_reason = (
            rejects.with_columns(pl.col("reason").str.split(":").list.first().alias("code"))
            .group_by("stage", "code")
            .len()
            .sort("stage", "code")
        )
        lines.append("rejected (deadletter) by reason:")
        for r in by_reason.iter_rows(named=True):
            lines.append(f"  {r['stage']:<8} {r['code']:<22} {r['len']:>6}")
    else:
        lines.append("rejected (deadletter): none")
    return "\n".join(lines)


def print_summary(out_dir: Path, unread: dict[str, int] | None = None, identical: int = 0) -> None:
    print(summary_text(out_dir, unread, identical), flush=True)
