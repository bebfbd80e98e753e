"""Typed records that flow between stages.

Time convention: every ``*_ms`` field is an integer count of milliseconds since the
Unix epoch, in event time (block timestamp or quote ``ts``), never wall-clock time.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Int32 = Annotated[int, msgspec.Meta(extra={"arrow": "int32"})]
"""An int kept as a 32-bit Parquet column (``connectors.parquet_sink.arrow_schema``)."""


# Positional on purpose: built from recording rows and Kafka records, RawMessage(*row).
class RawMessage(msgspec.Struct, frozen=True, array_like=True):
    """One message as it sat on a topic: the recording row and the Kafka record alike."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class RawBatch(msgspec.Struct, frozen=True, array_like=True):
    """Consecutive messages of one input partition, in offset order.

    ``eof`` is true on the last batch of a finite input (replay, ``--until-end``);
    such a batch may be empty. ``caught_up`` says the partition had nothing more to read
    when the batch was taken (a Kafka partition at its high watermark; a recording never
    is): only such a partition may be set aside as idle (``operators.clock``). A Kafka
    partition that catches up without new messages sends an empty batch to say so.
    """

    part: str
    """The input partition, ``<partition>-<topic>`` (Bytewax's Kafka naming)."""
    messages: list[RawMessage]
    eof: bool = False
    caught_up: bool = False

    @property
    def topic(self) -> str:
        return self.part.split("-", 1)[1]

    @property
    def catching_up(self) -> bool:
        """An empty batch that has caught up: the source sends one only when its partition
        catches up without new messages, which every downstream key must hear (again,
        after a restart: ``operators.clock.Watermarks`` forgets who had caught up)."""
        return self.caught_up and not self.messages and not self.eof


