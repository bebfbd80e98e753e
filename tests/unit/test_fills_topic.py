"""The ``fills`` topic's codec: outcomes and progress round-trip, junk is a ``Rejected``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import fills_topic
from operators.model import FINAL_STATES, Execution, ExecutionProgress, RawMessage, Rejected

T0 = 1_700_000_040_000
ACCOUNT, SIGNER = "0x" + "ab" * 20, "0x" + "5e" * 20
ORDER_ID = "0x" + "0f" * 32
WETH, USDC = "0x" + "e0" * 20, "0x" + "c0" * 20


def _execution(**changes: object) -> Execution:
    fields: dict[str, object] = dict(
        order_id=ORDER_ID, seq=3, state="reverted", final=True, account=ACCOUNT,
        kind="liquidation", instrument="0x" + "1" * 64, signer=SIGNER, ts_event_ms=T0,
        tx_hash="0x" + "aa" * 32, nonce=7, block_number=120, block_hash="0x" + "bb" * 32,
        gas_used=51_234, fee_paid_wei=str(51_234 * 3 * 10**9), code="reverted",
        detail="MarginVenue: account is healthy",
    )  # fmt: skip
    return Execution(**(fields | changes))  # type: ignore[arg-type]


def _msg(value: bytes | None, offset: int = 5) -> RawMessage:
    return RawMessage("fills", 1, offset, T0, ACCOUNT.encode(), value)


HEX = "0123456789abcdef"
EXECUTIONS = st.builds(
    _execution,
    order_id=st.text(HEX, min_size=64, max_size=64).map(lambda h: "0x" + h),
    seq=st.integers(1, 2**31 - 1),
    state=st.sampled_from(["sent", "replaced", "mined", *sorted(FINAL_STATES)]),
    ts_event_ms=st.integers(0, 2**62),
    nonce=st.none() | st.integers(0, 2**64 - 1),
    fee_paid_wei=st.none() | st.integers(0, 2**256 - 1).map(str),
).map(
    lambda e: _execution(
        **{f: getattr(e, f) for f in e.__struct_fields__ if f != "final"},
        final=e.state in FINAL_STATES or (e.state == "mined" and e.seq % 2 == 0),
    )
)
PROGRESS = st.builds(
    ExecutionProgress, signer=st.just(SIGNER), through_ms=st.integers(-(2**63), 2**63 - 1)
)


@settings(max_examples=100, deadline=None)
@given(st.one_of(EXECUTIONS, PROGRESS))
def test_every_outcome_and_progress_round_trips(item: Execution | ExecutionProgress) -> None:
    assert fills_topic.decode(_msg(fills_topic.encode(item))) == item


def test_progress_is_tagged_progress_and_an_outcome_execution_on_the_wire() -> None:
    progress = json.loads(fills_topic.encode(ExecutionProgress(signer=SIGNER, through_ms=T0)))
    assert progress == {"record": "progress", "signer": SIGNER, "through_ms": T0}
    assert json.loads(fills_topic.encode(_execution()))["record"] == "execution"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty_value"),
        (b"\xff\xfe", "not_utf8"),
        (b'{"record": "execution"', "invalid_json"),
        (b'{"record": "fill", "signer": "x"}', "invalid_field"),  # an unknown tag
        (b'{"record": "progress", "signer": "' + SIGNER.encode() + b'"}', "invalid_field"),
        (fills_topic.encode(_execution(state="burnt")), "invalid_field"),
    ],
)
def test_a_message_that_does_not_decode_is_rejected_with_its_code_and_coordinates(
    value: bytes | None, code: str
) -> None:
    rejected = fills_topic.decode(_msg(value))
    assert isinstance(rejected, Rejected)
    assert rejected.reason.split(":")[0] == code
    assert (rejected.stage, rejected.topic, rejected.partition, rejected.offset) == (
        "fills", "fills", 1, 5
    )  # fmt: skip
    assert rejected.raw == value


SWAP: dict[str, object] = dict(
    kind="dex_hedge", instrument=WETH, state="mined", final=True, code="", detail="",
    token_in=WETH, amount_in=str(3 * 10**18), token_out=USDC, amount_out=str(5_999 * 10**6),
)  # fmt: skip
"""A final mined swap that sold 3 WETH for 5,999 USDC."""


@pytest.mark.parametrize(
    "item",
    [_execution(**SWAP), _execution(**SWAP | {"final": False, "amount_in": None})],
    ids=["final", "not_final_without_amounts"],
)
def test_a_mined_swap_round_trips_with_its_amounts(item: Execution) -> None:
    assert fills_topic.decode(_msg(fills_topic.encode(item))) == item


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (_execution(order_id="0x" + "0F" * 32), "order_id"),
        (_execution(order_id="0x1234"), "order_id"),
        (_execution(account="0x" + "AB" * 20), "account"),  # would pick another shard
        (_execution(signer="nobody"), "signer"),
        (_execution(seq=0), "seq"),
        (_execution(state="reverted", final=False), "final"),
        (_execution(state="sent", final=True), "final"),
        (_execution(ts_event_ms=2**63), "ts_event_ms"),
        (_execution(nonce=-1), "nonce"),
        (_execution(fee_paid_wei="1e18"), "wei"),
        (_execution(max_fee_per_gas_wei=str(2**256)), "wei"),
        (_execution(**SWAP | {"token_in": "0x" + "C0" * 20}), "token_in"),
        (_execution(**SWAP | {"amount_out": "-5"}), "amount_out"),
        (_execution(**SWAP | {"amount_in": str(2**256)}), "amount_in"),
        (_execution(**SWAP | {"amount_out": None}), "needs token_in, amount_in"),
        (ExecutionProgress(signer="0x" + "5E" * 20, through_ms=T0), "signer"),
        (ExecutionProgress(signer=SIGNER, through_ms=2**63), "through_ms"),
    ],
)
def test_an_outcome_outside_its_checks_is_rejected_naming_the_field(
    item: Execution | ExecutionProgress, field: str
) -> None:
    rejected = fills_topic.decode(_msg(fills_topic.encode(item)))
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("invalid_field: ") and field in rejected.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 400), EXECUTIONS)
def test_a_mutated_message_decodes_or_is_rejected_and_never_raises(
    noise: bytes, at: int, execution: Execution
) -> None:
    body = fills_topic.encode(execution)
    value = body[:at] + noise + body[at + len(noise) :]
    item = fills_topic.decode(_msg(value))
    assert isinstance(item, Execution | ExecutionProgress | Rejected)
