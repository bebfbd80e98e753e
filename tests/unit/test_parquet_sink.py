"""Parquet schemas derived from the records: the columns README "Outputs" documents."""

from __future__ import annotations

from pathlib import Path

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.parquet_sink import ParquetSink, arrow_schema
from operators.model import (
    AccountRiskRow,
    InstrumentRow,
    OraclePrice,
    Order,
    OrderDenied,
    PartitionStats,
    Rejected,
    Settlement,
)

S, B, BIN = pa.string(), pa.bool_(), pa.binary()
I32, I64, F64 = pa.int32(), pa.int64(), pa.float64()

# The schemas flows/outputs.py wrote by hand before they were derived (README "Outputs").
DOCUMENTED: dict[type[msgspec.Struct], list[tuple[str, pa.DataType]]] = {
    OraclePrice: [
        ("asset", S), ("window_start_ms", I64), ("window_end_ms", I64), ("price", F64),
        ("confidence", F64), ("sources", I32), ("status", S), ("held", B), ("revision", I32),
        ("cadence", S),
    ],
    Rejected: [
        ("stage", S), ("reason", S), ("topic", S), ("partition", I32), ("offset", I64),
        ("timestamp_ms", I64), ("key", BIN), ("raw", BIN),
    ],
    PartitionStats: [
        ("part", S), ("ts_event_ms", I64), ("messages", I64), ("observations", I64),
        ("retractions", I64), ("skipped", I64), ("rejected", I64), ("late", I64),
    ],
    AccountRiskRow: [
        ("account", S), ("ts_event_ms", I64), ("equity", F64), ("im", F64), ("mm", F64),
        ("health", F64), ("worst_scenario", I32), ("pnl", F64), ("bad_debt_usd", F64),
        ("margin_mode", S), ("greeks", S), ("wallet", S),
    ],
    InstrumentRow: [
        ("instrument", S), ("ts_event_ms", I64), ("underlying", S), ("kind", I32),
        ("strike", F64), ("expiry_years", F64), ("spot", F64), ("price", F64), ("vol", F64),
        ("vol_source", S), ("delta", F64), ("gamma", F64), ("vega", F64), ("theta", F64),
    ],
    Order: [
        ("order_id", S), ("kind", S), ("account", S), ("instrument", S), ("size", F64),
        ("size_e18", S),
        ("price", F64), ("oracle_price", F64), ("bonus_usd", F64), ("reason", S),
        ("ts_event_ms", I64), ("health", F64), ("worst_scenario", I32), ("asset", S),
        ("underlying_price", F64), ("oracle_window_end_ms", I64),
        ("position", F64), ("valid_until_ms", I64), ("attempt", I32), ("previous_order_id", S),
    ],
    OrderDenied: [
        ("account", S), ("kind", S), ("instrument", S), ("size", F64), ("reason", S),
        ("detail", S), ("ts_event_ms", I64),
    ],
    Settlement: [
        ("account", S), ("instrument", S), ("ts_event_ms", I64), ("underlying", S),
        ("kind", I32), ("strike", F64), ("expiry_ms", I64), ("size", F64),
        ("settlement_price", F64), ("price_window_end_ms", I64), ("intrinsic", F64),
        ("value_usd", F64), ("cash_usd", F64),
    ],
}  # fmt: skip

T = 1_700_000_040_000
RECORDS: dict[type[msgspec.Struct], list[msgspec.Struct]] = {
    OraclePrice: [
        OraclePrice(
            asset="ETH", window_start_ms=T - 60_000, window_end_ms=T, price=2_000.5,
            confidence=1.25, sources=3, status="ok", held=False, revision=0,
        ),
        OraclePrice(
            asset="BTC", window_start_ms=T - 60_000, window_end_ms=T, price=60_000.0,
            confidence=10.0, sources=1, status="degraded", held=True, revision=2, cadence="tick",
        ),
    ],
    Rejected: [
        Rejected(
            stage="decode", reason="invalid_json: x", topic="chain.logs", partition=3, offset=17,
            timestamp_ms=T, key=b"\x00key", raw=b"{",
        ),
        Rejected(
            stage="oracle", reason="late: window closed", topic="dex.quotes", partition=0,
            offset=0, timestamp_ms=T, key=None, raw=None,
        ),
    ],
    PartitionStats: [
        PartitionStats(
            part="0-chain.logs", ts_event_ms=T, messages=10, observations=8, retractions=1,
            skipped=1, rejected=0, late=0,
        )
    ],
    AccountRiskRow: [
        AccountRiskRow(
            account="0x" + "a" * 40, ts_event_ms=T, equity=8_800.0, im=11_155.0, mm=8_924.0,
            health=0.986, worst_scenario=21, pnl=-1_200.0, bad_debt_usd=0.0,
            margin_mode="portfolio", greeks='{"ETH":{"delta":20.0}}', wallet='{"ETH":-12.5}',
        ),
        AccountRiskRow(
            account="0x" + "b" * 40, ts_event_ms=T, equity=10.0, im=0.0, mm=0.0,
            health=float("inf"), worst_scenario=0, pnl=0.0, bad_debt_usd=12.5,
            margin_mode="standard", greeks="{}",
        ),
    ],
    InstrumentRow: [
        InstrumentRow(
            instrument="0x" + "2" * 64, ts_event_ms=T, underlying="ETH", kind=2, strike=2_100.0,
            expiry_years=0.25, spot=2_000.0, price=150.0, vol=0.6, vol_source="svi",
            delta=0.51, gamma=6.6e-4, vega=390.0, theta=-620.0,
        )
    ],
    Order: [
        Order(
            order_id="f" * 32, kind="liquidation", account="0x" + "a" * 40,
            instrument="0x" + "1" * 64, size=-10.0, size_e18="-10000000000000000000",
            price=1_847.6, oracle_price=1_940.0,
            bonus_usd=924.0, reason="equity < MM", ts_event_ms=T, health=0.986,
            worst_scenario=21, asset="ETH", underlying_price=2_000.0,
            oracle_window_end_ms=T, position=20.0,
            valid_until_ms=T + 120_000,
            attempt=1, previous_order_id=None,
        ),
        Order(
            order_id="e" * 32, kind="liquidation", account="0x" + "a" * 40,
            instrument="0x" + "1" * 64, size=-10.0, size_e18="-10000000000000000000",
            price=1_847.6, oracle_price=1_940.0,
            bonus_usd=924.0, reason="retry", ts_event_ms=T + 300_000, health=0.9,
            worst_scenario=21, asset="ETH", underlying_price=2_000.0,
            oracle_window_end_ms=T + 300_000, position=10.0,
            valid_until_ms=T + 420_000, attempt=2, previous_order_id="f" * 32,
        ),
    ],
    OrderDenied: [
        OrderDenied(
            account="0x" + "a" * 40, kind="liquidation", instrument="", size=None,
            reason="oracle_not_ok", detail="prices not ok (or held): ETH", ts_event_ms=T,
        ),
        OrderDenied(
            account="0x" + "a" * 40, kind="hedge", instrument="0x" + "1" * 64, size=0.5,
            reason="within_band", detail="delta 0.5 within +-1", ts_event_ms=T,
        ),
    ],
    Settlement: [
        Settlement(
            account="0x" + "a" * 40, instrument="0x" + "2" * 64, ts_event_ms=T,
            underlying="ETH", kind=2, strike=2_000.0, expiry_ms=T - 1, size=-3.0,
            settlement_price=2_100.0, price_window_end_ms=T, intrinsic=100.0,
            value_usd=-300.0, cash_usd=-60.0,
        )
    ],
}  # fmt: skip


