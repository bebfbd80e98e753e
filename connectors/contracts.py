"""The dev chain's contracts: deployment, and the configuration that reads them.

:func:`deploy` puts on a dev node:

- the real Uniswap pools of ``connectors.uniswap.deploy_uniswap``: the test tokens USDC
  (6 decimals) and WETH (18), ``TestERC20`` contracts, a USDC/WETH V2 pair and two V3
  pools (fees 500 and 3000), their liquidity over many tick ranges (USDC is token0 of
  each, as on mainnet);
- ``MarginVenue``, the reference derivatives venue (account 1 holds the liquidator role),
  whose collateral tokens and underlying are those USDC and WETH;
- a Chainlink-style ETH/USD aggregator (8 decimals), emitting ``AnswerUpdated``: the one
  mock left, as no Chainlink contract runs here;
- ``SplitSwap`` (``infra/contracts/SplitSwap.sol``, :func:`deploy_split_swap`), through
  which the executor runs a routed ``dex_hedge`` order in one transaction.

:func:`devchain_config` holds the oracle configuration that reads the pools and the feed.
:func:`feed_answer` is the inverse of the Chainlink decoding in ``operators.decode``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import msgspec
from web3 import Web3
from web3.contract import Contract

from connectors.anvil import rpc, set_automine
from connectors.artifacts import ARTIFACTS_DIR, deploy_artifact, load_artifact
from connectors.uniswap import TOKENS, UniswapDeployed, deploy_uniswap, head
from operators import abi
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

FEED_DECIMALS = 8
"""Decimals of the ETH/USD aggregator's answer, as Chainlink's USD feeds."""
UNDERLYING = "WETH"
"""The token that stands for ETH as the venue's underlying."""
TOKEN_ASSETS = {"USDC": "USDC", "WETH": "ETH"}
"""The oracle asset each test token stands for."""


