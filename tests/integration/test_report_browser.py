"""``hedgeflow report`` in a real browser: Debian's headless Chromium opens the page with
the network cut off, and each chart's box in the screenshot must hold a drawn chart. The
same check fails on a page with a chart broken or blanked."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from flows.cli.report import CHART_HEIGHT_PX, CHART_WIDTH_PX, chart_top
from tests.unit.report_examples import write_run

MIN_COVERAGE = 0.5
"""A drawn chart has ink in at least half its box's rows and half its columns (axes,
ticks, labels); a broken image's icon and alt text cover under a fifth."""
MIN_INK = 0.005
"""...and at least 0.5 % of its pixels (the "no data" chart has 1.5 %)."""
BLANK_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="1100" height="440">'
    b'<rect width="1100" height="440" fill="white"/></svg>'
)


def chart_ids(page: str) -> list[str]:
    """The charts' element ids, in page order."""
    return re.findall(r'<figure class="chart" id="([^"]+)"', page)


def screenshot(page: Path, png: Path, charts: int) -> np.ndarray:
    """The page as Chromium draws it (RGB pixels), with every host unresolvable: the page
    must need nothing from the network."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: make test installs Debian's chromium package")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={png.parent / 'chromium-profile'}", f"--screenshot={png}",
         f"--window-size={CHART_WIDTH_PX},{chart_top(charts)}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int32)


def unrendered(pixels: np.ndarray, ids: list[str]) -> list[str]:
    """The charts whose box in the screenshot does not hold a drawn chart: its corners are
    not the chart's white background, or too little of it is ink (a channel below 200)."""
    bad = []
    for i, chart_id in enumerate(ids):
        box = pixels[chart_top(i) : chart_top(i) + CHART_HEIGHT_PX, :CHART_WIDTH_PX]
        corners = box[[0, 0, -1, -1], [0, -1, 0, -1]]
        ink = (box < 200).any(axis=2)
        drawn = (
            box.shape[:2] == (CHART_HEIGHT_PX, CHART_WIDTH_PX)
            and bool((corners >= 250).all())
            and ink.any(axis=1).mean() >= MIN_COVERAGE
            and ink.any(axis=0).mean() >= MIN_COVERAGE
            and ink.mean() >= MIN_INK
        )
        if not drawn:
            bad.append(chart_id)
    return bad


def _replace_chart(page: str, chart_id: str, src: str) -> str:
    pattern = rf'(id="{chart_id}"[^>]*><img [^>]*src=")[^"]*'
    changed, n = re.subn(pattern, lambda m: m.group(1) + src, page)
    assert n == 1
    return changed


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    recording = write_run(out / "run", with_deadletter=False)
    html = out / "report.html"
    assert (
        main(["report", str(out / "run"), "--html", str(html), "--recording", str(recording)]) == 0
    )
    return html


def test_report_in_chromium_when_opened_offline_then_every_chart_rendered(
    report: Path, tmp_path: Path
) -> None:
    page = report.read_text()
    ids = chart_ids(page)
    assert ids == ["chart-oracle-BTC", "chart-oracle-ETH", "chart-deadletter", "chart-health",
                   "chart-orders", "chart-greeks"]  # fmt: skip
    assert "<script" not in page and "http" not in page  # nothing to fetch or run
    assert unrendered(screenshot(report, tmp_path / "shot.png", len(ids)), ids) == []


def test_report_check_when_a_chart_is_broken_or_blank_then_it_names_that_chart(
    report: Path, tmp_path: Path
) -> None:
    page = report.read_text()
    ids = chart_ids(page)
    page = _replace_chart(page, "chart-health", "data:image/svg+xml;base64,AAAA")
    blank = base64.b64encode(BLANK_SVG).decode()
    page = _replace_chart(page, "chart-orders", f"data:image/svg+xml;base64,{blank}")
    broken = tmp_path / "broken.html"
    broken.write_text(page)
    assert unrendered(screenshot(broken, tmp_path / "shot.png", len(ids)), ids) == [
        "chart-health",
        "chart-orders",
    ]


def test_report_of_a_replay_in_chromium_then_every_chart_rendered(tmp_path: Path) -> None:
    # Arrange: a generated recording with its faults, replayed by the real flows
    assert main(["generate", "--out", str(tmp_path), "--minutes", "10"]) == 0
    recording, config = tmp_path / "recording.parquet", tmp_path / "hedgeflow.toml"
    out = tmp_path / "out"
    assert main(["replay", str(recording), "--out", str(out), "--config", str(config)]) == 0
    html = tmp_path / "report.html"
    # Act
    args = ["report", str(out), "--html", str(html), "--recording", str(recording)]
    assert main([*args, "--config", str(config)]) == 0
    # Assert: an oracle chart per asset, the deadletter drawn, risk charts saying "no data"
    page = html.read_text()
    ids = chart_ids(page)
    assert ids[:4] == ["chart-oracle-BTC", "chart-oracle-ETH", "chart-oracle-LINK",
                       "chart-deadletter"]  # fmt: skip
    no_data = re.findall(r'id="(chart-[^"]+)"[^>]*><img alt="[^"]*: no data"', page)
    assert no_data == ["chart-health", "chart-orders", "chart-greeks"]
    assert unrendered(screenshot(html, tmp_path / "shot.png", len(ids)), ids) == []
