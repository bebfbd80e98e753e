"""The seeded mutation fuzzer over real messages (``conftest.Mutator``) through both stages'
cores. ``make test`` runs 100k mutated messages; ``make fuzz`` runs 1M
(``HEDGEFLOW_FUZZ_MESSAGES``) and prints the figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq

from connectors.parquet_sink import ParquetSink, arrow_schema
from operators.model import Rejected

MESSAGES = int(os.environ.get("HEDGEFLOW_FUZZ_MESSAGES", "100000"))
CHUNK = 50_000
"""Messages per run of the harness (each a fresh set of partitions, from its own seed)."""


def test_mutated_real_messages_raise_nothing_and_every_reject_reaches_the_deadletter(
    fuzz: Any, tmp_path: Path
) -> None:
    tally = fuzz.tally()
    for chunk, start in enumerate(range(0, MESSAGES, CHUNK)):
        messages = fuzz.mutator(chunk).messages(min(CHUNK, MESSAGES - start))
        fuzz.harness.run(messages, tally)
        _write_deadletter(tally.deadletter, tmp_path, chunk)
        tally.deadletter.clear()
    print(tally.summary())

    assert tally.messages == MESSAGES
    assert tally.escaped == [], tally.escaped[0]
    assert tally.guarded == [], tally.guarded[:5]
    assert tally.unaccounted == [], tally.unaccounted[:5]
    assert tally.found == tally.rejected > MESSAGES // 10, tally.summary()
    assert tally.used > MESSAGES // 20, "the mutations leave too little usable to fuzz deep"


def _write_deadletter(rejects: list[Rejected], root: Path, chunk: int) -> None:
    """Every reject is a valid deadletter row: JSON for Kafka, and Parquet."""
    for r in rejects:
        msgspec.json.encode(r)
        code, sep, _ = r.reason.partition(": ")
        assert sep and code.isidentifier() and code.islower(), r.reason
    sink = ParquetSink(root, "deadletter", arrow_schema(Rejected), msgspec.structs.asdict,
                       "timestamp_ms")  # fmt: skip
    part = sink.build_part("fuzz", str(chunk), None)
    part.write_batch(rejects)
    part.close()
    assert sum(pq.read_table(f).num_rows for f in (root / "deadletter").glob(
        f"date=*/part-{chunk}-*.parquet")) == len(rejects)  # fmt: skip
