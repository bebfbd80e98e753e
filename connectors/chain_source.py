"""A Bytewax source that follows an EVM node over JSON-RPC (web3 ``HTTPProvider``).

One partition follows the chain: ``eth_getLogs`` over block ranges for the followed
contracts, block headers for the blocks within ``reorg_depth`` of the head (to detect
reorgs and link ranges), and the pure logic of ``operators.chain`` to decide what to
publish. Its recovery state is the ``Cursor``: the next block, recent hashes and logs.

Faults: an RPC error or timeout is retried with exponential backoff and jitter, logged
with the method and the range; the cursor does not move, so a node that is down holds
the flow where it is and it catches up when the node returns. A refused range (too many
results, too wide) is halved; a fast one doubles, up to ``max_range``.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from web3.providers.rpc import HTTPProvider
from web3.types import RPCResponse

from connectors import metrics
from connectors.partitions import marker_key, partition_of
from operators.abi import AbiError, quantity
from operators.chain import (
    ChainError,
    Cursor,
    Header,
    Published,
    check_range,
    header_of,
    next_range_size,
    publish_range,
    retract_after,
)
from operators.config import ChainConfig
from operators.model import RawMessage

log = logging.getLogger("hedgeflow.ingest")

_REFUSED = re.compile(r"range|too (many|large|big|wide)|more than|limit|exceed|response size", re.I)
_MAX_BACKOFF_S = 30.0


class RpcError(RuntimeError):
    """The node answered a JSON-RPC call with an error object."""

    def __init__(self, method: str, error: Any):
        self.method = method
        self.error = error
        super().__init__(f"{method}: {error}")

    @property
    def refused_range(self) -> bool:
        message = self.error.get("message", "") if isinstance(self.error, dict) else str(self.error)
        return self.method == "eth_getLogs" and bool(_REFUSED.search(message))


class _Provider(HTTPProvider):
    """web3's ``HTTPProvider``, decoding answers with msgspec (5x stdlib json on big logs)."""

    @staticmethod
    def decode_rpc_response(raw_response: bytes) -> RPCResponse:
        return cast(RPCResponse, msgspec.json.decode(raw_response))


