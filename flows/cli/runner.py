"""Running a dataflow: in this process, as N Bytewax worker processes on this machine, or
as one process of a cluster over hosts (``--process-id`` and ``--addresses``).

With ``processes > 1`` the command re-runs itself N times with ``--process-id``,
``--addresses`` and ``--spawned`` appended; each child builds the same dataflow and joins
the cluster. In a cluster over hosts each process is started by hand (or by its
StatefulSet) with the same address list and its own index in it; the processes meet
(``meet_peers``) to check they were started alike before the dataflow starts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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
"""SQLite partitions of a new run (at least one per cluster process); any worker count can
resume from them."""
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


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """This process's place in a cluster: its index in ``addresses`` (``host:port`` of
    every process, the same list, in the same order, on every host)."""

    process_id: int
    addresses: tuple[str, ...]

    @property
    def processes(self) -> int:
        return len(self.addresses)


_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>[0-9]{1,5})")


def parse_cluster(process_id: int | None, addresses: str | None, processes: int) -> Cluster | None:
    """The cluster that ``--process-id`` and ``--addresses`` (``host:port`` separated by
    ``;`` or ``,``) name, or None without them; a ``ConfigError`` naming the flag when one
    comes without the other, an address is not ``host:port`` (port 1..65535) or repeats,
    the process id is outside the list, or ``--processes`` is given as well."""
    if process_id is None and addresses is None:
        return None
    if process_id is None or addresses is None:
        given, missing = ("--process-id", "--addresses") if addresses is None else (
            "--addresses", "--process-id")  # fmt: skip
        msg = f"{given} needs {missing} (every process of the cluster, host:port;host:port)"
        raise ConfigError(msg)
    if processes != 1:
        msg = (
            f"--processes {processes} starts a cluster on this machine; with --process-id and "
            "--addresses start each process of the cluster yourself (give --processes 1)"
        )
        raise ConfigError(msg)
    listed = tuple(a.strip() for a in re.split(r"[;,]", addresses))
    for address in listed:
        match = _ADDRESS.fullmatch(address)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            msg = f"--addresses: expected host:port with a port in 1..65535; got {address!r}"
            raise ConfigError(msg)
    repeated = sorted({a for a in listed if listed.count(a) > 1})
    if repeated:
        msg = f"--addresses: each process needs its own host:port; {repeated[0]!r} repeats"
        raise ConfigError(msg)
    if not 0 <= process_id < len(listed):
        msg = (
            f"--process-id must be in 0..{len(listed) - 1} (an index into the "
            f"{len(listed)} --addresses); got {process_id}"
        )
        raise ConfigError(msg)
    return Cluster(process_id=process_id, addresses=listed)


def check_own_address(cluster: Cluster) -> None:
    """A ``ConfigError`` unless this host can listen on its own address (the one at
    ``--process-id``): a wrong index, a host name of another machine, or a port in use."""
    address = cluster.addresses[cluster.process_id]
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    where = f"--addresses: {address!r}, process {cluster.process_id}'s address,"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{where} does not resolve: {exc}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Bytewax's listener
        try:
            s.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                msg = f"{where} is in use on this host; is that process running already?"
            else:
                msg = f"{where} is not an address of this host ({exc.strerror}); check --process-id"
            raise ConfigError(msg) from None


PEER_RETRY_S = 0.5
"""Between two attempts to reach a process of the cluster that does not listen yet, s."""


def meet_peers(cluster: Cluster, agreed: Mapping[str, str]) -> None:
    """Before the dataflow starts, check with every other process of ``cluster``, on the
    addresses, that each was started as its own process id with the same ``agreed``
    values (the address list, workers per process, the stage, its input and configuration);
    a ``ConfigError`` naming the first that differs. Waits for processes not started yet,
    as Bytewax would, and returns once every process has met every other and stopped
    listening, so that Bytewax can listen on the same ports."""
    me = cluster.process_id
    hello = json.dumps({"process": me, **agreed}, sort_keys=True).encode() + b"\n"
    failures: list[ConfigError] = []
    listener = _listen(cluster.addresses[me])
    server = threading.Thread(
        target=_serve_peers, args=(listener, cluster, agreed, hello, failures), daemon=True
    )
    server.start()
    for peer in range(cluster.processes):
        if peer != me:
            _meet(cluster, peer, agreed, hello, failures)
    server.join()
    if failures:
        raise failures[0]


def _listen(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host.strip("[]"), int(port), type=socket.SOCK_STREAM
    )[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(sockaddr)
    listener.listen()
    return listener


def _first_difference(a: Mapping[str, object], b: Mapping[str, object]) -> str | None:
    """The first key, in sorted order, whose value differs between ``a`` and ``b`` (a
    missing key counts as ``None``); ``None`` when they agree."""
    return next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)


def _disagreement(
    peer: object, address: str, theirs: Mapping[str, object], agreed: Mapping[str, str]
) -> ConfigError | None:
    theirs = {k: v for k, v in theirs.items() if k != "process"}
    key = _first_difference(theirs, agreed)
    if key is None:
        return None
    msg = (
        f"--addresses: process {peer} at {address} was started with {key} "
        f"{theirs.get(key)!r}, this one with {agreed.get(key)!r}; start every process "
        "of the cluster with the same flags and configuration"
    )
    return ConfigError(msg)


def _serve_peers(
    listener: socket.socket, cluster: Cluster, agreed: Mapping[str, str], hello: bytes,
    failures: list[ConfigError],
) -> None:  # fmt: skip
    """Answer each other process's hello with ours; then stop listening and tell them."""
    met: list[socket.socket] = []
    with listener:
        while len(met) < cluster.processes - 1 and not failures:
            conn, _ = listener.accept()
            theirs = json.loads(conn.makefile("rb").readline() or b"{}")
            conn.sendall(hello)
            met.append(conn)
            peer = theirs.get("process")
            if peer == cluster.process_id:
                msg = (
                    f"--process-id: another process was started as process {peer} too; give "
                    "each process its own index into --addresses"
                )
                failures.append(ConfigError(msg))
                continue
            known = isinstance(peer, int) and 0 <= peer < cluster.processes
            address = cluster.addresses[peer] if known else "an address not in this list"
            if error := _disagreement(peer, address, theirs, agreed):
                failures.append(error)
    for conn in met:
        with conn:
            conn.sendall(b"done\n")


