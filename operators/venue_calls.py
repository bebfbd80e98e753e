"""The venue call that executes an order: ``MarginVenue.liquidate`` or ``MarginVenue.trade``.

- a ``liquidation`` leg: ``liquidate(account, instrument, size, price, orderId)``, sent
  from the liquidator's key;
- a ``hedge`` leg: ``trade(instrument, size, price, orderId)``, sent from the book's own key
  (the book is the signer's account).

Sizes and prices go on chain with 18 decimals (``infra/contracts/MarginVenue.sol``): the
size as the order carries it (``Order.size_e18``, exact for a leg that closes a position),
the price rounded from the float's shortest decimal text (``units.e18``).
"""

from __future__ import annotations

from operators.abi import encode_word
from operators.model import Order
from operators.units import e18

TRADE_SELECTOR = "ec973367"
"""keccak256("trade(bytes32,int256,uint256,bytes32)")[:4] (tests/unit/test_venue_calls.py)."""
LIQUIDATE_SELECTOR = "38e49151"
"""keccak256("liquidate(address,bytes32,int256,uint256,bytes32)")[:4]."""


def venue_calldata(order: Order) -> str:
    """The ``data`` of the venue call that executes ``order``, ``0x`` and hex digits;
    ``ValueError`` for an order of another kind, or one the venue would refuse (zero size,
    price <= 0)."""
    size, price = int(order.size_e18), e18(order.price)
    if size == 0 or price <= 0:
        msg = (
            f"order {order.order_id}: size {order.size_e18} e18 and price {order.price!r} "
            f"must be > 0"
        )
        raise ValueError(msg)
    words = [int(order.instrument, 16), size, price, int(order.order_id, 16)]
    if order.kind == "liquidation":
        return (
            "0x"
            + LIQUIDATE_SELECTOR
            + "".join(encode_word(w) for w in [int(order.account, 16), *words])
        )
    if order.kind == "hedge":
        return "0x" + TRADE_SELECTOR + "".join(encode_word(w) for w in words)
    raise ValueError(
        f"order {order.order_id}: kind must be liquidation or hedge; got {order.kind!r}"
    )


def acts_for(order: Order, signer: str, liquidator: str) -> bool:
    """Whether ``signer`` (lower-case hex) sends ``order``: the liquidator its liquidations,
    a book its own hedges, on the venue (``hedge``) and on the DEX (``dex_hedge``)."""
    if order.kind == "liquidation":
        return signer == liquidator
    return order.kind in ("hedge", "dex_hedge") and order.account == signer
