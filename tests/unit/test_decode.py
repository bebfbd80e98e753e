"""operators.decode against real mainnet logs (blocks 17173049-17173050, 2023-05-02).

Every price is checked against a by-hand computation with ``fractions.Fraction`` (exact
rationals), rounded to a float once. The fixtures and their origin are described in
tests/resources/SOURCES.md.
"""

from __future__ import annotations

import functools
import json
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from operators import abi
from operators.bounds import PRICE_MAX, PRICE_MIN, WEIGHT_MAX
from operators.config import load_config
from operators.decode import Decoder
from operators.intake import PartitionIntake
from operators.model import Observation, OptionQuote, RawBatch, RawMessage, Rejected, Retraction
from operators.pool_math import v2_price_depth, v3_depth, v3_price
from operators.registry import DEFAULT_SOURCES, PoolSource, Registry
from operators.stages import stage_params

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
LOG_LINES: list[bytes] = (
    (RESOURCES / "mainnet_logs_17173049_17173050.jsonl").read_bytes().splitlines()
)
LOGS: list[dict[str, Any]] = [json.loads(line) for line in LOG_LINES]
TRANSFERS: list[dict[str, Any]] = [
    json.loads(line)
    for line in (RESOURCES / "mainnet_token_transfers_17173049_17173050.jsonl")
    .read_text()
    .splitlines()
]

CHAIN_LOGS, DEX_QUOTES = "chain.logs", "dex.quotes"

# Tokens (mainnet)
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
WBTC = "0x2260fac5e5542a773aa44fbcfedf7c193bc2c599"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"

# Pools and feeds that emit price events in these two blocks
WETH_USDT_V2 = "0x0d4a11d5eeaac28ec3f61d100daf4d40471f1852"  # in the default registry
DAI_WETH_V3_005 = "0x60594a405d53811d3bc4766596efd80fd545a270"
USDC_USDT_V3_001 = "0x3416cf6c708da44db2624d63ea0aaef7113527c6"
FEED_18 = "0xbba12740de905707251525477bad74985dec46d2"
FEED_8 = "0x0ebdc65e7e9132cb41ac5cbd0101b799d7adb475"
USDC_WETH_V3_005 = "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640"  # default; not in these blocks

# The two V3 pools, registered by configuration (tokens and orientation by default rules:
# a pegged token is the quote). DAI and USDC are pegged, USDT is not, so the USDC/USDT pool
# prices USDT and the DAI/WETH pool prices ETH in DAI.
V3_SOURCES_TOML = """
[oracle.tokens.DAI]
decimals = 18
asset = "DAI"

[[oracle.sources]]  # Uniswap V3 DAI/WETH 0.05%
address = "0x60594a405d53811d3bc4766596efd80fd545a270"
kind = "uniswap_v3"
token0 = "DAI"
token1 = "WETH"

[[oracle.sources]]  # Uniswap V3 USDC/USDT 0.01%
address = "0x3416cf6c708da44db2624d63ea0aaef7113527c6"
kind = "uniswap_v3"
token0 = "USDC"
token1 = "USDT"
"""
V3_TOKEN1_BASE_TOML = '[oracle]\npegs = { USD = "1", USDC = "1", DAI = "1" }\n' + V3_SOURCES_TOML

# The same logs read the other way round: token0 is the base (DAI in ETH, USDC in USDT).
V3_TOKEN0_BASE_TOML = """
[oracle.tokens.DAI]
decimals = 18
asset = "DAI"

[[oracle.sources]]
address = "0x60594a405d53811d3bc4766596efd80fd545a270"
kind = "uniswap_v3"
token0 = "DAI"
token1 = "WETH"
base = "DAI"

[[oracle.sources]]
address = "0x3416cf6c708da44db2624d63ea0aaef7113527c6"
kind = "uniswap_v3"
token0 = "USDC"
token1 = "USDT"
base = "USDC"
"""

# The two Chainlink aggregators, under made-up assets quoted in a made-up pegged unit.
CHAINLINK_SOURCES_TOML = """
[[oracle.sources]]
address = "0xbba12740de905707251525477bad74985dec46d2"
kind = "chainlink"
base = "FEED18"
quote = "TESTUSD"
decimals = 18

[[oracle.sources]]
address = "0x0ebdc65e7e9132cb41ac5cbd0101b799d7adb475"
kind = "chainlink"
base = "FEED8"
quote = "TESTUSD"
decimals = 8
"""
CHAINLINK_TOML = (
    '[oracle]\npegs = { USD = "1", USDC = "1", USDT = "1", TESTUSD = "1" }\n'
    + CHAINLINK_SOURCES_TOML
)
ALL_TOML = (
    '[oracle]\npegs = { USD = "1", USDC = "1", DAI = "1", TESTUSD = "1" }\n'
    + V3_SOURCES_TOML
    + CHAINLINK_SOURCES_TOML
)

# ±1e-15 relative: the decoder rounds an exact rational to a float once (error <= 2**-53,
# about 1.1e-16); the bound leaves room for one or two further roundings, never for a
# wrong decimal shift or orientation (those are off by powers of ten or by ~price**2).
REL_ULPS = 1e-15


@functools.cache  # a Decoder holds no state; loading the config once per text is enough
def make_decoder(toml: str | None = None) -> Decoder:
    cfg = load_config(toml)
    return Decoder(Registry.from_config(cfg.oracle), cfg.topics.chain_logs, cfg.topics.dex_quotes)


def log_message(
    log: dict[str, Any] | bytes | None,
    *,
    key: bytes | str | None = "address",
    partition: int = 0,
    offset: int = 0,
    timestamp_ms: int = 1683029999000,
) -> RawMessage:
    """A chain.logs message; the key is the log's address unless given."""
    value = log if isinstance(log, bytes | None) else json.dumps(log).encode()
    if key == "address":
        key = log["address"].encode() if isinstance(log, dict) else None
    assert not isinstance(key, str)
    return RawMessage(CHAIN_LOGS, partition, offset, timestamp_ms, key, value)


