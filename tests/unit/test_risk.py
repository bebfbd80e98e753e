"""The risk shard: when it evaluates, and the orders a price drop or a delta breach gives."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.accounts import E18
from operators.config import ConfigError, load_config
from operators.greeks import black76
from operators.margin import MarginParams
from operators.model import (
    AccountRiskRow,
    Execution,
    InstrumentRow,
    OptionQuote,
    OraclePrice,
    OracleProgress,
    Order,
    PriceBatch,
)
from operators.risk import RiskOut, RiskParams, RiskShard, order_id
from operators.stages import stage_params
from operators.units import InstrumentKind, e18
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
                order_id=None,
                ts_ms=T0 - 30_000,
                seq=20 + n,
                removed=False,
            )
        )
    return events


def _trade(account: str, instrument: str, size: float, price: float, seq: int, **kw):  # type: ignore[no-untyped-def]
    return Fill(
        account=account, instrument=instrument, size_e18=int(size * E18),
        price_e18=int(price * E18), liquidator=kw.get("liquidator"),
        order_id=kw.get("order_id"), ts_ms=kw.get("ts", T0 - 30_000), seq=seq,
        removed=kw.get("removed", False),
    )  # fmt: skip


def _call(expiry_ms: int) -> InstrumentListed:
    """The ETH call at 2,000 expiring at ``expiry_ms``."""
    return InstrumentListed(
        instrument=CALL, underlying=WETH, kind=InstrumentKind.CALL, strike_e18=2_000 * E18,
        expiry_s=expiry_ms // 1000, ts_ms=T0 - 50_000, seq=2, removed=False,
    )  # fmt: skip


def _call_book(expiry_ms: int, size: float = 10.0, price: float = 90.0) -> list:
    """The first account's book: flat in the perp, ``size`` calls bought at ``price``."""
    return [*_setup({ACCOUNTS[0]: 0}), _call(expiry_ms), _trade(ACCOUNTS[0], CALL, size, price, 30)]


DAYS_30 = 30 * 86_400_000


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
    events = _call_book(T0 + DAYS_30, size=50, price=80)  # a 30-day call
    orders = _orders(_run(_shard(), events, [_price(T0, 2_000.0)], p))
    (hedge,) = orders
    assert hedge.kind == "hedge" and hedge.instrument == PERP and hedge.size < -10  # ~ -0.5 * 50


def replace_params(**changes: object) -> RiskParams:
    return dataclasses.replace(PARAMS, **changes)  # type: ignore[arg-type]


def test_hedge_stays_in_flight_until_the_book_trades_the_hedge_instrument() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}})
    partial_fill = _trade(book, PERP, -1, 2_000, 40, ts=T0 + W + 1_000)
    events = [*_call_book(T0 + DAYS_30, size=50, price=80), partial_fill]
    prices = [_price(T0 + i * W, 2_000.0) for i in range(4)]
    orders = _orders(_run(_shard(), events, prices, p))
    # One order at T0; none at T0 + W (in flight); the fill clears it: a new one at T0 + 2W.
    assert [o.ts_event_ms for o in orders] == [T0, T0 + 2 * W]


def test_reporting_shard_writes_each_instrument_with_its_vol_source() -> None:
    events = [*_setup({ACCOUNTS[0]: 1}), _call(T0 + DAYS_30)]
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


def test_no_hedge_to_a_target_while_the_hedged_assets_price_is_not_ok() -> None:
    # the book holds nothing on ETH, so its equity does not depend on ETH's price; the
    # hedge to its target would trade at that price all the same
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}}, targets={book: {"ETH": 15.0}})
    shard = _shard()
    shard.on_venue(VenueBatch("0-chain.logs", T0, False, _setup({book: 0})), p)
    shard.on_prices(PriceBatch([_price(T0, 2_000.0, "degraded"), OracleProgress("ETH", T0)]))
    out = shard.evaluate(p)
    assert out.orders == []
    assert [(d.kind, d.reason) for d in out.denials] == [("hedge", "oracle_not_ok")]


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
            order_id=None,
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


# --- the money rules ----------------------------------------------------------------------

WBTC, WETH_TOKEN, JUNK = "0x" + "b" * 40, "0x" + "9" * 40, "0x" + "5" * 40
BTC_PERP = "0x" + "3" * 64


def _row(asset: str, end: int, price: float, status: str = "ok", held: bool = False):  # type: ignore[no-untyped-def]
    return OraclePrice(
        asset=asset, window_start_ms=end - W, window_end_ms=end, price=price, confidence=1.0,
        sources=3, status=status, held=held, revision=0,
    )  # fmt: skip


def _run_windows(
    shard: RiskShard, events: list, windows: list[dict[str, OraclePrice]], p: RiskParams
) -> list[RiskOut]:
    """Venue events, then one evaluation per window (asset -> its row)."""
    last = max(r.window_end_ms for rows in windows for r in rows.values())
    shard.on_venue(VenueBatch("0-chain.logs", last, False, events), p)
    outs = []
    for rows in windows:
        end = next(iter(rows.values())).window_end_ms
        items = [*rows.values(), *(OracleProgress(a, end) for a in p.assets)]
        shard.on_prices(PriceBatch(items))
        outs.append(shard.evaluate(p))
    return outs


