"""The risk stage: the venue's events and option quotes (``chain.logs``, ``dex.quotes``),
the oracle's prices and progress, and the executors' outcomes (``fills``, when signers are
configured) in; account risk, instruments and orders out.

    raw batches --key by input partition--> risk intake (venue events, quotes, prices)
        --key by shard--> risk shard (books, vols, margin, liquidations, hedges)

The oracle's items come either from the ``oracle.prices`` topic among the raw batches
(a separate deployment) or straight from the oracle stage (replay and the demo). The
cores and their steps are ``operators.risk_intake`` and ``operators.risk``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.state import keyed_state
from operators.accounts import shard_keys
from operators.model import (
    AccountRiskRow,
    InstrumentRow,
    Order,
    OrderDenied,
    PriceBatch,
    RawBatch,
    Rejected,
    Settlement,
)
from operators.risk import risk_step
from operators.risk_intake import risk_intake_step
from operators.stages import StageParams
from operators.venue import VenueBatch


@dataclass(frozen=True)
class RiskStreams:
    """Account risk rows, order legs, denied orders and settlements keyed by account,
    instruments by id, and rejects (the risk intake's and the shards' venue events the
    books refused) keyed by stage."""

    rows: Stream[tuple[str, AccountRiskRow]]
    orders: Stream[tuple[str, Order]]
    denials: Stream[tuple[str, OrderDenied]]
    settlements: Stream[tuple[str, Settlement]]
    instruments: Stream[tuple[str, InstrumentRow]]
    rejects: Stream[tuple[str, Rejected]]


def risk_stage(
    raw: Stream[RawBatch],
    params: StageParams,
    parts: list[str],
    oracle: Stream[tuple[str, PriceBatch]] | None = None,
) -> RiskStreams:
    """Add the risk shards to ``raw``'s dataflow. ``parts`` names the input partitions the
    shards gate on (``chain.logs``, ``dex.quotes``, and ``fills`` when read); ``oracle`` is
    the oracle stage's ``published``
    stream when it runs in the same dataflow (else ``raw`` holds ``oracle.prices``)."""
    assert params.risk_intake is not None and params.risk is not None
    intake = functools.partial(risk_intake_step, params=params.risk_intake)
    shards = shard_keys(params.risk_intake.shards)
    step = functools.partial(risk_step, params=params.risk, parts=tuple(sorted(parts)))

    taken = keyed_state("risk_intake", op.key_on("risk_key_by_part", raw, lambda b: b.part), intake)
    venue = op.flat_map("venue_to_shards", taken, lambda kv: kv[1].venue)
    prices = op.filter_map("intake_prices", taken, lambda kv: kv[1].prices)
    if oracle is not None:
        prices = op.merge("risk_prices", prices, op.map("oracle_batches", oracle, lambda kv: kv[1]))

    def to_every_shard(batch: PriceBatch) -> list[tuple[str, VenueBatch | PriceBatch]]:
        return [(shard, batch) for shard in shards]

    inputs = op.merge("risk_inputs", venue, op.flat_map("prices_to_shards", prices, to_every_shard))
    out = keyed_state("risk", op.key_on("key_by_shard", inputs, lambda x: x[0]), step)
    return RiskStreams(
        rows=op.flat_map("risk_rows", out, lambda kv: [(r.account, r) for r in kv[1].rows]),
        orders=op.flat_map("risk_orders", out, lambda kv: [(o.account, o) for o in kv[1].orders]),
        instruments=op.flat_map(
            "risk_instruments", out, lambda kv: [(i.instrument, i) for i in kv[1].instruments]
        ),
        denials=op.flat_map(
            "risk_denials", out, lambda kv: [(d.account, d) for d in kv[1].denials]
        ),
        settlements=op.flat_map(
            "risk_settlements", out, lambda kv: [(s.account, s) for s in kv[1].settlements]
        ),
        rejects=op.merge(
            "risk_rejects",
            op.flat_map(
                "risk_intake_rejects", taken, lambda kv: [(r.stage, r) for r in kv[1].rejects]
            ),
            op.flat_map("risk_book_rejects", out, lambda kv: [(r.stage, r) for r in kv[1].rejects]),
        ),
    )
