"""The ``[kafka]`` table: its validation names ``$.kafka.<key>``, its two mappings (librdkafka
and kafka-python) agree, and every client the project builds gets its settings.

Which clients: each factory of ``connectors.kafka_clients`` is exercised through the code
that calls it (the tools, the executor's Kafka side, the dataflows' sources and sinks,
ingest), capturing the configuration each client is built with; and an AST scan of the
tree checks that no other module builds a Kafka client or spells ``bootstrap.servers``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSink
from bytewax.dataflow import Dataflow
from hypothesis import given
from hypothesis import strategies as st

import connectors.kafka_clients as kc
from connectors import kafka_tools
from connectors.executor_kafka import ExecutorKafka
from connectors.kafka_clients import (
    KafkaConnection,
    KafkaSecurity,
    kafka_python_settings,
    kafka_security,
    librdkafka_settings,
)
from connectors.sources import KafkaBatchSource
from flows import ingest
from flows.dataflows import kafka_flow
from operators.config import ConfigError, KafkaConfig, kafka_problem, load_config
from operators.stages import stage_params

ROOT = Path(__file__).resolve().parents[2]
VENUE = "0x00000000000000000000000000000000000000aa"
SASL = KafkaSecurity(
    protocol="SASL_SSL", mechanism="SCRAM-SHA-512", username="hedgeflow", password="pw-123"
)
SECURE = KafkaConnection("broker-0:9093,broker-1:9093", SASL)
EXPECTED_RD = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
               "sasl.username": "hedgeflow", "sasl.password": "pw-123"}  # fmt: skip
EXPECTED_PY = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
               "sasl_plain_username": "hedgeflow", "sasl_plain_password": "pw-123"}  # fmt: skip


def _kafka_toml(**keys: str) -> str:
    return "[kafka]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())


def _load_fails(**keys: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_kafka_toml(**keys))
    return str(info.value)


# --- validation at start-up ---------------------------------------------------------------


def test_no_kafka_table_is_plaintext() -> None:
    assert load_config(None).kafka == KafkaConfig()
    assert librdkafka_settings(kafka_security(KafkaConfig())) == {"security.protocol": "PLAINTEXT"}


def test_a_full_sasl_ssl_table_loads() -> None:
    text = _kafka_toml(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="u",
        sasl_password_env="HF_PW", ssl_ca_location="/etc/ca.pem",
    )  # fmt: skip
    cfg = load_config(text).kafka
    assert (cfg.security_protocol, cfg.sasl_mechanism, cfg.ssl_ca_location) == (
        "SASL_SSL", "SCRAM-SHA-256", "/etc/ca.pem",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("keys", "where", "says"),
    [
        ({"security_protocol": "SASL"}, "security_protocol", "SASL"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password_env": "P"},
         "sasl_mechanism", "needs a sasl_mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "MD5"},
         "sasl_mechanism", "MD5"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_password_env": "P"},
         "sasl_username", "needs a sasl_username"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
         "sasl_password_env", "exactly one of"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u",
          "sasl_password_env": "P", "sasl_password_file": "/p"}, "sasl_password_env", "'/p'"),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism", "got PLAINTEXT"),
        ({"sasl_username": "u"}, "sasl_username", "got PLAINTEXT"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u",
          "sasl_password_env": "P", "ssl_ca_location": "/ca"}, "ssl_ca_location", "SASL_PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_certificate_location": "/c"},
         "ssl_key_location", "'/c'"),
        ({"security_protocol": "SSL", "sasl_password": "secret"}, "", "`sasl_password`"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
def test_a_misfit_key_fails_naming_it(keys: dict[str, str], where: str, says: str) -> None:
    message = _load_fails(**keys)
    assert f"`$.kafka{'.' + where if where else ''}`" in message
    assert says in message


def test_a_missing_password_variable_fails_naming_the_key_and_variable() -> None:
    cfg = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
                      sasl_password_env="HF_KAFKA_PW")  # fmt: skip
    unset = r"'HF_KAFKA_PW' is unset.*`\$\.kafka\.sasl_password_env`"
    with pytest.raises(ConfigError, match=unset):
        kafka_security(cfg, environ={})
    assert kafka_security(cfg, environ={"HF_KAFKA_PW": "x"}).password == "x"


def test_a_password_file_is_read_stripped_and_a_missing_or_empty_one_fails(
    tmp_path: Path,
) -> None:
    def cfg(path: Path) -> KafkaConfig:
        return KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                           sasl_username="u", sasl_password_file=str(path))  # fmt: skip

    (tmp_path / "pw").write_text("  s3cret\n")
    assert kafka_security(cfg(tmp_path / "pw"), environ={}).password == "s3cret"
    with pytest.raises(ConfigError, match=r"cannot be read.*`\$\.kafka\.sasl_password_file`"):
        kafka_security(cfg(tmp_path / "absent"), environ={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"holds no password.*`\$\.kafka\.sasl_password_file`"):
        kafka_security(cfg(tmp_path / "empty"), environ={})


@pytest.mark.parametrize("key", ["ssl_ca_location", "ssl_certificate_location", "ssl_key_location"])
def test_an_unreadable_tls_file_fails_naming_its_key(tmp_path: Path, key: str) -> None:
    readable = tmp_path / "ok.pem"
    readable.write_text("PEM")
    files = dict.fromkeys(["ssl_ca_location", "ssl_certificate_location", "ssl_key_location"],
                          str(readable)) | {key: str(tmp_path / "missing.pem")}  # fmt: skip
    cfg = KafkaConfig(security_protocol="SSL", **files)
    with pytest.raises(ConfigError, match=rf"missing\.pem.*`\$\.kafka\.{key}`"):
        kafka_security(cfg, environ={})


def test_the_password_is_not_in_the_security_repr() -> None:
    assert "pw-123" not in repr(SASL) and "pw-123" not in repr(SECURE)


# --- the two mappings agree ---------------------------------------------------------------

# librdkafka property -> kafka-python keyword, as both libraries document them
_RD_TO_PY = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
}
_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"\\'),
                min_size=1, max_size=12)  # fmt: skip


@st.composite
def valid_tables(draw: st.DrawFn) -> KafkaConfig:
    """Every valid combination of the ``[kafka]`` keys (by construction, then checked)."""
    protocol = draw(st.sampled_from(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]))
    keys: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        keys["sasl_mechanism"] = draw(st.sampled_from(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]))
        keys["sasl_username"] = draw(_TEXT)
        keys[draw(st.sampled_from(["sasl_password_env", "sasl_password_file"]))] = draw(_TEXT)
    if protocol in ("SSL", "SASL_SSL"):
        if draw(st.booleans()):
            keys["ssl_ca_location"] = draw(_TEXT)
        if draw(st.booleans()):
            keys["ssl_certificate_location"] = draw(_TEXT)
            keys["ssl_key_location"] = draw(_TEXT)
    cfg = KafkaConfig(**keys)
    assert kafka_problem(cfg) is None
    return cfg


def _resolved(cfg: KafkaConfig, password: str) -> KafkaSecurity:
    return KafkaSecurity(
        protocol=cfg.security_protocol, mechanism=cfg.sasl_mechanism, username=cfg.sasl_username,
        password=password if cfg.sasl_mechanism else "", ca_location=cfg.ssl_ca_location,
        certificate_location=cfg.ssl_certificate_location, key_location=cfg.ssl_key_location,
    )  # fmt: skip


@given(valid_tables(), _TEXT)
def test_librdkafka_and_kafka_python_settings_agree(cfg: KafkaConfig, password: str) -> None:
    security = _resolved(cfg, password)
    rd, py = librdkafka_settings(security), kafka_python_settings(security)
    assert {_RD_TO_PY[k]: v for k, v in rd.items()} == py
    assert rd["security.protocol"] == cfg.security_protocol
    assert ("sasl.password" in rd) == cfg.security_protocol.startswith("SASL_")


@given(valid_tables())
def test_every_valid_table_loads_from_toml_as_it_is(cfg: KafkaConfig) -> None:
    keys = {f: getattr(cfg, f) for f in cfg.__struct_fields__ if getattr(cfg, f)}
    assert load_config(_kafka_toml(**keys)).kafka == cfg


# --- the settings reach every client ------------------------------------------------------


class _Built(Exception):
    """A kafka-python client was built (the test stops there: it would connect)."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Each client built through ``connectors.kafka_clients``: (class, configuration). The
    confluent-kafka clients are real (building one does not connect); the kafka-python
    ones connect when built, so building one records it and raises ``_Built``."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def real(cls: Any) -> Any:
        def build(config: dict[str, Any]) -> Any:
            seen.append((cls.__name__, config))
            return cls(config)

        return build

    def stop(name: str) -> Any:
        def build(**kwargs: Any) -> Any:
            seen.append((name, kwargs))
            raise _Built(name)

        return build

    for cls in (kc.Producer, kc.Consumer, kc.AdminClient):
        monkeypatch.setattr(kc, cls.__name__, real(cls))
    monkeypatch.setattr(kc, "KafkaConsumer", stop("KafkaConsumer"))
    monkeypatch.setattr(kc, "KafkaAdminClient", stop("KafkaAdminClient"))
    return seen


