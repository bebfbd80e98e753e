"""A cluster over hosts, on loopback: processes started with ``--process-id`` and
``--addresses`` share the input partitions and the outputs, so the union of their
outputs equals one process's; and the cluster flags stop bad values at start-up."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import KafkaConnection
from connectors.kafka_tools import create_topics, publish, record
from connectors.recording import load_recording
from flows.cli.generate import GenerateParams, generate
from flows.cli.main import main
from flows.cli.runner import IDENTITY_FILE, Cluster, free_ports, parse_cluster
from operators.config import ConfigError

PARTITIONS = 2
DATASETS = ("oracle_prices", "partition_stats", "deadletter")
OUTPUT_TOPICS = ("oracle_prices", "deadletter")
SHAPES = [(1, 1), (2, 1), (1, 2), (2, 2)]
"""(processes, workers per process): every combination of 1 and 2."""

Shape = tuple[int, int]


def _run_shape(root: Path, brokers: str, base_toml: str, tag: str, shape: Shape) -> dict:
    """Run the oracle ``--until-end`` as ``shape``, a cluster over loopback addresses when
    it has two processes, each with its own ``--out`` and ``--recovery-dir``; on its own
    output topics."""
    processes, workers = shape
    name = f"{processes}x{workers}"
    topics = {t: f"{t.replace('_', '.')}.{tag}.{name}" for t in OUTPUT_TOPICS}
    topics |= {"orders": f"orders.{tag}", "fills": f"fills.{tag}"}
    create_topics(KafkaConnection(brokers), list(topics.values()), PARTITIONS)
    config = root / f"{name}.toml"
    lines = "".join(f'{k} = "{v}"\n' for k, v in topics.items())
    config.write_text(base_toml.replace("[topics]\n", "[topics]\n" + lines, 1))
    command = [sys.executable, "-m", "flows.cli", "run", "oracle", "--brokers", brokers,
               "--until-end", "--config", str(config),
               "--workers-per-process", str(workers)]  # fmt: skip
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(processes))
    commands = []
    for i in range(processes):
        own = ["--out", str(root / name / f"out{i}"),
               "--recovery-dir", str(root / name / f"rec{i}")]  # fmt: skip
        cluster = ["--process-id", str(i), "--addresses", addresses] if processes > 1 else []
        commands.append([*command, *own, *cluster])
    _run_together(commands, root / name)
    outs = [root / name / f"out{i}" for i in range(processes)]
    record(KafkaConnection(brokers), [topics[t] for t in OUTPUT_TOPICS], root / name / "topics")
    return {
        "outs": outs,
        "recovery": [root / name / f"rec{i}" for i in range(processes)],
        "config": config,
        "addresses": addresses,
        "commands": commands,
        "datasets": {d: _union(outs, d) for d in DATASETS},
        "topics": _topic_contents(root / name / "topics", topics),
    }


def _run_together(commands: list[list[str]], logs: Path) -> None:
    """Start every command at once (the processes of one cluster) and wait for all; fail
    the test, with that process's log, unless each exits 0."""
    logs.mkdir(parents=True, exist_ok=True)
    members = []
    for i, command in enumerate(commands):
        with (logs / f"process{i}.log").open("w") as log:
            members.append(subprocess.Popen(command, stderr=log))
    for i, member in enumerate(members):
        code = member.wait(timeout=300)
        assert code == 0, (logs / f"process{i}.log").read_text()[-4000:]


def _union(outs: list[Path], dataset: str) -> pl.DataFrame:
    """The rows of ``dataset`` under every ``--out`` of a run, sorted by every column."""
    files = [f for out in outs for f in sorted((out / dataset).glob("**/*.parquet"))]
    frame = pl.concat([pl.read_parquet(f) for f in files])
    return frame.sort(frame.columns)


def _topic_contents(recording: Path, topics: dict[str, str]) -> dict[str, Counter]:
    """Each output topic's messages as a multiset: of (partition, key, value) for the
    deadletter (rejects of several workers interleave); for ``oracle.prices`` of each
    (partition, key)'s price rows in their order (an asset's rows stay in order) and its
    last progress record. (How many progress records come between the rows depends on how
    the input was batched, which is timing, in one process as in many.)"""
    rows = load_recording(recording)
    contents: dict[str, Counter] = {}
    for short in OUTPUT_TOPICS:
        messages = rows.filter(pl.col("topic") == topics[short]).sort("partition", "offset")
        in_order: dict[tuple[int, bytes], list[bytes]] = {}
        last_progress: dict[tuple[int, bytes], bytes] = {}
        for m in messages.iter_rows(named=True):
            key = (m["partition"], m["key"])
            if m["value"].startswith(b'{"progress":true'):
                last_progress[key] = m["value"]
            else:
                in_order.setdefault(key, []).append(m["value"])
        if short == "oracle_prices":
            contents[short] = Counter(
                (k, tuple(v), last_progress.get(k)) for k, v in in_order.items()
            )
        else:
            contents[short] = Counter((k, v) for k, values in in_order.items() for v in values)
    return contents


