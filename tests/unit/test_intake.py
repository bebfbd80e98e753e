"""The intake's routing of the venue's events and option quotes to risk shards."""

from __future__ import annotations

import json

from operators import abi
from operators.accounts import shard_of
from operators.config import load_config
from operators.decode import Decoder
from operators.intake import IntakeParams, PartitionIntake
from operators.model import OptionQuote, RawBatch, RawMessage
from operators.registry import Registry
from operators.venue import Fill, InstrumentListed, VenueBatch

VENUE = "0x" + "77" * 20
ACCOUNT = "0x" + "ab" * 20
T0 = 1_700_000_040_000
CFG = load_config("")
DECODER = Decoder(Registry.from_config(CFG.oracle), "chain.logs", "dex.quotes")


def _params(venue: str | None) -> IntakeParams:
    return IntakeParams(60_000, 10_000, 3_600_000, ("ETH",), venue, 4)


def _venue_log(offset: int, ts_ms: int, topics: list[str], words: list[int]) -> RawMessage:
    log = {"address": VENUE, "topics": topics, "data": abi.encode_data(*words),
           "blockNumber": hex(offset + 1), "logIndex": "0x0", "blockTimestamp": hex(ts_ms // 1000),
           "blockHash": "0x" + "11" * 32}  # fmt: skip
    return RawMessage("chain.logs", 0, offset, ts_ms, VENUE.encode(), json.dumps(log).encode())


def _routed(out: list) -> dict[str, list]:
    return {key: batch.events for key, batch in (o for o in out if isinstance(o, tuple))
            if isinstance(batch, VenueBatch) and batch.events}  # fmt: skip


def test_listing_goes_to_every_shard_and_a_trade_to_its_account_shard() -> None:
    account_topic = abi.address_topic(ACCOUNT)
    instrument = "0x" + "22" * 32
    msgs = [
        _venue_log(0, T0, [abi.VENUE_INSTRUMENT_LISTED, instrument, account_topic], [1, 0, 0]),
        _venue_log(1, T0, [abi.VENUE_TRADE, account_topic, instrument], [10**18, 2 * 10**21]),
    ]
    out = PartitionIntake("0-chain.logs").on_batch(
        RawBatch("0-chain.logs", msgs), DECODER, _params(VENUE)
    )
    routed = _routed(out)
    shard = f"shard-{shard_of(ACCOUNT, 4)}"
    assert sorted(routed) == [f"shard-{i}" for i in range(4)]
    assert all(isinstance(events[0], InstrumentListed) for events in routed.values())
    assert [type(e) for e in routed[shard]] == [InstrumentListed, Fill]


def test_option_quotes_go_to_every_shard_only_when_the_risk_engine_runs() -> None:
    body = {"source": "q", "base": "ETH", "quote": "USD", "bid": "10", "ask": "11", "bid_size": "1",
            "ask_size": "1", "ts": T0, "instrument": "0x" + "22" * 32, "iv": "0.6"}  # fmt: skip
    msg = RawMessage("dex.quotes", 0, 0, T0, b"q", json.dumps(body).encode())
    with_venue = _routed(
        PartitionIntake("0-dex.quotes").on_batch(
            RawBatch("0-dex.quotes", [msg]), DECODER, _params(VENUE)
        )
    )
    assert len(with_venue) == 4 and all(isinstance(e[0], OptionQuote) for e in with_venue.values())
    intake = PartitionIntake("0-dex.quotes")
    assert _routed(intake.on_batch(RawBatch("0-dex.quotes", [msg]), DECODER, _params(None))) == {}
    assert intake.skipped == 1


def test_late_venue_event_takes_effect_at_the_partition_watermark() -> None:
    account_topic = abi.address_topic(ACCOUNT)
    deposit = [abi.VENUE_DEPOSIT, account_topic, account_topic]
    intake = PartitionIntake("0-chain.logs")
    intake.on_batch(
        RawBatch("0-chain.logs", [_venue_log(0, T0 + 600_000, deposit, [5])]),
        DECODER,
        _params(VENUE),
    )
    out = intake.on_batch(
        RawBatch("0-chain.logs", [_venue_log(1, T0, deposit, [7])]), DECODER, _params(VENUE)
    )
    (events,) = _routed(out).values()
    assert events[0].ts_ms == T0 + 600_000 - 10_000 + 1 and intake.late == 1


def test_progress_marker_moves_a_partition_watermark_without_any_log() -> None:
    marker = json.dumps({"progress": True, "blockNumber": "0x10", "blockTimestamp": hex(T0 // 1000),
                         "chainId": 1})  # fmt: skip
    msg = RawMessage("chain.logs", 1, 0, T0, None, marker.encode())
    intake = PartitionIntake("1-chain.logs")
    out = intake.on_batch(RawBatch("1-chain.logs", [msg]), DECODER, _params(None))
    assert intake.watermark_ms(_params(None)) == T0 - 10_000
    assert intake.rejected == 0 and any(isinstance(o, tuple) for o in out)  # markers to assets