def _secure(kind: str, config: dict[str, Any]) -> bool:
    """The client was built for ``SECURE``'s servers with its security."""
    expected = EXPECTED_PY if kind.startswith("Kafka") else EXPECTED_RD
    return expected.items() <= config.items() and SECURE.bootstrap in config.values()


def test_check_brokers_admin_gets_the_settings(built: list[tuple[str, dict[str, Any]]]) -> None:
    with pytest.raises(ConnectionError):
        kafka_tools.check_brokers(SECURE, 0.01)
    assert [k for k, c in built if _secure(k, c)] == ["AdminClient"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: kafka_tools.create_topics(SECURE, ["t"], 1),
        lambda: kafka_tools.topic_partitions(SECURE, ["t"]),
    ],
    ids=["create_topics", "topic_partitions"],
)
def test_topic_admin_gets_the_settings(built: list[tuple[str, dict[str, Any]]], call: Any) -> None:
    with pytest.raises(_Built):
        call()
    assert [k for k, c in built if _secure(k, c)] == ["KafkaAdminClient"]


def test_publish_producer_gets_the_settings(built: list[tuple[str, dict[str, Any]]]) -> None:
    assert kafka_tools.publish([], SECURE) == 0  # no topic to create: straight to the producer
    assert [k for k, c in built if _secure(k, c)] == ["Producer"]


