"""The dev chain's contracts: artifacts, deployment, and the configuration that reads them.

The Solidity sources and their solcjs artifacts live in ``infra/contracts/`` (``make
contracts`` rebuilds ``infra/contracts/build/``). :func:`deploy` puts on a dev node:

- ``MarginVenue``, the reference derivatives venue (account 1 holds the liquidator role);
- a Uniswap V3-style USDC/WETH pool (token0 USDC, as on mainnet), emitting V3 ``Swap``;
- a Uniswap V2-style WETH/USDT pair (token0 WETH, as on mainnet), emitting ``Sync``/``Swap``;
- a Chainlink-style ETH/USD aggregator (8 decimals), emitting ``AnswerUpdated``.

The tokens (WETH, USDC, USDT) are not deployed: they are made-up addresses, used as the
venue's collateral tokens and underlying, and named in the oracle configuration that
:func:`devchain_config` holds. :func:`feed_answer` is the inverse of the Chainlink
decoding in ``operators.decode``; the pools' are in ``operators.pool_math``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
from web3 import Web3
from web3.contract import Contract

from connectors.anvil import mine, receipt, rpc, send_transaction, set_automine
from operators import abi, pool_math
from operators.config import (
    ChainConfig,
    CollateralToken,
    Config,
    OracleConfig,
    RiskConfig,
    SourceConfig,
    SourceKind,
    TokenConfig,
)

ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "infra" / "contracts" / "build"
"""Where ``make contracts`` writes the artifacts (committed with the sources)."""

FEED_DECIMALS = 8
"""Decimals of the ETH/USD aggregator's answer, as Chainlink's USD feeds."""
UNDERLYING = "WETH"
"""The token that stands for ETH as the venue's underlying."""

_DEPLOY_GAS = 3_000_000
"""Gas limit of each deployment (the venue, the largest, uses 702k)."""
_SWAP_TX_GAS = 60_000
"""Gas of an ``emitSwaps`` transaction besides its logs."""
_SWAP_LOG_GAS = 3_300
"""Gas per Swap log of ``emitSwaps`` (3,206 measured)."""


class DevToken(msgspec.Struct, frozen=True):
    """A made-up ERC-20 of the dev chain: nothing is deployed at ``address``."""

    symbol: str
    decimals: int
    asset: str
    address: str


def _made_up_address(symbol: str) -> str:
    return "0x" + Web3.keccak(text=f"hedgeflow-devchain:{symbol}")[-20:].hex()


DEV_TOKENS: dict[str, DevToken] = {
    symbol: DevToken(symbol, decimals, asset, _made_up_address(symbol))
    for symbol, decimals, asset in (("WETH", 18, "ETH"), ("USDC", 6, "USDC"), ("USDT", 6, "USDT"))
}
V3_POOL_TOKENS = ("USDC", "WETH")
"""token0, token1 of the V3-style pool."""
V2_PAIR_TOKENS = ("WETH", "USDT")
"""token0, token1 of the V2-style pair."""


class Artifact(msgspec.Struct, frozen=True):
    """A compiled contract, as ``infra/contracts/build.js`` writes it."""

    contractName: str
    abi: list[dict[str, Any]]
    bytecode: str


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    """The artifact of contract ``name`` (e.g. ``"MarginVenue"``) under ``directory``."""
    path = directory / f"{name}.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = f"no artifact for {name}: expected {path} (run `make contracts`)"
        raise FileNotFoundError(msg) from None
    return msgspec.json.decode(data, type=Artifact)


