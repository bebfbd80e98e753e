"""The oracle and risk stages together under bytewax.testing: a price drop, one order each."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import msgspec
import polars as pl
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from connectors.recording import write_recording
from flows.dataflows import replay_flow
from flows.oracle import oracle_stage
from flows.risk import risk_stage
from operators import abi, fills_topic
from operators.accounts import E18
from operators.config import DexHedgeConfig, ExecutionConfig, TokenConfig, load_config
from operators.model import (
    AccountRiskRow,
    Execution,
    ExecutionProgress,
    Order,
    RawBatch,
    RawMessage,
)
from operators.risk import order_id
from operators.stages import stage_params

T0 = 1_700_000_040_000
VENUE = "0x" + "77" * 20
WETH, USDC = "0x" + "e" * 40, "0x" + "c" * 40
PERP = "0x" + "1" * 64
ACCOUNTS = {"0x" + c * 40: size for c, size in zip("abcd", (20, 20, 20, 5), strict=True)}


def risk_toml(weth: str = WETH, shards: int = 3) -> str:
    """The ``[risk]`` tables of these flows: the venue, ``weth`` as ETH at a fixed 60 %
    vol, USDC (6 decimals) as collateral."""
    return f"""
[risk]
venue = "{VENUE}"
shards = {shards}
underlyings = {{ "{weth}" = "ETH" }}
vol_floor = 0.6
vol_cap = 0.6
[risk.collateral."{USDC}"]
asset = "USDC"
decimals = 6
"""


CFG = stage_params(load_config("[oracle]\nmin_sources = 1\nallowed_lateness_s = 5\n" + risk_toml()))
PARTS = ["0-chain.logs", "0-dex.quotes"]


def _venue_log(offset: int, ts_ms: int, topics: list[str], words: list[int]) -> RawMessage:
    log = {
        "address": VENUE, "topics": topics, "data": abi.encode_data(*words),
        "blockNumber": hex(100 + offset), "blockHash": abi.int_topic(offset), "logIndex": "0x0",
        "transactionHash": "0x" + "ab" * 32, "transactionIndex": "0x0", "removed": False,
        "blockTimestamp": hex(ts_ms // 1000), "chainId": 1,
    }  # fmt: skip
    return RawMessage("chain.logs", 0, offset, ts_ms, VENUE.encode(), json.dumps(log).encode())


def _chain() -> list[RawMessage]:
    listed = [abi.VENUE_INSTRUMENT_LISTED, PERP, abi.address_topic(WETH)]
    msgs = [_venue_log(0, T0 - 50_000, listed, [1, 0, 0])]
    for account, size in ACCOUNTS.items():
        deposit = [abi.VENUE_DEPOSIT, abi.address_topic(account), abi.address_topic(USDC)]
        msgs.append(_venue_log(len(msgs), T0 - 40_000, deposit, [10_000 * 10**6]))
        trade = [abi.VENUE_TRADE, abi.address_topic(account), PERP]
        msgs.append(_venue_log(len(msgs), T0 - 30_000, trade, [size * E18, 2_000 * E18, 0]))
    return msgs


def _quotes() -> list[RawMessage]:
    msgs = []
    for i in range(72):  # every 5 s for 6 minutes; 2,000 then 1,940 from T0 + 2 min
        ts = T0 - 60_000 + i * 5_000
        mid = 2_000.0 if ts < T0 + 120_000 else 1_940.0
        body = {"source": "q", "base": "WETH", "quote": "USDC", "bid": str(mid - 0.5),
                "ask": str(mid + 0.5), "bid_size": "10", "ask_size": "10", "ts": ts}  # fmt: skip
        msgs.append(RawMessage("dex.quotes", 0, i, ts, b"q", json.dumps(body).encode()))
    return msgs


def _batches() -> list[RawBatch]:
    chain, quotes = _chain(), _quotes()
    return [
        RawBatch("0-chain.logs", chain, True),
        *(RawBatch("0-dex.quotes", quotes[i : i + 10], i + 10 >= len(quotes))
          for i in range(0, len(quotes), 10)),
    ]  # fmt: skip


def _flow(orders: list, rows: list) -> Dataflow:
    flow = Dataflow("risk_test")
    raw = op.input("in", flow, TestingSource(_batches()))
    risk = risk_stage(raw, CFG, PARTS, oracle_stage(raw, CFG, PARTS).published)
    op.output("orders", risk.orders, TestingSink(orders))
    op.output("rows", risk.rows, TestingSink(rows))
    return flow


def _sorted(items: list) -> list:
    return sorted((v for _, v in items), key=lambda v: (v.ts_event_ms, v.account))


def test_price_drop_gives_one_liquidation_order_per_undercollateralised_account() -> None:
    orders: list = []
    rows: list = []
    run_main(_flow(orders, rows))
    got: list[Order] = _sorted(orders)
    # At 1,940 a 20 ETH long with 10,000 USDC has equity 8,800 < MM 8,924 (23 % of notional).
    assert sorted(o.account for o in got) == sorted(a for a, s in ACCOUNTS.items() if s == 20)
    assert {o.ts_event_ms for o in got} == {T0 + 180_000}  # the first window fully at 1,940
    assert all(o.kind == "liquidation" and o.instrument == PERP and -10 <= o.size < 0 for o in got)
    assert all(isinstance(r, AccountRiskRow) for r in _sorted(rows))


def test_two_workers_give_the_same_orders_and_rows_as_one() -> None:
    one_orders: list = []
    one_rows: list = []
    two_orders: list = []
    two_rows: list = []
    run_main(_flow(one_orders, one_rows))
    cluster_main(_flow(two_orders, two_rows), [], 0, worker_count_per_proc=2)
    assert _sorted(one_orders) == _sorted(two_orders)
    assert _sorted(one_rows) == _sorted(two_rows)


def test_crash_and_resume_under_recovery_gives_the_same_orders(tmp_path: Path) -> None:
    expected: list = []
    run_main(_flow(expected, []))

    flow = Dataflow("risk_recovery_test")
    items: list = _batches()
    items.insert(len(items) - 2, TestingSource.ABORT())  # after the drop, before the end
    got: list = []
    raw = op.input("in", flow, TestingSource(items))
    risk = risk_stage(raw, CFG, PARTS, oracle_stage(raw, CFG, PARTS).published)
    op.output("orders", risk.orders, TestingSink(got))
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    assert got, "the drop's orders come before the abort"
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    # Sinks are at-least-once; the executor drops repeats by order_id.
    unique = {o.order_id: o for _, o in got}
    assert sorted(unique.values(), key=lambda o: o.order_id) == sorted(
        (o for _, o in expected), key=lambda o: o.order_id
    )


def test_venue_events_the_books_refuse_and_denials_come_out_of_the_risk_stage() -> None:
    ghost = "0x" + "9" * 40
    retraction = _venue_log(
        len(_chain()), T0 - 20_000, [abi.VENUE_TRADE, abi.address_topic(ghost), PERP],
        [5 * E18, 2_000 * E18, 0],
    )  # fmt: skip
    log = json.loads(retraction.value or b"")
    retraction = msgspec.structs.replace(
        retraction, value=json.dumps({**log, "removed": True}).encode()
    )
    batches = _batches()
    batches[0] = RawBatch("0-chain.logs", [*_chain(), retraction], True)
    flow = Dataflow("risk_refusals_test")
    raw = op.input("in", flow, TestingSource(batches))
    risk = risk_stage(raw, CFG, PARTS, oracle_stage(raw, CFG, PARTS).published)
    rejects: list = []
    denials: list = []
    rows: list = []
    op.output("rejects", risk.rejects, TestingSink(rejects))
    op.output("denials", risk.denials, TestingSink(denials))
    op.output("rows", risk.rows, TestingSink(rows))
    run_main(flow)
    (reject,) = [r for _, r in rejects]
    assert (reject.stage, reject.reason.split(":")[0], reject.topic) == (
        "venue", "retraction_unknown", "chain.logs"
    )  # fmt: skip
    assert all(r.account != ghost for _, r in rows)
    # the liquidated accounts stay below maintenance with their order in flight: one
    # in_flight denial each, not one per window
    in_flight = [d for _, d in denials if d.reason == "in_flight"]
    assert sorted(d.account for d in in_flight) == sorted(a for a, s in ACCOUNTS.items() if s == 20)


# --- replay with the executors' outcomes (fills) ------------------------------------------

SIGNER = "0x" + "5e" * 20
FILLS_CFG = stage_params(
    msgspec.structs.replace(
        CFG.cfg,
        execution=ExecutionConfig(signers=[SIGNER]),
        run=msgspec.structs.replace(CFG.cfg.run, batch_size=4),
    )
)
DROP_MS = T0 + 180_000
"""The first window fully at 1,940: one liquidation order per 20 ETH long."""


def _fills() -> list[RawMessage]:
    """Two fills partitions: the signer's progress every 30 s to both, and the first
    account's order reverted 10 s after it was sent."""
    account = next(iter(ACCOUNTS))
    reverted = Execution(
        order_id=order_id("liquidation", account, DROP_MS, PERP), seq=1, state="reverted",
        final=True, account=account, kind="liquidation", instrument=PERP, signer=SIGNER,
        ts_event_ms=DROP_MS + 10_000, code="reverted", detail="simulation reverted",
    )  # fmt: skip
    items: dict[int, list[tuple[int, Execution | ExecutionProgress]]] = {0: [], 1: []}
    for through in range(T0 - 60_000, T0 + 330_000, 30_000):
        if through == DROP_MS + 30_000:
            items[1].append((reverted.ts_event_ms, reverted))
        for partition in items:
            progress = ExecutionProgress(signer=SIGNER, through_ms=through)
            items[partition].append((through, progress))
    return [
        RawMessage("fills", p, n, ts, account.encode(), fills_topic.encode(item))
        for p, rows in items.items()
        for n, (ts, item) in enumerate(rows)
    ]


