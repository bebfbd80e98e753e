"""Intake of one input partition: decode, judge lateness, route to assets, count.

The partition's watermark is its newest event time less the allowed lateness (ms). An
event whose window ends at or before the watermark its partition had reached is late:
it goes to the deadletter (a retraction is marked late and becomes a correction). That
judgement depends on the partition's own order only, so it is the same live, in replay
and with any number of workers. Whenever the watermark enters a new window, every asset
hears of it, so windows close even for assets this partition has no data for.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgspec.structs import replace

from operators.accounts import shard_of
from operators.decode import Decoder
from operators.model import (
    AssetBatch,
    ChainProgress,
    Observation,
    OptionQuote,
    PartitionStats,
    RawBatch,
    RawMessage,
    Rejected,
    Retraction,
)
from operators.venue import InstrumentListed, VenueBatch, VenueEvent, decode_venue

STAGE = "intake"
MIN_TS_MS = 1_230_768_000_000
"""2009-01-01: no chain or quote event is older."""
MAX_TS_MS = 4_102_444_800_000
"""2100-01-01: no real event is younger."""

IntakeOut = tuple[str, AssetBatch] | tuple[str, VenueBatch] | Rejected | PartitionStats


@dataclass(frozen=True)
class IntakeParams:
    """Window length, allowed lateness and how far ahead an event may be, all in ms.

    ``venue`` (an address) turns on routing the venue's events to ``shards`` risk shards.
    """

    window_ms: int
    lateness_ms: int
    max_future_ms: int
    assets: tuple[str, ...]
    venue: str | None = None
    shards: int = 1

    @property
    def shard_keys(self) -> tuple[str, ...]:
        return tuple(f"shard-{i}" for i in range(self.shards)) if self.venue else ()


@dataclass
class PartitionIntake:
    """The state of one input partition: its newest event time and its counts."""

    part: str
    max_ts_ms: int | None = None
    marker_window: int | None = None
    messages: int = 0
    observations: int = 0
    retractions: int = 0
    skipped: int = 0
    rejected: int = 0
    late: int = 0

    def _advance(self, ts_ms: int) -> None:
        """Take an event time (ms) into the partition's newest."""
        if self.max_ts_ms is None or ts_ms > self.max_ts_ms:
            self.max_ts_ms = ts_ms

    def watermark_ms(self, p: IntakeParams) -> int:
        """The newest event time less the allowed lateness; -1 before any event."""
        return -1 if self.max_ts_ms is None else self.max_ts_ms - p.lateness_ms

    def on_batch(self, batch: RawBatch, decoder: Decoder, p: IntakeParams) -> list[IntakeOut]:
        """Decode a batch in offset order; return routed items, rejects and stats."""
        out: list[IntakeOut] = []
        routed: dict[str, list[Observation | Retraction]] = {}
        venue_events: dict[str, list[VenueEvent | OptionQuote]] = {}
        venue_key = p.venue.encode() if p.venue else None
        for msg in batch.messages:
            self.messages += 1
            if p.venue and msg.key == venue_key:
                self._venue(decode_venue(msg, p.venue), p, venue_events, out)
                continue
            item = decoder.decode(msg)
            if isinstance(item, ChainProgress):  # moves the watermark, nothing else
                self.skipped += 1
                self._advance(item.ts_ms)
                continue
            if isinstance(item, OptionQuote):
                if p.venue:
                    self._venue(item, p, venue_events, out)
                    continue
                item = None  # no risk engine to use it
            if item is None:
                self.skipped += 1
                continue
            if isinstance(item, Rejected):
                self.rejected += 1
                out.append(item)
                continue
            reason = self._judge(item.ts_ms, isinstance(item, Observation), p)
            if reason is not None:
                if isinstance(item, Retraction) and reason.startswith("late"):
                    item = replace(item, late=True)
                else:
                    self.late += reason.startswith("late")
                    self.rejected += 1
                    out.append(_reject(msg, reason))
                    continue
            if isinstance(item, Observation):
                self.observations += 1
                self._advance(item.ts_ms)
            else:
                self.retractions += 1
            for asset in decoder.registry.destinations(item.base, item.quote):
                routed.setdefault(asset, []).append(item)

        wm = self.watermark_ms(p)
        window = wm // p.window_ms
        marker = batch.eof or window != self.marker_window
        self.marker_window = window
        for asset in p.assets:
            items = routed.get(asset)
            if items or marker:
                out.append((asset, AssetBatch(self.part, wm, batch.eof, items or [])))
        for shard in p.shard_keys:
            events = venue_events.get(shard)
            if events or marker:
                out.append((shard, VenueBatch(self.part, wm, batch.eof, events or [])))
        if marker:
            stats = self.stats(batch.messages[-1].timestamp_ms if batch.messages else None)
            if stats is not None:
                out.append(stats)
        return out

    def _venue(
        self, event: VenueEvent | OptionQuote | Rejected | None, p: IntakeParams,
        routed: dict[str, list[VenueEvent | OptionQuote]], out: list[IntakeOut],
    ) -> None:  # fmt: skip
        """Route a venue event to its shard (a listing or an option quote to all of them).

        Nothing is dropped: an event behind its partition's watermark (a reorg's
        retraction, say) takes effect at the watermark, at the next evaluation.
        """
        if event is None:
            self.skipped += 1
            return
        if isinstance(event, Rejected):
            self.rejected += 1
            out.append(event)
            return
        wm = self.watermark_ms(p)
        if event.ts_ms <= wm:
            self.late += 1
            event = replace(event, ts_ms=wm + 1)
        elif isinstance(event, OptionQuote) or not event.removed:
            self._advance(event.ts_ms)
        if isinstance(event, InstrumentListed | OptionQuote):
            shards: tuple[str, ...] = p.shard_keys
        else:
            shards = (f"shard-{shard_of(event.account, p.shards)}",)
        for shard in shards:
            routed.setdefault(shard, []).append(event)

    def _judge(self, ts_ms: int, is_observation: bool, p: IntakeParams) -> str | None:
        if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
            return f"invalid_ts: event time {ts_ms} ms is outside 2009..2100"
        newest = self.max_ts_ms
        if is_observation and newest is not None and ts_ms > newest + p.max_future_ms:
            return (
                f"invalid_ts: event time {ts_ms} ms is more than {p.max_future_ms} ms "
                f"ahead of its partition's newest {newest} ms"
            )
        window_end = (ts_ms // p.window_ms + 1) * p.window_ms
        wm = self.watermark_ms(p)
        if window_end <= wm:
            return f"late: window ending {window_end} ms closed at partition watermark {wm} ms"
        return None

    def stats(self, fallback_ts_ms: int | None) -> PartitionStats | None:
        """Counts so far, at the newest event time (else the last message's timestamp)."""
        ts = self.max_ts_ms if self.max_ts_ms is not None else fallback_ts_ms
        if ts is None:
            return None
        return PartitionStats(
            self.part, ts, self.messages, self.observations, self.retractions,
            self.skipped, self.rejected, self.late,
        )  # fmt: skip


def _reject(msg: RawMessage, reason: str) -> Rejected:
    return Rejected(
        STAGE, reason, msg.topic, msg.partition, msg.offset, msg.timestamp_ms, msg.key, msg.value
    )
