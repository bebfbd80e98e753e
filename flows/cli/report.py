"""``hedgeflow report``: the Parquet outputs drawn on one self-contained HTML page.

The charts are matplotlib SVGs inlined in the page (no script, no network): the oracle
price per asset against its sources, with its confidence band and the degraded, stale
and held windows; the deadletter by reason over time; account health, its distribution
and how it moved; the orders on a timeline with their outcomes; the Greeks per book.
``operators.report_data`` shapes the frames; this module reads and draws them.

Every chart sits in a ``<figure class="chart">`` of ``CHART_WIDTH_PX`` x
``CHART_HEIGHT_PX`` CSS pixels on a white background, the i-th (from 0) at ``chart_top(i)``
from the top of the page: the browser test checks each region of a screenshot.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from connectors.recording import iter_messages, load_recording
from flows.cli.summary import read_dataset
from operators import report_data as rd
from operators.config import Config, ConfigError
from operators.model import Observation
from operators.registry import PoolSource
from operators.stages import stage_params

CHART_WIDTH_PX = 1100
CHART_HEIGHT_PX = 440
HEADER_PX = 90
GAP_PX = 20
DPI = 100
SOURCE_POINTS = 1500
"""Points drawn per source at most (``report_data.thin_sources``): the page stays small."""
TOP_BOOKS = 8
"""Books drawn in the Greeks chart: those with the largest |delta| at their last row."""
FLAG_COLOURS = {"degraded": "#f0a202", "stale": "#d7263d", "held": "#7b2cbf"}
OUTCOME_COLOURS = {
    "mined": "#2a9d8f",
    "sent": "#8ab17d",
    "replaced": "#8ab17d",
    "reverted": "#d7263d",
    "denied": "#f4a261",
    "expired": "#6c757d",
    "conflict": "#7b2cbf",
    rd.NO_EXECUTION: "#adb5bd",
}


def chart_top(index: int) -> int:
    """The top of the ``index``-th chart (from 0), CSS pixels from the page's top."""
    return HEADER_PX + index * (CHART_HEIGHT_PX + GAP_PX)


@dataclass(frozen=True)
class Chart:
    """One drawn chart: its element id, its caption (the alt text) and its SVG."""

    id: str
    title: str
    svg: str


@dataclass(frozen=True)
class Inputs:
    """The datasets the report draws (None where a dataset has no rows) and the source
    observations decoded from a recording (None without one)."""

    prices: pl.DataFrame | None
    deadletter: pl.DataFrame | None
    risk: pl.DataFrame | None
    orders: pl.DataFrame | None
    executions: pl.DataFrame | None
    observations: pl.DataFrame | None


def read_inputs(dirs: Sequence[Path], recording: Path | None, cfg: Config | None) -> Inputs:
    """Read the datasets under ``dirs`` (one run's stage directories, read together) and,
    with ``recording`` and ``cfg``, the sources' USD prices from the recording."""
    for d in dirs:
        if not d.is_dir():
            msg = f"expected an output directory; got {str(d)!r}, which does not exist"
            raise FileNotFoundError(msg)
    if recording is not None and not recording.exists():
        msg = f"--recording: expected a recording; got {str(recording)!r}, which does not exist"
        raise FileNotFoundError(msg)
    observations = None
    if recording is not None:
        observations = source_prices(recording, cfg or Config())
    return Inputs(
        prices=read_dataset("oracle_prices", *dirs),
        deadletter=read_dataset("deadletter", *dirs),
        risk=read_dataset("account_risk", *dirs),
        orders=read_dataset("orders", *dirs),
        executions=read_dataset("executions", *dirs),
        observations=observations,
    )


