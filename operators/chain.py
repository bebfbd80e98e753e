"""Following a chain: which logs to publish, in what order, and what a reorg retracts.

Pure: the caller fetches blocks and logs from a node and passes them in. Block numbers
and log indexes are integers; ``ts`` values are block timestamps in seconds.

The cursor remembers the hash of each recent block (``reorg_depth`` of them) and the logs
it published for it. When a block it published is no longer on the node's chain, every
log published since the fork is published again with ``removed: true`` (newest first),
and the cursor goes back to the block after the fork, so the new branch follows.

Every published message gets the next sequence number. A run resumed from a snapshot
produces the same messages with the same numbers, so a sink can skip those it already
wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

import msgspec

from operators.abi import quantity


@dataclass(frozen=True)
class Header:
    """The part of a block header that following needs."""

    number: int
    hash: str
    parent_hash: str
    ts: int


@dataclass(frozen=True)
class Published:
    """One message for ``chain.logs``: key (address; empty for a progress marker, which
    goes to every partition), JSON value, and its sequence number."""

    key: str
    value: bytes
    seq: int
    ts_ms: int
    """The block time of the log (or of the marker's block), ms: the message's timestamp."""


@dataclass(frozen=True)
class Cursor:
    """Where following stands: the next block to fetch and the recent published blocks.

    ``recent`` maps block number to (hash, values published for it); ``seq`` counts the
    messages published so far.
    """

    next_block: int
    recent: dict[int, tuple[str, tuple[bytes, ...]]] = field(default_factory=dict)
    seq: int = 0


class ChainError(ValueError):
    """The node's answer cannot be used (inconsistent or malformed); fetch it again.

    Malformed quantities raise ``operators.abi.AbiError`` instead.
    """


def _hex(value: Any, what: str) -> int:
    """A node's quantity: ``0x`` hex or an integer (lenient; ``quantity`` is the strict one)."""
    try:
        return value if type(value) is int else int(value, 16)
    except (TypeError, ValueError):
        raise ChainError(
            f"malformed {what}: expected 0x hex or an integer; got {value!r}"
        ) from None


def header_of(block: dict[str, Any]) -> Header:
    """A ``Header`` from an ``eth_getBlockByNumber`` answer (raises ``ChainError``)."""
    try:
        return Header(
            quantity(block["number"], "block number"),
            str(block["hash"]).lower(),
            str(block["parentHash"]).lower(),
            quantity(block["timestamp"], "block timestamp"),
        )
    except (KeyError, TypeError) as exc:
        raise ChainError(f"malformed block: missing {exc}") from None


def check_range(headers: dict[int, Header], cursor: Cursor) -> None:
    """Raise ``ChainError`` unless the headers link to each other and to the cursor."""
    for number, h in headers.items():
        before = headers.get(number - 1)
        if before is not None and h.parent_hash != before.hash:
            raise ChainError(f"block {number} does not link to block {number - 1}")
        known = cursor.recent.get(number - 1)
        if known is not None and h.parent_hash != known[0]:
            raise ChainError(f"block {number} does not link to published block {number - 1}")


def publish_range(
    cursor: Cursor,
    end: int,
    logs: list[dict[str, Any]],
    headers: dict[int, Header],
    timestamps: dict[int, int],
    chain_id: int,
    reorg_depth: int,
    end_ts: int | None = None,
) -> tuple[Cursor, list[Published]]:
    """Publish the logs of blocks ``cursor.next_block..end`` in chain order, then, given
    ``end_ts`` (block ``end``'s time, s), a progress marker (``progress_marker``).

    ``headers`` holds the blocks to remember (those within ``reorg_depth`` of the head);
    ``timestamps`` gives the block time (s) of blocks whose logs lack ``blockTimestamp``.
    Raises ``ChainError`` when a log is malformed or belongs to another branch than the
    headers (the node reorganised between the two calls).
    """
    keyed = []
    for log in logs:
        if log.get("removed"):
            continue  # a node may still list a removed log; the reorg check handles it
        try:
            number = _hex(log["blockNumber"], "log blockNumber")
            index = _hex(log["logIndex"], "log logIndex")
            address = str(log["address"]).lower()
            block_hash = str(log["blockHash"]).lower()
        except (KeyError, TypeError) as exc:
            raise ChainError(f"malformed log: missing {exc}") from None
        if not cursor.next_block <= number <= end:
            raise ChainError(f"log of block {number} outside {cursor.next_block}..{end}")
        h = headers.get(number)
        if h is not None and h.hash != block_hash:
            raise ChainError(f"log of block {number} is from another branch")
        keyed.append((number, index, address, log))
    keyed.sort(key=itemgetter(0, 1))

    seq = cursor.seq
    out: list[Published] = []
    by_block: dict[int, list[bytes]] = {}
    for number, _, address, log in keyed:
        ts = log.get("blockTimestamp")
        if ts is None:
            if number in timestamps:
                ts = hex(timestamps[number])
            elif number in headers:
                ts = hex(headers[number].ts)
            else:
                raise ChainError(f"no timestamp for block {number}")
        value = msgspec.json.encode({**log, "address": address, "removed": False,
                                     "blockTimestamp": ts, "chainId": chain_id})  # fmt: skip
        seq += 1
        out.append(Published(address, value, seq, _hex(ts, "blockTimestamp") * 1000))
        by_block.setdefault(number, []).append(value)

    recent = dict(cursor.recent)
    for number, h in headers.items():
        recent[number] = (h.hash, tuple(by_block.get(number, ())))
    for number in [n for n in recent if n <= end - reorg_depth]:
        del recent[number]
    if end_ts is not None:
        seq += 1
        out.append(progress_marker(end, end_ts, chain_id, seq))
    return Cursor(end + 1, recent, seq), out


def progress_marker(block: int, ts: int, chain_id: int, seq: int) -> Published:
    """A ``chain.logs`` message with no key that says: every log up to ``block`` (whose time
    is ``ts``, s) is published. It goes to every partition, so that a partition without
    logs of its own still moves its watermark (and windows still close)."""
    value = {"progress": True, "blockNumber": hex(block), "blockTimestamp": hex(ts),
             "chainId": chain_id}  # fmt: skip
    return Published("", msgspec.json.encode(value), seq, ts * 1000)


def retract_after(cursor: Cursor, fork: int) -> tuple[Cursor, list[Published]]:
    """Retract everything published for blocks after ``fork`` (the last common block).

    Each orphaned log is published again with ``removed: true``, newest first; the cursor
    then continues at ``fork + 1``.
    """
    seq = cursor.seq
    out: list[Published] = []
    for number in sorted((n for n in cursor.recent if n > fork), reverse=True):
        for value in reversed(cursor.recent[number][1]):
            log = msgspec.json.decode(value)
            log["removed"] = True
            seq += 1
            ts_ms = _hex(log["blockTimestamp"], "blockTimestamp") * 1000
            out.append(Published(log["address"], msgspec.json.encode(log), seq, ts_ms))
    recent = {n: v for n, v in cursor.recent.items() if n <= fork}
    return replace(cursor, next_block=fork + 1, recent=recent, seq=seq), out


def next_range_size(size: int, *, refused: bool, seconds: float, cfg_min: int, cfg_max: int,
                    target_s: float = 1.0) -> int:  # fmt: skip
    """Adapt the ``eth_getLogs`` range (blocks): halve when refused, grow when fast."""
    if refused:
        return max(cfg_min, size // 2)
    if seconds < target_s / 2:
        return min(cfg_max, size * 2)
    if seconds > target_s * 2:
        return max(cfg_min, size // 2)
    return size
