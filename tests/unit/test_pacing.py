"""``publish(speed=...)``'s pacing: every message goes out in order, never before it is due,
and without spinning: the wait it asks for is never shorter than the producer's ``poll``
can wait (whole ms), so a burst of messages 100 µs apart costs a few waits, not a busy
loop (the block-latency bench's publisher once took a full core for 10k messages/s).

The clock is simulated: ``poll(s)`` there behaves like librdkafka's, which waits
``int(s * 1000)`` ms, returning at once below 1 ms.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.kafka_tools import PACE_WAIT_MIN_S, _paced
from operators.model import RawMessage


class _Clock:
    """Simulated time (s): ``poll`` advances it by whole ms, as librdkafka's does."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def poll(self, timeout_s: float) -> None:
        self.waits.append(timeout_s)
        waited_ms = int(timeout_s * 1000)
        assert waited_ms > 0, f"poll({timeout_s}) returns at once: the pacing loop spins"
        self.now += waited_ms / 1000


def _messages(gaps_us: list[int]) -> list[RawMessage]:
    out, t_us = [], 1_700_000_000_000_000
    for i, gap in enumerate(gaps_us):
        t_us += gap
        out.append(RawMessage("t", 0, i, t_us // 1000, None, b"x"))
    return out


@given(
    gaps_us=st.lists(st.integers(0, 5_000), min_size=1, max_size=300),
    speed=st.sampled_from([0.5, 1.0, 2.0, 10.0]),
)
def test_paced_messages_go_in_order_never_early_and_every_wait_is_a_whole_poll(
    gaps_us: list[int], speed: float
) -> None:
    msgs = _messages(gaps_us)
    clock = _Clock()
    start = clock.now
    sent = []
    for m in _paced(msgs, speed, clock.poll, clock):
        sent.append((m, clock.now))
    assert [m for m, _ in sent] == msgs
    first_ms = msgs[0].timestamp_ms
    for m, at in sent:
        due = start + (m.timestamp_ms - first_ms) / 1000 / speed
        assert at >= due - 1e-9
        assert at < due + PACE_WAIT_MIN_S + 1e-9  # late by less than one poll
    span_ms = (msgs[-1].timestamp_ms - first_ms) / speed
    assert len(clock.waits) <= span_ms + 1  # each wait moves the clock by >= 1 ms
