"""DEX hedges in the risk shard: a book's delta is its venue positions' plus its wallet
holdings of the token; a final mined swap moves the wallet once per order id."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.config import ConfigError, load_config
from operators.model import (
    AccountRiskRow,
    Execution,
    OraclePrice,
    OracleProgress,
    Order,
    PriceBatch,
)
from operators.risk import RiskOut, RiskParams, RiskShard, order_id
from operators.stages import stage_params
from operators.units import E18, InstrumentKind, e18
from operators.venue import CollateralMove, Fill, InstrumentListed, VenueBatch
from operators.wallet import DexHedge
from tests.unit.test_risk import CALL, T0, USDC, WETH, W

BOOK, OTHER = "0x" + "a" * 40, "0x" + "b" * 40
SIGNER = "0x" + "5e" * 20
VENUE, FILLS = "0-chain.logs", ("0-fills", "1-fills")
DAYS_30 = 30 * 86_400_000


def _params(initial: int = 0, decimals: int = 18) -> RiskParams:
    """One book hedging ETH in WETH for USDC on the DEX; a fixed 60 % vol (floor = cap), so
    that its delta moves with the price alone."""
    hedge = DexHedge(token=WETH, quote=USDC, decimals=decimals, initial=initial)
    return RiskParams(
        window_ms=W, assets=("ETH",), underlyings={WETH: "ETH"},
        collateral={USDC: ("USDC", 6)}, pegs={"USDC": 1.0}, vol_floor=0.6, vol_cap=0.6,
        dex_hedges={BOOK: {"ETH": hedge}},
    )  # fmt: skip


PARAMS = _params()


def _book(calls: float = 50.0) -> list:
    """The book: 1,000,000 USDC and ``calls`` 30-day ETH calls at 2,000 bought at 80 (a
    long delta of about 0.53 per call)."""
    listing = InstrumentListed(
        instrument=CALL, underlying=WETH, kind=InstrumentKind.CALL, strike_e18=2_000 * E18,
        expiry_s=(T0 + DAYS_30) // 1000, ts_ms=T0 - 50_000, seq=1, removed=False,
    )  # fmt: skip
    deposit = CollateralMove(
        account=BOOK, token=USDC, amount=10**6 * 10**6, ts_ms=T0 - 40_000, seq=2, removed=False
    )
    trade = Fill(
        account=BOOK, instrument=CALL, size_e18=int(calls * E18), price_e18=80 * E18,
        liquidator=None, order_id=None, ts_ms=T0 - 30_000, seq=3, removed=False,
    )  # fmt: skip
    return [listing, deposit, trade]


def _price(k: int, price: float = 2_000.0, status: str = "ok") -> OraclePrice:
    end = T0 + k * W
    return OraclePrice(
        asset="ETH", window_start_ms=end - W, window_end_ms=end, price=price, confidence=1.0,
        sources=3, status=status, held=False, revision=0,
    )  # fmt: skip


def _shard() -> RiskShard:
    return RiskShard((VENUE, *FILLS))


def _window(
    shard: RiskShard,
    k: int,
    fills: Sequence[Execution] = (),
    venue: Sequence[object] = (),
    p: RiskParams = PARAMS,
    status: str = "ok",
) -> RiskOut:
    """Window ``k``: ``venue`` events, ``fills`` on the first fills partition, every
    watermark to T0 + k W, ETH at 2,000."""
    shard.on_venue(VenueBatch(VENUE, T0 + k * W, False, list(venue)), p)
    shard.on_venue(VenueBatch(FILLS[0], T0 + k * W, False, list(fills)), p)
    shard.on_venue(VenueBatch(FILLS[1], T0 + k * W, False, []), p)
    shard.on_prices(PriceBatch([_price(k, status=status), OracleProgress("ETH", T0 + k * W)]))
    return shard.evaluate(p)


def _swap(
    order: Order,
    *,
    seq: int = 2,
    ts: int | None = None,
    state: str = "mined",
    final: bool = True,
    raw: int | None = None,
) -> Execution:
    """The executor's outcome of ``order``: mined, it sold (or bought) ``raw`` units of
    WETH (default: the order's size exactly) for USDC at 2,000."""
    raw = abs(int(order.size_e18)) if raw is None else raw
    sold = order.size < 0
    usdc = str(raw * 2_000 // 10**12)
    amounts = (
        dict(token_in=WETH, amount_in=str(raw), token_out=USDC, amount_out=usdc)
        if sold
        else dict(token_in=USDC, amount_in=usdc, token_out=WETH, amount_out=str(raw))
    )
    return Execution(
        order_id=order.order_id, seq=seq, state=state, final=final,  # type: ignore[arg-type]
        account=order.account, kind=order.kind, instrument=order.instrument, signer=SIGNER,
        ts_event_ms=order.ts_event_ms + 5_000 if ts is None else ts,
        **(amounts if state == "mined" else {}),
    )  # fmt: skip


def _first_hedge(shard: RiskShard, p: RiskParams = PARAMS) -> Order:
    (order,) = _window(shard, 0, venue=_book(), p=p).orders
    return order


def test_a_book_long_delta_from_a_venue_call_position_emits_a_dex_hedge_sell() -> None:
    shard = _shard()
    out = _window(shard, 0, venue=_book())
    (order,) = out.orders
    assert (order.kind, order.account, order.instrument, order.asset) == (
        "dex_hedge", BOOK, WETH, "ETH"
    )  # fmt: skip
    assert order.order_id == order_id("dex_hedge", BOOK, T0, WETH)
    assert -30 < order.size < -20  # about -0.53 x 50 calls: back to delta 0
    assert int(order.size_e18) == e18(order.size)
    assert order.price == order.oracle_price == order.underlying_price == 2_000.0
    assert (order.oracle_window_end_ms, order.position, order.attempt) == (T0, 0.0, 1)
    (row,) = out.rows
    book_delta = json.loads(row.greeks)["ETH"]["delta"]
    assert order.size == pytest.approx(-book_delta)
    assert json.loads(row.wallet) == {"ETH": 0.0}


def test_a_fill_moves_the_wallet_and_the_next_tick_is_within_the_band() -> None:
    shard = _shard()
    first = _first_hedge(shard)
    assert _window(shard, 1, [_swap(first, state="sent", final=False, seq=1)]).orders == []
    out = _window(shard, 2, [_swap(first)])
    assert out.orders == []
    (denial,) = out.denials
    assert (denial.kind, denial.instrument, denial.reason) == ("dex_hedge", WETH, "within_band")
    assert shard.wallet.holdings(BOOK, PARAMS.dex_hedges[BOOK]["ETH"]) == int(first.size_e18)
    (row,) = out.rows  # the wallet moved: a row at once, though the health did not move
    assert json.loads(row.wallet) == {"ETH": pytest.approx(first.size)}
    assert not any(_window(shard, k).orders for k in range(3, 8))


def test_a_reverted_swap_changes_nothing_and_the_next_tick_hedges_again() -> None:
    shard = _shard()
    first = _first_hedge(shard)
    out = _window(shard, 1, [_swap(first, state="reverted")])
    (retry,) = out.orders
    assert (retry.kind, retry.attempt, retry.previous_order_id) == ("dex_hedge", 2, first.order_id)
    assert retry.size == pytest.approx(first.size, rel=1e-4) and retry.position == 0.0  # theta
    assert shard.wallet.moved == {}


@pytest.mark.parametrize("state", ["denied", "expired", "conflict"])
def test_every_final_failure_ends_the_swap_and_the_book_hedges_again(state: str) -> None:
    shard = _shard()
    first = _first_hedge(shard)
    (retry,) = _window(shard, 1, [_swap(first, state=state)]).orders
    assert retry.attempt == 2 and shard.wallet.moved == {}


def test_a_mined_swap_not_yet_final_leaves_the_wallet_and_the_order_in_flight() -> None:
    shard = _shard()
    first = _first_hedge(shard)
    out = _window(shard, 1, [_swap(first, final=False)])
    assert out.orders == [] and [d.reason for d in out.denials] == ["in_flight"]
    assert shard.wallet.moved == {}


def test_a_repeated_or_out_of_order_outcome_never_counts_twice() -> None:
    shard = _shard()
    first = _first_hedge(shard)
    mined = _swap(first, seq=3)
    # the same final outcome twice, with an older seq after it
    _window(shard, 1, [mined, mined, _swap(first, state="sent", final=False, seq=1)])
    held = shard.wallet.holdings(BOOK, PARAMS.dex_hedges[BOOK]["ETH"])
    assert held == int(first.size_e18)
    # delivered again later, and under a later seq: the order id was applied
    out = _window(shard, 2, [mined, _swap(first, seq=4, ts=T0 + W + 1)])
    assert shard.wallet.holdings(BOOK, PARAMS.dex_hedges[BOOK]["ETH"]) == held
    assert out.orders == [] and out.rows == []


def test_the_wallet_moves_by_the_amounts_the_chain_swapped_not_the_order_size() -> None:
    # the executor sold 1 wei less than ordered (a partial route): exactly that is held
    shard = _shard()
    first = _first_hedge(shard)
    _window(shard, 1, [_swap(first, raw=-int(first.size_e18) - 1)])
    assert shard.wallet.holdings(BOOK, PARAMS.dex_hedges[BOOK]["ETH"]) == int(first.size_e18) + 1


def test_a_late_fill_of_a_timed_out_attempt_still_moves_the_wallet() -> None:
    # liquidation_timeout 5 windows: attempt 1 times out, attempt 2 goes out; then attempt
    # 1's swap is reported mined: the tokens moved, and the retry's stays in flight
    p = dataclasses.replace(PARAMS, liquidation_timeout_ms=5 * W)
    shard = _shard()
    first = _first_hedge(shard, p)
    orders = [o for k in range(1, 6) for o in _window(shard, k, p=p).orders]
    (retry,) = orders
    assert (retry.attempt, retry.ts_event_ms) == (2, T0 + 5 * W)
    _window(shard, 6, [_swap(first, ts=T0 + 5 * W + 1)], p=p)
    assert shard.wallet.holdings(BOOK, p.dex_hedges[BOOK]["ETH"]) == int(first.size_e18)
    assert (BOOK, WETH) in shard.in_flight


def test_initial_holdings_count_in_the_delta() -> None:
    # the book already holds about as much WETH short as its calls are long
    near = _params(initial=-26 * E18)
    out = _window(_shard(), 0, venue=_book(), p=near)
    assert out.orders == [] and [d.reason for d in out.denials] == ["within_band"]
    # a long wallet adds to the calls' delta: the sell is the sum, from that position
    long = _params(initial=10 * E18)
    (order,) = _window(_shard(), 0, venue=_book(), p=long).orders
    assert order.position == 10.0
    assert order.size == pytest.approx(_first_hedge(_shard()).size - 10.0)


def test_a_swap_of_a_token_with_6_decimals_moves_the_wallet_in_its_own_units() -> None:
    p = _params(decimals=6)
    shard = _shard()
    first = _first_hedge(shard, p)
    raw = 26_543_210  # 26.54321 units of a 6-decimal token
    _window(shard, 1, [_swap(first, raw=raw)], p=p)
    hedge = p.dex_hedges[BOOK]["ETH"]
    assert (shard.wallet.holdings(BOOK, hedge), shard.wallet.units(BOOK, hedge)) == (
        -raw, -26.54321
    )  # fmt: skip


def test_a_dex_hedge_on_a_price_not_ok_is_denied_oracle_not_ok() -> None:
    shard = _shard()
    out = _window(shard, 0, venue=_book(), status="degraded")
    assert out.orders == []
    assert [(d.kind, d.reason) for d in out.denials] == [("dex_hedge", "oracle_not_ok")]


def test_a_swap_of_another_account_or_token_leaves_the_book_wallet_alone() -> None:
    shard = _shard()
    first = _first_hedge(shard)
    other = msgspec.structs.replace(first, account=OTHER, order_id=order_id("x", OTHER))
    usdc = msgspec.structs.replace(first, instrument=USDC, order_id=order_id("y", BOOK))
    _window(shard, 1, [_swap(other), _swap(usdc)])
    assert shard.wallet.moved == {} and (BOOK, WETH) in shard.in_flight


def test_a_swap_of_a_configured_book_not_on_the_venue_moves_its_wallet_only() -> None:
    hedge = DexHedge(token=WETH, quote=USDC, decimals=18, initial=0)
    p = dataclasses.replace(PARAMS, dex_hedges={**PARAMS.dex_hedges, OTHER: {"ETH": hedge}})
    shard = _shard()
    first = _first_hedge(shard, p)
    elsewhere = msgspec.structs.replace(first, account=OTHER, order_id=order_id("z", OTHER))
    out = _window(shard, 1, [_swap(elsewhere)], p=p)
    assert shard.wallet.holdings(OTHER, hedge) == int(first.size_e18)
    assert all(r.account == BOOK for r in out.rows) and out.orders == []


def test_a_wallet_in_an_asset_the_book_has_no_position_in_is_hedged_alone() -> None:
    # 2 WBTC (8 decimals) held, nothing on BTC at the venue: sell 2 at BTC's price
    wbtc = "0x" + "b7" * 20
    hedge = DexHedge(token=wbtc, quote=USDC, decimals=8, initial=2 * 10**8)
    p = dataclasses.replace(
        PARAMS, assets=("BTC", "ETH"), dex_hedges={BOOK: {**PARAMS.dex_hedges[BOOK], "BTC": hedge}}
    )
    shard = _shard()
    for part in (VENUE, *FILLS):
        shard.on_venue(VenueBatch(part, T0, False, _book() if part == VENUE else []), p)
    btc = msgspec.structs.replace(_price(0, 40_000.0), asset="BTC")
    progress = [OracleProgress(asset, T0) for asset in p.assets]
    shard.on_prices(PriceBatch([_price(0), btc, *progress]))
    by_asset = {o.asset: o for o in shard.evaluate(p).orders}
    sell = by_asset["BTC"]
    assert (sell.kind, sell.instrument, sell.size, sell.position) == ("dex_hedge", wbtc, -2.0, 2.0)
    assert sell.underlying_price == 40_000.0 and by_asset["ETH"].instrument == WETH


# --- properties: random outcomes, any interleaving, replay, snapshot/restore ---------------

WINDOWS = 8
OUTCOMES = st.lists(
    st.tuples(
        st.integers(0, WINDOWS - 2),  # the window of the order the outcome is of
        st.sampled_from(["sent", "reverted", "expired", "mined", "mined_final"]),
        st.integers(1, W - 1),  # its time after the order, ms
        st.sampled_from(FILLS),
        st.integers(1, 5),  # seq
        st.integers(0, WINDOWS - 1),  # delivered again this many windows later (0: once)
    ),
    max_size=12,
)
AMOUNTS = st.lists(st.integers(1, 40 * E18), min_size=WINDOWS, max_size=WINDOWS)
"""Per order window: the raw WETH that order's swap sold (the same in every report)."""


def _order_at(k: int) -> Order:
    """The dex hedge the book may be sent at window ``k`` (a sell: the calls are long)."""
    return Order(
        order_id=order_id("dex_hedge", BOOK, T0 + k * W, WETH), kind="dex_hedge", account=BOOK,
        instrument=WETH, size=-1.0, size_e18=str(-E18), price=2_000.0, oracle_price=2_000.0,
        bonus_usd=0.0, reason="", ts_event_ms=T0 + k * W, health=1.0, worst_scenario=0,
        asset="ETH", underlying_price=2_000.0, oracle_window_end_ms=T0 + k * W, position=0.0,
        valid_until_ms=T0 + k * W + 120_000,
    )  # fmt: skip


def _partitions(outcomes: list, amounts: list[int]) -> dict[str, list]:
    """Each input partition's batches in its own order: the venue's (the book), the two
    fills partitions' (each outcome in the window after its time, as the topic's progress
    promises, and maybe again later: a repeat), the oracle's."""
    fills: dict[str, list[list]] = {part: [[] for _ in range(WINDOWS)] for part in FILLS}
    for k, state, after, part, seq, again in outcomes:
        final = state not in ("sent", "mined")
        outcome = _swap(
            _order_at(k), seq=seq, ts=T0 + k * W + after, state=state.removesuffix("_final"),
            final=final, raw=amounts[k],
        )  # fmt: skip
        fills[part][k + 1].append(outcome)
        if again:
            fills[part][min(k + 1 + again, WINDOWS - 1)].append(outcome)
    chain: list[list] = [_book(), *([] for _ in range(WINDOWS - 1))]
    last = WINDOWS - 1
    out: dict[str, list] = {
        part: [VenueBatch(part, T0 + k * W, k == last, events) for k, events in enumerate(batches)]
        for part, batches in {VENUE: chain, **fills}.items()
    }
    out["prices"] = [
        PriceBatch([_price(k), OracleProgress("ETH", T0 + k * W)]) for k in range(WINDOWS)
    ]
    return out


def _feed(shard: RiskShard, parts: dict[str, list], order: Sequence[str]) -> list:
    """Feed the partitions' next batches to ``shard`` in ``order``; everything it gives."""
    got: list = []
    for part in order:
        batch = parts[part].pop(0)
        if isinstance(batch, PriceBatch):
            shard.on_prices(batch)
        else:
            shard.on_venue(batch, PARAMS)
        out = shard.evaluate(PARAMS)
        got += [*out.rows, *out.orders, *out.denials]
    return got


def _in_turn(parts: dict[str, list]) -> list[str]:
    return [part for _ in range(WINDOWS) for part in parts]


def _expected_holdings(outcomes: list, amounts: list[int]) -> int:
    """Initial (0) + the WETH sold by each distinct order with a final mined outcome."""
    return -sum(amounts[k] for k in {k for k, state, *_ in outcomes if state == "mined_final"})


@settings(max_examples=60, deadline=None)
@given(OUTCOMES, AMOUNTS, st.data())
def test_holdings_are_initial_plus_each_distinct_final_swap_whatever_the_interleaving(
    outcomes: list, amounts: list[int], data: st.DataObject
) -> None:
    in_turn = _in_turn(_partitions(outcomes, amounts))
    expected_shard = _shard()
    expected = _feed(expected_shard, _partitions(outcomes, amounts), in_turn)
    assert any(isinstance(o, Order) for o in expected), "the long calls are hedged"
    held = expected_shard.wallet.holdings(BOOK, PARAMS.dex_hedges[BOOK]["ETH"])
    assert held == _expected_holdings(outcomes, amounts)
    rows = [r for r in expected if isinstance(r, AccountRiskRow)]
    assert json.loads(rows[-1].wallet)["ETH"] == held / E18

    shard = _shard()
    interleaved = data.draw(st.permutations(in_turn))
    assert _feed(shard, _partitions(outcomes, amounts), interleaved) == expected  # replay
    assert shard.wallet.holdings(BOOK, PARAMS.dex_hedges[BOOK]["ETH"]) == held


@settings(max_examples=40, deadline=None)
@given(OUTCOMES, AMOUNTS, st.data())
def test_a_snapshot_restored_mid_sequence_gives_the_same_outputs(
    outcomes: list, amounts: list[int], data: st.DataObject
) -> None:
    in_turn = _in_turn(_partitions(outcomes, amounts))
    expected = _feed(_shard(), _partitions(outcomes, amounts), in_turn)
    cut = data.draw(st.integers(0, len(in_turn)))
    parts = _partitions(outcomes, amounts)
    shard = _shard()
    before = _feed(shard, parts, in_turn[:cut])
    restored = pickle.loads(pickle.dumps(shard))  # what a Bytewax snapshot keeps
    assert before + _feed(restored, parts, in_turn[cut:]) == expected


def test_no_second_order_while_the_first_is_in_flight_then_none_after_its_fill() -> None:
    shard = _shard()
    first = _first_hedge(shard)
    outs = [_window(shard, k) for k in (1, 2)]
    assert [o.orders for o in outs] == [[], []]
    assert [[d.reason for d in o.denials] for o in outs] == [["in_flight"], []]  # once
    out = _window(shard, 3, [_swap(first, ts=T0 + 2 * W + 1)])
    assert out.orders == [] and [d.reason for d in out.denials] == ["within_band"]


# --- configuration ---------------------------------------------------------------------------

TOKEN_8 = "0x" + "8" * 40
CONFIG = f"""
[oracle.tokens."{TOKEN_8}"]
decimals = 8
asset = "BTC"

[risk]
venue = "0x{"f" * 40}"
underlyings = {{ "{WETH}" = "ETH" }}

[risk.collateral."{USDC}"]
asset = "USDC"
decimals = 6

[risk.collateral."{WETH}"]
asset = "ETH"
decimals = 18

[risk.dex_hedges."{BOOK}".ETH]
token = "{WETH}"
quote = "{USDC}"
initial = 1.5

[risk.dex_hedges."{BOOK}".BTC]
token = "{TOKEN_8}"
quote = "{USDC}"
initial = 0.1
"""


def test_dex_hedges_are_built_with_each_token_decimals_and_initial_raw_units() -> None:
    params = stage_params(load_config(CONFIG)).risk
    assert params is not None
    assert params.dex_hedges == {
        BOOK: {
            "ETH": DexHedge(token=WETH, quote=USDC, decimals=18, initial=15 * 10**17),
            "BTC": DexHedge(token=TOKEN_8, quote=USDC, decimals=8, initial=10**7),
        }
    }


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        ((f'token = "{WETH}"', f'token = "0x{"9" * 40}"'), f"{BOOK}.ETH.token", "not a known"),
        ((f'quote = "{USDC}"\ninitial = 1.5', f'quote = "0x{"9" * 40}"'), f"{BOOK}.ETH.quote",
         "not a known"),
        ((f'token = "{TOKEN_8}"', f'token = "{WETH}"'), f"{BOOK}.BTC.token", "is ETH, not BTC"),
        (("[risk]", f'[risk.collateral."{TOKEN_8}"]\nasset = "BTC"\ndecimals = 18\n[risk]'),
         f"{BOOK}.BTC.token", "in risk.collateral"),
        ((f'[oracle.tokens."{TOKEN_8}"]', '[oracle]\nuse_default_registry = false\n'
          f'[oracle.tokens."{TOKEN_8}"]'), f"{BOOK}.ETH", "has no oracle price"),
    ],
)  # fmt: skip
def test_a_bad_dex_hedge_stops_the_start_naming_the_key_and_the_value(
    change: tuple[str, str], where: str, says: str
) -> None:
    old, new = change
    assert old in CONFIG
    with pytest.raises(ConfigError, match=says) as error:
        stage_params(load_config(CONFIG.replace(old, new, 1)))
    assert f"`$.risk.dex_hedges.{where}`" in str(error.value)


def test_a_dex_hedge_account_not_lower_case_is_a_configuration_error() -> None:
    upper = "0x" + "A" * 40
    with pytest.raises(ConfigError, match=f"dex_hedges: an account is .* got '{upper}'"):
        load_config(CONFIG.replace(f'dex_hedges."{BOOK}".ETH', f'dex_hedges."{upper}".ETH'))


def test_a_dex_hedge_token_not_an_address_names_its_key() -> None:
    with pytest.raises(ConfigError, match="token must be a lower-case 0x address; got 'WETH'"):
        load_config(CONFIG.replace(f'token = "{WETH}"', 'token = "WETH"'))
