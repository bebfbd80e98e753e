"""Orders on the topic are authenticated: any change, a wrong tag or none is refused."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.model import Order
from operators.order_auth import AuthError, decode_verified, encode_signed, load_secret, tag
from tests.unit.order_examples import an_order, orders

SECRET = b"k" * 32


@given(orders)
def test_signed_order_when_decoded_then_it_is_the_same_order(order: Order) -> None:
    assert decode_verified(encode_signed(order, SECRET), SECRET) == order


@given(orders, st.data())
def test_signed_order_when_any_field_is_altered_then_refused_as_forged(
    order: Order, data: st.DataObject
) -> None:
    fields = msgspec.structs.asdict(order)
    name = data.draw(st.sampled_from(sorted(fields)))
    value = fields[name]
    if isinstance(value, bool) or value is None:
        changed = "0x" + "ee" * 32
    elif isinstance(value, int):
        changed = value + 1
    elif isinstance(value, float):
        changed = value * 2 + 1.0
    else:
        changed = value + "0"
    doc = json.loads(encode_signed(order, SECRET))
    doc[name] = changed
    with pytest.raises(AuthError) as refused:
        decode_verified(json.dumps(doc).encode(), SECRET)
    assert refused.value.code in ("forged", "malformed")  # malformed: a type the order refuses


@given(orders)
def test_signed_order_when_reformatted_then_still_verified(order: Order) -> None:
    doc = json.loads(encode_signed(order, SECRET))
    reordered = json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
    assert decode_verified(reordered, SECRET) == order


def test_order_without_auth_is_refused_as_unsigned() -> None:
    with pytest.raises(AuthError) as refused:
        decode_verified(msgspec.json.encode(an_order()), SECRET)
    assert refused.value.code == "unsigned"


def test_order_signed_with_another_secret_is_refused_as_forged() -> None:
    with pytest.raises(AuthError) as refused:
        decode_verified(encode_signed(an_order(), b"x" * 32), SECRET)
    assert refused.value.code == "forged"


@pytest.mark.parametrize("value", [b"", b"{", b"[]", b'{"record":"order"}', b"\xff\xfe"])
def test_junk_on_the_orders_topic_is_refused_as_malformed(value: bytes) -> None:
    with pytest.raises(AuthError) as refused:
        decode_verified(value, SECRET)
    assert refused.value.code == "malformed"


def test_tag_is_hmac_sha256_of_the_canonical_json() -> None:
    import hashlib
    import hmac

    order = an_order()
    expected = hmac.new(SECRET, msgspec.json.encode(order), hashlib.sha256).hexdigest()
    assert tag(order, SECRET) == expected
    assert encode_signed(order, SECRET).endswith(f',"auth":"{expected}"}}'.encode())


def test_secret_file_when_short_or_missing_then_error_names_the_key(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 31 + b"\n")
    with pytest.raises(ValueError, match=r"orders.secret_file .* at least 32 bytes; got 31"):
        load_secret(short)
    with pytest.raises(ValueError, match=r"orders.secret_file .* cannot be read"):
        load_secret(tmp_path / "absent")
    good = tmp_path / "good"
    good.write_bytes(b"y" * 40 + b"\n")
    assert load_secret(good) == b"y" * 40
