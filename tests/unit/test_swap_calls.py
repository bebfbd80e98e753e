"""A routed order's SplitSwap call, its minimum output, and its fill read from the receipt."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from eth_utils import keccak
from hypothesis import example, given
from hypothesis import strategies as st
from web3 import Web3

from connectors.contracts import load_artifact
from operators import abi
from operators.config import ConfigError, parse_config
from operators.pool_state import V2PoolState
from operators.pretrade import Denial
from operators.swap_calls import (
    ROUTED,
    SWAP_SELECTOR,
    V2_SWAP,
    DexPair,
    FillError,
    SwapLeg,
    SwapPlan,
    decode_fill,
    dex_pairs,
    gas_cost_per_unit,
    min_amount_out,
    plan_order,
    swap_amount_in,
    swap_calldata,
)
from tests.unit.order_examples import an_order
from tests.unit.pool_examples import pool_sets

_SPLIT = Web3().eth.contract(abi=load_artifact("SplitSwap").abi)
TOKEN, QUOTE = "0x" + "e7" * 20, "0x" + "0c" * 20
SPLIT, BOOK = "0x" + "55" * 20, "0x" + "b0" * 20
PAIR = DexPair(token=TOKEN, quote=QUOTE, token_decimals=18, quote_decimals=6, pools=())
ORDER_ID = "0x" + "ab" * 32

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
amounts = st.integers(1, 2**200)
legs = st.builds(SwapLeg, pool=addresses, v3=st.booleans(), amount_in=amounts, amount_out=amounts)
plans = st.builds(
    SwapPlan, token_in=addresses, token_out=addresses, amount_in=amounts,
    min_amount_out=st.integers(0, 2**256 - 1), quote_out=amounts, block=st.integers(0, 2**40),
    legs=st.lists(legs, min_size=1, max_size=7).map(tuple),
)  # fmt: skip
decimals = st.integers(0, 36)
prices = st.floats(1e-6, 1e9, allow_nan=False)
bands = st.floats(0.0, 10_000.0, allow_nan=False)


def test_selector_and_topic_are_keccak_of_the_signatures() -> None:
    signature = "swap(bytes32,address,address,uint256,uint256,(address,bool,uint256)[])"
    assert keccak(text=signature)[:4].hex() == SWAP_SELECTOR
    routed = "Routed(bytes32,address,address,address,uint256,uint256)"
    assert "0x" + keccak(text=routed).hex() == ROUTED
    assert (
        "0x" + keccak(text="Swap(address,uint256,uint256,uint256,uint256,address)").hex() == V2_SWAP
    )


@given(plans, st.binary(min_size=32, max_size=32))
def test_calldata_equals_web3_encoding_against_the_abi(plan: SwapPlan, order_id: bytes) -> None:
    cs = Web3.to_checksum_address
    expected = _SPLIT.encode_abi(
        "swap",
        [order_id, cs(plan.token_in), cs(plan.token_out), plan.amount_in, plan.min_amount_out,
         [(cs(leg.pool), leg.v3, leg.amount_in) for leg in plan.legs]],
    )  # fmt: skip
    assert swap_calldata("0x" + order_id.hex(), plan) == expected


def _pair(token_decimals: int, quote_decimals: int) -> DexPair:
    return DexPair(
        token=TOKEN, quote=QUOTE, token_decimals=token_decimals, quote_decimals=quote_decimals,
        pools=(),
    )  # fmt: skip


def _bound(amount_in: int, sell: bool, price: float, band: float, pair: DexPair) -> Fraction:
    """The exact least output, as the module docstring writes it."""
    p, b = Fraction(Decimal(repr(price))), Fraction(Decimal(repr(band))) / 10_000
    if sell:
        return amount_in * p * 10**pair.quote_decimals / 10**pair.token_decimals * (1 - b)
    return amount_in / p * 10**pair.token_decimals / 10**pair.quote_decimals * (1 - b)


@given(amounts, st.booleans(), prices, bands, decimals, decimals)
@example(3, True, 0.1, 0.0, 18, 18)  # 0.3, exact in decimal but not in binary
def test_min_out_is_the_exact_bound_rounded_up(
    amount_in: int, sell: bool, price: float, band: float, dt: int, dq: int
) -> None:
    pair = _pair(dt, dq)
    least = min_amount_out(amount_in, sell=sell, price=price, band_bps=band, pair=pair)
    bound = _bound(amount_in, sell, price, band, pair)
    assert least >= bound  # rounding never loosens the band
    assert least - 1 < bound  # and takes no more than the rounding


@given(amounts, amounts, st.booleans(), prices, bands, bands, decimals, decimals)
def test_min_out_is_monotone_in_the_amount_and_the_band(
    a: int, b: int, sell: bool, price: float, band1: float, band2: float, dt: int, dq: int
) -> None:
    pair = _pair(dt, dq)
    (small, big), (tight, loose) = sorted((a, b)), sorted((band1, band2))

    def least(amount: int, band: float) -> int:
        return min_amount_out(amount, sell=sell, price=price, band_bps=band, pair=pair)

    assert least(small, tight) <= least(big, tight)
    assert least(small, loose) <= least(small, tight)


def test_min_out_of_a_sell_of_one_weth_at_2500_with_2_pct_is_2450_usdc() -> None:
    assert (
        min_amount_out(10**18, sell=True, price=2500.0, band_bps=200.0, pair=PAIR) == 2450 * 10**6
    )
    # buying with 2500 USDC at 2500: at least 0.98 WETH
    assert min_amount_out(2500 * 10**6, sell=False, price=2500.0, band_bps=200.0, pair=PAIR) == (
        98 * 10**16
    )


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan])
def test_min_out_refuses_a_price_not_above_zero(price: float) -> None:
    with pytest.raises(ValueError, match="price must be > 0"):
        min_amount_out(1, sell=True, price=price, band_bps=1.0, pair=PAIR)


@given(st.integers(-(2**200), 2**200).filter(bool), prices, decimals, decimals)
def test_amount_in_is_never_more_than_the_order(
    size_e18: int, price: float, dt: int, dq: int
) -> None:
    pair = _pair(dt, dq)
    amount = swap_amount_in(size_e18, price, pair)
    if size_e18 < 0:  # units of the token sold
        exact = Fraction(-size_e18 * 10**dt, 10**18)
    else:  # units of the quote spent
        exact = Fraction(size_e18) * Fraction(Decimal(repr(price))) * 10**dq / 10**18
    assert amount <= exact < amount + 1


# the fill -------------------------------------------------------------------------------
def _word(value: int) -> str:
    return abi.encode_word(value)


def _routed(
    amount_in: int, amount_out: int, order_id: str = ORDER_ID, payer: str = BOOK
) -> dict[str, Any]:
    topics = [ROUTED, abi.int_topic(int(order_id, 16)), abi.address_topic(payer)]
    data = abi.encode_data(int(TOKEN, 16), int(QUOTE, 16), amount_in, amount_out)
    return {"address": SPLIT, "topics": topics, "data": data}


def _v3_swap(pool: str, taken: int, paid: int) -> dict[str, Any]:
    # WETH is token1 of a USDC/WETH pool: amount1 in (> 0), amount0 out (< 0)
    return {
        "address": pool, "topics": [abi.V3_SWAP, abi.address_topic(SPLIT), abi.address_topic(BOOK)],
        "data": abi.encode_data(-paid, taken, 2**96, 10**20, -200000),
    }  # fmt: skip


def _v2_swap(pool: str, taken: int, paid: int) -> dict[str, Any]:
    return {
        "address": pool, "topics": [V2_SWAP, abi.address_topic(SPLIT), abi.address_topic(BOOK)],
        "data": abi.encode_data(0, taken, paid, 0),
    }  # fmt: skip


V2_POOL, V3_POOL = "0x" + "22" * 20, "0x" + "33" * 20
PLAN = SwapPlan(
    token_in=TOKEN, token_out=QUOTE, amount_in=5 * 10**18, min_amount_out=1,
    quote_out=14_000 * 10**6, block=7,
    legs=(SwapLeg(pool=V2_POOL, v3=False, amount_in=2 * 10**18, amount_out=6_000 * 10**6),
          SwapLeg(pool=V3_POOL, v3=True, amount_in=3 * 10**18, amount_out=8_000 * 10**6)),
)  # fmt: skip
LOGS = [
    _v2_swap(V2_POOL, 2 * 10**18, 6_000 * 10**6),
    _v3_swap(V3_POOL, 3 * 10**18, 8_000 * 10**6),
    _routed(5 * 10**18, 14_000 * 10**6),
]


def _decode(logs: list[Any]) -> Any:
    return decode_fill(logs, split_swap=SPLIT, order_id=ORDER_ID, payer=BOOK, plan=PLAN)


def test_fill_is_what_routed_says_when_the_pools_swap_logs_agree() -> None:
    fill = _decode(LOGS)
    assert (fill.token_in, fill.amount_in, fill.token_out, fill.amount_out) == (
        TOKEN, 5 * 10**18, QUOTE, 14_000 * 10**6,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("logs", "match"),
    [
        (LOGS[:2], "one Routed event"),
        ([*LOGS, LOGS[2]], "one Routed event"),
        ([*LOGS[:2], _routed(5 * 10**18, 14_000 * 10**6, order_id="0x" + "cd" * 32)], "order id"),
        ([*LOGS[:2], _routed(5 * 10**18, 14_000 * 10**6, payer=SPLIT)], "payer"),
        ([*LOGS[:2], _routed(4 * 10**18, 14_000 * 10**6)], "the order sent"),
        ([*LOGS[:2], _routed(5 * 10**18, 14_001 * 10**6)], "the pools paid"),
        ([LOGS[0], _v3_swap(V3_POOL, 3 * 10**18 - 1, 8_000 * 10**6), LOGS[2]], "took"),
        ([LOGS[0], LOGS[2]], "one Swap event of pool " + V3_POOL),
    ],
)
def test_fill_that_does_not_match_the_plan_is_an_error(logs: list[Any], match: str) -> None:
    with pytest.raises(FillError, match=match):
        _decode(logs)


junk_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
junk_logs = st.fixed_dictionaries(
    {},
    optional={
        "address": st.sampled_from([SPLIT, V2_POOL, V3_POOL, "0x" + "99" * 20]) | junk_values,
        "topics": st.lists(
            st.sampled_from([ROUTED, abi.V3_SWAP, V2_SWAP]) | st.text(max_size=66), max_size=4
        ) | junk_values,
        "data": st.text("0123456789abcdefx", max_size=400) | junk_values,
    },
) | junk_values  # fmt: skip


@given(st.lists(junk_logs, max_size=6), st.randoms())
def test_junk_logs_are_a_fill_error_or_change_nothing(junk: list[Any], rnd: Any) -> None:
    logs = [*LOGS, *junk]
    rnd.shuffle(logs)
    try:
        fill = _decode(logs)
    except ValueError:
        return  # FillError or AbiError: nothing else escapes
    assert fill == _decode(LOGS)


@given(
    st.lists(
        junk_logs.filter(
            lambda j: not isinstance(j, dict) or j.get("address") not in (SPLIT, V2_POOL, V3_POOL)
        ),
        max_size=6,
    )
)
def test_logs_of_other_contracts_change_nothing(junk: list[Any]) -> None:
    assert _decode([*junk, *LOGS]) == _decode(LOGS)


# planning --------------------------------------------------------------------------------
def _pair_pool(reserve_token: int, reserve_quote: int, address: str = V2_POOL) -> V2PoolState:
    token0, token1 = sorted((TOKEN, QUOTE))
    reserves = {TOKEN: reserve_token, QUOTE: reserve_quote}
    return V2PoolState(address=address, token0=token0, token1=token1, reserve0=reserves[token0],
                       reserve1=reserves[token1], block=9)  # fmt: skip


def _dex_order(size: float, **fields: Any) -> Any:
    base = {"kind": "dex_hedge", "instrument": TOKEN, "size": size, "underlying_price": 2500.0}
    return an_order(**{**base, **fields})


def test_plan_of_a_sell_routes_the_tokens_for_the_quote_with_its_minimum() -> None:
    pools = [_pair_pool(10_000 * 10**18, 25_000_000 * 10**6)]
    plan = plan_order(_dex_order(-2.0), PAIR, pools, 200.0)
    assert isinstance(plan, SwapPlan)
    assert (plan.token_in, plan.token_out, plan.amount_in, plan.block) == (
        TOKEN,
        QUOTE,
        2 * 10**18,
        9,
    )
    assert plan.min_amount_out == 4900 * 10**6 and plan.quote_out > plan.min_amount_out
    assert [(leg.pool, leg.v3, leg.amount_in) for leg in plan.legs] == [
        (V2_POOL, False, 2 * 10**18)
    ]


def test_plan_of_a_buy_spends_size_times_price_of_the_quote() -> None:
    pools = [_pair_pool(10_000 * 10**18, 25_000_000 * 10**6)]
    plan = plan_order(_dex_order(2.0), PAIR, pools, 200.0)
    assert isinstance(plan, SwapPlan)
    assert (plan.token_in, plan.token_out, plan.amount_in) == (QUOTE, TOKEN, 5000 * 10**6)
    assert plan.min_amount_out == 196 * 10**16


@pytest.mark.parametrize(
    ("order", "pools", "code"),
    [
        (_dex_order(-2.0, instrument=QUOTE), [_pair_pool(10**22, 10**13)], "no_dex_hedge"),
        (_dex_order(-1e-19), [_pair_pool(10**22, 10**13)], "invalid_order"),
        (_dex_order(-2.0, underlying_price=0.0), [_pair_pool(10**22, 10**13)], "invalid_order"),
        (_dex_order(-2.0), [], "unroutable"),
        (_dex_order(-2000.0), [_pair_pool(10**21, 25 * 10**11)], "price_impact"),
    ],
)
def test_plan_refusals_name_their_code(order: Any, pools: list[Any], code: str) -> None:
    denial = plan_order(order, PAIR, pools, 200.0)
    assert isinstance(denial, Denial) and denial.code == code, denial


def _config(**tokens: Any) -> dict[str, Any]:
    return {
        "oracle": {
            "tokens": tokens,
            "sources": [
                {"address": V2_POOL, "kind": "uniswap_v2", "token0": QUOTE, "token1": TOKEN},
                {"address": V3_POOL, "kind": "uniswap_v3", "token0": QUOTE, "token1": TOKEN},
                {"address": "0x" + "44" * 20, "kind": "uniswap_v3", "token0": QUOTE,
                 "token1": "0x" + "45" * 20},
            ],
        },
        "risk": {"dex_hedges": {BOOK: {"ETH": {"token": TOKEN, "quote": QUOTE}}}},
    }  # fmt: skip


def test_dex_pairs_take_decimals_from_the_oracle_tokens_and_the_pair_pools() -> None:
    listed = ((TOKEN, 18, "ETH"), (QUOTE, 6, "USDC"), ("0x" + "45" * 20, 8, "BTC"))
    tokens = {t: {"decimals": d, "asset": a} for t, d, a in listed}
    pairs = dex_pairs(parse_config(_config(**tokens)))
    assert pairs == {
        (BOOK, "ETH"): DexPair(token=TOKEN, quote=QUOTE, token_decimals=18, quote_decimals=6,
                               pools=((V2_POOL, "uniswap_v2"), (V3_POOL, "uniswap_v3")))
    }  # fmt: skip


def test_dex_pairs_refuse_a_token_missing_from_the_oracle_tokens() -> None:
    with pytest.raises(ConfigError, match=r"risk.dex_hedges.0xb0b0.*\.ETH\.quote: 0x0c0c"):
        dex_pairs(parse_config(_config(**{TOKEN: {"decimals": 18, "asset": "ETH"}})))


@given(
    pool_sets(token0=QUOTE, token1=TOKEN),
    st.floats(-1e4, 1e4, allow_nan=False).filter(lambda x: abs(x) > 1e-9),
    st.floats(1e-3, 1e5, allow_nan=False),
    st.floats(0.0, 2_000.0, allow_nan=False),
)
def test_a_plan_sells_exactly_the_order_over_its_legs_for_at_least_its_minimum(
    pools: list[Any], size: float, price: float, band: float
) -> None:
    order = _dex_order(size, underlying_price=price)
    plan = plan_order(order, PAIR, pools, band)
    if isinstance(plan, Denial):
        assert plan.code in ("unroutable", "price_impact", "invalid_order"), plan
        return
    sell = size < 0
    assert (plan.token_in, plan.token_out) == ((TOKEN, QUOTE) if sell else (QUOTE, TOKEN))
    assert plan.amount_in == swap_amount_in(int(order.size_e18), price, PAIR)
    assert sum(leg.amount_in for leg in plan.legs) == plan.amount_in
    assert sum(leg.amount_out for leg in plan.legs) == plan.quote_out >= plan.min_amount_out
    assert plan.min_amount_out == min_amount_out(
        plan.amount_in, sell=sell, price=price, band_bps=band, pair=PAIR
    )
    assert {leg.pool for leg in plan.legs} <= {p.address for p in pools}


# gas ---------------------------------------------------------------------------------------
def test_gas_is_priced_in_raw_units_of_the_output() -> None:
    # 20 gwei a gas unit, ETH at 2,500 USD: 5e-5 USD a unit = 50 raw USDC (6 decimals)
    assert gas_cost_per_unit(20 * 10**9, 2500.0, 1.0, 6) == 50
    # in WETH (18 decimals) at 2,500 USD: exactly the gas price in wei
    assert gas_cost_per_unit(20 * 10**9, 2500.0, 2500.0, 18) == 20 * 10**9
    for bad in (math.nan, 0.0, -1.0, math.inf):
        assert gas_cost_per_unit(20 * 10**9, bad, 1.0, 6) == 0
        assert gas_cost_per_unit(20 * 10**9, 2500.0, bad, 6) == 0


def test_a_small_order_on_priced_gas_takes_one_pool_where_free_gas_splits_it() -> None:
    # two equal pairs: unpriced gas splits 1 token over both; at 20 gwei the second leg's
    # 100k gas (about 5 USD) is worth more than the output it adds
    pools = [_pair_pool(10_000 * 10**18, 25_000_000 * 10**6, a) for a in (V2_POOL, V3_POOL)]
    free = plan_order(_dex_order(-1.0), PAIR, pools, 200.0)
    priced = plan_order(_dex_order(-1.0), PAIR, pools, 200.0, 20 * 10**9, 2500.0)
    assert isinstance(free, SwapPlan) and isinstance(priced, SwapPlan)
    assert len(free.legs) == 2 and len(priced.legs) == 1


@given(
    pool_sets(token0=QUOTE, token1=TOKEN),
    st.floats(-1e3, 1e3, allow_nan=False).filter(lambda x: abs(x) > 1e-6),
    st.integers(0, 10**12),
)
def test_priced_gas_only_ever_drops_legs_of_the_same_order(
    pools: list[Any], size: float, gas_price: int
) -> None:
    order = _dex_order(size)
    free = plan_order(order, PAIR, pools, 10_000.0)
    priced = plan_order(order, PAIR, pools, 10_000.0, gas_price, 2500.0)
    if isinstance(free, Denial):
        assert isinstance(priced, Denial) and priced.code == free.code
        return
    assert isinstance(priced, SwapPlan)
    assert priced.amount_in == free.amount_in == sum(leg.amount_in for leg in priced.legs)
    assert 1 <= len(priced.legs) <= len(free.legs)
    if gas_price == 0:
        assert priced == free
