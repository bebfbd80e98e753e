"""The one clock: per-partition watermarks, partitions that ended, the minimum of the rest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from operators.clock import END_MS, MAX_TS_MS, MIN_TS_MS, PartitionClock, Watermarks, implausible

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
    broker = MIN_TS_MS + 1_000_000
    assert implausible(broker + 20, broker, max_future_ms=100) is None
    assert implausible(MIN_TS_MS + 5, broker, max_future_ms=100) is None  # a backfill
    assert "after its broker" in (implausible(broker + 200, broker, max_future_ms=100) or "")
    assert "before its broker" in (implausible(broker - 200, broker, 100, max_delay_ms=100) or "")
    assert "2009..2100" in (implausible(MAX_TS_MS, MAX_TS_MS - 1, max_future_ms=2**62) or "")
    assert "broker timestamp" in (implausible(broker, 5, max_future_ms=100) or "")


@given(
    st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70), st.integers(0, 10**9),
    st.one_of(st.none(), st.integers(0, 10**9)),
)  # fmt: skip
def test_a_plausible_event_time_lies_within_its_broker_timestamps_bounds(
    ts, broker, future, delay
) -> None:
    if implausible(ts, broker, future, delay) is None:
        assert MIN_TS_MS <= ts < MAX_TS_MS and ts <= broker + future
        assert delay is None or ts >= broker - delay


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=5), st.integers(1, 10**9))
def test_an_idle_partition_stops_holding_the_watermark(broker_times, timeout) -> None:
    wm = Watermarks(("0-a", "1-a"))
    wm.report("0-a", 100, eof=False, broker_ms=0, caught_up=True)
    for b in broker_times:
        wm.report("1-a", 10**6 + b, eof=False, broker_ms=b)
    newest = max(broker_times)
    held = wm.watermark_ms(idle_timeout_ms=timeout)
    assert held == (100 if newest < timeout else 10**6 + broker_times[-1])
    assert wm.watermark_ms() == 100  # without idleness the quiet partition holds it


@given(
    st.lists(  # reports: partition, watermark, broker time, caught up
        st.tuples(
            st.integers(0, 2), st.integers(-1, 10**6), st.integers(-1, 10**12), st.booleans()
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 10**9),
)
def test_a_partition_with_messages_still_to_read_is_never_set_aside(reports, timeout) -> None:
    """However far behind its reading is (a backlog read slower than the others), a
    partition that has not caught up holds the watermark: reading a backlog gives replay's
    rows whichever partition is read faster."""
    parts = ("0-a", "1-a", "2-a")
    wm = Watermarks(parts)
    for part, mark, broker, caught_up in reports:
        wm.report(parts[part], mark, eof=False, broker_ms=broker, caught_up=caught_up)
        behind = [wm.reported.get(p, -1) for p in parts if p not in wm.caught_up]
        assert wm.watermark_ms(idle_timeout_ms=timeout) <= min(behind, default=1 << 62)
        assert wm.watermark_ms(idle_timeout_ms=timeout) >= wm.watermark_ms()