def source_prices(recording: Path, cfg: Config) -> pl.DataFrame:
    """Every observation the oracle's decoder reads from ``recording`` that prices an
    asset in a USD peg: ``asset``, ``source`` (a registered contract's kind and address,
    else the source's name), ``ts_ms``, ``price`` (USD). A file that is not a recording is
    a ``ConfigError`` naming it."""
    params = stage_params(cfg)
    pegs = {"USD": 1.0, **params.registry.pegs}
    names = {}
    for address, src in params.registry.by_address.items():
        kind = src.kind if isinstance(src, PoolSource) else "chainlink"
        names[address] = f"{kind} {address[:8]}…{address[-4:]}"
    try:
        messages = load_recording(recording)
    except ValueError as exc:  # not a recording: bad columns, rows or bytes
        raise ConfigError(f"--recording: {exc}") from None
    rows = []
    for msg in iter_messages(messages):
        obs = params.decoder.decode(msg)
        if isinstance(obs, Observation) and obs.quote in pegs:
            source = names.get(obs.source, obs.source)
            rows.append((obs.base, source, obs.ts_ms, obs.price * pegs[obs.quote]))
    schema = {"asset": pl.String, "source": pl.String, "ts_ms": pl.Int64, "price": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def build_charts(inputs: Inputs) -> list[Chart]:
    """Every chart of the report, in page order: one per asset (or one saying there is no
    price), then the deadletter, health, orders and Greeks."""
    charts = []
    prices = inputs.prices
    if prices is None or prices.height == 0:
        charts.append(_empty("oracle", "Oracle price", "no oracle_prices/ rows"))
    else:
        for asset in sorted(prices["asset"].unique().to_list()):
            charts.append(_oracle_chart(asset, prices, inputs.observations))
    charts.append(_deadletter_chart(inputs.deadletter))
    charts.append(_health_chart(inputs.risk))
    charts.append(_orders_chart(inputs.orders, inputs.executions))
    charts.append(_greeks_chart(inputs.risk))
    return charts


def render_page(charts: Sequence[Chart], title: str, subtitle: str) -> str:
    """The HTML page: a header, then each chart in its fixed box (``chart_top``)."""
    figures = "\n".join(
        f'<figure class="chart" id="chart-{c.id}" style="top:{chart_top(i)}px">'
        f'<img alt="{html.escape(c.title)}" width="{CHART_WIDTH_PX}" height="{CHART_HEIGHT_PX}"'
        f' src="data:image/svg+xml;base64,{_b64(c.svg)}"></figure>'
        for i, c in enumerate(charts)
    )
    height = chart_top(len(charts))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ margin: 0; font-family: sans-serif; background: #f1f3f5; height: {height}px;
       position: relative; }}
header {{ position: absolute; top: 0; left: 0; height: {HEADER_PX}px; width: {CHART_WIDTH_PX}px;
          overflow: hidden; box-sizing: border-box; padding: 8px 16px; }}
header h1 {{ margin: 0 0 4px 0; font-size: 24px; }}
header p {{ margin: 0; font-size: 13px; color: #495057; overflow-wrap: anywhere; }}
figure.chart {{ position: absolute; left: 0; margin: 0; background: #ffffff;
               width: {CHART_WIDTH_PX}px; height: {CHART_HEIGHT_PX}px; }}
figure.chart img {{ display: block; }}
</style></head><body>
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
{figures}
</body></html>
"""


def write_report(
    dirs: Sequence[Path], html_path: Path, recording: Path | None = None, cfg: Config | None = None
) -> int:
    """Write the report of ``dirs`` to ``html_path``; returns its size in bytes."""
    charts = build_charts(read_inputs(dirs, recording, cfg))
    subtitle = f"outputs: {', '.join(str(d) for d in dirs)}"
    if recording is not None:
        subtitle += f"; sources from {recording}"
    page = render_page(charts, "hedgeflow report", subtitle)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    return len(page.encode())


def _b64(svg: str) -> str:
    return base64.b64encode(svg.encode()).decode()


def _figure(rows: int = 1, cols: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of the chart's size (no pyplot: no global state, no display backend)."""
    fig = Figure(figsize=(CHART_WIDTH_PX / DPI, CHART_HEIGHT_PX / DPI), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})
    return buf.getvalue()


def _times(ms: pl.Series) -> np.ndarray:
    """Event times (ms since the epoch) as numpy datetimes, which matplotlib draws in UTC."""
    return ms.cast(pl.Int64).to_numpy().astype("datetime64[ms]")


def _time(ms: int) -> float:
    """An event time (ms since the epoch) as matplotlib's date number (days)."""
    return float(mdates.date2num(np.datetime64(ms, "ms")))


def _time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("event time (UTC)")


def _timeline(chart_id: str, title: str, fig: Figure, ax: Axes) -> Chart:
    """A chart over event time: the UTC time axis and the legend outside, on the right."""
    _time_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return Chart(chart_id, title, _svg(fig))


def _empty(chart_id: str, title: str, why: str) -> Chart:
    fig, (ax,) = _figure()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"no data: {why}", ha="center", va="center", fontsize=16, color="#495057")
    ax.set_xticks([])
    ax.set_yticks([])
    return Chart(chart_id, f"{title}: no data", _svg(fig))


