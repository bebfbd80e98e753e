"""``hedgeflow demo``: the whole path on this machine, end to end, in two parts.

Part 1, the oracle on market data:
1. start the embedded broker (Tansu);
2. build the bundled recording: a generated hour (seed 7, with faults) merged with the
   real Ethereum mainnet logs of blocks 17173049-17173050, and write it to disk;
3. create the topics and publish the recording;
4. run the oracle flow from Kafka until the end of the input;
5. print the per-asset summary of the Parquet outputs (under ``OUT/``).

The datasets of an earlier demo under ``OUT/`` and ``OUT/chain/`` are removed first, so
the summary counts this run alone.

Part 2, the whole loop on a real chain (Anvil), each stage its own process
(``flows.cli.live_loop``): the dev-chain scenario (an hour of trading for 50 accounts
with a crash, paced), ``hedgeflow ingest`` following the node live, ``run oracle``, ``run
risk`` with the first trading account as a hedged book and a DEX book (long puts,
hedged in WETH on the pools: ``flows.cli.dex_book``), ``execute`` with the liquidator's
key, whose liquidations land on the chain and come back through ingest, and ``execute``
with the DEX book's key, whose hedges are routed over the pools through SplitSwap; then
the summary under ``OUT/chain/``: accounts, orders, what the executors did with them
(sent, mined, reverted, denied, expired, conflict; fees), the DEX hedges (route, fill,
gas, wallet after) and whose the venue's ``Liquidated`` events are; and the reports
(``hedgeflow report``) of part 1, ``OUT/report_oracle.html``, and of the loop,
``OUT/report.html``.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import KafkaConnection
from connectors.kafka_tools import create_topics, publish
from connectors.recording import write_recording
from flows.cli.generate import GenerateParams, generate
from flows.cli.live_loop import LoopParams, live_loop
from flows.cli.report import cmd_report
from flows.cli.runner import message_counter, run
from flows.cli.summary import print_summary
from flows.dataflows import kafka_flow
from operators.config import Config
from operators.model import RawMessage
from operators.stages import stage_params

log = logging.getLogger("hedgeflow.demo")

MAINNET_LOGS = "mainnet_logs_17173049_17173050.jsonl.gz"
PARTITIONS = 2


def mainnet_logs() -> tuple[dict[str, Any], ...]:
    """The bundled real mainnet logs, in the ``chain.logs`` JSON-RPC form."""
    data = (Path(__file__).parent / "data" / MAINNET_LOGS).read_bytes()
    return tuple(json.loads(line) for line in gzip.decompress(data).splitlines() if line)


def demo(out_dir: Path, loop: LoopParams | None = None) -> int:
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = generate(GenerateParams(seed=7, partitions=PARTITIONS, extra_logs=mainnet_logs()))
    cfg = generated.config
    (out_dir / "hedgeflow.toml").write_text(generated.config_toml)
    count = write_recording(generated.messages, out_dir / "recording.parquet")
    log.info("recording: %d messages, faults injected %s", count, generated.faults)

    with EmbeddedBroker() as broker:
        log.info("broker: Tansu on %s", broker.bootstrap)
        code = _run_part(broker.bootstrap, cfg, generated.messages, out_dir)
        if code != 0:
            return code
        print_summary(out_dir)
        part_1_s = time.monotonic() - started
        log.info("part 1 finished in %.1f s; part 2: the loop on Anvil", part_1_s)
        result = live_loop(broker.bootstrap, out_dir / "chain", loop or LoopParams())
    print_summary(*result.stage_dirs, liquidations=result.liquidations)
    cmd_report([out_dir], out_dir / "report_oracle.html", out_dir / "recording.parquet", cfg)
    chain_recording = out_dir / "chain" / "recording.parquet"
    cmd_report(result.stage_dirs, out_dir / "report.html", chain_recording, result.cfg)
    log.info(
        "demo finished in %.1f s (part 1 %.1f s, part 2 %.1f s); outputs under %s",
        time.monotonic() - started, part_1_s, time.monotonic() - started - part_1_s, out_dir,
    )  # fmt: skip
    return 0


def remove_datasets(out_dir: Path) -> None:
    """Remove the hive datasets (subdirectories holding ``date=*/``) directly under
    ``out_dir``; other files and directories stay."""
    for dataset in sorted(p for p in out_dir.iterdir() if p.is_dir() and any(p.glob("date=*"))):
        log.info("removing %s of an earlier demo", dataset)
        shutil.rmtree(dataset)


def _run_part(brokers: str, cfg: Config, messages: list[RawMessage], out_dir: Path) -> int:
    remove_datasets(out_dir)
    kafka = KafkaConnection(brokers)  # the demo's own embedded broker: plaintext
    topics = list(msgspec.structs.asdict(cfg.topics).values())
    create_topics(kafka, topics, PARTITIONS)
    params = stage_params(cfg)
    published = publish(messages, kafka, progress=message_counter("publish", 20_000))
    log.info("published %d messages; running the flows until the end", published)
    return run(
        lambda: kafka_flow(kafka, params, out_dir, until_end=True, stages="all"),
        epoch_interval_s=cfg.run.epoch_interval_s,
    )