class Observation(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One source's price for ``base`` in units of ``quote`` at ``ts_ms``.

    ``weight`` is the source's depth in ``quote`` units (how much it takes to move it),
    ``spread`` a half-width in ``quote`` units (0 for pools and feeds). ``seq`` orders
    observations of one source that share a timestamp (block * 2**20 + log index, or the
    message offset). ``obs_id`` identifies it for a ``removed`` retraction.
    """

    base: str
    quote: str
    source: str
    price: float
    weight: float
    spread: float
    ts_ms: int
    seq: int
    obs_id: str


class ChainProgress(msgspec.Struct, frozen=True):
    """A progress marker of ``chain.logs``: its partition has every log up to ``ts_ms``."""

    ts_ms: int


class OptionQuote(msgspec.Struct, frozen=True, kw_only=True):
    """A ``dex.quotes`` quote of an option ``instrument`` (the venue's id): its implied vol
    when quoted (per 1.00), its mid price (USD), at event time ``ts_ms``."""

    instrument: str
    iv: float | None
    mid: float
    ts_ms: int
    source: str


class Retraction(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A ``removed: true`` log: withdraw the observation ``obs_id`` seen at ``ts_ms``.

    ``late`` is set when its window had closed for its partition when it arrived: it then
    becomes a correction of the published price. ``origin`` is the message, for the
    deadletter should the observation be unknown.
    """

    base: str
    quote: str
    source: str
    ts_ms: int
    obs_id: str
    origin: RawMessage
    late: bool = False


class AssetBatch(msgspec.Struct, frozen=True, array_like=True):
    """What one input partition sends one asset: items and the partition's watermark.

    ``watermark_ms`` is the partition's newest event time less the allowed lateness;
    ``eof`` says the partition has ended and will send nothing more; ``broker_ms`` is the
    newest broker timestamp of its plausible messages (for idleness, ``operators.clock``).
    """

    part: str
    watermark_ms: int
    eof: bool
    items: list[Observation | Retraction]
    broker_ms: int = -1
    tick_watermark_ms: int = -1
    """Every tick at or before this time may be published as far as this partition goes: a
    ``chain.logs`` partition's last progress marker (or its watermark, when later), a
    quote partition's watermark (``operators.ticks``)."""
    blocks: list[int] = msgspec.field(default_factory=list)
    """The block times (ms) of the progress markers in the batch."""
    tick_seen_ms: list[int] = msgspec.field(default_factory=list)
    """Per item, the partition's tick watermark when it arrived: an observation at or
    before it is late for the ticks (its minute window still takes it), a retraction
    withdraws its observation from the ticks after it."""
    caught_up: bool = False
    """The partition's last batch found nothing more to read (``RawBatch.caught_up``)."""


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """A message that could not be used, with where it came from and why.

    ``reason`` is a code, a colon and the detail (``late: window ending ...``).
    """

    stage: str
    reason: str
    topic: str
    partition: Int32
    offset: int
    timestamp_ms: int
    key: bytes | None
    raw: bytes | None

    @classmethod
    def of(cls, stage: str, reason: str, msg: RawMessage) -> Rejected:
        """``msg`` rejected by ``stage`` for ``reason``, with its coordinates."""
        return cls(
            stage=stage,
            reason=reason,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            timestamp_ms=msg.timestamp_ms,
            key=msg.key,
            raw=msg.value,
        )


class OraclePrice(msgspec.Struct, frozen=True, kw_only=True):
    """The oracle's price for ``asset`` in USD over one event-time window.

    ``confidence`` is a half-width in USD (Pyth style). ``status`` is ``ok``, ``degraded``
    or ``stale``. ``held`` marks a jump held by the circuit breaker (the previous price is
    carried). ``revision`` is 0 for the first publication and counts corrections.
    ``cadence`` is ``window`` for a row of the fixed windows, ``tick`` for a row published
    at a block (or every ``oracle.cadence`` seconds) over the window trailing it: then
    ``window_end_ms`` is the tick's time (``operators.ticks``).
    """

    asset: str
    window_start_ms: int
    window_end_ms: int
    price: float
    confidence: float
    sources: Int32
    status: str
    held: bool
    revision: Int32
    cadence: str = "window"


class OracleProgress(msgspec.Struct, frozen=True):
    """The oracle has closed every window of ``asset`` ending at or before ``through_ms``:
    no row for those windows will follow (but for corrections). With ``cadence``
    ``tick``: every tick row of ``asset`` at or before ``through_ms`` has been published."""

    asset: str
    through_ms: int
    cadence: str = "window"


class PriceBatch(msgspec.Struct, frozen=True):
    """What the risk stage hears from the oracle: price rows and progress, in the order
    the oracle published them (a row of a window always before the progress past it)."""

    items: list[OraclePrice | OracleProgress]


class PartitionStats(msgspec.Struct, frozen=True, kw_only=True):
    """Cumulative counts for one input partition up to its newest event, ``ts_event_ms``."""

    part: str
    ts_event_ms: int
    messages: int
    observations: int
    retractions: int
    skipped: int
    rejected: int
    late: int


class AccountRiskRow(msgspec.Struct, frozen=True, kw_only=True):
    """An account at one evaluation: USD amounts; ``worst_scenario`` indexes the PMRM grid."""

    account: str
    ts_event_ms: int
    equity: float
    im: float
    mm: float
    health: float
    worst_scenario: Int32
    pnl: float
    """Mark-to-market P&L of the positions (realised and unrealised), USD."""
    bad_debt_usd: float
    """max(0, -equity): what closing everything at the marks cannot cover, USD."""
    margin_mode: str
    """``portfolio`` or ``standard``: which margin ``im`` and ``mm`` are."""
    greeks: str
    """JSON: underlying -> {delta (dV/dS, contracts), gamma (d2V/dS2, per USD), vega (per
    1.00 vol)}, the positions' sums of ``InstrumentRow``'s per-contract Greeks."""
    wallet: str = "{}"
    """JSON: asset -> the book's wallet holdings of the token it hedges that asset with on
    the DEX (``risk.dex_hedges``), units (delta 1 each: the book's delta in the asset is
    ``greeks``' plus this); ``{}`` for an account without DEX hedges."""


class InstrumentRow(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument at one evaluation: spot and value in USD, vol per 1.00 and its
    source, and raw Greeks per contract, those of ``operators.margin.InstrumentRisk``:
    delta = dV/dS and gamma = d2V/dS2 per unit of spot (not of the Black-76 forward, so
    they add up to the account's ``greeks`` at any rate), gamma per USD, vega per 1.00 vol,
    theta per year with the forward held fixed; spot and perps: delta 1, the rest 0."""

    instrument: str
    ts_event_ms: int
    underlying: str
    kind: Int32
    """An ``operators.units.InstrumentKind``."""
    strike: float
    expiry_years: float
    spot: float
    price: float
    vol: float
    vol_source: str
    delta: float
    gamma: float
    vega: float
    theta: float


class Order(msgspec.Struct, frozen=True, kw_only=True, tag="order", tag_field="record"):
    """One order leg for the execution sink; ``order_id`` is derived from its trigger: a
    ``bytes32`` as ``0x`` and 64 hex digits, the ``orderId`` the venue call carries and emits.

    On the ``orders`` topic the JSON carries ``"record": "order"`` (``OrderDenied``:
    ``"denial"``), so a consumer tells the two apart.
    """

    order_id: str
    kind: str
    """``liquidation`` or ``hedge`` (venue calls), or ``dex_hedge``: a book's spot hedge
    routed over the DEX pools (``RiskConfig.dex_hedges``); then ``instrument`` is the
    token's address, ``size`` the units of it to buy (> 0) or sell (< 0) and
    ``position`` the book's wallet holdings of it before the order."""
    account: str
    instrument: str
    size: float
    size_e18: str
    """The size on chain, 18 decimals, as a decimal string (it exceeds 64 bits): for a
    leg that closes its position, exactly the position negated (the float ``size`` would
    leave dust); else ``size`` rounded (``units.e18``)."""
    price: float
    oracle_price: float
    bonus_usd: float
    reason: str
    ts_event_ms: int
    health: float
    worst_scenario: Int32
    asset: str
    """The underlying's asset, whose ``oracle.prices`` row the executor's price band reads."""
    underlying_price: float
    """The asset's oracle price the order was computed from, USD: the executor checks it
    against the latest ``oracle.prices`` row (its price band) and sizes the notional with
    it (``oracle_price`` is the instrument's own value: an option's premium)."""
    oracle_window_end_ms: int
    """The window end of the ``oracle.prices`` row ``underlying_price`` is from, ms: the
    executor checks the order only once it has read that asset's row of this window or a
    later one (``operators.pretrade.awaits_oracle``)."""
    position: float
    """The account's position in ``instrument`` before this order (signed, units of the
    underlying): the order reduces risk when ``|position + size| < |position|``."""
    valid_until_ms: int
    """The order's deadline (``ts_event_ms`` + ``orders.valid_for_s``): past it, at the
    chain's head time, the executor cancels it and reports it ``expired``."""
    attempt: Int32 = 1
    """1 for a first order; a re-send after ``liquidation_timeout_s`` counts on."""
    previous_order_id: str | None = None
    """The leg of the previous attempt this one replaces (the same instrument's, else the
    previous attempt's first leg); None on a first attempt."""


class OrderDenied(msgspec.Struct, frozen=True, kw_only=True, tag="denial", tag_field="record"):
    """An order the risk engine decided not to send, and why (Nautilus's ``OrderDenied``).

    ``reason`` is a code: ``oracle_not_ok`` (a price the account's equity or margin depends
    on is not ``ok``, or is held), ``unpriced_position`` (a position in an instrument with
    no price), ``in_flight`` (an order of the same kind, for the same book, is not done
    yet), ``within_band`` (a hedge: the book's delta is inside its band) or
    ``no_hedge_instrument`` (the configured hedge instrument is not listed or priced);
    ``detail`` says more. A denial is emitted once per (account, kind, instrument) and
    reason, and again only after the condition has changed (an order went out, the reason
    changed, or the account stopped needing the order).
    """

    account: str
    kind: str
    """``liquidation`` or ``hedge``."""
    instrument: str
    """The hedge instrument; empty for a liquidation (its legs were not sized)."""
    size: float | None
    """The size the order would have had, when it was computed (a hedge's)."""
    reason: str
    detail: str
    ts_event_ms: int


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """An option position settled at expiry: it left the book, and ``cash_usd`` went to
    the account's cash. USD amounts; ``size`` in contracts (signed)."""

    account: str
    instrument: str
    ts_event_ms: int
    """The evaluation that settled it (the window end, ms)."""
    underlying: str
    kind: Int32
    strike: float
    expiry_ms: int
    size: float
    settlement_price: float
    """The oracle price of the underlying used, USD (the row of ``price_window_end_ms``)."""
    price_window_end_ms: int
    intrinsic: float
    """max(S - K, 0) for a call, max(K - S, 0) for a put, USD per contract."""
    value_usd: float
    """size x intrinsic."""
    cash_usd: float
    """size x intrinsic - the position's cost: the cash the account gets (its realised
    P&L on the position)."""


ExecutionState = Literal["sent", "replaced", "mined", "reverted", "denied", "expired", "conflict"]
"""The states of an order in the executor, in the order they can follow each other."""
FINAL_STATES: frozenset[str] = frozenset({"reverted", "denied", "expired", "conflict"})
"""States after which nothing more happens to an order; ``mined`` is final once ``final``."""


class Execution(msgspec.Struct, frozen=True, kw_only=True, tag="execution", tag_field="record"):
    """One state change of an order in the executor: the ``fills`` topic (keyed by
    account) and the Parquet dataset ``executions/``.

    ``state``: ``sent`` (a transaction was signed and broadcast; again after a reorg
    took it out), ``replaced`` (a transaction with higher fees, or a cancel, took the
    nonce's place), ``mined`` (included; ``final`` once ``execution.confirmations`` deep or
    finalized), ``reverted`` (included and failed, or its simulation reverted: then no
    transaction), ``denied`` (refused before signing: ``code`` and ``detail`` say why),
    ``expired`` (``valid_until_ms`` passed first) or ``conflict`` (another transaction
    spent the nonce; the signer halts). Wei amounts are decimal strings (they exceed
    64 bits).
    """

    order_id: str
    seq: Int32
    """The change's number for this order, from 1: consumers order and dedupe by it."""
    state: ExecutionState
    final: bool
    """Nothing more will happen to the order."""
    account: str
    kind: str
    instrument: str
    signer: str
    ts_event_ms: int
    """The chain's head time when the executor saw the change (block timestamp, ms)."""
    tx_hash: str | None = None
    nonce: int | None = None
    block_number: int | None = None
    block_hash: str | None = None
    gas_used: int | None = None
    fee_paid_wei: str | None = None
    """gas used x effective gas price, wei, for an included transaction."""
    max_fee_per_gas_wei: str | None = None
    max_priority_fee_per_gas_wei: str | None = None
    code: str = ""
    """Why, for ``denied``, ``reverted``, ``expired`` and ``conflict``: a short code."""
    detail: str = ""
    """The revert reason, or more words on the code."""
    token_in: str | None = None
    """For a mined ``dex_hedge``: the token sold (lower-case address)..."""
    amount_in: str | None = None
    """...the amount sold, raw units as a decimal string (the receipt's ``Swap`` logs)..."""
    token_out: str | None = None
    """...the token bought..."""
    amount_out: str | None = None
    """...and the amount bought, raw units as a decimal string."""


class ExecutionProgress(
    msgspec.Struct, frozen=True, kw_only=True, tag="progress", tag_field="record"
):
    """A signer's progress on ``fills``, sent to every partition: every state change it
    will report with ``ts_event_ms`` <= ``through_ms`` is on the topic before this."""

    signer: str
    through_ms: int
