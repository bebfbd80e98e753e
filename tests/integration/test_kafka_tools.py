"""Topics, publish and record against the embedded broker (Tansu)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from connectors.broker import EmbeddedBroker
from connectors.kafka_tools import RECORDING_NAME, create_topics, publish, record, topic_partitions
from connectors.recording import iter_messages, load_recording
from operators.model import RawMessage


def _topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _messages(topic: str, partitions: int, per_partition: int) -> list[RawMessage]:
    """Messages with a key on even offsets, timestamps that go back now and then."""
    return [
        RawMessage(
            topic,
            p,
            i,
            1_700_000_000_000 + 10 * i + p - (500 if i % 7 == 3 else 0),
            f"k{p}-{i}".encode() if i % 2 == 0 else None,
            f"p{p}-{i}-".encode() + os.urandom(8),
        )
        for i in range(per_partition)
        for p in range(partitions)
    ]


def test_publish_then_record_round_trips_partition_order_offsets_and_timestamps(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = _topic()
    sent = _messages(topic, partitions=3, per_partition=2_000)

    published = publish(sent, broker.connection)
    recorded = record(broker.connection, [topic], tmp_path)
    got = list(iter_messages(load_recording(tmp_path / RECORDING_NAME)))

    assert published == recorded == len(sent)
    assert got == sorted(sent, key=lambda m: (m.partition, m.offset))


def test_record_reads_past_the_end_offset_tansu_lists_for_batched_partitions(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # Many records per produce batch: Tansu's ListOffsets stops at the last batch's start.
    topic = _topic()
    sent = _messages(topic, partitions=1, per_partition=5_000)
    publish(sent, broker.connection)

    recorded = record(broker.connection, [topic], tmp_path)

    assert recorded == len(sent)


def test_record_stops_at_the_end_taken_at_start_and_skips_empty_partitions(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    full, empty = _topic(), _topic()
    create_topics(broker.connection, [empty], partitions=2)
    publish(_messages(full, partitions=2, per_partition=10), broker.connection)

    recorded = record(broker.connection, [full, empty], tmp_path)
    publish(_messages(full, partitions=2, per_partition=10), broker.connection)

    assert recorded == 20
    assert load_recording(tmp_path / RECORDING_NAME)["topic"].unique().to_list() == [full]


def test_publish_with_topic_map_renames_and_creates_enough_partitions(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    source, target = _topic(), _topic()

    publish(
        _messages(source, partitions=4, per_partition=5),
        broker.connection,
        topic_map={source: target},
    )

    assert topic_partitions(broker.connection, [target]) == {target: 4}
    assert record(broker.connection, [target], tmp_path) == 20


def test_publish_at_speed_paces_by_timestamp(broker: EmbeddedBroker) -> None:
    topic = _topic()
    sent = [
        RawMessage(topic, i % 2, i // 2, 1_700_000_000_000 + 1_000 * i, None, b"v")
        for i in range(5)
    ]
    counts: list[int] = []
    acked: list[int] = []

    started = time.monotonic()
    publish(sent, broker.connection, speed=10.0, progress=counts.append, delivered=acked.append)
    elapsed = time.monotonic() - started

    assert counts == [1, 2, 3, 4, 5]
    assert sorted(acked) == [0, 1, 2, 3, 4]  # each acknowledged once
    for partition in (0, 1):  # in order within a partition
        assert [i for i in acked if i % 2 == partition] == list(range(partition, 5, 2))
    assert elapsed >= 0.4  # never early: 4 s of timestamps at 10x (lateness: test_pacing.py)


def test_create_topics_twice_is_fine_and_fewer_partitions_is_an_error(
    broker: EmbeddedBroker,
) -> None:
    topic = _topic()

    create_topics(broker.connection, [topic], partitions=3)
    create_topics(broker.connection, [topic], partitions=3)
    create_topics(broker.connection, [topic], partitions=2)

    assert topic_partitions(broker.connection, [topic]) == {topic: 3}
    with pytest.raises(ValueError, match=rf"at least 5 partitions; got {{'{topic}': 3}}"):
        create_topics(broker.connection, [topic], partitions=5)


def test_topic_partitions_names_a_missing_topic(broker: EmbeddedBroker) -> None:
    missing = _topic()

    with pytest.raises(ValueError, match=rf"missing: \['{missing}'\]"):
        topic_partitions(broker.connection, [missing])


def test_broker_stop_leaves_no_process(tmp_path: Path) -> None:
    log = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        pid = broker.pid
        assert pid is not None
        create_topics(broker.connection, [_topic()], partitions=1)

    assert broker.pid is None
    assert not _alive(pid)
    assert "listening on: tcp://127.0.0.1:" in log.read_text()


def test_broker_dies_with_the_process_that_started_it() -> None:
    script = (
        "from connectors.broker import EmbeddedBroker\n"
        "import time\n"
        "broker = EmbeddedBroker().start()\n"
        "print(broker.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())

    parent.kill()  # SIGKILL: no atexit, no stop()
    parent.wait()

    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_broker_that_exits_at_start_reports_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'cannot start: no memory'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))

    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*cannot start: no memory"):
        EmbeddedBroker(log_path=tmp_path / "tansu.log").start()


def test_broker_that_never_answers_times_out_with_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'still thinking'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", start_timeout_s=0.5)

    with pytest.raises(RuntimeError, match=r"(?s)did not answer .* within 0.5 s.*still thinking"):
        broker.start()
    assert broker.pid is None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
