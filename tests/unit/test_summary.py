"""The run summary's lines on executions and on the venue's liquidations, from hand-made rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from connectors.parquet_sink import arrow_schema, write_day_files
from flows.cli.summary import execution_lines, liquidation_line, read_dataset, summary_text
from operators.model import Execution
from operators.venue import Fill

SIGNER = "0x" + "11" * 20
LIQUIDATOR = "0x" + "22" * 20
T0 = 1_767_225_600_000


def _id(n: int) -> str:
    return "0x" + format(n, "064x")


def _execution(order: int, seq: int, state: str, final: bool = False, **fields: Any) -> Execution:
    return Execution(
        order_id=_id(order), seq=seq, state=state, final=final,  # type: ignore[arg-type]
        account="0x" + "aa" * 20, kind="liquidation", instrument=_id(99), signer=SIGNER,
        ts_event_ms=T0 + 12_000 * seq, **fields,
    )  # fmt: skip


EXECUTIONS = [
    _execution(1, 1, "sent", tx_hash=_id(101), nonce=0),
    _execution(1, 2, "mined", tx_hash=_id(101), nonce=0, fee_paid_wei="1000000000000000"),
    _execution(1, 3, "mined", True, tx_hash=_id(101), nonce=0, fee_paid_wei="1000000000000000"),
    _execution(2, 1, "denied", True, code="price_band", detail="ETH: 8000 bps > 200 bps"),
    _execution(3, 1, "sent", tx_hash=_id(103), nonce=1),
    _execution(4, 1, "sent", tx_hash=_id(104), nonce=2),
    _execution(
        4,
        2,
        "reverted",
        True,
        tx_hash=_id(104),
        nonce=2,
        code="reverted",
        fee_paid_wei="2000000000000000",
    ),
    _execution(5, 1, "denied", True, code="price_band"),
]


def _frame(rows: list[Execution]) -> pl.DataFrame:
    return pl.DataFrame([msgspec.structs.asdict(r) for r in rows])


def _fill(order_id: str | None, seq: int, liquidator: str = LIQUIDATOR) -> Fill:
    return Fill(
        account="0x" + "aa" * 20, instrument=_id(99), size_e18=-(10**18), price_e18=2000 * 10**18,
        liquidator=liquidator, order_id=order_id, ts_ms=T0, seq=seq, removed=False,
    )  # fmt: skip


def test_executions_count_each_order_once_by_its_latest_row_and_sum_the_fees_paid() -> None:
    lines = execution_lines(_frame(EXECUTIONS))

    assert lines == [
        f"executions: 5 orders taken by {SIGNER}; sent 3, mined 1, reverted 1, denied 2, "
        "expired 0, conflict 0, unfinished 1; fees paid 0.003000 ETH",
        "execution refusals and failures: denied price_band 2, reverted reverted 1",
    ]


def test_executions_in_any_row_order_give_the_same_lines() -> None:
    assert execution_lines(_frame(EXECUTIONS[::-1])) == execution_lines(_frame(EXECUTIONS))


def test_liquidations_on_chain_without_an_order_or_twice_are_counted_apart() -> None:
    orders = pl.DataFrame({"order_id": [_id(1), _id(2), _id(3)],
                           "kind": ["liquidation", "liquidation", "hedge"]})  # fmt: skip
    fills = [_fill(_id(1), 0), _fill(_id(1), 1), _fill(_id(3), 2), _fill(None, 3), _fill(_id(7), 4)]

    line = liquidation_line(fills, orders)

    assert line == (
        f"on chain: 5 Liquidated events (by {LIQUIDATOR}); 2 carry the id of a hedgeflow "
        "liquidation order, 3 carry none or another; 1 ids twice"
    )


def test_summary_reads_the_datasets_of_each_stage_directory_together(tmp_path: Path) -> None:
    risk, executor = tmp_path / "risk", tmp_path / "executor"
    orders = [{"order_id": _id(1), "kind": "liquidation", "ts_event_ms": T0}]
    schema = pl.DataFrame(orders).to_arrow().schema
    write_day_files(risk / "orders", "part-0-00000000", orders, schema, "ts_event_ms")
    rows = [msgspec.structs.asdict(r) for r in EXECUTIONS]
    write_day_files(
        executor / "executions", "signer-0", rows, arrow_schema(Execution), "ts_event_ms"
    )

    text = summary_text(risk, executor, liquidations=[_fill(_id(1), 0)])

    assert read_dataset("orders", risk, executor) is not None
    assert f"hedgeflow summary of {risk}, {executor}" in text
    assert "executions: 5 orders taken" in text
    assert "1 carry the id of a hedgeflow liquidation order, 0 carry none or another" in text
