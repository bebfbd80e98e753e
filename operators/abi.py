"""EVM log layout: event signatures (topic0), JSON-RPC quantities and ABI words.

Decoders (``quantity``, ``data_words``, ``word``, ...) read what a node sends, and the
encoders (``encode_word``, ``int_topic``, ``address_topic``, ``encode_data``,
``encode_quantity``) write the same layout, for generated logs and tests. Every function
here is exact integer work; nothing passes through a float.
"""

from __future__ import annotations

import re

from operators.bounds import BLOCK_MAX, LOG_INDEX_MAX, TIMESTAMP_MAX_S

_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_WORD_MASK = (1 << 256) - 1

# topic0 = keccak256 of the event signature (checked against keccak in tests/unit/test_abi.py)
V3_SWAP = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
V2_SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
CHAINLINK_ANSWER_UPDATED = "0x0559884fd3a460db3073b7fc896cc77986f16e378210ded43186175bf646fc5f"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

V3_POOL_EVENTS: dict[str, str] = {
    V3_SWAP: "Swap(address,address,int256,int256,uint160,uint128,int24)",
    "0x7a53080ba414158be7ec69b987b5fb7d07dee101fe85488f0853ae16239d0bde":
        "Mint(address,address,int24,int24,uint128,uint256,uint256)",
    "0x0c396cd989a39f4459b5fa1aed6a9a8dcdbc45908acfd67e028cd568da98982c":
        "Burn(address,int24,int24,uint128,uint256,uint256)",
    "0x70935338e69775456a85ddef226c395fb668b63fa0115f5f20610b388e6ca9c0":
        "Collect(address,address,int24,int24,uint128,uint128)",
    "0xbdbdb71d7860376ba52b25a5028beea23581364a40522f6bcfb86bb1f2dca633":
        "Flash(address,address,uint256,uint256,uint256,uint256)",
    "0x98636036cb66a9c19a37435efc1e90142190214e8abeb821bdba3f2990dd4c95":
        "Initialize(uint160,int24)",
    "0xac49e518f90a358f652e4400164f05a5d8f7e35e7747279bc3a93dbf584e125a":
        "IncreaseObservationCardinalityNext(uint16,uint16)",
    "0x973d8d92bb299f4af6ce49b52a8adb85ae46b9f214c4c4fc06ac77401237b133":
        "SetFeeProtocol(uint8,uint8,uint8,uint8)",
    "0x596b573906218d3411850b26a6b437d6c4522fdb43d2d2386263f86d50b8b151":
        "CollectProtocol(address,address,uint128,uint128)",
}  # fmt: skip
"""Every event a Uniswap V3 pool emits."""

V2_PAIR_EVENTS: dict[str, str] = {
    V2_SYNC: "Sync(uint112,uint112)",
    "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822":
        "Swap(address,uint256,uint256,uint256,uint256,address)",
    "0x4c209b5fc8ad50758f13e2e1088ba56a560dff690a1c6fef26394f4c03821c4f":
        "Mint(address,uint256,uint256)",
    "0xdccd412f0b1252819cb1fd330b93224ca42612892bb3f4f789976e6d81936496":
        "Burn(address,uint256,uint256,address)",
    TRANSFER: "Transfer(address,address,uint256)",
    "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925":
        "Approval(address,address,uint256)",
}  # fmt: skip
"""Every event a Uniswap V2 pair emits (it is an ERC-20 too)."""

CHAINLINK_EVENTS: dict[str, str] = {
    CHAINLINK_ANSWER_UPDATED: "AnswerUpdated(int256,uint256,uint256)",
    "0x0109fc6f55cf40689f02fbaad7af7fe7bbac8a3d2186600afc7d3e10cac60271":
        "NewRound(uint256,address,uint256)",
    "0xf6a97944f31ea060dfde0566e4167c1a1082551e64b60ecb14d599a9d023d451":
        "NewTransmission(uint32,int192,address,int192[],bytes,bytes32)",
}  # fmt: skip
"""The price events of a Chainlink (OCR) aggregator."""


VENUE_INSTRUMENT_LISTED = "0xa2298e9dfff8bc89f11d9f2eaf6e43916cf2fe31fbd3e1237cb8031059c97210"
VENUE_DEPOSIT = "0x5548c837ab068cf56a2c2479df0882a4922fd203edb7517321831d95078c5f62"
VENUE_WITHDRAW = "0x9b1bfa7fa9ee420a16e124f794c35ac9f90472acc99140eb2f6447c714cad8eb"
VENUE_TRADE = "0xfa3b928b8bead45fac3fbe4e651c337f15b40b866f7a3bd73076f272b2dc14d2"
VENUE_LIQUIDATED = "0x8203e416171313dcd4bea99b5da517922cde690d8fe844e7331de9f1a38c55cc"

VENUE_EVENTS: dict[str, str] = {
    VENUE_INSTRUMENT_LISTED: "InstrumentListed(bytes32,address,uint8,uint256,uint64)",
    VENUE_DEPOSIT: "Deposit(address,address,uint256)",
    VENUE_WITHDRAW: "Withdraw(address,address,uint256)",
    VENUE_TRADE: "Trade(address,bytes32,int256,uint256,bytes32)",
    VENUE_LIQUIDATED: "Liquidated(address,address,bytes32,int256,uint256,bytes32)",
    "0x81e020344174972c59f6c11a8f6c90b141866214e3d9b544d030f0b532f5a10f":
        "LiquidatorSet(address,bool)",
}  # fmt: skip
"""The events of the reference venue, ``infra/contracts/MarginVenue.sol``."""