def _replay_orders(tmp_path: Path, workers: int) -> pl.DataFrame:
    recording = tmp_path / "recording.parquet"
    if not recording.exists():
        write_recording([*_chain(), *_quotes(), *_fills()], recording)
    out = tmp_path / f"out-{workers}"
    cluster_main(replay_flow(recording, out, FILLS_CFG), [], 0, worker_count_per_proc=workers)
    stats = pl.read_parquet(out / "partition_stats" / "**/*.parquet", hive_partitioning=True)
    assert set(stats["part"]) == {"0-chain.logs", "0-dex.quotes"}, "the oracle never reads fills"
    frame = pl.read_parquet(out / "orders" / "**/*.parquet", hive_partitioning=True)
    return frame.select(Order.__struct_fields__).sort("ts_event_ms", "order_id")


def test_replay_with_fills_retries_a_reverted_order_at_once_with_1_or_2_workers(
    tmp_path: Path,
) -> None:
    one = _replay_orders(tmp_path, 1)
    assert one.equals(_replay_orders(tmp_path, 2))
    assert one.filter(pl.col("ts_event_ms") == DROP_MS).height == 3
    # the reverted order is sent again at the next window, not after the 5 min timeout
    account = next(iter(ACCOUNTS))
    (retry,) = one.filter(pl.col("attempt") == 2).to_dicts()
    assert (retry["account"], retry["ts_event_ms"], retry["previous_order_id"]) == (
        account, DROP_MS + 60_000, order_id("liquidation", account, DROP_MS, PERP)
    )  # fmt: skip


