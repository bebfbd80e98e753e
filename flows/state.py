"""Keyed state for the stages: the core's ``step`` per item, snapshots as pickled bytes.

A step is ``step(state | None, value) -> (state, output)``: one output record per value
(the core's frozen ``...Out``), which the stage then splits into its streams.

Bytewax's ``stateful_flat_map`` deep-copies the state at every snapshot, which took about
15% of a replay; a pickle is an immutable copy made in C, and it is what recovery stores
anyway.

Bytewax 0.21.1 calls ``snapshot()`` at the end of every epoch for each key that took
items in it, with or without a recovery configuration (``src/operators.rs``,
``stateful_batch``; without recovery the snapshots are dropped). So a flow built inside
``snapshots(False)`` returns no state at all: pickling every key each epoch was 72% of a
replay with ``epoch_interval_s = 0.5`` and no recovery. The runner builds its flows that
way when it has no recovery directory.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.operators import KeyedStream, StatefulBatchLogic

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")

Step = Callable[[S | None, V], tuple[S, W]]

_SNAPSHOTS: ContextVar[bool] = ContextVar("hedgeflow_snapshots", default=True)
_NOT_KEPT = b""
"""The snapshot of a flow built without snapshots; resuming from it is an error."""


@contextmanager
def snapshots(enabled: bool) -> Iterator[None]:
    """Build the flows made inside this block with (``enabled``) or without state
    snapshots. Without, a run cannot be resumed: use it only without recovery."""
    token = _SNAPSHOTS.set(enabled)
    try:
        yield
    finally:
        _SNAPSHOTS.reset(token)


class _PickledState(StatefulBatchLogic[V, W, bytes], Generic[S, V, W]):
    def __init__(self, step_id: str, step: Step[S, V, W], resume: bytes | None, keep: bool):
        if resume == _NOT_KEPT:
            msg = (
                f"step {step_id!r}: expected a snapshot to resume from; got none (the flow "
                "that wrote this recovery state was built without snapshots)"
            )
            raise RuntimeError(msg)
        self.step = step
        self.keep = keep
        self.state: S | None = None if resume is None else pickle.loads(resume)

    def on_batch(self, values: list[V]) -> tuple[list[W], bool]:
        out: list[W] = []
        for value in values:
            self.state, emitted = self.step(self.state, value)
            out.append(emitted)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        if not self.keep:
            return _NOT_KEPT
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def keyed_state(step_id: str, up: KeyedStream[V], step: Step[S, V, W]) -> KeyedStream[W]:
    """Like ``op.stateful_map``: ``step(state | None, value) -> (state, output)``. The
    state is snapshotted unless the flow is built inside ``snapshots(False)``."""
    keep = _SNAPSHOTS.get()
    return op.stateful_batch(step_id, up, lambda resume: _PickledState(step_id, step, resume, keep))
