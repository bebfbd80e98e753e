"""The fuzz layer's corpus, mutator and harness (shared by ``test_mutation.py`` and
``test_strategies.py`` through the ``fuzz`` fixture).

Corpus: the 681 real mainnet logs (``tests/resources``, their pools and feeds registered),
a generated recording (``flows.cli.generate``: pool and feed logs, quotes), and made-up
venue logs, option quotes, progress markers, ``oracle.prices`` messages and the executor's
``fills`` (an outcome and a progress record of a configured signer).

The harness runs messages, per input partition and in offset order, through the cores
exactly as the flows do: the oracle intake (``PartitionIntake.on_batch``) and the oracle
(``AssetOracle.on_batch``) for ``chain.logs`` and ``dex.quotes``; the risk intake
(``RiskIntake.on_batch``, which decodes the venue's logs) for those, ``oracle.prices`` and
``fills``.
It counts the exceptions that escape a core, the ones the per-message guard caught
(``internal_error`` rejects: a bug found all the same), and checks the deadletter: every
message the intake counts as rejected is there once, with its coordinates.
"""

from __future__ import annotations

import json
import random
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flows.cli.generate import FAULTS, GenerateParams, generate
from operators import abi, fills_topic, oracle_topic
from operators.config import load_config
from operators.intake import PartitionIntake
from operators.model import (
    AssetBatch,
    Execution,
    ExecutionProgress,
    OraclePrice,
    OracleProgress,
    RawBatch,
    RawMessage,
    Rejected,
)
from operators.oracle import AssetOracle
from operators.risk_intake import RiskIntake, RiskIntakeParams
from operators.stages import stage_params
from operators.venue import decode_venue

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
CHAIN_LOGS, DEX_QUOTES, ORACLE_PRICES, FILLS = "chain.logs", "dex.quotes", "oracle.prices", "fills"
SIGNER = "0x" + "51" * 20
VENUE = "0x" + "77" * 20
ACCOUNT = "0x" + "ab" * 20
UNDERLYING = "0x" + "c0" * 20
BATCH = 256
"""Messages per batch, as a source would poll them."""

# The mainnet fixture's pools and feeds, registered so that their logs decode in full.
MAINNET_SOURCES_TOML = """
[oracle.tokens.DAI]
decimals = 18
asset = "USD"

[[oracle.sources]]  # Uniswap V3 DAI/WETH 0.05%
address = "0x60594a405d53811d3bc4766596efd80fd545a270"
kind = "uniswap_v3"
token0 = "DAI"
token1 = "WETH"

[[oracle.sources]]  # Uniswap V3 USDC/USDT 0.01%
address = "0x3416cf6c708da44db2624d63ea0aaef7113527c6"
kind = "uniswap_v3"
token0 = "USDC"
token1 = "USDT"

[[oracle.sources]]
address = "0xbba12740de905707251525477bad74985dec46d2"
kind = "chainlink"
base = "FEED18"
quote = "USD"
decimals = 18

[[oracle.sources]]
address = "0x0ebdc65e7e9132cb41ac5cbd0101b799d7adb475"
kind = "chainlink"
base = "FEED8"
quote = "USD"
decimals = 8
"""


@dataclass(frozen=True)
class Seed:
    """A real or generated message: its topic, key and JSON value."""

    topic: str
    key: bytes | None
    value: Any
    marker: bool = False


def _venue_log(topics: list[str], words: list[int], block: int, ts_s: int) -> dict[str, Any]:
    return {
        "address": VENUE, "topics": topics, "data": abi.encode_data(*words),
        "blockNumber": hex(block), "logIndex": "0x0", "blockTimestamp": hex(ts_s),
        "blockHash": "0x" + format(block, "064x"), "removed": False,
    }  # fmt: skip


