"""Replay into Parquet, stopped mid-run (SIGKILL, Ctrl-C) and resumed under recovery, and
run again over the finished recovery directory: every dataset holds each row once. And
DuckDB reads every dataset as it is."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from connectors.recording import write_recording
from flows.cli.generate import GenerateParams, generate
from operators import abi
from operators.accounts import E18
from operators.model import RawMessage

VENUE = "0x" + "77" * 20
WETH, USDC = "0x" + "e1" * 20, "0x" + "c1" * 20
START_MS = GenerateParams().start_ms
MINUTES = 240
DATASETS = ("oracle_prices", "partition_stats", "deadletter", "account_risk", "instruments",
            "orders")  # fmt: skip


def _venue(accounts: int, trades: int, seed: int) -> list[RawMessage]:
    """A perp and two options listed, accounts funded, then random trades: venue logs on
    a partition of their own, so the risk stage writes every one of its datasets."""
    rng = np.random.default_rng(seed)
    expiry_s = START_MS // 1000 + 30 * 86_400
    listings = [(1, 0, 0), (2, 1_800, expiry_s), (3, 1_800, expiry_s)]
    ids = [abi.int_topic(n + 1) for n in range(len(listings))]
    logs = [(START_MS, [abi.VENUE_INSTRUMENT_LISTED, ids[n], abi.address_topic(WETH)],
             [kind, strike * E18, expiry])
            for n, (kind, strike, expiry) in enumerate(listings)]  # fmt: skip
    owners = ["0x" + format(a + 1, "040x") for a in range(accounts)]
    logs += [(START_MS + 1_000, [abi.VENUE_DEPOSIT, abi.address_topic(a), abi.address_topic(USDC)],
              [3_000 * 10**6]) for a in owners]  # fmt: skip
    times = np.sort(rng.uniform(START_MS + 60_000, START_MS + MINUTES * 60_000, trades))
    for ts, who, what in zip(times, rng.integers(0, accounts, trades),
                             rng.integers(0, len(ids), trades), strict=True):  # fmt: skip
        size = int(rng.normal(0, 2) * E18)
        price = (1_830 if what == 0 else 40) * E18
        logs.append((int(ts), [abi.VENUE_TRADE, abi.address_topic(owners[who]), ids[what]],
                     [size, price, 0]))  # fmt: skip
    out = []
    for n, (ts, topics, words) in enumerate(logs):
        log = {"address": VENUE, "topics": topics, "data": abi.encode_data(*words),
               "blockNumber": hex(n + 1), "blockHash": abi.int_topic(n), "logIndex": "0x0",
               "removed": False, "blockTimestamp": hex(ts // 1000), "chainId": 1}  # fmt: skip
        out.append(RawMessage("chain.logs", 9, n, ts, VENUE.encode(), json.dumps(log).encode()))
    return out


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str | Path]]:
    """A recording with its configuration, replayed once without recovery into
    ``ROOT/whole``; returns ROOT and the arguments of a replay of it (without --out)."""
    root = tmp_path_factory.mktemp("replay_recovery")
    g = generate(GenerateParams(seed=5, minutes=MINUTES, swaps_per_block=4.0))
    recording = root / "recording.parquet"
    write_recording([*g.messages, *_venue(accounts=40, trades=400, seed=2)], recording)
    config = root / "hedgeflow.toml"
    # Short epochs: many snapshots, so a stop lands between two, mid-run; few retained
    # windows, so that each snapshot is small.
    config.write_text(
        g.config_toml + f'\n[risk]\nvenue = "{VENUE}"\nunderlyings = {{ "{WETH}" = "ETH" }}\n'
        f'[risk.collateral."{USDC}"]\nasset = "USDC"\ndecimals = 6\n'
        "\n[oracle]\ncorrection_windows = 5\n[run]\nbatch_size = 200\nepoch_interval_s = 0.2\n"
    )
    args: list[str | Path] = ["replay", recording, "--config", config]
    whole = _hedgeflow(*args, "--out", root / "whole")
    _, stderr = whole.communicate(timeout=600)
    assert whole.returncode == 0, stderr.decode()[-4000:]
    return root, args


def _hedgeflow(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _epoch(recovery: Path) -> int:
    """The last epoch Bytewax committed in ``recovery`` (0 before any)."""
    epochs = [0]
    for part in recovery.glob("part-*.sqlite3"):
        with (
            contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db,
            contextlib.suppress(sqlite3.OperationalError),  # not created yet
        ):
            epochs += [e for (e,) in db.execute("SELECT commit_epoch FROM commits")]
    return max(epochs)


def _stop_mid_run(args: list[str | Path], recovery: Path, how: signal.Signals) -> bytes:
    """Start a replay, stop it with ``how`` once it has committed a snapshot past the
    ones already in ``recovery``; return its stderr."""
    before = _epoch(recovery)
    run = _hedgeflow(*args)
    deadline = time.monotonic() + 120
    while _epoch(recovery) < max(before + 1, 2):
        assert run.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run.send_signal(how)
    _, stderr = run.communicate(timeout=60)
    return stderr


def _dataset(out: Path, name: str) -> pl.DataFrame:
    frame = pl.read_parquet(out / name / "**/*.parquet", hive_partitioning=True)
    return frame.sort(frame.columns)


def _assert_each_row_once(whole: Path, resumed: Path) -> None:
    for name in DATASETS:
        expected = _dataset(whole, name)
        assert expected.height > 0, name
        assert _dataset(resumed, name).equals(expected), name


def test_replay_killed_resumed_and_run_again_writes_each_row_of_every_dataset_once(
    replayed: tuple[Path, list[str | Path]],
) -> None:
    """Also the findings: partition_stats rows duplicated after a kill and resume, and on
    every re-run with the same recovery directory."""
    root, replay = replayed
    out, recovery = root / "killed", root / "killed_recovery"
    args = [*replay, "--out", out, "--recovery-dir", recovery]

    _stop_mid_run(args, recovery, signal.SIGKILL)  # no flush, no clean shutdown
    assert _dataset(out, "oracle_prices").height < _dataset(root / "whole", "oracle_prices").height
    _stop_mid_run(args, recovery, signal.SIGKILL)
    for _ in range(2):  # the resume to the end, then a run over the finished directory
        again = _hedgeflow(*args)
        _, stderr = again.communicate(timeout=600)
        assert again.returncode == 0, stderr.decode()[-4000:]
        assert b"resuming 0-chain.logs at row" in stderr
        _assert_each_row_once(root / "whole", out)


def test_ctrl_c_on_replay_is_one_line_exit_130_and_the_run_resumes(
    replayed: tuple[Path, list[str | Path]],
) -> None:
    root, replay = replayed
    out, recovery = root / "interrupted", root / "interrupted_recovery"
    args = [*replay, "--out", out, "--recovery-dir", recovery]

    stderr = _stop_mid_run(args, recovery, signal.SIGINT).decode()
    lines = [line for line in stderr.splitlines() if " INFO " not in line and line]
    assert lines == ["hedgeflow: interrupted; run it again with the same --recovery-dir to resume"]

    resumed = _hedgeflow(*args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-4000:]
    _assert_each_row_once(root / "whole", out)


def test_recovery_directory_of_another_recording_is_refused_in_one_line(
    replayed: tuple[Path, list[str | Path]], tmp_path: Path
) -> None:
    """The finding: a recovery directory from another recording was reused silently, and
    the run gave nothing."""
    _, replay = replayed
    recovery, out = tmp_path / "recovery", tmp_path / "out"
    other = tmp_path / "other.parquet"
    write_recording(generate(GenerateParams(seed=6, minutes=10)).messages, other)
    first = _hedgeflow("replay", other, *replay[2:], "--out", out, "--recovery-dir", recovery)
    assert first.wait(timeout=600) == 0

    run = _hedgeflow(*replay, "--out", out, "--recovery-dir", recovery)
    _, stderr = run.communicate(timeout=120)
    lines = stderr.decode().strip().splitlines()
    assert run.returncode == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hedgeflow: --recovery-dir {recovery} belongs to another run: "
                               "its recording is '1 file(s), ")  # fmt: skip


def test_duckdb_reads_every_dataset_of_a_replay_with_hive_partitioning(
    replayed: tuple[Path, list[str | Path]],
) -> None:
    """The README says DuckDB reads the outputs as they are: the same rows as polars, and
    the ``date`` partition column."""
    root, _ = replayed
    with contextlib.closing(duckdb.connect()) as db:
        for name in DATASETS:
            glob = str(root / "whole" / name / "**" / "*.parquet")
            query = (
                "SELECT count(*), count(DISTINCT date) FROM read_parquet(?, hive_partitioning = 1)"
            )
            count, days = db.execute(query, [glob]).fetchone() or (None, None)
            expected = _dataset(root / "whole", name)
            assert count == expected.height > 0, name
            assert days == expected["date"].n_unique(), name