def _deposit(account: str, token: str, amount: int, seq: int, ts: int = T0 - 40_000):  # type: ignore[no-untyped-def]
    return CollateralMove(account=account, token=token, amount=amount, ts_ms=ts, seq=seq,
                          removed=False)  # fmt: skip


def _perp(instrument: str, underlying: str) -> InstrumentListed:
    return InstrumentListed(
        instrument=instrument, underlying=underlying, kind=InstrumentKind.PERP, strike_e18=0,
        expiry_s=0, ts_ms=T0 - 50_000, seq=1, removed=False,
    )  # fmt: skip


ETH_COLLATERAL = replace_params(
    assets=("ETH",), collateral={USDC: ("USDC", 6), WETH_TOKEN: ("ETH", 18)}
)


def _eth_backed_long() -> list:
    # 20 ETH perp long at 2,000 (MM 9,200), backed by 6 WETH (haircut 20 %) and 1,000 USDC
    a = ACCOUNTS[0]
    return [
        _perp(PERP, WETH),
        _deposit(a, USDC, 1_000 * 10**6, 10),
        _deposit(a, WETH_TOKEN, 6 * E18, 11),
        _trade(a, PERP, 20, 2_000, 20),
    ]


def test_eth_collateral_priced_from_a_degraded_row_does_not_trigger_a_liquidation() -> None:
    # The finding: the oracle gate checked only the positions' underlyings, so a drop on a
    # degraded row (which prices the ETH collateral too) emitted a liquidation.
    windows = [{"ETH": _row("ETH", T0, 2_000.0)}, {"ETH": _row("ETH", T0 + W, 1_700.0, "degraded")}]
    outs = _run_windows(_shard(), _eth_backed_long(), windows, ETH_COLLATERAL)
    (row,) = outs[1].rows
    assert row.equity < row.mm  # under maintenance at the degraded price...
    assert outs[1].orders == []  # ...but no order on it
    (denied,) = outs[1].denials
    assert (denied.kind, denied.reason, denied.account) == (
        "liquidation", "oracle_not_ok", ACCOUNTS[0]
    )  # fmt: skip
    assert "ETH" in denied.detail
    # the same drop on an ok row liquidates
    ok = [windows[0], {"ETH": _row("ETH", T0 + W, 1_700.0)}]
    assert _orders(_flat(_run_windows(_shard(), _eth_backed_long(), ok, ETH_COLLATERAL)[1]))


