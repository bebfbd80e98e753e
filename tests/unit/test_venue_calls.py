"""The venue call of an order: the same bytes as web3's encoding against the venue's ABI."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from connectors.contracts import load_artifact
from operators.model import Order
from operators.units import e18
from operators.venue_calls import LIQUIDATE_SELECTOR, TRADE_SELECTOR, acts_for, venue_calldata
from tests.unit.order_examples import an_order, orders

_VENUE = Web3().eth.contract(abi=load_artifact("MarginVenue").abi)


def test_selectors_are_keccak_of_the_signatures() -> None:
    assert keccak(text="trade(bytes32,int256,uint256,bytes32)")[:4].hex() == TRADE_SELECTOR
    signature = "liquidate(address,bytes32,int256,uint256,bytes32)"
    assert keccak(text=signature)[:4].hex() == LIQUIDATE_SELECTOR


@given(orders)
def test_calldata_equals_web3_encoding_against_the_abi(order: Order) -> None:
    words = [bytes.fromhex(order.instrument[2:]), int(order.size_e18), e18(order.price),
             bytes.fromhex(order.order_id[2:])]  # fmt: skip
    if int(order.size_e18) == 0 or e18(order.price) <= 0:
        with pytest.raises(ValueError, match="must be > 0"):
            venue_calldata(order)
        return
    if order.kind == "liquidation":
        expected = _VENUE.encode_abi("liquidate", [Web3.to_checksum_address(order.account), *words])
    else:
        expected = _VENUE.encode_abi("trade", words)
    assert venue_calldata(order) == expected


@given(st.decimals(-(10**6), 10**6, places=18, allow_nan=False, allow_infinity=False))
def test_e18_of_a_decimal_float_is_its_exact_18_decimal_units(value: object) -> None:
    f = float(value)  # type: ignore[arg-type]
    from decimal import Decimal

    assert e18(f) == round(Decimal(repr(f)) * 10**18)


def test_e18_of_a_tenth_is_exact() -> None:
    assert e18(0.1) == 10**17 and e18(-2500.25) == -2_500_250_000_000_000_000_000


def test_calldata_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be liquidation or hedge"):
        venue_calldata(an_order(kind="swap"))


def test_liquidator_sends_liquidations_and_a_book_its_own_hedges() -> None:
    book, liquidator = "0x" + "b0" * 20, "0x" + "11" * 20
    assert acts_for(an_order(), liquidator, liquidator)
    assert not acts_for(an_order(), book, liquidator)
    assert acts_for(an_order(kind="hedge", account=book), book, liquidator)
    assert not acts_for(an_order(kind="hedge", account=book), liquidator, liquidator)
    assert acts_for(an_order(kind="dex_hedge", account=book), book, liquidator)
    assert not acts_for(an_order(kind="dex_hedge", account=book), liquidator, liquidator)
