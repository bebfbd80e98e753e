"""The source registry: which contract is which pool or feed, and how to read its price.

The built-in defaults are Ethereum mainnet pools, so real mainnet logs work with no
configuration. A configuration file adds tokens and sources (or replaces the defaults
with ``use_default_registry = false``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from operators.config import ConfigError, OracleConfig, SourceConfig, TokenConfig
from operators.units import ms

DEFAULT_TOKENS: dict[str, dict[str, Any]] = {
    "USDC": {"decimals": 6, "asset": "USDC"},
    "USDT": {"decimals": 6, "asset": "USDT"},
    "WBTC": {"decimals": 8, "asset": "BTC"},
    "WETH": {"decimals": 18, "asset": "ETH"},
}

DEFAULT_SOURCES: list[dict[str, Any]] = [
    # Uniswap V3 USDC/WETH 0.05%
    {"address": "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640", "kind": "uniswap_v3",
     "token0": "USDC", "token1": "WETH"},
    # Uniswap V3 USDC/WETH 0.3%
    {"address": "0x8ad599c3a0ff1de082011efddc58f1908eb6e6d8", "kind": "uniswap_v3",
     "token0": "USDC", "token1": "WETH"},
    # Uniswap V3 WBTC/WETH 0.3%
    {"address": "0xcbcdf9626bc03e24f779434178a73a0b4bad62ed", "kind": "uniswap_v3",
     "token0": "WBTC", "token1": "WETH"},
    # Uniswap V2 USDC/WETH
    {"address": "0xb4e16d0168e52d35cacd2c6185b44281ec28c9dc", "kind": "uniswap_v2",
     "token0": "USDC", "token1": "WETH"},
    # Uniswap V2 WETH/USDT
    {"address": "0x0d4a11d5eeaac28ec3f61d100daf4d40471f1852", "kind": "uniswap_v2",
     "token0": "WETH", "token1": "USDT"},
]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class PoolSource:
    """A Uniswap V2 pair or V3 pool, oriented: the price is ``base`` in ``quote``.

    ``decimals0``/``decimals1`` are token0's and token1's decimals; ``base_is_token0``
    says which way round the pool's raw price (token1 per token0) must be read.
    """

    address: str
    kind: str
    base: str
    quote: str
    decimals0: int
    decimals1: int
    base_is_token0: bool
    weight: float | None
    max_age_ms: int | None


@dataclass(frozen=True, kw_only=True)
class FeedSource:
    """A Chainlink aggregator: ``answer / 10**decimals`` is ``base`` in ``quote``."""

    address: str
    base: str
    quote: str
    decimals: int
    weight: float | None
    max_age_ms: int | None


Source = PoolSource | FeedSource


@dataclass(frozen=True, kw_only=True)
class Registry:
    """Sources by address, USD pegs, and the assets the oracle publishes.

    ``crosses[asset]`` names the numeraire an asset is also priced through (BTC through
    ETH when a WBTC/WETH pool is registered); that numeraire's observations are routed to
    the asset too.
    """

    by_address: dict[str, Source]
    pegs: dict[str, float]
    assets: tuple[str, ...]
    crosses: dict[str, tuple[str, ...]]
    token_assets: dict[str, str]
    token_decimals: dict[str, int]
    """Token name (a symbol, or an address where ``oracle.tokens`` names it so) -> its
    decimals, as ``token_assets`` -> its asset."""

    @staticmethod
    def from_config(cfg: OracleConfig) -> Registry:
        """Build and check the registry; raise ``ConfigError`` on a dangling reference."""
        tokens: dict[str, TokenConfig] = {}
        sources: list[SourceConfig] = []
        if cfg.use_default_registry:
            tokens.update({k: TokenConfig(**v) for k, v in DEFAULT_TOKENS.items()})
            sources.extend(SourceConfig(**s) for s in DEFAULT_SOURCES)
        tokens.update(cfg.tokens)
        sources.extend(cfg.sources)
        pegs = {asset: float(Decimal(v)) for asset, v in cfg.pegs.items()}

        by_address: dict[str, Source] = {}
        for src in sources:
            if src.address in by_address:
                raise ConfigError(f"oracle.sources: address {src.address} is registered twice")
            max_age_ms = None if src.max_age_s is None else ms(src.max_age_s)
            if src.kind == "chainlink":
                assert src.base and src.quote and src.decimals is not None
                by_address[src.address] = FeedSource(
                    address=src.address,
                    base=src.base,
                    quote=src.quote,
                    decimals=src.decimals,
                    weight=src.weight,
                    max_age_ms=max_age_ms,
                )
                continue
            assert src.token0 and src.token1
            for token in (src.token0, src.token1):
                if token not in tokens:
                    msg = (
                        f"oracle.sources: {src.address} names token {token!r}, not in oracle.tokens"
                    )
                    raise ConfigError(msg)
            t0, t1 = tokens[src.token0], tokens[src.token1]
            if src.base is not None:
                base_is_token0 = src.base == src.token0
            else:  # a USD-pegged token is the quote; otherwise token1 is
                base_is_token0 = t0.asset not in pegs
            base, quote = (t0.asset, t1.asset) if base_is_token0 else (t1.asset, t0.asset)
            by_address[src.address] = PoolSource(
                address=src.address,
                kind=src.kind,
                base=base,
                quote=quote,
                decimals0=t0.decimals,
                decimals1=t1.decimals,
                base_is_token0=base_is_token0,
                weight=src.weight,
                max_age_ms=max_age_ms,
            )

        usd_priced = {s.base for s in by_address.values() if s.quote in pegs}
        crosses: dict[str, set[str]] = {}
        for s in by_address.values():
            if s.quote in pegs:
                continue
            if s.quote not in usd_priced:
                msg = (
                    f"oracle.sources: {s.address} quotes {s.base} in {s.quote}, which has no "
                    f"source priced in a pegged asset ({sorted(pegs)})"
                )
                raise ConfigError(msg)
            crosses.setdefault(s.quote, set()).add(s.base)
        assets = sorted(({s.base for s in by_address.values()} | set(cfg.assets)) - set(pegs))
        return Registry(
            by_address=by_address,
            pegs=pegs,
            assets=tuple(assets),
            crosses={k: tuple(sorted(v)) for k, v in crosses.items()},
            token_assets={name: t.asset for name, t in tokens.items()},
            token_decimals={name: t.decimals for name, t in tokens.items()},
        )

    def asset_of(self, symbol: str) -> str:
        """Map a token symbol to its asset (WETH -> ETH); other symbols map to themselves."""
        return self.token_assets.get(symbol, symbol)

    def destinations(self, base: str, quote: str) -> tuple[str, ...]:
        """The asset keys an observation of ``base`` in ``quote`` is routed to."""
        if quote in self.pegs:
            return (base, *self.crosses.get(base, ()))
        return (base,)
