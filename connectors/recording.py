"""Recordings: messages as they sat on their topics, in Parquet or JSONL files.

One row per message, with the columns of :class:`~operators.model.RawMessage`:
``topic`` (string), ``partition`` (int32), ``offset`` (int64), ``timestamp_ms`` (int64,
ms since the Unix epoch), ``key`` and ``value`` (binary, nullable).

A JSONL row is ``{"topic", "partition", "offset", "timestamp_ms", "key", "value"}`` with
``key`` and ``value`` as UTF-8 text or null; bytes that are not valid UTF-8 are written as
``"key_b64"`` / ``"value_b64"`` (standard base64) instead. On reading, an absent key or
value is null and other fields are ignored.

Every row is checked at load, before anything runs: a message's coordinates are its
identity (its input partition is named ``<partition>-<topic>``, its deadletter row carries
them), so a row without valid ones (an empty ``topic``, a ``partition`` outside
0..2**31-1, an ``offset`` below 0, a value of the wrong type or width) cannot become a
message. Loading fails with one line naming the file, the problem and the first row
(the line of a JSONL file) that has it; fix or drop the row and load again.

A topic partition holds one message per offset, so a recording that repeats an offset is
resolved on reading (:func:`read_recording`): identical copies count once, and an offset
recorded with different contents is left out with every copy, since nothing tells which
one the topic held.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from operators.model import RawMessage

COLUMNS = ("topic", "partition", "offset", "timestamp_ms", "key", "value")
SCHEMA = pl.Schema(
    {
        "topic": pl.String(),
        "partition": pl.Int32(),
        "offset": pl.Int64(),
        "timestamp_ms": pl.Int64(),
        "key": pl.Binary(),
        "value": pl.Binary(),
    }
)
ARROW_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp_ms", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
    ]
)
_JSONL_SCHEMA = pl.Schema(
    {
        **{name: SCHEMA[name] for name in COLUMNS[:4]},
        **{name: pl.String() for name in ("key", "value", "key_b64", "value_b64")},
    }
)
_INT_BITS = {"partition": 32, "offset": 64, "timestamp_ms": 64}
SUFFIXES = (".parquet", ".jsonl")
ROW_GROUP_ROWS = 65_536
"""Rows per Parquet row group, and per batch held in memory while writing."""


def write_recording(messages: Iterable[RawMessage], path: Path) -> int:
    """Write ``messages`` to ``path`` (``.parquet`` or ``.jsonl``) and return how many.

    Messages are written in the order given. Parquet goes out in row groups of
    :data:`ROW_GROUP_ROWS`. If ``messages`` raises (a recording stopped by Ctrl-C, say),
    the rows taken so far are still written and the file is closed valid.
    """
    _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        return _write_parquet(messages, path)
    return _write_jsonl(messages, path)


def recording_files(path: Path) -> list[Path]:
    """The recording files at ``path``: the file itself, or every ``*.parquet`` and
    ``*.jsonl`` under the directory, recursively, sorted by path."""
    if path.is_file():
        _check_suffix(path)
        return [path]
    if not path.is_dir():
        msg = f"expected a recording file or directory; got {str(path)!r}, which does not exist"
        raise FileNotFoundError(msg)
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not files:
        msg = f"expected *.parquet or *.jsonl files under {str(path)!r}; found none"
        raise FileNotFoundError(msg)
    return files


def load_recording(path: Path) -> pl.DataFrame:
    """Load the recording at ``path`` (a file or a directory) as one frame.

    The frame has exactly the columns and dtypes of :data:`SCHEMA`, one row per offset,
    sorted by ``(topic, partition, offset)``. Integer columns of another width are cast;
    extra columns (or JSON fields) are ignored. Repeated offsets are resolved as
    :func:`read_recording` says.
    """
    return read_recording(path).rows


@dataclass(frozen=True)
class Recording:
    """A recording as read: its messages, and the offsets it repeats."""

    rows: pl.DataFrame
    """One row per offset, sorted by ``(topic, partition, offset)``."""
    conflicting: pl.DataFrame
    """Every copy of each offset recorded with different contents (left out of ``rows``),
    sorted by all columns: neither frame depends on the order of the rows read."""
    identical: int
    """Copies dropped because an identical row of the same offset was kept."""


def read_recording(path: Path) -> Recording:
    """Read the recording at ``path`` (a file or a directory) and resolve repeated offsets."""
    frames = [_read_file(file) for file in recording_files(path)]
    frame = pl.concat(frames, how="vertical")
    unique = frame.unique(maintain_order=True)
    coordinates = ["topic", "partition", "offset"]
    repeated = unique.select(pl.struct(coordinates).is_duplicated()).to_series()
    return Recording(
        rows=unique.filter(~repeated).sort(coordinates, maintain_order=True),
        conflicting=unique.filter(repeated).sort(list(COLUMNS)),
        identical=frame.height - unique.height,
    )


def recording_fingerprint(path: Path) -> str:
    """What identifies the recording at ``path`` without reading it all: its file count,
    total size, and a hash of each file's name (relative to ``path``), size, and first and
    last 64 KiB."""
    digest = hashlib.sha256()
    files = recording_files(path)
    total = 0
    for file in files:
        size = file.stat().st_size
        total += size
        name = file.name if file == path else str(file.relative_to(path))
        digest.update(f"{name}\0{size}\0".encode())
        with file.open("rb") as f:
            digest.update(f.read(65_536))
            f.seek(max(size - 65_536, 0))
            digest.update(f.read(65_536))
    return f"{len(files)} file(s), {total} bytes, sha256 {digest.hexdigest()[:16]}"


def iter_messages(df: pl.DataFrame) -> Iterator[RawMessage]:
    """The rows of a frame from :func:`load_recording` as messages, in frame order."""
    for row in df.select(COLUMNS).iter_rows():
        yield RawMessage(*row)


def _check_suffix(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        msg = f"expected a recording file ending in .parquet or .jsonl; got {str(path)!r}"
        raise ValueError(msg)


def _write_parquet(messages: Iterable[RawMessage], path: Path) -> int:
    count = 0
    with pq.ParquetWriter(path, ARROW_SCHEMA) as writer:
        batch: list[RawMessage] = []
        try:
            for message in messages:
                batch.append(message)
                if len(batch) == ROW_GROUP_ROWS:
                    writer.write_table(_arrow_table(batch))
                    count += len(batch)
                    batch = []
        finally:
            if batch:
                writer.write_table(_arrow_table(batch))
                count += len(batch)
    return count


def _arrow_table(batch: list[RawMessage]) -> pa.Table:
    columns = [
        [m.topic for m in batch],
        [m.partition for m in batch],
        [m.offset for m in batch],
        [m.timestamp_ms for m in batch],
        [m.key for m in batch],
        [m.value for m in batch],
    ]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, ARROW_SCHEMA, strict=True)],
        schema=ARROW_SCHEMA,
    )


def _write_jsonl(messages: Iterable[RawMessage], path: Path) -> int:
    encoder = msgspec.json.Encoder()
    count = 0
    with path.open("wb") as out:
        for message in messages:
            out.write(encoder.encode(_json_row(message)))
            out.write(b"\n")
            count += 1
    return count


def _json_row(m: RawMessage) -> dict[str, object]:
    row: dict[str, object] = {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "timestamp_ms": m.timestamp_ms,
    }
    for name, data in (("key", m.key), ("value", m.value)):
        if data is None:
            row[name] = None
            continue
        try:
            row[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            row[f"{name}_b64"] = base64.b64encode(data).decode("ascii")
    return row


def _read_file(path: Path) -> pl.DataFrame:
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    try:
        return _read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, pa.ArrowException) as exc:
        msg = f"{path}: expected a Parquet file; {str(exc).splitlines()[0]}"
        raise ValueError(msg) from None


def _read_parquet(path: Path) -> pl.DataFrame:
    schema = pl.read_parquet_schema(path)
    for name, expected in SCHEMA.items():
        if name not in schema:
            msg = f"{path}: expected column {name!r} ({expected}); columns are {list(schema)}"
            raise ValueError(msg)
        got = schema[name]
        castable = got == expected or (
            (expected.is_integer() and got.is_integer())
            or (expected == pl.Binary and got == pl.Null)
        )
        if not castable:
            msg = f"{path}: expected column {name!r} as {expected}; got {got}"
            raise ValueError(msg)
    df = pl.read_parquet(path, columns=list(COLUMNS))
    for name in COLUMNS[:4]:
        nulls = df[name].null_count()
        if nulls:
            msg = f"{path}: expected no nulls in column {name!r}; got {nulls}"
            raise ValueError(msg)
    for name, bits in _INT_BITS.items():
        if df.schema[name] != SCHEMA[name]:
            fits = pl.col(name).is_between(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            _check_rows(path, df, ~fits, f"expected column {name!r} to fit {SCHEMA[name]}")
    return _checked(path, df.cast(SCHEMA, strict=True))


def _read_jsonl(path: Path) -> pl.DataFrame:
    try:
        raw = pl.read_ndjson(path, schema=_JSONL_SCHEMA)
    except pl.exceptions.ComputeError as e:
        msg = f"{path}: expected recording rows; {_jsonl_problem(path, e)}"
        raise ValueError(msg) from None
    for name in COLUMNS[:4]:
        _check_rows(path, raw, pl.col(name).is_null(), f"expected field {name!r} in every row")
    columns: list[pl.Expr] = [pl.col(name) for name in COLUMNS[:4]]
    for name in COLUMNS[4:]:
        text, b64 = pl.col(name), pl.col(f"{name}_b64")
        decoded = b64.str.decode("base64", strict=False)
        _check_rows(
            path,
            raw,
            text.is_not_null() & b64.is_not_null(),
            f"expected at most one of {name!r} and '{name}_b64'",
        )
        _check_rows(
            path, raw, b64.is_not_null() & decoded.is_null(), f"expected base64 in '{name}_b64'"
        )
        columns.append(pl.coalesce(decoded, text.cast(pl.Binary)).alias(name))
    return _checked(path, raw.select(columns))


def _checked(path: Path, df: pl.DataFrame) -> pl.DataFrame:
    """``df`` if every row has valid coordinates (module docstring); else raise naming one."""
    _check_rows(path, df, pl.col("topic") == "", "expected a topic name")
    _check_rows(path, df, pl.col("partition") < 0, "expected a partition >= 0")
    _check_rows(path, df, pl.col("offset") < 0, "expected an offset >= 0")
    return df


def _jsonl_problem(path: Path, error: pl.exceptions.ComputeError) -> str:
    """Name the field polars could not read, by reading the fields one at a time."""
    unreadable: dict[str, str] = {}
    for name, dtype in _JSONL_SCHEMA.items():
        try:
            pl.read_ndjson(path, schema={name: dtype})
        except pl.exceptions.ComputeError as e:
            unreadable[name] = f"field {name!r} must be {dtype}: {str(e).splitlines()[0]}"
    line = _first_bad_line(path, unreadable)
    if unreadable and len(unreadable) < len(_JSONL_SCHEMA):
        return f"{next(iter(unreadable.values()))} (line {line})"
    return f"{str(error).splitlines()[0]} (line {line})"  # every field fails: bad JSON


def _first_bad_line(path: Path, unreadable: dict[str, str]) -> int | None:
    """The first line of a JSONL file that is not a JSON object, or whose field in
    ``unreadable`` is not of its type (an int of its width, a string, or null)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = msgspec.json.decode(line)
            except msgspec.DecodeError:
                return number
            if not isinstance(row, dict):
                return number
            for name in unreadable:
                value, bits = row.get(name), _INT_BITS.get(name)
                if bits is None:
                    ok = value is None or isinstance(value, str)
                else:
                    ok = value is None or (
                        type(value) is int and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)
                    )
                if not ok:
                    return number
    return None


def _check_rows(path: Path, df: pl.DataFrame, bad: pl.Expr, expected: str) -> None:
    rows = df.with_row_index("row", offset=1).filter(bad)["row"]
    if len(rows):
        msg = f"{path}: {expected}; not so in {len(rows)} rows, the first row {rows[0]}"
        raise ValueError(msg)
