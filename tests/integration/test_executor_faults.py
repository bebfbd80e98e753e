"""The executor under faults, on the real Anvil: crashes at each failpoint, stuck, dropped and
reorged transactions, an outside transaction from the same key, the node going down, and
deadlines. Each test checks exactly-once from the chain alone (``ExecutorEnv.audit``) and
that every order reached a final state in ``executions/``.

Blocks are mined by the tests (automine off where a transaction must wait), so no test
depends on timing: a timeout only guards against a hang.
"""

from __future__ import annotations

import pytest

from connectors.anvil import RpcError, reorg, rpc
from connectors.failpoints import FAILPOINT_EXIT
from tests.integration.executor_env import (
    ExecutorEnv,
    MakeEnv,
    assert_exactly_once,
    mine_seen,
    wait_final,
    wait_for,
)

GWEI = 10**9


def states(env: ExecutorEnv, order_id: str) -> list[str]:
    return [e.state for e in env.states(order_id)]


def wait_state(env: ExecutorEnv, order_id: str, state: str, count: int = 1) -> None:
    wait_for(
        f"{order_id} {state} x{count}", lambda: states(env, order_id).count(state) >= count, env
    )


POINTS = ["after_sign", "after_persist", "after_send", "after_receipt"]


@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_each_failpoint_then_a_restart_mines_each_order_exactly_once(
    make_env: MakeEnv, point: str, nth: int
) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    orders = [env.order(n) for n in range(3)]
    ids = [o.order_id for o in orders]
    env.publish_orders(orders)

    crashed = env.start_executor(failpoint=f"{point}@{nth}")
    assert crashed.wait(60) == FAILPOINT_EXIT
    env.proc = None
    assert f"failpoint {point} reached (pass {nth})" in env.executor_log()
    env.start_executor()
    final = wait_final(env, ids)

    assert {i: final[i].state for i in ids} == dict.fromkeys(ids, "mined")
    assert_exactly_once(env, ids, executed=ids)
    assert len(env.signer_txs()) == len(ids)


def test_a_stuck_transaction_is_replaced_with_both_fees_raised_and_one_version_is_mined(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=2, max_replacements=3)
    env.publish_price()
    env.automine(False)
    env.start_executor()
    order = env.order(0)
    env.publish_orders([order])
    wait_state(env, order.order_id, "sent")
    sent = env.states(order.order_id)[0]
    assert sent.max_fee_per_gas_wei is not None and sent.max_priority_fee_per_gas_wei is not None
    original = env.attempts(order.order_id)[0].raw

    env.set_next_base_fee(4 * int(sent.max_fee_per_gas_wei))  # above the tx's max fee
    mine_seen(env)  # Anvil leaves it out, and drops it from its pool
    for _ in range(env.cfg.execution.replace_after_blocks):  # one block at a time, so the
        if len(env.attempts(order.order_id)) > 1:  # replacement is still waiting in the pool
            break
        mine_seen(env)
    wait_state(env, order.order_id, "replaced")
    replaced = env.states(order.order_id)[-1]
    assert replaced.state == "replaced"
    assert replaced.max_fee_per_gas_wei is not None
    assert replaced.max_priority_fee_per_gas_wei is not None
    assert int(replaced.max_fee_per_gas_wei) * 1000 >= int(sent.max_fee_per_gas_wei) * 1125
    assert (
        int(replaced.max_priority_fee_per_gas_wei) * 1000
        >= int(sent.max_priority_fee_per_gas_wei) * 1125
    )

    env.set_next_base_fee(1)  # both versions are now includable
    with pytest.raises(RpcError):  # the pool holds the replacement: the old one is underpriced
        rpc(env.url, "eth_sendRawTransaction", ["0x" + original.hex()])
    final = wait_final(env, [order.order_id])[order.order_id]

    assert final.state == "mined"
    assert final.tx_hash == replaced.tx_hash
    assert_exactly_once(env, [order.order_id], executed=[order.order_id])
    assert len(env.signer_txs()) == 1


