"""The run summary, read back from the Parquet outputs with polars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from operators.report_data import latest_revisions
from operators.venue import Fill

WEI_PER_ETH = 10**18
EXECUTION_STATES = ("mined", "reverted", "denied", "expired", "conflict")
"""The final states of an order in ``executions/`` (``operators.model.Execution``)."""


def read_dataset(name: str, *dirs: Path) -> pl.DataFrame | None:
    """The rows of dataset ``name`` under each of ``dirs`` (the output directories of one
    run's stages, each with its own ``--out``), or None if there are none."""
    frames = [
        pl.read_parquet(d / name / "**/*.parquet", hive_partitioning=True)
        for d in dirs
        if any((d / name).glob("**/*.parquet"))
    ]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def latest_prices(*dirs: Path) -> pl.DataFrame:
    """``oracle_prices/`` with only the latest revision of each (asset, window)."""
    prices = read_dataset("oracle_prices", *dirs)
    if prices is None:
        return pl.DataFrame()
    return latest_revisions(prices)


def summary_text(
    out_dir: Path,
    *more: Path,
    unread: dict[str, int] | None = None,
    identical: int = 0,
    liquidations: Sequence[Fill] | None = None,
) -> str:
    """Per asset: windows, price range and status counts; risk, orders and their
    executions; rejects by stage and reason. The datasets of ``out_dir`` and ``more`` (the
    stages of one run) are read together.

    ``unread`` (rows per topic the configuration does not name) and ``identical``
    (repeated rows replayed once) come from the replay's check of its recording;
    ``liquidations``, the venue's ``Liquidated`` events read from the chain, are matched
    with ``orders/``. An ``out_dir`` that does not exist or holds no dataset is a
    ``FileNotFoundError``.
    """
    dirs = (out_dir, *more)
    for d in dirs:
        if not d.is_dir():
            msg = f"expected an output directory; got {str(d)!r}, which does not exist"
            raise FileNotFoundError(msg)
    if not any(any(d.glob("*/**/*.parquet")) for d in dirs):
        msg = f"expected datasets (Parquet files) under {str(out_dir)!r}; found none"
        raise FileNotFoundError(msg)
    lines = [f"hedgeflow summary of {', '.join(str(d) for d in dirs)}"]
    prices = latest_prices(*dirs)
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
    stats = read_dataset("partition_stats", *dirs)
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
    risk = read_dataset("account_risk", *dirs)
    if risk is not None:
        orders = read_dataset("orders", *dirs)
        if orders is None:
            orders = pl.DataFrame(schema={"kind": pl.String, "account": pl.String})
        legs = orders.filter(pl.col("kind") == "liquidation")
        hedges = orders.filter(pl.col("kind") == "hedge")
        worst = risk.sort("health").row(0, named=True)
        lines.append(
            f"risk: {risk['account'].n_unique()} accounts; {legs.height} liquidation "
            f"order legs for {legs['account'].n_unique()} accounts; {hedges.height} "
            f"hedge orders; worst health {worst['health']:.4f} ({worst['account']} at "
            f"{worst['ts_event_ms']} ms)"
        )
        denials = read_dataset("order_denials", *dirs)
        if denials is not None and denials.height:
            by_reason = denials.group_by("kind", "reason").len().sort("kind", "reason")
            counts = ", ".join(
                f"{r['kind']} {r['reason']} {r['len']}" for r in by_reason.iter_rows(named=True)
            )
            lines.append(f"order denials: {denials.height} ({counts})")
        settlements = read_dataset("settlements", *dirs)
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
    executions = read_dataset("executions", *dirs)
    if executions is not None:
        lines += execution_lines(executions)
        orders = read_dataset("orders", *dirs)
        if orders is not None and risk is not None:
            lines += dex_hedge_lines(orders, executions, risk)
    if liquidations is not None:
        lines.append(liquidation_line(liquidations, read_dataset("orders", *dirs)))
    rejects = read_dataset("deadletter", *dirs)
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


def execution_lines(executions: pl.DataFrame) -> list[str]:
    """What the executor did with the orders it took: per order its latest state, orders
    sent (a transaction signed and broadcast), the fees paid, and the refusals by code."""
    latest = executions.sort("seq").group_by("order_id").last()
    final = latest.filter(pl.col("final"))
    states = dict(final.group_by("state").len().iter_rows())
    sent = executions.filter(pl.col("state") == "sent")["order_id"].n_unique()
    fees_wei = sum(int(f) for f in latest["fee_paid_wei"].drop_nulls())
    counts = ", ".join(f"{state} {states.get(state, 0)}" for state in EXECUTION_STATES)
    signers = ", ".join(sorted(executions["signer"].unique()))
    lines = [
        f"executions: {latest.height} orders taken by {signers}; sent {sent}, {counts}, "
        f"unfinished {latest.height - final.height}; fees paid {fees_wei / WEI_PER_ETH:.6f} ETH"
    ]
    refused = final.filter(pl.col("state").is_in(["denied", "reverted", "expired", "conflict"]))
    if refused.height:
        by_code = refused.group_by("state", "code").len().sort("state", "code")
        codes = ", ".join(
            f"{r['state']} {r['code']} {r['len']}" for r in by_code.iter_rows(named=True)
        )
        lines.append(f"execution refusals and failures: {codes}")
    return lines


def dex_hedge_lines(
    orders: pl.DataFrame, executions: pl.DataFrame, risk: pl.DataFrame
) -> list[str]:
    """Each ``dex_hedge`` order: its size and the wallet it saw, its route (the ``sent``
    row), its fill (raw units from the receipt's ``Swap`` logs) and gas; then each DEX
    book's wallet in its latest ``account_risk`` row."""
    hedges = orders.filter(pl.col("kind") == "dex_hedge").sort("ts_event_ms")
    if not hedges.height:
        return []
    lines = [f"DEX hedges: {hedges.height} orders"]
    for order in hedges.iter_rows(named=True):
        rows = executions.filter(pl.col("order_id") == order["order_id"]).sort("seq")
        sent = rows.filter(pl.col("state") == "sent")["detail"].to_list()
        final = rows.filter(pl.col("final")).to_dicts()
        side = "buy" if order["size"] > 0 else "sell"
        lines.append(
            f"  {order['order_id'][:18]} {order['account']} at {order['ts_event_ms']} ms: "
            f"{side} {abs(order['size']):.6f} {order['asset']} (wallet {order['position']:.6f})"
        )
        lines += [f"    {detail}" for detail in sent[:1]]
        if not final:
            lines.append("    unfinished")
        elif final[0]["state"] != "mined":
            lines.append(f"    {final[0]['state']} {final[0]['code']}: {final[0]['detail']}")
        else:
            f = final[0]
            lines.append(
                f"    mined in block {f['block_number']}, {f['gas_used']} gas, fee "
                f"{int(f['fee_paid_wei']) / WEI_PER_ETH:.6f} ETH: sold {f['amount_in']} of "
                f"{f['token_in']} for {f['amount_out']} of {f['token_out']}"
            )
    books = risk.filter(pl.col("account").is_in(hedges["account"].unique().to_list()))
    for row in books.sort("ts_event_ms").group_by("account").last().sort("account").to_dicts():
        lines.append(
            f"  wallet of {row['account']} after: {row['wallet']} (risk row at "
            f"{row['ts_event_ms']} ms)"
        )
    return lines


def liquidation_line(liquidations: Sequence[Fill], orders: pl.DataFrame | None) -> str:
    """Whose the venue's ``Liquidated`` events on chain are: each should carry the id of a
    liquidation order in ``orders/``, and no id should appear twice."""
    known = (
        set() if orders is None else set(orders.filter(pl.col("kind") == "liquidation")["order_id"])
    )
    ids = [f.order_id for f in liquidations if not f.removed]
    ours = [i for i in ids if i is not None and i in known]
    twice = len(ids) - len(set(ids))
    liquidators = ", ".join(sorted({f.liquidator or "" for f in liquidations})) or "none"
    return (
        f"on chain: {len(ids)} Liquidated events (by {liquidators}); {len(ours)} carry the id "
        f"of a hedgeflow liquidation order, {len(ids) - len(ours)} carry none or another; "
        f"{twice} ids twice"
    )


def print_summary(
    out_dir: Path,
    *more: Path,
    unread: dict[str, int] | None = None,
    identical: int = 0,
    liquidations: Sequence[Fill] | None = None,
) -> None:
    text = summary_text(
        out_dir, *more, unread=unread, identical=identical, liquidations=liquidations
    )
    print(text, flush=True)