def _venue_seeds(ts_s: int) -> list[Seed]:
    account, token = abi.address_topic(ACCOUNT), abi.address_topic(UNDERLYING)
    perp, call = abi.int_topic(0xBEEF), abi.int_topic(0xCA11)
    e18 = 10**18
    logs = [
        _venue_log([abi.VENUE_INSTRUMENT_LISTED, perp, token], [1, 0, 0], 1, ts_s),
        _venue_log([abi.VENUE_INSTRUMENT_LISTED, call, token], [2, 2_000 * e18, ts_s + 1], 2, ts_s),
        _venue_log([abi.VENUE_DEPOSIT, account, token], [10_000 * e18], 3, ts_s),
        _venue_log([abi.VENUE_WITHDRAW, account, token], [1_000 * e18], 4, ts_s),
        _venue_log([abi.VENUE_TRADE, account, perp], [5 * e18, 1_850 * e18, 0], 5, ts_s),
        _venue_log([abi.VENUE_TRADE, account, call], [-2 * e18, 90 * e18, 0xC0FFEE], 6, ts_s),
        _venue_log(
            [abi.VENUE_LIQUIDATED, account, account, perp], [-e18, 1_800 * e18, 2**256 - 1], 7, ts_s
        ),
    ]
    return [Seed(CHAIN_LOGS, VENUE.encode(), log) for log in logs]


def _other_seeds(ts_s: int) -> list[Seed]:
    option = {
        "source": "deribit", "base": "ETH", "quote": "USD", "bid": "85.5", "ask": "90.25",
        "bid_size": "3", "ask_size": "4", "ts": ts_s * 1000, "instrument": abi.int_topic(0xCA11),
        "iv": "0.65",
    }  # fmt: skip
    price = OraclePrice(
        asset="ETH", window_start_ms=ts_s * 1000 - 60_000, window_end_ms=ts_s * 1000,
        price=1_850.25, confidence=1.5, sources=3, status="ok", held=False, revision=0,
    )  # fmt: skip
    prices = [oracle_topic.encode(price), oracle_topic.encode(OracleProgress("ETH", ts_s * 1000))]
    reverted = Execution(
        order_id="0x" + "0d" * 32, seq=3, state="reverted", final=True, account=ACCOUNT,
        kind="liquidation", instrument=abi.int_topic(0xCA11), signer=SIGNER,
        ts_event_ms=ts_s * 1000, tx_hash="0x" + "7a" * 32, nonce=4, block_number=17_000_000,
        block_hash="0x" + "b1" * 32, gas_used=30_000, fee_paid_wei=str(3 * 10**14),
        max_fee_per_gas_wei=str(2 * 10**10), max_priority_fee_per_gas_wei="1000000000",
        code="reverted", detail="MarginVenue: not listed",
    )  # fmt: skip
    fills = [fills_topic.encode(reverted), fills_topic.encode(
        ExecutionProgress(signer=SIGNER, through_ms=ts_s * 1000)
    )]  # fmt: skip
    return [
        *(Seed(FILLS, ACCOUNT.encode(), json.loads(f)) for f in fills),
        Seed(DEX_QUOTES, b"deribit", option),
        Seed(CHAIN_LOGS, b"progress:0", {"progress": True, "blockTimestamp": ts_s}, marker=True),
        *(Seed(ORACLE_PRICES, b"ETH", json.loads(p)) for p in prices),
    ]


