"""The oracle's ticks for one asset: a price at every block (or every N seconds) over the
window trailing it, besides the fixed windows (``operators.oracle``), which stay as they are.

Anchors: Chainlink's heartbeat and deviation updates, Pyth's per-slot prices; a liquidator
acts within the block, so a price that waits for its minute window is too late.

Times in ms. The tick at ``T`` is what a window ending at ``T`` would give
(``operators.oracle.fold_at``): each source's latest observation at or before ``T`` while
younger than its ``max_age``, crossed and aggregated the same way; its row has
``cadence="tick"``, ``window_end_ms=T`` and ``window_start_ms=T - window_ms``. The jump
circuit breaker runs over the ticks (``breaker_confirm_windows`` counts ticks).

When. Tick times are the block times of the ``chain.logs`` progress markers (cadence
``block``), or the multiples of ``cadence_ms`` (cadence ``every``; one where no source is
fresh and the last row was ``stale`` already is skipped, so a gap costs nothing). The tick
at ``T`` is published once every input partition's tick watermark has passed ``T``
(``operators.intake``): a ``chain.logs`` partition's is its last progress marker (the block
is complete), a ``dex.quotes`` partition's its watermark (newest ``ts`` less the allowed
lateness, the quotes' lateness rule); once every partition has ended, every tick up to
the highest reported, or up to the first that takes the last observation.

What. An item arriving on its partition at tick watermark ``W`` (``AssetBatch.tick_seen_ms``):
an observation at or before ``W`` is late for the ticks (no tick after ``W`` is missing it,
and the ticks up to ``W`` may be out); a retraction withdraws its observation from the ticks
after ``W`` (an earlier observation of its source, superseded by then, does not come back:
the source counts again from its next one). Both depend on the partition's own order
only, and a tick waits for every partition's watermark to pass it, so which ticks are
published and what they contain do not depend on how partitions interleave: live, replay
and any worker count give the same rows. Ticks are not corrected afterwards (the windows
are): the risk stage acts on a tick once. With ``idle_timeout`` a partition set aside as
idle may resume behind published ticks: its observations there are in the windows only.
"""

from __future__ import annotations

import bisect

from operators.clock import END_MS, Watermarks
from operators.model import AssetBatch, Observation, OraclePrice, OracleProgress, Retraction
from operators.oracle import Carry, OracleParams, fold_at


