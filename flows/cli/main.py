"""The ``hedgeflow`` command line. ``hedgeflow COMMAND --help`` explains each command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import msgspec

from operators.config import Config, ConfigError, load_config
from operators.stages import StageParams, stage_params

log = logging.getLogger("hedgeflow")


def _config(path: Path | None) -> Config:
    if path is None:
        return load_config(None)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: configuration is not UTF-8 text: {exc}") from None
    return load_config(text)


def _brokers(text: str) -> list[str]:
    return [b.strip() for b in text.split(",") if b.strip()]


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

    topics = list(msgspec.structs.asdict(args.cfg.topics).values())
    create_topics(args.brokers, topics, args.partitions)
    for name in topics:
        print(name)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.cli.runner import run
    from flows.dataflows import kafka_flow

    params: StageParams = args.params
    if args.stage == "risk" and params.risk is None:
        raise ConfigError("run risk needs risk.venue (the MarginVenue address); got none")
    brokers = _brokers(args.brokers)
    code = run(
        lambda: kafka_flow(brokers, params, args.out, args.until_end, args.stage),
        processes=args.processes,
        epoch_interval_s=params.cfg.run.epoch_interval_s,
        recovery_dir=args.recovery_dir,
        process_id=args.process_id,
        addresses=args.addresses,
    )
    if code == 0 and args.process_id is None and args.until_end:
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
    brokers = None if args.dry_run else _brokers(args.brokers)
    return run(
        lambda: ingest_flow(params, brokers, args.from_block, args.to_block),
        epoch_interval_s=cfg.run.epoch_interval_s,
        recovery_dir=args.recovery_dir,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from flows.cli.runner import run
    from flows.dataflows import replay_flow

    params: StageParams = args.params
    started = time.monotonic()
    code = run(
        lambda: replay_flow(args.recording, args.out, params),
        processes=args.processes,
        epoch_interval_s=params.cfg.run.epoch_interval_s,
        recovery_dir=args.recovery_dir,
        process_id=args.process_id,
        addresses=args.addresses,
    )
    if code == 0 and args.process_id is None:
        log.info("replay finished in %.1f s", time.monotonic() - started)
        from flows.cli.summary import print_summary

        print_summary(args.out)
    return code


def cmd_record(args: argparse.Namespace) -> int:
    from connectors.kafka_tools import record
    from flows.cli.runner import message_counter

    count = record(args.brokers, args.topics, args.out, progress=message_counter("record"))
    log.info("recorded %d messages to %s", count, args.out)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from connectors.kafka_tools import publish
    from connectors.recording import iter_messages, load_recording
    from flows.cli.runner import message_counter

    frame = load_recording(args.recording)
    count = publish(
        iter_messages(frame), args.brokers, speed=args.speed, progress=message_counter("publish")
    )
    log.info("published %d messages", count)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from connectors.recording import write_recording
    from flows.cli.generate import FAULTS, GenerateParams, generate

    params = GenerateParams(
        seed=args.seed,
        minutes=args.minutes,
        partitions=args.partitions,
        faults=frozenset() if args.no_faults else FAULTS,
    )
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

    with args.input.open(newline="") as src:
        try:
            errors = greeks_csv(src, sys.stdout)
        except ValueError as exc:  # the header lacks or adds columns
            print(f"hedgeflow: {args.input}: {exc}", file=sys.stderr)
            return 2
    if errors:
        log.warning("%d row(s) had invalid input; see their error column", errors)
    return 1 if errors else 0


def cmd_margin(args: argparse.Namespace) -> int:
    from flows.cli.margin_tool import margin_json

    try:
        margin_json(args.input.read_bytes(), sys.stdout, args.worst)
    except ValueError as exc:  # an invalid portfolio, or --worst below 1
        print(f"hedgeflow: {args.input}: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_devchain(args: argparse.Namespace) -> int:
    from flows.cli.devchain import devchain

    return devchain(
        args.out, args.scenario, args.seed, args.accounts, args.keep_running, args.record
    )


def cmd_summary(args: argparse.Namespace) -> int:
    from flows.cli.summary import print_summary

    print_summary(args.out)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hedgeflow",
        description="Streaming oracle, risk and execution for on-chain derivatives.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, config: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        if config:
            c.add_argument(
                "--config", type=Path, help="TOML configuration file (default: built-in defaults)"
            )
        return c

    def workers(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--processes", type=int, default=1, help="worker processes on this machine (default 1)"
        )
        c.add_argument(
            "--recovery-dir", type=Path, help="enable Bytewax recovery, state in this directory"
        )
        c.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
        c.add_argument("--addresses", help=argparse.SUPPRESS)

    c = command(
        "broker", "Start the embedded Kafka-compatible broker (Tansu), print its address.", False
    )
    c.set_defaults(func=cmd_broker)

    c = command("topics", "Create every topic of the configuration.")
    c.add_argument("--brokers", required=True, help="bootstrap servers, host:port[,host:port]")
    c.add_argument("--partitions", type=int, default=2, help="partitions per topic (default 2)")
    c.set_defaults(func=cmd_topics)

    c = command("run", "Run a stage from Kafka; keeps running unless --until-end.")
    c.add_argument(
        "stage",
        choices=["oracle", "risk"],
        help="oracle: chain.logs and dex.quotes to oracle.prices; risk: the venue's events, "
        "option quotes and oracle.prices to orders (needs risk.venue)",
    )
    c.add_argument("--brokers", required=True, help="bootstrap servers, host:port[,host:port]")
    c.add_argument(
        "--out", type=Path, default=Path("out"), help="Parquet output directory (default out/)"
    )
    c.add_argument("--until-end", action="store_true", help="stop at the end of the input")
    workers(c)
    c.set_defaults(func=cmd_run)

    c = command("ingest", "Follow an EVM node and publish its logs to chain.logs.")
    c.add_argument("--rpc", help="JSON-RPC URL of the node (default: chain.rpc_url)")
    c.add_argument("--brokers", help="bootstrap servers (required unless --dry-run)")
    c.add_argument("--from-block", type=int, help="cold start here (default: head - backfill)")
    c.add_argument("--to-block", type=int, help="stop after this block (default: follow forever)")
    c.add_argument("--dry-run", action="store_true", help="print what would be published")
    c.add_argument("--recovery-dir", type=Path, help="enable Bytewax recovery, state here")
    c.set_defaults(func=cmd_ingest)

    c = command("replay", "Run every flow from a recording, no broker; write Parquet.")
    c.add_argument("recording", type=Path, help="a recording file, or a directory of them")
    c.add_argument("--out", type=Path, required=True, help="Parquet output directory")
    workers(c)
    c.set_defaults(func=cmd_replay)

    c = command("record", "Write Kafka topics to a recording (Parquet).", False)
    c.add_argument("--brokers", required=True, help="bootstrap servers")
    c.add_argument("--topics", nargs="+", required=True, help="topics to record")
    c.add_argument("--out", type=Path, required=True, help="output directory")
    c.set_defaults(func=cmd_record)

    c = command(
        "publish", "Put a recording back onto Kafka, keeping partitions, order, timestamps.", False
    )
    c.add_argument("recording", type=Path, help="a recording file, or a directory of them")
    c.add_argument("--brokers", required=True, help="bootstrap servers")
    c.add_argument(
        "--speed", type=float, help="pace at X times real time (default: as fast as possible)"
    )
    c.set_defaults(func=cmd_publish)

    c = command("generate", "Write a synthetic recording and the configuration for it.", False)
    c.add_argument("--out", type=Path, required=True, help="output directory")
    c.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    c.add_argument("--minutes", type=float, default=60.0, help="event time covered (default 60)")
    c.add_argument("--partitions", type=int, default=2, help="partitions per topic (default 2)")
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
    c.add_argument("input", type=Path, help="CSV with columns kind,model,S,K,T,r,q,sigma")
    c.set_defaults(func=cmd_greeks)

    c = command(
        "margin", "Margin, health, worst scenarios and Greeks of a portfolio, as JSON.", False
    )
    c.add_argument("input", type=Path, help="portfolio JSON (see README, Margin what-if)")
    c.add_argument("--worst", type=int, default=5, help="worst scenarios to list (default 5)")
    c.set_defaults(func=cmd_margin)

    c = command(
        "devchain", "Start Anvil, deploy the venue, pools and feed, write the config.", False
    )
    c.add_argument("--out", type=Path, default=Path("out/devchain"), help="output directory")
    c.add_argument("--scenario", action="store_true", help="run the seeded market scenario")
    c.add_argument("--seed", type=int, default=7, help="scenario seed (default 7)")
    c.add_argument("--accounts", type=int, default=50, help="trading accounts (default 50)")
    c.add_argument("--keep-running", action="store_true", help="keep the node up until Ctrl-C")
    c.add_argument("--record", action="store_true", help="write the logs to OUT/recording.parquet")
    c.set_defaults(func=cmd_devchain)

    c = command("summary", "Print the per-asset summary of an output directory.", False)
    c.add_argument("out", type=Path, help="the output directory of a run")
    c.set_defaults(func=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python is chatty at INFO
    try:
        if hasattr(args, "config"):
            args.cfg = _config(args.config)
            args.params = stage_params(args.cfg)  # checks the cross-references too
        if getattr(args, "processes", 1) < 1:
            raise ConfigError(f"--processes must be >= 1; got {args.processes}")
        if args.command == "ingest" and not (args.dry_run or args.brokers):
            raise ConfigError("ingest needs --brokers (or --dry-run)")
    except (ConfigError, OSError) as exc:
        print(f"hedgeflow: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ConnectionError) as exc:  # e.g. a missing file
        print(f"hedgeflow: {exc}", file=sys.stderr)
        return 2