def test_collateral_priced_through_a_cross_is_gated_on_the_cross_too() -> None:
    # a BTC perp long backed by USDC: BTC is priced through ETH (a WBTC/WETH pool), so a
    # degraded ETH row makes BTC's ok row unusable for orders
    p = replace_params(
        assets=("BTC", "ETH"), underlyings={WETH: "ETH", WBTC: "BTC"}, crosses={"BTC": "ETH"}
    )
    a = ACCOUNTS[0]
    events = [_perp(BTC_PERP, WBTC), _deposit(a, USDC, 15_000 * 10**6, 10),
              _trade(a, BTC_PERP, 1, 60_000, 20)]  # fmt: skip
    first = {"BTC": _row("BTC", T0, 60_000.0), "ETH": _row("ETH", T0, 2_000.0)}
    drop = {"BTC": _row("BTC", T0 + W, 50_000.0), "ETH": _row("ETH", T0 + W, 2_000.0, "degraded")}
    outs = _run_windows(_shard(), events, [first, drop], p)
    assert outs[1].orders == [] and outs[1].denials[0].reason == "oracle_not_ok"
    assert "ETH" not in outs[1].denials[0].detail.split(":")[0]  # the detail names BTC
    drop_ok = {**drop, "ETH": _row("ETH", T0 + W, 2_000.0)}
    assert _run_windows(_shard(), events, [first, drop_ok], p)[1].orders


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(1_500.0, 2_100.0),
            st.sampled_from(["ok", "degraded", "stale"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_no_order_is_ever_emitted_while_a_price_the_account_depends_on_is_not_ok(
    path: list[tuple[float, str, bool]],
) -> None:
    windows = [{"ETH": _row("ETH", T0, 2_000.0)}] + [
        {"ETH": _row("ETH", T0 + (n + 1) * W, price, status, held)}
        for n, (price, status, held) in enumerate(path)
    ]
    p = dataclasses.replace(ETH_COLLATERAL, books={ACCOUNTS[0]: {"ETH": PERP}})
    outs = _run_windows(_shard(), _eth_backed_long(), windows, p)
    for rows, out in zip(windows, outs, strict=True):
        eth = rows["ETH"]
        if eth.status != "ok" or eth.held:
            assert out.orders == []
        keys = [(d.account, d.kind, d.instrument, d.reason) for d in out.denials]
        assert len(keys) == len(set(keys))
    # no flood: the same denial is never emitted in two windows in a row (in between,
    # nothing could have changed its condition)
    for before, after in itertools.pairwise(outs):
        again = {(d.account, d.kind, d.instrument, d.reason) for d in before.denials}
        assert not again & {(d.account, d.kind, d.instrument, d.reason) for d in after.denials}


def test_an_unconfigured_collateral_token_is_worth_nothing_and_is_reported() -> None:
    a = ACCOUNTS[0]
    events = [*_setup({a: 1}), _deposit(a, JUNK, 10**30, 12)]
    (out,) = _run_windows(_shard(), events, [{"ETH": _row("ETH", T0, 2_000.0)}], PARAMS)
    (reject,) = out.rejects
    assert reject.stage == "venue" and reject.reason.startswith("unknown_collateral:")
    assert JUNK in reject.reason and reject.topic == "chain.logs" and reject.partition == 0
    assert out.rows[0].equity == 10_000.0  # the USDC only


def test_collateral_asset_without_a_haircut_is_a_configuration_error() -> None:
    # The finding: a configured collateral token whose asset had no haircut got 0 %.
    text = '[risk.collateral."' + JUNK + '"]\nasset = "LINK"\ndecimals = 18\n'
    with pytest.raises(ConfigError, match=r"LINK.*no haircut"):
        load_config(text)
    load_config(text + "[risk.margin]\nhaircuts = { LINK = 0.3 }\n")


def test_retracted_trade_that_was_never_added_goes_to_the_deadletter_with_stage_venue() -> None:
    ghost = ACCOUNTS[3]
    events = [*_setup({ACCOUNTS[0]: 1}), _trade(ghost, PERP, -50, 2_000, 40, removed=True)]
    prices = [{"ETH": _row("ETH", T0 + i * W, 2_000.0 * (1 + 0.1 * i))} for i in range(3)]
    outs = _run_windows(_shard(), events, prices, PARAMS)
    (reject,) = outs[0].rejects
    assert (reject.stage, reject.reason.split(":")[0]) == ("venue", "retraction_unknown")
    assert json.loads(reject.raw or b"")["account"] == ghost
    assert all(r.account != ghost for out in outs for r in out.rows)
    assert not any(o.account == ghost for out in outs for o in out.orders)


def test_trade_of_size_2_pow_255_minus_1_and_a_withdrawal_above_the_balance_are_rejected() -> None:
    a = ACCOUNTS[0]
    huge = Fill(account=a, instrument=PERP, size_e18=2**255 - 1, price_e18=2_000 * E18,
                liquidator=None, order_id=None, ts_ms=T0 - 20_000, seq=30,
                removed=False)  # fmt: skip
    withdraw = CollateralMove(account=a, token=USDC, amount=-(10**15), ts_ms=T0 - 20_000,
                              seq=31, removed=False)  # fmt: skip
    events = [*_setup({a: 1}), huge, withdraw]
    (out,) = _run_windows(_shard(), events, [{"ETH": _row("ETH", T0, 2_000.0)}], PARAMS)
    assert [r.reason.split(":")[0] for r in out.rejects] == [
        "out_of_bounds", "withdraw_above_balance"
    ]  # fmt: skip
    assert out.orders == [] and out.rows[0].equity == 10_000.0 and out.rows[0].health > 1


def test_listing_with_strike_0_is_reported_once_and_the_shard_goes_on() -> None:
    bad = InstrumentListed(instrument=CALL, underlying=WETH, kind=InstrumentKind.CALL,
                           strike_e18=0, expiry_s=(T0 // 1000) + 86_400, ts_ms=T0 - 50_000,
                           seq=2, removed=False)  # fmt: skip
    events = [*_setup({ACCOUNTS[0]: 1}), bad]
    out = _run_windows(_shard(True), events, [{"ETH": _row("ETH", T0, 2_000.0)}], PARAMS)[0]
    assert [r.reason.split(":")[0] for r in out.rejects] == ["out_of_bounds"]
    assert {r.instrument for r in out.instruments} == {PERP}
    other = _run_windows(_shard(False), events, [{"ETH": _row("ETH", T0, 2_000.0)}], PARAMS)[0]
    assert other.rejects == []  # every shard gets the listing; one reports it


def test_account_with_negative_equity_gets_one_full_close_and_no_repeat_every_window() -> None:
    # The finding: such an account got a new 100 % liquidation order every window.
    a = ACCOUNTS[0]
    prices = [{"ETH": _row("ETH", T0 + i * W, 1_400.0 if i else 2_000.0)} for i in range(8)]
    p = replace_params(liquidation_timeout_ms=5 * W)
    outs = _run_windows(_shard(), _setup({a: 20}), prices, p)  # equity 10,000 - 12,000 < 0
    rows = [r for out in outs for r in out.rows]
    assert rows[1].bad_debt_usd == pytest.approx(2_000.0) and rows[0].bad_debt_usd == 0.0
    orders = [o for out in outs for o in out.orders]
    first, retry = orders
    assert first.size == -20.0 and "bad debt 2000.00" in first.reason
    assert (first.ts_event_ms, first.attempt, first.previous_order_id) == (T0 + W, 1, None)
    # nothing was liquidated: re-sent once after the timeout, linked to the first
    assert (retry.ts_event_ms, retry.attempt, retry.previous_order_id) == (
        T0 + 6 * W, 2, first.order_id
    )  # fmt: skip
    # denied while in flight: reported once after each order, not every window
    in_flight = [d.ts_event_ms for out in outs for d in out.denials if d.reason == "in_flight"]
    assert in_flight == [T0 + 2 * W, T0 + 7 * W]


def test_a_liquidation_is_done_when_every_leg_was_liquidated_not_at_the_first_fill() -> None:
    a = ACCOUNTS[0]
    p = replace_params(underlyings={WETH: "ETH", WBTC: "ETH"})  # two perps on ETH
    events = [*_setup({a: 20}), _perp(BTC_PERP, WBTC), _trade(a, BTC_PERP, 10, 2_000, 25),
              _deposit(a, USDC, 5_000 * 10**6, 26)]  # fmt: skip
    prices = [{"ETH": _row("ETH", T0 + i * W, 1_400.0 if i else 2_000.0)} for i in range(4)]
    shard = _shard()
    out = _run_windows(shard, events, prices[:2], p)[1]
    legs = {o.instrument: o for o in out.orders}
    assert set(legs) == {PERP, BTC_PERP}
    # one leg is liquidated: the order is still in flight, no new one
    fill = _trade(a, PERP, 20, 1_400, 50, liquidator=ACCOUNTS[1], ts=T0 + W + 1_000)
    shard.on_venue(VenueBatch("0-chain.logs", T0 + 3 * W, False, [fill]), p)
    shard.on_prices(PriceBatch([prices[2]["ETH"], OracleProgress("ETH", T0 + 2 * W)]))
    assert shard.evaluate(p).orders == []


def test_a_liquidation_leg_is_cleared_by_the_liquidated_event_of_its_id_not_another() -> None:
    a = ACCOUNTS[0]
    p = replace_params(underlyings={WETH: "ETH", WBTC: "ETH"})  # two perps on ETH
    events = [*_setup({a: 20}), _perp(BTC_PERP, WBTC), _trade(a, BTC_PERP, 10, 2_000, 25),
              _deposit(a, USDC, 5_000 * 10**6, 26)]  # fmt: skip
    prices = [{"ETH": _row("ETH", T0 + i * W, 1_400.0 if i else 2_000.0)} for i in range(5)]
    shard = _shard()
    legs = {o.instrument: o.order_id for o in _run_windows(shard, events, prices[:2], p)[1].orders}
    assert set(legs) == {PERP, BTC_PERP}
    sent = shard.in_flight[(a, "liquidation")]

    def liquidated(window: int, order_id: str) -> RiskOut:
        fill = _trade(a, PERP, -1, 1_400, 50 + window, liquidator=ACCOUNTS[1],
                      order_id=order_id, ts=T0 + (window - 1) * W + 1_000)  # fmt: skip
        shard.on_venue(VenueBatch("0-chain.logs", T0 + window * W, False, [fill]), p)
        row = prices[window]["ETH"]
        shard.on_prices(PriceBatch([row, OracleProgress("ETH", row.window_end_ms)]))
        return shard.evaluate(p)

    # another order's liquidation of the same account in the same instrument: ours stays
    assert liquidated(2, order_id("liquidation", a, "elsewhere", PERP)).orders == []
    assert shard.in_flight[(a, "liquidation")] is sent and sent.pending == {PERP, BTC_PERP}
    # the id says which leg was filled, whatever the instrument of the event
    assert liquidated(3, legs[BTC_PERP]).orders == [] and sent.pending == {PERP}
    liquidated(4, legs[PERP])
    assert shard.in_flight.get((a, "liquidation")) is not sent


def test_a_hedge_is_completed_by_the_trade_of_its_id_not_by_another_trade() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}})
    prices = [_price(T0 + i * W, 2_000.0) for i in range(4)]
    hedge_id = order_id("hedge", book, T0, PERP)  # the hedge the book gets at T0
    for traded, expected in [
        (order_id("hedge", book, 0, PERP), [T0]),
        (hedge_id, [T0, T0 + 2 * W]),
    ]:
        fill = _trade(book, PERP, -1, 2_000, 40, order_id=traded, ts=T0 + W + 1_000)
        orders = _orders(_run(_shard(), [*_call_book(T0 + 30 * 86_400_000), fill], prices, p))
        assert orders[0].order_id == hedge_id
        assert [o.ts_event_ms for o in orders] == expected


