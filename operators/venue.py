"""The reference venue's events (``infra/contracts/MarginVenue.sol``) as typed records.

Amounts stay exact integers: sizes and prices in 18 decimals (``*_e18``), token amounts
in the token's smallest unit. ``ts_ms`` is the block time in ms; ``seq`` orders events
(block * 2**20 + log index); ``removed`` marks a retraction after a reorg.

Every event is checked as strictly as an observation, by the rules the venue's contract
enforces and the bounds of ``operators.bounds``: a kind of ``InstrumentKind``; spot and
perps with no strike and no expiry, options with ``PRICE_MIN..PRICE_MAX`` USD of strike
and an expiry in 2009..2100; deposits and withdrawals of ``1..AMOUNT_MAX`` (uint128);
trades and liquidations of ``0 < |size| <= SIZE_MAX`` at ``PRICE_MIN..PRICE_MAX`` USD, with
any ``bytes32`` order id (zero for none);
every indexed id and address a 32-byte word. A log that breaks one is a ``Rejected`` with
stage ``venue`` (``invalid_field``, ``bad_topic``, ``bad_quantity``, ...).
"""

from __future__ import annotations

import msgspec

from operators import abi
from operators.bounds import AMOUNT_MAX, EXPIRY_MAX_S, PRICE_MAX, PRICE_MIN, SIZE_MAX
from operators.decode import DecodeError, RpcLog, json_error
from operators.model import Execution, OptionQuote, RawMessage, Rejected
from operators.units import E18, InstrumentKind

STAGE = "venue"
_KINDS = sorted(int(k) for k in InstrumentKind)
_PRICE_E18 = (round(PRICE_MIN * E18), round(PRICE_MAX * E18))
_SIZE_E18_MAX = round(SIZE_MAX * E18)
_EXPIRY_MIN_S = 1_230_768_000
"""2009-01-01 in Unix seconds: no option of an EVM venue expires before."""
_decoder = msgspec.json.Decoder(RpcLog)
_SHAPES = {  # topic0 -> (topics, data words)
    abi.VENUE_INSTRUMENT_LISTED: (3, 3),
    abi.VENUE_DEPOSIT: (3, 1),
    abi.VENUE_WITHDRAW: (3, 1),
    abi.VENUE_TRADE: (3, 3),
    abi.VENUE_LIQUIDATED: (4, 3),
}


class InstrumentListed(msgspec.Struct, frozen=True, kw_only=True):
    """A listing: its ``InstrumentKind``; strike in 18 decimals (0 for spot and perps);
    expiry in Unix seconds (0 for none)."""

    instrument: str
    underlying: str
    kind: InstrumentKind
    strike_e18: int
    expiry_s: int
    ts_ms: int
    seq: int
    removed: bool

    @property
    def expiry_ms(self) -> int:
        """The expiry in ms since the epoch (0 for none)."""
        return self.expiry_s * 1000


class CollateralMove(msgspec.Struct, frozen=True, kw_only=True):
    """A deposit (``amount`` > 0) or a withdrawal (< 0), in the token's smallest unit."""

    account: str
    token: str
    amount: int
    ts_ms: int
    seq: int
    removed: bool


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """A trade, or a liquidation when ``liquidator`` is set: signed size and price, both in
    18 decimals. ``order_id`` is the ``bytes32`` id of the order it executes, as ``0x`` and
    64 lower-case hex digits (``Order.order_id``), or ``None`` when the venue call carried
    bytes32(0): a trade no order drove."""

    account: str
    instrument: str
    size_e18: int
    price_e18: int
    liquidator: str | None
    order_id: str | None
    ts_ms: int
    seq: int
    removed: bool


VenueEvent = InstrumentListed | CollateralMove | Fill
ShardEvent = VenueEvent | OptionQuote | Execution
"""What an input partition sends a risk shard, to apply in event time."""


class VenueBatch(msgspec.Struct, frozen=True):
    """What one input partition sends one risk shard: venue events and option quotes (or,
    from a ``fills`` partition, the executor's outcomes), the partition's watermark and its
    newest broker timestamp (ms), and whether it had caught up (``RawBatch.caught_up``)."""

    part: str
    watermark_ms: int
    eof: bool
    events: list[ShardEvent]
    broker_ms: int = -1
    caught_up: bool = False


