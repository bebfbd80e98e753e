"""Orders for the executor's tests: a valid liquidation leg, and a strategy of them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from operators.model import Order
from operators.units import e18

_HEX = "0123456789abcdef"


def an_order(**fields: Any) -> Order:
    """A liquidation leg that the dev venue would take, with ``fields`` replaced."""
    base: dict[str, Any] = {
        "order_id": "0x" + "ab" * 32, "kind": "liquidation", "account": "0x" + "a1" * 20,
        "instrument": "0x" + "cd" * 32, "size": -1.5, "price": 2500.25, "oracle_price": 2500.0,
        "bonus_usd": 25.0, "reason": "below maintenance", "ts_event_ms": 1_767_225_600_000,
        "health": 0.8, "worst_scenario": 3, "asset": "ETH", "underlying_price": 2500.0,
        "oracle_window_end_ms": 1_767_225_600_000, "position": 2.0,
        "valid_until_ms": 1_767_225_720_000,
    }  # fmt: skip
    merged = {**base, **fields}
    merged.setdefault("size_e18", str(e18(merged["size"])))
    return Order(**merged)


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text(_HEX, min_size=n, max_size=n).map(lambda h: "0x" + h)


sizes = st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: abs(x) >= 1e-12)
orders = st.builds(
    an_order,
    order_id=_hex(64),
    kind=st.sampled_from(["liquidation", "hedge"]),
    account=_hex(40),
    instrument=_hex(64),
    size=sizes,
    price=st.floats(1e-9, 1e7, allow_nan=False),
    oracle_price=st.floats(1e-9, 1e7, allow_nan=False),
    reason=st.text(max_size=20),
    position=st.floats(-1e6, 1e6, allow_nan=False),
    attempt=st.integers(1, 100),
)