def test_margin_mode_is_configurable_with_per_account_overrides() -> None:
    a, b = ACCOUNTS[:2]
    events = _setup({a: 20, b: 20})
    p = replace_params(margin_mode="standard", margin_modes={b: "portfolio"})
    (out,) = _run_windows(_shard(), events, [{"ETH": _row("ETH", T0, 2_000.0)}], p)
    rows = {r.account: r for r in out.rows}
    assert (rows[a].margin_mode, rows[b].margin_mode) == ("standard", "portfolio")
    assert rows[a].mm == pytest.approx(0.03 * 40_000)  # dYdX MMF 3 % of notional
    assert rows[b].mm == pytest.approx(0.23 * 40_000)  # the -20 % tail + 3 % add-on
    cfg = load_config(
        f'[risk]\nmargin_mode = "standard"\nmargin_modes = {{ "{b}" = "portfolio" }}\n'
    )
    assert (cfg.risk.margin_mode, cfg.risk.margin_modes) == ("standard", {b: "portfolio"})
    with pytest.raises(ConfigError, match="margin_mode"):
        load_config('[risk]\nmargin_mode = "cross"\n')


def test_expired_in_the_money_call_settles_at_the_expiry_window_price_and_leaves_the_book() -> None:
    # The finding: an expired ITM call kept moving with the spot, kept delta 1 (and was
    # hedged) and kept drawing margin.
    book = ACCOUNTS[0]
    expiry = T0 + W + 30_000  # inside the window ending at T0 + 2W
    p = replace_params(books={book: {"ETH": PERP}})
    prices = [{"ETH": _row("ETH", T0 + i * W, price)}
              for i, price in enumerate((2_000.0, 2_050.0, 2_100.5, 2_300.0))]  # fmt: skip
    outs = _run_windows(_shard(True), _call_book(expiry), prices, p)
    assert all(o.settlements == [] for o in outs[:2])
    (settled,) = outs[2].settlements
    assert (settled.account, settled.instrument, settled.size) == (book, CALL, 10.0)
    assert (settled.settlement_price, settled.price_window_end_ms) == (2_100.5, T0 + 2 * W)
    assert settled.intrinsic == 100.5 and settled.value_usd == 1_005.0
    assert settled.cash_usd == 1_005.0 - 900.0  # less the cost, 10 x 90
    # exact integers: size x (S - K) - cost, in 36 decimals
    assert shard_cash(p, prices[:3]) == 10 * 100_500_000_000_000_000_000 * E18 - 10 * 90 * E18 * E18
    assert outs[3].settlements == []
    after = outs[2]  # settled before the reprice of its evaluation
    assert {r.instrument for r in after.instruments} == {PERP}  # no Greeks, no price
    (row,) = after.rows
    assert json.loads(row.greeks) == {"ETH": {"delta": 0.0, "gamma": 0.0, "vega": 0.0}}
    assert row.mm == 0.0 and row.equity == 10_000.0 + 105.0
    assert not any(o.kind == "hedge" for out in outs[2:] for o in out.orders)


