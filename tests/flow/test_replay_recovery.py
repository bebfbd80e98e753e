"""Replay into Parquet, killed mid-run and resumed under recovery: nothing lost or doubled."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from connectors.recording import write_recording
from flows.cli.generate import GenerateParams, generate


def _hedgeflow(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _prices(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "oracle_prices" / "**/*.parquet", hive_partitioning=True).sort(
        "asset", "window_start_ms", "revision"
    )


def test_replay_killed_and_resumed_under_recovery_writes_each_row_once(
    recovery_committed: Callable[[Path], bool], tmp_path: Path
) -> None:
    g = generate(GenerateParams(seed=5, minutes=360, swaps_per_block=6.0))
    recording = tmp_path / "recording.parquet"
    write_recording(g.messages, recording)
    config = tmp_path / "hedgeflow.toml"
    # Short epochs: many snapshots, so the kill lands between two, mid-run.
    config.write_text(g.config_toml + "\n[run]\nbatch_size = 200\nepoch_interval_s = 0.2\n")

    whole = _hedgeflow("replay", recording, "--out", tmp_path / "whole", "--config", config)
    assert whole.wait(timeout=600) == 0, whole.stderr.read() if whole.stderr else ""

    args = ("replay", recording, "--out", tmp_path / "resumed", "--config", config,
            "--recovery-dir", tmp_path / "recovery")  # fmt: skip
    first = _hedgeflow(*args)
    deadline = time.monotonic() + 120
    while not recovery_committed(tmp_path / "recovery"):
        assert first.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.kill()  # SIGKILL: no flush, no clean shutdown
    first.wait()
    expected = _prices(tmp_path / "whole")
    assert expected.height > 100
    assert _prices(tmp_path / "resumed").height < expected.height, "killed mid-run"

    second = _hedgeflow(*args)
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr.decode()[-4000:]
    assert b"resuming 0-chain.logs at row" in stderr
    assert _prices(tmp_path / "resumed").equals(expected)
