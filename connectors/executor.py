"""The executor: orders from the ``orders`` topic become signed transactions, sent once.

One process per signing key. Per order (the steps of issue 9, DESIGN.md "Execution"):

1. take it from the topic: verify its HMAC tag (``operators.order_auth``; a bad one goes to
   the deadletter), skip denials and other signers' orders, drop an id already seen, and
   queue it; the queue entry and the topic offset commit together;
2. once the ``oracle.prices`` row it was computed from is read (the two topics are read
   apart, so an order can come first; it waits for its row until its deadline), run the
   pre-trade checks (``operators.pretrade``) and the trading state; a refusal is an
   ``Execution`` in state ``denied`` (or ``expired``) with its code;
3. decide its call (``_call_for``): the venue call (``operators.venue_calls``), or for a
   ``dex_hedge`` a ``SplitSwap.swap`` routed over the pair's pools at the head's state
   (``operators.swap_calls``); simulate it with ``eth_call``; a revert is ``reverted``
   with the reason, and nothing is signed;
4. in one database transaction: take the next nonce, sign, store the call, the raw
   transaction and its hash, and the ``sent`` outcome (the outbox); a replacement and the
   revert replay reuse the stored call;
5. broadcast the stored bytes.

Then, on every new head, each unfinished order is followed (``_follow``): a receipt is
recorded (``mined``/``reverted``, final once ``confirmations`` deep or finalized); a
nonce spent by a transaction that is not ours is a ``conflict`` that halts the signer; a
transaction the node forgot is broadcast again, byte for byte; one pending for
``replace_after_blocks`` is replaced with both fees raised (``operators.fees.bumped``);
past its deadline it is replaced by a 0-value self-transfer and the order ``expired``; a
block reorged out puts its transaction back to pending and broadcasts it again. After a
crash, the same following reconciles every attempt before anything new is signed. The
executor never signs a second transaction for a nonce it cannot account for.

Every outcome goes to the outbox in the transaction that caused it, and from there to
``fills`` (keyed by account), ``executions/`` and, for refused messages, the deadletter;
after each head the signer's progress (``ExecutionProgress``) goes to every ``fills``
partition.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from eth_account.signers.local import LocalAccount

from connectors import metrics
from connectors.anvil import RpcError as NodeError
from connectors.executor_chain import ChainClient, Head, Receipt
from connectors.executor_kafka import ExecutorKafka
from connectors.executor_store import Attempt, ExecutorStore, StoredOrder
from connectors.failpoints import failpoint
from connectors.parquet_sink import arrow_schema, write_day_files
from operators import oracle_topic
from operators.config import Config
from operators.fees import Fees, bumped, expected_gas_price, gwei_to_wei, suggest_fees
from operators.model import (
    Execution,
    ExecutionProgress,
    OraclePrice,
    Order,
    RawMessage,
    Rejected,
)
from operators.order_auth import AuthError, decode_verified
from operators.pretrade import Denial, OracleView, Pretrade, TradingState, awaits_oracle
from operators.swap_calls import (
    RouteDenial,
    SwapFill,
    SwapPlan,
    decode_fill,
    dex_pairs,
    plan_order,
    swap_calldata,
)
from operators.venue_calls import acts_for, venue_calldata

log = logging.getLogger("hedgeflow.executor")

STAGE = "executor"
CANCEL_GAS = 21_000
"""Gas of the 0-value self-transfer that cancels an expired order's transaction."""
MAX_BACKOFF_S = 10.0
PROGRESS_EVERY_S = 30.0
"""How often a running executor logs its progress line, wall-clock s."""
_EXECUTIONS = arrow_schema(Execution)
_REJECTS = arrow_schema(Rejected)
_order_decoder = msgspec.json.Decoder(Order)


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """The transaction that executes an order: to, data and gas limit; ``swap`` for a
    routed ``dex_hedge`` (its route, to read the fill from the receipt)."""

    to: str
    data: str
    gas: int
    swap: SwapPlan | None = None


class _Record(msgspec.Struct, frozen=True):
    record: str = ""


_record_decoder = msgspec.json.Decoder(_Record)


