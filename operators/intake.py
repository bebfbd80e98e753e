"""The oracle's intake of one input partition: decode, judge event time, route, count.

The partition's watermark (``operators.clock.PartitionClock``) is its newest event time
less the allowed lateness (ms). An event whose window ends at or before the watermark its
partition had reached is late: it goes to the deadletter (a retraction is marked late and
becomes a correction). That judgement depends on the partition's own order only, so it is
the same live, in replay and with any number of workers. Whenever the watermark enters a
new window, every asset hears of it, so windows close even for assets this partition has
no data for.

With a tick cadence (``ticks``), the partition also keeps a tick watermark
(``operators.ticks``): on ``chain.logs`` its last progress marker's block time (a block is
complete once its marker arrived) or its watermark when later; on ``dex.quotes`` its
watermark (the lateness rule). Each item carries the tick watermark it arrived at, and
every asset hears of the tick watermark whenever it moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msgspec.structs import replace

from operators.clock import PartitionClock, implausible
from operators.decode import Decoder
from operators.model import (
    AssetBatch,
    ChainProgress,
    Observation,
    OptionQuote,
    PartitionStats,
    RawBatch,
    Rejected,
    Retraction,
)

STAGE = "intake"


@dataclass(frozen=True, kw_only=True)
class IntakeParams:
    """Window length, allowed lateness and the plausibility bounds, all in ms; the assets
    the oracle publishes."""

    window_ms: int
    lateness_ms: int
    max_future_ms: int
    """How far an event time may be after its message's broker timestamp."""
    max_quote_delay_ms: int
    """How far a quote's ``ts`` may be before its message's broker timestamp."""
    assets: tuple[str, ...]
    ticks: bool = False
    """Whether the oracle publishes ticks besides its windows (``oracle.cadence``)."""


@dataclass(frozen=True)
class IntakeOut:
    """What one batch of a partition gives: per-asset batches, rejects, and the counts
    (``stats``) when the watermark entered a new window or the partition ended."""

    batches: list[tuple[str, AssetBatch]]
    rejects: list[Rejected]
    stats: PartitionStats | None


@dataclass(frozen=True)
class Refusal:
    """Why an event time is refused; ``late`` when only its window had closed."""

    reason: str
    late: bool


