"""The risk stage: venue events and oracle prices in, account risk and orders out.

    venue events (by shard) ---------------------\\
    oracle prices, oracle progress (to every shard) >-- risk shard --> account_risk, orders

The core is ``operators.risk.RiskShard``: it evaluates at each window end once the venue's
partitions and every oracle asset have passed it, so its output is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.oracle import OracleOut
from flows.state import keyed_state
from operators.accounts import E18
from operators.config import Config
from operators.model import AccountRiskRow, InstrumentRow, OraclePrice, OracleProgress, Order
from operators.registry import Registry
from operators.risk import RiskParams, RiskShard
from operators.venue import InstrumentListed, VenueBatch


@dataclass(frozen=True)
class RiskOut:
    """Account risk rows and order legs, keyed by account."""

    rows: Stream[tuple[str, AccountRiskRow]]
    orders: Stream[tuple[str, Order]]
    instruments: Stream[tuple[str, InstrumentRow]]


def risk_params(cfg: Config, parts: list[str]) -> RiskParams:
    """The risk shards' parameters from the configuration."""
    registry = Registry.from_config(cfg.oracle)
    risk = cfg.risk
    return RiskParams(
        window_ms=cfg.oracle.window_ms,
        parts=tuple(sorted(parts)),
        assets=registry.assets,
        underlyings=dict(risk.underlyings),
        collateral={a: (c.asset, c.decimals) for a, c in risk.collateral.items()},
        pegs=registry.pegs,
        margin=risk.margin,
        liquidation=risk.liquidation,
        hedge=risk.hedge,
        books={a: dict(b) for a, b in risk.books.items()},
        targets={a: dict(t) for a, t in risk.targets.items()},
        instruments={
            i: InstrumentListed(
                i, c.underlying, c.kind, int(Decimal(str(c.strike)) * E18), c.expiry_s, 0, 0, False
            )
            for i, c in risk.instruments.items()
        },
        liquidation_timeout_ms=int(risk.liquidation_timeout_s * 1000),
        risk_change=risk.risk_change,
        risk_min_interval_ms=int(risk.risk_min_interval_s * 1000),
        risk_interval_ms=int(risk.risk_interval_s * 1000),
        vol_half_life_s=risk.vol_half_life_s,
        vol_floor=risk.vol_floor,
        vol_cap=risk.vol_cap,
        iv_max_age_ms=int(risk.iv_max_age_s * 1000),
    )


def risk_stage(oracle: OracleOut, cfg: Config, parts: list[str]) -> RiskOut:
    """Add the risk shards after the oracle; ``parts`` names every input partition."""
    params = risk_params(cfg, parts)
    shards = [f"shard-{i}" for i in range(cfg.risk.shards)]

    def to_every_shard(item: Any) -> list[tuple[str, Any]]:
        return [(shard, item) for shard in shards]

    def step(state: RiskShard | None, keyed: tuple[str, Any]) -> tuple[RiskShard, list[Any]]:
        shard, item = keyed
        if state is None:  # one shard reports the instruments every shard prices
            state = RiskShard(reports_instruments=shard == shards[0])
        if isinstance(item, VenueBatch):
            state.on_venue(item.part, item.watermark_ms, item.eof, item.events)
        elif isinstance(item, OraclePrice):
            state.on_price(item)
        elif isinstance(item, OracleProgress):
            state.on_progress(item)
        return state, state.evaluate(params)

    prices = op.flat_map("prices_to_shards", oracle.prices, lambda kv: to_every_shard(kv[1]))
    progress = op.flat_map("progress_to_shards", oracle.progress, to_every_shard)
    inputs = op.merge("risk_inputs", oracle.venue, prices, progress)
    tagged = op.map("tag_shard", inputs, lambda kv: (kv[0], kv))
    out = op.map("unkey_risk", keyed_state("risk", tagged, step), lambda kv: kv[1])
    is_order = op.branch("is_order", out, lambda x: isinstance(x, Order))
    is_row = op.branch("is_risk_row", is_order.falses, lambda x: isinstance(x, AccountRiskRow))
    return RiskOut(
        rows=op.key_on("key_risk_row", is_row.trues, lambda r: r.account),
        orders=op.key_on("key_order", is_order.trues, lambda o: o.account),
        instruments=op.key_on("key_instrument", is_row.falses, lambda i: i.instrument),
    )
