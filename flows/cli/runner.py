"""Running a dataflow: in this process, or as N Bytewax worker processes (``-i/-a``).

With ``processes > 1`` the command re-runs itself N times with ``--process-id`` and
``--addresses`` appended; each child builds the same dataflow and joins the cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir

log = logging.getLogger("hedgeflow")

RECOVERY_PARTITIONS = 4
"""SQLite partitions in a new recovery directory; any worker count can resume from them."""


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (both end the wait the same way)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def message_counter(label: str, every: int = 50_000) -> Callable[[int], None]:
    """A progress callback that logs the count and rate every ``every`` messages."""
    start = time.monotonic()

    def report(count: int) -> None:
        if count % every == 0:
            rate = count / max(time.monotonic() - start, 1e-9)
            log.info("%s: %d messages (%.0f/s)", label, count, rate)

    return report


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on the loopback interface."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def recovery_config(directory: Path | None) -> RecoveryConfig | None:
    """Bytewax recovery in ``directory``, created with its partitions on first use."""
    if directory is None:
        return None
    if not any(directory.glob("part-*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, RECOVERY_PARTITIONS)
        log.info(
            "initialised recovery directory %s (%d partitions)", directory, RECOVERY_PARTITIONS
        )
    return RecoveryConfig(str(directory))


def run(
    build: Callable[[], Dataflow],
    *,
    epoch_interval_s: float,
    processes: int = 1,
    recovery_dir: Path | None = None,
    process_id: int | None = None,
    addresses: str | None = None,
) -> int:
    """Run the dataflow ``build()`` makes; return the exit code.

    ``process_id`` and ``addresses`` are set only in the children of a multi-process run.
    """
    epoch = timedelta(seconds=epoch_interval_s)
    if process_id is not None:  # a child of a multi-process run
        assert addresses is not None
        cli_main(
            build(), process_id=process_id, addresses=addresses.split(";"),
            epoch_interval=epoch, recovery_config=recovery_config(recovery_dir),
        )  # fmt: skip
        return 0
    recovery = recovery_config(recovery_dir)
    if processes == 1:
        cli_main(build(), epoch_interval=epoch, recovery_config=recovery)
        return 0
    addrs = ";".join(f"127.0.0.1:{p}" for p in free_ports(processes))
    child_args = [*sys.argv[1:], "--addresses", addrs, "--process-id"]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *child_args, str(i)], start_new_session=True
        )
        for i in range(processes)
    ]
    log.info("started %d worker processes: %s", processes, [c.pid for c in children])
    try:
        codes = [c.wait() for c in children]
    except KeyboardInterrupt:
        for c in children:
            os.killpg(c.pid, signal.SIGTERM)
        codes = [c.wait() for c in children]
    return max(codes, key=abs)