def _oracle_chart(asset: str, prices: pl.DataFrame, observations: pl.DataFrame | None) -> Chart:
    title = f"Oracle price of {asset} (USD), its confidence band and its sources"
    latest = rd.latest_revisions(prices.filter(pl.col("asset") == asset))
    fig, (ax,) = _figure()
    ends = _times(latest["window_end_ms"])
    if observations is not None:
        mine = rd.thin_sources(observations.filter(pl.col("asset") == asset), SOURCE_POINTS)
        for source in sorted(mine["source"].unique().to_list()):
            rows = mine.filter(pl.col("source") == source).sort("ts_ms")
            ax.plot(_times(rows["ts_ms"]), rows["price"], lw=0.8, marker=".", ms=3, alpha=0.7,
                    label=source)  # fmt: skip
        if mine.height == 0:
            note = "no source of this asset decoded from --recording (the run's --config?)"
            ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", fontsize=8)
    low = latest["price"] - latest["confidence"]
    high = latest["price"] + latest["confidence"]
    ax.fill_between(ends, low, high, step="pre", color="#1d3557", alpha=0.2, label="confidence")
    ax.step(ends, latest["price"], where="pre", color="#1d3557", lw=1.8, label="oracle")
    flagged = rd.flagged_windows(latest)
    for flag, colour in FLAG_COLOURS.items():
        spans = flagged.filter(pl.col("flag") == flag)
        for i, (start, end) in enumerate(spans.select("window_start_ms", "window_end_ms").rows()):
            ax.axvspan(
                _time(start),
                _time(end),
                color=colour,
                alpha=0.25,
                lw=0,
                label=f"{flag} ({spans.height})" if i == 0 else None,
            )
    ax.set_title(title)
    ax.set_ylabel("USD")
    return _timeline(f"oracle-{asset}", title, fig, ax)


def _deadletter_chart(deadletter: pl.DataFrame | None) -> Chart:
    title = "Deadletter: rejects by reason over time"
    if deadletter is None or deadletter.height == 0:
        return _empty("deadletter", title, "no deadletter/ rows")
    shown = deadletter.filter(rd.on_time_axis(pl.col("timestamp_ms")))
    off_axis = deadletter.height - shown.height
    if shown.height == 0:
        return _empty("deadletter", title, f"{off_axis} rows, every timestamp off the time axis")
    ts = shown["timestamp_ms"]
    width = rd.bucket_width_ms(int(ts.min()), int(ts.max()))  # type: ignore[arg-type]
    counts = rd.deadletter_by_reason(shown, width).with_columns(
        (pl.col("stage") + " " + pl.col("code")).alias("label")
    )
    fig, (ax,) = _figure()
    buckets = sorted(counts["bucket_ms"].unique().to_list())
    bottom = dict.fromkeys(buckets, 0)
    bar_width = width / 86_400_000 * 0.9  # matplotlib dates are days
    for label in sorted(counts["label"].unique().to_list()):
        per = dict(counts.filter(pl.col("label") == label).select("bucket_ms", "count").rows())
        heights = [per.get(b, 0) for b in buckets]
        ax.bar(
            [_time(b) for b in buckets],
            heights,
            width=bar_width,
            bottom=[bottom[b] for b in buckets],
            align="edge",
            label=f"{label} ({sum(heights)})",
        )
        for b, h in zip(buckets, heights, strict=True):
            bottom[b] += h
    off = f", {off_axis} with a timestamp before 2000 or after 2100 not shown" if off_axis else ""
    ax.set_title(f"{title} ({deadletter.height} rows, {width // 1000} s buckets{off})")
    ax.set_ylabel("rejects")
    return _timeline("deadletter", title, fig, ax)


