"""The risk engine for one shard of accounts: when to evaluate, and what comes out.

Evaluation is deterministic in event time. The shard evaluates at each window end T (a
grid of ``window_ms``) once (a) every input partition of the venue's events has passed T
(``operators.clock.Watermarks``, as for the oracle) and (b) every oracle asset has
published, or passed without a row, the window ending at T (``OracleProgress``, which
follows the asset's rows in the same ``PriceBatch`` or on the same topic partition). It
then applies the venue events before T in chain order, takes each asset's price of the
window ending at T, and reprices the whole shard at once (``operators.margin.reprice``:
one sparse product). Only window ends that carry a price row or follow a venue event are
evaluated, so a gap of any length costs nothing. Live, replay and any number of workers
give the same rows and orders.

With ``cadence`` ``tick`` (``oracle.cadence`` other than ``window``) the shard evaluates at
the oracle's ticks instead (``operators.ticks``: every block, or every N seconds), on the
same gate: every venue partition past T (a ``chain.logs`` partition is once the block's
progress marker arrived, ``operators.risk_intake``) and every asset's tick progress past T.
It applies the venue events at or before T (the block at T included), takes each asset's
tick row at T, and ignores the window rows; a venue event still makes its window end due,
for when no tick follows it (every asset silent). So an account that a block's price
move puts under maintenance gets its order in that block's evaluation, at
``ts_event_ms`` = the block's time.

Out come, per evaluation: an ``AccountRisk`` row for each account whose health moved by
more than ``risk_change`` (or at least every ``risk_interval_ms``), or whose wallet a swap
moved; a liquidation order for each account below maintenance that has none in flight,
and a hedge order for each book outside its band, only while every price the account
depends on (and the hedged asset's) is ``ok``; an
``OrderDenied`` when an expected order is refused (once per condition); a ``Settlement``
for each option position at expiry. Order ids are a hash of what triggered them, so a
replay or a resumed run produces the same ids; a retry carries ``attempt`` and
``previous_order_id``. An order is in flight until the venue events that carry its id
(``Fill.order_id``) fill every leg, or until ``liquidation_timeout_s``; an event without an
id fills the leg in its account and instrument.

With executors configured, their outcomes (``Execution``, from the ``fills`` partitions,
gated like the venue's events) end legs too: a final outcome other than ``mined``
(``reverted``, ``denied``, ``expired``, ``conflict``) ends its leg unfilled, and once no
leg is left pending the order is retried at the next evaluation (``attempt`` + 1, as after
a timeout) instead of after the timeout. A ``mined`` outcome changes nothing: the venue's
``Fill`` of the same id fills the leg, and the book with it. Outcomes of ids not in flight
(an older attempt's, a repeat) and non-final ones are ignored.

A book may hedge an asset in spot on the DEX instead (``dex_hedges``, ``Order.kind``
``dex_hedge``): its delta in the asset is its venue positions' plus its wallet holdings of
the token (``operators.wallet``), sized with the same band. There the final ``mined``
outcome is the fill: it moves the wallet by the swap's amounts, once per order id (also
when the order is no longer in flight: the tokens moved), and completes the leg.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from operators import margin as mg
from operators.accounts import Book, listing_rejection, shard_key
from operators.clock import Watermarks
from operators.liquidation import (
    HedgeParams,
    LiquidationParams,
    hedge_horizon,
    hedge_order,
    liquidation_orders,
)
from operators.model import (
    FINAL_STATES,
    AccountRiskRow,
    Execution,
    InstrumentRow,
    OptionQuote,
    OraclePrice,
    OracleProgress,
    Order,
    OrderDenied,
    PriceBatch,
    Rejected,
    Settlement,
)
from operators.units import E18, YEAR_MS, InstrumentKind, e18
from operators.venue import STAGE as VENUE_STAGE
from operators.venue import (
    CollateralMove,
    Fill,
    InstrumentListed,
    ShardEvent,
    VenueBatch,
    VenueEvent,
)
from operators.vol import (
    EwmaVol,
    QuotedIv,
    SviSurface,
    TaggedVol,
    VolSource,
    calendar_violations,
    ewma_update,
    fit_svi,
    implied_vol,
    pick_vol,
)
from operators.wallet import DexHedge, Wallet

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RiskOut:
    """What one step of a shard gives, per evaluation in order of time: account rows,
    orders, instruments, denied orders, settlements, and venue events the book refused
    (``rejects``, stage ``venue``)."""

    rows: list[AccountRiskRow] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    instruments: list[InstrumentRow] = field(default_factory=list)
    denials: list[OrderDenied] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)


@dataclass
class InFlight:
    """An order sent and not done: when, its attempt, its legs (instrument -> order id),
    the legs not yet done, and the legs whose order ended unfilled (a final outcome of the
    executor: reverted, denied, expired, conflict)."""

    sent_ms: int
    attempt: int
    legs: dict[str, str]
    pending: set[str]
    failed: set[str] = field(default_factory=set)


@dataclass(frozen=True, kw_only=True)
class RiskParams:
    """Everything a shard needs; times in ms, amounts in USD.

    ``underlyings`` maps an underlying token address to its oracle asset; ``collateral``
    a collateral token address to (asset priced by the oracle or a peg, decimals).
    ``crosses`` maps an asset to the asset it is priced through (BTC -> ETH from a
    WBTC/WETH pool): its price is only as good as that one's.
    ``books`` maps an account we run to {asset: hedge instrument id (a perp or spot)},
    ``dex_hedges`` to {asset: its hedge in the token on the DEX}; an (account, asset) is in
    one of the two.
    """

    window_ms: int
    idle_timeout_ms: int = 0
    """0: no venue partition is ever taken as idle (``operators.clock``)."""
    cadence: str = "window"
    """``window``: evaluate at window ends on the window rows; ``tick``: at the oracle's
    ticks on the tick rows."""
    assets: tuple[str, ...]
    underlyings: dict[str, str]
    collateral: dict[str, tuple[str, int]]
    pegs: dict[str, float]
    crosses: dict[str, str] = field(default_factory=dict)
    margin_mode: str = "portfolio"
    """Every account's margin mode, ``portfolio`` or ``standard``..."""
    margin_modes: dict[str, str] = field(default_factory=dict)
    """...but for these accounts' own."""
    retain_blocks: int = 64
    """Blocks of applied venue events kept for retractions (``chain.reorg_depth``)."""
    margin: mg.MarginParams = field(default_factory=mg.MarginParams)
    liquidation: LiquidationParams = field(default_factory=LiquidationParams)
    hedge: HedgeParams = field(default_factory=HedgeParams)
    books: dict[str, dict[str, str]] = field(default_factory=dict)
    dex_hedges: dict[str, dict[str, DexHedge]] = field(default_factory=dict)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    """account -> {asset: delta target, contracts}; 0 where absent."""
    instruments: dict[str, InstrumentListed] = field(default_factory=dict)
    """Instruments listed by configuration; the venue's own listings take precedence."""
    liquidation_timeout_ms: int = 300_000
    valid_for_ms: int = 120_000
    """An order's deadline after its event time (``Order.valid_until_ms``)."""
    risk_change: float = 0.01
    risk_min_interval_ms: int = 0
    risk_interval_ms: int = 3_600_000
    vol_half_life_s: float = 86_400.0
    vol_floor: float = 0.2
    vol_cap: float = 3.0
    iv_max_age_ms: int = 300_000

    def __post_init__(self) -> None:
        for who, mode in [("margin_mode", self.margin_mode), *self.margin_modes.items()]:
            if mode not in ("portfolio", "standard"):
                msg = f"margin mode of {who} must be 'portfolio' or 'standard'; got {mode!r}"
                raise ValueError(msg)

    def hedges(self) -> list[tuple[str, str, HedgeVia]]:
        """Every (account, asset) hedged, in order, and how: venue hedges and DEX ones."""
        venue = [
            (a, asset, HedgeVia("hedge", instrument))
            for a, b in self.books.items()
            for asset, instrument in b.items()
        ]
        dex = [
            (a, asset, HedgeVia("dex_hedge", h.token, h))
            for a, b in self.dex_hedges.items()
            for asset, h in b.items()
        ]
        return sorted(venue + dex, key=lambda hedge: hedge[:2])

    def dex_hedge_of(self, account: str, token: str) -> DexHedge | None:
        """The account's DEX hedge in ``token``, if any."""
        hedges = self.dex_hedges.get(account, {}).values()
        return next((h for h in hedges if h.token == token), None)


