"""The ``hedgeflow`` command line. ``hedgeflow COMMAND --help`` explains each command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import msgspec

from operators.config import Config, ConfigError, load_config
from operators.stages import StageParams, stage_params

if TYPE_CHECKING:
    from connectors.kafka_clients import KafkaConnection

log = logging.getLogger("hedgeflow")


def _config(path: Path | None) -> Config:
    if path is None:
        return load_config(None)
    if path.is_dir():
        raise ConfigError(f"--config: expected a TOML file; got {str(path)!r}, a directory")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: configuration is not UTF-8 text: {exc}") from None
    return load_config(text)


def _connection(args: argparse.Namespace) -> KafkaConnection | None:
    """``--brokers`` with the ``[kafka]`` table's security (its password read and its
    files checked here, at start-up); None without ``--brokers``."""
    from connectors.kafka_clients import KafkaConnection, kafka_security

    if not getattr(args, "brokers", None):
        return None
    return KafkaConnection(args.brokers, kafka_security(args.cfg.kafka))


def _reach(args: argparse.Namespace) -> None:
    """Stop with a one-line error unless ``--brokers`` answers within ``--broker-timeout``."""
    from connectors.kafka_tools import check_brokers

    check_brokers(args.kafka, args.broker_timeout)


def _stage_identity(args: argparse.Namespace, stage: str, **inputs: str) -> dict[str, str]:
    from flows.cli.runner import config_digest

    return {"stage": stage, **inputs, "config": config_digest(args.cfg),
            "out": str(args.out.resolve())}  # fmt: skip


def _cluster(args: argparse.Namespace) -> None:
    """Set ``args.cluster`` from ``--process-id`` and ``--addresses`` (None without them),
    stopping at a bad flag; a process of a cluster over hosts also checks that it can
    listen on its own address."""
    from flows.cli.runner import check_own_address, parse_cluster

    processes = 1 if args.spawned else args.processes
    args.cluster = parse_cluster(args.process_id, args.addresses, processes)
    if args.cluster is not None and not args.spawned:
        check_own_address(args.cluster)


def _claim(args: argparse.Namespace, identity: dict[str, str]) -> None:
    """Before the first run of a stage: claim ``--recovery-dir`` for ``identity``, and
    refuse an ``--out`` that holds datasets unless this run resumes the one that wrote
    them. Children of a multi-process run skip this (their parent did it). Each process
    of a cluster over hosts checks what it can alone (its ``--out``, the directory it
    resumes), then meets the others (same flags and configuration), then claims its own
    directory for its share of the run."""
    from flows.cli.runner import IDENTITY_FILE, claim_recovery, meet_peers, refuse_earlier_outputs

    if args.spawned:
        return
    cluster = args.cluster
    agreed = {k: v for k, v in identity.items() if k != "out"}
    if cluster is not None:
        identity = {**identity, "process": f"{cluster.process_id} of {cluster.processes}"}
    recovery: Path | None = args.recovery_dir
    resumes = recovery is not None and (recovery / IDENTITY_FILE).is_file()
    if not resumes:
        refuse_earlier_outputs(args.out)  # before a new recovery directory is made
    if cluster is not None:
        if recovery is not None and resumes:
            claim_recovery(recovery, identity, cluster)  # only checks: it holds a run
        agreed |= {"addresses": ";".join(cluster.addresses),
                   "workers_per_process": str(args.workers_per_process)}  # fmt: skip
        meet_peers(cluster, agreed)
    if recovery is not None:
        claim_recovery(recovery, identity, cluster)


def _finished_share(args: argparse.Namespace) -> None:
    """Log what a process of a cluster over hosts leaves under its ``--out``."""
    cluster = args.cluster
    log.info(
        "process %d of %d finished; %s holds this process's share of the datasets: the "
        "cluster's outputs are the union of every process's --out (hedgeflow summary on "
        "the union)", cluster.process_id, cluster.processes, args.out,
    )  # fmt: skip


def _serve_metrics(args: argparse.Namespace, cache_dir: Path | None) -> None:
    """With ``--metrics-port P``: have this process's dataflow serve ``/metrics`` on P plus
    its process id (``connectors.metrics``); Bytewax writes ``dataflow.json`` to
    ``cache_dir`` (a new temporary directory if None)."""
    parent = getattr(args, "processes", 1) > 1 and args.process_id is None
    if args.metrics_port is None or parent:  # the parent of a multi-process run runs no flow
        return
    import tempfile

    from connectors.metrics import enable_dataflow_api

    port = args.metrics_port + (getattr(args, "process_id", None) or 0)
    if cache_dir is None:
        cache_dir = Path(tempfile.mkdtemp(prefix="hedgeflow-dataflow-"))
    enable_dataflow_api(port, cache_dir)
    log.info("metrics on http://0.0.0.0:%d/metrics", port)


def cmd_broker(args: argparse.Namespace) -> int:
    from connectors.broker import EmbeddedBroker
    from flows.cli.runner import wait_for_interrupt

    with EmbeddedBroker() as broker:
        print(broker.bootstrap, flush=True)
        log.info("Tansu broker listening on %s; Ctrl-C or SIGTERM stops it", broker.bootstrap)
        wait_for_interrupt()
        log.info("stopping the broker")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from connectors.kafka_tools import create_topics

    _reach(args)
    topics = list(msgspec.structs.asdict(args.cfg.topics).values())
    try:
        create_topics(args.kafka, topics, args.partitions)
    except ValueError as exc:  # an existing topic with fewer partitions
        raise ConfigError(str(exc)) from None
    for name in topics:
        print(name)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.cli.runner import run
    from flows.dataflows import kafka_flow

    params: StageParams = args.params
    if args.stage == "risk" and params.risk is None:
        raise ConfigError("run risk needs risk.venue (the MarginVenue address); got none")
    _cluster(args)
    _reach(args)
    topics = params.cfg.topics
    inputs = [topics.chain_logs, topics.dex_quotes]
    if args.stage == "risk":
        inputs.append(topics.oracle_prices)
    _claim(args, _stage_identity(args, f"run {args.stage}", topics=",".join(inputs)))
    _serve_metrics(args, args.out)
    code = run(
        lambda: kafka_flow(args.kafka, params, args.out, args.until_end, args.stage),
        processes=args.processes,
        workers_per_process=args.workers_per_process,
        epoch_interval_s=params.cfg.run.epoch_interval_s,
        recovery_dir=args.recovery_dir,
        cluster=args.cluster,
    )
    if code == 0 and args.until_end and not args.spawned:
        if args.cluster is not None:
            _finished_share(args)
        else:
            from flows.cli.summary import print_summary

            print_summary(args.out)
    return code


def cmd_ingest(args: argparse.Namespace) -> int:
    from connectors.chain_source import probe
    from flows.cli.runner import run
    from flows.ingest import ingest_flow

    params: StageParams = args.params
    cfg = params.cfg
    if args.rpc:
        cfg = msgspec.structs.replace(
            cfg, chain=msgspec.structs.replace(cfg.chain, rpc_url=args.rpc)
        )
        params = dataclasses.replace(params, cfg=cfg)
    chain_id, head = probe(cfg.chain.rpc_url, cfg.chain.rpc_timeout_s)
    log.info("node %s: chain %d, head block %d", cfg.chain.rpc_url, chain_id, head)
    kafka = None if args.dry_run else args.kafka
    if kafka is not None:
        _reach(args)
    if args.recovery_dir is not None:
        from flows.cli.runner import claim_recovery, config_digest

        identity = {"stage": "ingest", "chain_id": str(chain_id),
                    "topic": cfg.topics.chain_logs, "config": config_digest(cfg)}  # fmt: skip
        claim_recovery(args.recovery_dir, identity)
    _serve_metrics(args, None)
    return run(
        lambda: ingest_flow(params, kafka, args.from_block, args.to_block),
        epoch_interval_s=cfg.run.epoch_interval_s,
        recovery_dir=args.recovery_dir,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from connectors.recording import recording_fingerprint
    from flows.cli.replay_input import ReplayInput, check_recording, write_rejects
    from flows.cli.runner import run
    from flows.dataflows import replay_flow

    params: StageParams = args.params
    started = time.monotonic()
    checked = ReplayInput({}, [], 0)
    _cluster(args)
    if not args.spawned:
        topics = {params.cfg.topics.chain_logs, params.cfg.topics.dex_quotes}
        checked = check_recording(args.recording, topics)
        _claim(
            args, _stage_identity(args, "replay", recording=recording_fingerprint(args.recording))
        )
        if args.cluster is None or args.cluster.process_id == 0:  # the recording's, once
            write_rejects(checked.rejects, args.out)
    _serve_metrics(args, args.out)
    code = run(
        lambda: replay_flow(args.recording, args.out, params),
        processes=args.processes,
        workers_per_process=args.workers_per_process,
        epoch_interval_s=params.cfg.run.epoch_interval_s,
        recovery_dir=args.recovery_dir,
        cluster=args.cluster,
    )
    if code == 0 and args.cluster is not None and not args.spawned:
        _finished_share(args)
    elif code == 0 and not args.spawned:
        log.info("replay finished in %.1f s", time.monotonic() - started)
        from flows.cli.summary import print_summary

        print_summary(args.out, unread=checked.unread, identical=checked.identical)
    return code


def cmd_record(args: argparse.Namespace) -> int:
    from connectors.kafka_tools import record
    from flows.cli.runner import message_counter

    _reach(args)
    try:
        count = record(args.kafka, args.topics, args.out, progress=message_counter("record"))
    except ValueError as exc:  # a topic that does not exist
        raise ConfigError(str(exc)) from None
    log.info("recorded %d messages to %s", count, args.out)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from connectors.kafka_tools import publish
    from connectors.recording import iter_messages, read_recording
    from flows.cli.runner import message_counter

    try:
        read = read_recording(args.recording)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if read.conflicting.height:
        log.warning(
            "%d rows repeat offsets with different contents and are not published (replay "
            "sends them to the deadletter)", read.conflicting.height,
        )  # fmt: skip
    if read.identical:
        log.warning("%d identical repeated rows are published once", read.identical)
    _reach(args)
    count = publish(
        iter_messages(read.rows), args.kafka, speed=args.speed,
        progress=message_counter("publish"),
    )  # fmt: skip
    log.info("published %d messages", count)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from connectors.recording import write_recording
    from flows.cli.generate import FAULTS, GenerateParams, generate

    try:
        params = GenerateParams(
            seed=args.seed,
            minutes=args.minutes,
            partitions=args.partitions,
            faults=frozenset() if args.no_faults else FAULTS,
        )
    except ValueError as exc:  # a value beyond what the generator takes
        raise ConfigError(f"generate: {exc}") from None
    generated = generate(params)
    args.out.mkdir(parents=True, exist_ok=True)
    count = write_recording(generated.messages, args.out / "recording.parquet")
    (args.out / "hedgeflow.toml").write_text(generated.config_toml)
    log.info("wrote %d messages to %s", count, args.out / "recording.parquet")
    log.info("faults injected: %s", generated.faults)
    print(args.out / "recording.parquet")
    print(args.out / "hedgeflow.toml")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.cli.demo import demo

    return demo(args.out)


def cmd_greeks(args: argparse.Namespace) -> int:
    from flows.cli.greeks_csv import greeks_csv

    # utf-8-sig: spreadsheets save CSV with a byte-order mark, which is not part of "kind"
    with args.input.open(newline="", encoding="utf-8-sig") as src:
        try:
            errors = greeks_csv(src, sys.stdout)
        except ValueError as exc:  # the header lacks or adds columns, or the text is not UTF-8
            _fail(f"{args.input}: {exc}")
            return 2
    if errors:
        log.warning("%d row(s) had invalid input; see their error column", errors)
    return 1 if errors else 0


def cmd_margin(args: argparse.Namespace) -> int:
    from flows.cli.margin_tool import margin_json

    try:
        margin_json(args.input.read_bytes(), sys.stdout, args.worst)
    except ValueError as exc:  # an invalid portfolio, or --worst below 1
        _fail(f"{args.input}: {exc}")
        return 2
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from flows.cli.route import route_json

    try:
        route_json(
            args.pools.read_bytes(), sys.stdout, args.sell, args.amount, args.buy, args.gas_cost
        )
    except ValueError as exc:  # bad input, or pools that cannot fill the order
        _fail(f"route: {args.pools}: {exc}")
        return 2
    return 0


def cmd_devchain(args: argparse.Namespace) -> int:
    from flows.cli.devchain import devchain

    return devchain(
        args.out, args.scenario, args.seed, args.accounts, args.keep_running, args.record
    )


def cmd_execute(args: argparse.Namespace) -> int:
    from flows.cli.execute import cmd_execute as execute

    return execute(args)


def cmd_keystore(args: argparse.Namespace) -> int:
    from flows.cli.execute import cmd_keystore as keystore

    return keystore(args)


def cmd_summary(args: argparse.Namespace) -> int:
    from flows.cli.summary import print_summary

    print_summary(args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.cli.report import cmd_report as report

    return report([args.out, *args.more], args.html, args.recording, args.cfg)


def _one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n`` for a newline), so that an
    error echoing a bad input value stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fail(message: str) -> None:
    """The one ``hedgeflow: ...`` line of an error, on stderr."""
    print(f"hedgeflow: {_one_line(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``hedgeflow: COMMAND: argument --flag: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"hedgeflow: {_one_line(self.prog.removeprefix('hedgeflow ') + ': ' + message)}\n"
        )


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}; got {text!r}")
        return value

    return parse


def _raw_units(low: int) -> Callable[[str], int]:
    """A decimal string of raw token units: digits only (no sign, exponent, separator or
    leading 0), at most 78 (uint256)."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"0|[1-9][0-9]{0,77}", text):
            raise argparse.ArgumentTypeError(
                f"expected raw units, up to 78 digits only; got {text!r}"
            )
        if int(text) < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}; got {text!r}")
        return int(text)

    return parse