class Executor:
    """One signer's executor; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        *,
        cfg: Config,
        account: LocalAccount,
        store: ExecutorStore,
        chain: ChainClient,
        kafka: ExecutorKafka,
        fills_partitions: int,
        secret: bytes,
        out_dir: Path,
    ):
        self.cfg = cfg
        self.ex = cfg.execution
        self.account = account
        self.signer = account.address.lower()
        self.store = store
        self.chain = chain
        self.kafka = kafka
        self.fills_partitions = fills_partitions
        self.secret = secret
        self.out_dir = out_dir
        self.venue = cfg.risk.venue
        self.dex_pairs = dex_pairs(cfg)
        self.cap_wei = gwei_to_wei(self.ex.max_fee_gwei)
        saved = store.get("pretrade")
        self.pretrade = (
            Pretrade(self.ex)
            if saved is None
            else Pretrade.from_builtins(self.ex, msgspec.json.decode(saved))
        )
        self.oracle: dict[str, OracleView] = {
            asset: msgspec.json.decode(row, type=OracleView)
            for asset, row in store.oracle_rows().items()
        }
        self.now_ms = int(store.get("now_ms") or 0)
        self.head: Head | None = None
        self.finalized = -1
        self.progress_ms = -1
        self.counts: dict[str, int] = {}
        """Messages taken from ``orders`` by what became of them (the progress line)."""
        self.sent_ok = False
        """Whether this dispatch pass's latest broadcast was taken by the node."""
        self.waiting_nonce: int | None = None
        """The nonce the executor waits to sign at until the node holds every one below."""
        self.awaiting: set[str] = set()
        """The queued orders logged as waiting for their oracle row."""

    # the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Follow the chain and the topic until ``stop``; back off while the node or the
        brokers cannot be reached (no nonce is taken meanwhile). Logs its progress every
        ``PROGRESS_EVERY_S`` (wall clock)."""
        backoff = self.ex.poll_interval_s
        reported = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - reported >= PROGRESS_EVERY_S:
                reported = time.monotonic()
                self.log_progress()
            try:
                busy = self.step()
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning(
                    "cannot reach the node or the brokers (%s); retrying in %.1f s",
                    _short(exc),
                    backoff,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self.ex.poll_interval_s
            if not busy:
                stop.wait(self.ex.poll_interval_s)
        self.log_progress()

    def log_progress(self) -> None:
        """One line: the head, the orders by state, the messages refused or skipped."""
        head = "none yet" if self.head is None else str(self.head.number)
        log.info(
            "head %s, trading state %s; orders by state %s; messages %s",
            head, self.trading_state().value.upper(), dict(sorted(self.store.counts().items())),
            dict(sorted(self.counts.items())),
        )  # fmt: skip

    def step(self) -> bool:
        """One pass: a new head if any, the topic's new records, the queue, the outbox.
        True if it did anything."""
        head = self.chain.head()
        busy = False
        if self.head is None or head.hash != self.head.hash:
            self._on_head(head)
            busy = True
        messages = self.kafka.poll(0.0 if busy else min(self.ex.poll_interval_s, 0.2))
        if messages:
            self._take(messages)
            busy = True
        busy |= self._dispatch()
        self._flush()
        for (topic, partition), lag in self.kafka.lag().items():
            metrics.KAFKA_LAG.labels(topic, str(partition)).set(lag)
        return busy

    def trading_state(self) -> TradingState:
        return TradingState(self.store.get("trading_state") or TradingState.ACTIVE)

    # a new head: follow every unfinished order -----------------------------------------
    def _on_head(self, head: Head) -> None:
        self.head = head
        self.now_ms = max(self.now_ms, head.timestamp * 1000)
        self.finalized = self.chain.finalized()
        chain_nonce = self.chain.nonce(self.signer, "latest")  # before any receipt is read
        for stored in self.store.unfinished_orders():
            if stored.nonce is not None:
                self._follow(stored, head, chain_nonce)
        self._note_resume()
        trip = self.pretrade.trip(self.now_ms, self.oracle)
        if trip is not None and self.trading_state() != TradingState.HALTED:
            self._halt(*trip)
        with self.store.transaction():
            self.store.put("now_ms", str(self.now_ms))
            self.store.put("head", str(head.number))

    def _note_resume(self) -> None:
        """A signer seen HALTED and now not was resumed by hand (``--resume``, while the
        executor ran or not): the trip windows start afresh (``Pretrade.resume``), or what
        tripped it would trip it again at this head."""
        halted = self.trading_state() == TradingState.HALTED
        if halted == (self.store.get("halted_seen") == "1"):
            return
        with self.store.transaction():
            self.store.put("halted_seen", "1" if halted else "0")
            if not halted:
                self.pretrade.resume()
                self._save_pretrade()
        if not halted:
            log.info("resumed by hand: the error, gas and oracle trip windows start afresh")
            self._resync_nonce()

    def _resync_nonce(self) -> None:
        """After a resume, take the chain's pending nonce when it is ahead of the next
        nonce (an outside transaction took nonces while halted): the operator resumed with
        the conflict seen, and without this every new order would conflict again."""
        ahead = self.chain.nonce(self.signer, "pending")
        nonce = int(self.store.get("next_nonce") or 0)
        if ahead > nonce:
            log.warning("next nonce %d -> %d, the chain's pending nonce", nonce, ahead)
            with self.store.transaction():
                self.store.put("next_nonce", str(ahead))

    def _follow(self, stored: StoredOrder, head: Head, chain_nonce: int) -> None:
        """Follow one signed order at ``head``; ``chain_nonce`` is the signer's nonce at
        the head, read before any receipt: an order at or above it cannot have a receipt."""
        attempts = self.store.attempts(stored.order_id)
        mined = next((a for a in attempts if a.state == "mined"), None)
        if mined is not None:
            self._check_mined(stored, mined, head)
            return
        pending = [a for a in attempts if a.state == "pending"]
        if chain_nonce > (stored.nonce or 0):  # the nonce is spent: by one of ours, or not
            for a in reversed(pending):
                receipt = self.chain.receipt(a.tx_hash)
                if receipt is not None:
                    failpoint("after_receipt")
                    self._included(stored, a, attempts, receipt, head)
                    return
            self._conflict(
                stored,
                f"nonce {stored.nonce} was spent by a transaction that is not this executor's "
                f"(chain nonce {chain_nonce} at block {head.number})",
            )
            return
        latest = pending[-1]
        self._resend_if_lost(stored.order_id, latest)
        if self.trading_state() == TradingState.HALTED:
            return  # halted: nothing more is signed, replacements included
        order = _order_decoder.decode(stored.body)
        replacements = len(attempts) - 1
        if self.now_ms > order.valid_until_ms and not latest.cancel:
            self._replace(stored, order, latest, cancel=True, head=head)
        elif (
            head.number - latest.sent_block >= self.ex.replace_after_blocks
            and replacements < self.ex.max_replacements
        ):
            self._replace(stored, order, latest, cancel=latest.cancel, head=head)

    def _check_mined(self, stored: StoredOrder, a: Attempt, head: Head) -> None:
        assert a.block_number is not None
        if self.chain.block_hash(a.block_number) != a.block_hash:
            receipt = self.chain.receipt(a.tx_hash)
            if receipt is None:
                log.warning(
                    "order %s: block %d was reorged out; sending %s again",
                    stored.order_id, a.block_number, a.tx_hash,
                    extra={"order_id": stored.order_id, "tx_hash": a.tx_hash},
                )  # fmt: skip
                moved = msgspec.structs.replace(
                    a,
                    state="pending",
                    block_number=None,
                    block_hash=None,
                    status=None,
                    gas_used=None,
                    fee_paid_wei=None,
                    sent_block=head.number,
                )
                with self.store.transaction():
                    self.store.put_attempt(moved)
                    self._report(
                        stored,
                        "sent",
                        final=False,
                        attempt=moved,
                        detail=f"reorged out of block {a.block_number}; sent again",
                    )
                self._broadcast(moved)
                return
            with self.store.transaction():
                a = self._record_receipt(stored, a, receipt)
        depth = head.number - (a.block_number or 0)
        if depth >= self.ex.confirmations or (a.block_number or 0) <= self.finalized:
            detail = self._outcome_detail(stored, a)
            with self.store.transaction():
                self._report(stored, self._outcome(a), final=True, attempt=a, detail=detail)

    def _included(
        self, stored: StoredOrder, a: Attempt, attempts: list[Attempt], receipt: Receipt, head: Head
    ) -> None:
        with self.store.transaction():
            for other in attempts:
                if other.tx_hash != a.tx_hash and other.state == "pending":
                    self.store.put_attempt(msgspec.structs.replace(other, state="replaced"))
            a = self._record_receipt(stored, a, receipt)
            self.pretrade.record_fee(a.fee_paid_wei or 0, self.now_ms)
            if not a.cancel:
                self.pretrade.record_outcome(failed=a.status != 1)
            self._save_pretrade()
        self._check_mined(stored, a, head)

    def _record_receipt(self, stored: StoredOrder, a: Attempt, r: Receipt) -> Attempt:
        """Store a receipt and report the inclusion, not final yet (inside a transaction)."""
        a = msgspec.structs.replace(
            a, state="mined", block_number=r.block_number, block_hash=r.block_hash,
            status=r.status, gas_used=r.gas_used, fee_paid_wei=r.gas_used * r.effective_gas_price,
        )  # fmt: skip
        self.store.put_attempt(a)
        if a.status == 1 and not a.cancel:
            self._record_fill(stored, r)
        detail = self._outcome_detail(stored, a)
        self._report(stored, self._outcome(a), final=False, attempt=a, detail=detail)
        return a

    def _record_fill(self, stored: StoredOrder, r: Receipt) -> None:
        """A routed swap's fill from its receipt's logs, kept with the order (inside a
        transaction), so that every later report of it, after a restart too, says the same."""
        plan = self._stored_call(stored.order_id).swap
        if plan is None:
            return
        try:
            fill = decode_fill(
                r.logs, split_swap=self.ex.split_swap, order_id=stored.order_id,
                payer=self.signer, plan=plan,
            )  # fmt: skip
        except ValueError as exc:
            log.error(
                "order %s: its receipt does not show the fill: %s", stored.order_id, exc,
                extra={"order_id": stored.order_id},
            )  # fmt: skip
            self.store.put(f"fill:{stored.order_id}", "")
            return
        self.store.put(f"fill:{stored.order_id}", msgspec.json.encode(fill).decode())

    def _fill(self, order_id: str) -> SwapFill | None:
        """The routed swap's fill recorded from its receipt, if any."""
        saved = self.store.get(f"fill:{order_id}")
        return msgspec.json.decode(saved, type=SwapFill) if saved else None

    def _stored_call(self, order_id: str) -> Call:
        """The call signed for ``order_id`` (stored with its first transaction)."""
        saved = self.store.get(f"call:{order_id}")
        assert saved is not None, f"order {order_id} was signed without its call"
        return msgspec.json.decode(saved, type=Call)

    def _outcome_detail(self, stored: StoredOrder, a: Attempt) -> str:
        """An included transaction's detail: why it reverted (its call replayed at the
        block before), else its gas and block."""
        assert a.block_number is not None
        if a.status == 0 and not a.cancel:
            call = self._stored_call(stored.order_id)
            return self.chain.replay_reason(
                self.signer, call.to, call.data, call.gas, a.block_number
            )
        fill = self._fill(stored.order_id) if a.status == 1 and not a.cancel else None
        bought = "" if fill is None else f"; sold {fill.amount_in} for {fill.amount_out}"
        return f"{a.gas_used} gas in block {a.block_number}{bought}"

    def _resend_if_lost(self, order_id: str, a: Attempt) -> None:
        """Broadcast ``a``'s stored bytes again if the node does not hold it."""
        if not self.chain.knows(a.tx_hash):
            log.warning(
                "order %s: the node lost %s; sending the same bytes again", order_id, a.tx_hash,
                extra={"order_id": order_id, "tx_hash": a.tx_hash},
            )  # fmt: skip
            self._broadcast(a)

    def _nonce_gap(self, nonce: int) -> int:
        """Before signing at ``nonce``: how many of the signer's nonces below it the node
        holds no transaction for (> 0: wait), or minus how many at or above it it holds
        transactions for that this executor did not sign (< 0: a conflict). A transaction of
        ours the node lost is sent again first (a node restarted without its pool, or
        another node behind the same URL), so no transaction is signed behind a gap."""
        pending = self.chain.nonce(self.signer, "pending")
        if pending < nonce:
            for stored in self.store.unfinished_orders():
                if stored.nonce is None:
                    continue
                waiting = [a for a in self.store.attempts(stored.order_id) if a.state == "pending"]
                if waiting:
                    self._resend_if_lost(stored.order_id, waiting[-1])
            pending = self.chain.nonce(self.signer, "pending")
        return nonce - pending

    def _conflict(self, stored: StoredOrder, detail: str) -> None:
        log.error(
            "order %s: CONFLICT: %s; halting the signer", stored.order_id, detail,
            extra={"order_id": stored.order_id},
        )  # fmt: skip
        with self.store.transaction():
            self._report(stored, "conflict", final=True, code="nonce_conflict", detail=detail)
        self._halt("nonce_conflict", detail)

    # the queue ---------------------------------------------------------------------------
    def _take(self, messages: list[RawMessage]) -> None:
        """Queue the new orders of a poll, refuse the bad ones, keep the newest oracle rows;
        all with the offsets in one transaction."""
        topics = self.cfg.topics
        offsets: dict[str, int] = {}
        with self.store.transaction():
            for m in messages:
                offsets[f"{m.partition}-{m.topic}"] = m.offset + 1
                if m.topic == topics.oracle_prices:
                    self._oracle_row(m)
                elif m.topic == topics.orders:
                    self._order_message(m)
            for part, offset in offsets.items():
                self.store.put_offset(part, offset)
        self.kafka.commit(offsets)

    def _oracle_row(self, m: RawMessage) -> None:
        item = oracle_topic.decode(m)
        if not isinstance(item, OraclePrice):
            return  # progress; the oracle's junk is the risk stage's to deadletter
        view = OracleView(
            price=item.price,
            status="held" if item.held else item.status,
            window_end_ms=item.window_end_ms,
        )
        old = self.oracle.get(item.asset)
        if old is None or view.window_end_ms >= old.window_end_ms:
            self.oracle[item.asset] = view
            self.store.put_oracle_row(item.asset, msgspec.json.encode(view).decode())

    def _order_message(self, m: RawMessage) -> None:
        value = m.value or b""
        try:
            if _record_decoder.decode(value).record == "denial":
                return
        except msgspec.DecodeError:
            pass  # decode_verified says what is wrong with it
        try:
            order = decode_verified(value, self.secret)
        except AuthError as exc:
            self._count("refused_" + exc.code)
            log.warning("refused %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
            rejected = Rejected.of(STAGE, f"{exc.code}: {exc.detail}", m)
            self.store.add_outbox(
                self.cfg.topics.deadletter, STAGE.encode(), msgspec.json.encode(rejected)
            )
            return
        if not acts_for(order, self.signer, self.ex.liquidator):
            self._count("other_signers")
            return
        if self.store.order(order.order_id) is not None:
            self._count("duplicates")
            log.info(
                "order %s seen before: dropped", order.order_id, extra={"order_id": order.order_id}
            )
            return
        body = msgspec.json.encode(order).decode()
        self.store.put_order(
            StoredOrder(
                order_id=order.order_id, body=body, state="queued", final=False, seq=0, nonce=None
            )
        )
        self._count("orders")

    def _dispatch(self) -> bool:
        """Check, simulate, sign and send the queued orders while the signer has room. True
        if it reported or sent anything (an order waiting for room is no work)."""
        unfinished = self.store.unfinished_orders()
        queued = [s for s in unfinished if s.nonce is None]
        in_flight = sum(1 for s in unfinished if s.state in ("sent", "replaced"))
        metrics.PENDING.set(in_flight)
        self.kafka.hold_orders(in_flight + len(queued) >= self.ex.max_in_flight)
        if self.head is None or not queued:
            return False
        done = False
        fees: Fees | None = None  # one suggestion per pass
        self.sent_ok = False  # the node's pending nonce is read until a send of this pass lands
        for stored in queued:
            order = _order_decoder.decode(stored.body)
            previous = self._previous(order)
            if previous is not None and not previous.final:
                continue  # a re-send waits for the attempt it replaces to end
            if self._awaits_oracle(order):
                continue
            if order.kind == "dex_hedge" and in_flight >= self.ex.max_in_flight:
                break  # its route is read from the pools only when it can go out
            refusal = self._refusal(order, previous)
            if isinstance(refusal, Denial):
                state = "expired" if refusal.code == "expired" else "denied"
                with self.store.transaction():
                    self._report(
                        stored, state, final=True, code=refusal.code, detail=refusal.detail
                    )
                done = True
                continue
            if in_flight >= self.ex.max_in_flight:
                break
            call = refusal
            nonce = int(self.store.get("next_nonce") or 0)
            gap = 0 if self.sent_ok else self._nonce_gap(nonce)  # after a landed send: none
            metrics.NONCE_GAP.set(max(gap, 0))
            if gap < 0:
                self._conflict(
                    stored,
                    f"nonce {nonce} is taken: the node holds {nonce - gap} transactions of "
                    f"{self.signer} (pending), and this executor signed {nonce}",
                )
                done = True
                continue
            if gap > 0:
                if self.waiting_nonce != nonce:
                    log.warning(
                        "the node holds no transaction of %s for %d of the nonces below %d; "
                        "signing nothing new until it does",
                        self.signer,
                        gap,
                        nonce,
                    )
                    self.waiting_nonce = nonce
                return done
            done = True
            reason = self.chain.simulate(self.signer, call.to, call.data, call.gas)
            if reason is not None:
                with self.store.transaction():
                    self.pretrade.record_outcome(failed=True)
                    self._save_pretrade()
                    self._report(
                        stored, "reverted", final=True, code="simulation_reverted", detail=reason
                    )
                continue
            if fees is None:
                fees = self._suggested_fees()
            self._sign_and_send(stored, order, nonce, call, fees, cancel=False)
            in_flight += 1
        return done

    def _awaits_oracle(self, order: Order) -> bool:
        view = self.oracle.get(order.asset)
        if not awaits_oracle(order, view, self.now_ms):
            self.awaiting.discard(order.order_id)
            return False
        if order.order_id not in self.awaiting:
            self.awaiting.add(order.order_id)
            read = "none" if view is None else f"the window ending {view.window_end_ms}"
            log.info(
                "order %s waits for its %s row of the window ending %d (read so far: %s)",
                order.order_id, order.asset, order.oracle_window_end_ms, read,
                extra={"order_id": order.order_id},
            )  # fmt: skip
        return True

    def _refusal(self, order: Order, previous: StoredOrder | None) -> Denial | Call:
        """Why ``order`` may not go out now (the pre-trade checks, a mined attempt it
        replaces, a call that cannot be made), else its call."""
        denial = self.pretrade.check(
            order, self.trading_state(), self.oracle.get(order.asset), self.now_ms
        )
        if denial is not None:
            return denial
        if previous is not None and previous.state == "mined":
            detail = f"the attempt it replaces, {previous.order_id}, was mined"
            return Denial(code="superseded", detail=detail)
        return self._call_for(order)

    def _call_for(self, order: Order) -> Denial | Call:
        """The transaction that executes ``order``: the venue call, or for a ``dex_hedge``
        a ``SplitSwap.swap`` routed over the pair's pools at the head's state; else why
        none can be made."""
        if order.kind != "dex_hedge":
            try:
                return Call(to=self.venue, data=venue_calldata(order), gas=self.ex.gas_limit)
            except ValueError as exc:
                return Denial(code="invalid_order", detail=str(exc))
        if not self.ex.split_swap:
            detail = "execution.split_swap is not set: no contract to route DEX hedges through"
            return Denial(code=RouteDenial.NO_SPLIT_SWAP, detail=detail)
        pair = self.dex_pairs.get((order.account, order.asset))
        if pair is None:
            detail = f"risk.dex_hedges has no {order.asset} hedge for {order.account}"
            return Denial(code=RouteDenial.NO_DEX_HEDGE, detail=detail)
        if not pair.pools:
            detail = (
                f"no uniswap_v2/uniswap_v3 source in oracle.sources trades {pair.token} for "
                f"{pair.quote}"
            )
            return Denial(code=RouteDenial.NO_POOLS, detail=detail)
        assert self.head is not None
        try:
            states = self.chain.pool_states(pair.pools, self.head.number)
        except (NodeError, ValueError) as exc:
            detail = (
                f"reading the pools of {pair.token}/{pair.quote} at block {self.head.number}: {exc}"
            )
            return Denial(code=RouteDenial.POOL_STATE, detail=detail)
        history = self.chain.fee_history(
            self.ex.fee_history_blocks, self.ex.priority_fee_percentile
        )
        gas = self.oracle.get(self.ex.gas_asset)
        plan = plan_order(
            order, pair, states, self.ex.price_band_bps,
            gas_price_wei=expected_gas_price(history, self.cap_wei),
            gas_usd=gas.price if gas is not None and gas.status == "ok" else math.nan,
        )  # fmt: skip
        if isinstance(plan, Denial):
            return plan
        data = swap_calldata(order.order_id, plan)
        return Call(to=self.ex.split_swap, data=data, gas=self.ex.swap_gas_limit, swap=plan)

    def _suggested_fees(self) -> Fees:
        """EIP-1559 fees from the node's recent blocks, capped (``operators.fees``)."""
        history = self.chain.fee_history(
            self.ex.fee_history_blocks, self.ex.priority_fee_percentile
        )
        return suggest_fees(history, self.cap_wei)

    def _previous(self, order: Order) -> StoredOrder | None:
        """The earlier attempt a re-send replaces (``previous_order_id``), if this signer
        took it: a re-send runs only once it has ended unmined, so the two never both
        execute."""
        if order.previous_order_id is None:
            return None
        return self.store.order(order.previous_order_id)

    def _replace(
        self, stored: StoredOrder, order: Order, latest: Attempt, cancel: bool, head: Head
    ) -> None:
        if self.pretrade.rate_denial(self.now_ms) is not None:
            return  # replacements count against the submit rate: the next head tries again
        previous = Fees(
            max_fee_per_gas=latest.max_fee_per_gas,
            max_priority_fee_per_gas=latest.max_priority_fee_per_gas,
        )
        fees = bumped(previous, self._suggested_fees(), self.ex.fee_bump_ppm, self.cap_wei)
        if fees is None:
            log.warning(
                "order %s: cannot raise fees above the cap of %s gwei; waiting",
                stored.order_id, self.ex.max_fee_gwei, extra={"order_id": stored.order_id},
            )  # fmt: skip
            return
        assert latest.nonce is not None
        call = (
            Call(to=self.signer, data="0x", gas=CANCEL_GAS)
            if cancel
            else self._stored_call(stored.order_id)
        )
        self._sign_and_send(stored, order, latest.nonce, call, fees, cancel=cancel)

    def _sign_and_send(
        self,
        stored: StoredOrder,
        order: Order,
        nonce: int,
        call: Call,
        fees: Fees,
        cancel: bool,
    ) -> None:
        assert self.head is not None
        tx: dict[str, Any] = {
            "type": 2, "chainId": self.ex.chain_id, "nonce": nonce, "to": _checksum(call.to),
            "value": 0, "data": call.data, "gas": call.gas, "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        }  # fmt: skip
        signed = self.account.sign_transaction(tx)
        failpoint("after_sign")
        first = stored.nonce is None
        attempt = Attempt(
            tx_hash="0x" + signed.hash.hex().removeprefix("0x"), order_id=stored.order_id,
            nonce=nonce, raw=bytes(signed.raw_transaction), max_fee_per_gas=fees.max_fee_per_gas,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas, cancel=cancel, state="pending",
            sent_block=self.head.number,
        )  # fmt: skip
        with self.store.transaction():
            self.store.put_attempt(attempt)
            if first:
                self.store.put("next_nonce", str(nonce + 1))
                self.store.put(f"call:{stored.order_id}", msgspec.json.encode(call).decode())
                self.pretrade.record_submit(order, self.now_ms)
            else:
                self.pretrade.record_replacement(self.now_ms)
            self._save_pretrade()
            stored.nonce = nonce
            detail = "cancel: the deadline passed" if cancel else ""
            if first and call.swap is not None:
                detail = call.swap.describe()  # the route and the block of its state
            self._report(
                stored, "sent" if first else "replaced", final=False, attempt=attempt, detail=detail
            )
        failpoint("after_persist")
        self._broadcast(attempt)
        failpoint("after_send")

    def _broadcast(self, a: Attempt) -> bool:
        """Send ``a``'s stored bytes; whether the node took them."""
        refused = self.chain.send_raw(a.raw)
        if refused is not None:
            log.warning(
                "the node refused %s (nonce %d): %s; the next head tells what happened",
                a.tx_hash, a.nonce, refused, extra={"order_id": a.order_id, "tx_hash": a.tx_hash},
            )  # fmt: skip
        self.sent_ok = refused is None
        return self.sent_ok

    # outcomes ------------------------------------------------------------------------------
    def _outcome(self, a: Attempt) -> str:
        if a.cancel:
            return "expired"
        return "mined" if a.status == 1 else "reverted"

    def _report(
        self, stored: StoredOrder, state: str, *, final: bool, attempt: Attempt | None = None,
        code: str = "", detail: str = "",
    ) -> None:  # fmt: skip
        """Record a state change of ``stored`` and put it in the outbox (inside a transaction)."""
        order = _order_decoder.decode(stored.body)
        stored.state, stored.final, stored.seq = state, final, stored.seq + 1
        a = attempt
        fill = (
            self._fill(order.order_id)
            if state == "mined" and a is not None and not a.cancel
            else None
        )
        execution = Execution(
            order_id=order.order_id, seq=stored.seq, state=state, final=final,  # type: ignore[arg-type]
            account=order.account, kind=order.kind, instrument=order.instrument,
            signer=self.signer, ts_event_ms=self.now_ms,
            tx_hash=None if a is None else a.tx_hash, nonce=None if a is None else a.nonce,
            block_number=None if a is None else a.block_number,
            block_hash=None if a is None else a.block_hash,
            gas_used=None if a is None else a.gas_used,
            fee_paid_wei=None if a is None or a.fee_paid_wei is None else str(a.fee_paid_wei),
            max_fee_per_gas_wei=None if a is None else str(a.max_fee_per_gas),
            max_priority_fee_per_gas_wei=None if a is None else str(a.max_priority_fee_per_gas),
            code=code or (state if state in ("expired", "reverted") and a is not None else ""),
            detail=detail,
            token_in=None if fill is None else fill.token_in,
            amount_in=None if fill is None else str(fill.amount_in),
            token_out=None if fill is None else fill.token_out,
            amount_out=None if fill is None else str(fill.amount_out),
        )  # fmt: skip
        self.store.put_order(stored)
        self.store.add_outbox(
            self.cfg.topics.fills, order.account.encode(), msgspec.json.encode(execution)
        )
        log.info(
            "order %s: %s%s%s", order.order_id, state, " (final)" if final else "",
            f": {detail}" if detail else "",
            extra={"order_id": order.order_id, "tx_hash": None if a is None else a.tx_hash},
        )  # fmt: skip

    def _halt(self, code: str, detail: str) -> None:
        log.error(
            "trading state HALTED (%s): %s; resume with `hedgeflow execute --resume`", code, detail
        )
        with self.store.transaction():
            set_trading_state(self.store, TradingState.HALTED, f"{code}: {detail}")
            self.store.put("halted_seen", "1")

    def _flush(self) -> None:
        """Publish the outbox to Kafka and Parquet, then drop it; then the progress."""
        while rows := self.store.outbox():
            executions, rejects = [], []
            for _, topic, key, body in rows:
                self.kafka.produce(topic, key, body)
                if topic == self.cfg.topics.fills:
                    executions.append(msgspec.json.decode(body, type=Execution))
                else:
                    rejects.append(msgspec.json.decode(body, type=Rejected))
            self.kafka.flush()
            for execution in executions:  # counted once published
                metrics.count_execution(execution)
            for rejected in rejects:
                metrics.count_reject(rejected)
            name = f"signer-{self.signer}-{rows[0][0]:012d}"
            if executions:
                rows_out = [msgspec.structs.asdict(e) for e in executions]
                write_day_files(
                    self.out_dir / "executions", name, rows_out, _EXECUTIONS, "ts_event_ms"
                )
            if rejects:
                rows_out = [msgspec.structs.asdict(r) for r in rejects]
                write_day_files(
                    self.out_dir / "deadletter", name, rows_out, _REJECTS, "timestamp_ms"
                )
            with self.store.transaction():
                self.store.drop_outbox(rows[-1][0])
        through = self.now_ms - 1  # every change at an earlier time is on the topic
        if through > self.progress_ms:
            progress = msgspec.json.encode(
                ExecutionProgress(signer=self.signer, through_ms=through)
            )
            for p in range(self.fills_partitions):
                self.kafka.produce(
                    self.cfg.topics.fills, self.signer.encode(), progress, partition=p
                )
            self.kafka.flush()
            self.progress_ms = through

    def _save_pretrade(self) -> None:
        """Keep the pre-trade windows in the state file (inside a transaction)."""
        self.store.put("pretrade", msgspec.json.encode(self.pretrade.to_builtins()).decode())

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def set_trading_state(store: ExecutorStore, state: TradingState, reason: str) -> None:
    """Set the signer's trading state (inside a transaction); it holds across restarts."""
    store.put("trading_state", state.value)
    store.put("trading_reason", reason)


def _checksum(address: str) -> str:
    from web3 import Web3

    return Web3.to_checksum_address(address)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