def _json(value: bytes | None) -> Any:
    """A value as JSON, or as its bytes where it is none (the generator's faults)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def corpus() -> tuple[list[Seed], str]:
    """The seeds and the configuration (TOML) that registers their sources."""
    generated = generate(GenerateParams(seed=11, minutes=3, partitions=1, faults=FAULTS))
    lines = (RESOURCES / "mainnet_logs_17173049_17173050.jsonl").read_bytes().splitlines()
    seeds = [Seed(CHAIN_LOGS, None, json.loads(line)) for line in lines]
    seeds += [Seed(m.topic, m.key, _json(m.value)) for m in generated.messages]
    ts_s = 1_683_029_999
    seeds += _venue_seeds(ts_s) + _other_seeds(ts_s)
    toml = generated.config_toml + MAINNET_SOURCES_TOML + f'\n[risk]\nvenue = "{VENUE}"\n'
    toml += f'\n[execution]\nsigners = ["{SIGNER}"]\n'
    return seeds, toml


# --- mutations ---------------------------------------------------------------------------

NUMBERS: tuple[Any, ...] = (
    0, -1, 1, 2**31, 2**63, 2**64, 2**255, 2**256, -(2**255), 10**400,
    1e308, -1e308, 5e-324, 1.5, -0.0,
    "0", "-1", "0x", "0x0", "0xzz", "0x" + "f" * 64, "0x" + "f" * 80, "0X10",
    "NaN", "sNaN", "Infinity", "-Infinity", "9e999999", "1e400", "-1e400", "1e-400",
    "1e-999999", "0.0000000000001", "1e13", "", " 1", "1_000",
)  # fmt: skip
"""Adversarial numbers, as JSON numbers and as strings (quantities, decimals)."""
TIMESTAMPS_S: tuple[Any, ...] = (
    0, -1, 1_262_304_000, 1_956_528_000, 4_070_908_800, 2**63 // 1000, 2**63, 2**64, 2**256,
    "0x", "0xzz", 1.5,
)  # fmt: skip
"""Progress-marker times: unreadable, unrepresentable, and plausible-looking but far from
their message's broker timestamp (2010, 2032, 2099), which must move nothing."""
WORDS = (0, 1, 2**112, 2**128, 2**160 - 1, 2**160, 2**255 - 1, 2**255, 2**256 - 1)
"""ABI words at the edges of the widths the events declare."""
OTHERS: tuple[Any, ...] = (None, True, False, "x", "", [], {}, [1, 2], {"a": 1}, "\u00e9\u0000")
TOPIC0S = tuple(
    {**abi.V3_POOL_EVENTS, **abi.V2_PAIR_EVENTS, **abi.CHAINLINK_EVENTS, **abi.VENUE_EVENTS}
)
KEYS: tuple[bytes | None, ...] = (
    None, b"", b"progress:0", VENUE.encode(), b"0x" + b"00" * 20, b"\xff\xfe", b"ETH",
)  # fmt: skip
BYTES = b'{}[]",:0x-eE.\\ \x00\xff\xc3'


class Mutator:
    """Seeded mutations of the corpus: byte flips, insertions, deletions and truncation;
    field deletions, type swaps, huge, negative and NaN numbers, ABI words at the edges of
    their widths, other events' signatures, keys and ``removed`` flags."""

    def __init__(self, seeds: list[Seed], seed: int):
        self.seeds = seeds
        self.rng = random.Random(seed)

    def mutate(self, s: Seed) -> tuple[bytes | None, bytes | None]:
        """(key, value) of one mutation (one to three changes) of seed ``s``."""
        rng = self.rng
        key, value = s.key, _copy(s.value)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(10)
            if op == 0 and isinstance(value, dict) and value:
                del value[rng.choice(list(value))]
            elif op in (1, 2) and isinstance(value, dict) and value:
                name = rng.choice(list(value))
                if s.marker and name == "blockTimestamp":
                    value[name] = rng.choice(TIMESTAMPS_S)
                else:
                    value[name] = rng.choice(NUMBERS if op == 1 else OTHERS)
            elif op == 3 and isinstance(value, dict) and isinstance(value.get("data"), str):
                value["data"] = _mutate_data(rng, value["data"])
            elif op == 4 and isinstance(value, dict) and isinstance(value.get("topics"), list):
                topics = value["topics"]
                if topics and rng.random() < 0.5:
                    topics[0] = rng.choice(TOPIC0S)
                elif topics:
                    i = rng.randrange(len(topics))
                    topics[i] = abi.int_topic(rng.choice(WORDS))
                else:
                    topics.append(rng.choice(TOPIC0S))
            elif op == 5:
                key = rng.choice(KEYS)
            elif op == 6 and isinstance(value, dict):
                value["removed"] = not value.get("removed", False)
            elif op == 7 and isinstance(value, dict) and "progress" in value:
                value["progress"] = rng.choice((False, 1, "true", None))
            elif op == 8 and isinstance(value, dict) and isinstance(value.get("topics"), list):
                value["topics"] = value["topics"][: rng.randrange(len(value["topics"]) + 1)]
            elif op == 9:
                return key, _mutate_bytes(rng, _encode(value) or b"")
        return key, _encode(value)

    def messages(self, count: int) -> list[RawMessage]:
        """``count`` messages: each partition opens with a seed as it is (a partition's
        first event time is the event-time bound's case, issue 8 section 1), then
        mutations of seeds drawn by kind, at offsets in order and broker timestamps that
        are now and then out of any date range."""
        rng = self.rng
        kinds: dict[str, list[Seed]] = {}
        for s in self.seeds:
            kind = "marker" if s.marker else s.topic
            if s.topic == CHAIN_LOGS and s.key == VENUE.encode():
                kind = "venue"
            elif s.topic == DEX_QUOTES and isinstance(s.value, dict) and "instrument" in s.value:
                kind = "option"
            kinds.setdefault(kind, []).append(s)
        names = list(kinds)
        weights = [{"chain.logs": 40, "dex.quotes": 25, "venue": 20}.get(n, 5) for n in names]
        offsets: dict[tuple[str, int], int] = {}
        out: list[RawMessage] = []
        ts_ms = 1_683_028_800_000
        for n in range(count):
            s = rng.choice(kinds[rng.choices(names, weights)[0]])
            partition = rng.randrange(2) if s.topic == CHAIN_LOGS else 0
            offset = offsets.get((s.topic, partition), 0)
            offsets[(s.topic, partition)] = offset + 1
            key, value = (s.key, _encode(s.value)) if offset == 0 else self.mutate(s)
            broker_ms = ts_ms + n
            if rng.random() < 0.02:
                broker_ms = rng.choice((-1, 0, 2**63 - 1, -(2**63), broker_ms * 1000))
            out.append(RawMessage(s.topic, partition, offset, broker_ms, key, value))
        return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


