"""Every stage's parameters, built once from the configuration (times in ms).

``stage_params`` is the one place where configuration becomes what the cores read: the
source registry (built and cross-checked here, so a dangling reference stops the program
at start-up), the decoder, the intake, oracle and risk parameters, and the secret that
signs the orders (read here, so a missing or short ``orders.secret_file`` stops it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from operators.config import Config, ConfigError
from operators.decode import Decoder
from operators.intake import IntakeParams
from operators.oracle import OracleParams
from operators.order_auth import load_secret
from operators.registry import Registry
from operators.risk import RiskParams
from operators.risk_intake import RiskIntakeParams
from operators.units import E18, ms, scaled
from operators.venue import InstrumentListed
from operators.wallet import DexHedge


@dataclass(frozen=True, kw_only=True)
class StageParams:
    """The configuration and everything built from it. ``risk_intake`` and ``risk`` are
    ``None`` when no venue is configured (``risk.venue`` empty); ``order_secret`` is
    ``None`` when ``orders.secret_file`` is empty (orders go out unsigned)."""

    cfg: Config
    registry: Registry
    decoder: Decoder
    intake: IntakeParams
    oracle: OracleParams
    risk_intake: RiskIntakeParams | None
    risk: RiskParams | None
    order_secret: bytes | None = field(default=None, repr=False)


def stage_params(cfg: Config) -> StageParams:
    """Build every stage's parameters; raise ``ConfigError`` on a dangling reference."""
    registry = Registry.from_config(cfg.oracle)
    o, topics = cfg.oracle, cfg.topics
    return StageParams(
        cfg=cfg,
        registry=registry,
        decoder=Decoder(registry, topics.chain_logs, topics.dex_quotes),
        intake=IntakeParams(
            window_ms=ms(o.window_s),
            lateness_ms=ms(o.allowed_lateness_s),
            max_future_ms=ms(o.max_future_s),
            max_quote_delay_ms=ms(o.max_quote_delay_s),
            assets=registry.assets,
            ticks=o.cadence != "window",
        ),
        oracle=OracleParams(
            window_ms=ms(o.window_s),
            max_age_ms=ms(o.max_age_s),
            source_max_age_ms={
                s.address: s.max_age_ms
                for s in registry.by_address.values()
                if s.max_age_ms is not None
            },
            min_sources=o.min_sources,
            mad_k=o.mad_k,
            mad_floor_bps=o.mad_floor_bps,
            jump_threshold=o.jump_threshold,
            breaker_confirm_sources=o.breaker_confirm_sources,
            breaker_confirm_windows=o.breaker_confirm_windows,
            correction_windows=o.correction_windows,
            idle_timeout_ms=ms(o.idle_timeout_s),
            pegs=registry.pegs,
            numeraire={a: n for n, assets in registry.crosses.items() for a in assets},
            cadence=o.cadence if isinstance(o.cadence, str) else "every",
            cadence_ms=0 if isinstance(o.cadence, str) else ms(o.cadence),
        ),
        risk_intake=_risk_intake(cfg) if cfg.risk.venue else None,
        risk=_risk(cfg, registry) if cfg.risk.venue else None,
        order_secret=load_secret(cfg.orders.secret_file) if cfg.orders.secret_file else None,
    )


def _risk_intake(cfg: Config) -> RiskIntakeParams:
    o, topics = cfg.oracle, cfg.topics
    return RiskIntakeParams(
        venue=cfg.risk.venue,
        shards=cfg.risk.shards,
        window_ms=ms(o.window_s),
        lateness_ms=ms(o.allowed_lateness_s),
        max_future_ms=ms(o.max_future_s),
        max_quote_delay_ms=ms(o.max_quote_delay_s),
        chain_logs=topics.chain_logs,
        dex_quotes=topics.dex_quotes,
        oracle_prices=topics.oracle_prices,
        fills=topics.fills,
        signers=tuple(cfg.execution.signers),
        ticks=o.cadence != "window",
    )