@dataclass(frozen=True)
class HedgeVia:
    """How a book hedges an asset: by trading a venue instrument (``hedge``: ``instrument``
    its id) or by swapping the token on the DEX (``dex_hedge``: ``instrument`` the token's
    address, ``dex`` the hedge)."""

    kind: str
    instrument: str
    dex: DexHedge | None = None


def _quote_order(q: OptionQuote) -> tuple[int, str, float]:
    return (q.ts_ms, q.source, q.mid)


def _surface(
    t: int,
    rows: list[int],
    quoted: dict[int, float],
    inst: mg.Instruments,
    forward: FloatArray,
    listed: list[InstrumentListed],
) -> SviSurface | None:
    """SVI smiles of one underlying's quoted IVs, per expiry with at least 5 strikes; a fit
    flagged for butterfly arbitrage or a poor fit is skipped by ``pick_vol``, and one that
    makes a calendar arbitrage with an earlier expiry is dropped here."""
    by_expiry: dict[int, list[int]] = {}
    for n in rows:
        by_expiry.setdefault(listed[n].expiry_ms, []).append(n)
    fits = {}
    years = {}
    for expiry, ns in by_expiry.items():
        if len(ns) < 5 or inst.expiry_years[ns[0]] <= 0:
            continue
        k = np.log(inst.strike[ns] / forward[ns])
        w = np.array([quoted[n] ** 2 for n in ns]) * inst.expiry_years[ns[0]]
        fits[expiry] = fit_svi(k, w)
        years[float(inst.expiry_years[ns[0]])] = expiry
    # A later expiry whose total variance falls below an earlier one's is not used.
    for violation in calendar_violations({y: fits[e] for y, e in years.items()}):
        fits.pop(years[violation.t_long], None)
    return SviSurface(t, fits) if fits else None


def _greeks_json(names: list[str], greeks: list[FloatArray]) -> str:
    delta, gamma, vega = (g.tolist() for g in greeks)
    net = {a: {"delta": delta[u], "gamma": gamma[u], "vega": vega[u]} for u, a in enumerate(names)}
    return msgspec.json.encode(net).decode()


def order_id(*trigger: object) -> str:
    """A deterministic id: SHA-256 of what triggered the order, as ``0x`` and 64 hex digits.

    It is the ``bytes32 orderId`` the venue's ``trade`` and ``liquidate`` take and emit, so
    the id of the ``orders`` topic is the one on chain, where ``Fill.order_id`` reads it.
    """
    return "0x" + hashlib.sha256("|".join(map(str, trigger)).encode()).hexdigest()


