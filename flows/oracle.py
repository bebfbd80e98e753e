"""The oracle stage: raw batches in, prices, rejects and partition stats out.

    raw batches --key by input partition--> intake (decode, lateness, route)
        --key by asset--> oracle (windows, robust price, status, breaker)

The cores are ``operators.intake.PartitionIntake`` and ``operators.oracle.AssetOracle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.state import keyed_state
from operators.config import Config
from operators.decode import Decoder
from operators.intake import IntakeParams, PartitionIntake
from operators.model import (
    AssetBatch,
    OraclePrice,
    OracleProgress,
    PartitionStats,
    RawBatch,
    Rejected,
)
from operators.oracle import AssetOracle, oracle_params
from operators.registry import Registry
from operators.venue import VenueBatch


@dataclass(frozen=True)
class OracleOut:
    """The oracle stage's streams, each keyed by a routing string."""

    prices: Stream[tuple[str, OraclePrice]]
    rejects: Stream[tuple[str, Rejected]]
    stats: Stream[tuple[str, PartitionStats]]
    progress: Stream[OracleProgress]
    """How far each asset's windows are closed (for the risk stage; not an output)."""
    venue: Stream[tuple[str, VenueBatch]]
    """The venue's events by risk shard, when ``risk.venue`` is set."""


def oracle_stage(raw: Stream[RawBatch], cfg: Config, parts: list[str]) -> OracleOut:
    """Add the oracle to ``raw``'s dataflow; ``parts`` names every input partition."""
    registry = Registry.from_config(cfg.oracle)
    decoder = Decoder(registry, cfg.topics.chain_logs, cfg.topics.dex_quotes)
    intake_params = IntakeParams(
        cfg.oracle.window_ms,
        cfg.oracle.lateness_ms,
        int(cfg.oracle.max_future_s * 1000),
        registry.assets,
        cfg.risk.venue or None,
        cfg.risk.shards,
    )
    params = oracle_params(cfg.oracle, registry, tuple(sorted(parts)))

    def intake(state: PartitionIntake | None, batch: RawBatch) -> tuple[PartitionIntake, list[Any]]:
        if state is None:
            state = PartitionIntake(batch.part)
        return state, state.on_batch(batch, decoder, intake_params)

    def price(
        state: AssetOracle | None, item: tuple[str, AssetBatch]
    ) -> tuple[AssetOracle, list[OraclePrice | Rejected | OracleProgress]]:
        asset, batch = item
        if state is None:
            state = AssetOracle(asset)
        return state, state.on_batch(batch, params)

    by_part = op.key_on("key_by_part", raw, lambda b: b.part)
    taken = op.map("unkey_intake", keyed_state("intake", by_part, intake), _value)
    routed = op.branch("is_routed", taken, lambda x: isinstance(x, tuple))
    other = op.branch("is_stats", routed.falses, lambda x: isinstance(x, PartitionStats))
    to_asset = op.branch("is_asset", routed.trues, lambda x: isinstance(x[1], AssetBatch))
    by_asset = op.key_on("key_by_asset", to_asset.trues, lambda x: x[0])
    priced = op.map("unkey_oracle", keyed_state("oracle", by_asset, price), _value)
    is_progress = op.branch("is_progress", priced, lambda x: isinstance(x, OracleProgress))
    is_price = op.branch("is_price", is_progress.falses, lambda x: isinstance(x, OraclePrice))
    rejects = op.merge("merge_rejects", other.falses, is_price.falses)
    return OracleOut(
        prices=op.key_on("key_price", is_price.trues, lambda p: p.asset),
        rejects=op.key_on("key_reject", rejects, lambda r: r.stage),
        stats=op.key_on("key_stats", other.trues, lambda s: s.part),
        progress=is_progress.trues,
        venue=to_asset.falses,
    )


def _value(kv: tuple[str, Any]) -> Any:
    return kv[1]
