"""A small run's output directory for the report's tests: every dataset the report draws,
written with the sinks' own writer (``connectors.parquet_sink.write_day_files``), and a
recording of quotes that the oracle's decoder reads as sources."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec

from connectors.parquet_sink import arrow_schema, write_day_files
from connectors.recording import write_recording
from operators.model import (
    AccountRiskRow,
    Execution,
    OraclePrice,
    Order,
    RawMessage,
    Rejected,
)

T0 = 1_767_225_600_000
MIN = 60_000
ACCOUNTS = [f"0x{n:040x}" for n in range(1, 7)]


def _write(out: Path, dataset: str, rows: list[msgspec.Struct], time_field: str) -> None:
    record = type(rows[0])
    write_day_files(
        out / dataset,
        "part-0-00000000",
        [msgspec.structs.asdict(r) for r in rows],
        arrow_schema(record),
        time_field,
    )


def prices() -> list[OraclePrice]:
    rows = []
    for asset, base in (("ETH", 2000.0), ("BTC", 60000.0)):
        for w in range(30):
            status = "stale" if w in (20, 21) else "degraded" if w == 7 else "ok"
            price = base * (1 + 0.01 * math.sin(w / 4)) * (0.8 if w >= 15 else 1.0)
            rows.append(
                OraclePrice(
                    asset=asset,
                    window_start_ms=T0 + w * MIN,
                    window_end_ms=T0 + (w + 1) * MIN,
                    price=price,
                    confidence=base * 0.002,
                    sources=3,
                    status=status,
                    held=w == 15,
                    revision=0,
                )
            )
    return rows


def quotes() -> list[RawMessage]:
    """``dex.quotes`` messages of two quote sources (default topic names)."""
    messages = []
    for p in prices():
        for source, skew in (("feed_a", 0.999), ("feed_b", 1.001)):
            mid = p.price * skew
            value = {"source": source, "base": p.asset, "quote": "USD", "bid": mid - 0.5,
                     "ask": mid + 0.5, "bid_size": 10, "ask_size": 10,
                     "ts": p.window_start_ms + 30_000}  # fmt: skip
            messages.append(
                RawMessage(
                    "dex.quotes",
                    0,
                    len(messages),
                    p.window_start_ms + 30_000,
                    p.asset.encode(),
                    json.dumps(value).encode(),
                )
            )
    return messages


def rejects() -> list[Rejected]:
    reasons = ["invalid_json: at 3", "late: window ending x", "bad_topic: 0x12"]
    return [
        Rejected(
            stage="decode" if n % 3 else "intake",
            reason=reasons[n % 3],
            topic="chain.logs",
            partition=0,
            offset=n,
            timestamp_ms=T0 + n * 40_000,
            key=None,
            raw=b"{",
        )
        for n in range(40)
    ]


def risk_rows() -> list[AccountRiskRow]:
    rows = []
    for k, account in enumerate(ACCOUNTS):
        for w in range(0, 30, 3):
            health = (1.5 + k) * (0.6 if w >= 15 else 1.0) if k < 5 else math.inf
            greeks = {"ETH": {"delta": (k - 2) * 1.5 - w * 0.1, "gamma": 0.001 * k,
                              "vega": 10.0 * k}}  # fmt: skip
            rows.append(
                AccountRiskRow(
                    account=account,
                    ts_event_ms=T0 + w * MIN,
                    equity=1000.0 * health if math.isfinite(health) else 1000.0,
                    im=700.0,
                    mm=500.0,
                    health=health,
                    worst_scenario=3,
                    pnl=0.0,
                    bad_debt_usd=0.0,
                    margin_mode="portfolio",
                    greeks=json.dumps(greeks),
                    wallet=json.dumps({"ETH": 0.5} if k == 0 else {}),
                )
            )
    return rows


def orders() -> list[Order]:
    rows = []
    for n, (account, kind) in enumerate(
        [
            (ACCOUNTS[0], "liquidation"),
            (ACCOUNTS[1], "liquidation"),
            (ACCOUNTS[0], "hedge"),
            (ACCOUNTS[2], "liquidation"),
        ]
    ):
        rows.append(
            Order(
                order_id="0x" + format(n + 1, "064x"),
                kind=kind,
                account=account,
                instrument="0x" + "99" * 32,
                size=-1.0,
                size_e18=str(-(10**18)),
                price=1900.0,
                oracle_price=1900.0,
                bonus_usd=5.0,
                reason="below_mm",
                ts_event_ms=T0 + (16 + n) * MIN,
                health=0.9,
                worst_scenario=3,
                asset="ETH",
                underlying_price=1900.0,
                oracle_window_end_ms=T0 + (16 + n) * MIN,
                position=2.0,
                valid_until_ms=T0 + (20 + n) * MIN,
            )
        )
    return rows


def executions() -> list[Execution]:
    states = [("mined", True), ("reverted", True), ("denied", True)]
    return [
        Execution(
            order_id="0x" + format(n + 1, "064x"),
            seq=1,
            state=state,  # type: ignore[arg-type]
            final=final,
            account=ACCOUNTS[n],
            kind="liquidation",
            instrument="0x" + "99" * 32,
            signer="0x" + "22" * 20,
            ts_event_ms=T0 + (17 + n) * MIN,
        )
        for n, (state, final) in enumerate(states)
    ]


def write_run(out: Path, *, with_deadletter: bool = True) -> Path:
    """Write the run's datasets under ``out`` and its recording at ``out/recording.parquet``
    (returned)."""
    _write(out, "oracle_prices", prices(), "window_end_ms")
    if with_deadletter:
        _write(out, "deadletter", rejects(), "timestamp_ms")
    _write(out, "account_risk", risk_rows(), "ts_event_ms")
    _write(out, "orders", orders(), "ts_event_ms")
    _write(out, "executions", executions(), "ts_event_ms")
    recording = out / "recording.parquet"
    write_recording(quotes(), recording)
    return recording
