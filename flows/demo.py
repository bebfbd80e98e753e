"""``hedgeflow demo``: the whole oracle path on this machine, end to end.

1. start the embedded broker (Tansu);
2. build the bundled recording: a generated hour (seed 7, with faults) merged with the
   real Ethereum mainnet logs of blocks 17173049-17173050, and write it to disk;
3. create the topics and publish the recording;
4. run the oracle flow from Kafka until the end of the input;
5. print the per-asset summary of the Parquet outputs.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path
from typing import Any

import msgspec

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import create_topics, publish
from connectors.recording import write_recording
from flows.dataflows import kafka_oracle_flow
from flows.runner import message_counter, run
from flows.summary import print_summary
from operators.config import load_config
from operators.generate import GenerateParams, generate

log = logging.getLogger("hedgeflow.demo")

MAINNET_LOGS = "mainnet_logs_17173049_17173050.jsonl.gz"
PARTITIONS = 2


def mainnet_logs() -> tuple[dict[str, Any], ...]:
    """The bundled real mainnet logs, in the ``chain.logs`` JSON-RPC form."""
    data = (Path(__file__).parent / "data" / MAINNET_LOGS).read_bytes()
    return tuple(json.loads(line) for line in gzip.decompress(data).splitlines() if line)


def demo(out_dir: Path) -> int:
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = generate(GenerateParams(seed=7, partitions=PARTITIONS, extra_logs=mainnet_logs()))
    cfg = load_config(generated.config_toml)
    (out_dir / "hedgeflow.toml").write_text(generated.config_toml)
    count = write_recording(generated.messages, out_dir / "recording.parquet")
    log.info("recording: %d messages, faults injected %s", count, generated.faults)

    with EmbeddedBroker() as broker:
        log.info("broker: Tansu on %s", broker.bootstrap)
        topics = list(msgspec.structs.asdict(cfg.topics).values())
        create_topics(broker.bootstrap, topics, PARTITIONS)
        published = publish(
            generated.messages, broker.bootstrap, progress=message_counter("publish", 20_000)
        )
        log.info("published %d messages; running the oracle flow until the end", published)
        code = run(
            lambda: kafka_oracle_flow([broker.bootstrap], cfg, out_dir, until_end=True),
            processes=1,
            epoch_interval_s=cfg.run.epoch_interval_s,
            recovery_dir=None,
            process_id=None,
            addresses=None,
        )
    if code != 0:
        return code
    print_summary(out_dir)
    log.info("demo finished in %.1f s; outputs under %s", time.monotonic() - started, out_dir)
    return 0