def _encode(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return msgspec.json.encode(value)
    except (OverflowError, msgspec.EncodeError, UnicodeEncodeError):
        return json.dumps(value).encode()  # 10**400 and friends: Python's JSON writes them


def _mutate_data(rng: random.Random, data: str) -> str:
    words = (len(data) - 2) // 64
    if words <= 0 or rng.random() < 0.2:
        return data[: rng.randrange(len(data) + 1)]  # a short or empty data
    i = rng.randrange(words)
    word = format(rng.choice(WORDS) % 2**256, "064x")
    return data[: 2 + 64 * i] + word + data[2 + 64 * (i + 1) :]


def _mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:
            data.insert(rng.randrange(len(data) + 1), rng.choice(BYTES))
        elif op == 2 and data:
            del data[rng.randrange(len(data))]
        else:
            del data[rng.randrange(len(data) + 1) :]
    return bytes(data)


# --- the harness -------------------------------------------------------------------------


@dataclass
class Tally:
    """What a run saw. ``rejected`` counts the messages the intakes reject (their decoders
    and their event-time checks), ``found`` those of them in the deadletter, once each,
    with their coordinates."""

    messages: int = 0
    rejected: int = 0
    found: int = 0
    used: int = 0
    escaped: list[str] = field(default_factory=list)
    guarded: list[str] = field(default_factory=list)
    unaccounted: list[str] = field(default_factory=list)
    """Batches whose intake counts do not add up (a message neither used, skipped nor
    rejected, or a reject counted but not sent)."""
    deadletter: list[Rejected] = field(default_factory=list)

    @property
    def share_found(self) -> float:
        return 1.0 if self.rejected == 0 else self.found / self.rejected

    def summary(self) -> str:
        return (
            f"fuzz: {self.messages} messages, {len(self.escaped)} exceptions escaped, "
            f"{len(self.guarded)} caught by the per-message guard, {self.rejected} rejected, "
            f"{100 * self.share_found:.2f}% of them found in the deadletter"
        )


class Harness:
    """The cores of both stages, driven as the flows drive them (module docstring)."""

    def __init__(self, toml: str):
        self.params = stage_params(load_config(toml))
        assert self.params.risk_intake is not None
        self.risk_params: RiskIntakeParams = self.params.risk_intake

    def run(self, messages: Iterable[RawMessage], tally: Tally | None = None) -> Tally:
        """Run ``messages`` (each partition's in offset order) to the end of the input."""
        tally = Tally() if tally is None else tally
        parts: dict[str, list[RawMessage]] = {}
        for m in messages:
            parts.setdefault(f"{m.partition}-{m.topic}", []).append(m)
        tally.messages += sum(len(ms) for ms in parts.values())
        oracle_parts = tuple(p for p in parts if not p.endswith((ORACLE_PRICES, FILLS)))
        oracles = {a: AssetOracle(a, oracle_parts) for a in self.params.registry.assets}
        for part, msgs in parts.items():
            risk = RiskIntake(part)
            intake = PartitionIntake(part=part) if part in oracle_parts else None
            for start in range(0, len(msgs) + 1, BATCH):
                batch = RawBatch(part, msgs[start : start + BATCH], start + BATCH > len(msgs))
                self._risk(risk, batch, tally)
                if intake is not None:
                    for asset, asset_batch in self._intake(intake, batch, tally):
                        self._oracle(oracles[asset], asset_batch, tally)
        for oracle in oracles.values():  # partitions without data for an asset end too
            for part in oracle_parts:
                self._oracle(oracle, AssetBatch(part, -1, True, []), tally)
        return tally

    def _intake(
        self, intake: PartitionIntake, batch: RawBatch, tally: Tally
    ) -> list[tuple[str, AssetBatch]]:
        def counts() -> tuple[int, int, int, int, int]:
            i = intake
            return i.messages, i.observations, i.retractions, i.skipped, i.rejected

        before = counts()
        try:
            out = intake.on_batch(batch, self.params.decoder, self.params.intake)
        except Exception:
            tally.escaped.append(traceback.format_exc())
            return []
        messages, observations, retractions, skipped, rejected = (
            a - b for a, b in zip(counts(), before, strict=True)
        )
        tally.rejected += rejected
        tally.found += _found(batch, out.rejects, tally)
        tally.used += observations + retractions
        if len(out.rejects) != rejected or messages != (
            observations + retractions + skipped + rejected
        ):
            tally.unaccounted.append(f"{batch.part}: {counts()} after {before}")
        return out.batches

    def _oracle(self, oracle: AssetOracle, batch: AssetBatch, tally: Tally) -> None:
        try:
            out = oracle.on_batch(batch, self.params.oracle)
        except Exception:
            tally.escaped.append(traceback.format_exc())
            return
        tally.deadletter.extend(out.rejects)
        for row in out.prices:  # what the oracle publishes decodes as it was written
            assert oracle_topic.decode(_message(oracle_topic.encode(row))) == row

    def _risk(self, risk: RiskIntake, batch: RawBatch, tally: Tally) -> None:
        p = self.risk_params
        expected: set[tuple[str, int, int]] = set()  # the decoders' own verdicts
        for m in batch.messages:
            try:
                if batch.topic == p.oracle_prices:
                    alone: object = oracle_topic.decode(m)
                elif batch.topic == p.fills:
                    alone = fills_topic.decode(m)
                elif batch.topic == p.chain_logs and m.key == p.venue.encode():
                    alone = decode_venue(m, p.venue)
                else:
                    continue
            except Exception:
                tally.escaped.append(traceback.format_exc())
                continue
            if isinstance(alone, Rejected):
                expected.add((m.topic, m.partition, m.offset))
        try:
            out = risk.on_batch(batch, p)
        except Exception:
            tally.escaped.append(traceback.format_exc())
            return
        sent = {(r.topic, r.partition, r.offset) for r in out.rejects}
        tally.rejected += len(expected | sent)
        tally.found += _found(batch, out.rejects, tally)
        tally.used += sum(len(b.events) for _, b in out.venue)
        tally.used += len(out.prices.items) if out.prices else 0


def _found(batch: RawBatch, rejects: list[Rejected], tally: Tally) -> int:
    """How many of ``rejects`` carry the coordinates of a distinct message of ``batch``
    (and its key and value); record them, and guarded exceptions, in ``tally``."""
    coordinates = {(m.topic, m.partition, m.offset): m for m in batch.messages}
    seen: set[tuple[str, int, int]] = set()
    for r in rejects:
        tally.deadletter.append(r)
        if r.reason.startswith("internal_error: "):
            tally.guarded.append(r.reason)
        where = (r.topic, r.partition, r.offset)
        m = coordinates.get(where)
        if m is not None and where not in seen and (r.key, r.raw) == (m.key, m.value):
            seen.add(where)
    return len(seen)


def _message(value: bytes) -> RawMessage:
    return RawMessage(ORACLE_PRICES, 0, 0, 0, b"ETH", value)


@dataclass(frozen=True)
class Fuzz:
    """What the fuzz tests get: the corpus and a harness over its configuration."""

    seeds: list[Seed]
    harness: Harness

    def mutator(self, seed: int) -> Mutator:
        return Mutator(self.seeds, seed)

    @staticmethod
    def tally() -> Tally:
        return Tally()


@pytest.fixture(scope="session")
def fuzz() -> Fuzz:
    seeds, toml = corpus()
    return Fuzz(seeds, Harness(toml))
