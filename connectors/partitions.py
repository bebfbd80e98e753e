"""Which Kafka partition a message goes to, as our producers write them.

Messages are keyed (by contract address, quote source, ...) and partitioned by CRC-32 of
the key, which is librdkafka's "consistent" partitioner. A progress marker goes to every
partition, each under a key that lands it there.
"""

from __future__ import annotations

import functools
import itertools
import zlib


@functools.cache
def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 of it, as librdkafka's "consistent" partitioner."""
    return zlib.crc32(key.encode()) % partitions


@functools.cache
def marker_key(partition: int, partitions: int) -> str:
    """The key that puts a progress marker in ``partition`` (CRC-32 partitioning)."""
    return next(
        key for i in itertools.count()
        if partition_of(key := f"progress:{i}", partitions) == partition
    )  # fmt: skip
