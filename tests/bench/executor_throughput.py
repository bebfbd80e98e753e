"""The executor on Anvil, one signer (``make bench``): orders/s from the ``orders`` topic to
signed-and-sent, and the latency of each order from the topic to its transaction sent.

The set-up is the integration tests' (``tests/integration/executor_env.py``): Tansu, an
Anvil of its own with the venue, the liquidator's encrypted keystore, and ``hedgeflow
execute`` as a child process. Both figures come from broker timestamps: an order's on
``orders`` and its ``sent`` outcome's on ``fills`` (written just after the broadcast).

1. burst: ``--orders`` signed orders published at once; orders/s = their count over the
   time from the first order on the topic to the last ``sent`` on ``fills``;
2. steady: ``--rate`` orders/s for ``--seconds``; the latency of each, p50 and p99.

The pre-trade limits are raised out of the way (``max_submits_per_s``, notional caps) and
``max_in_flight`` set to ``--in-flight``: this measures the executor, not its limits.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.broker import EmbeddedBroker
from connectors.kafka_clients import rd_consumer
from operators.model import Execution
from tests.integration.executor_env import ExecutorEnv


def sent_times(
    env: ExecutorEnv, consumer: Consumer, want: set[str], timeout_s: float
) -> dict[str, int]:
    """Broker time (ms) of the ``sent`` outcome of each order id in ``want``."""
    found: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(want):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(want) - len(found)} orders not sent; log:\n{env.executor_log()[-2000:]}"
            )
        for m in consumer.consume(1000, 0.2):
            if m.error() or b'"record":"execution"' not in (m.value() or b""):
                continue
            e = msgspec.json.decode(m.value() or b"", type=Execution)
            if e.state == "sent" and e.order_id in want:
                found.setdefault(e.order_id, m.timestamp()[1])
    return found


def order_times(env: ExecutorEnv, consumer: Consumer, count: int) -> dict[str, int]:
    """Broker time (ms) of each order on ``orders``, by order id (``"order_id":"0x.."``)."""
    found: dict[str, int] = {}
    while len(found) < count:
        for m in consumer.consume(1000, 0.5):
            value = m.value() or b""
            i = value.find(b'"order_id":"')
            if not m.error() and i >= 0:
                found[value[i + 12 : i + 78].decode()] = m.timestamp()[1]
    return found


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=500, help="orders in the burst (default 500)")
    p.add_argument(
        "--rate", type=float, default=20.0, help="orders/s in the steady phase (default 20)"
    )
    p.add_argument(
        "--seconds", type=float, default=15.0, help="length of the steady phase (default 15)"
    )
    p.add_argument("--in-flight", type=int, default=64, help="execution.max_in_flight (default 64)")
    args = p.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        env = ExecutorEnv(
            Path(tmp), broker.bootstrap, max_in_flight=args.in_flight, max_submits_per_s=1e6,
            max_order_notional_usd=1e15, max_hourly_notional_usd=1e18, confirmations=0,
        )  # fmt: skip
        try:
            consumers = {}
            for topic in (env.topics.orders, env.topics.fills):
                settings = {"group.id": "bench", "enable.auto.commit": False}
                c = rd_consumer(broker.connection, settings)
                c.assign([TopicPartition(topic, i, OFFSET_BEGINNING) for i in range(2)])
                consumers[topic] = c
            env.publish_price()
            env.start_executor()
            warm = env.order(0)
            env.publish_orders([warm])
            sent_times(env, consumers[env.topics.fills], {warm.order_id}, 120)
            order_times(env, consumers[env.topics.orders], 1)

            burst = [env.order(1 + i) for i in range(args.orders)]
            env.publish_orders(burst)
            published = order_times(env, consumers[env.topics.orders], len(burst))
            sent = sent_times(env, consumers[env.topics.fills], {o.order_id for o in burst}, 600)
            span_s = (max(sent.values()) - min(published.values())) / 1000
            rate = len(burst) / span_s
            print(
                f"executor burst: {len(burst)} orders signed and sent in {span_s:.2f} s: "
                f"{rate:,.0f} orders/s (one signer, max_in_flight {args.in_flight})"
            )

            steady = [env.order(1 + args.orders + i) for i in range(int(args.rate * args.seconds))]
            for o in steady:
                env.publish_orders([o])
                time.sleep(1 / args.rate)
            published = order_times(env, consumers[env.topics.orders], len(steady))
            sent = sent_times(env, consumers[env.topics.fills], {o.order_id for o in steady}, 600)
            latency = np.array([sent[o.order_id] - published[o.order_id] for o in steady])
            p50, p99 = np.percentile(latency, [50, 99])
            print(
                f"executor latency, orders topic to transaction sent, {len(steady)} orders at "
                f"{args.rate:g}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {latency.max():.0f} ms"
            )
            violations = env.audit([o.order_id for o in [warm, *burst, *steady]])
            print(f"audit of the chain: {violations or 'no violations'}")
        finally:
            env.close()


if __name__ == "__main__":
    main()
