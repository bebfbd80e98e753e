"""Crash points for tests: ``HEDGEFLOW_FAILPOINT=<name>[@<n>]`` makes the process exit at
the ``n``-th time (default the first) it passes the point ``name``.

The executor's points, in the order an order passes them: ``after_sign`` (signed, nothing
stored), ``after_persist`` (nonce, raw transaction and offset committed, not broadcast),
``after_send`` (broadcast, not yet seen mined) and ``after_receipt`` (a receipt read, not
yet recorded). The exit is immediate (``os._exit``): no cleanup, no flush, as a kill -9.
"""

from __future__ import annotations

import logging
import os

FAILPOINT_EXIT = 86
"""The exit status of a process stopped at a failpoint."""
_hits: dict[str, int] = {}
log = logging.getLogger("hedgeflow.failpoint")


def failpoint(name: str) -> None:
    """Exit the process here if ``HEDGEFLOW_FAILPOINT`` names ``name`` and this is the
    ``n``-th pass."""
    spec = os.environ.get("HEDGEFLOW_FAILPOINT")
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        log.error(
            "failpoint %s reached (pass %d): exiting with status %d",
            name,
            _hits[name],
            FAILPOINT_EXIT,
        )
        logging.shutdown()
        os._exit(FAILPOINT_EXIT)
