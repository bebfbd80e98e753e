"""The oracle's intake: progress markers, lateness as a field, option quotes skipped."""

from __future__ import annotations

import json

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


def test_implausible_quote_is_rejected_but_not_counted_as_late() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    out = _on(intake, _quote(0, T0), _quote(1, T0 + 7_200_000))
    (rejected,) = out.rejects
    assert rejected.reason.startswith("invalid_ts:") and (intake.late, intake.rejected) == (0, 1)


def test_option_quotes_are_not_the_oracles_and_are_skipped() -> None:
    intake = PartitionIntake(part="0-dex.quotes")
    out = _on(intake, _quote(0, T0, instrument="0x" + "22" * 32))
    assert all(batch.items == [] for _, batch in out.batches) and intake.skipped == 1


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
