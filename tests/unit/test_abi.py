"""operators.abi: event topics, JSON-RPC quantities and ABI words, decoded and encoded.

The topic0 constants are checked against keccak256 of their signatures (eth_utils, the
reference implementation web3 uses), so a typo in a hash or a signature cannot hide.
"""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from operators import abi

ALL_EVENT_TABLES = {
    "V3_POOL_EVENTS": abi.V3_POOL_EVENTS,
    "V2_PAIR_EVENTS": abi.V2_PAIR_EVENTS,
    "CHAINLINK_EVENTS": abi.CHAINLINK_EVENTS,
    "VENUE_EVENTS": abi.VENUE_EVENTS,
}

EVENTS = [
    pytest.param(topic0, signature, id=f"{table}:{signature}")
    for table, events in ALL_EVENT_TABLES.items()
    for topic0, signature in events.items()
]


def _topic0(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


# --- topic0 constants -------------------------------------------------------------------


@pytest.mark.parametrize(("topic0", "signature"), EVENTS)
def test_topic0_equals_keccak256_of_its_signature(topic0: str, signature: str) -> None:
    assert topic0 == _topic0(signature)


@pytest.mark.parametrize(("topic0", "signature"), EVENTS)
def test_topic0_is_lower_case_32_byte_hex(topic0: str, signature: str) -> None:
    # The decoder lower-cases a log's topic0 before the lookup, so the keys must be lower.
    assert topic0 == topic0.lower()
    assert len(topic0) == 66 and topic0.startswith("0x")


def test_named_constants_are_the_events_they_name() -> None:
    assert (
        abi.V3_POOL_EVENTS[abi.V3_SWAP]
        == "Swap(address,address,int256,int256,uint160,uint128,int24)"
    )
    assert abi.V2_PAIR_EVENTS[abi.V2_SYNC] == "Sync(uint112,uint112)"
    assert (
        abi.CHAINLINK_EVENTS[abi.CHAINLINK_ANSWER_UPDATED]
        == "AnswerUpdated(int256,uint256,uint256)"
    )
    assert abi.V2_PAIR_EVENTS[abi.TRANSFER] == "Transfer(address,address,uint256)"
    assert _topic0("Transfer(address,address,uint256)") == abi.TRANSFER


def test_event_tables_do_not_share_a_topic0_except_erc20_events_of_the_pair() -> None:
    # A V2 pair is an ERC-20, so Transfer/Approval belong to it; nothing else may overlap,
    # or one contract kind's price event could be read as another's.
    tables = [set(t) for t in ALL_EVENT_TABLES.values()]
    assert sum(map(len, tables)) == len(set().union(*tables))


# --- quantity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x0", 0),
        ("0x1060a39", 17173049),
        ("0x6450ffef", 1683029999),
        ("0X1F", 31),
        ("0x" + "f" * 64, 2**256 - 1),
        (0, 0),
        (17173049, 17173049),
        (2**256, 2**256),
    ],
)
def test_quantity_accepts_hex_strings_and_non_negative_ints(
    value: int | str, expected: int
) -> None:
    assert abi.quantity(value, "blockNumber") == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("17173049", id="decimal-string"),
        pytest.param("0", id="decimal-zero-string"),
        pytest.param(-1, id="negative-int"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("", id="empty"),
        pytest.param("0x", id="bare-0x"),
        pytest.param("0xzz", id="non-hex-digits"),
        pytest.param("garbage", id="garbage"),
        pytest.param(" 0x1", id="leading-space"),
    ],
)
def test_quantity_rejects_non_quantities_with_bad_quantity(value: object) -> None:
    with pytest.raises(abi.AbiError, match=r"^bad_quantity: blockNumber ") as info:
        abi.quantity(value, "blockNumber")  # type: ignore[arg-type]
    assert repr(value) in str(info.value)  # the message shows what arrived


# int(text, 16) also takes a sign, inner whitespace and digit-group underscores, and
# `quantity` hands it everything after "0x": these slip through (see the report).
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0x-1", id="negative-hex"),
        pytest.param("0x+1", id="plus-sign"),
        pytest.param("0x 1", id="inner-space"),
        pytest.param("0x1 ", id="trailing-space"),
        pytest.param("0x1_0", id="underscore"),
    ],
)
def test_quantity_rejects_signed_or_padded_hex(value: str) -> None:
    with pytest.raises(abi.AbiError, match=r"^bad_quantity: "):
        abi.quantity(value, "logIndex")


# --- data_words, word -------------------------------------------------------------------


def test_data_words_splits_unsigned_32_byte_words() -> None:
    data = "0x" + format(1, "064x") + format(2**256 - 1, "064x")
    assert abi.data_words(data, 2) == [1, 2**256 - 1]
    assert abi.data_words("0x", 0) == []


