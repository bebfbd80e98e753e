"""What ``hedgeflow replay`` checks and reports about its recording before the flow starts.

- The recording is read once here, so a bad file stops the command at start with a
  message naming the file (and, in JSONL, the line) instead of failing inside the flow.
- Offsets recorded twice with different contents (``connectors.recording.read_recording``
  leaves them out) are written to ``deadletter/`` (stage ``recording``, reason
  ``duplicate_offset``), each copy a row, in a file of their own.
- Rows of topics the configuration does not name are not replayed: they are counted,
  logged, and shown in the summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.parquet_sink import arrow_schema
from connectors.recording import iter_messages, read_recording
from operators.config import ConfigError
from operators.model import RawMessage, Rejected

log = logging.getLogger("hedgeflow.replay")

STAGE = "recording"
REJECTS_FILE = "part-recording-00000000.parquet"
"""The ``deadletter/`` file of each day that holds the recording's own rejects."""


@dataclass(frozen=True)
class ReplayInput:
    """What the recording holds besides the messages replayed."""

    unread: dict[str, int]
    """Rows per topic the configuration does not name (not replayed)."""
    rejects: list[Rejected]
    """Every copy of an offset recorded with different contents."""
    identical: int
    """Identical repeated rows, replayed once."""


def check_recording(recording: Path, topics: set[str]) -> ReplayInput:
    """Read ``recording``; say what of it is not replayed. ``topics``: the ones replayed.

    A recording that cannot be read is a ``ConfigError`` naming the file.
    """
    try:
        read = read_recording(recording)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    counts = read.rows.group_by("topic").len().sort("topic")
    unread = {t: n for t, n in counts.iter_rows() if t not in topics}
    if unread:
        log.warning(
            "%d rows of topics the configuration does not name are not replayed: %s",
            sum(unread.values()), unread,
        )  # fmt: skip
    copies: dict[tuple[str, int, int], int] = {}
    for msg in iter_messages(read.conflicting):
        where = (msg.topic, msg.partition, msg.offset)
        copies[where] = copies.get(where, 0) + 1
    rejects = [
        Rejected.of(STAGE, _duplicate_reason(msg, copies), msg)
        for msg in iter_messages(read.conflicting)
    ]
    if rejects:
        log.warning(
            "%d rows repeat %d offsets with different contents: sent to the deadletter",
            len(rejects), len(copies),
        )  # fmt: skip
    if read.identical:
        log.warning("%d identical repeated rows are replayed once", read.identical)
    return ReplayInput(unread, rejects, read.identical)


def write_rejects(rejects: list[Rejected], out_dir: Path) -> None:
    """Write ``rejects`` to ``out_dir/deadletter/``, per UTC day of their timestamp, each
    day in a :data:`REJECTS_FILE` (written again, the same, by a resumed run)."""
    if not rejects:
        return
    schema = arrow_schema(Rejected)
    table = pa.Table.from_pylist([_row(r) for r in rejects], schema=schema)
    days = pl.from_epoch(pl.Series(table["timestamp_ms"]), time_unit="ms").dt.strftime("%Y-%m-%d")
    for day in days.unique().sort():
        path = out_dir / "deadletter" / f"date={day}" / REJECTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(table.filter(pa.array((days == day).to_list())), tmp)
        tmp.replace(path)


def _duplicate_reason(msg: RawMessage, copies: dict[tuple[str, int, int], int]) -> str:
    n = copies[(msg.topic, msg.partition, msg.offset)]
    return (
        f"duplicate_offset: {n} different copies of {msg.topic}[{msg.partition}] offset "
        f"{msg.offset}; none is replayed"
    )


def _row(r: Rejected) -> dict[str, object]:
    return msgspec.structs.asdict(r)