def shard_cash(p: RiskParams, prices: list) -> int:  # type: ignore[type-arg]
    shard = _shard()
    _run_windows(shard, _call_book(T0 + W + 30_000), prices, p)
    return shard.book.cash[ACCOUNTS[0]]


def test_expiry_on_a_degraded_row_waits_for_the_first_ok_row() -> None:
    expiry = T0 + W + 30_000
    prices = [
        {"ETH": _row("ETH", T0, 2_000.0)},
        {"ETH": _row("ETH", T0 + W, 2_000.0)},
        {"ETH": _row("ETH", T0 + 2 * W, 2_500.0, "degraded")},
        {"ETH": _row("ETH", T0 + 3 * W, 1_900.0)},
    ]
    outs = _run_windows(_shard(), _call_book(expiry), prices, PARAMS)
    assert outs[2].settlements == []
    (settled,) = outs[3].settlements
    assert (settled.price_window_end_ms, settled.intrinsic, settled.cash_usd) == (
        T0 + 3 * W, 0.0, -900.0
    )  # fmt: skip


def test_a_retracted_fill_in_a_settled_option_is_settled_back_at_the_same_price() -> None:
    expiry = T0 + W + 30_000
    shard = _shard()
    prices = [{"ETH": _row("ETH", T0 + i * W, 2_100.0)} for i in range(3)]
    _run_windows(shard, _call_book(expiry), prices, PARAMS)
    retraction = _trade(ACCOUNTS[0], CALL, 10, 90, 30, removed=True, ts=T0 + 2 * W + 1)
    shard.on_venue(VenueBatch("0-chain.logs", T0 + 3 * W, False, [retraction]), PARAMS)
    shard.on_prices(
        PriceBatch([_row("ETH", T0 + 3 * W, 2_500.0), OracleProgress("ETH", T0 + 3 * W)])
    )
    (undone,) = shard.evaluate(PARAMS).settlements
    assert (undone.size, undone.settlement_price, undone.cash_usd) == (-10.0, 2_100.0, -100.0)
    assert ACCOUNTS[0] not in shard.book.cash  # back to nothing: the fill never happened


def test_hedge_refusals_are_events_once_per_condition() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}}, targets={book: {"ETH": 0.1}})
    prices = [{"ETH": _row("ETH", T0 + i * W, 2_000.0)} for i in range(3)]
    outs = _run_windows(_shard(), _setup({book: 0}), prices, p)
    denials = [d for out in outs for d in out.denials]
    (inside,) = denials  # within the band: reported once, not every window
    assert (inside.kind, inside.reason, inside.instrument) == ("hedge", "within_band", PERP)
    assert inside.size == pytest.approx(0.1)
    missing = replace_params(books={book: {"ETH": "0x" + "7" * 64}})
    (none,) = [d for out in _run_windows(_shard(), _setup({book: 0}), prices, missing)
               for d in out.denials]  # fmt: skip
    assert none.reason == "no_hedge_instrument"


def test_a_bad_margin_mode_is_an_error_naming_the_account() -> None:
    with pytest.raises(ValueError, match=r"margin mode of 0xa+ must be"):
        replace_params(margin_modes={ACCOUNTS[0]: "cross"})


# --- the orders' own fields ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-40, 40).filter(bool), min_size=1, max_size=3),
    st.integers(-30, 30),
    st.floats(1_000.0, 3_000.0),
    st.integers(0, 20_000),
)
def test_every_liquidation_leg_reduces_its_position_and_says_what_it_holds(
    perps: list[int], calls: int, price: float, usdc: int
) -> None:
    # up to three accounts in the perp, the first with calls too; any move of the price
    accounts = dict(zip(ACCOUNTS, perps, strict=False))
    events = [*_setup(accounts), _call(T0 + DAYS_30)]
    if calls:
        events.append(_trade(ACCOUNTS[0], CALL, calls, 90, 30))
    events.append(_deposit(ACCOUNTS[1], USDC, usdc * 10**6, 31))
    p = replace_params(valid_for_ms=90_000)
    orders = _orders(_run(_shard(), events, [_price(T0, 2_000.0), _price(T0 + W, price)], p))
    held = {(a, PERP): float(size) for a, size in accounts.items()} | {(ACCOUNTS[0], CALL): calls}
    for o in orders:
        assert abs(o.position + o.size) < abs(o.position)
        assert o.position == held[(o.account, o.instrument)]
        assert (o.asset, o.valid_until_ms) == ("ETH", o.ts_event_ms + 90_000)