@pytest.mark.parametrize(
    ("data", "count", "got"),
    [
        pytest.param("0x" + "00" * 32, 2, "32", id="one-word-for-two"),
        pytest.param("0x" + "00" * 96, 2, "96", id="three-words-for-two"),
        pytest.param("0x" + "00" * 31, 1, "31", id="short-word"),
        pytest.param("0x" + "0" * 63, 1, "31", id="odd-nibbles"),
        pytest.param("0x", 1, "0", id="empty"),
        pytest.param("00" * 32, 1, "'0000000000'", id="no-0x"),
    ],
)
def test_data_words_rejects_wrong_length_with_bad_data_length(
    data: str, count: int, got: str
) -> None:
    with pytest.raises(abi.AbiError, match=r"^bad_data_length: ") as info:
        abi.data_words(data, count)
    message = str(info.value)
    assert f"expected {32 * count} bytes" in message
    assert message.endswith(f"got {got}")


def test_data_words_rejects_non_hex_of_right_length() -> None:
    with pytest.raises(abi.AbiError, match=r"^bad_data: "):
        abi.data_words("0x" + "zz" * 32, 1)


def test_word_reads_a_topic_and_rejects_a_short_one() -> None:
    assert abi.word("0x" + format(0x1B98, "064x")) == 0x1B98
    with pytest.raises(abi.AbiError, match=r"^bad_topic: "):
        abi.word("0x1b98")


@pytest.mark.parametrize(
    ("unsigned", "bits", "expected"),
    [
        (0, 256, 0),
        (2**255 - 1, 256, 2**255 - 1),
        (2**255, 256, -(2**255)),
        (2**256 - 1, 256, -1),
        (2**23, 24, -(2**23)),  # int24 tick
    ],
)
def test_signed_is_twos_complement(unsigned: int, bits: int, expected: int) -> None:
    assert abi.signed(unsigned, bits) == expected


def test_address_of_keeps_the_low_20_bytes_lower_case() -> None:
    topic = "0x000000000000000000000000A0B86991C6218B36C1D19D4A2E9EB0CE3606EB48"
    assert abi.address_of(abi.word(topic.lower())) == "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
    assert abi.address_of(2**256 - 1) == "0x" + "f" * 40


# --- decode_transfer (the fixture-wide check is in test_decode.py) -----------------------


def test_decode_transfer_rejects_an_erc721_transfer_with_four_topics() -> None:
    topics = [abi.TRANSFER, "0x" + "00" * 32, "0x" + "00" * 32, "0x" + "00" * 31 + "07"]
    with pytest.raises(abi.AbiError, match=r"^unexpected_topic: .*\(4 topics\)"):
        abi.decode_transfer(topics, "0x")


def test_decode_transfer_rejects_another_event() -> None:
    topics = [abi.V2_SYNC, "0x" + "00" * 32, "0x" + "00" * 32]
    with pytest.raises(abi.AbiError, match=r"^unexpected_topic: "):
        abi.decode_transfer(topics, "0x" + "00" * 32)


# --- encoders: the inverses of the decoders -------------------------------------------


@given(value=st.integers(-(2**255), 2**256 - 1))
def test_encode_word_is_read_back_by_word_and_signed(value: int) -> None:
    topic = abi.int_topic(value)
    assert len(abi.encode_word(value)) == 64 and topic == "0x" + abi.encode_word(value)
    assert abi.word(topic) == value % 2**256
    if value < 0:
        assert abi.signed(abi.word(topic)) == value


def test_encode_word_writes_twos_complement_and_rejects_what_does_not_fit() -> None:
    assert abi.encode_word(-1) == "f" * 64
    assert abi.encode_word(0x1B98) == "0" * 60 + "1b98"
    for value in (2**256, -(2**255) - 1):
        with pytest.raises(ValueError, match="an ABI word holds"):
            abi.encode_word(value)


def test_address_topic_pads_the_address_and_address_of_reads_it_back() -> None:
    address = "0xA0b86991c6218b36c1d19d4a2e9eb0ce3606eB48"
    topic = abi.address_topic(address)
    assert topic == "0x" + "00" * 12 + address[2:].lower()
    assert abi.address_of(abi.word(topic)) == address.lower()


@given(values=st.lists(st.integers(0, 2**256 - 1), max_size=6))
def test_encode_data_is_read_back_by_data_words(values: list[int]) -> None:
    assert abi.data_words(abi.encode_data(*values), len(values)) == values


@given(value=st.integers(0, 2**64))
def test_encode_quantity_is_read_back_by_quantity(value: int) -> None:
    assert abi.quantity(abi.encode_quantity(value), "blockNumber") == value


def test_encode_quantity_rejects_a_negative_value() -> None:
    with pytest.raises(ValueError, match="a quantity is >= 0"):
        abi.encode_quantity(-1)
