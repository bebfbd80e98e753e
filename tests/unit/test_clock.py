"""The one clock: per-partition watermarks, partitions that ended, the minimum of the rest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from operators.clock import END_MS, MAX_TS_MS, MIN_TS_MS, PartitionClock, Watermarks

PARTS = ("0-a", "1-a", "0-b")
REPORTS = st.lists(
    st.tuples(st.sampled_from(PARTS), st.integers(-1, 10**12), st.booleans()), max_size=30
)


@given(REPORTS, st.randoms())
def test_stage_watermark_is_the_minimum_of_the_live_partitions_whatever_the_interleaving(
    reports, rnd
) -> None:
    wm = Watermarks(PARTS)
    for part, value, eof in reports:
        wm.report(part, value, eof)
    last = {part: value for part, value, _ in reports}
    ended = {part for part, _, eof in reports if eof}
    live = [last.get(p, -1) for p in PARTS if p not in ended]
    assert wm.watermark_ms() == (min(live) if live else END_MS)
    # Another interleaving of the partitions (each keeping its own order) agrees.
    shuffled = Watermarks(PARTS)
    queues = {p: [r for r in reports if r[0] == p] for p in PARTS}
    while any(queues.values()):
        part = rnd.choice([p for p in PARTS if queues[p]])
        shuffled.report(*queues[part].pop(0))
    assert shuffled.watermark_ms() == wm.watermark_ms()


def test_watermark_is_end_only_once_every_partition_has_ended() -> None:
    wm = Watermarks(("0-a", "1-a"))
    wm.report("0-a", 500, eof=True)
    assert wm.watermark_ms() == -1 and not wm.all_ended  # 1-a not heard from yet
    wm.report("1-a", 700, eof=True)
    assert wm.watermark_ms() == END_MS and wm.highest_ms() == 700


@given(st.lists(st.integers(MIN_TS_MS, MAX_TS_MS - 1), min_size=1), st.integers(0, 10**6))
def test_partition_watermark_is_newest_event_less_lateness(times, lateness) -> None:
    clock = PartitionClock()
    assert clock.watermark_ms(lateness) == -1
    for ts in times:
        clock.advance(ts)
    assert clock.watermark_ms(lateness) == max(times) - lateness


def test_implausible_times_name_the_reason() -> None:
    clock = PartitionClock(newest_ms=MIN_TS_MS + 10)
    assert clock.implausible(MIN_TS_MS + 20, max_future_ms=100) is None
    assert "ahead" in (clock.implausible(MIN_TS_MS + 200, max_future_ms=100) or "")
    assert "2009..2100" in (clock.implausible(MAX_TS_MS, max_future_ms=2**62) or "")