def quote_message(quote: dict[str, Any] | bytes | None, *, offset: int = 0) -> RawMessage:
    value = quote if isinstance(quote, bytes | None) else json.dumps(quote).encode()
    return RawMessage(DEX_QUOTES, 0, offset, 1683029999000, None, value)


def logs_of(address: str, topic0: str) -> list[dict[str, Any]]:
    return [log for log in LOGS if log["address"] == address and log["topics"][0] == topic0]


def data_words(log: dict[str, Any]) -> list[int]:
    data = log["data"][2:]
    return [int(data[i : i + 64], 16) for i in range(0, len(data), 64)]


def log_id(log: dict[str, Any]) -> str:
    return f"{log['address'][:10]}@{int(log['blockNumber'], 16)}:{int(log['logIndex'], 16)}"


def v3_by_hand(
    sqrt_price_x96: int, decimals0: int, decimals1: int, base_is_token0: bool
) -> Fraction:
    """token1 per token0 = sqrtP**2 / 2**192 * 10**(d0 - d1), inverted when token1 is base."""
    raw = Fraction(sqrt_price_x96**2, 2**192) * Fraction(10) ** (decimals0 - decimals1)
    return raw if base_is_token0 else 1 / raw


def v2_by_hand(
    reserve0: int, reserve1: int, decimals0: int, decimals1: int, base_is_token0: bool
) -> Fraction:
    """token1 per token0 in whole tokens, inverted when token1 is base."""
    raw = Fraction(reserve1, 10**decimals1) / Fraction(reserve0, 10**decimals0)
    return raw if base_is_token0 else 1 / raw


def swap_data(
    sqrt_price_x96: int, liquidity: int, amount0: int = 0, amount1: int = 0, tick: int = 0
) -> str:
    return abi.encode_data(amount0, amount1, sqrt_price_x96, liquidity, tick)


# --- identities: which contracts these are ----------------------------------------------

# CREATE2 constants of the Uniswap factories: v3-periphery PoolAddress.sol and
# v2-periphery UniswapV2Library.sol. That every address below is reproduced from
# (tokens, fee) confirms both the constants and the pools' identities.
UNISWAP_V3_FACTORY = "0x1f98431c8ad98523631ae4a59f267346ea31f984"
V3_POOL_INIT_CODE_HASH = "e34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54"
UNISWAP_V2_FACTORY = "0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6f"
V2_PAIR_INIT_CODE_HASH = "96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f"


def _create2(factory: str, salt: bytes, init_code_hash: str) -> str:
    digest = keccak(b"\xff" + bytes.fromhex(factory[2:]) + salt + bytes.fromhex(init_code_hash))
    return "0x" + digest[12:].hex()


def v3_pool_address(token0: str, token1: str, fee: int) -> str:
    salt = keccak(
        bytes.fromhex(token0[2:]).rjust(32, b"\0")
        + bytes.fromhex(token1[2:]).rjust(32, b"\0")
        + fee.to_bytes(32, "big")
    )
    return _create2(UNISWAP_V3_FACTORY, salt, V3_POOL_INIT_CODE_HASH)


def v2_pair_address(token0: str, token1: str) -> str:
    salt = keccak(bytes.fromhex(token0[2:]) + bytes.fromhex(token1[2:]))
    return _create2(UNISWAP_V2_FACTORY, salt, V2_PAIR_INIT_CODE_HASH)


@pytest.mark.parametrize(
    ("pool", "token0", "token1", "fee"),
    [
        pytest.param(DAI_WETH_V3_005, DAI, WETH, 500, id="DAI/WETH-0.05%"),
        pytest.param(USDC_USDT_V3_001, USDC, USDT, 100, id="USDC/USDT-0.01%"),
    ],
)
def test_v3_pools_in_fixture_are_the_create2_pools_of_their_tokens(
    pool: str, token0: str, token1: str, fee: int
) -> None:
    assert v3_pool_address(token0, token1, fee) == pool


@pytest.mark.parametrize(
    ("pool", "token0", "token1"),
    [
        pytest.param(DAI_WETH_V3_005, DAI, WETH, id="DAI/WETH"),
        pytest.param(USDC_USDT_V3_001, USDC, USDT, id="USDC/USDT"),
    ],
)
def test_v3_swap_amounts_match_the_token_transfers_of_its_transaction(
    pool: str, token0: str, token1: str
) -> None:
    # Arrange: the one Swap of the pool, and every Transfer into or out of it in that tx
    (swap,) = logs_of(pool, abi.V3_SWAP)
    amount0, amount1 = (abi.signed(w) for w in data_words(swap)[:2])
    moved: dict[str, int] = {}
    for t in TRANSFERS:
        if t["transaction_hash"] == swap["transactionHash"] and pool in (
            t["from_address"],
            t["to_address"],
        ):
            sign = 1 if t["to_address"] == pool else -1
            moved[t["token_address"]] = moved.get(t["token_address"], 0) + sign * int(t["value"])
    # Assert: the pool's own signed amounts are what token0 and token1 moved (pool's view)
    assert moved == {token0: amount0, token1: amount1}


TOKEN_ADDRESSES = {"DAI": DAI, "USDC": USDC, "USDT": USDT, "WBTC": WBTC, "WETH": WETH}

# What each built-in source claims to be (in DEFAULT_SOURCES order): version and fee tier.
DEFAULT_POOLS = [
    pytest.param(0, "v3", 500, id="v3-USDC/WETH-0.05%"),
    pytest.param(1, "v3", 3000, id="v3-USDC/WETH-0.3%"),
    pytest.param(2, "v3", 3000, id="v3-WBTC/WETH-0.3%"),
    pytest.param(3, "v2", 0, id="v2-USDC/WETH"),
    pytest.param(4, "v2", 0, id="v2-WETH/USDT"),
]


def test_default_pools_table_covers_every_default_source() -> None:
    assert len(DEFAULT_POOLS) == len(DEFAULT_SOURCES)


