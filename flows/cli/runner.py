"""Running a dataflow: in this process, or as N Bytewax worker processes (``-i/-a``).

With ``processes > 1`` the command re-runs itself N times with ``--process-id`` and
``--addresses`` appended; each child builds the same dataflow and joins the cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import msgspec
from bytewax._bytewax import cli_main
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir

from flows.state import snapshots
from operators.config import Config, ConfigError, RunConfig

log = logging.getLogger("hedgeflow")

RECOVERY_PARTITIONS = 4
"""SQLite partitions in a new recovery directory; any worker count can resume from them."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), the shell's convention."""
IDENTITY_FILE = "hedgeflow-recovery.json"
"""What a recovery directory belongs to (``claim_recovery``), in the directory itself."""


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


def config_digest(cfg: Config) -> str:
    """A hash of the configuration without ``[run]`` (batch size and epoch length may
    change between a run and its resume; nothing else may)."""
    fixed = msgspec.structs.replace(cfg, run=RunConfig())
    return "sha256 " + hashlib.sha256(msgspec.json.encode(fixed)).hexdigest()[:16]


def claim_recovery(directory: Path, identity: Mapping[str, str]) -> bool:
    """Make ``directory`` the recovery directory of ``identity`` (its stage, input,
    configuration and output), or check that it is; return whether it held a run already.

    The identity is written to :data:`IDENTITY_FILE` when the directory is created. A
    directory made for another identity, or a non-empty one without that file, is a
    ``ConfigError`` naming the first field that differs.
    """
    path = directory / IDENTITY_FILE
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            msg = f"--recovery-dir {directory}: expected a JSON object in {IDENTITY_FILE}; {exc}"
            raise ConfigError(msg) from None
        for key in sorted(set(recorded) | set(identity)):
            if recorded.get(key) != identity.get(key):
                msg = (
                    f"--recovery-dir {directory} belongs to another run: its {key} is "
                    f"{recorded.get(key)!r}, this run's is {identity.get(key)!r}; give a new "
                    "directory"
                )
                raise ConfigError(msg)
    elif directory.exists() and any(directory.iterdir()):
        msg = (
            f"--recovery-dir {directory} is not empty and has no {IDENTITY_FILE}; expected a "
            "new directory or one that hedgeflow made"
        )
        raise ConfigError(msg)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(identity), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    if any(directory.glob("part-*.sqlite3")):
        return True
    init_db_dir(directory, RECOVERY_PARTITIONS)
    log.info("initialised recovery directory %s (%d partitions)", directory, RECOVERY_PARTITIONS)
    return False


def refuse_earlier_outputs(out_dir: Path) -> None:
    """A ``ConfigError`` when ``out_dir`` holds datasets (Parquet files in a subdirectory):
    rows of two runs in one dataset cannot be told apart."""
    found = sorted({p.relative_to(out_dir).parts[0] for p in out_dir.glob("*/**/*.parquet")})
    if found:
        msg = (
            f"--out {out_dir} holds datasets of an earlier run ({', '.join(found)}); give a "
            "new or empty directory, or resume that run with its --recovery-dir"
        )
        raise ConfigError(msg)


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

    ``recovery_dir``, if given, must have been claimed (``claim_recovery``); without it
    the flow keeps no state snapshots. ``process_id`` and ``addresses`` are set only in
    the children of a multi-process run.
    """
    epoch = timedelta(seconds=epoch_interval_s)
    recovery = None if recovery_dir is None else RecoveryConfig(str(recovery_dir))

    def flow() -> Dataflow:
        with snapshots(recovery is not None):
            return build()

    if process_id is not None:  # a child of a multi-process run
        assert addresses is not None
        cli_main(
            flow(), process_id=process_id, addresses=addresses.split(";"),
            epoch_interval=epoch, recovery_config=recovery,
        )  # fmt: skip
        return 0
    if processes == 1:
        dataflow = flow()
        with _interrupt_ends_process(recovery is not None):
            cli_main(dataflow, epoch_interval=epoch, recovery_config=recovery)
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
        for c in children:
            c.wait()
        raise
    return max(codes, key=abs)


@contextmanager
def _interrupt_ends_process(recovery: bool) -> Iterator[None]:
    """While a dataflow runs here, Ctrl-C ends the process at once with one line on stderr
    and exit status :data:`INTERRUPTED`. Bytewax 0.21.1 has no clean stop: a
    ``KeyboardInterrupt`` inside it is a Rust panic and two tracebacks, and it writes
    nothing more either way. The outputs are then those of a kill: a run under recovery
    resumes from its last snapshot and writes each row once."""
    after = "; run it again with the same --recovery-dir to resume" if recovery else ""

    def stop(signum: int, frame: object) -> None:
        print(f"hedgeflow: interrupted{after}", file=sys.stderr, flush=True)
        os._exit(INTERRUPTED)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
