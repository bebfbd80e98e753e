"""Hive-style Parquet datasets as a Bytewax sink, written idempotently.

Layout: ``<root>/<dataset>/date=YYYY-MM-DD/part-<partition>-<seq>.parquet``, where the
date is the UTC day of each row's event time, clamped to 0001-01-01..9999-12-31 (a
deadletter row's broker timestamp can be anything an int64 holds: such a row goes to the
first or last day and keeps its own value in its column). Rows are buffered and written when an
epoch ends (Bytewax's snapshot), so a file holds whole epochs. The file sequence number
is the sink's recovery state: after a crash the run resumes at the snapshotted number,
removes files it had written past it and writes them again, so no row is duplicated.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

ToRow = Callable[[Any], dict[str, Any]]
_DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_COLUMN_TYPES: dict[type[msgspec.inspect.Type], pa.DataType] = {
    msgspec.inspect.StrType: pa.string(),
    msgspec.inspect.IntType: pa.int64(),
    msgspec.inspect.FloatType: pa.float64(),
    msgspec.inspect.BoolType: pa.bool_(),
    msgspec.inspect.BytesType: pa.binary(),
}


def arrow_schema(record: type[msgspec.Struct]) -> pa.Schema:
    """The Parquet schema of a record type: one nullable column per field, in field order.

    str (and a ``Literal`` of strings) -> string, int -> int64, float -> float64, bool ->
    bool, bytes -> binary, and ``X | None`` as X. A field ``Annotated`` with
    ``msgspec.Meta(extra={"arrow": name})`` (``operators.model.Int32``: ``"int32"``) takes
    the pyarrow type of that alias.

    >>> class Row(msgspec.Struct):
    ...     asset: str
    ...     price: float
    >>> arrow_schema(Row).types
    [DataType(string), DataType(double)]
    """
    info = msgspec.inspect.type_info(record)
    if not isinstance(info, msgspec.inspect.StructType):
        msg = f"record must be a msgspec Struct type; got {record!r}"
        raise TypeError(msg)
    return pa.schema(
        [(f.name, _column_type(f.type, f"{record.__name__}.{f.name}")) for f in info.fields]
    )


def _column_type(t: msgspec.inspect.Type, where: str) -> pa.DataType:
    if isinstance(t, msgspec.inspect.Metadata):
        alias = (t.extra or {}).get("arrow")
        return pa.type_for_alias(alias) if alias else _column_type(t.type, where)
    if isinstance(t, msgspec.inspect.UnionType):
        types = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        if len(types) == 1:
            return _column_type(types[0], where)
    if isinstance(t, msgspec.inspect.LiteralType) and all(isinstance(v, str) for v in t.values):
        return pa.string()
    column = _COLUMN_TYPES.get(type(t))
    if column is None:
        msg = f"{where}: expected str, int, float, bool or bytes (or one of them | None); got {t}"
        raise TypeError(msg)
    return column


def partition_day(day_number: int) -> str:
    """The ``YYYY-MM-DD`` of a day counted from 1970-01-01 (``ts_ms // 86_400_000``),
    clamped to the days a date can hold, 0001-01-01..9999-12-31."""
    ordinal = min(max(_EPOCH_DAY + day_number, date.min.toordinal()), date.max.toordinal())
    return date.fromordinal(ordinal).isoformat()


def write_day_files(
    directory: Path, name: str, rows: list[dict[str, Any]], schema: pa.Schema, time_field: str
) -> None:
    """Write ``rows`` as ``directory/date=YYYY-MM-DD/<name>.parquet``, one file per UTC day
    of ``time_field`` (ms), each replacing any earlier file of that name atomically."""
    by_day: dict[str, list[dict[str, Any]]] = {}
    for row in rows:  # days beyond a date's range share the first or the last
        by_day.setdefault(partition_day(row[time_field] // _DAY_MS), []).append(row)
    for day, day_rows in sorted(by_day.items()):
        path = directory / f"date={day}" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(day_rows, schema=schema), tmp)
        tmp.replace(path)


class _ParquetPartition(StatefulSinkPartition[Any, int]):
    def __init__(
        self, directory: Path, part: str, schema: pa.Schema, to_row: ToRow, time_field: str,
        seq: int,
    ):  # fmt: skip
        self.directory = directory
        self.part = part
        self.schema = schema
        self.to_row = to_row
        self.time_field = time_field
        self.seq = seq
        self.rows: list[dict[str, Any]] = []
        for stale in directory.glob(f"date=*/part-{part}-*.parquet"):
            if int(stale.stem.rsplit("-", 1)[1]) >= seq:
                stale.unlink()  # written after the snapshot we resume from

    def write_batch(self, items: list[Any]) -> None:
        self.rows.extend(self.to_row(item) for item in items)

    def _flush(self) -> None:
        if not self.rows:
            return
        name = f"part-{self.part}-{self.seq:08d}"
        write_day_files(self.directory, name, self.rows, self.schema, self.time_field)
        self.rows = []
        self.seq += 1

    def snapshot(self) -> int:
        self._flush()
        return self.seq

    def close(self) -> None:
        self._flush()


class ParquetSink(FixedPartitionedSink[Any, int]):
    """Writes ``(key, item)`` pairs as rows of one dataset; one partition per writer."""

    def __init__(
        self, root: Path, dataset: str, schema: pa.Schema, to_row: ToRow, time_field: str,
        partitions: int = 1,
    ):  # fmt: skip
        self.directory = root / dataset
        self.schema = schema
        self.to_row = to_row
        self.time_field = time_field
        self.partitions = partitions

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.partitions)]

    def part_fn(self, item_key: str) -> int:
        return sum(item_key.encode()) % self.partitions

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _ParquetPartition:
        self.directory.mkdir(parents=True, exist_ok=True)
        return _ParquetPartition(
            self.directory, for_part, self.schema, self.to_row, self.time_field,
            resume_state or 0,
        )  # fmt: skip