@pytest.mark.parametrize(("index", "version", "fee"), DEFAULT_POOLS)
def test_default_registry_addresses_are_the_create2_pools_they_claim(
    index: int, version: str, fee: int
) -> None:
    source = DEFAULT_SOURCES[index]
    token0, token1 = TOKEN_ADDRESSES[source["token0"]], TOKEN_ADDRESSES[source["token1"]]
    assert source["kind"] == f"uniswap_{version}"
    assert token0 < token1  # Uniswap orders a pool's tokens by address
    expected = (
        v3_pool_address(token0, token1, fee) if version == "v3" else v2_pair_address(token0, token1)
    )
    assert source["address"] == expected


# --- (a) ERC-20 Transfer ------------------------------------------------------------------


def test_transfer_decoding_matches_ethereum_etl_for_all_291_transfers() -> None:
    # Arrange: ethereum-etl's 291 token transfers are 282 ERC-20 Transfers (3 topics, the
    # value in data) and 9 ERC-721 Transfers (4 topics, the tokenId indexed, data "0x"),
    # whose "value" is the tokenId. decode_transfer reads the ERC-20 layout only.
    expected = {
        (t["transaction_hash"], t["log_index"]): (
            t["token_address"],
            t["from_address"],
            t["to_address"],
            int(t["value"]),
        )
        for t in TRANSFERS
    }
    erc20: dict[tuple[str, int], tuple[str, str, str, int]] = {}
    erc721: dict[tuple[str, int], tuple[str, str, str, int]] = {}
    # Act
    for log in LOGS:
        if log["topics"][0] != abi.TRANSFER:
            continue
        key = (log["transactionHash"], int(log["logIndex"], 16))
        if len(log["topics"]) == 3:
            sender, receiver, value = abi.decode_transfer(log["topics"], log["data"])
            erc20[key] = (log["address"], sender, receiver, value)
        else:
            with pytest.raises(abi.AbiError, match=r"^unexpected_topic: .*\(4 topics\)"):
                abi.decode_transfer(log["topics"], log["data"])
            topics = log["topics"]
            sender, receiver = (abi.address_of(abi.word(t)) for t in topics[1:3])
            erc721[key] = (log["address"], sender, receiver, abi.word(topics[3]))
    # Assert
    assert (len(expected), len(erc20), len(erc721)) == (291, 282, 9)
    assert {**erc20, **erc721} == expected


# --- (b) Uniswap V2 Sync ------------------------------------------------------------------

V2_SYNCS = logs_of(WETH_USDT_V2, abi.V2_SYNC)


def test_fixture_has_five_syncs_on_the_weth_usdt_pair() -> None:
    assert len(V2_SYNCS) == 5


@pytest.mark.parametrize("log", V2_SYNCS, ids=log_id)
def test_v2_sync_price_matches_reserves_by_hand(log: dict[str, Any]) -> None:
    # Arrange: WETH is token0 (18 decimals), USDT token1 (6 decimals)
    reserve0, reserve1 = data_words(log)
    usdt_per_weth = Fraction(reserve1, 10**6) / Fraction(reserve0, 10**18)
    # Act
    obs = make_decoder().decode(log_message(log))
    # Assert
    assert isinstance(obs, Observation)
    assert (obs.base, obs.quote, obs.source) == ("ETH", "USDT", WETH_USDT_V2)
    assert obs.price == pytest.approx(float(usdt_per_weth), rel=REL_ULPS)
    # weight: twice the USDT reserve in whole USDT (one int division, so same bound)
    assert obs.weight == pytest.approx(float(2 * Fraction(reserve1, 10**6)), rel=REL_ULPS)
    assert obs.spread == 0.0
    assert 1_800 < obs.price < 1_900  # ETH/USD on 2023-05-02 was about 1,830


@pytest.mark.parametrize("log", V2_SYNCS, ids=log_id)
def test_v2_sync_carries_block_time_sequence_and_log_identity(log: dict[str, Any]) -> None:
    block, index = int(log["blockNumber"], 16), int(log["logIndex"], 16)
    obs = make_decoder().decode(log_message(log))
    assert isinstance(obs, Observation)
    assert obs.ts_ms == int(log["blockTimestamp"], 16) * 1000
    assert obs.seq == block * 2**20 + index
    assert obs.obs_id == f"{log['blockHash']}:{index}"


def test_v2_swap_on_a_registered_pair_carries_no_price() -> None:
    swaps = logs_of(
        WETH_USDT_V2,
        V2_SWAP := "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822",
    )
    assert swaps and V2_SWAP in abi.V2_PAIR_EVENTS
    decoder = make_decoder()
    assert [decoder.decode(log_message(log)) for log in swaps] == [None] * len(swaps)


# --- (c) Uniswap V3 Swap ------------------------------------------------------------------

V3_CASES = [
    # pool, toml, (base, quote), decimals0, decimals1, base_is_token0
    pytest.param(
        DAI_WETH_V3_005, V3_TOKEN1_BASE_TOML, ("ETH", "DAI"), 18, 18, False, id="ETH-in-DAI"
    ),
    pytest.param(
        DAI_WETH_V3_005, V3_TOKEN0_BASE_TOML, ("DAI", "ETH"), 18, 18, True, id="DAI-in-ETH"
    ),
    pytest.param(
        USDC_USDT_V3_001, V3_TOKEN1_BASE_TOML, ("USDT", "USDC"), 6, 6, False, id="USDT-in-USDC"
    ),
    pytest.param(
        USDC_USDT_V3_001, V3_TOKEN0_BASE_TOML, ("USDC", "USDT"), 6, 6, True, id="USDC-in-USDT"
    ),
]


