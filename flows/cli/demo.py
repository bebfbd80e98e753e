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

Part 2, the risk engine on a real chain (Anvil):
1. ``hedgeflow devchain --scenario --record``: the venue, pools and feed, an hour of
   trading for 50 accounts with a crash, recorded as ``ingest`` publishes it;
2. publish that recording to the same broker under ``devchain.*`` topics, with the first
   trading account as a hedged book;
3. run the oracle and risk flows from Kafka until the end; print the summary (accounts,
   liquidations, hedges, worst health) of the outputs under ``OUT/chain/``.
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
from connectors.kafka_tools import create_topics, publish
from connectors.recording import iter_messages, load_recording, write_recording
from flows.cli.devchain import devchain
from flows.cli.generate import GenerateParams, generate
from flows.cli.runner import message_counter, run
from flows.cli.summary import print_summary
from flows.dataflows import kafka_flow
from operators.config import Config, TopicsConfig, config_toml, load_config
from operators.model import RawMessage
from operators.stages import stage_params
from operators.units import InstrumentKind
from operators.venue import Fill, InstrumentListed, decode_venue

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
    cfg = generated.config
    (out_dir / "hedgeflow.toml").write_text(generated.config_toml)
    count = write_recording(generated.messages, out_dir / "recording.parquet")
    log.info("recording: %d messages, faults injected %s", count, generated.faults)

    chain_dir = out_dir / "chain"
    devchain(chain_dir, scenario=True, seed=7, accounts=50, keep_running=False, record=True)
    chain_cfg, chain_messages = _chain_part(chain_dir)

    with EmbeddedBroker() as broker:
        log.info("broker: Tansu on %s", broker.bootstrap)
        for part_cfg, messages, part_dir in (
            (cfg, generated.messages, out_dir),
            (chain_cfg, chain_messages, chain_dir),
        ):
            code = _run_part(broker.bootstrap, part_cfg, messages, part_dir)
            if code != 0:
                return code
    print_summary(out_dir)
    print_summary(chain_dir)
    log.info("demo finished in %.1f s; outputs under %s", time.monotonic() - started, out_dir)
    return 0


def _chain_part(chain_dir: Path) -> tuple[Config, list[RawMessage]]:
    """The devchain recording under ``devchain.*`` topics, and its configuration with the
    first trader's book hedged in the perp."""
    chain_cfg = load_config((chain_dir / "devchain.toml").read_text())
    recorded = list(iter_messages(load_recording(chain_dir / "recording.parquet")))
    events = [decode_venue(m, chain_cfg.risk.venue) for m in recorded]
    perp = next(
        e.instrument
        for e in events
        if isinstance(e, InstrumentListed) and e.kind == InstrumentKind.PERP
    )
    trader = next(e.account for e in events if isinstance(e, Fill))
    names = [f.name for f in msgspec.structs.fields(TopicsConfig)]
    topics = TopicsConfig(**{name: f"devchain.{name.replace('_', '.')}" for name in names})
    books = {trader: {"ETH": perp}}
    cfg = msgspec.structs.replace(
        chain_cfg, topics=topics, risk=msgspec.structs.replace(chain_cfg.risk, books=books)
    )
    (chain_dir / "demo.toml").write_text(config_toml(cfg))
    renamed = [msgspec.structs.replace(m, topic=topics.chain_logs) for m in recorded]
    return cfg, renamed


def remove_datasets(out_dir: Path) -> None:
    """Remove the hive datasets (subdirectories holding ``date=*/``) directly under
    ``out_dir``; other files and directories stay."""
    for dataset in sorted(p for p in out_dir.iterdir() if p.is_dir() and any(p.glob("date=*"))):
        log.info("removing %s of an earlier demo", dataset)
        shutil.rmtree(dataset)


def _run_part(brokers: str, cfg: Config, messages: list[RawMessage], out_dir: Path) -> int:
    remove_datasets(out_dir)
    topics = list(msgspec.structs.asdict(cfg.topics).values())
    create_topics(brokers, topics, PARTITIONS)
    params = stage_params(cfg)
    published = publish(messages, brokers, progress=message_counter("publish", 20_000))
    log.info("published %d messages; running the flows until the end", published)
    return run(
        lambda: kafka_flow([brokers], params, out_dir, until_end=True, stages="all"),
        epoch_interval_s=cfg.run.epoch_interval_s,
    )
