"""Wire messages to observations: the ``chain.logs`` and ``dex.quotes`` codecs.

``Decoder.decode`` turns one ``RawMessage`` into an ``Observation``, a ``Retraction``
(a ``removed`` log), a ``Rejected`` (with the reason), or ``None`` for a message that is
valid but not for the oracle (an unregistered address, a pool event that carries no
price, an option quote). Prices are computed exactly from integers or decimals and
rounded to a float once, at the end.

Every number is checked against ``operators.bounds`` before it is used: ABI words against
their declared widths (uint160 ``sqrtPriceX96``, uint128 ``liquidity``, uint112 reserves),
quote decimals before any arithmetic on them (``"9e999999"`` is rejected, not computed
with), and every price and weight once computed. A message outside them is a ``Rejected``
(``invalid_price``, ``invalid_weight``, ``invalid_quote``, ``bad_data``).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from operators import abi
from operators.bounds import IV_MAX, PRICE_MAX, PRICE_MIN, SIZE_MAX, WEIGHT_MAX
from operators.model import (
    ChainProgress,
    Observation,
    OptionQuote,
    RawMessage,
    Rejected,
    Retraction,
)
from operators.pool_math import v2_price_depth, v3_depth, v3_price
from operators.registry import FeedSource, Registry

STAGE = "decode"


class RpcLog(msgspec.Struct, frozen=True, kw_only=True):
    """A log as ``eth_getLogs`` returns it, plus ``blockTimestamp`` and ``chainId``."""

    address: str
    topics: list[str]
    data: str
    blockNumber: int | str
    logIndex: int | str
    blockTimestamp: int | str
    blockHash: str | None = None
    transactionHash: str | None = None
    transactionIndex: int | str | None = None
    removed: bool = False
    chainId: int | str | None = None


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """A ``dex.quotes`` message; prices and sizes are read as exact decimals, ``ts`` in ms."""

    source: str
    base: str
    quote: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    ts: int
    instrument: str | None = None
    iv: Decimal | None = None


_log_decoder = msgspec.json.Decoder(RpcLog)
_quote_decoder = msgspec.json.Decoder(Quote)

Decoded = Observation | Retraction | OptionQuote | ChainProgress | Rejected | None


class _Marker(msgspec.Struct, frozen=True):
    """The fields that tell an unkeyed progress marker (``operators.chain``) from a log."""

    progress: bool = False
    blockTimestamp: int | str | None = None


_marker_decoder = msgspec.json.Decoder(_Marker)


class DecodeError(ValueError):
    """A message that cannot be used; ``str()`` starts with a short reason code."""


def json_error(exc: Exception, value: bytes) -> DecodeError:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as utf:
        return DecodeError(f"not_utf8: {utf}")
    if isinstance(exc, msgspec.ValidationError):
        return DecodeError(f"invalid_field: {exc}")
    return DecodeError(f"invalid_json: {exc}")


_PRICE_MIN, _PRICE_MAX = Decimal(repr(PRICE_MIN)), Decimal(repr(PRICE_MAX))
_SIZE_MAX, _IV_MAX = Decimal(repr(SIZE_MAX)), Decimal(repr(IV_MAX))


def _finite(*values: Decimal) -> bool:
    """All finite: checked before any comparison (a signalling NaN raises in one)."""
    return all(d.is_finite() for d in values)


def _option_quote(q: Quote) -> OptionQuote:
    """An option's quote: its ``iv`` when given, and its mid price (USD)."""
    ok = _finite(q.bid, q.ask) and 0 <= q.bid <= q.ask <= _PRICE_MAX and q.ask >= _PRICE_MIN
    ok = ok and (q.iv is None or (_finite(q.iv) and 0 < q.iv <= _IV_MAX)) and q.ts >= 0
    if not ok or q.instrument is None:
        raise DecodeError(
            f"invalid_quote: an option quote needs 0 <= bid <= ask <= {PRICE_MAX:g}, ask >= "
            f"{PRICE_MIN:g}, 0 < iv <= {IV_MAX:g} if given, ts >= 0; got bid={q.bid} "
            f"ask={q.ask} iv={q.iv} ts={q.ts}"
        )
    iv = None if q.iv is None else float(q.iv)
    return OptionQuote(
        instrument=q.instrument.lower(),
        iv=iv,
        mid=float((q.bid + q.ask) / 2),
        ts_ms=q.ts,
        source=q.source,
    )