class Deployed(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`deploy` put on the chain; addresses are lower-case hex.

    ``block`` is the block that holds the deployments: logs of these contracts start
    there. ``tokens`` maps a made-up token's symbol to its address.
    """

    chain_id: int
    block: int
    deployer: str
    liquidator: str
    venue: str
    v3_pool: str
    v2_pair: str
    feed: str
    tokens: dict[str, str]

    @property
    def contracts(self) -> list[str]:
        """Every deployed contract: the venue, the pool, the pair and the feed."""
        return [self.venue, self.v3_pool, self.v2_pair, self.feed]


def deploy(
    rpc_url: str, *, timestamp: int | None = None, artifacts_dir: Path = ARTIFACTS_DIR
) -> Deployed:
    """Deploy the venue, the pool, the pair and the feed in one block; their addresses.

    Account 0 of the node deploys (and owns the venue); account 1 is the liquidator. The
    block is mined at ``timestamp`` (Unix s) if given. The node's automine setting is
    kept.
    """
    accounts = [a.lower() for a in rpc(rpc_url, "eth_accounts")]
    if len(accounts) < 2:
        msg = f"deploy needs 2 unlocked accounts (deployer, liquidator); got {len(accounts)}"
        raise ValueError(msg)
    deployer, liquidator = accounts[0], accounts[1]
    w3 = Web3()
    init_codes: dict[str, tuple[str, list[Any]]] = {
        "venue": ("MarginVenue", [Web3.to_checksum_address(liquidator)]),
        "v3_pool": ("TestUniswapV3Pool", []),
        "v2_pair": ("TestUniswapV2Pair", []),
        "feed": ("TestAggregator", [FEED_DECIMALS]),
    }
    automine: bool = rpc(rpc_url, "anvil_getAutomine")
    set_automine(rpc_url, False)
    try:
        hashes: dict[str, str] = {}
        for key, (name, args) in init_codes.items():
            artifact = load_artifact(name, artifacts_dir)
            factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
            data = factory.constructor(*args).data_in_transaction
            hashes[key] = send_transaction(rpc_url, deployer, None, data, gas=_DEPLOY_GAS)
        mine(rpc_url, timestamp=timestamp)
    finally:
        set_automine(rpc_url, automine)
    receipts = {key: receipt(rpc_url, tx_hash) for key, tx_hash in hashes.items()}
    for key, mined in receipts.items():
        if not mined.ok or mined.contractAddress is None:
            msg = f"deploying {init_codes[key][0]} failed: {mined!r}"
            raise RuntimeError(msg)
    addresses = {key: str(mined.contractAddress).lower() for key, mined in receipts.items()}
    blocks = {mined.block for mined in receipts.values()}
    if len(blocks) != 1:
        msg = f"the deployments should share one block; got blocks {sorted(blocks)}"
        raise RuntimeError(msg)
    return Deployed(
        chain_id=int(rpc(rpc_url, "eth_chainId"), 16),
        block=blocks.pop(),
        deployer=deployer,
        liquidator=liquidator,
        venue=addresses["venue"],
        v3_pool=addresses["v3_pool"],
        v2_pair=addresses["v2_pair"],
        feed=addresses["feed"],
        tokens={symbol: token.address for symbol, token in DEV_TOKENS.items()},
    )


def emit_swaps(
    rpc_url: str,
    pool: str,
    sender: str,
    count: int,
    *,
    sqrt_price: int,
    liquidity: int,
    per_tx: int = 8_000,
) -> list[int]:
    """Emit ``count`` V3 ``Swap`` logs from the V3-style ``pool``; the blocks that hold them.

    Load tests use this: ``emitSwaps`` puts ``per_tx`` logs in one transaction (about
    3.2k gas each, so 8,000 fit Anvil's default 30M block gas limit); log i of a
    transaction carries ``sqrt_price + i``. Transactions go one at a time, each mined
    (automine) before the next is sent, so that each pays the base fee of its own block.
    Full blocks raise the base fee by 12.5% each (EIP-1559): for millions of logs, start
    the node with a larger ``gas_limit`` and raise ``per_tx``.
    """
    if count < 1 or per_tx < 1:
        msg = f"count and per_tx must be >= 1; got {count!r} and {per_tx!r}"
        raise ValueError(msg)
    contract = Web3().eth.contract(abi=load_artifact("TestUniswapV3Pool").abi)
    tick = pool_math.v3_tick(sqrt_price)
    blocks = []
    for start in range(0, count, per_tx):
        n = min(per_tx, count - start)
        data = contract.encode_abi(
            "emitSwaps", args=[n, 10**6, -(10**15), sqrt_price, liquidity, tick]
        )
        gas = _SWAP_TX_GAS + _SWAP_LOG_GAS * n
        tx_hash = send_transaction(rpc_url, sender, pool, data, gas=gas)
        mined = receipt(rpc_url, tx_hash)
        if not mined.ok:
            msg = f"emitSwaps transaction {tx_hash} failed: {mined!r}"
            raise RuntimeError(msg)
        blocks.append(mined.block)
    return sorted(set(blocks))


def bind(w3: Web3, name: str, address: str, artifacts_dir: Path = ARTIFACTS_DIR) -> Contract:
    """A web3 contract object for the deployed contract ``name`` at ``address``."""
    artifact = load_artifact(name, artifacts_dir)
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact.abi)


def instrument_id(underlying: str, kind: int, strike: int, expiry: int) -> str:
    """The venue's instrument id (``MarginVenue.instrumentId``), as 0x hex.

    ``kind`` is an ``operators.units.InstrumentKind``; ``strike`` has 18 decimals; ``expiry`` is
    in Unix s (both 0 for spot and perps).
    """
    words = (int(underlying, 16), kind, strike, expiry)
    return "0x" + Web3.keccak(hexstr=abi.encode_data(*words)).hex()


def devchain_config(deployed: Deployed, rpc_url: str | None = None) -> Config:
    """A hedgeflow configuration whose oracle reads the dev chain's pool, pair and feed.

    It leaves out the mainnet registry (``use_default_registry = false``): the dev chain
    has none of its pools. ``risk`` names the venue, its underlying (WETH stands for ETH)
    and the collateral tokens. With ``rpc_url`` it also sets ``chain``, so that
    ``hedgeflow ingest`` follows the node and every deployed contract, the venue included.
    """
    tokens = sorted(DEV_TOKENS.values(), key=lambda t: t.symbol)
    pools: list[tuple[str, SourceKind, tuple[str, str]]] = [
        (deployed.v3_pool, "uniswap_v3", V3_POOL_TOKENS),
        (deployed.v2_pair, "uniswap_v2", V2_PAIR_TOKENS),
    ]
    sources = [
        SourceConfig(address=address, kind=kind, token0=token0, token1=token1)
        for address, kind, (token0, token1) in pools
    ]
    feed = SourceConfig(
        address=deployed.feed, kind="chainlink", base="ETH", quote="USD", decimals=FEED_DECIMALS
    )
    oracle = OracleConfig(
        use_default_registry=False,
        tokens={t.symbol: TokenConfig(decimals=t.decimals, asset=t.asset) for t in tokens},
        sources=[*sources, feed],
    )
    underlying = DEV_TOKENS[UNDERLYING]
    risk = RiskConfig(
        venue=deployed.venue,
        underlyings={underlying.address: underlying.asset},
        collateral={t.address: CollateralToken(asset=t.asset, decimals=t.decimals) for t in tokens},
    )
    cfg = Config(oracle=oracle, risk=risk)
    if rpc_url is None:
        return cfg
    chain = ChainConfig(rpc_url=rpc_url, chain_id=deployed.chain_id, contracts=deployed.contracts)
    return msgspec.structs.replace(cfg, chain=chain)


def feed_answer(price: float) -> int:
    """The aggregator's answer for ``price`` (USD), with :data:`FEED_DECIMALS` decimals."""
    return round(Fraction(price) * 10**FEED_DECIMALS)
