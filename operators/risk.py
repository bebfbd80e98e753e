"""The risk engine for one shard of accounts: when to evaluate, and what comes out.

Evaluation is deterministic in event time. The shard evaluates at each window end T (a
grid of ``window_ms``) once (a) every input partition of the venue's events has passed T
(``operators.clock.Watermarks``, as for the oracle) and (b) every oracle asset has
published, or passed without a row, the window ending at T (``OracleProgress``, which
follows the asset's rows in the same ``PriceBatch`` or on the same topic partition). It
then applies the venue events before T in chain order, takes each asset's price of the
window ending at T, and reprices the whole shard at once (``operators.margin.reprice``:
one sparse product).
So live, replay and any number of workers give the same rows and orders.

Out come, per evaluation: an ``AccountRisk`` row for each account whose health moved by
more than ``risk_change`` (or at least every ``risk_interval_ms``), a liquidation order
for each account below maintenance that has none in flight (on ``ok`` prices only), and
a hedge order for each book outside its band. Order ids are a hash of what triggered
them, so a replay or a resumed run produces the same ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from operators import margin as mg
from operators.accounts import Book, shard_key
from operators.clock import Watermarks
from operators.liquidation import HedgeParams, LiquidationParams, hedge_order, liquidation_order
from operators.model import (
    AccountRiskRow,
    InstrumentRow,
    OptionQuote,
    OraclePrice,
    OracleProgress,
    Order,
    PriceBatch,
)
from operators.units import E18, YEAR_MS, InstrumentKind
from operators.venue import Fill, InstrumentListed, VenueBatch, VenueEvent
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

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RiskOut:
    """What one step of a shard gives, per evaluation in order of time."""

    rows: list[AccountRiskRow] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    instruments: list[InstrumentRow] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RiskParams:
    """Everything a shard needs; times in ms, amounts in USD.

    ``underlyings`` maps an underlying token address to its oracle asset; ``collateral``
    a collateral token address to (asset priced by the oracle or a peg, decimals).
    ``books`` maps an account we run to {asset: hedge instrument id (a perp or spot)}.
    """

    window_ms: int
    idle_timeout_ms: int = 0
    """0: no venue partition is ever taken as idle (``operators.clock``)."""
    assets: tuple[str, ...]
    underlyings: dict[str, str]
    collateral: dict[str, tuple[str, int]]
    pegs: dict[str, float]
    margin: mg.MarginParams = field(default_factory=mg.MarginParams)
    liquidation: LiquidationParams = field(default_factory=LiquidationParams)
    hedge: HedgeParams = field(default_factory=HedgeParams)
    books: dict[str, dict[str, str]] = field(default_factory=dict)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    """account -> {asset: delta target, contracts}; 0 where absent."""
    instruments: dict[str, InstrumentListed] = field(default_factory=dict)
    """Instruments listed by configuration; the venue's own listings take precedence."""
    liquidation_timeout_ms: int = 300_000
    risk_change: float = 0.01
    risk_min_interval_ms: int = 0
    risk_interval_ms: int = 3_600_000
    vol_half_life_s: float = 86_400.0
    vol_floor: float = 0.2
    vol_cap: float = 3.0
    iv_max_age_ms: int = 300_000


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
    """A deterministic id: SHA-256 of what triggered the order, hex, 32 characters."""
    return hashlib.sha256("|".join(map(str, trigger)).encode()).hexdigest()[:32]


