"""Every Kafka client the project builds, and the ``[kafka]`` table's settings for it.

The table (``operators.config.KafkaConfig``) becomes a :class:`KafkaSecurity` once, at
start-up (:func:`kafka_security` reads the password and checks the TLS files), and then
settings for each client library: :func:`librdkafka_settings` for confluent-kafka and
Bytewax's Kafka connector (``add_config``), :func:`kafka_python_settings` for kafka-python.
A :class:`KafkaConnection` carries the bootstrap servers with the security, and the
factories below are the only places a client is constructed (a unit test checks the tree
for any other), so each client gets the same settings::

    kafka = KafkaConnection("broker-0:9093", kafka_security(cfg.kafka))
    producer = rd_producer(kafka, {"enable.idempotence": True})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from bytewax.connectors.kafka import KafkaSink, KafkaSource
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer

from operators.config import ConfigError, KafkaConfig, SaslMechanism, SecurityProtocol


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """The ``[kafka]`` table with its password read; ``password`` is never printed."""

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str = ""
    password: str = field(default="", repr=False)
    ca_location: str = ""
    certificate_location: str = ""
    key_location: str = ""


PLAINTEXT = KafkaSecurity()
"""No TLS, no SASL: the embedded broker's (Tansu) and the default."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are (``host:port[,host:port]``) and how to talk to them."""

    bootstrap: str
    security: KafkaSecurity = PLAINTEXT

    @property
    def brokers(self) -> list[str]:
        """The bootstrap servers as a list (Bytewax's connector takes one)."""
        return [b.strip() for b in self.bootstrap.split(",") if b.strip()]


def kafka_security(cfg: KafkaConfig, environ: Mapping[str, str] = os.environ) -> KafkaSecurity:
    """Read the password ``cfg`` points to and check its TLS files can be read; raise
    ``ConfigError`` naming the key (``$.kafka.<key>``) and its value otherwise."""
    password = ""
    if cfg.sasl_password_env:
        if not environ.get(cfg.sasl_password_env):
            why = f"environment variable {cfg.sasl_password_env!r} is unset or empty"
            _fail("sasl_password_env", why)
        password = environ[cfg.sasl_password_env]
    elif cfg.sasl_password_file:
        password = _read("sasl_password_file", cfg.sasl_password_file).strip()
        if not password:
            _fail("sasl_password_file", f"{cfg.sasl_password_file!r} holds no password")
    for key in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
        if path := getattr(cfg, key):
            _read(key, path)
    return KafkaSecurity(
        protocol=cfg.security_protocol,
        mechanism=cfg.sasl_mechanism,
        username=cfg.sasl_username,
        password=password,
        ca_location=cfg.ssl_ca_location,
        certificate_location=cfg.ssl_certificate_location,
        key_location=cfg.ssl_key_location,
    )


def librdkafka_settings(s: KafkaSecurity) -> dict[str, str]:
    """``s`` as librdkafka properties (confluent-kafka clients, Bytewax's ``add_config``)."""
    out: dict[str, str] = {"security.protocol": s.protocol}
    if s.mechanism is not None:
        out |= {"sasl.mechanism": s.mechanism, "sasl.username": s.username,
                "sasl.password": s.password}  # fmt: skip
    optional = {"ssl.ca.location": s.ca_location, "ssl.certificate.location":
                s.certificate_location, "ssl.key.location": s.key_location}  # fmt: skip
    return out | {k: v for k, v in optional.items() if v}


def kafka_python_settings(s: KafkaSecurity) -> dict[str, Any]:
    """``s`` as kafka-python keyword arguments (``KafkaConsumer``, ``KafkaAdminClient``)."""
    out: dict[str, Any] = {"security_protocol": s.protocol}
    if s.mechanism is not None:
        out |= {"sasl_mechanism": s.mechanism, "sasl_plain_username": s.username,
                "sasl_plain_password": s.password}  # fmt: skip
    optional = {"ssl_cafile": s.ca_location, "ssl_certfile": s.certificate_location,
                "ssl_keyfile": s.key_location}  # fmt: skip
    return out | {k: v for k, v in optional.items() if v}


def rd_config(kafka: KafkaConnection, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A confluent-kafka client's whole configuration: the servers, the security, then
    ``settings`` (the client's own tuning, which may not set a security property)."""
    security = librdkafka_settings(kafka.security)
    clash = sorted(set(settings) & (set(security) | {"bootstrap.servers"}))
    if clash:
        msg = f"client settings may not override the connection's; got {clash}"
        raise ValueError(msg)
    return {"bootstrap.servers": kafka.bootstrap, **security, **settings}


def rd_producer(kafka: KafkaConnection, settings: Mapping[str, Any]) -> Producer:
    """A confluent-kafka producer."""
    return Producer(rd_config(kafka, settings))


def rd_consumer(kafka: KafkaConnection, settings: Mapping[str, Any]) -> Consumer:
    """A confluent-kafka consumer (``settings`` needs a ``group.id``)."""
    return Consumer(rd_config(kafka, settings))


def rd_admin(kafka: KafkaConnection, settings: Mapping[str, Any]) -> AdminClient:
    """A confluent-kafka admin client."""
    return AdminClient(rd_config(kafka, settings))


def py_consumer(kafka: KafkaConnection, **kwargs: Any) -> KafkaConsumer:
    """A kafka-python consumer."""
    return KafkaConsumer(**_py_config(kafka, kwargs))


def py_admin(kafka: KafkaConnection, **kwargs: Any) -> KafkaAdminClient:
    """A kafka-python admin client."""
    return KafkaAdminClient(**_py_config(kafka, kwargs))


def bytewax_source(
    kafka: KafkaConnection, topics: list[str], settings: Mapping[str, str], **kwargs: Any
) -> KafkaSource:
    """Bytewax's Kafka source, its consumers built with ``settings`` and the connection's
    security."""
    return KafkaSource(kafka.brokers, topics, add_config=_bytewax(kafka, settings), **kwargs)


def bytewax_sink(kafka: KafkaConnection, topic: str, settings: Mapping[str, str]) -> KafkaSink:
    """Bytewax's Kafka sink, its producer built with the connection's security."""
    return KafkaSink(kafka.brokers, topic, add_config=_bytewax(kafka, settings))


def _bytewax(kafka: KafkaConnection, settings: Mapping[str, str]) -> dict[str, str]:
    """``add_config`` for Bytewax's connector, which sets ``bootstrap.servers`` itself."""
    config = rd_config(kafka, settings)
    del config["bootstrap.servers"]
    return config


def _py_config(kafka: KafkaConnection, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    security = kafka_python_settings(kafka.security)
    clash = sorted(set(kwargs) & (set(security) | {"bootstrap_servers"}))
    if clash:
        msg = f"client settings may not override the connection's; got {clash}"
        raise ValueError(msg)
    return {"bootstrap_servers": kafka.bootstrap, **security, **kwargs}


def _read(key: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(key, f"{path!r} cannot be read: {exc}")


def _fail(key: str, why: str) -> NoReturn:
    raise ConfigError(f"invalid configuration: {why} - at `$.kafka.{key}`")
