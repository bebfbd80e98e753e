"""Block latency (``make bench``): from a block's logs landing on ``chain.logs`` to the
liquidation order it causes landing on ``orders``, with ``oracle.cadence = "block"`` and
the stages deployed separately (``hedgeflow run oracle`` and ``hedgeflow run risk``, one
process each) on Tansu.

Each run publishes, paced in real time at ``--rate`` events/s, one block every
``--block-s``: the venue's set-up (a perp on WETH, ``--accounts`` 20 ETH longs with
collateral staggered so that the falling price puts about one account under maintenance
per block), then Uniswap V2 ``Sync`` logs on the two default WETH pairs, spread over the
block, and the block's progress marker at its end. The price falls 0.25 % per block.

A log's time is when it landed on ``chain.logs``: when the broker acknowledged it to the
publisher (``connectors.kafka_tools.publish``, paced; its ``delivered`` callback). The
publisher may land logs behind their block times on a busy machine: that lag is the
publisher's and the broker's, not the stages', and is printed. An order's and a tick
row's is its Kafka timestamp, set by the producer of the risk or the oracle stage (same
clock). An order's block is its ``ts_event_ms``, a tick row's its ``window_end_ms``.
Printed per rate: p50 and p99 from the block's first log to its first order, and from
its progress marker (the block complete) to that order, split at the block's tick row on
``oracle.prices`` (the oracle stage, then the risk stage). Target: p99 from the first log
<= block time + 250 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import KafkaConnection, rd_consumer
from connectors.kafka_tools import create_topics, publish
from operators import abi
from operators.accounts import E18
from operators.config import load_config
from operators.model import RawMessage
from tests.flow.test_risk_flow import PERP, USDC, VENUE, risk_toml
from tests.integration.executor_env import REPO

PAIRS = {  # the default registry's V2 WETH pairs: (address, WETH is token0)
    "usdc": ("0xb4e16d0168e52d35cacd2c6185b44281ec28c9dc", False),
    "usdt": ("0x0d4a11d5eeaac28ec3f61d100daf4d40471f1852", True),
}
MAINNET_WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
DROP_PER_BLOCK = 0.0025
MM_SHARE = 0.23
"""A 20 ETH long's maintenance margin at a fixed 60 % vol: 23 % of its notional (the
-20 % tail scenario plus a 3 % add-on, ``tests/unit/test_risk.py``)."""
CONFIG = """
[oracle]
cadence = "block"
min_sources = 2
allowed_lateness_s = 5
idle_timeout_s = 2
[run]
epoch_interval_s = 1
batch_size = 1000
""" + risk_toml(MAINNET_WETH, shards=2)


def _log(ts_ms: int, block: int, index: int, address: str, topics: list[str], data: str) -> dict:
    return {"address": address, "topics": topics, "data": data, "blockNumber": hex(block),
            "blockHash": abi.int_topic(block), "transactionHash": abi.int_topic(index),
            "transactionIndex": hex(index), "logIndex": hex(index), "removed": False,
            "blockTimestamp": hex(ts_ms // 1000), "chainId": 1}  # fmt: skip


def _message(offset: int, due_ms: int, key: str, log: dict) -> RawMessage:
    return RawMessage("chain.logs", 0, offset, due_ms, key.encode(), json.dumps(log).encode())


def _sync(price: float, weth_is_token0: bool, wiggle: int) -> str:
    weth = 1_000 * E18 + wiggle
    usd = int(price * 1_000 * 10**6)
    return abi.encode_data(*((weth, usd) if weth_is_token0 else (usd, weth)))


def blocks(start_ms: int, n_blocks: int, block_ms: int, rate: float, accounts: int) -> tuple[
    list[RawMessage], dict[int, tuple[int, int]]
]:  # fmt: skip
    """The messages of ``n_blocks`` blocks from ``start_ms``, due in real time; and per
    block time, the indexes of its first log and of its progress marker."""
    msgs: list[RawMessage] = []
    times: dict[int, tuple[int, int]] = {}
    per_block = max(2, round(rate * block_ms / 1000))
    listed = [abi.VENUE_INSTRUMENT_LISTED, PERP, abi.address_topic(MAINNET_WETH)]
    setup = [_log(start_ms, 1, 0, VENUE, listed, abi.encode_data(1, 0, 0))]
    for a in range(accounts):
        owner = abi.address_topic("0x" + format(a + 1, "040x"))
        cross = 2_000.0 * (1 - DROP_PER_BLOCK) ** (a + 0.5)  # between blocks 10 + a and 11 + a
        collateral = 40_000 - (20 - 20 * MM_SHARE) * cross  # equity = MM at ``cross``
        deposit = [abi.VENUE_DEPOSIT, owner, abi.address_topic(USDC)]
        amount = abi.encode_data(int(collateral * 1e6))
        setup.append(_log(start_ms, 1, len(setup), VENUE, deposit, amount))
        trade = [abi.VENUE_TRADE, owner, PERP]
        bought = abi.encode_data(20 * E18, 2_000 * E18, 0)
        setup.append(_log(start_ms, 1, len(setup), VENUE, trade, bought))
    for b in range(n_blocks):
        ts = start_ms + b * block_ms
        price = 2_000.0 * (1 - DROP_PER_BLOCK) ** max(0, b - 10)  # flat for 10 blocks
        logs = setup if b == 0 else []
        for i in range(per_block):
            address, weth0 = PAIRS["usdc" if i % 2 else "usdt"]
            logs.append(_log(ts, b + 1, len(logs), address, [abi.V2_SYNC], _sync(price, weth0, i)))
        step = block_ms / (len(logs) + 1)
        first = len(msgs)
        for i, log in enumerate(logs):
            msgs.append(_message(len(msgs), ts + int(i * step), log["address"], log))
        marker = {"progress": True, "blockNumber": hex(b + 1), "blockTimestamp": hex(ts // 1000),
                  "chainId": 1}  # fmt: skip
        due = ts + block_ms - 1
        msgs.append(RawMessage("chain.logs", 0, len(msgs), due, b"", json.dumps(marker).encode()))
        times[ts] = (first, len(msgs) - 1)
    return msgs, times


def first_by_block(
    kafka: KafkaConnection, topic: str, block_field: str, want: int, timeout_s: float,
    **match: object,
) -> dict[int, int]:  # fmt: skip
    """Producer time (ms) of the first record per block (its ``block_field``, ms) among
    those whose fields equal ``match``, once ``want`` have landed or ``timeout_s`` has
    passed."""
    consumer = rd_consumer(kafka, {"group.id": "bench", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    found: dict[int, int] = {}
    count, deadline = 0, time.monotonic() + timeout_s
    while count < want and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.2):
            record = {} if m.error() else json.loads(m.value() or b"{}")
            if any(record.get(k) != v for k, v in match.items()):
                continue
            count += 1
            block = record[block_field]
            found[block] = min(found.get(block, 1 << 62), m.timestamp()[1])
    consumer.close()
    return found


def run_rate(rate: float, block_s: float, n_blocks: int, accounts: int) -> None:
    block_ms = int(block_s * 1000)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "bench.toml"
        cfg_path.write_text(CONFIG)
        topics = load_config(CONFIG).topics
        names = [topics.chain_logs, topics.dex_quotes, topics.oracle_prices, topics.orders,
                 topics.deadletter]  # fmt: skip
        create_topics(broker.connection, names, 1)
        procs = []
        for stage in ("oracle", "risk"):
            with (Path(tmp) / f"{stage}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "flows.cli", "run", stage, "--brokers", broker.bootstrap,
                     "--config", str(cfg_path), "--out", str(Path(tmp) / stage)],
                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
                ))  # fmt: skip
        try:
            time.sleep(8.0)  # both processes up and assigned
            start_ms = math.ceil(time.time() + 1) * 1000
            msgs, times = blocks(start_ms, n_blocks, block_ms, rate, accounts)
            time.sleep(max(0.0, start_ms / 1000 - time.time()))
            handed, landed = [0.0] * len(msgs), [0.0] * len(msgs)

            def produced(count: int) -> None:
                handed[count - 1] = time.time() * 1000

            def acked(index: int) -> None:
                landed[index] = time.time() * 1000

            publish(msgs, broker.connection, speed=1.0, progress=produced, delivered=acked)
            behind_ms = (handed[-1] - msgs[-1].timestamp_ms, landed[-1] - msgs[-1].timestamp_ms)
            found = first_by_block(broker.connection, topics.orders, "ts_event_ms", accounts,
                                   30.0, record="order")  # fmt: skip
            ticks = first_by_block(broker.connection, topics.oracle_prices, "window_end_ms",
                                   n_blocks, 10.0, cadence="tick", progress=None)  # fmt: skip
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
        if not found:
            log = (Path(tmp) / "risk.log").read_text()[-3000:]
            raise SystemExit(f"no order landed at {rate:,.0f} ev/s; risk log:\n{log}")
        from_first = np.array([found[t] - landed[times[t][0]] for t in found])
        from_marker = np.array([found[t] - landed[times[t][1]] for t in found])
        p50, p99 = np.percentile(from_first, [50, 99])
        m50, m99 = np.percentile(from_marker, [50, 99])
        to_tick = np.array([ticks[t] - landed[times[t][1]] for t in found if t in ticks])
        to_order = np.array([found[t] - ticks[t] for t in found if t in ticks])
        t50, t99 = np.percentile(to_tick, [50, 99])
        o50, o99 = np.percentile(to_order, [50, 99])
        verdict = "ok" if p99 <= block_ms + 250 else "MISSED"
        print(
            f"block latency at {rate:>6,.0f} ev/s, block time {block_ms} ms, {len(found)} blocks "
            f"with orders (the last log handed to the producer {behind_ms[0]:.0f} ms and landed "
            f"{behind_ms[1]:.0f} ms after its block time):\n"
            f"  first log -> order: p50 {p50:6.0f} ms  p99 {p99:6.0f} ms  "
            f"(target p99 <= {block_ms + 250} ms: {verdict})\n"
            f"  block complete (marker) -> order: p50 {m50:6.0f} ms  p99 {m99:6.0f} ms\n"
            f"    of which marker -> tick on {topics.oracle_prices} (oracle stage): "
            f"p50 {t50:4.0f} ms  p99 {t99:4.0f} ms; tick -> order (risk stage): "
            f"p50 {o50:4.0f} ms  p99 {o99:4.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1_000.0, 10_000.0])
    parser.add_argument("--block-s", type=float, default=1.0, help="block time, s (default 1)")
    parser.add_argument("--accounts", type=int, default=30, help="one crossing per block")
    args = parser.parse_args()
    for rate in args.rates:
        run_rate(rate, args.block_s, args.accounts + 14, args.accounts)


if __name__ == "__main__":
    main()
