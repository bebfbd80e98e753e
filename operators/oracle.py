"""The oracle for one asset: event-time windows, status, circuit breaker, corrections.

Anchors: Chainlink's median with a quorum, Pyth's confidence, Maker's OSM breaker.

Event time and watermarks (all in ms, ``operators.clock``). Every input partition
reports its watermark: its newest event time less the allowed lateness. The intake
(``operators.intake``) has already sent an event whose window had ended at its own
partition's watermark to the deadletter, so every event that reaches this stage lands in
a window that is still open. A window closes when the minimum watermark over the input
partitions that have not ended passes its end; once all have ended, every window up to
the last one with data, or the highest watermark reported, closes. Which windows close and what they
contain therefore depends only on each partition's own order, never on how partitions
interleave: live, replay and any worker count give the same rows.

Per closed window (``fold``): each source's latest observation as of the window's end
counts while younger than its ``max_age``; prices are converted to USD (pegs, or the
numeraire's price in the same window for a crossed asset such as BTC via WBTC/WETH);
``operators.aggregate`` gives the robust price. Status is ``ok`` with at least
``min_sources`` sources, ``degraded`` with fewer, ``stale`` with none (the last price
is carried). A move beyond ``jump_threshold`` from the last published price is held
(the last price is carried, ``held``, status ``degraded``) until enough sources confirm
it at once or it persists ``breaker_confirm_windows`` windows.

Corrections: a ``removed`` log whose window has closed changes that window's inputs;
the retained windows are folded again from the oldest kept state and each row that
changes is published again with ``revision`` + 1.
"""

from __future__ import annotations

import bisect
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from msgspec.structs import replace

from operators.aggregate import aggregate
from operators.clock import END_MS, Watermarks
from operators.model import (
    AssetBatch,
    Observation,
    OraclePrice,
    OracleProgress,
    Rejected,
    Retraction,
)

if TYPE_CHECKING:
    from operators.ticks import AssetTicks

STAGE = "oracle"


@dataclass(frozen=True, kw_only=True)
class OracleParams:
    """Everything one asset's oracle needs; times in ms, prices in USD."""

    window_ms: int
    max_age_ms: int
    source_max_age_ms: dict[str, int]
    min_sources: int
    mad_k: float
    mad_floor_bps: float
    jump_threshold: float
    breaker_confirm_sources: int
    breaker_confirm_windows: int
    correction_windows: int
    idle_timeout_ms: int
    """0: no input partition is ever taken as idle (``operators.clock``)."""
    pegs: dict[str, float]
    numeraire: dict[str, str]
    """asset -> the asset it is also quoted in (BTC -> ETH); absent when none."""
    cadence: str = "window"
    """``window``: rows per window only; ``block``: also a tick row at each block;
    ``every``: also a tick row every ``cadence_ms`` (``operators.ticks``)."""
    cadence_ms: int = 0
    """The tick period with cadence ``every``, ms."""


@dataclass(frozen=True)
class OracleOut:
    """What one step of an asset's oracle gives: the rows of the windows it closed or
    corrected, in order; rejects; how far the asset's windows are now closed, when that
    moved; and with a tick cadence the tick rows it published and their progress
    (``operators.ticks``)."""

    prices: list[OraclePrice]
    rejects: list[Rejected]
    progress: OracleProgress | None
    ticks: list[OraclePrice] = field(default_factory=list)
    tick_progress: OracleProgress | None = None


@dataclass(frozen=True)
class Carry:
    """What one window hands the next: sources' latest observations and the breaker."""

    latest: dict[tuple[str, str, str], Observation] = field(default_factory=dict)
    """Each source's latest observation, by (source, base, quote)."""
    last: OraclePrice | None = None
    jump_run: int = 0
    jump_up: bool = False


