"""The oracle stage: raw batches of ``chain.logs`` and ``dex.quotes`` in; prices, their
progress, rejects and partition stats out.

    raw batches --key by input partition--> intake (decode, event time, route)
        --key by asset--> oracle (windows, robust price, status, breaker)

The cores and their steps are ``operators.intake`` and ``operators.oracle``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.state import keyed_state
from operators.intake import intake_step
from operators.model import (
    OraclePrice,
    OracleProgress,
    PartitionStats,
    PriceBatch,
    RawBatch,
    Rejected,
)
from operators.oracle import OracleOut, oracle_step
from operators.stages import StageParams


@dataclass(frozen=True)
class OracleStreams:
    """The oracle stage's streams, each keyed by a routing string."""

    prices: Stream[tuple[str, OraclePrice]]
    ticks: Stream[tuple[str, OraclePrice]]
    """The tick rows (``oracle.cadence`` other than ``window``)."""
    published: Stream[tuple[str, PriceBatch]]
    """Per step of an asset's oracle, its rows then its progress, in the order decided:
    what the ``oracle.prices`` topic carries, and what the risk stage reads."""
    rejects: Stream[tuple[str, Rejected]]
    stats: Stream[tuple[str, PartitionStats]]


def oracle_stage(raw: Stream[RawBatch], params: StageParams, parts: list[str]) -> OracleStreams:
    """Add the oracle to ``raw``'s dataflow; ``parts`` names every input partition."""
    intake = functools.partial(intake_step, decoder=params.decoder, params=params.intake)
    oracle = functools.partial(oracle_step, params=params.oracle, parts=tuple(sorted(parts)))

    taken = keyed_state("intake", op.key_on("key_by_part", raw, lambda b: b.part), intake)
    to_assets = op.flat_map("to_assets", taken, lambda kv: kv[1].batches)
    priced = keyed_state("oracle", op.key_on("key_by_asset", to_assets, lambda x: x[0]), oracle)
    rejects = op.merge(
        "merge_rejects",
        op.flat_map("intake_rejects", taken, lambda kv: kv[1].rejects),
        op.flat_map("oracle_rejects", priced, lambda kv: kv[1].rejects),
    )
    stats = op.filter_map("intake_stats", taken, lambda kv: kv[1].stats)
    return OracleStreams(
        prices=op.flat_map("oracle_rows", priced, lambda kv: [(kv[0], p) for p in kv[1].prices]),
        ticks=op.flat_map("oracle_ticks", priced, lambda kv: [(kv[0], p) for p in kv[1].ticks]),
        published=op.filter_map("oracle_published", priced, _published),
        rejects=op.key_on("key_reject", rejects, lambda r: r.stage),
        stats=op.key_on("key_stats", stats, lambda s: s.part),
    )


def _published(kv: tuple[str, OracleOut]) -> tuple[str, PriceBatch] | None:
    asset, out = kv
    items: list[OraclePrice | OracleProgress] = [*out.prices]
    if out.progress is not None:
        items.append(out.progress)
    items.extend(out.ticks)
    if out.tick_progress is not None:
        items.append(out.tick_progress)
    return (asset, PriceBatch(items)) if items else None