class Rpc:
    """Raw JSON-RPC over web3's ``HTTPProvider``: answers as the node sent them."""

    def __init__(self, url: str, timeout_s: float):
        self.url = url
        self.provider = _Provider(url, request_kwargs={"timeout": timeout_s})
        self.last_call = ""
        """The method and parameters of the latest call, for error messages."""

    def call(self, method: str, params: list[Any]) -> Any:
        self.last_call = f"{method}({params!r:.120})"
        answer = self.provider.make_request(method, params)
        if not isinstance(answer, dict):
            raise ChainError(f"{method}: malformed answer {answer!r:.200}")
        if answer.get("error") is not None:
            raise RpcError(method, answer["error"])
        if "result" not in answer:
            raise ChainError(f"{method}: answer has no result: {answer!r:.200}")
        return answer["result"]

    def chain_id(self) -> int:
        return int(self.call("eth_chainId", []), 16)

    def head(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def header(self, number: int) -> Header:
        block = self.call("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            raise ChainError(f"block {number} not found")
        return header_of(block)

    def logs(self, start: int, end: int, addresses: list[str]) -> list[dict[str, Any]]:
        params = {"fromBlock": hex(start), "toBlock": hex(end), "address": addresses}
        logs = self.call("eth_getLogs", [params])
        if not isinstance(logs, list):
            raise ChainError(f"eth_getLogs: expected a list; got {type(logs).__name__}")
        return logs


def probe(url: str, timeout_s: float) -> tuple[int, int]:
    """(chain id, head block) of the node at ``url``; raises ``ConnectionError`` clearly."""
    try:
        rpc = Rpc(url, timeout_s)
        return rpc.chain_id(), rpc.head()
    except Exception as exc:
        raise ConnectionError(f"cannot reach an EVM node at {url}: {exc}") from None


def chain_messages(
    rpc_url: str, addresses: list[str], first: int, last: int, topic: str, partitions: int
) -> list[RawMessage]:
    """The logs of ``addresses`` in blocks ``first..last`` as ``ingest`` publishes them:
    a recording of a chain (``partitions`` partitions of ``topic``, keyed by address)."""
    rpc = Rpc(rpc_url, timeout_s=60.0)
    logs = rpc.logs(first, last, addresses)
    blocks = {quantity(log["blockNumber"], "blockNumber") for log in logs} | {last}
    timestamps = {n: rpc.header(n).ts for n in sorted(blocks)}
    _, published = publish_range(
        Cursor(first), last, logs, {}, timestamps, rpc.chain_id(), 1, timestamps[last]
    )
    offsets = [0] * partitions
    out = []
    for p in published:
        keys = [p.key] if p.key else [marker_key(n, partitions) for n in range(partitions)]
        for key in keys:
            part = partition_of(key, partitions)
            out.append(RawMessage(topic, part, offsets[part], p.ts_ms, key.encode(), p.value))
            offsets[part] += 1
    return out


@dataclass
class _Progress:
    started: float
    blocks: int = 0
    logs: int = 0
    last_report: float = 0.0


class _ChainPartition(StatefulSourcePartition[Published, Cursor]):
    def __init__(
        self,
        rpc: Rpc,
        addresses: list[str],
        cfg: ChainConfig,
        chain_id: int,
        cursor: Cursor,
        to_block: int | None,
        already_written: Callable[[Published], bool],
    ):
        self.rpc = rpc
        self.addresses = addresses
        self.cfg = cfg
        self.chain_id = chain_id
        self.cursor = cursor
        self.to_block = to_block
        self.already_written = already_written
        self.size = cfg.max_range
        self.failures = 0
        self.awake: datetime | None = None
        self.timestamps: dict[int, int] = {}
        self.progress = _Progress(time.monotonic())
        self.prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eth_getLogs")
        self.prefetch: tuple[tuple[int, int], Future[tuple[list[dict[str, Any]], float]]] | None = (
            None
        )

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> Cursor:
        return self.cursor

    def close(self) -> None:
        self.prefetcher.shutdown(wait=False, cancel_futures=True)

    def next_batch(self) -> list[Published]:
        if self.to_block is not None and self.cursor.next_block > self.to_block:
            raise StopIteration
        self.awake = None
        step = f"blocks {self.cursor.next_block}.."
        try:
            out, kind = self._step()
            self.failures = 0
        except RpcError as exc:
            if exc.refused_range and self.size > self.cfg.min_range:
                self.size = next_range_size(
                    self.size, refused=True, seconds=0, cfg_min=self.cfg.min_range,
                    cfg_max=self.cfg.max_range,
                )  # fmt: skip
                log.info("node refused a range (%s); trying %d blocks", exc.error, self.size)
                return []
            self._back_off(f"{step}: {exc}")
            return []
        except (ChainError, AbiError) as exc:
            self._back_off(f"{step}: inconsistent or malformed answer: {exc}")
            return []
        except Exception as exc:  # network errors, timeouts: the node may come back
            self._back_off(f"{step}: {type(exc).__name__}: {exc}")
            return []
        kept = [p for p in out if not self.already_written(p)]
        for p in kept:
            metrics.INGEST_MESSAGES.labels(kind if p.key else "progress").inc()
        return kept

    def _back_off(self, what: str) -> None:
        metrics.INGEST_RPC_FAILURES.inc()
        self.failures += 1
        delay = min(_MAX_BACKOFF_S, 0.2 * 2**self.failures) * random.uniform(0.5, 1.0)
        log.warning(
            "RPC failed (attempt %d, retry in %.1f s) in %s: %s",
            self.failures, delay, self.rpc.last_call, what,
        )  # fmt: skip
        self.awake = datetime.now(UTC) + timedelta(seconds=delay)

    def _idle(self) -> None:
        self.awake = datetime.now(UTC) + timedelta(seconds=self.cfg.poll_interval_s)

    def _step(self) -> tuple[list[Published], str]:
        """The next messages, and what kind of logs they carry (``log`` or ``retraction``)."""
        head = self.rpc.head()
        fork = self._fork_point()
        if fork is not None:
            self.cursor, retracted = retract_after(self.cursor, fork)
            log.warning("reorg: blocks after %d replaced; %d logs retracted", fork, len(retracted))
            metrics.INGEST_REORGS.inc()
            return retracted, "retraction"

        safe = head - self.cfg.confirmations
        if self.to_block is not None:
            safe = min(safe, self.to_block)
        start = self.cursor.next_block
        metrics.INGEST_HEAD_LAG.set(head - start + 1)
        if start > safe:
            self._idle()
            return [], "log"
        end = min(safe, start + self.size - 1)
        logs, seconds = self._fetched(start, end)
        if end < safe:  # backfilling: fetch the next range while this one is published
            following = (end + 1, min(safe, end + self.size))
            self.prefetch = (following, self.prefetcher.submit(self._fetch, *following))
        tracked = range(max(start, head - self.cfg.reorg_depth + 1), end + 1)
        headers = {n: self.rpc.header(n) for n in tracked}
        check_range(headers, self.cursor)
        timestamps = self._timestamps(logs, headers)
        end_ts = headers[end].ts if end in headers else self._block_ts(end, timestamps)
        self.cursor, out = publish_range(
            self.cursor, end, logs, headers, timestamps, self.chain_id, self.cfg.reorg_depth,
            end_ts,
        )  # fmt: skip
        self.size = next_range_size(
            self.size, refused=False, seconds=seconds, cfg_min=self.cfg.min_range,
            cfg_max=self.cfg.max_range,
        )  # fmt: skip
        self._report(end - start + 1, len(out), head)
        return out, "log"

    def _fetch(self, start: int, end: int) -> tuple[list[dict[str, Any]], float]:
        """The logs of blocks ``start..end`` and the seconds the node took (any thread)."""
        began = time.monotonic()
        logs = Rpc(self.cfg.rpc_url, self.cfg.rpc_timeout_s).logs(start, end, self.addresses)
        return logs, time.monotonic() - began

    def _fetched(self, start: int, end: int) -> tuple[list[dict[str, Any]], float]:
        """The prefetched logs when they are for this range, else fetched now."""
        ready, self.prefetch = self.prefetch, None
        if ready is not None and ready[0] == (start, end):
            return ready[1].result()
        began = time.monotonic()
        logs = self.rpc.logs(start, end, self.addresses)
        return logs, time.monotonic() - began

    def _fork_point(self) -> int | None:
        """The last block both the node and the cursor agree on, if they disagree now."""
        if not self.cursor.recent:
            return None
        number = max(self.cursor.recent)
        if self.rpc.header(number).hash == self.cursor.recent[number][0]:
            return None
        while number in self.cursor.recent:
            number -= 1
            if number in self.cursor.recent and (
                self.rpc.header(number).hash == self.cursor.recent[number][0]
            ):
                return number
        log.error(
            "reorg deeper than the %d blocks kept; retracting all of them", len(self.cursor.recent)
        )
        return number

    def _timestamps(self, logs: list[dict[str, Any]], headers: dict[int, Header]) -> dict[int, int]:
        """Block times (s) for logs without ``blockTimestamp``, from cached headers."""
        for entry in logs:
            if entry.get("blockTimestamp") is None:
                number = quantity(entry["blockNumber"], "log blockNumber")
                if number not in headers and number not in self.timestamps:
                    self.timestamps[number] = self.rpc.header(number).ts
        if len(self.timestamps) > 10_000:
            self.timestamps.clear()
        return self.timestamps

    def _block_ts(self, number: int, timestamps: dict[int, int]) -> int:
        """Block ``number``'s time (s), from the cache or the node."""
        if number not in timestamps:
            timestamps[number] = self.rpc.header(number).ts
        return timestamps[number]

    def _report(self, blocks: int, logs: int, head: int) -> None:
        p = self.progress
        p.blocks += blocks
        p.logs += logs
        metrics.INGEST_BLOCKS.inc(blocks)
        metrics.INGEST_HEAD_LAG.set(head - self.cursor.next_block + 1)
        now = time.monotonic()
        if now - p.last_report >= 5.0:
            elapsed = max(now - p.started, 1e-9)
            log.info(
                "ingest: block %d, %.0f blocks/s, %.0f logs/s, %d behind head, range %d",
                self.cursor.next_block - 1, p.blocks / elapsed, p.logs / elapsed,
                head - self.cursor.next_block + 1, self.size,
            )  # fmt: skip
            p.last_report = now


class ChainSource(FixedPartitionedSource[Published, Cursor]):
    """Follows the node at ``cfg.rpc_url`` from ``from_block`` (a cold start) to
    ``to_block`` (``None``: forever). ``already_written(p)`` is asked, after a resume,
    whether the sink already holds message ``p``."""

    def __init__(
        self,
        cfg: ChainConfig,
        addresses: list[str],
        from_block: int | None,
        to_block: int | None,
        already_written: Callable[[], Callable[[Published], bool]],
    ):
        self.cfg = cfg
        self.addresses = addresses
        self.from_block = from_block
        self.to_block = to_block
        self.already_written = already_written

    def list_parts(self) -> list[str]:
        return ["chain"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Cursor | None
    ) -> _ChainPartition:
        rpc = Rpc(self.cfg.rpc_url, self.cfg.rpc_timeout_s)
        chain_id, head = probe(self.cfg.rpc_url, self.cfg.rpc_timeout_s)
        if self.cfg.chain_id and chain_id != self.cfg.chain_id:
            msg = (
                f"chain.chain_id is {self.cfg.chain_id} but the node at {self.cfg.rpc_url} "
                f"is chain {chain_id}"
            )
            raise ValueError(msg)
        if resume_state is not None:
            log.info("resuming at block %d (seq %d)", resume_state.next_block, resume_state.seq)
            cursor, skip = resume_state, self.already_written()
        else:
            start = (
                self.from_block
                if self.from_block is not None
                else max(0, head - self.cfg.backfill_blocks)
            )
            log.info("cold start at block %d (head %d, chain %d)", start, head, chain_id)
            cursor, skip = Cursor(start), (lambda p: False)
        return _ChainPartition(rpc, self.addresses, self.cfg, chain_id, cursor, self.to_block, skip)