# --- a book hedging on the DEX, its swap reported on fills ---------------------------------

HEDGER = "0x" + "d" * 40
"""The 5 ETH long (never liquidated): it hedges ETH by selling WETH on the DEX."""
DEX_CFG = stage_params(
    msgspec.structs.replace(
        FILLS_CFG.cfg,
        oracle=msgspec.structs.replace(
            CFG.cfg.oracle, tokens={WETH: TokenConfig(decimals=18, asset="ETH")}
        ),
        risk=msgspec.structs.replace(
            CFG.cfg.risk, dex_hedges={HEDGER: {"ETH": DexHedgeConfig(token=WETH, quote=USDC)}}
        ),
    )
)
FIRST_MS = T0
"""The first evaluation: the book's delta of 5 is outside its band of 0.5 (1,000 USD)."""


def _swap_fills() -> list[RawMessage]:
    """The signer's progress every 30 s on one fills partition, and the hedge's swap:
    mined and final 20 s after the order, 5 WETH sold for 9,990 USDC."""
    mined = Execution(
        order_id=order_id("dex_hedge", HEDGER, FIRST_MS, WETH), seq=3, state="mined",
        final=True, account=HEDGER, kind="dex_hedge", instrument=WETH, signer=SIGNER,
        ts_event_ms=FIRST_MS + 20_000, token_in=WETH, amount_in=str(5 * E18), token_out=USDC,
        amount_out=str(9_990 * 10**6),
    )  # fmt: skip
    items: list[tuple[int, Execution | ExecutionProgress]] = []
    for through in range(T0 - 60_000, T0 + 330_000, 30_000):
        if through == FIRST_MS + 30_000:
            items += [(mined.ts_event_ms, mined), (mined.ts_event_ms, mined)]  # and a repeat
        items.append((through, ExecutionProgress(signer=SIGNER, through_ms=through)))
    return [
        RawMessage("fills", 0, n, ts, HEDGER.encode(), fills_topic.encode(item))
        for n, (ts, item) in enumerate(items)
    ]