@pytest.mark.parametrize(
    ("pool", "toml", "pair", "decimals0", "decimals1", "base_is_token0"), V3_CASES
)
def test_v3_swap_price_matches_sqrt_price_by_hand(
    pool: str,
    toml: str,
    pair: tuple[str, str],
    decimals0: int,
    decimals1: int,
    base_is_token0: bool,
) -> None:
    # Arrange
    (swap,) = logs_of(pool, abi.V3_SWAP)
    sqrt_price_x96, liquidity = data_words(swap)[2:4]
    # Act
    obs = make_decoder(toml).decode(log_message(swap))
    # Assert
    assert isinstance(obs, Observation)
    assert (obs.base, obs.quote, obs.source) == (*pair, pool)
    expected = v3_by_hand(sqrt_price_x96, decimals0, decimals1, base_is_token0)
    assert obs.price == pytest.approx(float(expected), rel=REL_ULPS)
    # weight: twice the quote-side virtual reserve, L*sqrtP (token1) or L/sqrtP (token0)
    sqrt_p = Fraction(sqrt_price_x96, 2**96)
    depth = (
        2 * liquidity * sqrt_p / 10**decimals1
        if base_is_token0
        else 2 * liquidity / sqrt_p / 10**decimals0
    )
    assert obs.weight == pytest.approx(float(depth), rel=REL_ULPS)


def test_v3_swap_prices_are_plausible_for_2023_05_02() -> None:
    decoder = make_decoder(V3_TOKEN1_BASE_TOML)
    (dai_weth,) = logs_of(DAI_WETH_V3_005, abi.V3_SWAP)
    (usdc_usdt,) = logs_of(USDC_USDT_V3_001, abi.V3_SWAP)
    eth = decoder.decode(log_message(dai_weth))
    usdt = decoder.decode(log_message(usdc_usdt))
    assert isinstance(eth, Observation) and isinstance(usdt, Observation)
    assert 1_800 < eth.price < 1_900  # about 1,832 DAI per ETH
    assert abs(usdt.price - 1) < 0.01  # about 1.00024 USDC per USDT


@pytest.mark.parametrize("pool", [DAI_WETH_V3_005, USDC_USDT_V3_001])
def test_v3_swap_orientations_of_the_same_log_are_reciprocal(pool: str) -> None:
    (swap,) = logs_of(pool, abi.V3_SWAP)
    one = make_decoder(V3_TOKEN1_BASE_TOML).decode(log_message(swap))
    other = make_decoder(V3_TOKEN0_BASE_TOML).decode(log_message(swap))
    assert isinstance(one, Observation) and isinstance(other, Observation)
    assert (one.base, one.quote) == (other.quote, other.base)
    assert one.obs_id == other.obs_id and one.seq == other.seq and one.ts_ms == other.ts_ms
    # each price is rounded once, so their product is 1 within two roundings (~2.2e-16)
    assert one.price * other.price == pytest.approx(1.0, rel=REL_ULPS)


def test_v3_configured_orientation_registers_the_expected_pairs() -> None:
    registry = make_decoder(V3_TOKEN1_BASE_TOML).registry
    dai_weth, usdc_usdt = (
        registry.by_address[DAI_WETH_V3_005],
        registry.by_address[USDC_USDT_V3_001],
    )
    assert isinstance(dai_weth, PoolSource) and isinstance(usdc_usdt, PoolSource)
    assert (dai_weth.base, dai_weth.quote, dai_weth.base_is_token0) == ("ETH", "DAI", False)
    assert (usdc_usdt.base, usdc_usdt.quote, usdc_usdt.base_is_token0) == ("USDT", "USDC", False)
    assert "USDT" in registry.assets  # not pegged here, so the oracle publishes it


def test_v3_swap_with_configured_weight_uses_it() -> None:
    toml = V3_TOKEN1_BASE_TOML.replace('token1 = "WETH"', 'token1 = "WETH"\nweight = 5e6')
    (swap,) = logs_of(DAI_WETH_V3_005, abi.V3_SWAP)
    obs = make_decoder(toml).decode(log_message(swap))
    assert isinstance(obs, Observation) and obs.weight == 5e6


@pytest.mark.parametrize("sqrt_price_x96", [0, 2**160])
def test_v3_swap_with_sqrt_price_out_of_uint160_range_is_rejected(sqrt_price_x96: int) -> None:
    (swap,) = logs_of(DAI_WETH_V3_005, abi.V3_SWAP)
    bad = {**swap, "data": swap_data(sqrt_price_x96, 1)}
    out = make_decoder(V3_TOKEN1_BASE_TOML).decode(log_message(bad))
    assert isinstance(out, Rejected) and out.reason.startswith("invalid_price: ")


# --- (d) Chainlink AnswerUpdated ----------------------------------------------------------


@pytest.mark.parametrize(
    ("feed", "base", "decimals", "literal"),
    [
        pytest.param(FEED_18, "FEED18", 18, 0.00374992, id="18-decimals"),
        pytest.param(FEED_8, "FEED8", 8, 0.19974433, id="8-decimals"),
    ],
)
def test_chainlink_answer_updated_is_answer_over_ten_to_the_decimals(
    feed: str, base: str, decimals: int, literal: float
) -> None:
    # Arrange: the answer is the first indexed topic, an int256
    (log,) = logs_of(feed, abi.CHAINLINK_ANSWER_UPDATED)
    answer = abi.signed(int(log["topics"][1], 16))
    # Act
    obs = make_decoder(CHAINLINK_TOML).decode(log_message(log))
    # Assert: exact, no tolerance: one correctly rounded int division, same as the literal
    assert isinstance(obs, Observation)
    assert (obs.base, obs.quote, obs.source) == (base, "TESTUSD", feed)
    assert obs.price == float(Fraction(answer, 10**decimals)) == literal
    assert obs.ts_ms == 1683029999000
    assert obs.weight == 0.0  # no depth for a feed: only a configured weight gives one


def test_chainlink_feed_with_configured_weight_uses_it() -> None:
    toml = CHAINLINK_TOML.replace("decimals = 8", "decimals = 8\nweight = 250000.0")
    (log,) = logs_of(FEED_8, abi.CHAINLINK_ANSWER_UPDATED)
    obs = make_decoder(toml).decode(log_message(log))
    assert isinstance(obs, Observation) and obs.weight == 250000.0