def option_quote(value: bytes) -> OptionQuote | None:
    """A ``dex.quotes`` value as an option's quote; ``None`` when it is not a valid one
    (the oracle's ``Decoder`` sends invalid quotes to the deadletter)."""
    try:
        q = _quote_decoder.decode(value)
        return None if q.instrument is None else _option_quote(q)
    except (msgspec.DecodeError, UnicodeDecodeError, DecodeError):
        return None


class Decoder:
    """Decodes the two input topics against a registry."""

    def __init__(self, registry: Registry, chain_logs_topic: str, dex_quotes_topic: str):
        self.registry = registry
        self.chain_logs_topic = chain_logs_topic
        self.dex_quotes_topic = dex_quotes_topic
        self._known_keys = frozenset(a.encode() for a in registry.by_address)

    def decode(self, msg: RawMessage) -> Decoded:
        """Decode one message; bad input becomes a ``Rejected`` naming the reason."""
        try:
            if msg.value is None:
                raise DecodeError("empty_value: message has no value")
            if msg.topic == self.chain_logs_topic:
                return self._log(msg)
            if msg.topic == self.dex_quotes_topic:
                return self._quote(msg)
            raise DecodeError(f"unknown_topic: no decoder for topic {msg.topic!r}")
        except (DecodeError, abi.AbiError) as exc:
            return Rejected.of(STAGE, str(exc), msg)

    def _log(self, msg: RawMessage) -> Decoded:
        key = msg.key
        if not key or key.startswith(b"progress:"):  # maybe a progress marker
            assert msg.value is not None
            try:
                marker = _marker_decoder.decode(msg.value)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise json_error(exc, msg.value) from None
            if marker.progress:
                if marker.blockTimestamp is None:
                    raise DecodeError("missing_field: a progress marker needs blockTimestamp")
                return ChainProgress(abi.block_time_ms(marker.blockTimestamp))
        if key is not None and len(key) == 42 and key.lower() not in self._known_keys:
            return None  # keyed by an unregistered address: skip without parsing
        assert msg.value is not None
        try:
            log = _log_decoder.decode(msg.value)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise json_error(exc, msg.value) from None
        src = self.registry.by_address.get(log.address.lower())
        if src is None:
            return None
        if not log.topics:
            raise DecodeError("unexpected_topic: log has no topics")
        topic0 = log.topics[0].lower()
        if isinstance(src, FeedSource):
            if topic0 not in abi.CHAINLINK_EVENTS:
                raise DecodeError(f"unexpected_topic: {topic0} on chainlink feed {src.address}")
            if topic0 != abi.CHAINLINK_ANSWER_UPDATED:
                return None
            if len(log.topics) != 3:
                raise DecodeError(
                    f"bad_topics: AnswerUpdated needs 3 topics; got {len(log.topics)}"
                )
            abi.data_words(log.data, 1)
            answer = abi.signed(abi.word(log.topics[1]))
            if answer <= 0:
                raise DecodeError(f"invalid_price: chainlink answer {answer} <= 0")
            base, quote = src.base, src.quote
            price, weight = answer / 10**src.decimals, src.weight or 0.0
        elif src.kind == "uniswap_v3":
            if topic0 not in abi.V3_POOL_EVENTS:
                raise DecodeError(f"unexpected_topic: {topic0} on uniswap_v3 pool {src.address}")
            if topic0 != abi.V3_SWAP:
                return None
            # Swap data: amount0, amount1, sqrtPriceX96, liquidity, tick
            raw = abi.data_bytes(log.data, 5)
            sqrt_p, liquidity = abi.uint_at(raw, 2), abi.uint_at(raw, 3)
            if sqrt_p == 0 or sqrt_p >= 1 << 160:
                raise DecodeError(f"invalid_price: sqrtPriceX96 {sqrt_p} out of range")
            if liquidity >= 1 << 128:
                raise DecodeError(f"bad_data: liquidity {liquidity} does not fit a uint128")
            base, quote = src.base, src.quote
            price = v3_price(sqrt_p, src)
            weight = src.weight or v3_depth(sqrt_p, liquidity, src)
        else:
            if topic0 not in abi.V2_PAIR_EVENTS:
                raise DecodeError(f"unexpected_topic: {topic0} on uniswap_v2 pair {src.address}")
            if topic0 != abi.V2_SYNC:
                return None
            reserve0, reserve1 = abi.data_words(log.data, 2)
            if reserve0 == 0 or reserve1 == 0:
                raise DecodeError("invalid_price: a V2 reserve is zero")
            if max(reserve0, reserve1) >= 1 << 112:
                raise DecodeError(f"bad_data: reserves {reserve0}, {reserve1} exceed uint112")
            base, quote = src.base, src.quote
            price, depth = v2_price_depth(reserve0, reserve1, src)
            weight = src.weight or depth
        _check_observation(price, weight)

        seq, index = abi.log_seq(log.blockNumber, log.logIndex)
        ts_ms = abi.block_time_ms(log.blockTimestamp)
        if log.blockHash is None:
            raise DecodeError("missing_field: blockHash is required")
        obs_id = f"{log.blockHash.lower()}:{index}"
        source = src.address
        if log.removed:
            return Retraction(
                base=base, quote=quote, source=source, ts_ms=ts_ms, obs_id=obs_id, origin=msg
            )
        return Observation(
            base=base,
            quote=quote,
            source=source,
            price=price,
            weight=weight,
            spread=0.0,
            ts_ms=ts_ms,
            seq=seq,
            obs_id=obs_id,
        )

    def _quote(self, msg: RawMessage) -> Decoded:
        assert msg.value is not None
        try:
            q = _quote_decoder.decode(msg.value)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise json_error(exc, msg.value) from None
        if q.instrument is not None:
            return _option_quote(q)  # for the risk engine, not the oracle
        ok = _finite(q.bid, q.ask, q.bid_size, q.ask_size)
        ok = ok and _PRICE_MIN <= q.bid <= q.ask <= _PRICE_MAX
        ok = ok and 0 <= q.bid_size <= _SIZE_MAX and 0 <= q.ask_size <= _SIZE_MAX
        if not ok:
            raise DecodeError(
                f"invalid_quote: need {PRICE_MIN:g} <= bid <= ask <= {PRICE_MAX:g} and "
                f"0 <= sizes <= {SIZE_MAX:g}; got bid={q.bid} ask={q.ask} "
                f"bid_size={q.bid_size} ask_size={q.ask_size}"
            )
        if q.ts < 0:
            raise DecodeError(f"invalid_quote: ts must be >= 0 ms; got {q.ts}")
        base, quote = self.registry.asset_of(q.base), self.registry.asset_of(q.quote)
        if base not in self.registry.assets or not (
            quote in self.registry.pegs or quote in self.registry.crosses
        ):
            return None
        mid = (q.bid + q.ask) / 2
        return Observation(
            base=base,
            quote=quote,
            source=f"quote:{q.source}",
            price=float(mid),
            weight=float(mid * (q.bid_size + q.ask_size) / 2),
            spread=float((q.ask - q.bid) / 2),
            ts_ms=q.ts,
            seq=msg.offset,
            obs_id=f"{msg.topic}:{msg.partition}:{msg.offset}",
        )


def _check_observation(price: float, weight: float) -> None:
    """Raise unless the price and the weight are within ``operators.bounds``."""
    if not PRICE_MIN <= price <= PRICE_MAX:
        raise DecodeError(f"invalid_price: {price!r} is outside {PRICE_MIN:g}..{PRICE_MAX:g}")
    if not 0 <= weight <= WEIGHT_MAX:
        raise DecodeError(f"invalid_weight: {weight!r} is outside 0..{WEIGHT_MAX:g}")