class RiskShard:
    """The state of one shard (one key): its book, instruments, prices and clocks, fed
    by the venue's input partitions ``parts``.

    ``reports_instruments``: this shard writes the ``InstrumentRow``s (every shard prices
    the same instruments; one reports them).
    """

    def __init__(self, parts: tuple[str, ...], reports_instruments: bool = False) -> None:
        self.reports_instruments = reports_instruments
        self.book = Book()
        self.instruments: dict[str, InstrumentListed] = {}
        self.pending: list[VenueEvent | OptionQuote] = []
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
        self.in_flight: dict[tuple[str, str], int] = {}
        """(account, what) -> when the order was sent: what is ``liquidation`` (cleared by
        a ``Liquidated`` event) or the hedge instrument (cleared by the book's trade in it);
        both expire after ``liquidation_timeout_ms``."""
        self.last_health = np.zeros(0)
        self.last_emit = np.zeros(0, dtype=np.int64)

    # --- inputs ---------------------------------------------------------------------

    def on_venue(self, batch: VenueBatch, p: RiskParams) -> None:
        """Take venue events and option quotes, and their partition's watermark; each
        event is due at the end of its window."""
        self.pending.extend(batch.events)
        self.due.update((e.ts_ms // p.window_ms + 1) * p.window_ms for e in batch.events)
        self.clock.report(batch.part, batch.watermark_ms, batch.eof, batch.broker_ms)

    def on_prices(self, batch: PriceBatch) -> None:
        """Take the oracle's rows and progress in order. A window's first publication is
        kept and makes its window end due; a later correction does not re-run the past."""
        for item in batch.items:
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

    def _apply_until(self, t: int) -> None:
        due = [e for e in self.pending if e.ts_ms < t]
        self.pending = [e for e in self.pending if e.ts_ms >= t]
        for quote in sorted((q for q in due if isinstance(q, OptionQuote)), key=_quote_order):
            self.quotes[quote.instrument] = quote
        venue = (e for e in due if not isinstance(e, OptionQuote))
        for event in sorted(venue, key=lambda e: (e.seq, e.removed)):
            if isinstance(event, InstrumentListed):
                if event.removed:
                    self.instruments.pop(event.instrument, None)
                else:
                    self.instruments[event.instrument] = event
                continue
            self.book.apply(event)
            if isinstance(event, Fill) and event.liquidator is not None and not event.removed:
                self.in_flight.pop((event.account, "liquidation"), None)
            elif isinstance(event, Fill) and not event.removed:
                self.in_flight.pop((event.account, event.instrument), None)

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
        self._apply_until(t)
        self._advance_prices(t, p)
        for key, sent in list(self.in_flight.items()):
            if t - sent >= p.liquidation_timeout_ms:
                del self.in_flight[key]
        tick = self._tick(t, p)
        if tick is None:
            return
        if self.reports_instruments:
            out.instruments.extend(self._instrument_rows(tick, p))
        if not self.book.accounts:
            return
        out.rows.extend(self._risk_rows(tick, p))
        for below in np.flatnonzero(tick.ar.equity < tick.ar.mm):  # the few to liquidate
            out.orders.extend(self._liquidate(tick, tick.accounts[below], int(below), p))
        for account, hedges in sorted(p.books.items()):
            book_row = self.book.accounts.get(account)
            for asset, instrument in sorted(hedges.items()):
                if book_row is not None:
                    out.orders.extend(self._hedge(tick, account, book_row, asset, instrument, p))

    def _tick(self, t: int, p: RiskParams) -> _Tick | None:
        """Everything priced at ``t``: instruments, the shard's positions and their risk."""
        priced = self.prices
        known = {**p.instruments, **self.instruments}
        listed = sorted(
            (i for i in known.values() if p.underlyings.get(i.underlying) in priced),
            key=lambda i: i.instrument,
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
        portfolio = np.ones(len(self.book.accounts), dtype=bool)
        costs = self.book.costs()
        ar = mg.reprice(positions, costs, self._collateral(p), risk, p.margin, portfolio)
        ok = {a for a in names if priced[a].status == "ok" and not priced[a].held}
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
            accounts=list(self.book.accounts),
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
        since = tick.t - self.last_emit
        due = np.flatnonzero(
            (moved & (since >= p.risk_min_interval_ms)) | (since >= p.risk_interval_ms)
        )
        self.last_health[due] = health[due]
        self.last_emit[due] = tick.t
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
                greeks=_greeks_json(tick.names, [g[n] for g in per_underlying]),
            )
            for n, r in enumerate(due)
        ]

    def _collateral(self, p: RiskParams) -> FloatArray:
        """Haircut collateral value per account row, USD."""
        tokens = sorted(p.collateral)
        amounts = self.book.collateral_amounts(
            {t: (n, p.collateral[t][1]) for n, t in enumerate(tokens)}
        )
        price = np.array([self._token_price(p.collateral[t][0], p) for t in tokens])
        haircuts = p.margin.haircut_table()
        haircut = np.array([haircuts.get(p.collateral[t][0], 0.0) for t in tokens])
        return mg.collateral_value(amounts, price, haircut)

    def _token_price(self, asset: str, p: RiskParams) -> float:
        if asset in p.pegs:
            return p.pegs[asset]
        row = self.prices.get(asset)
        return 0.0 if row is None else row.price

    def _liquidate(self, tick: _Tick, account: str, row: int, p: RiskParams) -> list[Order]:
        if (account, "liquidation") in self.in_flight:
            return []  # one liquidation in flight per account
        mine = tick.positions.getrow(row)
        used = {tick.names[tick.inst.underlying[c]] for c in mine.indices}
        equity, mm = float(tick.ar.equity[row]), float(tick.ar.mm[row])
        order = liquidation_order(
            mine,
            equity,
            tick.risk,
            p.margin,
            p.liquidation,
            portfolio_margined=True,
            oracle_ok=used <= tick.ok_assets,
        )
        if order is None:
            return []
        self.in_flight[(account, "liquidation")] = tick.t
        reason = (
            f"equity {equity:.2f} < MM {mm:.2f} (health {order.health:.4f}); "
            f"close factor {order.close_factor}; window ending {tick.t}"
        )
        worst = int(tick.ar.worst[row])
        return [
            Order(
                order_id=order_id(
                    "liquidation", account, tick.t, tick.listed[leg.instrument].instrument
                ),
                kind="liquidation",
                account=account,
                instrument=tick.listed[leg.instrument].instrument,
                size=leg.size,
                price=leg.price,
                oracle_price=leg.oracle_price,
                bonus_usd=leg.bonus_usd,
                reason=reason,
                ts_event_ms=tick.t,
                health=order.health,
                worst_scenario=worst,
            )
            for leg in order.legs
        ]

    def _hedge(
        self, tick: _Tick, account: str, row: int, asset: str, instrument: str, p: RiskParams
    ) -> list[Order]:
        if asset not in tick.names or instrument not in tick.columns:
            return []
        if (account, instrument) in self.in_flight:
            return []  # one hedge in flight per book and instrument
        mine = np.asarray(tick.positions.getrow(row).toarray()).ravel()
        on_asset = tick.inst.underlying == tick.names.index(asset)
        target = p.targets.get(account, {}).get(asset, 0.0)
        delta = float((mine * tick.risk.delta)[on_asset].sum())
        gamma = float((mine * tick.risk.gamma)[on_asset].sum())
        option = tick.inst.kind >= InstrumentKind.CALL
        expiries = tick.inst.expiry_years[on_asset & (mine != 0) & option]
        hedge = hedge_order(
            delta=delta,
            gamma=gamma,
            target=target,
            spot=float(self.prices[asset].price),
            expiry_years=float(expiries.min()) if expiries.size else 0.0,
            instrument=tick.columns[instrument],
            oracle_ok=asset in tick.ok_assets,
            params=p.hedge,
            rate=p.margin.rate,
        )
        if hedge is None:
            return []
        self.in_flight[(account, instrument)] = tick.t
        reason = (
            f"delta {delta:.4f} outside band +-{hedge.band:.4f} around {target}; "
            f"window ending {tick.t}"
        )
        return [
            Order(
                order_id=order_id("hedge", account, tick.t, instrument),
                kind="hedge",
                account=account,
                instrument=instrument,
                size=hedge.size,
                price=hedge.oracle_price,
                oracle_price=hedge.oracle_price,
                bonus_usd=0.0,
                reason=reason,
                ts_event_ms=tick.t,
                health=float(tick.ar.health[row]),
                worst_scenario=int(tick.ar.worst[row]),
            )
        ]


def risk_step(
    state: RiskShard | None,
    item: tuple[str, VenueBatch | PriceBatch],
    *,
    params: RiskParams,
    parts: tuple[str, ...],
) -> tuple[RiskShard, RiskOut]:
    """The keyed step of a shard (one key per shard) over the venue's partitions ``parts``;
    the first shard reports the instruments."""
    shard, batch = item
    if state is None:
        state = RiskShard(parts, reports_instruments=shard == shard_key(0))
    if isinstance(batch, VenueBatch):
        state.on_venue(batch, params)
    else:
        state.on_prices(batch)
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
