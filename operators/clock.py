"""Event time, the one clock every stage uses (all times are integer ms since the epoch).

Two levels:

- ``PartitionClock``: one input partition's watermark, its newest event time less the
  allowed lateness (-1 before any event), and its newest broker timestamp. The intakes
  keep one per partition; it depends on the partition's own order only.
- ``Watermarks``: a stage's view of its input partitions, each reporting its watermark,
  its newest broker timestamp and whether it has ended. The stage's watermark is the
  minimum over the partitions that have neither ended nor fallen idle, and ``END_MS``
  once every one has ended: nothing more can arrive.

Plausibility is anchored on each message's own broker timestamp, which a recording keeps,
so it is the same live and in replay: an event time may not be ahead of the moment its
message reached the broker (a block cannot be younger than its ingestion) by more than
``max_future_ms``, and a quote may not be older than it by more than ``max_delay_ms``
(old blocks stay legal: that is a backfill). Neither depends on the partition's history,
so a silence of any length loses nothing, and no single message can move a watermark
further than its own broker timestamp allows.

Idleness (Flink's ``withIdleness``): with ``idle_timeout_ms`` > 0, a partition that has
caught up (nothing more to read: ``RawBatch.caught_up``) and whose newest broker timestamp
is that far behind the newest broker timestamp any partition has reported stops holding
the stage's windows open, until it reports again. An idle partition that resumes with
data for a window already closed meets a correction, not a loss (``operators.oracle``).
A partition with messages still to read is never idle, however far behind its reading
is: so reading a backlog (a restart, a late start, a published recording) gives the rows
of replay, whichever partition is read faster. Idleness is a live decision, taken on what
has arrived by then: a recording's partitions never catch up before their end, so replay
waits for every partition, as a live run does that never meets a silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

END_MS = 2**62
"""The watermark of a stage whose input partitions have all ended."""
MIN_TS_MS = 1_230_768_000_000
"""2009-01-01: no chain or quote event is older."""
MAX_TS_MS = 4_102_444_800_000
"""2100-01-01: no real event is younger."""


def implausible(
    ts_ms: int, broker_ms: int, max_future_ms: int, max_delay_ms: int | None = None
) -> str | None:
    """Why ``ts_ms`` cannot be the event time of a message that reached the broker at
    ``broker_ms``, or ``None``: either outside 2009..2100; the event more than
    ``max_future_ms`` after the broker timestamp; or, given ``max_delay_ms`` (quotes), more
    than that before it."""
    if not MIN_TS_MS <= broker_ms < MAX_TS_MS:
        return f"invalid_ts: broker timestamp {broker_ms} ms is outside 2009..2100"
    if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
        return f"invalid_ts: event time {ts_ms} ms is outside 2009..2100"
    if ts_ms > broker_ms + max_future_ms:
        return (
            f"invalid_ts: event time {ts_ms} ms is more than {max_future_ms} ms after its "
            f"broker timestamp {broker_ms} ms"
        )
    if max_delay_ms is not None and ts_ms < broker_ms - max_delay_ms:
        return (
            f"invalid_ts: event time {ts_ms} ms is more than {max_delay_ms} ms before its "
            f"broker timestamp {broker_ms} ms"
        )
    return None


@dataclass
class PartitionClock:
    """One partition's newest event time and newest broker timestamp (ms), ``None``
    before any."""

    newest_ms: int | None = None
    broker_ms: int = -1
    reported_window: int | None = None
    """The window of the watermark last reported downstream (``report``)."""

    def advance(self, ts_ms: int) -> None:
        """Take a plausible event time (ms) into the partition's newest."""
        if self.newest_ms is None or ts_ms > self.newest_ms:
            self.newest_ms = ts_ms

    def heard(self, broker_ms: int) -> None:
        """Take a plausible message's broker timestamp (ms) into the partition's newest."""
        self.broker_ms = max(self.broker_ms, broker_ms)

    def watermark_ms(self, lateness_ms: int) -> int:
        """The newest event time less ``lateness_ms``; -1 before any event."""
        return -1 if self.newest_ms is None else self.newest_ms - lateness_ms

    def report(self, lateness_ms: int, window_ms: int, eof: bool) -> tuple[int, bool]:
        """The watermark after a batch, and whether downstream must hear of it: it entered
        a new window, or the partition ended (``eof``). Keys a partition has nothing for
        still hear of every window, so their windows close too."""
        wm = self.watermark_ms(lateness_ms)
        window = wm // window_ms
        due = eof or window != self.reported_window
        self.reported_window = window
        return wm, due


@dataclass
class Watermarks:
    """The watermarks reported by a stage's input partitions ``parts`` (ms)."""

    parts: tuple[str, ...]
    reported: dict[str, int] = field(default_factory=dict)
    broker: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    caught_up: set[str] = field(default_factory=set)
    """The partitions whose last batch had caught up. Not kept over a restart
    (``__setstate__``): the resumed run has read nothing yet, and a partition restored
    as caught up while a backlog waits on it would be set aside."""

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.caught_up = set()

    def report(
        self, part: str, watermark_ms: int, eof: bool, broker_ms: int = -1, caught_up: bool = False
    ) -> None:
        """Partition ``part`` has reached ``watermark_ms``, and its newest message reached
        the broker at ``broker_ms``; ``eof``: it has ended; ``caught_up``: it had nothing
        more to read."""
        self.reported[part] = watermark_ms
        self.broker[part] = max(self.broker.get(part, -1), broker_ms)
        if eof:
            self.ended.add(part)
        if caught_up:
            self.caught_up.add(part)
        else:
            self.caught_up.discard(part)

    @property
    def all_ended(self) -> bool:
        return all(part in self.ended for part in self.parts)

    def watermark_ms(self, idle_timeout_ms: int = 0) -> int:
        """The minimum over the partitions still live (-1 for one not yet heard from) and,
        with ``idle_timeout_ms`` > 0, not idle (caught up and silent for that long in broker
        time); ``END_MS`` once every partition has ended."""
        live = [p for p in self.parts if p not in self.ended]
        if not live:
            return END_MS
        if idle_timeout_ms > 0:
            newest = max(self.broker.values(), default=-1)
            busy = [
                p
                for p in live
                if p not in self.caught_up or self.broker.get(p, -1) + idle_timeout_ms > newest
            ]
            if busy:  # the partitions left when the idle ones are set aside
                live = busy
        return min(self.reported.get(p, -1) for p in live)

    def highest_ms(self) -> int:
        """The highest watermark any partition reported (-1 before any report)."""
        return max(self.reported.values(), default=-1)