class WindowObservations:
    """One window's observations by id (``obs_id``).

    It pickles as the bytes it pickled to last until it changes, so a snapshot pickles
    only the windows whose observations changed since the last one (a replay holds many
    open windows that a slower partition keeps from closing), not every window again."""

    __slots__ = ("by_id", "frozen")

    def __init__(self, by_id: dict[str, Observation] | None = None, frozen: bytes | None = None):
        self.by_id: dict[str, Observation] = {} if by_id is None else by_id
        self.frozen = frozen

    def add(self, o: Observation) -> None:
        self.by_id[o.obs_id] = o
        self.frozen = None

    def discard(self, obs_id: str) -> bool:
        """Remove observation ``obs_id``; ``False`` when there was none."""
        if self.by_id.pop(obs_id, None) is None:
            return False
        self.frozen = None
        return True

    def values(self) -> Iterable[Observation]:
        return self.by_id.values()

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        if self.frozen is None:
            self.frozen = pickle.dumps(self.by_id, protocol=pickle.HIGHEST_PROTOCOL)
        return _thaw, (self.frozen,)


def _thaw(frozen: bytes) -> WindowObservations:
    return WindowObservations(pickle.loads(frozen), frozen)


@dataclass
class ClosedWindow:
    """A closed window kept for corrections: its inputs, its row, the carry after it."""

    index: int
    obs: WindowObservations
    row: OraclePrice | None
    carry: Carry


def _robust_usd(
    observations: Iterable[Observation], usd_of_quote: dict[str, float], p: OracleParams
) -> tuple[float, float, int] | None:
    prices, weights, spreads = [], [], []
    for o in observations:
        fx = usd_of_quote.get(o.quote)
        if fx is None:
            continue
        prices.append(o.price * fx)
        weights.append(o.weight * fx)
        spreads.append(o.spread * fx)
    if not prices:
        return None
    agg = aggregate(prices, weights, spreads, k=p.mad_k, floor_bps=p.mad_floor_bps)
    return agg.price, agg.confidence, len(agg.kept)


def fold(
    asset: str, carry: Carry, index: int, window_obs: Iterable[Observation], p: OracleParams
) -> tuple[Carry, OraclePrice | None]:
    """Close window ``index`` of ``asset``: the next carry and the row to publish (if any)."""
    return fold_at(asset, carry, index * p.window_ms, (index + 1) * p.window_ms, window_obs, p)


def fold_at(
    asset: str,
    carry: Carry,
    start_ms: int,
    end_ms: int,
    window_obs: Iterable[Observation],
    p: OracleParams,
    cadence: str = "window",
) -> tuple[Carry, OraclePrice | None]:
    """The price of ``asset`` as of ``end_ms`` from the carry and the observations since
    it: the next carry and the row (of the window ``start_ms..end_ms``, ``cadence``)."""
    end = end_ms
    latest = dict(carry.latest)
    for o in window_obs:
        key = (o.source, o.base, o.quote)
        held = latest.get(key)
        if held is None or (held.ts_ms, held.seq, held.obs_id) < (o.ts_ms, o.seq, o.obs_id):
            latest[key] = o
    latest = {
        k: o
        for k, o in latest.items()
        if end - o.ts_ms <= p.source_max_age_ms.get(o.source, p.max_age_ms)
    }

    usd_of_quote = dict(p.pegs)
    numeraire = p.numeraire.get(asset)
    if numeraire is not None:
        cross = _robust_usd((o for o in latest.values() if o.base == numeraire), p.pegs, p)
        if cross is not None:
            usd_of_quote[numeraire] = cross[0]
    found = _robust_usd((o for o in latest.values() if o.base == asset), usd_of_quote, p)

    last = carry.last
    if found is None:
        nxt = Carry(latest, last, carry.jump_run, carry.jump_up)
        if last is None:
            return nxt, None
        row = _row(asset, start_ms, end_ms, cadence, last.price, last.confidence, 0, "stale")
        return nxt, row

    price, conf, n = found
    status = "ok" if n >= p.min_sources else "degraded"
    if last is not None and abs(price / last.price - 1.0) > p.jump_threshold:
        up = price > last.price
        run = carry.jump_run + 1 if carry.jump_run and carry.jump_up == up else 1
        if n < p.breaker_confirm_sources and run < p.breaker_confirm_windows:
            row = _row(
                asset, start_ms, end_ms, cadence, last.price, last.confidence, n, "degraded",
                held=True,
            )  # fmt: skip
            return Carry(latest, last, run, up), row
    row = _row(asset, start_ms, end_ms, cadence, price, conf, n, status)
    return Carry(latest, row), row