@pytest.mark.parametrize("feed", [FEED_18, FEED_8])
def test_chainlink_new_round_and_new_transmission_carry_no_price(feed: str) -> None:
    other = [
        log for log in LOGS
        if log["address"] == feed and log["topics"][0] in abi.CHAINLINK_EVENTS
        and log["topics"][0] != abi.CHAINLINK_ANSWER_UPDATED
    ]  # fmt: skip
    decoder = make_decoder(CHAINLINK_TOML)
    assert [decoder.decode(log_message(log)) for log in other] == [None] * len(other)


def test_chainlink_non_positive_answer_is_rejected() -> None:
    (log,) = logs_of(FEED_8, abi.CHAINLINK_ANSWER_UPDATED)
    negative = {**log, "topics": [log["topics"][0], "0x" + "f" * 64, log["topics"][2]]}  # -1
    out = make_decoder(CHAINLINK_TOML).decode(log_message(negative))
    assert isinstance(out, Rejected) and out.reason.startswith("invalid_price: ")


# --- (e) the whole fixture ------------------------------------------------------------------


def _tally(decoder: Decoder, *, keyed: bool) -> dict[str, int]:
    counts = {"observation": 0, "none": 0, "rejected": 0, "other": 0}
    for offset, (line, log) in enumerate(zip(LOG_LINES, LOGS, strict=True)):
        key = log["address"].encode() if keyed else None
        out = decoder.decode(log_message(line, key=key, offset=offset))
        if isinstance(out, Observation):
            counts["observation"] += 1
        elif out is None:
            counts["none"] += 1
        elif isinstance(out, Rejected):
            counts["rejected"] += 1
        else:
            counts["other"] += 1
    return counts


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed-by-address", "no-key"])
def test_default_config_decodes_all_681_logs_without_a_reject(keyed: bool) -> None:
    # Only the WETH/USDT V2 pair of the default registry emits a price event (5 Syncs);
    # every other log is from an unregistered contract or a priceless event: skipped.
    counts = _tally(make_decoder(), keyed=keyed)
    assert counts == {"observation": 5, "none": 676, "rejected": 0, "other": 0}


def test_all_sources_registered_gives_one_observation_per_price_event() -> None:
    # 5 V2 Syncs + 2 V3 Swaps (DAI/WETH, USDC/USDT) + 2 Chainlink AnswerUpdated
    counts = _tally(make_decoder(ALL_TOML), keyed=True)
    assert counts == {"observation": 9, "none": 672, "rejected": 0, "other": 0}


def test_integer_quantities_decode_the_same_as_hex_quantities() -> None:
    decoder = make_decoder()
    for log in V2_SYNCS:
        as_ints = {
            **log,
            **{
                k: int(log[k], 16)
                for k in ("blockNumber", "logIndex", "transactionIndex", "blockTimestamp")
            },
        }
        assert decoder.decode(log_message(as_ints)) == decoder.decode(log_message(log))


def test_mixed_case_address_in_key_and_value_is_still_registered() -> None:
    log = V2_SYNCS[0]
    upper = {**log, "address": "0x" + log["address"][2:].upper()}
    obs = make_decoder().decode(log_message(upper, key=upper["address"].encode()))
    assert isinstance(obs, Observation) and obs.source == WETH_USDT_V2


# --- (f) bad input --------------------------------------------------------------------------

SYNC = V2_SYNCS[0]
SYNC_BYTES = json.dumps(SYNC).encode()
PAIR_KEY = WETH_USDT_V2.encode()
QUOTE = {
    "source": "binance", "base": "ETH", "quote": "USD", "bid": "1829.10", "ask": "1829.20",
    "bid_size": "3.5", "ask_size": "2", "ts": 1683029999500,
}  # fmt: skip


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


BAD_INPUT = [
    # (topic, value, reason prefix, text the reason must also hold)
    pytest.param(CHAIN_LOGS, SYNC_BYTES[:40], "invalid_json", "", id="truncated-json"),
    pytest.param(CHAIN_LOGS, b"not json at all", "invalid_json", "", id="not-json"),
    pytest.param(CHAIN_LOGS, b"\xff\xfe" + SYNC_BYTES, "not_utf8", "0xff", id="not-utf8"),
    pytest.param(
        CHAIN_LOGS,
        SYNC_BYTES.replace(b'"0x1060a39"', b'"0x1060a39\xe9"'),
        "not_utf8",
        "0xe9",
        id="not-utf8-inside-a-string",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "data": SYNC["data"][:66]}).encode(),
        "bad_data_length",
        "expected 64 bytes of data; got 32",
        id="sync-with-one-word",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "blockNumber": "17173049"}).encode(),
        "bad_quantity",
        "blockNumber",
        id="decimal-string-block-number",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "logIndex": -3}).encode(),
        "bad_quantity",
        "logIndex",
        id="negative-log-index",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "blockTimestamp": "soon"}).encode(),
        "bad_quantity",
        "blockTimestamp",
        id="garbage-timestamp",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "topics": [abi.V3_SWAP]}).encode(),
        "unexpected_topic",
        abi.V3_SWAP,
        id="v3-event-on-v2-pair",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "topics": []}).encode(),
        "unexpected_topic",
        "no topics",
        id="no-topics",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "blockNumber": 17173049.0}).encode(),
        "invalid_field",
        "blockNumber",
        id="float-block-number",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "topics": abi.V2_SYNC}).encode(),
        "invalid_field",
        "topics",
        id="topics-not-a-list",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps({**SYNC, "removed": "no"}).encode(),
        "invalid_field",
        "removed",
        id="removed-not-a-bool",
    ),
    pytest.param(
        CHAIN_LOGS,
        json.dumps(_without(SYNC, "blockHash")).encode(),
        "missing_field",
        "blockHash",
        id="no-block-hash",
    ),
    pytest.param(CHAIN_LOGS, None, "empty_value", "", id="log-tombstone"),
    pytest.param(
        DEX_QUOTES,
        json.dumps({**QUOTE, "bid": "1829.30"}).encode(),
        "invalid_quote",
        "bid=1829.30 ask=1829.20",
        id="bid-above-ask",
    ),
    pytest.param(
        DEX_QUOTES,
        json.dumps({**QUOTE, "bid": "0"}).encode(),
        "invalid_quote",
        "bid=0",
        id="zero-bid",
    ),
    pytest.param(
        DEX_QUOTES,
        json.dumps({**QUOTE, "bid": "NaN"}).encode(),
        "invalid_quote",
        "bid=NaN",
        id="nan-bid",
    ),
    pytest.param(
        DEX_QUOTES,
        json.dumps({**QUOTE, "ask_size": "-1"}).encode(),
        "invalid_quote",
        "ask_size=-1",
        id="negative-size",
    ),
    pytest.param(
        DEX_QUOTES,
        json.dumps({**QUOTE, "ts": -1}).encode(),
        "invalid_quote",
        "ts",
        id="negative-ts",
    ),
    pytest.param(
        DEX_QUOTES,
        json.dumps({**QUOTE, "bid": "abc"}).encode(),
        "invalid_field",
        "bid",
        id="non-decimal-bid",
    ),
    pytest.param(
        DEX_QUOTES,
        json.dumps(_without(QUOTE, "ts")).encode(),
        "invalid_field",
        "ts",
        id="quote-without-ts",
    ),
    pytest.param(DEX_QUOTES, b'{"source": "binance", ', "invalid_json", "", id="truncated-quote"),
    pytest.param(DEX_QUOTES, None, "empty_value", "", id="quote-tombstone"),
]


