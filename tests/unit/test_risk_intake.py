"""The risk stage's intake: venue events to account shards, option quotes and the oracle's
prices to every shard, one clock per partition."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import abi, fills_topic, oracle_topic, risk_intake
from operators.accounts import shard_keys, shard_of
from operators.model import (
    Execution,
    ExecutionProgress,
    OptionQuote,
    OraclePrice,
    OracleProgress,
    RawBatch,
    RawMessage,
)
from operators.risk_intake import RiskIntake, RiskIntakeParams
from operators.venue import Fill, InstrumentListed

VENUE = "0x" + "77" * 20
ACCOUNT = "0x" + "ab" * 20
T0 = 1_700_000_040_000
PARAMS = RiskIntakeParams(
    venue=VENUE, shards=4, window_ms=60_000, lateness_ms=10_000, max_future_ms=60_000,
    max_quote_delay_ms=600_000,
    chain_logs="chain.logs", dex_quotes="dex.quotes", oracle_prices="oracle.prices", fills="fills",
)  # fmt: skip
ACCOUNT_TOPIC = abi.address_topic(ACCOUNT)
DEPOSIT = [abi.VENUE_DEPOSIT, ACCOUNT_TOPIC, ACCOUNT_TOPIC]


def _venue_log(offset: int, ts_ms: int, topics: list[str], words: list[int]) -> RawMessage:
    log = {"address": VENUE, "topics": topics, "data": abi.encode_data(*words),
           "blockNumber": hex(offset + 1), "logIndex": "0x0", "blockTimestamp": hex(ts_ms // 1000),
           "blockHash": "0x" + "11" * 32}  # fmt: skip
    return RawMessage("chain.logs", 0, offset, ts_ms, VENUE.encode(), json.dumps(log).encode())


def _routed(intake: RiskIntake, *msgs: RawMessage) -> dict[str, list]:
    out = intake.on_batch(RawBatch(intake.part, list(msgs)), PARAMS)
    return {shard: batch.events for shard, batch in out.venue if batch.events}


def test_listing_goes_to_every_shard_and_a_trade_to_its_account_shard() -> None:
    instrument = "0x" + "22" * 32
    routed = _routed(
        RiskIntake("0-chain.logs"),
        _venue_log(0, T0, [abi.VENUE_INSTRUMENT_LISTED, instrument, ACCOUNT_TOPIC], [1, 0, 0]),
        _venue_log(1, T0, [abi.VENUE_TRADE, ACCOUNT_TOPIC, instrument], [10**18, 2 * 10**21, 0]),
    )
    assert sorted(routed) == list(shard_keys(4))
    assert all(isinstance(events[0], InstrumentListed) for events in routed.values())
    assert [type(e) for e in routed[shard_of(ACCOUNT, 4)]] == [InstrumentListed, Fill]


def test_option_quote_goes_to_every_shard_and_a_plain_quote_moves_the_clock() -> None:
    body = {"source": "q", "base": "ETH", "quote": "USD", "bid": "10", "ask": "11", "bid_size": "1",
            "ask_size": "1", "ts": T0}  # fmt: skip
    option = body | {"instrument": "0x" + "22" * 32, "iv": "0.6"}
    intake = RiskIntake("0-dex.quotes")
    routed = _routed(
        intake,
        RawMessage("dex.quotes", 0, 0, T0, b"q", json.dumps(option).encode()),
        RawMessage("dex.quotes", 0, 1, T0, b"q", json.dumps(body | {"ts": T0 + 5_000}).encode()),
    )
    assert len(routed) == 4 and all(isinstance(e[0], OptionQuote) for e in routed.values())
    assert intake.clock.newest_ms == T0 + 5_000


def test_late_venue_event_takes_effect_at_the_partition_watermark() -> None:
    intake = RiskIntake("0-chain.logs")
    _routed(intake, _venue_log(0, T0 + 600_000, DEPOSIT, [5]))
    (events,) = _routed(intake, _venue_log(1, T0, DEPOSIT, [7])).values()
    assert events[0].ts_ms == T0 + 600_000 - 10_000 + 1


def test_bad_venue_log_goes_to_the_deadletter_with_its_coordinates() -> None:
    msg = _venue_log(3, T0, [abi.VENUE_DEPOSIT, ACCOUNT_TOPIC], [5])  # one topic short
    out = RiskIntake("0-chain.logs").on_batch(RawBatch("0-chain.logs", [msg]), PARAMS)
    (rejected,) = out.rejects
    assert rejected.reason.startswith("bad_topics") and rejected.offset == 3


def test_implausible_log_time_does_not_move_the_clock() -> None:
    far = {"address": "0x" + "99" * 20, "blockTimestamp": hex(T0 // 1000 + 86_400)}
    near = far | {"blockTimestamp": hex(T0 // 1000)}
    intake = RiskIntake("0-chain.logs")
    _routed(intake, RawMessage("chain.logs", 0, 0, T0, None, json.dumps(near).encode()))
    _routed(intake, RawMessage("chain.logs", 0, 1, T0, None, json.dumps(far).encode()))
    assert intake.clock.newest_ms == T0


PRICES = st.integers(0, 2**40).flatmap(
    lambda start: st.builds(
        OraclePrice,
        asset=st.sampled_from(["ETH", "BTC"]),
        window_start_ms=st.just(start),
        window_end_ms=st.integers(start + 1, start + 2**30),
        price=st.floats(1e-6, 1e9),
        confidence=st.floats(0, 1e6),
        sources=st.integers(0, 20),
        status=st.sampled_from(["ok", "degraded", "stale"]),
        held=st.booleans(),
        revision=st.integers(0, 5),
    )
)
PROGRESS = st.builds(OracleProgress, st.sampled_from(["ETH", "BTC"]), st.integers(-1, 2**40))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(PRICES, PROGRESS), max_size=20), st.lists(st.binary(), max_size=3))
def test_oracle_topic_round_trips_in_order_and_rejects_the_rest(items, junk) -> None:
    msgs = [RawMessage("oracle.prices", 0, n, 0, b"ETH", oracle_topic.encode(i))
            for n, i in enumerate(items)]  # fmt: skip
    msgs += [RawMessage("oracle.prices", 0, len(msgs) + n, 0, b"x", b"{" + j) for n, j in
             enumerate(junk)]  # fmt: skip
    out = RiskIntake("0-oracle.prices").on_batch(RawBatch("0-oracle.prices", msgs), PARAMS)
    assert (out.prices.items if out.prices else []) == items and out.venue == []
    assert [r.offset for r in out.rejects] == [m.offset for m in msgs[len(items) :]]


def test_venue_deposit_two_hours_ahead_is_rejected_and_moves_nothing() -> None:
    intake = RiskIntake(part="0-chain.logs")
    ahead = msgspec.structs.replace(_venue_log(0, T0 + 7_200_000, DEPOSIT, [5]), timestamp_ms=T0)
    out = intake.on_batch(
        RawBatch("0-chain.logs", [ahead, _venue_log(1, T0, DEPOSIT, [7])]), PARAMS
    )
    (rejected,) = out.rejects
    assert rejected.stage == "venue" and rejected.reason.startswith("invalid_ts")
    assert intake.clock.newest_ms == T0
    assert [e.amount for _, b in out.venue for e in b.events] == [7]


def test_exception_while_handling_one_venue_log_is_an_internal_error_and_the_flow_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = risk_intake.decode_venue

    def buggy(msg: RawMessage, venue: str):
        if msg.offset == 1:
            raise IndexError("list index out of range")
        return real(msg, venue)

    monkeypatch.setattr(risk_intake, "decode_venue", buggy)
    intake = RiskIntake("0-chain.logs")
    msgs = [_venue_log(n, T0, DEPOSIT, [10**18]) for n in range(3)]
    out = intake.on_batch(RawBatch(intake.part, msgs), PARAMS)

    (rejected,) = out.rejects
    assert rejected.reason == "internal_error: IndexError: list index out of range"
    assert (rejected.stage, rejected.offset) == ("venue", 1)
    assert sum(len(b.events) for _, b in out.venue) == 2


def test_exception_while_decoding_one_oracle_price_is_an_internal_error_reject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def buggy(msg: RawMessage):
        raise OverflowError("int too large")

    monkeypatch.setattr(oracle_topic, "decode", buggy)
    msg = RawMessage("oracle.prices", 0, 4, 0, b"ETH", b"{}")
    out = RiskIntake("0-oracle.prices").on_batch(RawBatch("0-oracle.prices", [msg]), PARAMS)
    (rejected,) = out.rejects
    assert (rejected.stage, rejected.offset) == ("oracle_prices", 4)
    assert rejected.reason == "internal_error: OverflowError: int too large"


# --- fills: the executors' outcomes and progress ----------------------------------------

SIGNERS = ("0x" + "51" * 20, "0x" + "52" * 20)
FILLS_PARAMS = dataclasses.replace(PARAMS, signers=SIGNERS)


def _fills_msg(offset: int, item: Execution | ExecutionProgress, broker_ms: int = T0) -> RawMessage:
    return RawMessage("fills", 0, offset, broker_ms, ACCOUNT.encode(), fills_topic.encode(item))


def _outcome(ts_ms: int, signer: str = SIGNERS[0], state: str = "reverted") -> Execution:
    return Execution(
        order_id="0x" + "0f" * 32, seq=2, state=state, final=True, account=ACCOUNT,  # type: ignore[arg-type]
        kind="liquidation", instrument="0x" + "22" * 32, signer=signer, ts_event_ms=ts_ms,
    )  # fmt: skip


def _progress(signer: str, through_ms: int) -> ExecutionProgress:
    return ExecutionProgress(signer=signer, through_ms=through_ms)


def _fills(intake: RiskIntake, *msgs: RawMessage) -> risk_intake.RiskIntakeOut:
    return intake.on_batch(RawBatch(intake.part, list(msgs)), FILLS_PARAMS)


def test_an_outcome_goes_to_its_accounts_shard_and_progress_waits_for_every_signer() -> None:
    intake = RiskIntake("0-fills")
    out = _fills(intake, _fills_msg(0, _outcome(T0)), _fills_msg(1, _progress(SIGNERS[0], T0)))
    # one signer heard of two: the partition has not passed anything yet
    assert {b.watermark_ms for _, b in out.venue} == {-1}
    assert [(s, b.events) for s, b in out.venue if b.events] == [
        (shard_of(ACCOUNT, 4), [_outcome(T0)])
    ]
    out = _fills(intake, _fills_msg(2, _progress(SIGNERS[1], T0 + 90_000), T0 + 90_000))
    # both heard: the minimum of their progress, to every shard (a new window)
    assert [(s, b.watermark_ms) for s, b in out.venue] == [(s, T0) for s in shard_keys(4)]
    out = _fills(intake, _fills_msg(3, _progress(SIGNERS[0], T0 + 200_000), T0 + 200_000))
    assert {b.watermark_ms for _, b in out.venue} == {T0 + 90_000}


def test_an_outcome_behind_its_partitions_progress_takes_effect_after_it() -> None:
    intake = RiskIntake("0-fills")
    _fills(intake, *(_fills_msg(n, _progress(s, T0)) for n, s in enumerate(SIGNERS)))
    out = _fills(intake, _fills_msg(2, _outcome(T0 - 5_000)))
    ((_, batch),) = out.venue
    assert [e.ts_event_ms for e in batch.events] == [T0 + 1]


def test_fills_of_an_unconfigured_signer_or_an_implausible_time_go_to_the_deadletter() -> None:
    stranger = "0x" + "99" * 20
    intake = RiskIntake("0-fills")
    out = _fills(
        intake,
        _fills_msg(0, _outcome(T0, signer=stranger)),
        _fills_msg(1, _progress(stranger, T0)),
        _fills_msg(2, _progress(SIGNERS[0], T0 + 7_200_000)),  # 2 h past its broker
        _fills_msg(3, _outcome(T0 + 7_200_000)),
        RawMessage("fills", 0, 4, T0, None, b'{"record": "progress"'),
    )
    reasons = [(r.stage, r.offset, r.reason.split(":")[0]) for r in out.rejects]
    assert reasons == [
        ("fills", 0, "unknown_signer"), ("fills", 1, "unknown_signer"),
        ("fills", 2, "invalid_ts"), ("fills", 3, "invalid_ts"), ("fills", 4, "invalid_json"),
    ]  # fmt: skip
    assert [b.events for _, b in out.venue] == [[]] * 4  # the first report, nothing routed
    assert intake.signers == {} and intake.clock.broker_ms == -1


def test_exception_while_decoding_one_fill_is_an_internal_error_reject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def buggy(msg: RawMessage):
        raise OverflowError("int too large")

    monkeypatch.setattr(fills_topic, "decode", buggy)
    out = _fills(RiskIntake("0-fills"), _fills_msg(4, _outcome(T0)))
    (rejected,) = out.rejects
    assert (rejected.stage, rejected.offset) == ("fills", 4)
    assert rejected.reason == "internal_error: OverflowError: int too large"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SIGNERS), st.integers(0, 600_000)), max_size=12))
def test_a_fills_partitions_watermark_is_the_least_of_its_signers_progress_and_never_falls(
    progress: list[tuple[str, int]],
) -> None:
    intake = RiskIntake("0-fills")
    reported = -1
    for n, (signer, ahead) in enumerate(progress):
        out = _fills(intake, _fills_msg(n, _progress(signer, T0 + ahead), T0 + 600_000))
        for _, batch in out.venue:
            assert batch.watermark_ms >= reported
            reported = batch.watermark_ms
        latest: dict[str, int] = {}
        for s, a in progress[: n + 1]:
            latest[s] = max(latest.get(s, -1), T0 + a)
        expected = min(latest.values()) if len(latest) == len(SIGNERS) else -1
        assert intake.clock.watermark_ms(0) == expected