def _row(
    asset: str,
    start_ms: int,
    end_ms: int,
    cadence: str,
    price: float,
    confidence: float,
    sources: int,
    status: str,
    *,
    held: bool = False,
) -> OraclePrice:
    return OraclePrice(
        asset=asset,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        price=price,
        confidence=confidence,
        sources=sources,
        status=status,
        held=held,
        revision=0,
        cadence=cadence,
    )


class AssetOracle:
    """Windows, watermarks and retained history for one asset (the state of one key) fed
    by the input partitions ``parts``.

    The parameters come with each call, so a restart with a new configuration uses it.
    With a tick cadence, ``ticks`` publishes the asset's ticks from the same batches.
    """

    ticks: AssetTicks | None = None

    def __init__(self, asset: str, parts: tuple[str, ...]):
        self.asset = asset
        self.clock = Watermarks(parts)
        self.open: dict[int, WindowObservations] = {}
        self.pending: dict[int, list[Retraction]] = {}
        self.history: list[ClosedWindow] = []
        self.base = Carry()
        self.carry = Carry()
        self.next_index: int | None = None
        self.progress = -1
        """The end of the last window reported closed (``OracleProgress``), ms."""

    def on_batch(self, batch: AssetBatch, p: OracleParams) -> OracleOut:
        """Take one partition's batch; return the rows of windows it closes or corrects,
        and how far the asset's windows are closed when that moved."""
        prices: list[OraclePrice] = []
        rejects: list[Rejected] = []
        for item in batch.items:
            if isinstance(item, Observation):
                index = item.ts_ms // p.window_ms
                if self.next_index is not None and index < self.next_index:
                    # Only from a partition that was idle when the window closed.
                    self._correct(item, index, p, prices, rejects)
                    continue
                self.open.setdefault(index, WindowObservations()).add(item)
            else:
                self._retract(item, p, prices, rejects)
        self.clock.report(
            batch.part, batch.watermark_ms, batch.eof, batch.broker_ms, batch.caught_up
        )
        self._close_ready(p, prices, rejects)
        through = self._closed_through(p)
        progress = None
        if through > self.progress:
            self.progress = through
            progress = OracleProgress(self.asset, through)
        if p.cadence == "window":
            return OracleOut(prices, rejects, progress)
        if self.ticks is None:
            from operators.ticks import AssetTicks  # it builds on this module's ``fold_at``

            self.ticks = AssetTicks(self.asset, self.clock.parts)
        ticks, tick_progress = self.ticks.on_batch(batch, p)
        return OracleOut(prices, rejects, progress, ticks, tick_progress)

    def _closed_through(self, p: OracleParams) -> int:
        """End of the last closed window; without data, the last window the watermark
        has passed (no observation can arrive for it any more)."""
        if self.next_index is not None:
            return self.next_index * p.window_ms
        wm = self.clock.watermark_ms(p.idle_timeout_ms)
        if self.open or wm == END_MS:
            return -1
        return wm // p.window_ms * p.window_ms

    def _close_ready(
        self, p: OracleParams, prices: list[OraclePrice], rejects: list[Rejected]
    ) -> None:
        """Close every window the watermark has passed; once every partition has ended,
        every window up to the last with data or the highest watermark reported.

        The work is bounded whatever the gap between two observations: once no source is
        fresh any more (the carry's latest is empty), the windows until the next one with
        data would all repeat the same ``stale`` row, so they are skipped. A gap of any
        length therefore emits at most ``max_age / window + 1`` rows."""
        wm = self.clock.watermark_ms(p.idle_timeout_ms)
        last_data = -1
        if wm == END_MS:
            wm = self.clock.highest_ms()
            last_data = max(self.open, default=-1)
        last = max(wm // p.window_ms - 1, last_data)
        index = self.next_index if self.next_index is not None else min(self.open, default=None)
        while index is not None and index <= last:
            if not self.carry.latest and index not in self.open:  # nothing fresh: skip
                index = min(min(self.open, default=last + 1), last + 1)
                self.next_index = index
                continue
            self._close(index, p, prices, rejects)
            index += 1
            self.next_index = index

    def _close(
        self, index: int, p: OracleParams, prices: list[OraclePrice], rejects: list[Rejected]
    ) -> None:
        obs = self.open.pop(index, None) or WindowObservations()
        self.carry, row = fold(self.asset, self.carry, index, obs.values(), p)
        self.history.append(ClosedWindow(index, obs, row, self.carry))
        if len(self.history) > p.correction_windows:
            self.base = self.history.pop(0).carry
        if row is not None:
            prices.append(row)
        for retraction in self.pending.pop(index, []):
            self._retract(retraction, p, prices, rejects)

    def _retract(
        self, r: Retraction, p: OracleParams, prices: list[OraclePrice], rejects: list[Rejected]
    ) -> None:
        index = r.ts_ms // p.window_ms
        if index in self.open or self.next_index is None or index >= self.next_index:
            if r.late:  # its partition saw the window end: publish it, then correct it
                self.pending.setdefault(index, []).append(r)
            elif index not in self.open or not self.open[index].discard(r.obs_id):
                self._reject(r, "retraction_unknown: no observation with this id", rejects)
            return
        for pos, closed in enumerate(self.history):
            if closed.index == index:
                if not closed.obs.discard(r.obs_id):
                    self._reject(r, "retraction_unknown: no observation with this id", rejects)
                else:
                    self._refold(pos, p, prices)
                return
        reason = (
            f"retraction_too_old: window {index} is beyond the {p.correction_windows} "
            "windows kept for corrections"
        )
        self._reject(r, reason, rejects)

    def _correct(
        self, o: Observation, index: int, p: OracleParams, prices: list[OraclePrice],
        rejects: list[Rejected],
    ) -> None:  # fmt: skip
        """An observation for window ``index``, already closed: fold it in and publish the
        windows it changes as corrections, while the window is within the retained ones."""
        if not self.history or index < self.history[0].index:
            reason = (
                f"late: window {index} closed and is beyond the {p.correction_windows} "
                "windows kept for corrections"
            )
            self._reject(o, reason, rejects)
            return
        pos = bisect.bisect_left([c.index for c in self.history], index)
        if pos == len(self.history) or self.history[pos].index != index:  # a skipped window
            carry = self.history[pos - 1].carry
            self.history.insert(pos, ClosedWindow(index, WindowObservations(), None, carry))
        self.history[pos].obs.add(o)
        self._refold(pos, p, prices)

    def _refold(self, changed_from: int, p: OracleParams, prices: list[OraclePrice]) -> None:
        carry = self.history[changed_from - 1].carry if changed_from else self.base
        for closed in self.history[changed_from:]:
            carry, row = fold(self.asset, carry, closed.index, closed.obs.values(), p)
            closed.carry = carry
            if row != _unrevised(closed.row):
                revision = 0 if closed.row is None else closed.row.revision + 1
                closed.row = None if row is None else replace(row, revision=revision)
                if closed.row is not None:
                    prices.append(closed.row)
        self.carry = carry

    def _reject(self, r: Observation | Retraction, reason: str, rejects: list[Rejected]) -> None:
        if r.base != self.asset:
            return  # the asset the observation is of reports it, not those crossing it
        if isinstance(r, Retraction):
            rejects.append(Rejected.of(STAGE, reason, r.origin))
            return
        rejects.append(
            Rejected(
                stage=STAGE,
                reason=reason,
                topic="",
                partition=-1,
                offset=-1,
                timestamp_ms=r.ts_ms,
                key=None,
                raw=r.obs_id.encode(),
            )
        )


def oracle_step(
    state: AssetOracle | None,
    item: tuple[str, AssetBatch],
    *,
    params: OracleParams,
    parts: tuple[str, ...],
) -> tuple[AssetOracle, OracleOut]:
    """The keyed step of the oracle (one key per asset) over the input partitions ``parts``."""
    asset, batch = item
    if state is None:
        state = AssetOracle(asset, parts)
    return state, state.on_batch(batch, params)


def _unrevised(row: OraclePrice | None) -> OraclePrice | None:
    return None if row is None else replace(row, revision=0)
