"""The risk stage's intake of one input partition: the venue's events, option quotes,
and the oracle's prices and progress, routed to the account shards.

The partitions of ``chain.logs`` and ``dex.quotes`` carry event time: each keeps a
``PartitionClock`` advanced by every plausible event time it carries (venue events,
progress markers, other logs' ``blockTimestamp``, quotes' ``ts``), and its watermark goes
to every shard whenever it enters a new window, so shards evaluate even where no venue
event arrives. A venue event behind its partition's watermark (a reorg's retraction, say)
is not dropped: it takes effect at the watermark, at the next evaluation.

With ``ticks`` (``oracle.cadence`` other than ``window``) the shards evaluate at every
block: a ``chain.logs`` partition's watermark is then its last progress marker's block
time (the block is complete), or its newest time less the lateness when later, and goes
to every shard whenever it moves; a ``dex.quotes`` partition keeps its lateness rule.

A partition of ``oracle.prices`` carries the oracle's rows and progress records in the
order the oracle decided them (``operators.oracle_topic``); they go to every shard in
that order as one ``PriceBatch``. The shard's gate on the oracle's progress makes its
evaluations independent of when they arrive.

A partition of ``fills`` (read when ``execution.signers`` is set) carries the executors'
outcomes and progress (``operators.fills_topic``). Its watermark is the minimum over the
configured signers of the latest ``ExecutionProgress.through_ms`` seen on it (-1 until
every signer has been heard): by the topic's contract, every outcome at or before it has
arrived. An outcome goes to its account's shard like a venue event, at its
``ts_event_ms`` (at the watermark, if behind it), and the watermark to every shard
whenever it enters a new window; the shard's gate then takes outcomes at the same
evaluation whenever they arrive. An outcome or a progress record of a signer not
configured would escape the gate: it goes to the deadletter.

Messages of other stages' input that do not decode (a malformed pool log, a bad quote)
are the oracle's to report: here they are skipped. The venue's bad logs and bad
``oracle.prices`` messages go to the deadletter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from msgspec.structs import replace

from operators import fills_topic, oracle_topic
from operators.abi import AbiError, block_time_ms
from operators.accounts import shard_keys, shard_of
from operators.clock import PartitionClock, implausible
from operators.decode import option_quote
from operators.model import (
    Execution,
    ExecutionProgress,
    OptionQuote,
    OraclePrice,
    OracleProgress,
    PriceBatch,
    RawBatch,
    RawMessage,
    Rejected,
)
from operators.venue import STAGE as VENUE_STAGE
from operators.venue import InstrumentListed, ShardEvent, VenueBatch, VenueEvent, decode_venue


@dataclass(frozen=True, kw_only=True)
class RiskIntakeParams:
    """The venue (address), the shard count, the input topics, the executors' signers
    (addresses; empty: ``fills`` is not read); times in ms (the event-time bounds as the
    oracle intake's, ``operators.clock.implausible``)."""

    venue: str
    shards: int
    window_ms: int
    lateness_ms: int
    max_future_ms: int
    max_quote_delay_ms: int
    chain_logs: str
    dex_quotes: str
    oracle_prices: str
    fills: str
    signers: tuple[str, ...] = ()
    ticks: bool = False
    """Evaluate at the oracle's ticks (``oracle.cadence``): see the module docstring."""


@dataclass(frozen=True)
class RiskIntakeOut:
    """What one batch of a partition gives: venue batches by shard key, the oracle's
    items for every shard, and rejects."""

    venue: list[tuple[str, VenueBatch]]
    prices: PriceBatch | None
    rejects: list[Rejected]


class _Stamp(msgspec.Struct, frozen=True):
    """The fields read of a message that is not the venue's: a log's or a progress
    marker's ``blockTimestamp`` (s), a quote's ``ts`` (ms) and ``instrument``."""

    blockTimestamp: int | str | None = None
    removed: bool = False
    progress: bool = False
    ts: int | None = None
    instrument: str | None = None


_stamp = msgspec.json.Decoder(_Stamp)
STAGE = "risk_intake"
"""The stage of a rejected option quote (a venue event's is ``venue``)."""


@dataclass
class RiskIntake:
    """The state of one input partition of the risk stage."""

    part: str
    clock: PartitionClock = field(default_factory=PartitionClock)
    """A ``fills`` partition's clock is its progress: ``newest_ms`` is the minimum over the
    signers of their ``through_ms``, once every one has been heard."""
    signers: dict[str, int] = field(default_factory=dict)
    """On a ``fills`` partition: signer -> its latest ``through_ms`` seen (ms)."""
    marker_ms: int = -1
    """On a ``chain.logs`` partition, with ``ticks``: its last progress marker's block
    time (ms), -1 before any."""
    reported_ms: int | None = None
    """With ``ticks``: the watermark last sent to every shard."""
    caught_up: bool = False
    """Whether the partition's last batch had caught up, as last sent to every shard (an
    empty batch that has caught up is sent again: ``operators.intake``)."""

    def watermark_ms(self, lateness_ms: int, p: RiskIntakeParams) -> int:
        """The partition's watermark (ms): with ``ticks``, a ``chain.logs`` partition's is
        its last progress marker's block time when later than its newest less lateness."""
        wm = self.clock.watermark_ms(lateness_ms)
        return max(wm, self.marker_ms) if p.ticks else wm

    def on_batch(self, batch: RawBatch, p: RiskIntakeParams) -> RiskIntakeOut:
        """Decode a batch in offset order and route what it holds."""
        rejects: list[Rejected] = []
        if batch.topic == p.fills:
            return self._on_fills(batch, p)
        if batch.topic == p.oracle_prices:
            prices: list[OraclePrice | OracleProgress] = []
            for msg in batch.messages:
                try:
                    item = oracle_topic.decode(msg)
                except Exception as exc:  # a bug: the message goes to the deadletter, the flow on
                    item = Rejected.of(oracle_topic.STAGE, _internal(exc), msg)
                if isinstance(item, Rejected):
                    rejects.append(item)
                else:
                    prices.append(item)
            return RiskIntakeOut([], PriceBatch(prices) if prices else None, rejects)

        routed: dict[str, list[ShardEvent]] = {}
        venue_key = p.venue.encode()
        for msg in batch.messages:
            try:
                if msg.topic == p.chain_logs and msg.key == venue_key:
                    event = decode_venue(msg, p.venue)
                    if isinstance(event, Rejected):
                        rejects.append(event)
                    elif event is not None:
                        self._route(event, msg, p, routed, rejects)
                else:
                    self._stamp(msg, p, routed, rejects)
            except Exception as exc:  # a bug: the message goes to the deadletter, the flow on
                rejects.append(Rejected.of(VENUE_STAGE, _internal(exc), msg))
        return RiskIntakeOut(self._to_shards(routed, p.lateness_ms, batch, p), None, rejects)

    def _on_fills(self, batch: RawBatch, p: RiskIntakeParams) -> RiskIntakeOut:
        """Take a ``fills`` batch: outcomes to their account's shard, the signers' progress
        into the partition's watermark."""
        rejects: list[Rejected] = []
        routed: dict[str, list[ShardEvent]] = {}
        for msg in batch.messages:
            try:
                item = fills_topic.decode(msg)
                bad = item if isinstance(item, Rejected) else self._take_fill(item, msg, p, routed)
            except Exception as exc:  # a bug: the message goes to the deadletter, the flow on
                bad = Rejected.of(fills_topic.STAGE, _internal(exc), msg)
            if bad is not None:
                rejects.append(bad)
        return RiskIntakeOut(self._to_shards(routed, 0, batch, p), None, rejects)

    def _to_shards(
        self,
        routed: dict[str, list[ShardEvent]],
        lateness_ms: int,
        batch: RawBatch,
        p: RiskIntakeParams,
    ) -> list[tuple[str, VenueBatch]]:
        """The events routed to each shard, with the partition's watermark after the batch;
        every shard hears of a new window (or the end, or the partition catching up or
        falling behind), events or not."""
        wm, marker = self.clock.report(lateness_ms, p.window_ms, batch.eof)
        if p.ticks:
            wm = self.watermark_ms(lateness_ms, p)
            marker = marker or wm != self.reported_ms
            self.reported_ms = wm
        marker = marker or batch.caught_up != self.caught_up or batch.catching_up
        self.caught_up = batch.caught_up
        broker, caught_up = self.clock.broker_ms, batch.caught_up
        return [
            (shard, VenueBatch(self.part, wm, batch.eof, routed.get(shard, []), broker, caught_up))
            for shard in shard_keys(p.shards)
            if shard in routed or marker
        ]

    def _take_fill(
        self,
        item: Execution | ExecutionProgress,
        msg: RawMessage,
        p: RiskIntakeParams,
        routed: dict[str, list[ShardEvent]],
    ) -> Rejected | None:
        """Route an outcome, or take a signer's progress; a ``Rejected`` when its signer is
        not configured or its time is implausible (then it moves nothing)."""
        if item.signer not in p.signers:
            reason = f"unknown_signer: {item.signer} is not in execution.signers"
            return Rejected.of(fills_topic.STAGE, reason, msg)
        ts_ms = item.through_ms if isinstance(item, ExecutionProgress) else item.ts_event_ms
        implausible_ts = implausible(ts_ms, msg.timestamp_ms, p.max_future_ms)
        if implausible_ts is not None:
            return Rejected.of(fills_topic.STAGE, implausible_ts, msg)
        self.clock.heard(msg.timestamp_ms)
        if isinstance(item, ExecutionProgress):
            self.signers[item.signer] = max(self.signers.get(item.signer, -1), item.through_ms)
            if all(s in self.signers for s in p.signers):
                self.clock.advance(min(self.signers[s] for s in p.signers))
            return None
        wm = self.clock.watermark_ms(0)
        if item.ts_event_ms <= wm:
            item = replace(item, ts_event_ms=wm + 1)
        routed.setdefault(shard_of(item.account, p.shards), []).append(item)
        return None

    def _stamp(
        self,
        msg: RawMessage,
        p: RiskIntakeParams,
        routed: dict[str, list[ShardEvent]],
        rejects: list[Rejected],
    ) -> None:
        """Advance the clock by a message that is not the venue's; route an option quote."""
        if msg.value is None:
            return
        try:
            stamp = _stamp.decode(msg.value)
            if stamp.instrument is not None:
                quote = option_quote(msg.value)
                if quote is not None:
                    self._route(quote, msg, p, routed, rejects)
                return
            if stamp.ts is not None and msg.topic == p.dex_quotes:
                ts_ms, delay_ms = stamp.ts, p.max_quote_delay_ms
            elif stamp.blockTimestamp is not None and not stamp.removed:
                ts_ms, delay_ms = block_time_ms(stamp.blockTimestamp), None
            else:
                return
        except (msgspec.DecodeError, UnicodeDecodeError, AbiError):
            return  # the oracle's decoder reports it
        if implausible(ts_ms, msg.timestamp_ms, p.max_future_ms, delay_ms) is None:
            self.clock.advance(ts_ms)
            self.clock.heard(msg.timestamp_ms)
            marker = not msg.key or msg.key.startswith(b"progress:")
            if stamp.progress and marker and msg.topic == p.chain_logs:
                self.marker_ms = max(self.marker_ms, ts_ms)

    def _route(
        self,
        event: VenueEvent | OptionQuote,
        msg: RawMessage,
        p: RiskIntakeParams,
        routed: dict[str, list[ShardEvent]],
        rejects: list[Rejected],
    ) -> None:
        """Route an event to its account's shard (a listing or an option quote to all); an
        implausible event time goes to the deadletter and moves nothing."""
        quote = isinstance(event, OptionQuote)
        delay_ms = p.max_quote_delay_ms if quote else None
        reason = implausible(event.ts_ms, msg.timestamp_ms, p.max_future_ms, delay_ms)
        if reason is not None:
            rejects.append(Rejected.of(STAGE if quote else VENUE_STAGE, reason, msg))
            return
        self.clock.heard(msg.timestamp_ms)
        wm = self.watermark_ms(p.lateness_ms, p)
        if event.ts_ms <= wm:
            event = replace(event, ts_ms=wm + 1)
        elif isinstance(event, OptionQuote) or not event.removed:
            self.clock.advance(event.ts_ms)
        if isinstance(event, InstrumentListed | OptionQuote):
            shards = shard_keys(p.shards)
        else:
            shards = (shard_of(event.account, p.shards),)
        for shard in shards:
            routed.setdefault(shard, []).append(event)


def _internal(exc: Exception) -> str:
    """The reason of a message whose handling raised: a bug, named for the deadletter."""
    return f"internal_error: {type(exc).__name__}: {exc}"


def risk_intake_step(
    state: RiskIntake | None, batch: RawBatch, *, params: RiskIntakeParams
) -> tuple[RiskIntake, RiskIntakeOut]:
    """The keyed step of the risk intake (one key per input partition)."""
    if state is None:
        state = RiskIntake(batch.part)
    return state, state.on_batch(batch, params)