@dataclass(kw_only=True)
class PartitionIntake:
    """The state of one input partition: its clock and its counts."""

    part: str
    clock: PartitionClock = field(default_factory=PartitionClock)
    messages: int = 0
    observations: int = 0
    retractions: int = 0
    skipped: int = 0
    rejected: int = 0
    late: int = 0
    marker_ms: int = -1
    """The block time of the partition's last progress marker (ms), -1 before any."""
    reported_tick_ms: int | None = None
    """The tick watermark last sent to every asset."""
    caught_up: bool = False
    """Whether the partition's last batch had caught up, as last sent to every asset (an
    empty batch that has caught up is sent again: after a restart the oracle's state
    has forgotten it, ``operators.clock.Watermarks``)."""

    def tick_watermark_ms(self, quotes: bool, lateness_ms: int) -> int:
        """How far ticks may go as far as this partition goes (ms): a quote partition's
        watermark; a ``chain.logs`` one's last progress marker, or its watermark if later."""
        wm = self.clock.watermark_ms(lateness_ms)
        return wm if quotes else max(wm, self.marker_ms)

    def on_batch(self, batch: RawBatch, decoder: Decoder, p: IntakeParams) -> IntakeOut:
        """Decode a batch in offset order; route observations to their assets."""
        rejects: list[Rejected] = []
        routed: dict[str, list[Observation | Retraction]] = {}
        seen: dict[str, list[int]] = {}
        blocks: list[int] = []
        quotes = batch.topic == decoder.dex_quotes_topic
        for msg in batch.messages:
            self.messages += 1
            try:
                item = decoder.decode(msg)
            except Exception as exc:  # a bug: the message goes to the deadletter, the flow on
                item = Rejected.of(STAGE, f"internal_error: {type(exc).__name__}: {exc}", msg)
            if item is None or isinstance(item, OptionQuote):  # not for the oracle
                self.skipped += 1
                continue
            if isinstance(item, Rejected):
                self.rejected += 1
                rejects.append(item)
                continue
            quote = msg.topic == decoder.dex_quotes_topic
            refusal = self._judge(item, msg.timestamp_ms, quote, p)
            if refusal is not None:
                if isinstance(item, Retraction) and refusal.late:
                    item = replace(item, late=True)
                else:
                    self.late += refusal.late
                    self.rejected += 1
                    rejects.append(Rejected.of(STAGE, refusal.reason, msg))
                    continue
            self.clock.heard(msg.timestamp_ms)
            if isinstance(item, ChainProgress):  # moves the watermarks, nothing else
                self.skipped += 1
                self.clock.advance(item.ts_ms)
                if p.ticks and item.ts_ms > self.marker_ms:
                    self.marker_ms = item.ts_ms
                    blocks.append(item.ts_ms)
                continue
            tick_wm = self.tick_watermark_ms(quotes, p.lateness_ms) if p.ticks else -1
            if isinstance(item, Observation):
                self.observations += 1
                self.clock.advance(item.ts_ms)
            else:
                self.retractions += 1
            for asset in decoder.registry.destinations(item.base, item.quote):
                routed.setdefault(asset, []).append(item)
                if p.ticks:
                    seen.setdefault(asset, []).append(tick_wm)

        wm, marker = self.clock.report(p.lateness_ms, p.window_ms, batch.eof)
        broker = self.clock.broker_ms
        tick_wm, tick_moved = -1, False
        if p.ticks:
            tick_wm = self.tick_watermark_ms(quotes, p.lateness_ms)
            tick_moved = tick_wm != self.reported_tick_ms
            self.reported_tick_ms = tick_wm
        caught_moved = batch.caught_up != self.caught_up or batch.catching_up
        self.caught_up = batch.caught_up
        batches = []
        for asset in p.assets:
            if asset in routed or marker or tick_moved or caught_moved:
                items, arrived = routed.get(asset, []), seen.get(asset, [])
                ab = AssetBatch(
                    self.part, wm, batch.eof, items, broker, tick_wm, blocks, arrived,
                    batch.caught_up,
                )  # fmt: skip
                batches.append((asset, ab))
        stats = None
        if marker:
            stats = self.stats(batch.messages[-1].timestamp_ms if batch.messages else None)
        return IntakeOut(batches, rejects, stats)

    def _judge(
        self,
        item: Observation | Retraction | ChainProgress,
        broker_ms: int,
        quote: bool,
        p: IntakeParams,
    ) -> Refusal | None:
        """An implausible event time (anchored on the message's broker timestamp; a quote
        may not be far older than it either), else a late one (its window had ended at
        the partition's watermark; progress markers are never late)."""
        delay_ms = p.max_quote_delay_ms if quote else None
        reason = implausible(item.ts_ms, broker_ms, p.max_future_ms, delay_ms)
        if reason is not None:
            return Refusal(reason, late=False)
        if isinstance(item, ChainProgress):
            return None
        window_end = (item.ts_ms // p.window_ms + 1) * p.window_ms
        wm = self.clock.watermark_ms(p.lateness_ms)
        if window_end <= wm:
            reason = f"late: window ending {window_end} ms closed at partition watermark {wm} ms"
            return Refusal(reason, late=True)
        return None

    def stats(self, fallback_ts_ms: int | None) -> PartitionStats | None:
        """Counts so far, at the newest event time (else the last message's timestamp)."""
        ts = self.clock.newest_ms if self.clock.newest_ms is not None else fallback_ts_ms
        if ts is None:
            return None
        return PartitionStats(
            part=self.part,
            ts_event_ms=ts,
            messages=self.messages,
            observations=self.observations,
            retractions=self.retractions,
            skipped=self.skipped,
            rejected=self.rejected,
            late=self.late,
        )


def intake_step(
    state: PartitionIntake | None, batch: RawBatch, *, decoder: Decoder, params: IntakeParams
) -> tuple[PartitionIntake, IntakeOut]:
    """The keyed step of the intake (one key per input partition)."""
    if state is None:
        state = PartitionIntake(part=batch.part)
    return state, state.on_batch(batch, decoder, params)