def _risk(cfg: Config, registry: Registry) -> RiskParams:
    risk = cfg.risk
    return RiskParams(
        window_ms=ms(cfg.oracle.window_s),
        idle_timeout_ms=ms(cfg.oracle.idle_timeout_s),
        cadence="window" if cfg.oracle.cadence == "window" else "tick",
        assets=registry.assets,
        underlyings=dict(risk.underlyings),
        collateral={a: (c.asset, c.decimals) for a, c in risk.collateral.items()},
        pegs=registry.pegs,
        crosses={a: n for n, assets in registry.crosses.items() for a in assets},
        margin_mode=risk.margin_mode,
        margin_modes=dict(risk.margin_modes),
        retain_blocks=cfg.chain.reorg_depth,
        margin=risk.margin,
        liquidation=risk.liquidation,
        hedge=risk.hedge,
        books={a: dict(b) for a, b in risk.books.items()},
        dex_hedges=_dex_hedges(cfg, registry),
        targets={a: dict(t) for a, t in risk.targets.items()},
        instruments={
            i: InstrumentListed(
                instrument=i,
                underlying=c.underlying,
                kind=c.kind,
                strike_e18=int(Decimal(str(c.strike)) * E18),
                expiry_s=c.expiry_s,
                ts_ms=0,
                seq=0,
                removed=False,
            )
            for i, c in risk.instruments.items()
        },
        liquidation_timeout_ms=ms(risk.liquidation_timeout_s),
        valid_for_ms=ms(cfg.orders.valid_for_s),
        risk_change=risk.risk_change,
        risk_min_interval_ms=ms(risk.risk_min_interval_s),
        risk_interval_ms=ms(risk.risk_interval_s),
        vol_half_life_s=risk.vol_half_life_s,
        vol_floor=risk.vol_floor,
        vol_cap=risk.vol_cap,
        iv_max_age_ms=ms(risk.iv_max_age_s),
    )


def _dex_hedges(cfg: Config, registry: Registry) -> dict[str, dict[str, DexHedge]]:
    """``risk.dex_hedges`` with each token's decimals; raise ``ConfigError`` naming the key
    and the value of a token that is not known (a key of ``oracle.tokens`` or of
    ``risk.collateral``, the same in both where in both), of another asset than its key,
    or of an asset the oracle does not publish."""
    oracle = {n: (registry.token_assets[n], d) for n, d in registry.token_decimals.items()}
    collateral = {a: (c.asset, c.decimals) for a, c in cfg.risk.collateral.items()}
    out: dict[str, dict[str, DexHedge]] = {}
    for account, hedges in cfg.risk.dex_hedges.items():
        for asset, h in hedges.items():
            where = f"$.risk.dex_hedges.{account}.{asset}"
            for key in ("token", "quote"):
                token = getattr(h, key)
                found = {oracle.get(token), collateral.get(token)} - {None}
                if len(found) != 1:
                    msg = (
                        f"{key} {token!r} is not a known token: name it in oracle.tokens (by "
                        "its address) or risk.collateral"
                        if not found
                        else f"{key} {token!r} is (asset, decimals) {oracle[token]} in "
                        f"oracle.tokens but {collateral[token]} in risk.collateral"
                    )
                    raise ConfigError(f"invalid configuration: {msg} - at `{where}.{key}`")
            token_asset, decimals = oracle.get(h.token) or collateral[h.token]
            if token_asset != asset:
                msg = f"token {h.token!r} is {token_asset}, not {asset}"
                raise ConfigError(f"invalid configuration: {msg} - at `{where}.token`")
            if asset not in registry.assets:
                msg = f"asset {asset!r} has no oracle price (assets: {list(registry.assets)})"
                raise ConfigError(f"invalid configuration: {msg} - at `{where}`")
            out.setdefault(account, {})[asset] = DexHedge(
                token=h.token, quote=h.quote, decimals=decimals, initial=scaled(h.initial, decimals)
            )
    return out
