"""Recordings: Parquet and JSONL round trips, directories, what bad files report, and
repeated offsets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.recording import (
    SCHEMA,
    iter_messages,
    load_recording,
    read_recording,
    recording_files,
    recording_fingerprint,
    write_recording,
)
from operators.model import RawMessage

MESSAGES = [
    RawMessage("dex.quotes", 1, 7, 1_700_000_000_500, b"k2", b'{"bid": "1.5"}'),
    RawMessage("chain.logs", 0, 3, 1_700_000_000_000, None, b"\xff\xfe not utf-8"),
    RawMessage("chain.logs", 0, 2, 1_700_000_000_000, b"\x80\x81", None),
    RawMessage("chain.logs", 2, 0, 1_700_000_000_100, "clé".encode(), "välue".encode()),
]
SORTED = sorted(MESSAGES, key=lambda m: (m.topic, m.partition, m.offset))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_write_then_load_round_trips_bytes_none_and_sorts(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"recording{suffix}"

    written = write_recording(MESSAGES, path)
    df = load_recording(path)

    assert written == len(MESSAGES)
    assert df.schema == SCHEMA
    assert list(iter_messages(df)) == SORTED


def test_jsonl_writes_text_as_is_and_other_bytes_as_base64(tmp_path: Path) -> None:
    path = tmp_path / "recording.jsonl"

    write_recording(MESSAGES[1:3], path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]

    assert rows[0]["key"] is None
    assert rows[0]["value_b64"] == "//4gbm90IHV0Zi04"
    assert "value" not in rows[0]
    assert rows[1]["key_b64"] == "gIE="
    assert rows[1]["value"] is None


def test_parquet_written_in_row_groups_of_the_configured_size(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    messages = (RawMessage("t", 0, i, i, None, b"v") for i in range(70_000))

    written = write_recording(messages, path)

    assert written == 70_000
    assert pq.ParquetFile(path).metadata.num_row_groups == 2


def test_write_when_messages_raise_then_rows_so_far_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "cut.parquet"

    def interrupted() -> Iterator[RawMessage]:
        yield from MESSAGES[:2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_recording(interrupted(), path)

    assert load_recording(path).height == 2


def test_directory_loads_every_file_under_it_sorted(tmp_path: Path) -> None:
    write_recording(MESSAGES[:2], tmp_path / "a.parquet")
    write_recording(MESSAGES[2:], tmp_path / "nested" / "b.jsonl")
    (tmp_path / "notes.txt").write_text("not a recording")

    files = recording_files(tmp_path)
    df = load_recording(tmp_path)

    assert files == [tmp_path / "a.parquet", tmp_path / "nested" / "b.jsonl"]
    assert list(iter_messages(df)) == SORTED


def test_directory_without_recordings_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a recording")

    with pytest.raises(FileNotFoundError, match=r"expected \*\.parquet or \*\.jsonl files"):
        recording_files(tmp_path)


def test_unknown_suffix_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "recording.csv"
    path.write_text("topic\n")

    with pytest.raises(ValueError, match=r"ending in \.parquet or \.jsonl; got .*recording\.csv"):
        load_recording(path)


def test_parquet_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pl.DataFrame({"topic": ["t"], "partition": [0], "offset": [1], "key": [b"k"]}).write_parquet(
        path
    )

    with pytest.raises(ValueError, match=r"bad\.parquet: expected column 'timestamp_ms'"):
        load_recording(path)


def test_parquet_column_of_wrong_type_names_file_column_and_type(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    table = pa.table(
        {
            "topic": ["t"],
            "partition": [0],
            "offset": ["seven"],
            "timestamp_ms": [1],
            "key": [None],
            "value": [b"v"],
        }
    )
    pq.write_table(table, path)

    with pytest.raises(ValueError, match=r"bad\.parquet: expected column 'offset' as Int64; got"):
        load_recording(path)


def test_parquet_other_integer_widths_are_cast(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    pl.DataFrame(
        {
            "topic": ["t"],
            "partition": pl.Series([3], dtype=pl.Int64),
            "offset": pl.Series([9], dtype=pl.UInt32),
            "timestamp_ms": [5],
            "key": [None],
            "value": [b"v"],
            "extra": [1.0],
        }
    ).write_parquet(path)

    df = load_recording(path)

    assert df.schema == SCHEMA
    assert list(iter_messages(df)) == [RawMessage("t", 3, 9, 5, None, b"v")]


def test_jsonl_row_missing_required_field_names_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"topic": "t", "partition": 0, "offset": 0, "timestamp_ms": 1, "value": "v"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "offset": None}) + "\n")

    with pytest.raises(ValueError, match=r"bad\.jsonl: expected field 'offset' .* row 2"):
        load_recording(path)


def test_jsonl_absent_key_and_value_read_as_null(tmp_path: Path) -> None:
    path = tmp_path / "sparse.jsonl"
    path.write_text(json.dumps({"topic": "t", "partition": 0, "offset": 0, "timestamp_ms": 1}))

    assert list(iter_messages(load_recording(path))) == [RawMessage("t", 0, 0, 1, None, None)]


def test_jsonl_field_of_wrong_type_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    row = {"topic": "t", "partition": "zero", "offset": 0, "timestamp_ms": 1}
    path.write_text(json.dumps(row) + "\n")

    with pytest.raises(ValueError, match=r"bad\.jsonl: .*field 'partition' must be Int32"):
        load_recording(path)


def test_jsonl_bad_base64_names_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    row = {"topic": "t", "partition": 0, "offset": 0, "timestamp_ms": 1, "key_b64": "!!"}
    path.write_text(json.dumps(row) + "\n")

    with pytest.raises(ValueError, match=r"bad\.jsonl: expected base64 in 'key_b64'.* row 1"):
        load_recording(path)


GOOD = RawMessage("chain.logs", 0, 0, 1_700_000_000_000, None, b"{}")


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (RawMessage("chain.logs", -1, 1, 1, None, b"{}"), "expected a partition >= 0"),
        (RawMessage("chain.logs", 0, -5, 1, None, b"{}"), "expected an offset >= 0"),
        (RawMessage("", 0, 1, 1, None, b"{}"), "expected a topic name"),
    ],
    ids=["partition-minus-1", "offset-minus-5", "empty-topic"],
)
def test_recording_row_with_partition_minus_1_is_refused_at_load_naming_file_and_row(
    tmp_path: Path, suffix: str, bad: RawMessage, expected: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    write_recording([GOOD, bad], path)

    with pytest.raises(ValueError, match=rf"bad\{suffix}: {expected}; .* the first row 2$"):
        load_recording(path)


def test_parquet_partition_beyond_int32_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    table = pa.table(
        {
            "topic": ["t", "t"],
            "partition": pa.array([0, 2**40], pa.int64()),
            "offset": [0, 1],
            "timestamp_ms": [1, 1],
            "key": pa.array([None, None], pa.binary()),
            "value": [b"v", b"v"],
        }
    )
    pq.write_table(table, path)

    with pytest.raises(ValueError, match=r"bad\.parquet: expected column 'partition' to fit Int32"):
        load_recording(path)


def test_jsonl_field_of_wrong_type_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"topic": "t", "partition": 0, "offset": 0, "timestamp_ms": 1}
    lines = [good, good, {**good, "partition": 2**40}]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))

    with pytest.raises(ValueError, match=r"field 'partition' must be Int32: .* \(line 3\)$"):
        load_recording(path)


def test_jsonl_bad_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = {"topic": "chain.logs", "partition": 0, "offset": 1, "timestamp_ms": 5}
    lines = [json.dumps(good), "", json.dumps({**good, "partition": "zz"})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"r\.jsonl: .*field 'partition'.* \(line 3\)$"):
        load_recording(path)


def test_jsonl_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = {"topic": "chain.logs", "partition": 0, "offset": 1, "timestamp_ms": 5}
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"r\.jsonl: .* \(line 2\)$"):
        load_recording(path)


def test_file_that_is_not_parquet_is_a_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"r\.parquet: expected a Parquet file"):
        load_recording(path)


DUP = RawMessage("chain.logs", 0, 5, 1_700_000_000_000, b"k", b"first")


def test_identical_copies_of_an_offset_are_kept_once_and_counted(tmp_path: Path) -> None:
    write_recording([DUP, *MESSAGES, DUP, DUP], tmp_path / "r.parquet")
    read = read_recording(tmp_path / "r.parquet")
    assert list(iter_messages(read.rows)) == sorted(
        [*MESSAGES, DUP], key=lambda m: (m.topic, m.partition, m.offset)
    )
    assert read.identical == 2
    assert read.conflicting.height == 0


def test_duplicate_offsets_with_different_content_are_left_out_with_every_copy(
    tmp_path: Path,
) -> None:
    other = RawMessage("chain.logs", 0, 5, 1_700_000_000_000, b"k", b"second")
    write_recording([DUP, *MESSAGES, other, DUP], tmp_path / "r.parquet")
    read = read_recording(tmp_path / "r.parquet")
    assert list(iter_messages(read.rows)) == SORTED
    assert list(iter_messages(read.conflicting)) == [DUP, other]  # sorted by all columns
    assert read.identical == 1


_messages = st.lists(
    st.builds(
        RawMessage,
        topic=st.sampled_from(["chain.logs", "dex.quotes"]),
        partition=st.integers(0, 1),
        offset=st.integers(0, 3),
        timestamp_ms=st.just(1_700_000_000_000),
        key=st.none() | st.sampled_from([b"a", b"b"]),
        value=st.sampled_from([b"x", b"y"]),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(messages=_messages, order=st.randoms(use_true_random=False))
def test_repeated_offsets_resolve_the_same_whatever_the_row_order(
    tmp_path_factory: pytest.TempPathFactory, messages: list[RawMessage], order: object
) -> None:
    import random

    assert isinstance(order, random.Random)
    shuffled = messages[:]
    order.shuffle(shuffled)
    directory = tmp_path_factory.mktemp("dups")
    write_recording(messages, directory / "a.parquet")
    write_recording(shuffled, directory / "b.jsonl")
    a, b = read_recording(directory / "a.parquet"), read_recording(directory / "b.jsonl")

    assert a.rows.equals(b.rows) and a.conflicting.equals(b.conflicting)
    assert a.identical == b.identical == len(messages) - len(set(messages))
    coordinates = [(m.topic, m.partition, m.offset) for m in iter_messages(a.rows)]
    assert len(coordinates) == len(set(coordinates)), "one row per offset"
    contents = {}
    for m in set(messages):
        contents.setdefault((m.topic, m.partition, m.offset), set()).add(m)
    assert set(iter_messages(a.rows)) == {next(iter(c)) for c in contents.values() if len(c) == 1}


def test_fingerprint_changes_with_the_contents_not_with_the_place(tmp_path: Path) -> None:
    write_recording(MESSAGES, tmp_path / "a" / "r.parquet")
    write_recording(MESSAGES, tmp_path / "b" / "r.parquet")
    write_recording(MESSAGES[:-1], tmp_path / "c" / "r.parquet")
    a, b, c = (recording_fingerprint(tmp_path / d / "r.parquet") for d in "abc")
    assert a == b != c
    assert recording_fingerprint(tmp_path / "a").startswith("1 file(s), ")