@pytest.mark.parametrize("record", list(DOCUMENTED), ids=lambda r: r.__name__)
def test_derived_schema_has_the_documented_columns_and_types(record: type) -> None:
    assert arrow_schema(record) == pa.schema(DOCUMENTED[record])


@pytest.mark.parametrize("record", list(RECORDS), ids=lambda r: r.__name__)
def test_records_written_by_the_sink_read_back_equal(record: type, tmp_path: Path) -> None:
    time = next(f for f in record.__struct_fields__ if f.endswith("_ms"))  # the event time
    sink = ParquetSink(tmp_path, "data", arrow_schema(record), msgspec.structs.asdict, time)
    part = sink.build_part("step", "0", None)
    part.write_batch(RECORDS[record])
    part.close()

    (path,) = (tmp_path / "data").glob("date=*/part-0-00000000.parquet")
    table = pq.read_table(path)
    assert table.schema == arrow_schema(record)
    assert [msgspec.convert(row, record) for row in table.to_pylist()] == RECORDS[record]


def test_a_field_without_a_column_type_is_an_error() -> None:
    class Nested(msgspec.Struct):
        prices: list[float]

    with pytest.raises(TypeError, match=r"Nested\.prices: expected str, int, float"):
        arrow_schema(Nested)


@pytest.mark.parametrize(
    ("timestamp_ms", "day"),
    [
        (2**63 - 1, "9999-12-31"),  # beyond any date: microseconds written as ms, and more
        (1_700_000_040_000_000, "9999-12-31"),  # microseconds as ms: year 55840
        (-(2**63), "0001-01-01"),
        (-1, "1969-12-31"),  # Kafka's "no timestamp"
    ],
)
def test_deadletter_row_with_broker_timestamp_outside_the_date_range_is_written_and_kept(
    timestamp_ms: int, day: str, tmp_path: Path
) -> None:
    row = Rejected(
        stage="decode", reason="invalid_json: x", topic="t", partition=0, offset=1,
        timestamp_ms=timestamp_ms, key=None, raw=b"{",
    )  # fmt: skip
    sink = ParquetSink(tmp_path, "deadletter", arrow_schema(Rejected), msgspec.structs.asdict,
                       "timestamp_ms")  # fmt: skip
    part = sink.build_part("step", "0", None)
    part.write_batch([row])
    part.close()

    (path,) = (tmp_path / "deadletter").glob("date=*/*.parquet")
    assert path.parent.name == f"date={day}"
    assert pq.read_table(path).to_pylist() == [msgspec.structs.asdict(row)]
    frame = pl.read_parquet(tmp_path / "deadletter" / "**" / "*.parquet", hive_partitioning=True)
    assert frame["timestamp_ms"].to_list() == [timestamp_ms]


def test_rows_of_days_beyond_the_date_range_share_one_file_and_none_is_lost(
    tmp_path: Path,
) -> None:
    rows = [
        Rejected(
            stage="decode", reason="invalid_json: x", topic="t", partition=0, offset=n,
            timestamp_ms=ts, key=None, raw=None,
        )
        for n, ts in enumerate([2**63 - 1, 10**18, -(2**63), -(10**18)])
    ]  # fmt: skip
    sink = ParquetSink(tmp_path, "deadletter", arrow_schema(Rejected), msgspec.structs.asdict,
                       "timestamp_ms")  # fmt: skip
    part = sink.build_part("step", "0", None)
    part.write_batch(rows)
    part.close()

    files = sorted((tmp_path / "deadletter").glob("date=*/*.parquet"))
    assert [f.parent.name for f in files] == ["date=0001-01-01", "date=9999-12-31"]
    assert sorted(r["offset"] for f in files for r in pq.read_table(f).to_pylist()) == [0, 1, 2, 3]
