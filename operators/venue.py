"""The reference venue's events (``infra/contracts/MarginVenue.sol``) as typed records.

Amounts stay exact integers: sizes and prices in 18 decimals (``*_e18``), token amounts
in the token's smallest unit. ``ts_ms`` is the block time in ms; ``seq`` orders events
(block * 2**20 + log index); ``removed`` marks a retraction after a reorg.
"""

from __future__ import annotations

import msgspec

from operators import abi
from operators.decode import DecodeError, RpcLog, json_error
from operators.model import OptionQuote, RawMessage, Rejected
from operators.units import InstrumentKind

STAGE = "venue"
_KINDS = sorted(int(k) for k in InstrumentKind)
_decoder = msgspec.json.Decoder(RpcLog)
_SHAPES = {  # topic0 -> (topics, data words)
    abi.VENUE_INSTRUMENT_LISTED: (3, 3),
    abi.VENUE_DEPOSIT: (3, 1),
    abi.VENUE_WITHDRAW: (3, 1),
    abi.VENUE_TRADE: (3, 2),
    abi.VENUE_LIQUIDATED: (4, 2),
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
    18 decimals."""

    account: str
    instrument: str
    size_e18: int
    price_e18: int
    liquidator: str | None
    ts_ms: int
    seq: int
    removed: bool


VenueEvent = InstrumentListed | CollateralMove | Fill


class VenueBatch(msgspec.Struct, frozen=True):
    """What one input partition sends one risk shard: venue events and option quotes, the
    partition's watermark and its newest broker timestamp (ms)."""

    part: str
    watermark_ms: int
    eof: bool
    events: list[VenueEvent | OptionQuote]
    broker_ms: int = -1


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
        raise DecodeError(f"unexpected_topic: {topic0 or 'none'} on the venue")
    shape = _SHAPES.get(topic0)
    if shape is None:
        return None  # an administrative event (LiquidatorSet)
    if len(topics) != shape[0]:
        raise DecodeError(f"bad_topics: expected {shape[0]} topics; got {len(topics)}")
    words = abi.data_words(log.data, shape[1])
    index = abi.quantity(log.logIndex, "logIndex")
    seq = (abi.quantity(log.blockNumber, "blockNumber") << 20) | index
    ts_ms = abi.block_time_ms(log.blockTimestamp)
    first = abi.address_of(abi.word(topics[1]))
    if topic0 == abi.VENUE_INSTRUMENT_LISTED:
        kind, strike, expiry = words
        if kind not in _KINDS:
            raise DecodeError(f"invalid_field: instrument kind {kind} is not one of {_KINDS}")
        underlying = abi.address_of(abi.word(topics[2]))
        return InstrumentListed(
            instrument=topics[1].lower(),
            underlying=underlying,
            kind=InstrumentKind(kind),
            strike_e18=strike,
            expiry_s=expiry,
            ts_ms=ts_ms,
            seq=seq,
            removed=log.removed,
        )
    if topic0 in (abi.VENUE_DEPOSIT, abi.VENUE_WITHDRAW):
        amount = words[0] if topic0 == abi.VENUE_DEPOSIT else -words[0]
        token = abi.address_of(abi.word(topics[2]))
        return CollateralMove(
            account=first, token=token, amount=amount, ts_ms=ts_ms, seq=seq, removed=log.removed
        )
    size, price = abi.signed(words[0]), words[1]
    if topic0 == abi.VENUE_TRADE:
        return Fill(
            account=first,
            instrument=topics[2].lower(),
            size_e18=size,
            price_e18=price,
            liquidator=None,
            ts_ms=ts_ms,
            seq=seq,
            removed=log.removed,
        )
    liquidator = abi.address_of(abi.word(topics[2]))
    return Fill(
        account=first,
        instrument=topics[3].lower(),
        size_e18=size,
        price_e18=price,
        liquidator=liquidator,
        ts_ms=ts_ms,
        seq=seq,
        removed=log.removed,
    )