@pytest.mark.parametrize(
    "call",
    [
        lambda out: kafka_tools.record(SECURE, ["t"], out),
        lambda out: kafka_tools.last_headers(SECURE, "t", "h"),
    ],
    ids=["record", "last_headers"],
)
def test_reading_consumer_gets_the_settings(
    built: list[tuple[str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    call: Any,
) -> None:
    monkeypatch.setattr(kafka_tools, "topic_partitions", lambda kafka, topics: {"t": 1})
    with pytest.raises(_Built):
        call(tmp_path)
    assert [k for k, c in built if _secure(k, c)] == ["KafkaConsumer"]


def test_executor_consumer_and_producer_get_the_settings(
    built: list[tuple[str, dict[str, Any]]],
) -> None:
    kafka = ExecutorKafka(SECURE, "executor-test", {"orders": [0]}, dict, pausable="orders")
    kafka.close()
    assert [k for k, c in built if _secure(k, c)] == ["Consumer", "Producer"]


def _kafka_steps(flow: Dataflow) -> list[Any]:
    """The sources and sinks of ``flow``'s steps, nested ones included."""
    found, steps = [], list(flow.substeps)
    while steps:
        step = steps.pop()
        steps.extend(step.substeps)
        found.extend(x for x in (getattr(step, "source", None), getattr(step, "sink", None)) if x)
    return found


@pytest.mark.parametrize(("stages", "sinks"), [("oracle", 2), ("risk", 2), ("all", 3)])
def test_dataflow_sources_and_sinks_get_the_settings(
    monkeypatch: pytest.MonkeyPatch, stages: Any, sinks: int
) -> None:
    params = stage_params(load_config(f'[risk]\nvenue = "{VENUE}"\n'))
    topics = params.cfg.topics
    parts = [f"0-{t}" for t in (topics.chain_logs, topics.dex_quotes, topics.oracle_prices)]
    monkeypatch.setattr(KafkaBatchSource, "list_parts", lambda self: parts)  # no broker to ask
    found = _kafka_steps(kafka_flow(SECURE, params, Path("out"), True, stages))
    sources = [s for s in found if isinstance(s, KafkaBatchSource)]
    kafka_sinks = [s for s in found if isinstance(s, KafkaSink)]
    assert (len(sources), len(kafka_sinks)) == (1, sinks)
    for step in [sources[0].inner, *kafka_sinks]:
        assert step._brokers == SECURE.brokers
        assert EXPECTED_RD.items() <= step._add_config.items()


def test_ingest_sink_gets_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "topic_partitions", lambda kafka, topics: {topics[0]: 3})
    flow = ingest.ingest_flow(stage_params(load_config(None)), SECURE, 0, 1)
    (sink,) = [s for s in _kafka_steps(flow) if isinstance(s, KafkaSink)]
    assert EXPECTED_RD.items() <= sink._add_config.items()
    assert sink._add_config["partitioner"] == "consistent"


def test_client_settings_may_not_override_the_security() -> None:
    with pytest.raises(ValueError, match=r"\['sasl.password'\]"):
        kc.rd_config(SECURE, {"sasl.password": "other"})
    with pytest.raises(ValueError, match=r"\['bootstrap_servers'\]"):
        kc.py_admin(SECURE, bootstrap_servers="elsewhere:9092")


# --- no client is built anywhere else -----------------------------------------------------

_CLIENTS = {"Producer", "Consumer", "AdminClient", "KafkaProducer", "KafkaConsumer",
            "KafkaAdminClient", "KafkaSource", "KafkaSink", "SerializingProducer",
            "DeserializingConsumer"}  # fmt: skip
_HELPERS = ROOT / "connectors" / "kafka_clients.py"
# where a plaintext connection is made on purpose: the embedded broker (Tansu) and what
# starts its own, and flows/cli/main.py, which adds the [kafka] table's security
_CONNECTIONS = {"flows/cli/main.py", "connectors/broker.py", "flows/cli/demo.py",
                "flows/cli/live_loop.py"}  # fmt: skip


def raw_clients(source: str) -> list[str]:
    """What in ``source`` builds a Kafka client or names its servers other than through
    ``connectors.kafka_clients``: ``<line>: <what>``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in _CLIENTS:
                found.append(f"{node.lineno}: {name}(")
            found.extend(
                f"{node.lineno}: bootstrap_servers=" for k in node.keywords
                if k.arg == "bootstrap_servers"
            )  # fmt: skip
        if isinstance(node, ast.Constant) and node.value == "bootstrap.servers":
            found.append(f"{node.lineno}: 'bootstrap.servers'")
    return found


def test_the_scan_finds_a_raw_client() -> None:
    raw = 'p = Producer({"bootstrap.servers": b})\nc = kafka.KafkaConsumer(bootstrap_servers=b)\n'
    assert sorted(raw_clients(raw)) == [
        "1: 'bootstrap.servers'", "1: Producer(", "2: KafkaConsumer(", "2: bootstrap_servers=",
    ]  # fmt: skip
    assert raw_clients("p = rd_producer(kafka, {'linger.ms': 5})\n") == []


def test_no_module_builds_a_kafka_client_but_the_helpers() -> None:
    here = Path(__file__).resolve()  # the scanner, with its deliberate examples
    files = [p for d in ("operators", "connectors", "flows", "tests", "infra")
             for p in (ROOT / d).rglob("*.py") if p not in (_HELPERS, here)]  # fmt: skip
    assert len(files) > 50
    found = {str(p.relative_to(ROOT)): raw_clients(p.read_text()) for p in files}
    assert {p: f for p, f in found.items() if f} == {}


def test_plaintext_connections_are_made_only_where_intended() -> None:
    makers = set()
    for d in ("operators", "connectors", "flows"):
        for p in (ROOT / d).rglob("*.py"):
            if p != _HELPERS and "KafkaConnection(" in p.read_text():
                makers.add(str(p.relative_to(ROOT)))
    assert makers == _CONNECTIONS


# --- the command line: the table reaches each command's clients, or stops it at start ------

_SASL_TOML = _kafka_toml(
    security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="hedgeflow",
    sasl_password_env="HF_TEST_KAFKA_PW",
)  # fmt: skip


def _command_lines(tmp_path: Path) -> dict[str, list[str]]:
    """The commands that reach the brokers before anything else (ingest first probes the
    node, and execute its keystore and chain: their clients are tested above)."""
    (tmp_path / "hedgeflow.toml").write_text(_SASL_TOML)
    recording = tmp_path / "recording.jsonl"
    recording.write_text("")
    common = ["--config", str(tmp_path / "hedgeflow.toml"), "--brokers", SECURE.bootstrap,
              "--broker-timeout", "0.01"]  # fmt: skip
    return {
        "topics": ["topics", *common],
        "run oracle": ["run", "oracle", *common, "--out", str(tmp_path / "out")],
        "record": ["record", *common, "--topics", "t", "--out", str(tmp_path / "rec")],
        "publish": ["publish", str(recording), *common],
    }


@pytest.mark.parametrize("command", ["topics", "run oracle", "record", "publish"])
def test_each_command_builds_its_clients_with_the_table(
    built: list[tuple[str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    from flows.cli.main import main

    argv = _command_lines(tmp_path)[command]
    monkeypatch.setenv("HF_TEST_KAFKA_PW", "pw-123")
    assert main(argv) == 2  # no broker answers at broker-0:9093
    assert [k for k, c in built if _secure(k, c)] == ["AdminClient"]  # check_brokers'


@pytest.mark.parametrize("command", ["topics", "run oracle", "record", "publish"])
def test_each_command_stops_at_start_without_the_password(
    built: list[tuple[str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    from flows.cli.main import main

    monkeypatch.delenv("HF_TEST_KAFKA_PW", raising=False)
    assert main(_command_lines(tmp_path)[command]) == 2
    assert "`$.kafka.sasl_password_env`" in capsys.readouterr().err
    assert built == []  # stopped before any client