@pytest.mark.parametrize("point", ["after_sign", "after_persist", "after_send"])
def test_a_crash_while_replacing_a_stuck_transaction_then_a_restart_mines_one_version(
    make_env: MakeEnv, point: str
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=2, max_replacements=3)
    env.publish_price()
    env.automine(False)
    crashing = env.start_executor(failpoint=f"{point}@2")  # the 2nd pass: the replacement
    order = env.order(0)
    env.publish_orders([order])
    wait_state(env, order.order_id, "sent")
    sent = env.states(order.order_id)[0]
    assert sent.max_fee_per_gas_wei is not None

    env.set_next_base_fee(8 * int(sent.max_fee_per_gas_wei))
    wait_for("the crash", lambda: crashing.poll() is not None, env, mine=True)
    assert crashing.wait() == FAILPOINT_EXIT
    env.proc = None
    env.start_executor()
    final = wait_final(env, [order.order_id])[order.order_id]

    assert final.state == "mined"
    assert_exactly_once(env, [order.order_id], executed=[order.order_id])
    assert len(env.signer_txs()) == 1


def test_a_dropped_transaction_is_broadcast_again_byte_for_byte_and_mined(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=50)
    env.publish_price()
    env.automine(False)
    env.start_executor()
    order = env.order(0)
    env.publish_orders([order])
    wait_state(env, order.order_id, "sent")
    sent = env.states(order.order_id)[0]
    assert sent.tx_hash is not None

    rpc(env.url, "anvil_dropTransaction", [sent.tx_hash])
    assert rpc(env.url, "eth_getTransactionByHash", [sent.tx_hash]) is None
    mine_seen(env)  # the executor sees the node lost it, and sends it again
    assert rpc(env.url, "eth_getTransactionByHash", [sent.tx_hash]) is not None
    final = wait_final(env, [order.order_id])[order.order_id]

    assert (final.state, final.tx_hash) == ("mined", sent.tx_hash)
    assert "replaced" not in states(env, order.order_id)
    assert f"the node lost {sent.tx_hash}" in env.executor_log()
    assert_exactly_once(env, [order.order_id], executed=[order.order_id])


def test_a_reorg_of_the_block_holding_a_transaction_sends_it_again_and_updates_its_outcome(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=3)
    env.publish_price()
    env.start_executor()
    order = env.order(0)
    env.publish_orders([order])
    wait_state(env, order.order_id, "mined")
    first = env.states(order.order_id)[-1]
    assert first.block_number == env.head_number()

    reorg(env.url, 1)  # the block holding it gets a new hash, without it
    wait_state(env, order.order_id, "sent", count=2)  # reported sent again
    wait_state(env, order.order_id, "mined", count=2)  # automine includes it again
    final = wait_final(env, [order.order_id])[order.order_id]

    assert states(env, order.order_id) == ["sent", "mined", "sent", "mined", "mined"]
    assert final.final and final.state == "mined"
    assert final.tx_hash == first.tx_hash
    assert final.block_hash != first.block_hash
    assert (
        final.block_hash == rpc(env.url, "eth_getTransactionReceipt", [final.tx_hash])["blockHash"]
    )
    assert "reorged out of block" in env.executor_log()
    assert_exactly_once(env, [order.order_id], executed=[order.order_id])


def _outside_tx(env: ExecutorEnv, **fields: str) -> str:
    """A 0-value transfer from the signer's key that the executor did not sign: Anvil holds
    the dev account unlocked (``eth_sendTransaction``)."""
    tx = {"from": env.signer, "to": env.signer, "value": "0x0", "gas": hex(21_000), **fields}
    tx_hash: str = rpc(env.url, "eth_sendTransaction", [tx])
    return tx_hash


@pytest.mark.parametrize("case", ["takes_the_next_nonce", "replaces_the_pending_transaction"])
def test_an_outside_transaction_from_the_same_key_is_a_conflict_that_halts_the_signer(
    make_env: MakeEnv, case: str
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=50)
    env.publish_price()
    order, later = env.order(0), env.order(1)
    env.start_executor()
    wait_for("the executor's state", lambda: env.store_value("head") is not None, env)
    if case == "takes_the_next_nonce":  # mined before the executor signs at that nonce
        _outside_tx(env)
        env.publish_orders([order])
        signed = 0  # the executor sees the nonce taken before it signs
    else:  # the same nonce with higher fees, while the executor's transaction waits
        env.automine(False)
        env.publish_orders([order])
        wait_state(env, order.order_id, "sent")
        sent = env.states(order.order_id)[0]
        assert sent.nonce is not None and sent.max_fee_per_gas_wei is not None
        _outside_tx(
            env,
            nonce=hex(sent.nonce),
            maxFeePerGas=hex(3 * int(sent.max_fee_per_gas_wei)),
            maxPriorityFeePerGas=hex(3 * int(sent.max_fee_per_gas_wei)),
        )
        signed = 1
    nonce_after = env.nonce("pending")
    conflict = wait_final(env, [order.order_id])[order.order_id]

    assert (conflict.state, conflict.code) == ("conflict", "nonce_conflict")
    assert "CONFLICT" in env.executor_log()
    assert env.store_value("trading_state") == "halted"
    env.publish_orders([later])
    denied = wait_final(env, [later.order_id])[later.order_id]
    assert (denied.state, denied.code) == ("denied", "halted")
    assert env.attempts(later.order_id) == []
    assert len(env.attempts(order.order_id)) == signed  # nothing more signed
    mine_seen(env, 2)
    assert env.nonce() == nonce_after
    assert [t.order_id for t in env.signer_txs()] == [None]  # only the outside transaction
    assert_exactly_once(env, [order.order_id, later.order_id], executed=[])