def test_a_hedge_order_carries_the_books_position_in_the_hedge_instrument() -> None:
    book = ACCOUNTS[0]
    p = replace_params(books={book: {"ETH": PERP}})
    events = [*_call_book(T0 + DAYS_30, size=50, price=80), _trade(book, PERP, 3, 2_000, 31)]
    (hedge,) = _orders(_run(_shard(), events, [_price(T0, 2_000.0)], p))
    assert (hedge.asset, hedge.position, hedge.valid_until_ms) == ("ETH", 3.0, T0 + 120_000)


@pytest.mark.parametrize("secret", [None, b"too short"])
def test_a_missing_or_short_order_secret_stops_the_start_naming_the_key(
    secret: bytes | None, tmp_path: Path
) -> None:
    path = tmp_path / "orders.secret"
    if secret is not None:
        path.write_bytes(secret)
    cfg = load_config(f'[orders]\nsecret_file = "{path}"\n')
    with pytest.raises(ValueError, match=r"orders.secret_file"):
        stage_params(cfg)
    path.write_bytes(b"s" * 32)
    params = stage_params(cfg)
    assert params.order_secret == b"s" * 32
    assert "s" * 32 not in repr(params)  # never in a log of the parameters


# --- the executors' outcomes (fills) ------------------------------------------------------

FILLS = ("0-fills", "1-fills")
SIGNER = "0x" + "5e" * 20


def _outcome(order: Order, state: str, ts: int, *, final: bool = True, seq: int = 2) -> Execution:
    return Execution(
        order_id=order.order_id, seq=seq, state=state, final=final,  # type: ignore[arg-type]
        account=order.account, kind=order.kind, instrument=order.instrument, signer=SIGNER,
        ts_event_ms=ts,
    )  # fmt: skip


def _gated() -> RiskShard:
    return RiskShard(("0-chain.logs", *FILLS))


def _first_liquidation(shard: RiskShard, p: RiskParams = PARAMS) -> Order:
    """A 20 ETH long, 1,940 at T0 + W: its liquidation order (10 ETH), with the venue's and
    the fills partitions' watermarks at T0 + W."""
    shard.on_venue(VenueBatch("0-chain.logs", T0 + W, False, _setup({ACCOUNTS[0]: 20})), p)
    for part in FILLS:
        shard.on_venue(VenueBatch(part, T0 + W, False, []), p)
    out = []
    for k, price in enumerate([2_000.0, 1_940.0]):
        shard.on_prices(PriceBatch([_price(T0 + k * W, price), OracleProgress("ETH", T0 + k * W)]))
        out += _orders(_flat(shard.evaluate(p)))
    (first,) = out
    return first


def _window(shard: RiskShard, k: int, fills: list, venue: list | None = None) -> RiskOut:
    """Window ``k``: ``fills`` on the first fills partition, ``venue`` on the chain's, every
    watermark to T0 + k W, the price at 1,940."""
    shard.on_venue(VenueBatch("0-chain.logs", T0 + k * W, False, venue or []), PARAMS)
    shard.on_venue(VenueBatch(FILLS[0], T0 + k * W, False, fills), PARAMS)
    shard.on_venue(VenueBatch(FILLS[1], T0 + k * W, False, []), PARAMS)
    shard.on_prices(PriceBatch([_price(T0 + k * W, 1_940.0), OracleProgress("ETH", T0 + k * W)]))
    return shard.evaluate(PARAMS)


def test_a_reverted_liquidation_is_ordered_again_at_the_next_evaluation_as_attempt_2() -> None:
    shard = _gated()
    first = _first_liquidation(shard)
    (retry,) = _window(shard, 2, [_outcome(first, "reverted", T0 + W + 5_000)]).orders
    assert (retry.ts_event_ms, retry.attempt, retry.previous_order_id) == (
        T0 + 2 * W, 2, first.order_id
    )  # fmt: skip
    assert retry.order_id != first.order_id and retry.size == first.size
    # without the outcome it waits for the timeout (5 windows), denied as in flight
    shard = _gated()
    _first_liquidation(shard)
    out = _window(shard, 2, [])
    assert out.orders == [] and [d.reason for d in out.denials] == ["in_flight"]


@pytest.mark.parametrize("state", ["denied", "expired", "conflict"])
def test_every_final_failure_clears_the_order_in_flight(state: str) -> None:
    shard = _gated()
    first = _first_liquidation(shard)
    (retry,) = _window(shard, 2, [_outcome(first, state, T0 + W + 5_000)]).orders
    assert retry.attempt == 2


