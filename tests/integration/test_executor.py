"""The executor on the real Anvil and the real broker: orders become transactions once.

Every check of exactly-once reads the chain alone (``ExecutorEnv.audit``: no order id twice,
none unknown, the signer's nonces contiguous), plus the executor's record: every order
reached a final state in ``executions/``. The faults (crashes, stuck, dropped and reorged
transactions, conflicts, the node going down, deadlines) are in ``test_executor_faults.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec
from confluent_kafka import TopicPartition
from web3 import Web3

from connectors.anvil import rpc
from connectors.broker import EmbeddedBroker
from connectors.contracts import instrument_id
from connectors.executor import Executor
from connectors.executor_store import ExecutorStore
from connectors.kafka_clients import rd_consumer
from operators.order_auth import encode_signed
from tests.integration.executor_env import (
    SECRET,
    ExecutorEnv,
    MakeEnv,
    assert_exactly_once,
    mine_seen,
    wait_final,
    wait_for,
)


def test_orders_are_mined_once_each_and_fills_carries_what_executions_holds(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    orders = [env.order(n) for n in range(5)]
    ids = [o.order_id for o in orders]
    env.start_executor()
    env.publish_orders(orders)

    final = wait_final(env, ids)

    assert {i: final[i].state for i in ids} == dict.fromkeys(ids, "mined")
    assert_exactly_once(env, ids, executed=ids)
    assert len(env.signer_txs()) == len(ids)  # one transaction each
    assert all([a.state for a in env.attempts(i)] == ["mined"] for i in ids)
    through = max(e.ts_event_ms for e in final.values())

    def progressed() -> bool:
        _, progress = env.fills()
        return sorted(progress) == [0, 1] and all(
            max(p.through_ms for p in ps) >= through - 1 for ps in progress.values()
        )

    wait_for("progress past the last change on every fills partition", progressed, env)
    on_topic, progress = env.fills()
    key = lambda e: (e.order_id, e.seq)  # noqa: E731
    assert sorted(on_topic, key=key) == sorted(env.executions(), key=key)
    assert {p.signer for ps in progress.values() for p in ps} == {env.signer}


def test_an_order_delivered_twice_and_again_after_a_restart_is_one_transaction(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    a, b, c = (env.order(n) for n in range(3))
    env.start_executor()
    env.publish_orders([a, a, b])
    wait_final(env, [a.order_id, b.order_id])
    assert env.stop_executor() == 0

    env.start_executor()
    changed = msgspec.structs.replace(a, size=-2.0)  # the same id, validly signed, other size
    env.publish_orders([a, changed, c])
    wait_final(env, [c.order_id])

    ids = [a.order_id, b.order_id, c.order_id]
    assert_exactly_once(env, ids, executed=ids)
    assert len(env.attempts(a.order_id)) == 1
    assert [e.state for e in env.states(a.order_id)] == ["sent", "mined", "mined"]
    assert env.executor_log().count(f"order {a.order_id} seen before: dropped") == 3


def _raw_refusals(env: ExecutorEnv) -> dict[str, bytes]:
    """One message of each kind the executor must refuse, by the code it refuses it with."""
    forged = env.order(10)
    altered = env.order(11)
    unsigned = env.order(12)
    signed = encode_signed(altered, SECRET)
    tampered = signed.replace(b'"size":-1.0', b'"size":-100.0')
    assert tampered != signed
    return {
        "forged": encode_signed(forged, b"another secret of at least 32 bytes!!"),
        "altered": tampered,
        "unsigned": msgspec.json.encode(unsigned),
        "malformed": b'{"record":"order","order_id":7}',
    }


CODES = {"forged": "forged", "altered": "forged", "unsigned": "unsigned", "malformed": "malformed"}


def test_forged_unsigned_altered_and_malformed_orders_go_to_the_deadletter_unexecuted(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    raw = _raw_refusals(env)
    good = env.order(0)
    env.start_executor()
    env.publish_orders([], raw=list(raw.values()))
    env.publish_orders([good])
    wait_final(env, [good.order_id])
    wait_for("four deadletter rows", lambda: len(env.deadletter_rows()) == 4, env)

    where = {m.value: (m.partition, m.offset) for m in env.read_topic(env.topics.orders)}
    expected = sorted((CODES[kind], env.topics.orders, *where[v]) for kind, v in raw.items())
    on_topic = sorted(
        (r.reason.split(":")[0], r.topic, r.partition, r.offset) for r in env.deadletter()
    )
    rows = sorted(
        (r["reason"].split(":")[0], r["topic"], r["partition"], r["offset"])
        for r in env.deadletter_rows()
    )
    assert on_topic == expected
    assert rows == expected
    assert {r.raw for r in env.deadletter()} == set(raw.values())
    assert_exactly_once(env, [good.order_id], executed=[good.order_id])
    assert len(env.signer_txs()) == 1


def test_the_kill_switch_denies_orders_across_a_restart_until_resumed(make_env: MakeEnv) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    a, b, c = (env.order(n) for n in range(3))
    env.start_executor()
    halt = env.cli("--halt", "--reason", "test")
    assert halt.returncode == 0, halt.stderr
    assert "HALTED" in halt.stdout
    env.publish_orders([a])
    assert wait_final(env, [a.order_id])[a.order_id].code == "halted"

    assert env.stop_executor() == 0
    env.start_executor()
    env.publish_orders([b])
    denied = wait_final(env, [b.order_id])[b.order_id]
    assert (denied.state, denied.code) == ("denied", "halted")
    assert env.store_value("trading_state") == "halted"

    resume = env.cli("--resume")
    assert resume.returncode == 0, resume.stderr
    env.publish_orders([c])
    assert wait_final(env, [c.order_id])[c.order_id].state == "mined"

    ids = [a.order_id, b.order_id, c.order_id]
    assert_exactly_once(env, ids, executed=[c.order_id])
    assert [a.state for a in env.attempts(a.order_id) + env.attempts(b.order_id)] == []


def test_an_order_is_checked_against_every_price_published_before_it_behind_any_backlog(
    make_env: MakeEnv,
) -> None:
    # an executor that was down: 20k older ETH rows wait on oracle.prices (several fetches
    # of the partition), then the current row, then the order made from it; read in
    # fetch order, the order would meet the older "stale" rows and be denied
    env = make_env(confirmations=1)
    backlog = [env.price_row(status="stale", age_ms=20_000 - n) for n in range(20_000)]
    env.publish_prices([*backlog, env.price_row()])
    order = env.order(0)
    env.publish_orders([order])
    env.start_executor()

    final = wait_final(env, [order.order_id])[order.order_id]
    assert final.state == "mined", (final, env.executor_log()[-3000:])
    assert_exactly_once(env, [order.order_id], executed=[order.order_id])


def test_an_order_for_an_unlisted_instrument_reverts_in_simulation_and_sends_nothing(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    unlisted = env.order(0, instrument=instrument_id(env.deployed.tokens["USDC"], 1, 0, 0))
    good = env.order(1)
    env.start_executor()
    env.publish_orders([unlisted, good])

    final = wait_final(env, [unlisted.order_id, good.order_id])

    reverted = final[unlisted.order_id]
    assert (reverted.state, reverted.code, reverted.detail) == (
        "reverted",
        "simulation_reverted",
        "MarginVenue: not listed",
    )
    assert reverted.tx_hash is None
    assert env.attempts(unlisted.order_id) == []
    assert_exactly_once(env, [unlisted.order_id, good.order_id], executed=[good.order_id])
    assert len(env.signer_txs()) == 1


def test_a_resume_after_an_error_rate_trip_holds_at_the_next_block_and_across_a_restart(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1, error_window=2, max_error_rate=0.5)
    env.publish_price()
    unlisted = instrument_id(env.deployed.tokens["USDC"], 1, 0, 0)
    bad = [env.order(n, instrument=unlisted) for n in range(4)]
    good = [env.order(n) for n in range(10, 12)]
    env.start_executor()
    env.publish_orders(bad[:2])
    wait_final(env, [o.order_id for o in bad[:2]])
    mine_seen(env)  # the trip is checked at each head
    assert env.store_value("trading_state") == "halted"
    assert (env.store_value("trading_reason") or "").startswith("error_rate: 2 of the last 2")

    assert env.cli("--resume").returncode == 0
    mine_seen(env)
    assert env.store_value("trading_state") == "active"
    env.publish_orders(good[:1])
    assert wait_final(env, [good[0].order_id])[good[0].order_id].state == "mined"

    env.publish_orders(bad[2:])  # trips again, and is resumed while the executor is down
    wait_final(env, [o.order_id for o in bad[2:]])
    mine_seen(env)
    assert env.store_value("trading_state") == "halted"
    assert env.stop_executor() == 0
    assert env.cli("--resume").returncode == 0
    env.start_executor()
    mine_seen(env)
    assert env.store_value("trading_state") == "active"
    env.publish_orders(good[1:])
    assert wait_final(env, [good[1].order_id])[good[1].order_id].state == "mined"

    ids = [o.order_id for o in bad + good]
    assert_exactly_once(env, ids, executed=[o.order_id for o in good])


def test_an_order_waiting_for_room_in_flight_leaves_the_executor_idle(make_env: MakeEnv) -> None:
    env = make_env(max_in_flight=1, replace_after_blocks=50)
    env.publish_price()
    env.automine(False)
    first, second = env.order(0), env.order(1)
    env.publish_orders([first, second])
    executor = env.executor_in_process()

    def taken() -> bool:
        return (
            bool(env.attempts(first.order_id))
            and env.store_value("head") is not None
            and (executor.store.order(second.order_id) is not None)
        )

    for _ in range(200):  # a guard: each pass polls for at most 0.2 s
        if taken():
            break
        executor.step()
    assert taken()

    assert executor.step() is False  # the second order waits for room: no work, no spin
    assert env.attempts(second.order_id) == []
    env.mine()  # the first is mined: room for the second
    for _ in range(10):
        executor.step()
        if env.attempts(second.order_id):
            break
    assert [a.nonce for a in env.attempts(second.order_id)] == [env.first_nonce + 1]


def _steps_until(executor: Executor, done: Callable[[], bool], passes: int = 100) -> None:
    for _ in range(passes):  # a guard: each pass polls for at most 0.2 s
        if done():
            return
        executor.step()
    assert done()


def test_a_resend_waits_for_the_attempt_it_replaces_and_is_superseded_when_that_was_mined(
    make_env: MakeEnv,
) -> None:
    env = make_env(replace_after_blocks=50)
    env.publish_price()
    env.automine(False)
    first = env.order(0)
    resend = env.order(1, account=first.account, attempt=2, previous_order_id=first.order_id)
    env.publish_orders([first, resend])
    executor = env.executor_in_process()
    _steps_until(executor, lambda: bool(env.attempts(first.order_id)))
    _steps_until(executor, lambda: executor.store.order(resend.order_id) is not None)
    executor.step()
    assert env.attempts(resend.order_id) == []  # the first is unresolved: nothing signed
    env.mine(3)

    def final(order_id: str) -> bool:
        stored = executor.store.order(order_id)
        return stored is not None and stored.final

    _steps_until(executor, lambda: final(first.order_id) and final(resend.order_id))
    done = env.final([first.order_id, resend.order_id])
    assert done[first.order_id].state == "mined"
    assert (done[resend.order_id].state, done[resend.order_id].code) == ("denied", "superseded")
    assert_exactly_once(env, [first.order_id, resend.order_id], executed=[first.order_id])


def test_a_resend_of_an_attempt_that_ended_unmined_is_sent(make_env: MakeEnv) -> None:
    env = make_env()
    env.publish_price()
    first = env.order(0, instrument="0x" + "ee" * 32)  # not listed: its simulation reverts
    resend = env.order(1, account=first.account, attempt=2, previous_order_id=first.order_id)
    env.publish_orders([first, resend])
    env.start_executor()
    ids = [first.order_id, resend.order_id]
    final = wait_final(env, ids)
    assert (final[first.order_id].state, final[resend.order_id].state) == ("reverted", "mined")
    assert_exactly_once(env, ids, executed=[resend.order_id])


def test_in_group_mode_orders_are_mined_once_and_the_group_holds_the_offsets(
    make_env: MakeEnv, broker: EmbeddedBroker
) -> None:
    env = make_env()
    env.publish_price()
    first, second = env.order(0), env.order(1)
    env.publish_orders([first, second, first])
    group = f"executor-{env.signer}-{uuid.uuid4().hex[:6]}"
    env.start_executor(None, "--group", group)
    ids = [first.order_id, second.order_id]
    wait_final(env, ids, timeout_s=120)  # joining a group on Tansu takes about 20 s
    assert_exactly_once(env, ids, executed=ids)
    assert env.stop_executor() == 0
    consumer = rd_consumer(broker.connection, {"group.id": group})
    committed = consumer.committed([TopicPartition(env.topics.orders, p) for p in (0, 1)], 30)
    consumer.close()
    stored = ExecutorStore(env.out / "executor" / f"{env.signer}.sqlite").offsets()
    assert {f"{tp.partition}-{tp.topic}": tp.offset for tp in committed if tp.offset >= 0} == {
        part: offset for part, offset in stored.items() if part.endswith(env.topics.orders)
    }


def test_a_liquidation_that_reverts_on_chain_is_final_reverted_with_the_revert_reason(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=50)
    env.publish_price()
    env.automine(False)
    order = env.order(0)
    env.publish_orders([order])
    executor = env.executor_in_process()
    _steps_until(executor, lambda: bool(env.attempts(order.order_id)))  # simulated, sent
    # Ahead of it in the block, with a higher tip: the owner revokes the liquidator role.
    revoke = env.venue.encode_abi("setLiquidator", [Web3.to_checksum_address(env.signer), False])
    tx = {"from": env.deployed.deployer, "to": env.venue.address, "data": revoke,
          "gas": hex(100_000), "maxPriorityFeePerGas": hex(50 * 10**9),
          "maxFeePerGas": hex(100 * 10**9)}  # fmt: skip
    rpc(env.url, "eth_sendTransaction", [tx])
    env.mine(2)

    def final() -> bool:
        stored = executor.store.order(order.order_id)
        return stored is not None and stored.final

    _steps_until(executor, final)
    (done,) = env.final([order.order_id]).values()
    assert (done.state, done.code, done.detail) == (
        "reverted",
        "reverted",
        "MarginVenue: not a liquidator",
    )
    assert done.gas_used is not None and int(done.fee_paid_wei or 0) > 0
    assert_exactly_once(env, [order.order_id], executed=[])