class RiskShard:
    """The state of one shard (one key): its book, instruments, prices and clocks, fed
    by the input partitions ``parts`` it gates on (the venue's, and ``fills``' when read).

    ``reports_instruments``: this shard writes the ``InstrumentRow``s (every shard prices
    the same instruments; one reports them).
    """

    def __init__(self, parts: tuple[str, ...], reports_instruments: bool = False) -> None:
        self.reports_instruments = reports_instruments
        self.book = Book()
        self.instruments: dict[str, InstrumentListed] = {}
        self.pending: list[tuple[int, int, str, ShardEvent]] = []
        """A heap of (event time, arrival, input partition, event) not yet applied."""
        self.arrived = 0
        self.quotes: dict[str, OptionQuote] = {}
        """option instrument -> its latest quote applied."""
        self.clock = Watermarks(parts)
        self.progress: dict[str, int] = {}
        self.rows: dict[str, dict[int, OraclePrice]] = {}
        """asset -> window end -> the first publication of that window (revision 0)."""
        self.prices: dict[str, OraclePrice] = {}
        """asset -> the row in force at the last evaluation."""
        self.vols: dict[str, EwmaVol] = {}
        self.vol_values: dict[str, float] = {}
        self.vol_sources: dict[str, VolSource] = {}
        """asset -> where its vol comes from (``ewma``, ``floor`` or ``cap``)."""
        self.due: set[int] = set()
        """Window ends with a price row or after a venue event, not yet evaluated (ms)."""
        self.last_eval: int | None = None
        self.in_flight: dict[tuple[str, str], InFlight] = {}
        """(account, what) -> the order not done: what is ``liquidation`` (done when each
        leg's instrument has had a ``Liquidated`` event), the hedge instrument (done by
        the book's trade in it) or a DEX hedge's token (done by its final ``mined`` swap);
        re-sent after ``liquidation_timeout_ms``."""
        self.timed_out: dict[tuple[str, str], InFlight] = {}
        """(account, what) -> the last attempt that timed out: the next order retries it."""
        self.denied: dict[tuple[str, str, str], str] = {}
        """(account, kind, instrument) -> the reason of the last denial emitted."""
        self.settled: dict[str, tuple[int, OraclePrice]] = {}
        """option instrument -> (intrinsic per contract, USD in 18 decimals; the oracle row
        it settled at)."""
        self.last_health = np.zeros(0)
        self.last_emit = np.zeros(0, dtype=np.int64)
        self.wallet = Wallet()
        """The books' DEX-hedge holdings, as their swaps moved them."""
        self.wallet_moved: set[str] = set()
        """Accounts whose wallet a swap moved since their last risk row."""

    # --- inputs ---------------------------------------------------------------------

    def on_venue(self, batch: VenueBatch, p: RiskParams) -> None:
        """Take venue events and option quotes (or a ``fills`` partition's outcomes), and
        their partition's watermark; each event is due at the end of its window."""
        for event in batch.events:
            ts_ms = event.ts_event_ms if isinstance(event, Execution) else event.ts_ms
            heapq.heappush(self.pending, (ts_ms, self.arrived, batch.part, event))
            self.arrived += 1
            self.due.add((ts_ms // p.window_ms + 1) * p.window_ms)
        self.clock.report(
            batch.part, batch.watermark_ms, batch.eof, batch.broker_ms, batch.caught_up
        )

    def on_prices(self, batch: PriceBatch, cadence: str = "window") -> None:
        """Take the oracle's rows and progress of ``cadence`` (``RiskParams.cadence``) in
        order. A window's first publication is kept and makes its window end due; a later
        correction does not re-run the past."""
        for item in batch.items:
            if item.cadence != cadence:
                continue
            if isinstance(item, OracleProgress):
                self.progress[item.asset] = max(self.progress.get(item.asset, -1), item.through_ms)
            elif item.revision == 0:
                self.rows.setdefault(item.asset, {})[item.window_end_ms] = item
                self.due.add(item.window_end_ms)

    # --- evaluation -----------------------------------------------------------------

    def ready(self, p: RiskParams) -> list[int]:
        """The window ends that can be evaluated now, in order: those at or before the gate
        (every venue partition's watermark and every asset's progress) that carry a price
        row or follow a venue event. Windows where nothing arrived are not evaluated, so a
        gap of any length costs nothing."""
        gate = [self.clock.watermark_ms(p.idle_timeout_ms)]
        through = min(gate + [self.progress.get(a, -1) for a in p.assets])
        # Every row and event due by ``through`` has arrived, so this set is final.
        return sorted(t for t in self.due if t <= through)

    def evaluate(self, p: RiskParams) -> RiskOut:
        """Every evaluation that is ready, in order of time."""
        out = RiskOut()
        for t in self.ready(p):
            self.due.discard(t)
            if self.last_eval is not None and t <= self.last_eval:
                continue  # an event behind an evaluation already made: applied at the next
            self._evaluate_at(t, p, out)
            self.last_eval = t
        return out

    def _apply_until(self, t: int, p: RiskParams, out: RiskOut) -> None:
        """Apply the events before ``t`` (at or before, on ticks): quotes by time, venue
        events in chain order, then the executors' outcomes by (time, order id, seq); the
        events the book refuses go to ``out.rejects`` (a listing's: from the reporting shard
        only, as every shard gets it)."""
        due = []
        until = t + 1 if p.cadence == "tick" else t  # a tick takes its own block
        while self.pending and self.pending[0][0] < until:
            _, _, part, event = heapq.heappop(self.pending)
            due.append((part, event))
        quotes = [e for _, e in due if isinstance(e, OptionQuote)]
        for quote in sorted(quotes, key=_quote_order):
            self.quotes[quote.instrument] = quote
        venue = [(part, e) for part, e in due if not isinstance(e, OptionQuote | Execution)]
        for part, event in sorted(venue, key=lambda pe: (pe[1].seq, pe[1].removed)):
            if isinstance(event, InstrumentListed):
                reason = self._list(event)
                if reason is not None and self.reports_instruments:
                    out.rejects.append(_rejected(part, event, reason))
                continue
            token = p.collateral.get(event.token) if isinstance(event, CollateralMove) else None
            reason = self.book.apply(event, None if token is None else token[1], p.retain_blocks)
            if reason is not None:
                out.rejects.append(_rejected(part, event, reason))
                continue
            if isinstance(event, CollateralMove) and token is None and not event.removed:
                reason = (
                    f"unknown_collateral: token {event.token} is not in risk.collateral; "
                    "kept in the book at no value until configured"
                )
                out.rejects.append(_rejected(part, event, reason))
            if isinstance(event, Fill) and not event.removed:
                self._filled(event)
        outcomes = [e for _, e in due if isinstance(e, Execution)]
        for outcome in sorted(outcomes, key=lambda e: (e.ts_event_ms, e.order_id, e.seq)):
            self._executed(outcome, p)

    def _list(self, event: InstrumentListed) -> str | None:
        """Add or retract a listing; or say why not."""
        if event.removed:
            known = self.instruments.get(event.instrument)
            if known is None or known.seq != event.seq:
                return f"retraction_unknown: no listing of {event.instrument} at seq {event.seq}"
            del self.instruments[event.instrument]
            return None
        reason = listing_rejection(event)
        if reason is None:
            self.instruments[event.instrument] = event
        return reason

    def _filled(self, fill: Fill) -> None:
        """A fill of the account: a ``Liquidated`` one completes its liquidation's leg, a
        trade completes its hedge. A fill with an order id completes the leg of that id and
        no other (a fill of another order in the same account and instrument leaves ours in
        flight); a fill without one (a liquidation by someone else, a trade no order drove)
        completes the leg in its instrument."""
        what = "liquidation" if fill.liquidator is not None else fill.instrument
        sent = self.in_flight.get((fill.account, what))
        if sent is None:
            return
        if fill.order_id is None:
            sent.pending.discard(fill.instrument)
        else:
            sent.pending -= {i for i, leg in sent.legs.items() if leg == fill.order_id}
        self._settle_legs((fill.account, what), sent)

    def _executed(self, outcome: Execution, p: RiskParams) -> None:
        """An executor's outcome: a final one other than ``mined`` ends its leg unfilled; a
        final ``mined`` swap (``dex_hedge``) moves the book's wallet once per order id and
        completes its leg. Ids not in flight (an older attempt's, a repeat) end nothing and
        other outcomes change nothing; a venue call's ``mined`` is the venue ``Fill``'s to
        handle (``_filled``)."""
        if not outcome.final:
            return
        swap = outcome.kind == "dex_hedge" and outcome.state == "mined"
        if swap:
            hedge = p.dex_hedge_of(outcome.account, outcome.instrument)
            if hedge is not None and self.wallet.apply(outcome, hedge):
                self.wallet_moved.add(outcome.account)
        elif outcome.state not in FINAL_STATES:
            return
        what = "liquidation" if outcome.kind == "liquidation" else outcome.instrument
        sent = self.in_flight.get((outcome.account, what))
        if sent is None:
            return
        ended = {i for i in sent.pending if sent.legs[i] == outcome.order_id}
        sent.pending -= ended
        if not swap:
            sent.failed |= ended
        self._settle_legs((outcome.account, what), sent)

    def _settle_legs(self, key: tuple[str, str], sent: InFlight) -> None:
        """Once no leg of ``sent`` is pending, it is no longer in flight: done when every
        leg was filled, else retried at the next evaluation as after a timeout."""
        if sent.pending:
            return
        del self.in_flight[key]
        if sent.failed:
            self.timed_out[key] = sent
        else:
            self.timed_out.pop(key, None)

    def _advance_prices(self, t: int, p: RiskParams) -> None:
        """Take each asset's row of the window ending at ``t``; feed ``ok`` ones to its EWMA."""
        for asset, rows in self.rows.items():
            row = rows.pop(t, None)
            for old in [w for w in rows if w < t]:
                del rows[old]
            if row is None:
                continue
            self.prices[asset] = row
            if row.status == "ok" and not row.held:
                self.vols[asset], vol = ewma_update(
                    self.vols.get(asset),
                    row.price,
                    row.window_end_ms,
                    half_life_s=p.vol_half_life_s,
                    floor=p.vol_floor,
                    cap=p.vol_cap,
                )
                self.vol_values[asset] = vol.value
                self.vol_sources[asset] = vol.source

    def _evaluate_at(self, t: int, p: RiskParams, out: RiskOut) -> None:
        self._apply_until(t, p, out)
        self._advance_prices(t, p)
        for key, sent in list(self.in_flight.items()):
            if t - sent.sent_ms >= p.liquidation_timeout_ms:
                self.timed_out[key] = self.in_flight.pop(key)
        self._settle(t, p, out)
        tick = self._tick(t, p)
        if tick is None:
            return
        if self.reports_instruments:
            out.instruments.extend(self._instrument_rows(tick, p))
        if not self.book.accounts:
            return
        out.rows.extend(self._risk_rows(tick, p))
        self._liquidate(tick, p, out)
        for account, asset, via in p.hedges():
            book_row = self.book.accounts.get(account)
            if book_row is not None:
                self._hedge(tick, account, book_row, asset, via, p, out)

    def _ok_assets(self, p: RiskParams) -> set[str]:
        """The assets whose price may be acted on: pegged, or an ``ok`` row not held whose
        cross (the asset it is priced through) is itself ok."""
        good = {a for a, row in self.prices.items() if row.status == "ok" and not row.held}

        def ok(asset: str, seen: frozenset[str] = frozenset()) -> bool:
            if asset in p.pegs:
                return True
            cross = p.crosses.get(asset)
            if asset not in good or asset in seen:
                return False
            return cross is None or ok(cross, seen | {asset})

        return {a for a in {*self.prices, *p.pegs} if ok(a)}

    def _settle(self, t: int, p: RiskParams, out: RiskOut) -> None:
        """Settle options at expiry: at the first ``ok`` row of the underlying whose window
        ends at or after the expiry (the expiry's window when it is ok), each position's
        intrinsic value goes to cash and the position leaves the book. A position that
        reappears in a settled instrument (a retraction, a late fill) is settled at the
        same price at the next evaluation."""
        ok = self._ok_assets(p)
        known = {**p.instruments, **self.instruments}
        for instrument, listing in sorted(known.items()):
            if not listing.kind.is_option or listing.expiry_ms > t:
                continue
            if instrument not in self.settled:
                asset = p.underlyings.get(listing.underlying)
                row = self.prices.get(asset) if asset is not None else None
                if row is None or asset not in ok or row.window_end_ms < listing.expiry_ms:
                    continue
                spot_e18 = int(Decimal(repr(row.price)).scaleb(18).to_integral_value())
                gap = spot_e18 - listing.strike_e18
                intrinsic = max(gap if listing.kind == InstrumentKind.CALL else -gap, 0)
                self.settled[instrument] = (intrinsic, row)
            intrinsic, row = self.settled[instrument]
            for done in self.book.settle(instrument, intrinsic):
                out.settlements.append(
                    Settlement(
                        account=done.account,
                        instrument=instrument,
                        ts_event_ms=t,
                        underlying=row.asset,
                        kind=int(listing.kind),
                        strike=listing.strike_e18 / E18,
                        expiry_ms=listing.expiry_ms,
                        size=done.size_e18 / E18,
                        settlement_price=row.price,
                        price_window_end_ms=row.window_end_ms,
                        intrinsic=intrinsic / E18,
                        value_usd=done.paid_e36 / E18 / E18,
                        cash_usd=done.cash_e36 / E18 / E18,
                    )
                )

    def _tick(self, t: int, p: RiskParams) -> _Tick | None:
        """Everything priced at ``t``: instruments, the shard's positions and their risk.
        Instruments are ordered by underlying, then id (``margin.underlying_losses`` then
        needs no sort); settled options are gone."""
        priced = self.prices
        known = {**p.instruments, **self.instruments}
        listed = sorted(
            (
                i
                for i in known.values()
                if p.underlyings.get(i.underlying) in priced and i.instrument not in self.settled
            ),
            key=lambda i: (p.underlyings[i.underlying], i.instrument),
        )
        if not listed:
            return None
        names = sorted({p.underlyings[i.underlying] for i in listed})
        index = {a: n for n, a in enumerate(names)}
        inst = mg.Instruments(
            kind=np.array([i.kind for i in listed]),
            underlying=np.array([index[p.underlyings[i.underlying]] for i in listed]),
            strike=np.array([i.strike_e18 / E18 if i.kind.is_option else 0.0 for i in listed]),
            expiry_years=np.array([max(0.0, i.expiry_ms - t) / YEAR_MS for i in listed]),
        )
        spot = np.array([priced[a].price for a in names])
        forward = spot[inst.underlying] * np.exp(p.margin.rate * inst.expiry_years)
        atm_vol = np.array([self.vol_values.get(a, p.vol_floor) for a in names])
        vols = self._vols(t, listed, inst, forward, atm_vol, names, p)
        vol = np.array([v.value for v in vols])
        risk = mg.instrument_values(inst, spot, vol, atm_vol, p.margin)
        columns = {i.instrument: n for n, i in enumerate(listed)}
        positions = self.book.positions(columns)
        accounts = list(self.book.accounts)
        portfolio = np.full(len(accounts), p.margin_mode == "portfolio")
        for account, mode in p.margin_modes.items():
            row = self.book.accounts.get(account)
            if row is not None:
                portfolio[row] = mode == "portfolio"
        costs = self.book.costs()
        collateral, collateral_bad = self._collateral(p)
        cash = self.book.cash_usd()
        ar = mg.reprice(positions, costs, collateral + cash, risk, p.margin, portfolio)
        ok = self._ok_assets(p)
        bad_instrument = np.array([names[u] not in ok for u in inst.underlying], dtype=float)
        depends_on_bad = (
            (abs(positions) @ bad_instrument > 0) | collateral_bad | self.book.unlisted(columns)
        )
        return _Tick(
            t=t,
            names=names,
            listed=listed,
            columns=columns,
            inst=inst,
            risk=risk,
            positions=positions,
            ar=ar,
            ok_assets=ok,
            vols=vols,
            costs=costs,
            accounts=accounts,
            portfolio=portfolio,
            not_ok=depends_on_bad,
            collateral_assets={t: a for t, (a, _) in p.collateral.items()},
        )

    def _vols(
        self,
        t: int,
        listed: list[InstrumentListed],
        inst: mg.Instruments,
        forward: FloatArray,
        atm_vol: FloatArray,
        names: list[str],
        p: RiskParams,
    ) -> list[TaggedVol]:
        """Each instrument's vol, tagged: a fresh quoted IV (given, or implied from the
        quote's mid), else the underlying's SVI smile of fresh quotes, else its EWMA.
        ``forward`` is per instrument (USD)."""
        quoted: dict[int, float] = {}
        for n, i in enumerate(listed):
            q = self.quotes.get(i.instrument)
            if q is None or not i.kind.is_option or t - q.ts_ms > p.iv_max_age_ms:
                continue
            iv = q.iv
            if iv is None:  # implied from the quote's mid
                call = i.kind == InstrumentKind.CALL
                T, rate = inst.expiry_years[n], p.margin.rate
                iv = float(implied_vol(call, q.mid, forward[n], inst.strike[n], T, rate))
            if np.isfinite(iv):
                quoted[n] = iv
        surfaces = {
            u: _surface(
                t, [n for n in quoted if inst.underlying[n] == u], quoted, inst, forward, listed
            )
            for u in range(len(names))
        }
        out = []
        for n, i in enumerate(listed):
            u = int(inst.underlying[n])
            fallback = TaggedVol(float(atm_vol[u]), self.vol_sources.get(names[u], "floor"))
            if not i.kind.is_option:
                out.append(fallback)
                continue
            quote = QuotedIv(quoted[n], t) if n in quoted else None
            out.append(
                pick_vol(
                    k=float(np.log(inst.strike[n] / forward[n])),
                    expiry_ms=i.expiry_ms,
                    now_ms=t,
                    quote=quote,
                    surface=surfaces[u],
                    fallback=fallback,
                    max_quote_age_ms=p.iv_max_age_ms,
                    max_surface_age_ms=p.iv_max_age_ms,
                )
            )
        return out

    def _instrument_rows(self, tick: _Tick, p: RiskParams) -> list[InstrumentRow]:
        """Price, vol (and its source) and Greeks (``mg.InstrumentRisk``'s: delta and gamma
        per unit of spot) of every priced instrument."""
        inst, names, risk = tick.inst, tick.names, tick.risk
        spot = np.array([self.prices[a].price for a in names])[inst.underlying]
        return [
            InstrumentRow(
                instrument=i.instrument,
                ts_event_ms=tick.t,
                underlying=names[inst.underlying[n]],
                kind=int(inst.kind[n]),
                strike=float(inst.strike[n]),
                expiry_years=float(inst.expiry_years[n]),
                spot=float(spot[n]),
                price=float(risk.value[n]),
                vol=tick.vols[n].value,
                vol_source=tick.vols[n].source,
                delta=float(risk.delta[n]),
                gamma=float(risk.gamma[n]),
                vega=float(risk.vega[n]),
                theta=float(risk.theta[n]),
            )
            for n, i in enumerate(tick.listed)
        ]

    def _risk_rows(self, tick: _Tick, p: RiskParams) -> list[AccountRiskRow]:
        """Rows for the accounts whose health moved by ``risk_change`` or that are due."""
        n = len(self.book.accounts)
        grown = n - self.last_health.size
        self.last_health = np.concatenate([self.last_health, np.full(grown, np.nan)])
        self.last_emit = np.concatenate([self.last_emit, np.full(grown, -(2**62))])
        health = tick.ar.health
        moved = ~np.isclose(health, self.last_health, rtol=p.risk_change, atol=0.0)
        moved[[self.book.accounts[a] for a in self.wallet_moved if a in self.book.accounts]] = True
        since = tick.t - self.last_emit
        due = np.flatnonzero(
            (moved & (since >= p.risk_min_interval_ms)) | (since >= p.risk_interval_ms)
        )
        self.last_health[due] = health[due]
        self.last_emit[due] = tick.t
        self.wallet_moved -= {tick.accounts[r] for r in due}
        rows = tick.positions[due]
        per_underlying = [
            mg.net_by_underlying(rows, greek, tick.inst, len(tick.names))
            for greek in (tick.risk.delta, tick.risk.gamma, tick.risk.vega)
        ]
        pnl = rows @ tick.risk.value - tick.costs[due]
        accounts = tick.accounts
        return [
            AccountRiskRow(
                account=accounts[r],
                ts_event_ms=tick.t,
                equity=float(tick.ar.equity[r]),
                im=float(tick.ar.im[r]),
                mm=float(tick.ar.mm[r]),
                health=float(health[r]),
                worst_scenario=int(tick.ar.worst[r]),
                pnl=float(pnl[n]),
                bad_debt_usd=max(0.0, -float(tick.ar.equity[r])),
                margin_mode="portfolio" if tick.portfolio[r] else "standard",
                greeks=_greeks_json(tick.names, [g[n] for g in per_underlying]),
                wallet=self._wallet_json(accounts[r], p),
            )
            for n, r in enumerate(due)
        ]

    def _wallet_json(self, account: str, p: RiskParams) -> str:
        """JSON: asset -> the account's wallet holdings of its DEX-hedge token, units."""
        hedges = p.dex_hedges.get(account, {})
        held = {asset: self.wallet.units(account, h) for asset, h in sorted(hedges.items())}
        return msgspec.json.encode(held).decode()

    def _collateral(self, p: RiskParams) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Haircut collateral value per account row (USD), and whether the account holds a
        token whose price may not be acted on (its asset has no ``ok`` row). Tokens not in
        ``p.collateral`` are worth nothing."""
        tokens = sorted(p.collateral)
        amounts = self.book.collateral_amounts(
            {t: (n, p.collateral[t][1]) for n, t in enumerate(tokens)}
        )
        price = np.array([self._token_price(p.collateral[t][0], p) for t in tokens])
        haircut = p.margin.haircut_vector([p.collateral[t][0] for t in tokens])
        ok = self._ok_assets(p)
        bad = np.array([p.collateral[t][0] not in ok for t in tokens], dtype=float)
        return mg.collateral_value(amounts, price, haircut), abs(amounts) @ bad > 0

    def _token_price(self, asset: str, p: RiskParams) -> float:
        if asset in p.pegs:
            return p.pegs[asset]
        row = self.prices.get(asset)
        return 0.0 if row is None else row.price

    def _deny(
        self,
        out: RiskOut,
        t: int,
        key: tuple[str, str, str],
        reason: str,
        detail: str,
        size: float | None = None,
    ) -> None:
        """Emit an ``OrderDenied`` unless the same one was the last for ``key``."""
        if self.denied.get(key) == reason:
            return
        self.denied[key] = reason
        account, kind, instrument = key
        out.denials.append(
            OrderDenied(
                account=account, kind=kind, instrument=instrument, size=size, reason=reason,
                detail=detail, ts_event_ms=t,
            )
        )  # fmt: skip

    def _blocked(
        self, tick: _Tick, row: int, key: tuple[str, str, str], out: RiskOut, asset: str = ""
    ) -> bool:
        """Deny an order of the account at ``row`` whose prices may not be acted on, or
        that trades ``asset`` (a hedge's) at a price that may not be."""
        account = tick.accounts[row]
        if not tick.not_ok[row] and (not asset or asset in tick.ok_assets):
            return False
        mine = tick.positions.getrow(row)
        assets = {tick.names[tick.inst.underlying[c]] for c in mine.indices}
        if asset:
            assets.add(asset)
        held = {
            a for t, a in tick.collateral_assets.items() if self.book.collateral.get((account, t))
        }
        bad = sorted(a for a in assets | held if a not in tick.ok_assets)
        if bad:
            detail = f"prices not ok (or held): {', '.join(bad)}; window ending {tick.t}"
            self._deny(out, tick.t, key, "oracle_not_ok", detail)
        else:
            detail = f"a position in an instrument with no price; window ending {tick.t}"
            self._deny(out, tick.t, key, "unpriced_position", detail)
        return True

    def _liquidate(self, tick: _Tick, p: RiskParams, out: RiskOut) -> None:
        """Liquidation orders for the accounts below maintenance, sized all at once, or
        their denials."""
        below = tick.ar.equity < tick.ar.mm
        for denied in [k for k in self.denied if k[1] == "liquidation"]:
            if not below[self.book.accounts[denied[0]]]:
                del self.denied[denied]
        for late in [k for k in self.timed_out if k[1] == "liquidation"]:
            if not below[self.book.accounts[late[0]]]:
                del self.timed_out[late]
        go: list[int] = []
        for row in np.flatnonzero(below):
            account = tick.accounts[row]
            key = (account, "liquidation", "")
            if self._blocked(tick, int(row), key, out):
                continue
            sent = self.in_flight.get((account, "liquidation"))
            if sent is not None:
                detail = (
                    f"attempt {sent.attempt} sent at {sent.sent_ms}, legs not yet liquidated: "
                    f"{', '.join(sorted(sent.pending))}"
                )
                self._deny(out, tick.t, key, "in_flight", detail)
                continue
            go.append(int(row))
        if not go:
            return
        orders = liquidation_orders(
            tick.positions[go], tick.ar.equity[go], tick.risk, p.margin, p.liquidation,
            tick.portfolio[go],
        )  # fmt: skip
        for r, order in zip(go, orders, strict=True):
            if order is None or not order.legs:
                continue
            account = tick.accounts[r]
            equity, mm = float(tick.ar.equity[r]), float(tick.ar.mm[r])
            reason = (
                f"equity {equity:.2f} < MM {mm:.2f} (health {order.health:.4f}); "
                f"close factor {order.close_factor}; window ending {tick.t}"
            )
            if equity < 0:
                reason += f"; bad debt {-equity:.2f}: closes the account"
            legs = [(tick.listed[leg.instrument].instrument, leg) for leg in order.legs]
            ids = {i: order_id("liquidation", account, tick.t, i) for i, _ in legs}
            attempt, previous = self._attempt(account, "liquidation", ids)
            self.in_flight[(account, "liquidation")] = InFlight(
                sent_ms=tick.t, attempt=attempt, legs=ids, pending=set(ids)
            )
            self.denied.pop((account, "liquidation", ""), None)
            out.orders.extend(
                Order(
                    order_id=ids[instrument],
                    kind="liquidation",
                    account=account,
                    instrument=instrument,
                    size=leg.size,
                    size_e18=str(self._size_e18(account, instrument, leg.size)),
                    price=leg.price,
                    oracle_price=leg.oracle_price,
                    bonus_usd=leg.bonus_usd,
                    reason=reason,
                    ts_event_ms=tick.t,
                    health=order.health,
                    worst_scenario=int(tick.ar.worst[r]),
                    asset=(asset := tick.names[tick.inst.underlying[leg.instrument]]),
                    underlying_price=float(self.prices[asset].price),
                    oracle_window_end_ms=self.prices[asset].window_end_ms,
                    position=float(tick.positions[r, leg.instrument]),
                    valid_until_ms=tick.t + p.valid_for_ms,
                    attempt=attempt,
                    previous_order_id=previous.get(instrument),
                )
                for instrument, leg in legs
            )

    def _size_e18(self, account: str, instrument: str, size: float) -> int:
        """A leg's size on chain (18 decimals): the exact position, negated, when ``size``
        closes it to within float rounding (1e-9 of it), else ``size`` rounded."""
        held = self.book.size.get((account, instrument), 0)
        if held and abs(size * E18 + held) <= 1e-9 * abs(held):
            return -held
        return e18(size)

    def _attempt(
        self, account: str, what: str, ids: dict[str, str]
    ) -> tuple[int, dict[str, str | None]]:
        """The attempt number of a new order and, per leg, the id of the leg it replaces:
        the timed-out attempt's leg in the same instrument, else its first leg."""
        last = self.timed_out.pop((account, what), None)
        if last is None:
            return 1, {}
        first = last.legs[min(last.legs)]
        return last.attempt + 1, {i: last.legs.get(i, first) for i in ids}

    def _hedge(
        self,
        tick: _Tick,
        account: str,
        row: int,
        asset: str,
        via: HedgeVia,
        p: RiskParams,
        out: RiskOut,
    ) -> None:
        """The hedge of the book at ``row`` in ``asset``, or its denial. Its delta is its
        positions' on the asset plus, for a DEX hedge, its wallet holdings of the token."""
        key = (account, via.kind, via.instrument)
        if via.dex is None and (asset not in tick.names or via.instrument not in tick.columns):
            detail = (
                f"{via.instrument} ({asset}) is not listed or not priced; window ending {tick.t}"
            )
            self._deny(out, tick.t, key, "no_hedge_instrument", detail)
            return
        if self._blocked(tick, row, key, out, asset):
            return
        sent = self.in_flight.get((account, via.instrument))
        if sent is not None:
            detail = f"attempt {sent.attempt} sent at {sent.sent_ms}, not yet traded"
            self._deny(out, tick.t, key, "in_flight", detail)
            return
        mine = np.asarray(tick.positions.getrow(row).toarray()).ravel()
        on_asset = tick.inst.underlying == (tick.names.index(asset) if asset in tick.names else -1)
        held = 0.0 if via.dex is None else self.wallet.units(account, via.dex)
        target = p.targets.get(account, {}).get(asset, 0.0)
        delta = float((mine * tick.risk.delta)[on_asset].sum()) + held
        gamma = float((mine * tick.risk.gamma)[on_asset].sum())
        spot = float(self.prices[asset].price)
        hedge = hedge_order(
            delta=delta,
            gamma=gamma,
            target=target,
            spot=spot,
            expiry_years=hedge_horizon(
                (mine * tick.risk.gamma)[on_asset], tick.inst.expiry_years[on_asset]
            ),
            params=p.hedge,
            rate=p.margin.rate,
        )
        wallet = "" if via.dex is None else f" (wallet {held:.6g})"
        if hedge.inside:
            self.timed_out.pop((account, via.instrument), None)
            detail = f"delta {delta:.4f}{wallet} within +-{hedge.band:.4f} of {target}"
            self._deny(out, tick.t, key, "within_band", detail, hedge.size)
            return
        ids = {via.instrument: order_id(via.kind, account, tick.t, via.instrument)}
        attempt, previous = self._attempt(account, via.instrument, ids)
        self.in_flight[(account, via.instrument)] = InFlight(
            sent_ms=tick.t, attempt=attempt, legs=ids, pending={via.instrument}
        )
        self.denied.pop(key, None)
        reason = (
            f"delta {delta:.4f}{wallet} outside band +-{hedge.band:.4f} around {target}; "
            f"window ending {tick.t}"
        )
        out.orders.append(
            Order(
                order_id=ids[via.instrument],
                kind=via.kind,
                account=account,
                instrument=via.instrument,
                size=hedge.size,
                size_e18=str(e18(hedge.size)),
                price=hedge.oracle_price,
                oracle_price=hedge.oracle_price,
                bonus_usd=0.0,
                reason=reason,
                ts_event_ms=tick.t,
                health=float(tick.ar.health[row]),
                worst_scenario=int(tick.ar.worst[row]),
                asset=asset,
                underlying_price=spot,
                oracle_window_end_ms=self.prices[asset].window_end_ms,
                position=held if via.dex is not None else float(mine[tick.columns[via.instrument]]),
                valid_until_ms=tick.t + p.valid_for_ms,
                attempt=attempt,
                previous_order_id=previous.get(via.instrument),
            )
        )


def _rejected(part: str, event: VenueEvent, reason: str) -> Rejected:
    """A venue event the book refused, as a deadletter row (stage ``venue``): its input
    partition's topic and partition; offset -1 (the shard sees the decoded event, not the
    message: ``reason`` names the block and log), the block time as ``timestamp_ms``, and
    the decoded event as JSON in ``raw``."""
    partition, topic = part.split("-", 1)
    return Rejected(
        stage=VENUE_STAGE, reason=reason, topic=topic, partition=int(partition), offset=-1,
        timestamp_ms=event.ts_ms, key=None, raw=msgspec.json.encode(event),
    )  # fmt: skip


def risk_step(
    state: RiskShard | None,
    item: tuple[str, VenueBatch | PriceBatch],
    *,
    params: RiskParams,
    parts: tuple[str, ...],
) -> tuple[RiskShard, RiskOut]:
    """The keyed step of a shard (one key per shard) over the gated partitions ``parts``
    (the venue's, and ``fills``' when read); the first shard reports the instruments."""
    shard, batch = item
    if state is None:
        state = RiskShard(parts, reports_instruments=shard == shard_key(0))
    if isinstance(batch, VenueBatch):
        state.on_venue(batch, params)
    else:
        state.on_prices(batch, params.cadence)
    return state, state.evaluate(params)


@dataclass(frozen=True, kw_only=True)
class _Tick:
    """One evaluation's view: priced underlyings and instruments, positions and their risk."""

    t: int
    names: list[str]
    listed: list[InstrumentListed]
    columns: dict[str, int]
    inst: mg.Instruments
    risk: mg.InstrumentRisk
    positions: sp.csr_matrix
    ar: mg.AccountRisk
    ok_assets: set[str]
    vols: list[TaggedVol]
    costs: FloatArray
    """Cost of each account's fills, USD."""
    accounts: list[str]
    """Account addresses in row order."""
    portfolio: npt.NDArray[np.bool_]
    """Per account row: portfolio margined (else standard)."""
    not_ok: npt.NDArray[np.bool_]
    """Per account row: its equity or margin depends on a price that is not ``ok`` (a
    position's underlying, a collateral token's asset, their crosses) or on no price."""
    collateral_assets: dict[str, str]
    """Collateral token -> its asset."""