@pytest.mark.parametrize(("topic", "value", "reason", "detail"), BAD_INPUT)
def test_bad_input_is_rejected_with_reason_and_coordinates(
    topic: str, value: bytes | None, reason: str, detail: str
) -> None:
    # Arrange: odd coordinates, so that each one is seen to be carried through
    msg = RawMessage(topic, 3, 12345, 1683029999123, PAIR_KEY, value)
    # Act
    out = make_decoder().decode(msg)
    # Assert
    assert isinstance(out, Rejected)
    assert out.reason.startswith(f"{reason}: "), out.reason
    assert detail in out.reason
    assert (out.stage, out.topic, out.partition, out.offset, out.timestamp_ms) == (
        "decode", topic, 3, 12345, 1683029999123,
    )  # fmt: skip
    assert out.key == PAIR_KEY
    assert out.raw == value  # the exact bytes, for the deadletter


def test_message_on_an_unknown_topic_is_rejected() -> None:
    msg = RawMessage("elsewhere", 0, 1, 0, None, SYNC_BYTES)
    out = make_decoder().decode(msg)
    assert isinstance(out, Rejected) and out.reason.startswith("unknown_topic: ")


def test_missing_required_log_field_is_rejected_naming_it() -> None:
    out = make_decoder().decode(
        log_message(json.dumps(_without(SYNC, "blockTimestamp")).encode(), key=PAIR_KEY)
    )
    assert isinstance(out, Rejected)
    assert "blockTimestamp" in out.reason


def test_bad_log_from_an_unregistered_address_keyed_by_it_is_skipped_unparsed() -> None:
    # The key names the contract, so an unregistered one is skipped before parsing.
    key = b"0x" + b"1" * 40
    assert make_decoder().decode(log_message(b"not json", key=key)) is None


# --- (g) removed logs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "toml"),
    [
        pytest.param(SYNC, None, id="v2-sync"),
        pytest.param(logs_of(DAI_WETH_V3_005, abi.V3_SWAP)[0], V3_TOKEN1_BASE_TOML, id="v3-swap"),
        pytest.param(
            logs_of(FEED_18, abi.CHAINLINK_ANSWER_UPDATED)[0], CHAINLINK_TOML, id="chainlink"
        ),
    ],
)
def test_removed_log_gives_retraction_with_the_original_obs_id(
    log: dict[str, Any], toml: str | None
) -> None:
    # Arrange
    decoder = make_decoder(toml)
    original = decoder.decode(log_message(log, offset=10))
    removed_msg = log_message({**log, "removed": True}, offset=11)
    # Act
    out = decoder.decode(removed_msg)
    # Assert
    assert isinstance(original, Observation)
    assert isinstance(out, Retraction)
    assert out.obs_id == original.obs_id
    assert (out.base, out.quote, out.source, out.ts_ms) == (
        original.base, original.quote, original.source, original.ts_ms,
    )  # fmt: skip
    assert out.origin == removed_msg
    assert out.late is False


def test_removed_log_of_an_unregistered_contract_is_skipped() -> None:
    unregistered = next(log for log in LOGS if log["topics"][0] == abi.TRANSFER)
    assert make_decoder().decode(log_message({**unregistered, "removed": True})) is None


# --- (h) quotes -------------------------------------------------------------------------------


def test_quote_decimal_strings_and_json_numbers_read_exactly() -> None:
    # A float-parsed 0.3 would make the mid 0.19999999999999998 and the half-spread
    # 0.09999999999999999; exact decimals give 0.2 and 0.1.
    raw = (
        b'{"source":"s","base":"ETH","quote":"USD",'
        b'"bid":"0.1","ask":0.3,"bid_size":"2","ask_size":3,"ts":5}'
    )
    obs = make_decoder().decode(quote_message(raw, offset=42))
    assert isinstance(obs, Observation)
    assert obs.price == float(Decimal("0.2")) == 0.2
    assert obs.spread == float(Decimal("0.1"))
    assert obs.weight == float(Decimal("0.2") * Decimal(5) / 2)
    assert (obs.base, obs.quote, obs.source) == ("ETH", "USD", "quote:s")
    assert (obs.ts_ms, obs.seq, obs.obs_id) == (5, 42, "dex.quotes:0:42")