def _dex_replay(tmp_path: Path, workers: int) -> dict[str, pl.DataFrame]:
    recording = tmp_path / "recording.parquet"
    if not recording.exists():
        write_recording([*_chain(), *_quotes(), *_swap_fills()], recording)
    out = tmp_path / f"out-{workers}"
    cluster_main(replay_flow(recording, out, DEX_CFG), [], 0, worker_count_per_proc=workers)
    frames = {}
    for name in ("orders", "account_risk", "order_denials"):
        frame = pl.read_parquet(out / name / "**/*.parquet", hive_partitioning=True)
        frames[name] = frame.drop("date").sort(frame.columns[:2]).filter(account=HEDGER)
    return frames


def test_replay_of_a_dex_hedge_and_its_swap_moves_the_wallet_once_with_1_or_2_workers(
    tmp_path: Path,
) -> None:
    one = _dex_replay(tmp_path, 1)
    two = _dex_replay(tmp_path, 2)
    assert all(one[name].sort(one[name].columns).equals(two[name].sort(two[name].columns))
               for name in one)  # fmt: skip
    (order,) = one["orders"].to_dicts()  # one swap, and none after its fill
    assert (order["kind"], order["instrument"], order["ts_event_ms"]) == (
        "dex_hedge", WETH, FIRST_MS
    )  # fmt: skip
    assert order["size"] == pytest.approx(-5.0) and order["position"] == 0.0
    rows = one["account_risk"].sort("ts_event_ms")
    wallets = [(r["ts_event_ms"], json.loads(r["wallet"])) for r in rows.to_dicts()]
    assert wallets[0] == (FIRST_MS, {"ETH": 0.0})
    # the row of the window after the swap shows it (the health did not move)
    assert wallets[1] == (FIRST_MS + 60_000, {"ETH": -5.0})
    assert all(w == {"ETH": -5.0} for _, w in wallets[1:])
    # the swap is applied before the next evaluation: inside the band from then on
    assert one["order_denials"]["reason"].to_list() == ["within_band"]