class AbiError(ValueError):
    """The log does not have the layout its event requires."""


def quantity(value: int | str, field: str) -> int:
    """A JSON-RPC quantity: a ``0x`` hex string or a non-negative JSON integer."""
    if type(value) is str:
        if _HEX.fullmatch(value):
            return int(value, 16)
    elif type(value) is int and value >= 0:
        return value
    raise AbiError(f"bad_quantity: {field} must be 0x hex or an integer >= 0; got {value!r}")


def block_time_ms(value: int | str) -> int:
    """A log's ``blockTimestamp`` (a quantity, Unix seconds) in ms; below
    ``bounds.TIMESTAMP_MAX_S``, so that the ms fit an int64."""
    seconds = quantity(value, "blockTimestamp")
    if seconds >= TIMESTAMP_MAX_S:
        raise AbiError(f"invalid_ts: blockTimestamp {seconds} s does not fit an int64 of ms")
    return seconds * 1000


def log_seq(block_number: int | str, log_index: int | str) -> tuple[int, int]:
    """(``seq``, log index) of a log: ``seq = blockNumber * 2**20 + logIndex`` orders logs and
    fits an int64, because ``blockNumber < 2**43`` and ``logIndex < 2**20`` (``bounds``)."""
    block = quantity(block_number, "blockNumber")
    index = quantity(log_index, "logIndex")
    if block >= BLOCK_MAX or index >= LOG_INDEX_MAX:
        raise AbiError(
            f"bad_quantity: need blockNumber < 2**43 and logIndex < 2**20; got {block}, {index}"
        )
    return (block << 20) | index, index


def data_bytes(data: str, count: int) -> bytes:
    """ABI ``data`` (``0x`` hex) as exactly ``count`` 32-byte words of raw bytes."""
    if not data.startswith("0x") or len(data) != 2 + 64 * count:
        got = (len(data) - 2) // 2 if data.startswith("0x") else data[:10]
        raise AbiError(f"bad_data_length: expected {32 * count} bytes of data; got {got!r}")
    try:
        raw = bytes.fromhex(data[2:])
    except ValueError:
        raw = b""
    if len(raw) != 32 * count:  # fromhex skips spaces: a short result means bad characters
        raise AbiError("bad_data: data is not hex")
    return raw


def uint_at(raw: bytes, index: int) -> int:
    """Word ``index`` of ABI data bytes, as an unsigned integer."""
    return int.from_bytes(raw[32 * index : 32 * index + 32])


def data_words(data: str, count: int) -> list[int]:
    """Split ABI ``data`` (``0x`` hex) into exactly ``count`` unsigned 32-byte words."""
    raw = data_bytes(data, count)
    return [uint_at(raw, i) for i in range(count)]


def word(topic: str) -> int:
    """An indexed topic as an unsigned 256-bit integer."""
    if len(topic) != 66 or not _HEX.fullmatch(topic):
        raise AbiError(f"bad_topic: expected 32 bytes of 0x hex; got {topic[:12]!r}")
    return int(topic, 16)


def signed(value: int, bits: int = 256) -> int:
    """Two's-complement reading of an unsigned ``bits``-bit integer."""
    return value - (1 << bits) if value >> (bits - 1) else value


def address_of(value: int) -> str:
    """The lower-case hex address held in the low 20 bytes of a word."""
    return "0x" + format(value & ((1 << 160) - 1), "040x")


def decode_transfer(topics: list[str], data: str) -> tuple[str, str, int]:
    """ERC-20 ``Transfer``: (from, to, value in the token's smallest unit)."""
    if len(topics) != 3 or topics[0] != TRANSFER:
        raise AbiError(f"unexpected_topic: not an ERC-20 Transfer ({len(topics)} topics)")
    (value,) = data_words(data, 1)
    return address_of(word(topics[1])), address_of(word(topics[2])), value


def encode_word(value: int) -> str:
    """A 32-byte ABI word as 64 hex digits (no ``0x``); a negative value in two's complement.

    ``value`` must fit a uint256 or an int256: -2**255 <= value < 2**256.
    """
    if not -(1 << 255) <= value <= _WORD_MASK:
        raise ValueError(f"an ABI word holds -2**255..2**256-1; got {value!r}")
    return format(value & _WORD_MASK, "064x")


def int_topic(value: int) -> str:
    """An indexed integer (or bytes32) as a topic: ``0x`` and one word."""
    return "0x" + encode_word(value)


def address_topic(address: str) -> str:
    """An indexed address as a topic: ``0x``, 12 zero bytes, the 20-byte address (lower case)."""
    return int_topic(int(address, 16))


def encode_data(*values: int) -> str:
    """ABI ``data`` of static words (uint, int, bool, address as int): ``0x`` and one word each."""
    return "0x" + "".join([encode_word(v) for v in values])


def encode_quantity(value: int) -> str:
    """A JSON-RPC quantity: ``0x`` and hex digits without leading zeros; ``value >= 0``."""
    if value < 0:
        raise ValueError(f"a quantity is >= 0; got {value!r}")
    return hex(value)