class AssetTicks:
    """The ticks of one asset fed by the input partitions ``parts``: its tick watermarks,
    the observations a coming tick may take, and the breaker's state over the ticks."""

    def __init__(self, asset: str, parts: tuple[str, ...]):
        self.asset = asset
        self.clock = Watermarks(parts)
        self.obs: dict[str, Observation] = {}
        """obs_id -> an observation a tick to come may take."""
        self.ranked: dict[SourceKey, list[Rank]] = {}
        """Per source, the ranks of its observations in ``obs``, ascending: a tick takes
        each source's highest eligible one without looking at the rest, and a prune cuts
        a prefix (a block of 10k logs on one pool is one look, not 10k)."""
        self.withdrawn: dict[str, int] = {}
        """obs_id -> the tick watermark after which it is withdrawn (ms)."""
        self.blocks: set[int] = set()
        """Block times not yet ticked (cadence ``block``), ms."""
        self.last_ms = -1
        """The last tick time published or passed, ms."""
        self.carry = Carry()
        """The breaker's state: the last tick row, the jump run (``latest`` stays empty)."""
        self.quiet = True
        """The last tick had no fresh source (or there was none yet): a ``stale`` row
        repeats nothing new, and cadence ``every`` waits for the next observation."""
        self.through = -1

    def on_batch(
        self, batch: AssetBatch, p: OracleParams
    ) -> tuple[list[OraclePrice], OracleProgress | None]:
        """Take one partition's batch; return the tick rows it lets out, in time order,
        and the tick progress when it moved."""
        for item, seen in zip(batch.items, batch.tick_seen_ms, strict=True):
            if isinstance(item, Retraction):
                if item.obs_id in self.obs:
                    self.withdrawn[item.obs_id] = seen
            elif item.ts_ms > seen and item.ts_ms > self.last_ms and item.obs_id not in self.obs:
                self.obs[item.obs_id] = item
                bisect.insort(self.ranked.setdefault(_key(item), []), _rank(item))
        if p.cadence == "block":
            self.blocks.update(b for b in batch.blocks if b > self.last_ms)
        self.clock.report(
            batch.part, batch.tick_watermark_ms, batch.eof, batch.broker_ms, batch.caught_up
        )
        wm = self.clock.watermark_ms(p.idle_timeout_ms)
        until = wm
        if wm == END_MS:  # nothing more comes: up to the highest reported, or the last data
            last = max((o.ts_ms for o in self.obs.values()), default=-1)
            c = p.cadence_ms if p.cadence == "every" else 1
            until = max(self.clock.highest_ms(), -(-last // c) * c)
        rows = self._tick_until(until, p)
        progress = None
        if wm > self.through:
            self.through = wm
            progress = OracleProgress(self.asset, wm, cadence="tick")
        return rows, progress

    def _tick_until(self, until: int, p: OracleParams) -> list[OraclePrice]:
        rows: list[OraclePrice] = []
        while (t := self._next_tick(until, p)) is not None:
            self.carry, row = self.tick_at(t, p)
            self.last_ms = t
            self._prune(t, p)
            if row is not None and not (row.status == "stale" and self.quiet):
                rows.append(row)
            self.quiet = row is None or row.status == "stale"
        return rows

    def _next_tick(self, until: int, p: OracleParams) -> int | None:
        """The next tick time at or before ``until``, or ``None``."""
        if p.cadence == "block":
            t = min((b for b in self.blocks if b <= until), default=None)
            self.blocks.discard(-1 if t is None else t)
            return t
        c = p.cadence_ms
        t = self.last_ms // c * c + c
        if self.quiet:  # no source fresh: nothing changes before the next observation
            after = [o.ts_ms for o in self.obs.values() if o.ts_ms > self.last_ms]
            first = min(after, default=None)
            if first is None:
                return None
            t = max(t, -(-first // c) * c)
        return t if t <= until else None

    def tick_at(self, t: int, p: OracleParams) -> tuple[Carry, OraclePrice | None]:
        """The breaker's state after the tick at ``t`` and its row (``None`` before any
        price), from each source's highest-ranked observation at or before ``t`` not
        withdrawn before it (all ``fold_at`` keeps of a source)."""
        taken = []
        for ranks in self.ranked.values():
            for rank in reversed(ranks):
                obs_id = rank[2]
                if rank[0] <= t and not (obs_id in self.withdrawn and t > self.withdrawn[obs_id]):
                    taken.append(self.obs[obs_id])
                    break
        start = Carry({}, self.carry.last, self.carry.jump_run, self.carry.jump_up)
        carry, row = fold_at(self.asset, start, t - p.window_ms, t, taken, p, cadence="tick")
        return Carry({}, carry.last, carry.jump_run, carry.jump_up), row

    def _prune(self, t: int, p: OracleParams) -> None:
        """Drop what no tick after ``t`` can take: of each source's observations at or
        before ``t``, all but the highest-ranked, and that one too when older than its
        source's ``max_age`` at ``t`` or withdrawn before ``t``."""
        for key, ranks in list(self.ranked.items()):
            upto = bisect.bisect_right(ranks, (t, _MAX_SEQ, _MAX_ID))
            if upto == 0:
                continue
            newest = self.obs[ranks[upto - 1][2]]
            too_old = t - newest.ts_ms > p.source_max_age_ms.get(newest.source, p.max_age_ms)
            gone = newest.obs_id in self.withdrawn and self.withdrawn[newest.obs_id] < t
            cut = upto if too_old or gone else upto - 1
            for _, _, obs_id in ranks[:cut]:
                del self.obs[obs_id]
                self.withdrawn.pop(obs_id, None)
            del ranks[:cut]
            if not ranks:
                del self.ranked[key]


SourceKey = tuple[str, str, str]
"""An observation's source, base and quote."""
Rank = tuple[int, int, str]
"""An observation's order among its source's: ``(ts_ms, seq, obs_id)``, the later wins."""
_MAX_SEQ = 1 << 63
_MAX_ID = "\U0010ffff"


def _key(o: Observation) -> SourceKey:
    return (o.source, o.base, o.quote)


def _rank(o: Observation) -> Rank:
    return (o.ts_ms, o.seq, o.obs_id)