class Deployed(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`deploy` put on the chain; addresses are lower-case hex.

    ``block`` is the first block of the deployment: logs of these contracts start there.
    ``uniswap`` holds the tokens and the pools; ``split_swap`` is the SplitSwap contract.
    """

    chain_id: int
    block: int
    deployer: str
    liquidator: str
    venue: str
    feed: str
    uniswap: UniswapDeployed
    split_swap: str

    @property
    def tokens(self) -> dict[str, str]:
        """The test tokens' addresses by symbol (``"USDC"``, ``"WETH"``)."""
        return self.uniswap.tokens

    @property
    def pools(self) -> list[str]:
        """Every pool: the V2 pair, then the V3 pools by fee."""
        return self.uniswap.pools

    @property
    def contracts(self) -> list[str]:
        """Every contract the oracle or the risk stage reads: the venue, the pools and the
        feed."""
        return [self.venue, *self.pools, self.feed]


def deploy(
    rpc_url: str, *, timestamp: int | None = None, artifacts_dir: Path = ARTIFACTS_DIR
) -> Deployed:
    """Deploy the pools, the venue, the feed and SplitSwap, one transaction a block; what
    was deployed.

    Account 0 of the node deploys (it owns the venue and holds the tokens and the pools'
    liquidity); account 1 is the liquidator. With ``timestamp`` (Unix s) the deployment's
    blocks are mined at ``timestamp``, ``timestamp + 1``, ... (:func:`timed_blocks`). The
    node's automine setting is kept.
    """
    accounts = [a.lower() for a in rpc(rpc_url, "eth_accounts")]
    if len(accounts) < 2:
        msg = f"deploy needs 2 unlocked accounts (deployer, liquidator); got {len(accounts)}"
        raise ValueError(msg)
    deployer, liquidator = accounts[0], accounts[1]
    first = head(rpc_url) + 1
    with timed_blocks(rpc_url, timestamp):
        uniswap = deploy_uniswap(rpc_url, deployer)
        venue_artifact = load_artifact("MarginVenue", artifacts_dir)
        venue = deploy_artifact(rpc_url, deployer, venue_artifact, [_cs(liquidator)])
        feed_artifact = load_artifact("TestAggregator", artifacts_dir)
        feed = deploy_artifact(rpc_url, deployer, feed_artifact, [FEED_DECIMALS])
        split_swap = deploy_split_swap(rpc_url, deployer, artifacts_dir)
    return Deployed(
        chain_id=int(rpc(rpc_url, "eth_chainId"), 16),
        block=first,
        deployer=deployer,
        liquidator=liquidator,
        venue=venue,
        feed=feed,
        uniswap=uniswap,
        split_swap=split_swap,
    )


@contextmanager
def timed_blocks(rpc_url: str, timestamp: int | None) -> Iterator[None]:
    """Within, each transaction is mined as it comes (automine on); with ``timestamp``
    (Unix s) the blocks are mined at ``timestamp``, ``timestamp + 1``, ..., so that the
    chain is the same every time. The node's automine setting is restored on exit."""
    automine: bool = rpc(rpc_url, "anvil_getAutomine")
    set_automine(rpc_url, True)
    if timestamp is not None:
        rpc(rpc_url, "evm_setNextBlockTimestamp", [timestamp])
        rpc(rpc_url, "anvil_setBlockTimestampInterval", [1])
    try:
        yield
    finally:
        if timestamp is not None:
            rpc(rpc_url, "anvil_removeBlockTimestampInterval")
        set_automine(rpc_url, automine)


def deploy_split_swap(rpc_url: str, deployer: str, artifacts_dir: Path = ARTIFACTS_DIR) -> str:
    """Deploy ``SplitSwap`` (no constructor arguments) from ``deployer``, the node's
    automine on; its address, lower-case hex."""
    return deploy_artifact(rpc_url, deployer, load_artifact("SplitSwap", artifacts_dir), [])


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
    """A hedgeflow configuration whose oracle reads the dev chain's pools and feed.

    It leaves out the mainnet registry (``use_default_registry = false``): the dev chain
    has none of its pools. Its tokens are keyed by address (as ``risk.dex_hedges`` needs
    them, for their decimals). ``risk`` names the venue, its underlying (WETH stands for ETH)
    and the collateral tokens (USDC and WETH). With ``rpc_url`` it also sets ``chain``, so
    that ``hedgeflow ingest`` follows the node and every deployed contract, the venue
    included.
    """
    token0, token1 = sorted(deployed.tokens.values())  # Uniswap's order: by address
    pools: list[tuple[str, SourceKind]] = [
        (deployed.uniswap.v2_pair, "uniswap_v2"),
        *(
            (deployed.uniswap.v3_pools[fee], "uniswap_v3")
            for fee in sorted(deployed.uniswap.v3_pools)
        ),
    ]
    sources = [
        SourceConfig(address=address, kind=kind, token0=token0, token1=token1)
        for address, kind in pools
    ]
    feed = SourceConfig(
        address=deployed.feed, kind="chainlink", base="ETH", quote="USD", decimals=FEED_DECIMALS
    )
    decimals = {symbol: d for symbol, _, d in TOKENS}
    oracle = OracleConfig(
        use_default_registry=False,
        tokens={
            address: TokenConfig(decimals=decimals[symbol], asset=TOKEN_ASSETS[symbol])
            for symbol, address in sorted(deployed.tokens.items())
        },
        sources=[*sources, feed],
    )
    risk = RiskConfig(
        venue=deployed.venue,
        underlyings={deployed.tokens[UNDERLYING]: TOKEN_ASSETS[UNDERLYING]},
        collateral={
            deployed.tokens[symbol]: CollateralToken(
                asset=TOKEN_ASSETS[symbol], decimals=decimals[symbol]
            )
            for symbol in sorted(deployed.tokens)
        },
    )
    cfg = Config(oracle=oracle, risk=risk)
    if rpc_url is None:
        return cfg
    chain = ChainConfig(rpc_url=rpc_url, chain_id=deployed.chain_id, contracts=deployed.contracts)
    return msgspec.structs.replace(cfg, chain=chain)


def feed_answer(price: float) -> int:
    """The aggregator's answer for ``price`` (USD), with :data:`FEED_DECIMALS` decimals."""
    return round(Fraction(price) * 10**FEED_DECIMALS)


def _cs(address: str) -> str:
    """The checksummed form of an address, as web3's encoders require."""
    return str(Web3.to_checksum_address(address))
