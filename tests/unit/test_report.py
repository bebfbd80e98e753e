"""``hedgeflow report``: the command, its errors, and what each chart is drawn from."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import msgspec
import polars as pl
import pytest

from flows.cli import main
from flows.cli.report import Inputs, build_charts, read_inputs, source_prices
from operators.config import Config
from tests.unit import report_examples as ex
from tests.unit.report_examples import prices, quotes, write_run


def test_report_help_explains_the_charts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: hedgeflow report" in out
    for words in ("--html", "--recording", "deadletter", "Greeks per book", "no data"):
        assert words in out


def test_report_when_out_dir_missing_then_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["report", str(missing), "--html", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hedgeflow: ") and str(missing) in err and "does not exist" in err
    assert not (tmp_path / "r.html").exists()


def test_report_when_recording_missing_then_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", str(tmp_path), "--html", str(tmp_path / "r.html"), "--recording", "x.pq"]
    assert main(args) == 2
    assert "--recording" in capsys.readouterr().err


def test_report_when_recording_unreadable_then_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    args = ["report", str(tmp_path), "--html", str(tmp_path / "r.html"), "--recording", str(bad)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hedgeflow: --recording: ") and "bad.parquet" in err


def test_report_when_no_dataset_then_every_chart_says_no_data(tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    assert main(["report", str(tmp_path), "--html", str(html)]) == 0
    page = html.read_text()
    ids = re.findall(r'id="(chart-[^"]+)"', page)
    assert ids == ["chart-oracle", "chart-deadletter", "chart-health", "chart-orders",
                   "chart-greeks"]  # fmt: skip
    assert len(re.findall(r'alt="[^"]*: no data"', page)) == len(ids)


def test_report_of_a_run_draws_each_asset_and_only_missing_datasets_say_no_data(
    tmp_path: Path,
) -> None:
    recording = write_run(tmp_path, with_deadletter=False)
    charts = build_charts(read_inputs([tmp_path], recording, Config()))
    assert [c.id for c in charts] == ["oracle-BTC", "oracle-ETH", "deadletter", "health",
                                      "orders", "greeks"]  # fmt: skip
    assert [c.id for c in charts if c.title.endswith("no data")] == ["deadletter"]
    assert all(c.svg.lstrip().startswith("<?xml") for c in charts)


def test_source_prices_are_the_decoded_quote_mids_in_usd(tmp_path: Path) -> None:
    recording = write_run(tmp_path)
    sources = source_prices(recording, Config())
    assert sources.height == len(quotes())
    assert sorted(sources["source"].unique().to_list()) == ["quote:feed_a", "quote:feed_b"]
    eth = sources.filter(pl.col("asset") == "ETH").sort("ts_ms", "source")
    first = next(p for p in prices() if p.asset == "ETH")
    assert eth["price"][0] == pytest.approx(first.price * 0.999)


def test_read_inputs_of_two_stage_dirs_reads_them_together(tmp_path: Path) -> None:
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")
    both = read_inputs([tmp_path / "a", tmp_path / "b"], None, None)
    one = read_inputs([tmp_path / "a"], None, None)
    assert isinstance(both, Inputs) and both.prices is not None and one.prices is not None
    assert both.prices.height == 2 * one.prices.height
    assert both.observations is None


def test_report_of_one_row_datasets_without_finite_health_draws_every_chart(
    tmp_path: Path,
) -> None:
    inputs = read_inputs([tmp_path], None, None)  # empty: then one row of each
    one = {
        "prices": pl.DataFrame([msgspec.structs.asdict(ex.prices()[0])]),
        "deadletter": pl.DataFrame([msgspec.structs.asdict(ex.rejects()[0])]),
        "risk": pl.DataFrame(
            [msgspec.structs.asdict(r) for r in ex.risk_rows() if r.health == math.inf][:1]
        ),
        "orders": pl.DataFrame([msgspec.structs.asdict(ex.orders()[0])]),
    }
    charts = build_charts(dataclasses.replace(inputs, **one))
    assert [c.id for c in charts if c.title.endswith("no data")] == []


@pytest.mark.parametrize(
    ("timestamps", "no_data"),
    [([0, 2**62, ex.T0, ex.T0 + 1], False), ([-1, 2**62], True)],
)
def test_deadletter_chart_when_timestamps_off_the_axis_then_left_out_not_an_error(
    tmp_path: Path, timestamps: list[int], no_data: bool
) -> None:
    rows = [msgspec.structs.replace(ex.rejects()[0], timestamp_ms=t) for t in timestamps]
    inputs = read_inputs([tmp_path], None, None)
    deadletter = pl.DataFrame([msgspec.structs.asdict(r) for r in rows])
    charts = build_charts(dataclasses.replace(inputs, deadletter=deadletter))
    chart = next(c for c in charts if c.id == "deadletter")
    assert chart.title.endswith("no data") == no_data