@pytest.fixture(scope="module")
def runs(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[Shape, dict]:
    """One recorded input (with faults) on uuid-named topics, published once, and the
    oracle's run over it in every shape."""
    tag = uuid.uuid4().hex[:8]
    inputs = {"chain_logs": f"chain.logs.{tag}", "dex_quotes": f"dex.quotes.{tag}"}
    g = generate(
        GenerateParams(
            seed=13, minutes=10, partitions=PARTITIONS,
            chain_logs_topic=inputs["chain_logs"], dex_quotes_topic=inputs["dex_quotes"],
        )
    )  # fmt: skip
    create_topics(broker.connection, list(inputs.values()), PARTITIONS)
    publish(g.messages, broker.connection)
    root = tmp_path_factory.mktemp("cluster")
    return {s: _run_shape(root, broker.bootstrap, g.config_toml, tag, s) for s in SHAPES}


def test_two_processes_over_loopback_addresses_write_what_one_process_writes(
    runs: dict[Shape, dict],
) -> None:
    one, two = runs[(1, 1)], runs[(2, 1)]
    assert one["datasets"]["oracle_prices"].height > 20
    assert one["datasets"]["deadletter"].height > 0
    for dataset in DATASETS:
        assert two["datasets"][dataset].equals(one["datasets"][dataset]), dataset
    assert sum(one["topics"]["oracle_prices"].values()) > 0
    assert two["topics"] == one["topics"]


@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: f"{s[0]}proc-{s[1]}workers")
def test_any_process_and_worker_count_gives_one_process_outputs(
    runs: dict[Shape, dict], shape: Shape
) -> None:
    one, other = runs[(1, 1)], runs[shape]
    for dataset in DATASETS:
        assert other["datasets"][dataset].equals(one["datasets"][dataset]), dataset
    assert other["topics"] == one["topics"]


@pytest.mark.parametrize("shape", [(2, 1), (2, 2)], ids=["2proc-1workers", "2proc-2workers"])
def test_cluster_processes_never_write_one_file_and_hold_disjoint_recovery_partitions(
    runs: dict[Shape, dict], shape: Shape
) -> None:
    run = runs[shape]
    files = [{f.relative_to(out) for f in out.glob("*/**/*.parquet")} for out in run["outs"]]
    # Each dataset is written by the one worker holding its sink partition, wherever it is.
    assert not files[0] & files[1]
    assert {f.parts[0] for f in files[0] | files[1]} == set(DATASETS)
    parts = [{p.name for p in rec.glob("part-*.sqlite3")} for rec in run["recovery"]]
    assert parts == [{"part-0.sqlite3", "part-2.sqlite3"}, {"part-1.sqlite3", "part-3.sqlite3"}]
    for i, rec in enumerate(run["recovery"]):
        assert f'"process": "{i} of 2"' in (rec / IDENTITY_FILE).read_text()


def test_cluster_process_refuses_another_process_recovery_dir(
    runs: dict[Shape, dict], broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    run = runs[(2, 1)]
    code = main(["run", "oracle", "--brokers", broker.bootstrap, "--until-end",
                 "--config", str(run["config"]), "--out", str(run["outs"][0]),
                 "--recovery-dir", str(run["recovery"][0]),
                 "--process-id", "1", "--addresses", run["addresses"]])  # fmt: skip
    assert code == 2
    assert "its process is '0 of 2', this run's is '1 of 2'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--process-id", "0"], "--process-id needs --addresses"),
        (["--addresses", "127.0.0.1:1;127.0.0.1:2"], "--addresses needs --process-id"),
        (["--process-id", "2", "--addresses", "127.0.0.1:1;127.0.0.1:2"],
         "--process-id must be in 0..1 (an index into the 2 --addresses); got 2"),
        (["--process-id", "0", "--addresses", "127.0.0.1;127.0.0.1:2"],
         "--addresses: expected host:port with a port in 1..65535; got '127.0.0.1'"),
        (["--process-id", "0", "--addresses", "127.0.0.1:0,127.0.0.1:2"],
         "got '127.0.0.1:0'"),
        (["--process-id", "0", "--addresses", "127.0.0.1:70000"], "got '127.0.0.1:70000'"),
        (["--process-id", "1", "--addresses", "127.0.0.1:5;127.0.0.1:5"],
         "each process needs its own host:port; '127.0.0.1:5' repeats"),
        (["--process-id", "0", "--addresses", "127.0.0.1:5;127.0.0.1:6", "--processes", "2"],
         "--processes 2 starts a cluster on this machine"),
        (["--process-id", "0", "--addresses", "192.0.2.1:5000;127.0.0.1:6"],
         "'192.0.2.1:5000', process 0's address, is not an address of this host"),
        (["--process-id", "-1", "--addresses", "127.0.0.1:5"], "argument --process-id: must be"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["run", "replay"])
