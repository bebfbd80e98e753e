"""A server binary run as a child process on a loopback port: start, wait, stop.

The embedded broker (Tansu) and the dev chain (Anvil) are both this. The child runs in its
own session (process group). It is stopped by :meth:`LocalServer.stop`, at interpreter
exit, and, on Linux, by the kernel when the thread that started it dies
(``PR_SET_PDEATHSIG``): start it from a thread that outlives it, normally the main thread.
Its output is appended to ``log_path``; a failed start quotes the tail of what this start
wrote there.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3
"""Starts to try: another process may take the free port before the server binds it."""
_LOG_TAIL_LINES = 40


class PortTaken(Exception):
    """The server exited because its port was taken between choosing and binding it."""


class LocalServer:
    """A server process on ``127.0.0.1``; a context manager.

    Subclasses give the ``name``, the ``command`` for a port, and ``ready``: whether the
    server answers on that port yet (it may raise to fail the start). The port is chosen
    free at the first start and kept, so a start after a stop serves the same address.
    ``start_timeout_s`` bounds the wait for ``ready``; ``stop_timeout_s`` the wait after
    SIGTERM before SIGKILL.
    """

    name = "server"
    port_taken_marker = "Address already in use"
    """Text the server logs when its port is taken."""

    def __init__(
        self, *, log_path: Path | None, start_timeout_s: float, stop_timeout_s: float
    ) -> None:
        if start_timeout_s <= 0:
            msg = f"start_timeout_s must be > 0 s; got {start_timeout_s!r}"
            raise ValueError(msg)
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"hedgeflow-{self.name.lower()}-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_start = 0
        """Offset in the log where the current start's output begins."""

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def ready(self, port: int) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        """The server's process id while it is running, else None."""
        return None if self._process is None else self._process.pid

    def start(self) -> Self:
        """Start the server and return once it is ready."""
        if self._process is not None:
            msg = f"{self.name} is already running on port {self._port}"
            raise RuntimeError(msg)
        if self._port is not None:  # a restart keeps its address
            try:
                self._start_on(self._port)
            except PortTaken:
                msg = f"{self.name} could not bind port {self._port} again: it is taken"
                raise RuntimeError(f"{msg}; log {self.log_path}:\n{self._log_tail()}") from None
            return self
        for _ in range(_PORT_ATTEMPTS):
            try:
                self._start_on(free_port())
            except PortTaken:
                continue
            return self
        msg = f"{self.name} could not bind a free port in {_PORT_ATTEMPTS} attempts"
        raise RuntimeError(f"{msg}; log {self.log_path}:\n{self._log_tail()}")

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM to the server's process group, wait, then SIGKILL."""
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_on(self, port: int) -> None:
        command = self.command(port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
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
                if self.port_taken_marker in self._log_tail():
                    raise PortTaken
                msg = f"{self.name} exited with code {code} while starting on port {port}"
                raise RuntimeError(f"{msg}; log {self.log_path}:\n{self._log_tail()}")
            if self.ready(port):
                return
            if time.monotonic() > deadline:
                msg = f"{self.name} did not answer on port {port} within {self.start_timeout_s} s"
                raise RuntimeError(f"{msg}; log {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        """The last lines this start wrote to the log."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies."""
    if sys.platform != "linux":
        return None

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