def test_quote_json_number_with_more_digits_than_a_double_is_read_exactly() -> None:
    # 1.00000000000000000001 is 1.0 as a double; read exactly, the half-spread is 5e-21.
    raw = (
        b'{"source":"s","base":"ETH","quote":"USD",'
        b'"bid":"1","ask":1.00000000000000000001,"bid_size":1,"ask_size":1,"ts":5}'
    )
    obs = make_decoder().decode(quote_message(raw))
    assert isinstance(obs, Observation)
    assert obs.spread == float(Decimal("5E-21"))


def test_quote_with_bid_equal_to_ask_is_accepted() -> None:
    obs = make_decoder().decode(quote_message({**QUOTE, "bid": "1829.2"}))
    assert isinstance(obs, Observation) and obs.price == 1829.2 and obs.spread == 0.0


def test_quote_in_token_symbols_is_mapped_to_assets() -> None:
    obs = make_decoder().decode(quote_message({**QUOTE, "base": "WETH", "quote": "USDC"}))
    assert isinstance(obs, Observation) and (obs.base, obs.quote) == ("ETH", "USDC")


def test_quote_in_a_crossed_numeraire_is_accepted() -> None:
    # BTC is priced through ETH (WBTC/WETH pool), so a BTC/ETH quote is usable.
    obs = make_decoder().decode(
        quote_message({**QUOTE, "base": "BTC", "quote": "ETH", "bid": "15.1", "ask": "15.2"})
    )
    assert isinstance(obs, Observation) and (obs.base, obs.quote) == ("BTC", "ETH")


def test_option_quote_with_instrument_becomes_an_option_quote_for_the_risk_engine() -> None:
    option = {**QUOTE, "instrument": "0xABC", "iv": "0.55"}
    got = make_decoder().decode(quote_message(option))
    assert isinstance(got, OptionQuote)
    assert (got.instrument, got.iv, got.ts_ms) == ("0xabc", 0.55, QUOTE["ts"])


def test_option_quote_with_negative_iv_is_rejected() -> None:
    option = {**QUOTE, "instrument": "0xabc", "iv": "-0.1"}
    got = make_decoder().decode(quote_message(option))
    assert isinstance(got, Rejected) and got.reason.startswith("invalid_quote")


@pytest.mark.parametrize(
    ("base", "quote"),
    [("DOGE", "USD"), ("ETH", "EUR"), ("USDC", "USD")],
    ids=["unknown-base", "unknown-quote", "pegged-base"],
)
def test_quote_for_an_asset_the_oracle_does_not_publish_is_skipped(base: str, quote: str) -> None:
    assert make_decoder().decode(quote_message({**QUOTE, "base": base, "quote": quote})) is None


@pytest.mark.parametrize("field", ["bid_size", "ask_size"])
def test_quote_with_infinite_size_is_invalid(field: str) -> None:
    out = make_decoder().decode(quote_message({**QUOTE, field: "Infinity"}))
    assert isinstance(out, Rejected) and out.reason.startswith("invalid_quote: ")


# --- properties: exact rationals rounded once -------------------------------------------------

decimals = st.integers(min_value=0, max_value=36)  # TokenConfig allows 0..36


def _pool(decimals0: int, decimals1: int, base_is_token0: bool) -> PoolSource:
    return PoolSource(
        address="0x" + "11" * 20,
        kind="uniswap_v2",
        base="B",
        quote="Q",
        decimals0=decimals0,
        decimals1=decimals1,
        base_is_token0=base_is_token0,
        weight=None,
        max_age_ms=None,
    )


@given(
    reserve0=st.integers(1, 2**112 - 1),
    reserve1=st.integers(1, 2**112 - 1),
    decimals0=decimals,
    decimals1=decimals,
    base_is_token0=st.booleans(),
)
def test_v2_price_is_the_reserve_ratio_rounded_once(
    reserve0: int, reserve1: int, decimals0: int, decimals1: int, base_is_token0: bool
) -> None:
    # Exact: both sides are one correctly rounded division of the same two integers.
    price, depth = v2_price_depth(reserve0, reserve1, _pool(decimals0, decimals1, base_is_token0))
    assert price == float(v2_by_hand(reserve0, reserve1, decimals0, decimals1, base_is_token0))
    quote_reserve, quote_decimals = (
        (reserve1, decimals1) if base_is_token0 else (reserve0, decimals0)
    )
    assert depth == float(Fraction(2 * quote_reserve, 10**quote_decimals))


@given(
    sqrt_price_x96=st.integers(1, 2**160 - 1),
    decimals0=decimals,
    decimals1=decimals,
    base_is_token0=st.booleans(),
)
def test_v3_price_is_the_squared_sqrt_price_rounded_once(
    sqrt_price_x96: int, decimals0: int, decimals1: int, base_is_token0: bool
) -> None:
    # Exact: Python's int / int is correctly rounded, as is float(Fraction).
    price = v3_price(sqrt_price_x96, _pool(decimals0, decimals1, base_is_token0))
    assert price == float(v3_by_hand(sqrt_price_x96, decimals0, decimals1, base_is_token0))


@given(
    sqrt_price_x96=st.integers(1, 2**160 - 1),
    liquidity=st.integers(0, 2**128 - 1),
    decimals0=decimals,
    decimals1=decimals,
    base_is_token0=st.booleans(),
)
def test_v3_depth_is_twice_the_quote_virtual_reserve(
    sqrt_price_x96: int, liquidity: int, decimals0: int, decimals1: int, base_is_token0: bool
) -> None:
    src = _pool(decimals0, decimals1, base_is_token0)
    sqrt_p = Fraction(sqrt_price_x96, 2**96)
    if base_is_token0:
        expected = 2 * liquidity * sqrt_p / 10**decimals1
    else:
        expected = 2 * liquidity / sqrt_p / 10**decimals0
    # up to three roundings (int/int, int->float of 10**d, float/float): < 4e-16 relative
    assert v3_depth(sqrt_price_x96, liquidity, src) == pytest.approx(float(expected), rel=REL_ULPS)