@pytest.mark.parametrize(
    ("state", "final"), [("sent", False), ("replaced", False), ("mined", False)]
)
def test_an_outcome_that_is_not_final_leaves_the_order_in_flight(state: str, final: bool) -> None:
    shard = _gated()
    first = _first_liquidation(shard)
    assert _window(shard, 2, [_outcome(first, state, T0 + W + 5_000, final=final)]).orders == []
    assert shard.in_flight[(ACCOUNTS[0], "liquidation")].pending == {PERP}


def test_a_repeated_final_outcome_gives_one_retry_not_two() -> None:
    shard = _gated()
    first = _first_liquidation(shard)
    reverted = _outcome(first, "reverted", T0 + W + 5_000)
    (retry,) = _window(shard, 2, [reverted, reverted]).orders
    # delivered again later: the first attempt is no longer in flight, the retry is
    assert _window(shard, 3, [_outcome(first, "reverted", T0 + 2 * W + 1, seq=3)]).orders == []
    assert shard.in_flight[(ACCOUNTS[0], "liquidation")].legs == {PERP: retry.order_id}


def test_an_outcome_of_an_order_id_not_in_flight_is_ignored() -> None:
    shard = _gated()
    first = _first_liquidation(shard)
    other = msgspec.structs.replace(first, order_id=order_id("liquidation", "elsewhere"))
    assert _window(shard, 2, [_outcome(other, "reverted", T0 + W + 5_000)]).orders == []
    assert shard.in_flight[(ACCOUNTS[0], "liquidation")].pending == {PERP}


def test_a_final_mined_outcome_leaves_the_leg_to_the_venue_fill_and_repeats_harmlessly() -> None:
    shard = _gated()
    first = _first_liquidation(shard)
    mined = _outcome(first, "mined", T0 + W + 5_000)
    # mined before the venue's Liquidated event was seen: still in flight, no new order
    assert _window(shard, 2, [mined]).orders == []
    assert shard.in_flight[(ACCOUNTS[0], "liquidation")].pending == {PERP}
    fill = _trade(ACCOUNTS[0], PERP, first.size, first.price, 60, liquidator=ACCOUNTS[1],
                  order_id=first.order_id, ts=T0 + 2 * W + 1_000)  # fmt: skip
    _window(shard, 3, [mined], [fill])
    assert (ACCOUNTS[0], "liquidation") not in shard.in_flight
    assert (ACCOUNTS[0], "liquidation") not in shard.timed_out  # done, not to be retried
    before = shard.book.positions({PERP: 0}).toarray().tolist()
    _window(shard, 4, [mined, _outcome(first, "mined", T0 + 3 * W + 1, seq=9)])
    assert shard.book.positions({PERP: 0}).toarray().tolist() == before


def test_a_failed_leg_waits_for_the_other_legs_before_the_order_is_retried() -> None:
    # two perps on ETH: one leg reverted while the other may still be mined; re-sizing
    # the whole account then could liquidate twice
    a = ACCOUNTS[0]
    p = replace_params(underlyings={WETH: "ETH", WBTC: "ETH"})
    events = [*_setup({a: 20}), _perp(BTC_PERP, WBTC), _trade(a, BTC_PERP, 10, 2_000, 25),
              _deposit(a, USDC, 5_000 * 10**6, 26)]  # fmt: skip
    shard = _gated()
    shard.on_venue(VenueBatch("0-chain.logs", T0 + W, False, events), p)
    for part in FILLS:
        shard.on_venue(VenueBatch(part, T0 + W, False, []), p)
    for k, price in enumerate([2_000.0, 1_400.0]):
        shard.on_prices(
            PriceBatch([_row("ETH", T0 + k * W, price), OracleProgress("ETH", T0 + k * W)])
        )
        legs = {o.instrument: o for o in shard.evaluate(p).orders}
    assert set(legs) == {PERP, BTC_PERP}

    def window(k: int, fills: list, venue: list) -> RiskOut:
        shard.on_venue(VenueBatch("0-chain.logs", T0 + k * W, False, venue), p)
        for part, batch in zip(FILLS, (fills, []), strict=True):
            shard.on_venue(VenueBatch(part, T0 + k * W, False, batch), p)
        row = _row("ETH", T0 + k * W, 1_400.0)
        shard.on_prices(PriceBatch([row, OracleProgress("ETH", T0 + k * W)]))
        return shard.evaluate(p)

    assert window(2, [_outcome(legs[PERP], "reverted", T0 + W + 1)], []).orders == []
    fill = _trade(a, BTC_PERP, legs[BTC_PERP].size, 1_400, 60, liquidator=ACCOUNTS[1],
                  order_id=legs[BTC_PERP].order_id, ts=T0 + 2 * W + 1)  # fmt: skip
    (retry,) = window(3, [], [fill]).orders
    assert (retry.instrument, retry.attempt, retry.previous_order_id) == (
        PERP, 2, legs[PERP].order_id
    )  # fmt: skip


def test_evaluation_waits_for_every_fills_partition_too() -> None:
    shard = _gated()
    shard.on_venue(VenueBatch("0-chain.logs", T0, False, _setup({ACCOUNTS[0]: 20})), PARAMS)
    shard.on_venue(VenueBatch(FILLS[0], T0, False, []), PARAMS)
    shard.on_prices(PriceBatch([_price(T0, 2_000.0), OracleProgress("ETH", T0)]))
    assert _flat(shard.evaluate(PARAMS)) == []  # the second fills partition has not passed T0
    shard.on_venue(VenueBatch(FILLS[1], T0, False, []), PARAMS)
    assert [r.ts_event_ms for r in _flat(shard.evaluate(PARAMS))] == [T0]


