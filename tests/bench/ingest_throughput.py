"""Backfill throughput of the ingest flow against Anvil, for a contract with 100k logs.

Prints the node alone (``eth_getLogs`` over the same ranges, no flow) and the ingest
flow end to end (node -> Bytewax -> Kafka on Tansu), both in logs/s. The flow should be
close to the node: the node is the bottleneck.
"""

from __future__ import annotations

import argparse
import logging
import time

import msgspec
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from connectors.anvil import DevNode, rpc
from connectors.broker import EmbeddedBroker
from connectors.chain_source import Rpc
from connectors.contracts import bind, deploy, devchain_config
from connectors.kafka_tools import create_topics
from flows.cli.runner import run
from flows.ingest import ingest_flow
from operators.pool_math import sqrt_price_x96
from operators.registry import PoolSource, Registry
from operators.stages import stage_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=100_000, help="Swap logs to backfill")
    parser.add_argument("--per-tx", type=int, default=1000, help="logs per transaction")
    parser.add_argument("--range", type=int, default=20, help="blocks per eth_getLogs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with DevNode() as node, EmbeddedBroker() as broker:
        deployed = deploy(node.rpc_url)
        cfg = devchain_config(deployed)
        src = Registry.from_config(cfg.oracle).by_address[deployed.v3_pool]
        assert isinstance(src, PoolSource)
        pool = bind(Web3(HTTPProvider(node.rpc_url)), "TestUniswapV3Pool", deployed.v3_pool)
        sender = {"from": Web3.to_checksum_address(deployed.deployer), "gas": 30_000_000}
        started = time.perf_counter()
        for _ in range(args.logs // args.per_tx):
            call = pool.functions.emitSwaps(
                args.per_tx, 1, -1, sqrt_price_x96(1800.0, src), 10**18, 0
            )
            call.transact(sender)  # type: ignore[arg-type]
        first, head = deployed.block, int(rpc(node.rpc_url, "eth_blockNumber"), 16)
        emitted_s = time.perf_counter() - started
        print(f"emitted {args.logs} logs in blocks {first}..{head} in {emitted_s:.1f} s")

        node_rpc = Rpc(node.rpc_url, 60.0)
        started = time.perf_counter()
        fetched = 0
        for start in range(first, head + 1, args.range):
            fetched += len(
                node_rpc.logs(start, min(head, start + args.range - 1), deployed.contracts)
            )
        node_s = time.perf_counter() - started

        chain = msgspec.structs.replace(
            cfg.chain,
            rpc_url=node.rpc_url,
            contracts=deployed.contracts,
            min_range=args.range,
            max_range=args.range,
        )
        cfg = msgspec.structs.replace(cfg, chain=chain)
        create_topics(broker.bootstrap, [cfg.topics.chain_logs], 3)
        started = time.perf_counter()
        code = run(
            lambda: ingest_flow(stage_params(cfg), [broker.bootstrap], first, head),
            epoch_interval_s=cfg.run.epoch_interval_s,
        )
        assert code == 0
        flow_s = time.perf_counter() - started

    print(f"{fetched} logs, {args.range} blocks ({args.range * args.per_tx} logs) per eth_getLogs")
    print(f"  node alone (eth_getLogs)        {node_s:6.2f} s  {fetched / node_s:>9,.0f} logs/s")
    print(f"  ingest flow to Kafka (Tansu)    {flow_s:6.2f} s  {fetched / flow_s:>9,.0f} logs/s")


if __name__ == "__main__":
    main()
