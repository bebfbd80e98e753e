"""The demo's DEX-hedging book: a dev account the scenario does not trade, long puts on the
venue, hedged in spot WETH on the dev chain's real Uniswap pools.

:func:`open_dex_book` runs in the loop's deployment phase, before any stage starts, so that
the book's key sends nothing afterwards but its own executor's swaps (no nonce conflict):
the deployer mints the book :data:`BOOK_WETH` and :data:`BOOK_USDC` and lists its put
(:data:`PUT_STRIKE_USD`, :data:`PUT_DAYS`; an instrument of its own, so that the
scenario's listing stays as it is); the book approves SplitSwap for both tokens, deposits
collateral and buys :data:`PUT_SIZE` puts. Its delta is then the puts' (about -0.4 each)
plus its WETH, so that the risk stage orders a ``dex_hedge`` buying some WETH for USDC,
routed over the pools and run by SplitSwap from the book's own key.

:func:`dex_book_risk` and :func:`dex_book_execution` are its configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from web3 import Web3

from connectors.anvil import receipt, rpc, send_transaction
from connectors.contracts import UNDERLYING, Deployed, bind, instrument_id, timed_blocks
from connectors.uniswap import fund
from flows.cli.devchain import START_PRICE, option_price
from operators.config import DexHedgeConfig, ExecutionConfig, RiskConfig
from operators.units import E18, YEAR_S, InstrumentKind

BOOK_WETH = 2 * E18
"""The book's WETH at the start, raw units (``risk.dex_hedges``' ``initial``)."""
BOOK_USDC = 200_000 * 10**6
"""The book's USDC at the start, raw units: what it buys WETH with."""
COLLATERAL_USDC = 1_000_000 * 10**6
"""USDC the book deposits on the venue (the venue moves no tokens), raw units: far above
the puts' margin, so that the risk stage never liquidates the book."""
PUT_STRIKE_USD = 3000
"""The book's put: at the money at the scenario's start..."""
PUT_DAYS = 60
"""...expiring this many days after genesis (at 08:00 UTC)..."""
PUT_SIZE = 10
"""...and how many the book buys: a delta of about -4 ETH (-0.4 to -0.5 each, with the
risk stage's vol), so that the first hedge buys 2-3 WETH, some 8,000 USD."""
PRICE_BAND_BPS = 300.0
"""``execution.price_band_bps`` of the loop: the pools lead the oracle's window by a block
or two, some 0.3% in a move of the path (and more in the crash), and the swap pays the
pools' fee (0.05-0.3%) and its own impact; 3% leaves room for all of them."""
_CALL_GAS = 150_000


@dataclass(frozen=True, kw_only=True)
class DexBook:
    """The book's address, its put, the SplitSwap it trades through, the tokens; the last
    block of its opening and its next nonce then (its executor's first)."""

    address: str
    put: str
    split_swap: str
    weth: str
    usdc: str
    opened_block: int
    first_nonce: int


def open_dex_book(rpc_url: str, deployed: Deployed, book: str, genesis_timestamp: int) -> DexBook:
    """Fund the book, approve SplitSwap, list the put, deposit and buy it (the module's
    docstring), one transaction a block at the next timestamps after the head's (so that
    the chain stays the same every run); the book as configured."""
    weth, usdc = deployed.tokens[UNDERLYING], deployed.tokens["USDC"]
    expiry = genesis_timestamp + PUT_DAYS * 86_400 + 8 * 3600
    strike = PUT_STRIKE_USD * E18
    put = instrument_id(weth, InstrumentKind.PUT, strike, expiry)
    venue = bind(Web3(), "MarginVenue", deployed.venue)
    now = int(rpc(rpc_url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    premium = option_price(START_PRICE, PUT_STRIKE_USD, (expiry - now) / YEAR_S, InstrumentKind.PUT)
    cs = Web3.to_checksum_address
    listing = [cs(weth), InstrumentKind.PUT, strike, expiry]
    calls = [
        (deployed.deployer, venue.encode_abi("list", listing)),
        (book, venue.encode_abi("deposit", [cs(usdc), COLLATERAL_USDC])),
        (book, venue.encode_abi(
            "trade", [put, PUT_SIZE * E18, round(premium * 100) * (E18 // 100), bytes(32)]
        )),
    ]  # fmt: skip
    with timed_blocks(rpc_url, now + 1):
        fund(rpc_url, deployed.uniswap, book, {"WETH": BOOK_WETH, "USDC": BOOK_USDC},
             spender=deployed.split_swap)  # fmt: skip
        for sender, data in calls:
            mined = receipt(rpc_url, send_transaction(rpc_url, sender, deployed.venue, data,
                                                      gas=_CALL_GAS))  # fmt: skip
            if not mined.ok:
                msg = f"the DEX book's venue call from {sender} failed: {mined!r}"
                raise RuntimeError(msg)
    return DexBook(
        address=book, put=put, split_swap=deployed.split_swap, weth=weth, usdc=usdc,
        opened_block=int(rpc(rpc_url, "eth_blockNumber"), 16),
        first_nonce=int(rpc(rpc_url, "eth_getTransactionCount", [book, "latest"]), 16),
    )  # fmt: skip


def dex_book_risk(risk: RiskConfig, book: DexBook) -> RiskConfig:
    """``risk`` with the book's ETH hedged on the DEX: WETH for USDC, from
    :data:`BOOK_WETH`."""
    hedge = DexHedgeConfig(token=book.weth, quote=book.usdc, initial=BOOK_WETH / E18)
    return msgspec.structs.replace(
        risk, dex_hedges={**risk.dex_hedges, book.address: {"ETH": hedge}}
    )


def dex_book_execution(execution: ExecutionConfig, book: DexBook) -> ExecutionConfig:
    """``execution`` with the book's key among the signers, SplitSwap, and the band."""
    return msgspec.structs.replace(
        execution,
        signers=[*execution.signers, book.address],
        split_swap=book.split_swap,
        price_band_bps=PRICE_BAND_BPS,
    )
