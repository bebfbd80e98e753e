"""The deployment files in infra/ validate, offline, against the schemas pinned in
infra/schemas/ (the compose specification; Kubernetes v1.33 strict), a broken copy of each
fails, and what the schemas cannot see holds too: every command parses as a hedgeflow
command line, every cluster's ``--addresses`` names its StatefulSet's pods, and the
shipped configuration loads."""

from __future__ import annotations

import copy
import importlib
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from operators.config import load_config

cli = importlib.import_module("flows.cli.main")  # flows.cli's ``main`` names the function
INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose" / "compose.yaml"
K8S = sorted((INFRA / "k8s").glob("*.yaml"))
_API = {"StatefulSet": "apps/v1", "Service": "v1", "Secret": "v1", "ConfigMap": "v1"}


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((INFRA / "schemas" / name).read_text())
    return schema


def compose_errors(doc: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema("compose-spec.json"))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def k8s_errors(doc: Any) -> list[str]:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in _API:
        return [f"expected a kind in {sorted(_API)}; got {kind!r}"]
    if doc.get("apiVersion") != _API[kind]:
        return [f"{kind} needs apiVersion {_API[kind]}; got {doc.get('apiVersion')!r}"]
    bundle = _schema("kubernetes-v1.33.0-strict.json")
    schema = {"$ref": f"#/$defs/kind.{kind}", "$defs": bundle["$defs"]}
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for p in K8S for d in yaml.safe_load_all(p.read_text()) if d is not None]


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _kinds(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d["kind"] == kind]


def test_the_compose_file_validates() -> None:
    assert compose_errors(_compose()) == []


@pytest.mark.parametrize("path", K8S, ids=[p.name for p in K8S])
def test_every_manifest_validates(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    assert {d["metadata"]["name"]: k8s_errors(d) for d in docs} == {
        d["metadata"]["name"]: [] for d in docs
    }


def test_the_manifests_hold_one_statefulset_per_stage_and_the_config_and_secret() -> None:
    stateful = {d["metadata"]["name"] for d in _kinds("StatefulSet")}
    assert stateful == {"ingest", "oracle", "risk", "executor"}
    assert [d["metadata"]["name"] for d in _kinds("ConfigMap")] == ["hedgeflow-config"]
    assert [d["metadata"]["name"] for d in _kinds("Secret")] == ["hedgeflow-secrets"]


@pytest.mark.parametrize(
    ("path", "break_it", "says"),
    [
        (["spec", "replicas"], "two", "'two' is not of type 'integer'"),
        (["spec", "template", "spec", "containers", 0, "volumeMount"], [], "volumeMount"),
        (["spec", "volumeClaimTemplates", 0, "spec", "accessModes"], "ReadWriteOnce",
         "is not of type 'array'"),
    ],
    ids=["replicas-not-a-number", "misspelt-field", "access-modes-not-a-list"],
)  # fmt: skip
def test_a_broken_statefulset_fails(path: list[Any], break_it: Any, says: str) -> None:
    broken = copy.deepcopy(_kinds("StatefulSet")[0])
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = break_it
    errors = k8s_errors(broken)
    assert any(says in e for e in errors), errors


def test_a_broken_compose_file_fails() -> None:
    misspelt = copy.deepcopy(_compose())
    misspelt["services"]["oracle"]["comand"] = misspelt["services"]["oracle"].pop("command")
    assert any("'comand' was unexpected" in e for e in compose_errors(misspelt))
    not_a_list = copy.deepcopy(_compose())
    not_a_list["services"]["oracle"]["volumes"] = "oracle-recovery"
    assert any("'oracle-recovery' is not of type 'array'" in e for e in compose_errors(not_a_list))


def test_a_kind_without_a_pinned_schema_is_refused() -> None:
    assert k8s_errors({"apiVersion": "apps/v1", "kind": "Deployment"}) == [
        f"expected a kind in {sorted(_API)}; got 'Deployment'"
    ]


def _commands() -> dict[str, list[str]]:
    """Every hedgeflow command line in infra/: compose services and StatefulSets."""
    out = {}
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command[0] == "hedgeflow":
            out[f"compose {name}"] = command[1:]
    for d in _kinds("StatefulSet"):
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["hedgeflow"]
        out[f"k8s {d['metadata']['name']}"] = container["args"]
    return out


@pytest.mark.parametrize("where", sorted(_commands()))
def test_every_command_parses_as_a_hedgeflow_command(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    argv = _commands()[where]
    monkeypatch.setattr(cli, "_input_file", Path)  # the keystore is in the pod, not here
    args = cli._parser().parse_args([a.replace("$(POD_INDEX)", "0") for a in argv])
    assert args.config == Path("/etc/hedgeflow/hedgeflow.toml"), shlex.join(argv)
    assert args.brokers


def test_each_cluster_lists_its_own_pods_on_its_headless_service() -> None:
    services = {d["metadata"]["name"]: d for d in _kinds("Service")}
    clusters = 0
    for d in _kinds("StatefulSet"):
        name, spec = d["metadata"]["name"], d["spec"]
        service = services[spec["serviceName"]]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
        args = spec["template"]["spec"]["containers"][0]["args"]
        if "--addresses" not in args:
            assert spec["replicas"] == 1, f"{name}: more than one pod needs --addresses"
            continue
        clusters += 1
        addresses = args[args.index("--addresses") + 1].split(";")
        assert addresses == [
            f"{name}-{i}.{spec['serviceName']}.hedgeflow.svc.cluster.local:2101"
            for i in range(spec["replicas"])
        ]
        assert args[args.index("--process-id") + 1] == "$(POD_INDEX)"
    assert clusters == 2  # the oracle and the risk stage


def test_every_mount_has_a_volume_and_recovery_a_claim() -> None:
    for d in _kinds("StatefulSet"):
        spec = d["spec"]
        pod = spec["template"]["spec"]
        volumes = {v["name"] for v in pod["volumes"]}
        claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert set(mounts) <= volumes | claims, d["metadata"]["name"]
        args = pod["containers"][0]["args"]
        if "--recovery-dir" in args:
            recovery = args[args.index("--recovery-dir") + 1]
            assert any(mounts[c] == recovery for c in claims), d["metadata"]["name"]


def test_the_shipped_configuration_loads_with_its_kafka_table() -> None:
    (config,) = _kinds("ConfigMap")
    cfg = load_config(config["data"]["hedgeflow.toml"])
    assert (cfg.kafka.security_protocol, cfg.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    (secret,) = _kinds("Secret")
    mounted = "/etc/hedgeflow/secrets/"
    for path in (cfg.kafka.sasl_password_file, cfg.kafka.ssl_ca_location, cfg.orders.secret_file):
        assert path.startswith(mounted) and path.removeprefix(mounted) in secret["stringData"]


def test_the_compose_configuration_loads_and_names_the_mounted_secrets() -> None:
    compose = _compose()
    assert compose["configs"]["hedgeflow"]["file"] == "./hedgeflow.toml"
    cfg = load_config((COMPOSE.parent / "hedgeflow.toml").read_text())
    assert (cfg.kafka.security_protocol, cfg.kafka.sasl_mechanism) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512",
    )  # fmt: skip
    secrets = set(compose["secrets"])
    for path in (cfg.kafka.sasl_password_file, cfg.orders.secret_file):
        assert path.startswith("/run/secrets/") and path.removeprefix("/run/secrets/") in secrets
    kafka = compose["services"]["kafka"]["environment"]
    assert "CLIENTS:SASL_PLAINTEXT" in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == cfg.kafka.sasl_mechanism
