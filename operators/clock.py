"""Event time, the one clock every stage uses (all times are integer ms since the epoch).

Two levels:

- ``PartitionClock``: one input partition's watermark, its newest event time less the
  allowed lateness (-1 before any event). The intakes keep one per partition; it depends
  on the partition's own order only.
- ``Watermarks``: a stage's view of its input partitions, each reporting its watermark
  and whether it has ended. The stage's watermark is the minimum over the partitions
  that have not ended, and ``END_MS`` once every one has: nothing more can arrive.

Because both depend on each partition's own order, never on how partitions interleave,
live Kafka, replay and any number of workers see the same watermarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

END_MS = 2**62
"""The watermark of a stage whose input partitions have all ended."""
MIN_TS_MS = 1_230_768_000_000
"""2009-01-01: no chain or quote event is older."""
MAX_TS_MS = 4_102_444_800_000
"""2100-01-01: no real event is younger."""


@dataclass
class PartitionClock:
    """One partition's newest event time (ms), ``None`` before any event."""

    newest_ms: int | None = None
    reported_window: int | None = None
    """The window of the watermark last reported downstream (``report``)."""

    def advance(self, ts_ms: int) -> None:
        """Take an event time (ms) into the partition's newest."""
        if self.newest_ms is None or ts_ms > self.newest_ms:
            self.newest_ms = ts_ms

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

    def implausible(self, ts_ms: int, max_future_ms: int) -> str | None:
        """Why ``ts_ms`` cannot be a real event time here, or ``None``: outside 2009..2100,
        or more than ``max_future_ms`` ahead of the partition's newest event."""
        if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
            return f"invalid_ts: event time {ts_ms} ms is outside 2009..2100"
        newest = self.newest_ms
        if newest is not None and ts_ms > newest + max_future_ms:
            return (
                f"invalid_ts: event time {ts_ms} ms is more than {max_future_ms} ms "
                f"ahead of its partition's newest {newest} ms"
            )
        return None


@dataclass
class Watermarks:
    """The watermarks reported by a stage's input partitions ``parts`` (ms)."""

    parts: tuple[str, ...]
    reported: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)

    def report(self, part: str, watermark_ms: int, eof: bool) -> None:
        """Partition ``part`` has reached ``watermark_ms``; ``eof``: it has ended."""
        self.reported[part] = watermark_ms
        if eof:
            self.ended.add(part)

    @property
    def all_ended(self) -> bool:
        return all(part in self.ended for part in self.parts)

    def watermark_ms(self) -> int:
        """The minimum over the partitions still live (-1 for one not yet heard from);
        ``END_MS`` once every partition has ended."""
        live = [self.reported.get(p, -1) for p in self.parts if p not in self.ended]
        return min(live) if live else END_MS

    def highest_ms(self) -> int:
        """The highest watermark any partition reported (-1 before any report)."""
        return max(self.reported.values(), default=-1)