def _health_chart(risk: pl.DataFrame | None) -> Chart:
    title = "Account health (equity / MM)"
    if risk is None or risk.height == 0:
        return _empty("health", title, "no account_risk/ rows")
    ts = risk["ts_event_ms"]
    width = rd.bucket_width_ms(int(ts.min()), int(ts.max()), buckets=120)  # type: ignore[arg-type]
    health = rd.health_over_time(risk, width)
    quantiles = rd.health_quantiles(health)
    fig, (hist, moved) = _figure(1, 2)
    ends = rd.first_and_last_health(risk)
    for column, colour in (("first", "#a8dadc"), ("last", "#e63946")):
        values = ends.filter(pl.col(column).is_finite())[column]
        label = f"{column} row ({values.len()} accounts with positions)"
        hist.hist(values.clip(upper_bound=10.0), bins=40, range=(0, 10), alpha=0.6,
                  color=colour, label=label)  # fmt: skip
    hist.axvline(1.0, color="#d7263d", ls="--", lw=1, label="maintenance (1)")
    hist.set_title("each account's first and last row (health > 10 shown at 10)")
    hist.set_xlabel("health")
    hist.set_ylabel("accounts")
    hist.legend(fontsize=8)
    times = _times(quantiles["bucket_ms"])
    moved.fill_between(times, quantiles["p10"], quantiles["p90"], color="#457b9d", alpha=0.3,
                       label="10-90 %")  # fmt: skip
    moved.plot(times, quantiles["p50"], color="#1d3557", label="median")
    moved.plot(times, quantiles["min"], color="#e63946", lw=1, label="min")
    moved.axhline(1.0, color="#d7263d", ls="--", lw=1)
    moved.set_yscale("log")
    under = moved.twinx()
    under.step(times, quantiles["under_mm"], where="post", color="#f4a261", label="under MM")
    under.set_ylabel("accounts under MM")
    under.yaxis.set_major_locator(MaxNLocator(integer=True))
    moved.set_title("how it moved")
    moved.set_ylabel("health (log)")
    _time_axis(moved)
    lines = moved.get_legend_handles_labels()
    extra = under.get_legend_handles_labels()
    moved.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return Chart("health", title, _svg(fig))


def _orders_chart(orders: pl.DataFrame | None, executions: pl.DataFrame | None) -> Chart:
    title = "Orders on a timeline, by account, with their outcomes"
    if orders is None or orders.height == 0:
        return _empty("orders", title, "no orders/ rows")
    legs = rd.order_outcomes(orders, executions)
    accounts = sorted(legs["account"].unique().to_list())
    row = {a: i for i, a in enumerate(accounts)}
    markers = {"liquidation": "o", "hedge": "^", "dex_hedge": "s"}
    fig, (ax,) = _figure()
    for (kind, outcome), group in sorted(legs.group_by("kind", "outcome"), key=lambda g: str(g[0])):
        ax.scatter(
            _times(group["ts_event_ms"]),
            [row[a] for a in group["account"].to_list()],
            marker=markers.get(str(kind), "D"),
            color=OUTCOME_COLOURS.get(str(outcome), "#000000"),
            s=40,
            alpha=0.8,
            label=f"{kind}: {outcome} ({group.height})",
        )
    ax.set_yticks(range(len(accounts)), [f"{a[:8]}…{a[-4:]}" for a in accounts], fontsize=7)
    ax.set_title(f"{title} ({legs.height} legs)")
    return _timeline("orders", title, fig, ax)


def _greeks_chart(risk: pl.DataFrame | None) -> Chart:
    title = "Greeks per book"
    greeks = rd.book_greeks(risk) if risk is not None else None
    if greeks is None or greeks.height == 0:
        return _empty("greeks", title, "no Greeks in account_risk/")
    books = rd.top_books(greeks, TOP_BOOKS)
    fig, axes = _figure(1, 3)
    units = {"delta": "contracts (with DEX hedge)", "gamma": "per USD", "vega": "per 1.00 vol"}
    for ax, (greek, unit) in zip(axes, units.items(), strict=True):
        for book in books:
            mine = greeks.filter(pl.col("account") == book)
            for underlying in sorted(mine["underlying"].unique().to_list()):
                rows = mine.filter(pl.col("underlying") == underlying).sort("ts_event_ms")
                ax.step(_times(rows["ts_event_ms"]), rows[greek], where="post", lw=1,
                        label=f"{book[:8]}… {underlying}")  # fmt: skip
        ax.set_title(f"{greek} ({unit})", fontsize=10)
        _time_axis(ax)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: the {len(books)} books with the largest |delta| at the end")
    fig.tight_layout()
    return Chart("greeks", title, _svg(fig))


def cmd_report(dirs: Sequence[Path], html_path: Path, recording: Path | None, cfg: Config) -> int:
    """``hedgeflow report``: write the page and say where, and how large it is."""
    size = write_report(dirs, html_path, recording, cfg)
    print(f"report: {html_path} ({size / 1e6:.2f} MB)")
    return 0