def _port(text: str) -> int:
    value = _int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, <= 65535; got {text!r}")
    return value


def _above_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 and finite; got {text!r}")
    return value


def _input_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not there"
        raise argparse.ArgumentTypeError(f"expected a file; got {text!r}, {what}")
    return path


_POSITIVE_INT = _int_at_least(1)
_NON_NEGATIVE_INT = _int_at_least(0)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hedgeflow",
        description="Streaming oracle, risk and execution for on-chain derivatives.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, config: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument(
            "--log-format", choices=["text", "json"], default="text",
            help="text lines, or JSON lines (ts, level, logger, message, fields) (default text)",
        )  # fmt: skip
        if config:
            c.add_argument(
                "--config", type=Path, help="TOML configuration file (default: built-in defaults)"
            )
        return c

    def brokers(c: argparse.ArgumentParser) -> None:
        c.add_argument("--brokers", required=True, help="bootstrap servers, host:port[,host:port]")
        broker_timeout(c)

    def broker_timeout(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--broker-timeout", type=_above_zero, default=30.0, metavar="S",
            help="give up when no broker answers within S seconds at start (default 30)",
        )  # fmt: skip

    def metrics_port(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--metrics-port", type=_port, metavar="PORT",
            help="serve Prometheus /metrics on PORT (worker process N of a run: PORT + N)",
        )  # fmt: skip

    def workers(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--processes", type=_POSITIVE_INT, default=1,
            help="worker processes on this machine (default 1; not with --addresses)",
        )  # fmt: skip
        c.add_argument(
            "--workers-per-process", type=_POSITIVE_INT, default=1, metavar="W",
            help="worker threads in each process (default 1)",
        )  # fmt: skip
        c.add_argument(
            "--recovery-dir", type=Path,
            help="enable Bytewax recovery, state in this directory (in a cluster over hosts: "
            "one per process)",
        )  # fmt: skip
        c.add_argument(
            "--addresses", metavar="HOST:PORT;...",
            help="a cluster over hosts: host:port of every process, the same list in the "
            "same order on every host (';' or ',' between them); needs --process-id",
        )  # fmt: skip
        c.add_argument(
            "--process-id", type=_NON_NEGATIVE_INT, metavar="I",
            help="this process's index in --addresses (0 for the first)",
        )  # fmt: skip
        c.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)

    c = command(
        "broker", "Start the embedded Kafka-compatible broker (Tansu), print its address.", False
    )
    c.set_defaults(func=cmd_broker)

    c = command("topics", "Create every topic of the configuration.")
    brokers(c)
    c.add_argument(
        "--partitions", type=_POSITIVE_INT, default=2, help="partitions per topic (default 2)"
    )
    c.set_defaults(func=cmd_topics)

    c = command("run", "Run a stage from Kafka; keeps running unless --until-end.")
    c.add_argument(
        "stage",
        choices=["oracle", "risk"],
        help="oracle: chain.logs and dex.quotes to oracle.prices; risk: the venue's events, "
        "option quotes and oracle.prices to orders (needs risk.venue)",
    )
    brokers(c)
    c.add_argument(
        "--out", type=Path, default=Path("out"), help="Parquet output directory (default out/)"
    )
    c.add_argument("--until-end", action="store_true", help="stop at the end of the input")
    workers(c)
    metrics_port(c)
    c.set_defaults(func=cmd_run)

    c = command("ingest", "Follow an EVM node and publish its logs to chain.logs.")
    c.add_argument("--rpc", help="JSON-RPC URL of the node (default: chain.rpc_url)")
    c.add_argument("--brokers", help="bootstrap servers (required unless --dry-run)")
    broker_timeout(c)
    c.add_argument(
        "--from-block", type=_NON_NEGATIVE_INT, help="cold start here (default: head - backfill)"
    )
    c.add_argument(
        "--to-block", type=_NON_NEGATIVE_INT, help="stop after this block (default: follow forever)"
    )
    c.add_argument("--dry-run", action="store_true", help="print what would be published")
    c.add_argument("--recovery-dir", type=Path, help="enable Bytewax recovery, state here")
    metrics_port(c)
    c.set_defaults(func=cmd_ingest)

    c = command("replay", "Run every flow from a recording, no broker; write Parquet.")
    c.add_argument("recording", type=Path, help="a recording file, or a directory of them")
    c.add_argument("--out", type=Path, required=True, help="Parquet output directory")
    workers(c)
    metrics_port(c)
    c.set_defaults(func=cmd_replay)

    c = command("record", "Write Kafka topics to a recording (Parquet).")
    brokers(c)
    c.add_argument("--topics", nargs="+", required=True, help="topics to record")
    c.add_argument("--out", type=Path, required=True, help="output directory")
    c.set_defaults(func=cmd_record)

    c = command(
        "publish", "Put a recording back onto Kafka, keeping partitions, order, timestamps."
    )
    c.add_argument("recording", type=Path, help="a recording file, or a directory of them")
    brokers(c)
    c.add_argument(
        "--speed", type=_above_zero, help="pace at X times real time (default: as fast as possible)"
    )
    c.set_defaults(func=cmd_publish)

    c = command("generate", "Write a synthetic recording and the configuration for it.", False)
    c.add_argument("--out", type=Path, required=True, help="output directory")
    c.add_argument("--seed", type=_NON_NEGATIVE_INT, default=7, help="random seed (default 7)")
    c.add_argument(
        "--minutes", type=_above_zero, default=60.0, help="event time covered (default 60)"
    )
    c.add_argument(
        "--partitions", type=_POSITIVE_INT, default=2, help="partitions per topic (default 2)"
    )
    c.add_argument("--no-faults", action="store_true", help="leave out the injected faults")
    c.set_defaults(func=cmd_generate)

    c = command(
        "demo", "Broker, bundled recording, oracle flow, Parquet, summary: end to end.", False
    )
    c.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)"
    )
    c.set_defaults(func=cmd_demo)

    c = command("greeks", "Price and Greeks (Black-76 or BSM) of each CSV row, to stdout.", False)
    c.add_argument("input", type=_input_file, help="CSV with columns kind,model,S,K,T,r,q,sigma")
    c.set_defaults(func=cmd_greeks)

    c = command(
        "margin", "Margin, health, worst scenarios and Greeks of a portfolio, as JSON.", False
    )
    c.add_argument("input", type=_input_file, help="portfolio JSON (see README, Margin what-if)")
    c.add_argument(
        "--worst", type=_POSITIVE_INT, default=5, help="worst scenarios to list (default 5)"
    )
    c.set_defaults(func=cmd_margin)

    c = command("route", "Split one order across Uniswap V2/V3 pools, exactly; as JSON.", False)
    c.add_argument("pools", type=_input_file, help="pools JSON (see README, Routing)")
    c.add_argument("--sell", required=True, metavar="TOKEN", help="the token sold")
    c.add_argument(
        "--amount", type=_raw_units(1), required=True, metavar="N",
        help="raw units of the token sold (wei for WETH)",
    )  # fmt: skip
    c.add_argument(
        "--buy", metavar="TOKEN", help="the token bought (default: the one the pools pair it with)"
    )
    c.add_argument(
        "--gas-cost", type=_raw_units(0), default=0, metavar="N",
        help="raw units of the token bought per gas unit, to weigh each leg's gas (default 0)",
    )  # fmt: skip
    c.set_defaults(func=cmd_route)

    c = command(
        "devchain", "Start Anvil, deploy the venue, pools and feed, write the config.", False
    )
    c.add_argument("--out", type=Path, default=Path("out/devchain"), help="output directory")
    c.add_argument("--scenario", action="store_true", help="run the seeded market scenario")
    c.add_argument("--seed", type=_NON_NEGATIVE_INT, default=7, help="scenario seed (default 7)")
    c.add_argument(
        "--accounts", type=_POSITIVE_INT, default=50, help="trading accounts (default 50)"
    )
    c.add_argument("--keep-running", action="store_true", help="keep the node up until Ctrl-C")
    c.add_argument("--record", action="store_true", help="write the logs to OUT/recording.parquet")
    c.set_defaults(func=cmd_devchain)

    c = command(
        "execute",
        "Run the executor for one signing key: orders from the orders topic become signed "
        "venue transactions, sent once; outcomes go to fills and executions/.",
    )
    c.add_argument(
        "--brokers", help="bootstrap servers, host:port[,host:port] (not for --halt/--resume)"
    )
    broker_timeout(c)
    c.add_argument(
        "--keystore", type=_input_file, required=True, help="encrypted key (Web3 Secret Storage)"
    )
    c.add_argument(
        "--passphrase-file", type=Path,
        help="file holding the keystore passphrase (default: $HEDGEFLOW_KEYSTORE_PASSPHRASE)",
    )  # fmt: skip
    c.add_argument("--rpc", help="JSON-RPC URL of the node (default: chain.rpc_url)")
    c.add_argument("--out", type=Path, default=Path("out"), help="output directory (default out/)")
    c.add_argument(
        "--state", type=Path,
        help="the signer's SQLite state file (default OUT/executor/<address>.sqlite)",
    )  # fmt: skip
    reading = c.add_mutually_exclusive_group()
    reading.add_argument(
        "--partitions", type=lambda t: [int(p) for p in t.split(",")], metavar="P[,P...]",
        help="orders partitions to read (default: all)",
    )  # fmt: skip
    reading.add_argument(
        "--group", metavar="ID",
        help="join consumer group ID instead of assigning partitions (real Kafka: lag tools "
        "see the offsets; one group per signer; slow to join on Tansu)",
    )  # fmt: skip
    switch = c.add_mutually_exclusive_group()
    switch.add_argument("--halt", action="store_true", help="kill switch: set HALTED and exit")
    switch.add_argument("--resume", action="store_true", help="set ACTIVE and exit")
    switch.add_argument(
        "--reduce-only", action="store_true", help="set REDUCING (risk-reducing orders only), exit"
    )
    c.add_argument("--reason", default="operator", help="why, recorded with --halt/--resume")
    metrics_port(c)
    c.set_defaults(func=cmd_execute)

    c = command("keystore", "Write an encrypted keystore (scrypt) and print its address.", False)
    c.add_argument("--out", type=Path, required=True, help="the keystore file to create")
    c.add_argument(
        "--passphrase-file", type=Path,
        help="file holding the passphrase (default: $HEDGEFLOW_KEYSTORE_PASSPHRASE)",
    )  # fmt: skip
    c.add_argument(
        "--dev-account", type=_NON_NEGATIVE_INT, metavar="N",
        help="Anvil's public dev account N instead of a new random key (dev chain only)",
    )  # fmt: skip
    c.set_defaults(func=cmd_keystore)

    c = command("summary", "Print the per-asset summary of an output directory.", False)
    c.add_argument("out", type=Path, help="the output directory of a run")
    c.set_defaults(func=cmd_summary)

    c = command(
        "report",
        "Draw the Parquet outputs on one self-contained HTML page: the oracle price per asset "
        "against its sources (with --recording), its confidence band and the degraded, stale "
        "and held windows; the deadletter by reason over time; account health; the orders "
        "with their outcomes; the Greeks per book. A missing dataset gives a chart saying "
        "'no data'.",
    )
    c.add_argument("out", type=Path, help="the output directory of a run")
    c.add_argument(
        "more", type=Path, nargs="*", help="more output directories of the same run's stages"
    )
    c.add_argument("--html", type=Path, required=True, help="the HTML file to write")
    c.add_argument(
        "--recording", type=Path,
        help="the run's recording (a file or a directory): its sources' prices are drawn "
        "against the oracle's (decoded with --config, the run's configuration)",
    )  # fmt: skip
    c.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exited:  # --help, or a usage error already printed in one line
        return exited.code if isinstance(exited.code, int) else 2
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        from flows.cli.json_logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python is chatty at INFO
    try:
        if hasattr(args, "config"):
            args.cfg = _config(args.config)
            args.params = stage_params(args.cfg)  # checks the cross-references too
            args.kafka = _connection(args)
        if args.command == "ingest" and not (args.dry_run or args.brokers):
            raise ConfigError("ingest needs --brokers (or --dry-run)")
    except (ConfigError, OSError) as exc:
        _fail(str(exc))
        return 2
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ConnectionError, TimeoutError) as exc:
        _fail(str(exc))
        return 2
    except KeyboardInterrupt:  # outside a dataflow (runner handles Ctrl-C inside one)
        from flows.cli.runner import INTERRUPTED

        resume = (
            " (resume it with the same --recovery-dir)"
            if getattr(args, "recovery_dir", None)
            else ""
        )
        _fail(f"{args.command}: interrupted{resume}")
        return INTERRUPTED
