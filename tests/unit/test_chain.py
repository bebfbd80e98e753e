"""Following a chain (pure core): order, timestamps, linkage, reorg retraction, ranges."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from operators.chain import (
    ChainError,
    Cursor,
    Header,
    check_range,
    next_range_size,
    publish_range,
    retract_after,
)

ADDRESS = "0x" + "ab" * 20


def h(number: int, fork: str = "a") -> Header:
    return Header(
        number, f"0x{fork}{number:063x}", f"0x{fork}{number - 1:063x}", 1_700_000_000 + number * 12
    )


def rpc_log(number: int, index: int, fork: str = "a", ts: bool = True) -> dict:
    log = {
        "address": ADDRESS.upper().replace("0X", "0x"),
        "topics": ["0x" + "11" * 32],
        "data": "0x",
        "blockNumber": hex(number),
        "blockHash": h(number, fork).hash,
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x0",
        "logIndex": hex(index),
        "removed": False,
    }
    if ts:
        log["blockTimestamp"] = hex(h(number).ts)
    return log


def test_logs_published_in_chain_order_with_timestamp_chain_id_and_sequence() -> None:
    logs = [rpc_log(11, 0), rpc_log(10, 3), rpc_log(10, 1, ts=False)]
    cursor, out = publish_range(Cursor(10), 11, logs, {}, {10: h(10).ts}, 5, 64)
    values = [json.loads(p.value) for p in out]
    assert [(int(v["blockNumber"], 16), int(v["logIndex"], 16)) for v in values] == [
        (10, 1),
        (10, 3),
        (11, 0),
    ]
    assert [p.seq for p in out] == [1, 2, 3]
    assert all(
        v["chainId"] == 5 and v["address"] == ADDRESS and v["removed"] is False for v in values
    )
    assert values[0]["blockTimestamp"] == hex(h(10).ts)
    assert cursor.next_block == 12 and cursor.seq == 3


def test_log_without_any_timestamp_is_an_error() -> None:
    with pytest.raises(ChainError, match="no timestamp for block 10"):
        publish_range(Cursor(10), 10, [rpc_log(10, 0, ts=False)], {}, {}, 1, 64)


def test_log_from_another_branch_than_the_headers_is_an_error() -> None:
    with pytest.raises(ChainError, match="another branch"):
        publish_range(Cursor(10), 10, [rpc_log(10, 0, fork="b")], {10: h(10)}, {}, 1, 64)


def test_recent_blocks_are_kept_up_to_reorg_depth() -> None:
    headers = {n: h(n) for n in range(10, 20)}
    cursor, _ = publish_range(Cursor(10), 19, [rpc_log(18, 0)], headers, {}, 1, 4)
    assert sorted(cursor.recent) == [16, 17, 18, 19]
    assert len(cursor.recent[18][1]) == 1


def test_range_must_link_to_published_blocks() -> None:
    cursor, _ = publish_range(Cursor(10), 10, [], {10: h(10)}, {}, 1, 64)
    check_range({11: h(11)}, cursor)
    with pytest.raises(ChainError, match="does not link"):
        check_range({11: h(11, fork="b")}, cursor)


def test_reorg_retracts_orphaned_logs_newest_first_then_resumes_after_fork() -> None:
    headers = {n: h(n) for n in range(10, 14)}
    logs = [rpc_log(11, 0), rpc_log(12, 0), rpc_log(12, 1), rpc_log(13, 0)]
    cursor, published = publish_range(Cursor(10), 13, logs, headers, {}, 1, 64)

    cursor, retracted = retract_after(cursor, fork=11)

    removed = [json.loads(p.value) for p in retracted]
    assert [(v["blockNumber"], v["logIndex"], v["removed"]) for v in removed] == [
        (hex(13), hex(0), True), (hex(12), hex(1), True), (hex(12), hex(0), True),
    ]  # fmt: skip
    assert [p.seq for p in retracted] == [5, 6, 7]
    assert cursor.next_block == 12 and sorted(cursor.recent) == [10, 11]
    before = {
        (v["blockNumber"], v["logIndex"]): v for v in (json.loads(p.value) for p in published)
    }
    assert all(r == {**before[(r["blockNumber"], r["logIndex"])], "removed": True} for r in removed)


@pytest.mark.parametrize(
    ("size", "refused", "seconds", "expected"),
    [(1000, True, 0.0, 500), (1, True, 0.0, 1), (1000, False, 0.1, 2000), (1500, False, 0.1, 2000),
     (1000, False, 1.0, 1000), (1000, False, 5.0, 500)],
)  # fmt: skip
def test_range_halves_when_refused_or_slow_and_doubles_when_fast(
    size: int, refused: bool, seconds: float, expected: int
) -> None:
    assert (
        next_range_size(size, refused=refused, seconds=seconds, cfg_min=1, cfg_max=2000) == expected
    )


def test_range_ends_with_a_progress_marker_for_every_partition() -> None:
    cursor, out = publish_range(
        Cursor(10), 11, [rpc_log(10, 0)], {}, {}, 5, 64, end_ts=1_700_000_132
    )
    marker = out[-1]
    assert marker.key == "" and marker.seq == cursor.seq == 2
    expected = {"progress": True, "blockNumber": hex(11), "blockTimestamp": hex(1_700_000_132)}
    assert json.loads(marker.value) == {**expected, "chainId": 5}


def test_published_messages_carry_their_block_time_in_ms() -> None:
    cursor, out = publish_range(Cursor(10), 11, [rpc_log(10, 0)], {}, {}, 5, 64, end_ts=h(11).ts)
    assert [p.ts_ms for p in out] == [h(10).ts * 1000, h(11).ts * 1000]
    _, retracted = retract_after(replace(cursor, recent={10: ("0x", (out[0].value,))}), 9)
    assert retracted[0].ts_ms == h(10).ts * 1000


def test_resume_reads_the_topics_last_sequence_numbers_until_late_writes_have_landed() -> None:
    from flows.ingest import _settled

    reads = iter([{0: b"10"}, {0: b"12"}, {0: b"14"}, {0: b"14"}, {0: b"99"}])
    assert _settled(lambda: next(reads), pause_s=0.0) == {0: b"14"}