def decode_venue(msg: RawMessage, venue: str) -> VenueEvent | Rejected | None:
    """A ``chain.logs`` message as a venue event; ``None`` when it is not the venue's."""
    if msg.key is not None and msg.key != venue.encode():
        return None
    try:
        if msg.value is None:
            raise DecodeError("empty_value: message has no value")
        try:
            log = _decoder.decode(msg.value)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise json_error(exc, msg.value) from None
        if log.address.lower() != venue:
            return None
        return _event(log)
    except (DecodeError, abi.AbiError) as exc:
        return Rejected.of(STAGE, str(exc), msg)


def _event(log: RpcLog) -> VenueEvent | None:
    topics = log.topics
    topic0 = topics[0].lower() if topics else ""
    if topic0 not in abi.VENUE_EVENTS:
        raise DecodeError(f"unexpected_topic: {topic0[:66] or 'none'} on the venue")
    shape = _SHAPES.get(topic0)
    if shape is None:
        return None  # an administrative event (LiquidatorSet)
    if len(topics) != shape[0]:
        raise DecodeError(f"bad_topics: expected {shape[0]} topics; got {len(topics)}")
    words = abi.data_words(log.data, shape[1])
    indexed = [abi.word(t) for t in topics[1:]]
    seq, _ = abi.log_seq(log.blockNumber, log.logIndex)
    ts_ms = abi.block_time_ms(log.blockTimestamp)
    first = abi.address_of(indexed[0])
    if topic0 == abi.VENUE_INSTRUMENT_LISTED:
        kind, strike, expiry = words
        _check_listing(kind, strike, expiry)
        return InstrumentListed(
            instrument=_id(indexed[0]),
            underlying=abi.address_of(indexed[1]),
            kind=InstrumentKind(kind),
            strike_e18=strike,
            expiry_s=expiry,
            ts_ms=ts_ms,
            seq=seq,
            removed=log.removed,
        )
    if topic0 in (abi.VENUE_DEPOSIT, abi.VENUE_WITHDRAW):
        if not 0 < words[0] <= AMOUNT_MAX:
            raise DecodeError(f"invalid_field: amount {words[0]} is outside 1..2**128-1")
        amount = words[0] if topic0 == abi.VENUE_DEPOSIT else -words[0]
        return CollateralMove(
            account=first,
            token=abi.address_of(indexed[1]),
            amount=amount,
            ts_ms=ts_ms,
            seq=seq,
            removed=log.removed,
        )
    size, price = abi.signed(words[0]), words[1]
    if not 0 < abs(size) <= _SIZE_E18_MAX:
        raise DecodeError(f"invalid_field: size {size} e18 is outside 0 < |size| <= {SIZE_MAX:g}")
    if not _PRICE_E18[0] <= price <= _PRICE_E18[1]:
        raise DecodeError(
            f"invalid_field: price {price} e18 is outside {PRICE_MIN:g}..{PRICE_MAX:g} USD"
        )
    trade = topic0 == abi.VENUE_TRADE
    return Fill(
        account=first,
        instrument=_id(indexed[1] if trade else indexed[2]),
        size_e18=size,
        price_e18=price,
        liquidator=None if trade else abi.address_of(indexed[1]),
        order_id=_id(words[2]) if words[2] else None,
        ts_ms=ts_ms,
        seq=seq,
        removed=log.removed,
    )


def _id(word: int) -> str:
    """An instrument or order id (bytes32) as 0x and 64 lower-case hex digits."""
    return abi.int_topic(word)


def _check_listing(kind: int, strike: int, expiry: int) -> None:
    """Raise unless the listing is one the venue's contract accepts, within the bounds."""
    if kind not in _KINDS:
        raise DecodeError(f"invalid_field: instrument kind {kind} is not one of {_KINDS}")
    if not InstrumentKind(kind).is_option:
        if strike or expiry:
            raise DecodeError(
                f"invalid_field: spot and perps have no strike and no expiry; got {strike}, "
                f"{expiry}"
            )
        return
    if not _PRICE_E18[0] <= strike <= _PRICE_E18[1]:
        raise DecodeError(
            f"invalid_field: option strike {strike} e18 is outside {PRICE_MIN:g}..{PRICE_MAX:g}"
        )
    if not _EXPIRY_MIN_S <= expiry < EXPIRY_MAX_S:
        raise DecodeError(f"invalid_field: option expiry {expiry} s is outside 2009..2100")
