"""The risk shard: when it evaluates, and the orders a price drop or a delta breach gives."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from operators.accounts import E18
from operators.greeks import black76
from operators.margin import MarginParams
from operators.model import (
    AccountRiskRow,
    InstrumentRow,
    OptionQuote,
    OraclePrice,
    OracleProgress,
    Order,
    PriceBatch,
)
from operators.risk import RiskOut, RiskParams, RiskShard
from operators.units import InstrumentKind
from operators.venue import CollateralMove, Fill, InstrumentListed, VenueBatch

W = 60_000
T0 = 1_700_000_040_000  # a window end
WETH, USDC = "0x" + "e" * 40, "0x" + "c" * 40
PERP, CALL = "0x" + "1" * 64, "0x" + "2" * 64
ACCOUNTS = ["0x" + c * 40 for c in "abcd"]
PARAMS = RiskParams(
    window_ms=W, assets=("ETH",), underlyings={WETH: "ETH"},
    collateral={USDC: ("USDC", 6)}, pegs={"USDC": 1.0}, vol_floor=0.6, vol_cap=0.6,
)  # fmt: skip
"""A fixed 60 % vol (floor = cap), so that margin moves with the price alone: a 20 ETH long
with 10,000 USDC has MM 23 % of notional (the -20 % tail scenario plus a 3 % add-on)."""


def _setup(longs: dict[str, int]) -> list:
    events: list = [
        InstrumentListed(
            instrument=PERP,
            underlying=WETH,
            kind=InstrumentKind.PERP,
            strike_e18=0,
            expiry_s=0,
            ts_ms=T0 - 50_000,
            seq=1,
            removed=False,
        )
    ]
    for n, (account, size) in enumerate(longs.items()):
        events.append(
            CollateralMove(
                account=account,
                token=USDC,
                amount=10_000 * 10**6,
                ts_ms=T0 - 40_000,
                seq=10 + n,
                removed=False,
            )
        )
        events.append(
            Fill(
                account=account,
                instrument=PERP,
                size_e18=size * E18,
                price_e18=2_000 * E18,
                liquidator=None,
                ts_ms=T0 - 30_000,
                seq=20 + n,
                removed=False,
            )
        )
    return events


def _price(end: int, price: float, status: str = "ok") -> OraclePrice:
    return OraclePrice(
        asset="ETH", window_start_ms=end - W, window_end_ms=end, price=price, confidence=1.0,
        sources=3, status=status, held=False, revision=0,
    )  # fmt: skip


def _shard(reports_instruments: bool = False) -> RiskShard:
    return RiskShard(("0-chain.logs",), reports_instruments)


def _flat(out: RiskOut) -> list:
    return [*out.instruments, *out.rows, *out.orders]


def _run(shard: RiskShard, events: list, prices: list[OraclePrice], p: RiskParams = PARAMS) -> list:
    shard.on_venue(
        VenueBatch("0-chain.logs", max(r.window_end_ms for r in prices), False, events), p
    )
    out = []
    for row in prices:
        shard.on_prices(PriceBatch([row, OracleProgress("ETH", row.window_end_ms)]))
        out += _flat(shard.evaluate(p))
    return out


def _orders(out: list) -> list[Order]:
    return [o for o in out if isinstance(o, Order)]


def test_price_drop_gives_exactly_one_liquidation_order_per_undercollateralised_account() -> None:
    longs = {ACCOUNTS[0]: 20, ACCOUNTS[1]: 20, ACCOUNTS[2]: 20, ACCOUNTS[3]: 5}
    # At 1,940: equity 10,000 - 20 * 60 = 8,800 < MM 0.23 * 38,800 = 8,924 (health 0.986).
    prices = [_price(T0, 2_000.0), _price(T0 + W, 1_940.0), _price(T0 + 2 * W, 1_940.0)]

    orders = _orders(_run(_shard(), _setup(longs), prices))

    assert sorted(o.account for o in orders) == sorted(ACCOUNTS[:3])
    assert all(o.kind == "liquidation" and o.instrument == PERP and o.size < 0 for o in orders)
    assert all(o.ts_event_ms == T0 + W and 0.95 < o.health < 1 for o in orders)
    # Aave close factor: health above 0.95 -> at most half of the 20 ETH at once.
    assert all(-10 <= o.size < 0 and "close factor 0.5" in o.reason for o in orders)
    assert all(o.price < o.oracle_price == 1_940.0 for o in orders)  # the bonus
    assert len({o.order_id for o in orders}) == 3


def test_same_drop_on_a_stale_price_gives_no_order() -> None:
    prices = [_price(T0, 2_000.0), _price(T0 + W, 1_700.0, "stale")]
    assert _orders(_run(_shard(), _setup({ACCOUNTS[0]: 20}), prices)) == []


def test_evaluation_waits_for_venue_watermark_and_oracle_progress() -> None:
    shard = _shard()
    shard.on_venue(VenueBatch("0-chain.logs", T0 - 1, False, _setup({ACCOUNTS[0]: 20})), PARAMS)
    shard.on_prices(PriceBatch([_price(T0, 2_000.0)]))
    assert _flat(shard.evaluate(PARAMS)) == []  # no oracle progress yet
    shard.on_prices(PriceBatch([OracleProgress("ETH", T0)]))
    assert _flat(shard.evaluate(PARAMS)) == []  # venue events up to T0 may still come
    shard.on_venue(VenueBatch("0-chain.logs", T0, False, []), PARAMS)
    rows = _flat(shard.evaluate(PARAMS))
    assert [(r.account, r.ts_event_ms) for r in rows if isinstance(r, AccountRiskRow)] == [
        (ACCOUNTS[0], T0)
    ]


def test_order_ids_repeat_on_replay() -> None:
    longs = {ACCOUNTS[0]: 20}
    prices = [_price(T0, 2_000.0), _price(T0 + W, 1_700.0)]
    first = _orders(_run(_shard(), _setup(longs), prices))
    again = _orders(_run(_shard(), _setup(longs), prices))
    assert first and [o.order_id for o in first] == [o.order_id for o in again]


def test_band_breach_gives_one_hedge_order_for_the_book() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}})
    expiry_s = (T0 + 30 * 86_400_000) // 1000  # a 30-day call
    events = [
        *_setup({book: 0}),
        InstrumentListed(
            instrument=CALL,
            underlying=WETH,
            kind=InstrumentKind.CALL,
            strike_e18=2_000 * E18,
            expiry_s=expiry_s,
            ts_ms=T0 - 50_000,
            seq=2,
            removed=False,
        ),
        Fill(
            account=book,
            instrument=CALL,
            size_e18=50 * E18,
            price_e18=80 * E18,
            liquidator=None,
            ts_ms=T0 - 20_000,
            seq=30,
            removed=False,
        ),
    ]
    orders = _orders(_run(_shard(), events, [_price(T0, 2_000.0)], p))
    (hedge,) = orders
    assert hedge.kind == "hedge" and hedge.instrument == PERP and hedge.size < -10  # ~ -0.5 * 50


def replace_params(**changes: object) -> RiskParams:
    return dataclasses.replace(PARAMS, **changes)  # type: ignore[arg-type]


def test_hedge_stays_in_flight_until_the_book_trades_the_hedge_instrument() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}})
    expiry_s = (T0 + 30 * 86_400_000) // 1000
    events = [
        *_setup({book: 0}),
        InstrumentListed(
            instrument=CALL,
            underlying=WETH,
            kind=InstrumentKind.CALL,
            strike_e18=2_000 * E18,
            expiry_s=expiry_s,
            ts_ms=T0 - 50_000,
            seq=2,
            removed=False,
        ),
        Fill(
            account=book,
            instrument=CALL,
            size_e18=50 * E18,
            price_e18=80 * E18,
            liquidator=None,
            ts_ms=T0 - 20_000,
            seq=30,
            removed=False,
        ),
        Fill(
            account=book,
            instrument=PERP,
            size_e18=-E18,
            price_e18=2_000 * E18,
            liquidator=None,
            ts_ms=T0 + W + 1_000,
            seq=40,
            removed=False,
        ),  # a partial fill
    ]
    prices = [_price(T0 + i * W, 2_000.0) for i in range(4)]
    orders = _orders(_run(_shard(), events, prices, p))
    # One order at T0; none at T0 + W (in flight); the fill clears it: a new one at T0 + 2W.
    assert [o.ts_event_ms for o in orders] == [T0, T0 + 2 * W]


def test_reporting_shard_writes_each_instrument_with_its_vol_source() -> None:
    expiry_s = (T0 + 30 * 86_400_000) // 1000
    events = [
        *_setup({ACCOUNTS[0]: 1}),
        InstrumentListed(
            instrument=CALL,
            underlying=WETH,
            kind=InstrumentKind.CALL,
            strike_e18=2_000 * E18,
            expiry_s=expiry_s,
            ts_ms=T0 - 50_000,
            seq=2,
            removed=False,
        ),
    ]
    out = _run(_shard(reports_instruments=True), events, [_price(T0, 2_000.0)])
    rows = {r.instrument: r for r in out if isinstance(r, InstrumentRow)}
    perp, call = rows[PERP], rows[CALL]
    assert (perp.price, perp.delta, perp.gamma, perp.vol_source) == (2_000.0, 1.0, 0.0, "floor")
    assert 0.5 < call.delta < 0.6 and call.gamma > 0 and call.vega > 0 and call.theta < 0
    assert call.vol == 0.6 and call.underlying == "ETH"
    assert not any(
        isinstance(r, InstrumentRow) for r in _run(_shard(), events, [_price(T0, 2_000.0)])
    )


def test_vol_comes_from_a_quoted_iv_else_the_svi_smile_else_the_ewma() -> None:
    expiry_s = (T0 + 30 * 86_400_000) // 1000
    later_s = (T0 + 90 * 86_400_000) // 1000
    strikes = [1_600, 1_800, 1_900, 2_000, 2_100, 2_200, 2_400]
    ids = {k: "0x" + format(k, "064x") for k in strikes}
    events: list = [*_setup({ACCOUNTS[0]: 1})]
    for k, inst in ids.items():
        events.append(
            InstrumentListed(
                instrument=inst,
                underlying=WETH,
                kind=InstrumentKind.CALL,
                strike_e18=k * E18,
                expiry_s=expiry_s,
                ts_ms=T0 - 50_000,
                seq=3,
                removed=False,
            )
        )
    far = "0x" + "f" * 64
    events.append(
        InstrumentListed(
            instrument=far,
            underlying=WETH,
            kind=InstrumentKind.CALL,
            strike_e18=2_000 * E18,
            expiry_s=later_s,
            ts_ms=T0 - 50_000,
            seq=4,
            removed=False,
        )
    )
    smile = {k: 0.5 + 0.4 * (k / 2_000 - 1) ** 2 for k in strikes}  # a smooth smile
    quoted = [k for k in strikes if k != 1_900]
    events += [
        OptionQuote(instrument=ids[k], iv=smile[k], mid=0.0, ts_ms=T0 - 10_000, source="q")
        for k in quoted
    ]

    out = _run(_shard(reports_instruments=True), events, [_price(T0, 2_000.0)])

    rows = {r.instrument: r for r in out if isinstance(r, InstrumentRow)}
    assert (rows[ids[2_000]].vol, rows[ids[2_000]].vol_source) == (smile[2_000], "quote_iv")
    # 1,900 is not quoted: the smile fitted to the six others gives it, close to the truth
    assert rows[ids[1_900]].vol_source == "svi"
    assert abs(rows[ids[1_900]].vol - smile[1_900]) < 0.01
    # beyond the last quoted expiry the smile is held flat in vol (operators.vol.vol_at)
    assert rows[far].vol_source == "svi" and abs(rows[far].vol - smile[2_000]) < 0.01
    unquoted = _run(_shard(reports_instruments=True), events[: -len(quoted)], [_price(T0, 2_000.0)])
    assert {r.vol_source for r in unquoted if isinstance(r, InstrumentRow)} == {"floor"}


def test_account_row_has_pnl_and_greeks_and_respects_the_minimum_interval() -> None:
    p = replace_params(risk_min_interval_ms=2 * W)
    prices = [_price(T0 + i * W, price) for i, price in enumerate((2_000.0, 1_960.0, 1_940.0))]
    rows = [r for r in _run(_shard(), _setup({ACCOUNTS[0]: 20}), prices, p)
            if isinstance(r, AccountRiskRow)]  # fmt: skip
    # health moves every window, but a row at most every 2 minutes
    assert [r.ts_event_ms for r in rows] == [T0, T0 + 2 * W]
    last = rows[-1]
    assert last.pnl == 20 * (1_940.0 - 2_000.0)  # size x mark - cost
    assert json.loads(last.greeks) == {"ETH": {"delta": 20.0, "gamma": 0.0, "vega": 0.0}}
    assert last.equity == 10_000.0 + last.pnl


def test_instrument_listed_by_configuration_is_priced_like_a_venue_listing() -> None:
    configured = InstrumentListed(
        instrument=PERP,
        underlying=WETH,
        kind=InstrumentKind.PERP,
        strike_e18=0,
        expiry_s=0,
        ts_ms=0,
        seq=0,
        removed=False,
    )
    p = replace_params(instruments={PERP: configured})
    events = [e for e in _setup({ACCOUNTS[0]: 20}) if not isinstance(e, InstrumentListed)]
    rows = [r for r in _run(_shard(), events, [_price(T0, 1_900.0)], p)
            if isinstance(r, AccountRiskRow)]  # fmt: skip
    assert rows[0].pnl == 20 * (1_900.0 - 2_000.0)


def test_hedge_brings_the_book_back_to_its_configured_delta_target() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}}, targets={book: {"ETH": 15.0}})
    orders = _orders(_run(_shard(), _setup({book: 0}), [_price(T0, 2_000.0)], p))
    (hedge,) = orders
    assert hedge.kind == "hedge" and hedge.size == 15.0  # from delta 0 to the target 15


def test_smile_of_a_later_expiry_with_less_total_variance_is_not_used() -> None:
    near_s, far_s = (T0 + 30 * 86_400_000) // 1000, (T0 + 60 * 86_400_000) // 1000
    strikes = [1_600, 1_800, 1_900, 2_000, 2_100, 2_400]
    events: list = [*_setup({ACCOUNTS[0]: 1})]
    # total variance: near 0.9^2 x 30/365 = 0.067 > far 0.3^2 x 60/365 = 0.015
    for expiry_s, iv, tag in ((near_s, 0.9, "a"), (far_s, 0.3, "b")):
        for k in strikes:
            inst = "0x" + tag * 60 + format(k, "04x")
            events.append(
                InstrumentListed(
                    instrument=inst,
                    underlying=WETH,
                    kind=InstrumentKind.CALL,
                    strike_e18=k * E18,
                    expiry_s=expiry_s,
                    ts_ms=T0 - 50_000,
                    seq=3,
                    removed=False,
                )
            )
            if k != 2_000:  # five quoted strikes per expiry: enough for a smile
                events.append(
                    OptionQuote(instrument=inst, iv=iv, mid=0.0, ts_ms=T0 - 10_000, source="q")
                )
    out = _run(_shard(reports_instruments=True), events, [_price(T0, 2_000.0)])
    rows = {r.instrument: r for r in out if isinstance(r, InstrumentRow)}
    near_atm = rows["0x" + "a" * 60 + format(2_000, "04x")]
    far_atm = rows["0x" + "b" * 60 + format(2_000, "04x")]
    assert near_atm.vol_source == "svi" and abs(near_atm.vol - 0.9) < 0.01
    # the far smile is dropped: the near one, held flat beyond its expiry, prices it
    assert far_atm.vol_source == "svi" and abs(far_atm.vol - 0.9) < 0.01


def test_instrument_delta_is_per_unit_of_spot_like_the_account_delta_at_a_nonzero_rate() -> None:
    # At rate 5 % over 90 days dV/dF differs from dV/dS by exp(rT) = 1.012: both outputs must
    # give dV/dS, which central differences of the engine's own price in spot check (h = 1 USD:
    # truncation h^2 V''' / 6 with V''' ~ gamma / S ~ 3e-7, so ~5e-8 on a delta of 0.5).
    p = replace_params(margin=MarginParams(rate=0.05))
    expiry_s = (T0 + 90 * 86_400_000) // 1000
    account = ACCOUNTS[0]
    listed = InstrumentListed(
        instrument=CALL,
        underlying=WETH,
        kind=InstrumentKind.CALL,
        strike_e18=2_100 * E18,
        expiry_s=expiry_s,
        ts_ms=0,
        seq=2,
        removed=False,
    )
    events = [
        listed,
        CollateralMove(
            account=account,
            token=USDC,
            amount=10_000 * 10**6,
            ts_ms=T0 - 40_000,
            seq=10,
            removed=False,
        ),
        Fill(
            account=account,
            instrument=CALL,
            size_e18=E18,
            price_e18=100 * E18,
            liquidator=None,
            ts_ms=T0 - 30_000,
            seq=20,
            removed=False,
        ),
    ]

    def run(spot: float) -> tuple[InstrumentRow, AccountRiskRow]:
        out = _run(_shard(reports_instruments=True), events, [_price(T0, spot)], p)
        (row,) = (r for r in out if isinstance(r, InstrumentRow))
        (risk,) = (r for r in out if isinstance(r, AccountRiskRow))
        return row, risk

    row, risk = run(2_000.0)
    up, down = run(2_001.0)[0].price, run(1_999.0)[0].price
    assert row.delta == json.loads(risk.greeks)["ETH"]["delta"]
    assert row.gamma == json.loads(risk.greeks)["ETH"]["gamma"]
    assert row.delta == pytest.approx((up - down) / 2.0, rel=1e-6)
    assert row.gamma == pytest.approx(up - 2.0 * row.price + down, rel=1e-4)
    growth = math.exp(0.05 * row.expiry_years)
    forward_delta = black76(True, 2_000.0 * growth, 2_100.0, row.expiry_years, 0.05, 0.6).delta
    assert row.delta == pytest.approx(float(forward_delta) * growth, rel=1e-12)
    assert abs(row.delta - float(forward_delta)) > 5e-3  # the forward's delta would fail


def test_a_gap_of_years_between_two_prices_gives_two_evaluations_not_one_per_window() -> None:
    shard = _shard()
    years = 13 * 365 * 24 * 3600 * 1000 // W * W
    shard.on_venue(VenueBatch("0-chain.logs", T0 + years, False, _setup({ACCOUNTS[0]: 20})), PARAMS)
    shard.on_prices(PriceBatch([_price(T0, 2_000.0), _price(T0 + years, 2_000.0)]))
    shard.on_prices(PriceBatch([OracleProgress("ETH", T0 + years)]))
    assert shard.ready(PARAMS) == [T0, T0 + years]
    rows = [r for r in _flat(shard.evaluate(PARAMS)) if isinstance(r, AccountRiskRow)]
    assert [r.ts_event_ms for r in rows] == [T0, T0 + years]