def _meet(
    cluster: Cluster, peer: int, agreed: Mapping[str, str], hello: bytes,
    failures: list[ConfigError],
) -> None:  # fmt: skip
    """Say hello to ``peer``, compare its answer, and wait until it stops listening."""
    address = cluster.addresses[peer]
    host, port = address.rsplit(":", 1)
    waited = 0.0
    while True:
        if failures:
            raise failures[0]
        try:
            conn = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
            break
        except OSError:
            if waited % 10 < PEER_RETRY_S:
                log.info("waiting for process %d of the cluster at %s", peer, address)
            time.sleep(PEER_RETRY_S)
            waited += PEER_RETRY_S
    with conn:
        conn.settimeout(None)
        conn.sendall(hello)
        lines = conn.makefile("rb")
        theirs = json.loads(lines.readline() or b"{}")
        if theirs.get("process") != peer:
            msg = (
                f"--addresses: {address} answered as process {theirs.get('process')!r}, "
                f"expected process {peer}; give every host the same --addresses in the same "
                "order"
            )
            raise ConfigError(msg)
        if error := _disagreement(peer, address, theirs, agreed):
            raise error
        lines.readline()  # "done": it has met every process and stopped listening


def config_digest(cfg: Config) -> str:
    """A hash of the configuration without ``[run]`` (batch size and epoch length may
    change between a run and its resume; nothing else may)."""
    fixed = msgspec.structs.replace(cfg, run=RunConfig())
    return "sha256 " + hashlib.sha256(msgspec.json.encode(fixed)).hexdigest()[:16]


def claim_recovery(
    directory: Path, identity: Mapping[str, str], cluster: Cluster | None = None
) -> bool:
    """Make ``directory`` the recovery directory of ``identity`` (its stage, input,
    configuration and output), or check that it is; return whether it held a run already.

    The identity is written to :data:`IDENTITY_FILE` when the directory is created. A
    directory made for another identity, or a non-empty one without that file, is a
    ``ConfigError`` naming the first field that differs. In a ``cluster`` each process has
    a directory of its own, holding its share of the run's recovery partitions: process
    ``i`` of ``n`` the partitions ``i, i + n, ...`` of ``max(RECOVERY_PARTITIONS, n)``,
    so that the cluster holds each partition once.
    """
    path = directory / IDENTITY_FILE
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            msg = f"--recovery-dir {directory}: expected a JSON object in {IDENTITY_FILE}; {exc}"
            raise ConfigError(msg) from None
        key = _first_difference(recorded, identity)
        if key is not None:
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
    index, processes = (0, 1) if cluster is None else (cluster.process_id, cluster.processes)
    count = max(RECOVERY_PARTITIONS, processes)
    share = range(index, count, processes)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".init-") as made:
        init_db_dir(Path(made), count)
        for part in share:
            name = f"part-{part}.sqlite3"
            (Path(made) / name).replace(directory / name)
    log.info(
        "initialised recovery directory %s (partitions %s of %d)", directory, list(share), count
    )
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
    workers_per_process: int = 1,
    recovery_dir: Path | None = None,
    cluster: Cluster | None = None,
) -> int:
    """Run the dataflow ``build()`` makes; return the exit code.

    ``recovery_dir``, if given, must have been claimed (``claim_recovery``); without it
    the flow keeps no state snapshots. With a ``cluster`` this process runs as its
    ``process_id`` (a child of a multi-process run, or one host's process); otherwise
    ``processes`` of ``workers_per_process`` worker threads each run on this machine.
    """
    epoch = timedelta(seconds=epoch_interval_s)
    recovery = None if recovery_dir is None else RecoveryConfig(str(recovery_dir))

    def flow() -> Dataflow:
        with snapshots(recovery is not None):
            return build()

    if cluster is not None or processes == 1:
        dataflow = flow()
        where = {} if cluster is None else {
            "process_id": cluster.process_id, "addresses": list(cluster.addresses)}  # fmt: skip
        with _interrupt_ends_process(recovery is not None):
            cli_main(
                dataflow, workers_per_process=workers_per_process, epoch_interval=epoch,
                recovery_config=recovery, **where,
            )  # fmt: skip
        return 0
    addrs = ";".join(f"127.0.0.1:{p}" for p in free_ports(processes))
    child_args = [*sys.argv[1:], "--spawned", "--addresses", addrs, "--process-id"]
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
