"""Helpers shared by the test layers."""

from __future__ import annotations

import contextlib
import sqlite3
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
