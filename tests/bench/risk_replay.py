"""Per-event throughput of the oracle and risk flows in replay (``make bench``).

A generated four hours of market data (the oracle's input) plus a venue with a perp and
20 ETH options, ``--accounts`` accounts that deposit and then trade ``--trades`` times, all
replayed through every flow in one process with Parquet outputs. Prints events/s and what
came out.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from connectors.recording import write_recording
from flows.cli.generate import GenerateParams, generate
from flows.cli.runner import run
from flows.dataflows import replay_flow
from operators import abi
from operators.accounts import E18
from operators.config import load_config
from operators.model import RawMessage
from operators.stages import stage_params

VENUE = "0x" + "77" * 20
WETH, USDC = "0x" + "e1" * 20, "0x" + "c1" * 20
START_MS = 1_683_028_800_000


def venue_messages(accounts: int, trades: int, minutes: float, seed: int) -> list[RawMessage]:
    """Listings, deposits and trades on the venue, in block order, on their own partition."""
    rng = np.random.default_rng(seed)
    expiry_s = START_MS // 1000 + 30 * 86_400
    instruments = [(1, 0)] + [(kind, strike) for kind in (2, 3)
                              for strike in range(1_600, 2_100, 50)]  # fmt: skip
    ids = [abi.int_topic(n + 1) for n in range(len(instruments))]
    logs: list[tuple[int, list[str], list[int]]] = [
        (START_MS, [abi.VENUE_INSTRUMENT_LISTED, ids[n], abi.address_topic(WETH)],
         [kind, strike * E18, 0 if kind == 1 else expiry_s])
        for n, (kind, strike) in enumerate(instruments)
    ]  # fmt: skip
    owners = ["0x" + format(a + 1, "040x") for a in range(accounts)]
    usdc = abi.address_topic(USDC)
    logs += [(START_MS + 1_000, [abi.VENUE_DEPOSIT, abi.address_topic(a), usdc], [20_000 * 10**6])
             for a in owners]  # fmt: skip
    times = np.sort(rng.uniform(START_MS + 60_000, START_MS + minutes * 60_000, trades))
    for ts, who, what, size in zip(
        times, rng.integers(0, accounts, trades), rng.integers(0, len(ids), trades),
        rng.normal(0, 2, trades), strict=True,
    ):  # fmt: skip
        price = 1_830 if what == 0 else 40
        logs.append((int(ts), [abi.VENUE_TRADE, abi.address_topic(owners[who]), ids[what]],
                     [int(size * E18), price * E18, 0]))  # fmt: skip
    out = []
    for n, (ts, topics, words) in enumerate(logs):
        log = {"address": VENUE, "topics": topics, "data": abi.encode_data(*words),
               "blockNumber": hex(n + 1), "blockHash": abi.int_topic(n), "logIndex": "0x0",
               "removed": False, "blockTimestamp": hex(ts // 1000), "chainId": 1}  # fmt: skip
        out.append(RawMessage("chain.logs", 9, n, ts, VENUE.encode(), json.dumps(log).encode()))
    return out


def _rows(out: Path, dataset: str) -> int:
    files = list((out / dataset).glob("**/*.parquet"))
    return pl.read_parquet(files).height if files else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000, help="venue accounts")
    parser.add_argument("--trades", type=int, default=50_000, help="venue trades")
    parser.add_argument("--minutes", type=float, default=240.0, help="event time covered")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="hedgeflow-risk-bench-"))
    try:
        g = generate(GenerateParams(seed=1, minutes=args.minutes, swaps_per_block=4.0))
        venue = venue_messages(args.accounts, args.trades, args.minutes, seed=2)
        recording = work / "recording.parquet"
        events = write_recording([*g.messages, *venue], recording)
        cfg = load_config(
            g.config_toml + f'\n[risk]\nvenue = "{VENUE}"\nunderlyings = {{ "{WETH}" = "ETH" }}\n'
            f'[risk.collateral."{USDC}"]\nasset = "USDC"\ndecimals = 6\n'
        )
        params = stage_params(cfg)
        started = time.perf_counter()
        code = run(
            lambda: replay_flow(recording, work / "out", params),
            epoch_interval_s=cfg.run.epoch_interval_s,
        )
        assert code == 0
        seconds = time.perf_counter() - started
        rows, orders = _rows(work / "out", "account_risk"), _rows(work / "out", "orders")
        instruments = pl.read_parquet(work / "out" / "instruments" / "**/*.parquet")
        evaluations = instruments["ts_event_ms"].n_unique()
        print(
            f"{events} events ({len(venue)} venue events, {args.accounts} accounts), "
            f"{evaluations} evaluations, {rows} account_risk rows, {orders} order legs"
        )
        print(
            f"  oracle + risk replay, Parquet included: {seconds:.2f} s, "
            f"{events / seconds:,.0f} events/s, {evaluations / seconds:,.1f} evaluations/s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
