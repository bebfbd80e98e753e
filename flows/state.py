"""Keyed state for the stages: the core's ``step`` per item, snapshots as pickled bytes.

A step is ``step(state | None, value) -> (state, output)``: one output record per value
(the core's frozen ``...Out``), which the stage then splits into its streams.

Bytewax's ``stateful_flat_map`` deep-copies the state at every snapshot, which took about
15% of a replay; a pickle is an immutable copy made in C, and it is what recovery stores
anyway.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.operators import KeyedStream, StatefulBatchLogic

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")

Step = Callable[[S | None, V], tuple[S, W]]


class _PickledState(StatefulBatchLogic[V, W, bytes], Generic[S, V, W]):
    def __init__(self, step: Step[S, V, W], resume: bytes | None):
        self.step = step
        self.state: S | None = None if resume is None else pickle.loads(resume)

    def on_batch(self, values: list[V]) -> tuple[list[W], bool]:
        out: list[W] = []
        for value in values:
            self.state, emitted = self.step(self.state, value)
            out.append(emitted)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def keyed_state(step_id: str, up: KeyedStream[V], step: Step[S, V, W]) -> KeyedStream[W]:
    """Like ``op.stateful_map``: ``step(state | None, value) -> (state, output)``."""
    return op.stateful_batch(step_id, up, lambda resume: _PickledState(step, resume))
