"""Oracle throughput on a generated recording of about 500k chain logs (``make bench``).

Prints, for one recording measured in one run:
- the read-and-decode baseline (load the Parquet recording, decode every message);
- the oracle replay (the whole dataflow, Parquet outputs included);
- the oracle through Kafka (Tansu; publishing is timed separately).
Targets: replay >= 100k events/s in one process, and within 2x of the baseline.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from bytewax.dataflow import Dataflow

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import create_topics, publish
from connectors.recording import iter_messages, load_recording, write_recording
from flows.cli.generate import GenerateParams, generate
from flows.cli.runner import run
from flows.cli.summary import latest_prices
from flows.dataflows import kafka_flow, replay_flow
from operators.config import Config, load_config
from operators.decode import Decoder
from operators.registry import Registry
from operators.stages import stage_params


def _baseline(recording: Path, cfg: Config) -> tuple[float, int]:
    started = time.perf_counter()
    decoder = Decoder(
        Registry.from_config(cfg.oracle), cfg.topics.chain_logs, cfg.topics.dex_quotes
    )
    decoded = sum(decoder.decode(m) is not None for m in iter_messages(load_recording(recording)))
    return time.perf_counter() - started, decoded


def _timed_run(build: Callable[[], Dataflow], cfg: Config) -> float:
    started = time.perf_counter()
    code = run(build, epoch_interval_s=cfg.run.epoch_interval_s)
    assert code == 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1440.0, help="event time generated")
    parser.add_argument("--swaps-per-block", type=float, default=11.0, help="pool logs per block")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="hedgeflow-bench-"))
    try:
        started = time.perf_counter()
        g = generate(
            GenerateParams(
                seed=1,
                minutes=args.minutes,
                swaps_per_block=args.swaps_per_block,
                quote_sources=0,
                partitions=2,
            )
        )
        recording = work / "recording.parquet"
        events = write_recording(g.messages, recording)
        cfg = load_config(g.config_toml)
        print(f"recording: {events} messages ({g.counts}) in {time.perf_counter() - started:.1f} s")

        base_s, decoded = _baseline(recording, cfg)
        params = stage_params(cfg)
        replay_s = _timed_run(lambda: replay_flow(recording, work / "replay", params), cfg)
        windows = latest_prices(work / "replay").height

        with EmbeddedBroker() as broker:
            topics = list(msgspec.structs.asdict(cfg.topics).values())
            create_topics(broker.connection, topics, 2)
            started = time.perf_counter()
            publish(g.messages, broker.connection)
            publish_s = time.perf_counter() - started
            kafka_s = _timed_run(
                lambda: kafka_flow(broker.connection, params, work / "kafka", True, "oracle"), cfg
            )

        rows = [
            ("read + decode baseline", base_s),
            ("oracle replay (Parquet included)", replay_s),
            ("oracle from Kafka (Tansu)", kafka_s),
            ("publish to Kafka (confluent-kafka)", publish_s),
        ]
        print(f"{events} events, {decoded} decoded to observations, {windows} price windows")
        for name, seconds in rows:
            print(f"  {name:<36} {seconds:7.2f} s  {events / seconds:>10,.0f} events/s")
        print(f"  replay / baseline time: {replay_s / base_s:.2f}x (target <= 2x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
