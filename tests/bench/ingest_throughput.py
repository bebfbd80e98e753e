"""Backfill throughput of the ingest flow against Anvil, for a real V3 pool with 100k logs.

The logs are real: 100k swaps on the dev chain's Uniswap V3 pool (fee 500), ``--per-tx``
in each transaction, made by the load contract ``SwapLoad`` (``connectors.uniswap.
load_swaps``); each swap is one ``Swap`` log of the pool (and two ``Transfer`` logs of the
tokens, which the ingest's address filter leaves out). The node runs with a 100M block
gas limit, so that 1,000 swaps (29k gas each) fit one transaction.

Prints the node alone (``eth_getLogs`` over the same ranges, no flow) and the ingest
flow end to end (node -> Bytewax -> Kafka on Tansu), both in logs/s. The flow should be
close to the node: the node is the bottleneck.
"""

from __future__ import annotations

import argparse
import logging
import time

import msgspec

from connectors.anvil import DevNode, rpc
from connectors.broker import EmbeddedBroker
from connectors.chain_source import Rpc
from connectors.contracts import deploy, devchain_config
from connectors.kafka_tools import create_topics
from connectors.uniswap import deploy_swap_load, load_swaps
from flows.cli.runner import run
from flows.ingest import ingest_flow
from operators.stages import stage_params

GAS_LIMIT = 100_000_000
"""The node's block gas limit: room for a transaction of 1,000 swaps."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=100_000, help="Swap logs to backfill")
    parser.add_argument("--per-tx", type=int, default=1000, help="logs per transaction")
    parser.add_argument("--range", type=int, default=20, help="blocks per eth_getLogs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with DevNode(gas_limit=GAS_LIMIT) as node, EmbeddedBroker() as broker:
        deployed = deploy(node.rpc_url)
        cfg = devchain_config(deployed)
        load = deploy_swap_load(node.rpc_url, deployed.uniswap)
        pool = deployed.uniswap.v3_pools[500]
        started = time.perf_counter()
        load_swaps(node.rpc_url, load, pool, deployed.deployer, args.logs, per_tx=args.per_tx)
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
        create_topics(broker.connection, [cfg.topics.chain_logs], 3)
        started = time.perf_counter()
        code = run(
            lambda: ingest_flow(stage_params(cfg), broker.connection, first, head),
            epoch_interval_s=cfg.run.epoch_interval_s,
        )
        assert code == 0
        flow_s = time.perf_counter() - started

    print(f"{fetched} logs, {args.range} blocks ({args.range * args.per_tx} logs) per eth_getLogs")
    print(f"  node alone (eth_getLogs)        {node_s:6.2f} s  {fetched / node_s:>9,.0f} logs/s")
    print(f"  ingest flow to Kafka (Tansu)    {flow_s:6.2f} s  {fetched / flow_s:>9,.0f} logs/s")


if __name__ == "__main__":
    main()