def test_the_node_going_down_backs_off_takes_no_nonce_then_catches_up(make_env: MakeEnv) -> None:
    env = make_env(confirmations=1)
    env.publish_price()
    orders = [env.order(n) for n in range(3)]
    ids = [o.order_id for o in orders]
    env.start_executor()
    env.publish_orders(orders[:1])
    wait_final(env, ids[:1])
    next_nonce = env.store_value("next_nonce")

    env.node.stop()  # Anvil writes its chain to its state file
    env.publish_orders(orders[1:])
    wait_for(
        "two backoffs",
        lambda: env.executor_log().count("cannot reach the node or the brokers") >= 2,
        env,
    )
    assert env.store_value("next_nonce") == next_nonce  # no nonce taken meanwhile
    assert all(states(env, i) == [] for i in ids[1:])
    env.node.start()
    final = wait_final(env, ids)

    assert {i: final[i].state for i in ids} == dict.fromkeys(ids, "mined")
    assert_exactly_once(env, ids, executed=ids)


def test_a_node_restart_that_lost_the_pool_has_the_transaction_sent_again_before_any_new_one(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=50)
    env.publish_price()
    first, second = env.order(0), env.order(1)
    env.automine(False)
    env.start_executor()
    env.publish_orders([first])
    wait_state(env, first.order_id, "sent")

    env.node.stop()  # the pool is not in the state file: the transaction is gone
    env.node.start()  # automine on again, the same head
    env.publish_orders([second])
    wait_for(
        "both mined by automine alone",
        lambda: all(states(env, o.order_id)[-1:] == ["mined"] for o in (first, second)),
        env,
    )
    sent = {o.order_id: env.states(o.order_id)[0] for o in (first, second)}
    final = wait_final(env, [first.order_id, second.order_id])

    assert {i: (e.state, e.tx_hash) for i, e in final.items()} == {
        i: ("mined", e.tx_hash) for i, e in sent.items()
    }
    ids = [first.order_id, second.order_id]
    assert_exactly_once(env, ids, executed=ids)


def test_an_order_past_its_deadline_while_stuck_is_cancelled_at_its_nonce_and_expired(
    make_env: MakeEnv,
) -> None:
    env = make_env(confirmations=1, replace_after_blocks=50)
    env.publish_price()
    env.automine(False)
    env.start_executor()
    order = env.order(0, valid_until_ms=env.head_ms() + 30_000)
    env.publish_orders([order])
    wait_state(env, order.order_id, "sent")
    sent = env.states(order.order_id)[0]
    assert sent.max_fee_per_gas_wei is not None
    original = env.attempts(order.order_id)[0].raw

    env.set_next_base_fee(4 * int(sent.max_fee_per_gas_wei))
    mine_seen(env)  # stuck: left out, and dropped by Anvil's pool
    mine_seen(env, timestamp=order.valid_until_ms // 1000 + 1)  # the deadline passes
    wait_state(env, order.order_id, "replaced")
    cancel = env.states(order.order_id)[-1]
    assert "cancel" in cancel.detail
    env.set_next_base_fee(1)
    final = wait_final(env, [order.order_id])[order.order_id]
    with pytest.raises(RpcError, match="nonce"):  # the nonce is spent: the order cannot run
        rpc(env.url, "eth_sendRawTransaction", ["0x" + original.hex()])

    assert (final.state, final.code, final.tx_hash) == ("expired", "expired", cancel.tx_hash)
    txs = env.signer_txs()
    assert [(t.nonce, t.order_id) for t in txs] == [(sent.nonce, None)]  # a self-transfer
    assert_exactly_once(env, [order.order_id], executed=[])