def test_bad_cluster_flags_stop_at_start_with_the_flag_named(
    command: str, flags: list[str], error: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    recording = tmp_path / "recording.parquet"
    recording.write_bytes(b"")
    out = ["--out", str(tmp_path / "out")]
    head = ["run", "oracle", "--brokers", "127.0.0.1:1"] if command == "run" else ["replay"]
    if command == "replay":
        head.append(str(recording))
    assert main([*head, *out, *flags]) == 2
    assert error in capsys.readouterr().err


def test_cluster_process_whose_address_is_in_use_stops_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        code = main(["replay", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "out"),
                     "--process-id", "0", "--addresses", f"{address};127.0.0.1:1"])  # fmt: skip
    assert code == 2
    assert f"{address!r}, process 0's address, is in use on this host" in capsys.readouterr().err


def test_cluster_run_again_over_its_recovery_dirs_resumes_and_writes_each_row_once(
    runs: dict[Shape, dict],
) -> None:
    run = runs[(2, 2)]
    _run_together(run["commands"], run["outs"][0].parent)
    for dataset in DATASETS:
        assert _union(run["outs"], dataset).equals(run["datasets"][dataset]), dataset


_HOSTS = st.sampled_from(["127.0.0.1", "localhost", "host-a.example", "[::1]", "10.0.0.2"])


@given(
    addresses=st.lists(st.tuples(_HOSTS, st.integers(1, 65535)), min_size=1, max_size=6,
                       unique=True).map(lambda a: [f"{h}:{p}" for h, p in a]),
    separator=st.sampled_from([";", ",", " ; "]),
    index=st.integers(0, 8),
)  # fmt: skip
def test_addresses_and_process_id_name_the_cluster_or_the_bad_index(
    addresses: list[str], separator: str, index: int
) -> None:
    text = separator.join(addresses)
    if index < len(addresses):
        cluster = parse_cluster(index, text, 1)
        assert cluster == Cluster(process_id=index, addresses=tuple(addresses))
        assert cluster.processes == len(addresses)
    else:
        with pytest.raises(ConfigError, match=f"must be in 0..{len(addresses) - 1} .* got {index}"):
            parse_cluster(index, text, 1)


@pytest.mark.parametrize("differs", ["workers_per_process", "config"])
def test_cluster_processes_started_differently_stop_at_start_naming_what_differs(
    runs: dict[Shape, dict], broker: EmbeddedBroker, tmp_path: Path, differs: str
) -> None:
    run = runs[(2, 1)]
    other_config = tmp_path / "other.toml"
    other_config.write_text(
        run["config"].read_text().replace('fills = "', 'fills = "other.', 1)
        if differs == "config" else run["config"].read_text()
    )  # fmt: skip
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(2))
    members = []
    for i in range(2):
        config = other_config if i == 1 else run["config"]
        workers = "2" if i == 1 and differs == "workers_per_process" else "1"
        command = [sys.executable, "-m", "flows.cli", "run", "oracle", "--until-end",
                   "--brokers", broker.bootstrap, "--config", str(config),
                   "--out", str(tmp_path / f"out{i}"), "--workers-per-process", workers,
                   "--process-id", str(i), "--addresses", addresses]  # fmt: skip
        members.append(subprocess.Popen(command, stderr=subprocess.PIPE, text=True))
    for i, member in enumerate(members):
        _, err = member.communicate(timeout=120)
        assert member.returncode == 2, err[-2000:]
        assert f"process {1 - i} at 127.0.0.1:" in err
        assert f"was started with {differs} " in err
    assert not (tmp_path / "out0").exists() or not any((tmp_path / "out0").iterdir())