OUTCOMES = st.lists(
    st.tuples(
        st.sampled_from(ACCOUNTS[:3]),
        st.integers(1, 5),  # the window of the order
        st.sampled_from(["sent", "reverted", "expired", "mined"]),
        st.sampled_from(FILLS),
        st.integers(1, W - 1),  # its time after the order, ms
    ),
    max_size=8,
)


def _partitions(outcomes: list[tuple[str, int, str, str, int]]) -> dict[str, list]:
    """Each input partition's batches in its own order: the venue's, two fills partitions'
    (outcomes of the orders the shard may send, mined ones with their venue fill), the
    oracle's; seven windows of a drop to 1,940 and below."""
    prices = [2_000.0, 1_940.0, 1_940.0, 1_900.0, 1_940.0, 1_880.0, 1_900.0]
    chain: list[list] = [[] for _ in prices]
    fills: dict[str, list[list]] = {part: [[] for _ in prices] for part in FILLS}
    chain[0] = _setup({a: 20 for a in ACCOUNTS[:3]})
    for n, (account, k, state, part, after) in enumerate(outcomes):
        ts = T0 + k * W + after
        sent = Order(
            order_id=order_id("liquidation", account, T0 + k * W, PERP), kind="liquidation",
            account=account, instrument=PERP, size=-5.0, size_e18=str(-5 * E18), price=1_900.0,
            oracle_price=1_940.0,
            bonus_usd=0.0, reason="", ts_event_ms=T0 + k * W, health=0.9, worst_scenario=0,
            asset="ETH", underlying_price=2_000.0, oracle_window_end_ms=T0 + k * W,
            position=20.0, valid_until_ms=ts,
        )  # fmt: skip
        fills[part][k + 1].append(_outcome(sent, state, ts, seq=n + 1))
        if state == "mined":
            chain[k + 1].append(_trade(account, PERP, -5, 1_900, 100 + n, liquidator=ACCOUNTS[3],
                                       order_id=sent.order_id, ts=ts))  # fmt: skip
    last = len(prices) - 1
    out: dict[str, list] = {
        part: [VenueBatch(part, T0 + k * W, k == last, events) for k, events in enumerate(batches)]
        for part, batches in {"0-chain.logs": chain, **fills}.items()
    }
    out["prices"] = [
        PriceBatch([_price(T0 + k * W, price), OracleProgress("ETH", T0 + k * W)])
        for k, price in enumerate(prices)
    ]
    return out


def _feed(parts: dict[str, list], order: list[str]) -> list:
    """Feed the partitions' batches to a new shard, interleaved as ``order`` says (each
    partition's own order kept); everything it gives, in order."""
    shard, queues, got = _gated(), {part: list(batches) for part, batches in parts.items()}, []
    for part in order:
        batch = queues[part].pop(0)
        if isinstance(batch, PriceBatch):
            shard.on_prices(batch)
        else:
            shard.on_venue(batch, PARAMS)
        out = shard.evaluate(PARAMS)
        got += [*_flat(out), *out.denials]
    return got


@settings(max_examples=40, deadline=None)
@given(OUTCOMES, st.data())
def test_outputs_are_the_same_whatever_the_interleaving_of_fills_venue_and_price_batches(
    outcomes: list[tuple[str, int, str, str, int]], data: st.DataObject
) -> None:
    parts = _partitions(outcomes)
    in_turn = [part for _ in parts["prices"] for part in parts]
    interleaved = data.draw(st.permutations(in_turn))
    expected = _feed(parts, in_turn)
    assert _orders(expected), "the drop liquidates"
    assert _feed(parts, interleaved) == expected


@given(st.integers(1, 10**18 - 1), st.integers(10, 30))
@settings(max_examples=50, deadline=None)
def test_a_liquidation_leg_of_a_position_of_any_precision_goes_on_chain_without_dust(
    dust_e18: int, units: int
) -> None:
    # The demo's finding: a closing leg sized in floats left 1e-16 contracts on chain, and
    # the account's MM of that dust gave a health of -6e16.
    held = units * E18 + dust_e18  # e.g. 17.000000000000000001 ETH, bought at 2,000
    leg = _crash_leg(held)
    if abs(leg.size * E18 + held) <= 1e-9 * held:  # it closes the position: exactly
        assert int(leg.size_e18) == -held
    else:  # a partial close: the float size, rounded
        assert int(leg.size_e18) == e18(leg.size)


def test_a_leg_closing_10_eth_and_1e_18_closes_it_to_the_last_unit() -> None:
    assert int(_crash_leg(10 * E18 + 1).size_e18) == -(10 * E18 + 1)


def _crash_leg(held_e18: int) -> Order:
    """The perp leg ordered when ETH halves under a long of ``held_e18`` (10,000 USDC)."""
    account = ACCOUNTS[0]
    odd = msgspec.structs.replace(_trade(account, PERP, 0, 2_000, 20), size_e18=held_e18)
    prices = [_price(T0, 2_000.0), _price(T0 + W, 1_000.0)]
    orders = _orders(_run(_shard(), [*_setup({account: 0}), odd], prices))
    (leg,) = [o for o in orders if o.instrument == PERP]
    return leg