@given(sqrt_price_x96=st.integers(1, 2**160 - 1), liquidity=st.integers(0, 2**128 - 1))
def test_v3_swap_through_the_decoder_is_the_by_hand_price(
    sqrt_price_x96: int, liquidity: int
) -> None:
    # The default USDC/WETH 0.05% pool: USDC (6) is token0 and the quote, WETH (18) the base.
    zero = "0x" + "00" * 32
    log = {
        **SYNC,
        "address": USDC_WETH_V3_005,
        "topics": [abi.V3_SWAP, zero, zero],
        "data": swap_data(sqrt_price_x96, liquidity, amount0=-1, amount1=2, tick=-3),
    }
    obs = make_decoder().decode(log_message(log))
    price = float(v3_by_hand(sqrt_price_x96, 6, 18, base_is_token0=False))
    weight = 2 * liquidity * 2**96 / sqrt_price_x96 / 10**6
    if not PRICE_MIN <= price <= PRICE_MAX:
        assert isinstance(obs, Rejected) and obs.reason.startswith("invalid_price: ")
    elif weight > WEIGHT_MAX:
        assert isinstance(obs, Rejected) and obs.reason.startswith("invalid_weight: ")
    else:
        assert isinstance(obs, Observation)
        assert (obs.base, obs.quote) == ("ETH", "USDC")
        assert obs.price == price
        assert math.isfinite(obs.weight) and obs.weight >= 0


# --- (g) numbers that break the flow (issue 8, section 2) -----------------------------------


@pytest.mark.parametrize("field", ["bid", "ask", "bid_size", "ask_size"])
@pytest.mark.parametrize("number", ["9e999999", "-9e999999", "1e400", "sNaN", "-1"])
def test_quote_field_9e999999_goes_to_the_deadletter_and_the_flow_goes_on(
    field: str, number: str
) -> None:
    good = quote_message(QUOTE, offset=2)
    bad = quote_message({**QUOTE, field: number}, offset=1)
    intake = PartitionIntake(part="0-dex.quotes")
    params = stage_params(load_config(""))
    out = intake.on_batch(RawBatch(intake.part, [bad, good]), params.decoder, params.intake)

    (rejected,) = out.rejects
    assert (rejected.offset, rejected.reason.split(":")[0]) == (1, "invalid_quote")
    assert {i.obs_id for _, b in out.batches for i in b.items} == {"dex.quotes:0:2"}


@pytest.mark.parametrize(
    ("sqrt_price_x96", "reason"),
    [
        (1, "invalid_price"),  # ETH at 6.3e69 USDC: a float, but absurd
        (2**160 - 1, "invalid_price"),  # ETH at 2.9e-27 USDC: towards 0
        (2**96 - 2**60, "invalid_price"),  # raw just below 1: just above 1e12 USDC per ETH
    ],
)
def test_prices_that_round_to_zero_or_overflow_are_rejected_at_decoding(
    sqrt_price_x96: int, reason: str
) -> None:
    zero = "0x" + "00" * 32
    log = {**SYNC, "address": USDC_WETH_V3_005, "topics": [abi.V3_SWAP, zero, zero],
           "data": swap_data(sqrt_price_x96, 10**18, amount0=-1, amount1=2, tick=0)}  # fmt: skip
    out = make_decoder().decode(log_message(log))
    assert isinstance(out, Rejected) and out.reason.startswith(f"{reason}: "), out


@pytest.mark.parametrize("size", ["1e400", "1e13", 1e300])
def test_quote_size_1e400_is_rejected_so_no_weight_is_infinite(size: str | float) -> None:
    out = make_decoder().decode(quote_message({**QUOTE, "bid_size": size}))
    assert isinstance(out, Rejected) and out.reason.startswith("invalid_quote: ")


@pytest.mark.parametrize("answer", [2**254, 2**255 - 1, 10**20 * 10**8 + 1])
def test_chainlink_answer_of_2_pow_254_is_rejected(answer: int) -> None:
    (log,) = logs_of(FEED_8, abi.CHAINLINK_ANSWER_UPDATED)
    absurd = {**log, "topics": [log["topics"][0], abi.int_topic(answer), log["topics"][2]]}
    out = make_decoder(CHAINLINK_TOML).decode(log_message(absurd))
    assert isinstance(out, Rejected) and out.reason.startswith("invalid_price: ")


@pytest.mark.parametrize(
    ("word", "value", "reason"),
    [
        (3, 2**128, "bad_data: liquidity"),  # V3 Swap's uint128 liquidity
        (2, 2**160, "invalid_price: sqrtPriceX96"),
    ],
)
def test_v3_swap_word_beyond_its_declared_width_is_rejected(
    word: int, value: int, reason: str
) -> None:
    zero = "0x" + "00" * 32
    words = [1, 2, 2**96 * 40, 10**18, 0]
    words[word] = value
    log = {**SYNC, "address": USDC_WETH_V3_005, "topics": [abi.V3_SWAP, zero, zero],
           "data": abi.encode_data(*words)}  # fmt: skip
    out = make_decoder().decode(log_message(log))
    assert isinstance(out, Rejected) and out.reason.startswith(reason)


def test_v2_reserve_beyond_uint112_is_rejected() -> None:
    out = make_decoder().decode(log_message({**SYNC, "data": abi.encode_data(2**112, 10**18)}))
    assert isinstance(out, Rejected) and out.reason.startswith("bad_data: reserves")


@pytest.mark.parametrize(
    ("field", "value"),
    [("blockTimestamp", hex(2**63 // 1000)), ("blockNumber", hex(2**43)), ("logIndex", 2**20)],
)
def test_log_coordinates_that_do_not_fit_an_int64_are_rejected(field: str, value: Any) -> None:
    out = make_decoder().decode(log_message({**SYNC, field: value}))
    assert isinstance(out, Rejected)
    assert out.reason.split(":")[0] in ("invalid_ts", "bad_quantity")
