"""The oracle's intake: progress markers, lateness as a field, option quotes skipped."""

from __future__ import annotations

import json
import pickle

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.clock import Watermarks
from operators.config import load_config
from operators.decode import Decoded, Decoder
from operators.intake import PartitionIntake
from operators.model import RawBatch, RawMessage
from operators.stages import stage_params

T0 = 1_700_000_040_000
PARAMS = stage_params(load_config(""))


def _quote(offset: int, ts: int, instrument: str | None = None) -> RawMessage:
    body = {"source": "q", "base": "WETH", "quote": "USDC", "bid": "10", "ask": "11",
            "bid_size": "1", "ask_size": "1", "ts": ts}  # fmt: skip
    if instrument is not None:
        body |= {"instrument": instrument, "iv": "0.6"}
    return RawMessage("dex.quotes", 0, offset, ts, b"q", json.dumps(body).encode())


def _on(intake: PartitionIntake, *msgs: RawMessage):
    return intake.on_batch(RawBatch(intake.part, list(msgs)), PARAMS.decoder, PARAMS.intake)


def test_progress_marker_moves_a_partition_watermark_without_any_log() -> None:
    marker = json.dumps({"progress": True, "blockNumber": "0x10", "blockTimestamp": hex(T0 // 1000),
                         "chainId": 1})  # fmt: skip
    msg = RawMessage("chain.logs", 1, 0, T0, None, marker.encode())
    intake = PartitionIntake(part="1-chain.logs")
    out = _on(intake, msg)
    assert intake.clock.watermark_ms(PARAMS.intake.lateness_ms) == T0 - 10_000
    assert intake.rejected == 0 and out.rejects == [] and out.batches  # markers to assets


def test_late_quote_is_rejected_and_counted_as_late() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    out = _on(intake, _quote(0, T0 + 600_000), _quote(1, T0))
    (rejected,) = out.rejects
    assert rejected.reason.startswith("late:") and (rejected.partition, rejected.offset) == (0, 1)
    assert (intake.late, intake.rejected, intake.observations) == (1, 1, 1)


def test_quote_after_a_two_hour_silence_is_accepted() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    out = _on(intake, _quote(0, T0), _quote(1, T0 + 7_200_000))
    assert out.rejects == [] and intake.observations == 2
    assert intake.clock.newest_ms == T0 + 7_200_000


def test_quote_dated_after_its_broker_timestamp_is_invalid_and_moves_nothing() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    ahead = _quote(1, T0 + 86_400_000)
    out = _on(intake, _quote(0, T0), msgspec.structs.replace(ahead, timestamp_ms=T0))
    (rejected,) = out.rejects
    assert rejected.reason.startswith("invalid_ts:") and (intake.late, intake.rejected) == (0, 1)
    assert intake.clock.newest_ms == T0


def test_quote_far_older_than_its_broker_timestamp_is_invalid() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    stale = msgspec.structs.replace(_quote(0, T0), timestamp_ms=T0 + 3_600_000)
    (rejected,) = _on(intake, stale).rejects
    assert "before its broker timestamp" in rejected.reason and intake.clock.newest_ms is None


def test_old_block_is_a_legal_backfill_but_a_marker_from_2099_moves_nothing() -> None:
    old_ts = 1_300_000_000_000  # 2011
    marker = {"progress": True, "blockNumber": "0x10", "chainId": 1}
    backfill = RawMessage("chain.logs", 1, 0, T0, None, json.dumps(
        marker | {"blockTimestamp": hex(old_ts // 1000)}).encode())  # fmt: skip
    future = RawMessage("chain.logs", 1, 1, T0, None, json.dumps(
        marker | {"blockTimestamp": hex(4_070_000_000)}).encode())  # fmt: skip
    huge = RawMessage("chain.logs", 1, 2, T0, None, json.dumps(
        marker | {"blockTimestamp": 2**300}).encode())  # fmt: skip
    intake = PartitionIntake(part="1-chain.logs")
    out = _on(intake, backfill, future, huge)
    assert intake.clock.newest_ms == old_ts
    assert [r.offset for r in out.rejects] == [1, 2]
    assert all(r.reason.startswith(("invalid_ts", "bad_quantity")) for r in out.rejects)


def test_option_quotes_are_not_the_oracles_and_are_skipped() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    out = _on(intake, _quote(0, T0, instrument="0x" + "22" * 32))
    assert all(batch.items == [] for _, batch in out.batches) and intake.skipped == 1


def test_a_first_quote_a_day_ahead_is_rejected_and_the_next_ones_are_not_late() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    ahead = msgspec.structs.replace(_quote(0, T0 + 86_400_000), timestamp_ms=T0)
    out = _on(intake, ahead, *(_quote(n, T0 + n * 5_000) for n in range(1, 5)))
    assert [r.offset for r in out.rejects] == [0] and intake.observations == 4


MESSAGES = st.lists(
    st.tuples(
        st.integers(-(2**62), 2**62) | st.integers(1_600_000_000_000, 1_800_000_000_000),
        st.integers(1_600_000_000_000, 1_800_000_000_000),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(MESSAGES)
def test_no_message_moves_the_watermark_past_what_its_broker_timestamp_allows(msgs) -> None:
    """Quotes and progress markers with any event and broker times, in any order."""
    intake = PartitionIntake(part="0-x")
    future = PARAMS.intake.max_future_ms
    raw = []
    for n, (ts, broker, marker) in enumerate(msgs):
        if marker:
            body = {"progress": True, "blockNumber": "0x1", "blockTimestamp": ts // 1000}
            raw.append(RawMessage("chain.logs", 0, n, broker, None, json.dumps(body).encode()))
        else:
            raw.append(msgspec.structs.replace(_quote(n, ts), offset=n, timestamp_ms=broker))
    out = _on(intake, *raw)
    newest = intake.clock.newest_ms
    moved = [m for m in raw if m.offset not in {r.offset for r in out.rejects}]
    assert newest is None or any(newest <= m.timestamp_ms + future for m in moved)
    assert len(out.rejects) + intake.observations + intake.skipped == len(raw)


class _Buggy(Decoder):
    """A decoder with a bug that one message (offset 1) trips."""

    def decode(self, msg: RawMessage) -> Decoded:
        if msg.offset == 1:
            raise ZeroDivisionError("float division by zero")
        return super().decode(msg)


def test_exception_while_decoding_one_message_is_an_internal_error_and_the_flow_goes_on() -> None:
    d = PARAMS.decoder
    buggy = _Buggy(d.registry, d.chain_logs_topic, d.dex_quotes_topic)
    intake = PartitionIntake(part="0-dex.quotes")
    msgs = [_quote(0, T0), _quote(1, T0), _quote(2, T0)]
    out = intake.on_batch(RawBatch(intake.part, msgs), buggy, PARAMS.intake)

    (rejected,) = out.rejects
    assert rejected.reason == "internal_error: ZeroDivisionError: float division by zero"
    assert (rejected.stage, rejected.offset, rejected.raw) == ("intake", 1, msgs[1].value)
    assert (intake.observations, intake.rejected, intake.messages) == (2, 1, 3)


def test_catching_up_reaches_every_asset_and_again_after_a_restart() -> None:
    """Whether a partition has caught up goes to every asset when it changes, and an empty
    caught-up batch (the source's word that it caught up without new messages) goes to
    every asset always: the oracle's watermarks forget it over a restart, the intake's
    state does not."""
    intake = PartitionIntake(part="0-dex.quotes")
    p, decoder = PARAMS.intake, PARAMS.decoder
    behind = intake.on_batch(RawBatch(intake.part, [_quote(0, T0)]), decoder, p)
    caught = intake.on_batch(RawBatch(intake.part, [], caught_up=True), decoder, p)
    assert {a for a, b in caught.batches if b.caught_up} == set(p.assets)
    assert all(not b.caught_up for _, b in behind.batches)
    restored = pickle.loads(pickle.dumps(intake))
    again = restored.on_batch(RawBatch(intake.part, [], caught_up=True), decoder, p)
    assert {a for a, b in again.batches if b.caught_up} == set(p.assets)
    watermarks = Watermarks(("0-dex.quotes",))
    watermarks.report("0-dex.quotes", T0, eof=False, broker_ms=T0, caught_up=True)
    assert pickle.loads(pickle.dumps(watermarks)).caught_up == set()
