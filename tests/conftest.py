"""Helpers shared by the test layers."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def _committed(recovery: Path) -> bool:
    """Has Bytewax committed a snapshot (an epoch to resume from) in ``recovery``?"""
    epochs = []
    for part in recovery.glob("part-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
            try:
                epochs += [e for (e,) in db.execute("SELECT commit_epoch FROM commits")]
            except sqlite3.OperationalError:  # not created yet
                return False
    return max(epochs, default=0) >= 2


@pytest.fixture
def recovery_committed() -> Callable[[Path], bool]:
    """Whether a Bytewax recovery directory holds a snapshot to resume from: kill a run
    only after that, or the restart is a cold start."""
    return _committed


def _hedgeflow(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture
def hedgeflow() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``hedgeflow ARGS...`` in a new process; fail the test unless it exits 0."""
    return _hedgeflow
