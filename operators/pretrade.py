"""The executor's pre-trade checks per order, and its automatic trips to HALTED.

Anchor: NautilusTrader's ``RiskEngine`` (trading states ACTIVE / REDUCING / HALTED, order
throttles, ``OrderDenied`` with a reason). Time is the chain head's, in ms, passed in as
``now_ms``; amounts in USD (notional) and wei (fees). The limits are those of
``ExecutionConfig``.

An order waits, unchecked, until the executor has read the oracle row it was computed from
(:func:`awaits_oracle`). Then the checks, in this order; the first that fails is the
order's :class:`Denial`:

1. ``expired``: ``now_ms > order.valid_until_ms``;
2. ``halted``: the state is HALTED; ``reducing_only``: the state is REDUCING and the order
   does not reduce, i.e. not ``|position + size| < |position|``;
3. ``no_oracle``: no ``oracle.prices`` row seen for the order's asset; ``oracle_not_ok``:
   its status is not ``ok``; ``oracle_stale``: ``now_ms - window_end_ms`` > the heartbeat;
4. ``price_band``: ``|order.underlying_price / row.price - 1| x 1e4`` > ``price_band_bps``;
5. ``notional``: ``|size| x order.underlying_price`` > ``max_order_notional_usd``;
6. ``hourly_notional``: the asset's notional submitted in the rolling hour, this order's
   included, > ``max_hourly_notional_usd``;
7. ``submit_rate``: the submits (replacements included) in the rolling 1000 ms already
   number ``floor(max_submits_per_s)``.

Every comparison is written so that a NaN fails it (a NaN size or price is denied, never
waved through). A submit at ``t`` is in the rolling window of length ``W`` at ``now_ms``
while ``now_ms - t < W``: any ``W`` consecutive ms hold at most the limit. The hourly sum
is kept exactly (as a ``Fraction`` of the floats' exact values), so no rounding lets the cap
be passed.

Trips (:meth:`Pretrade.trip`), checked in this order: ``error_rate`` (the failed share of
the last ``error_window`` outcomes > ``max_error_rate``, once that many were seen),
``gas_spend`` (fees paid in the rolling hour > ``max_gas_per_hour_eth``), ``stale_oracle``
(an asset that orders were seen for has had no ``ok`` row younger than the heartbeat for
longer than ``stale_oracle_halt_s``, counted from the first :meth:`Pretrade.trip` call that
saw it so). The executor trips on a nonce conflict itself.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import msgspec

from operators.config import ExecutionConfig
from operators.fees import eth_to_wei
from operators.model import Order

HOUR_MS = 3_600_000
"""The notional and gas windows, ms."""
SECOND_MS = 1_000
"""The submit-rate window, ms."""


class TradingState(enum.StrEnum):
    """ACTIVE trades; REDUCING admits only the orders that reduce a position; HALTED none."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


class DenialCode(enum.StrEnum):
    """Why an order was refused before signing (the module's docstring gives each rule)."""

    EXPIRED = "expired"
    HALTED = "halted"
    REDUCING_ONLY = "reducing_only"
    NO_ORACLE = "no_oracle"
    ORACLE_NOT_OK = "oracle_not_ok"
    ORACLE_STALE = "oracle_stale"
    PRICE_BAND = "price_band"
    NOTIONAL = "notional"
    HOURLY_NOTIONAL = "hourly_notional"
    SUBMIT_RATE = "submit_rate"


class TripCode(enum.StrEnum):
    """Why the signer tripped itself to HALTED."""

    ERROR_RATE = "error_rate"
    GAS_SPEND = "gas_spend"
    STALE_ORACLE = "stale_oracle"


class OracleView(msgspec.Struct, frozen=True, kw_only=True):
    """The latest ``oracle.prices`` row the executor saw for an asset: price (USD), status
    (``ok``, ``degraded``, ``stale``) and the end of its window (ms)."""

    price: float
    status: str
    window_end_ms: int


class Denial(msgspec.Struct, frozen=True, kw_only=True):
    """A refused order: a :class:`DenialCode` value and a detail naming the numbers."""

    code: str
    detail: str


class PretradeState(msgspec.Struct, frozen=True, kw_only=True):
    """What :class:`Pretrade` remembers, as the executor persists it (wei as decimal text)."""

    hourly: dict[str, list[tuple[int, float]]]
    """Per asset, the (ms, USD notional) of each submit in the rolling hour."""
    submits: list[int]
    """The ms of each submit and replacement in the rolling second."""
    outcomes: list[bool]
    """The last ``error_window`` outcomes, True for failed, oldest first."""
    fees: list[tuple[int, str]]
    """The (ms, wei) of each fee paid in the rolling hour."""
    assets: list[str]
    """The assets that orders were seen for."""
    stale_since: dict[str, int]
    """Per asset, since when (ms) its oracle has been stale without a break."""


def reduces(order: Order) -> bool:
    """The order reduces the account's position in its instrument: ``|position + size| <
    |position|`` (False for a NaN)."""
    return abs(order.position + order.size) < abs(order.position)


def awaits_oracle(order: Order, view: OracleView | None, now_ms: int) -> bool:
    """The order is not checked yet: the executor has not read its asset's row of window
    ``oracle_window_end_ms`` (or a later one) that the order was computed from, and the
    deadline has not passed. ``orders`` and ``oracle.prices`` are read apart, so an order
    can arrive before the price it followed; checked then, it would meet an older row."""
    behind = view is None or view.window_end_ms < order.oracle_window_end_ms
    return behind and now_ms <= order.valid_until_ms


def notional_usd(order: Order) -> float:
    """``|size| x underlying_price``: the order's notional in the underlying, USD (an
    option's too: its premium is ``oracle_price``)."""
    return abs(order.size) * order.underlying_price


class Pretrade:
    """The pre-trade checks and trip conditions of one signer; pure, time passed in."""

    def __init__(self, cfg: ExecutionConfig):
        self.cfg = cfg
        self._heartbeat_ms = round(cfg.oracle_heartbeat_s * 1000)
        self._stale_halt_ms = round(cfg.stale_oracle_halt_s * 1000)
        self._rate_limit = math.floor(cfg.max_submits_per_s)
        self._hourly_cap = Fraction(cfg.max_hourly_notional_usd)
        self._gas_cap_wei = eth_to_wei(cfg.max_gas_per_hour_eth)
        self._hourly: dict[str, deque[tuple[int, float]]] = {}
        self._hourly_sum: dict[str, Fraction] = {}
        self._submits: deque[int] = deque()
        self._outcomes: deque[bool] = deque(maxlen=cfg.error_window)
        self._fees: deque[tuple[int, int]] = deque()
        self._fee_sum = 0
        self._assets: set[str] = set()
        self._stale_since: dict[str, int] = {}

    def check(
        self, order: Order, state: TradingState, oracle: OracleView | None, now_ms: int
    ) -> Denial | None:
        """The order's denial, or None when it may be sent now. Notes the order's asset for
        the stale-oracle trip."""
        self._assets.add(order.asset)
        if now_ms > order.valid_until_ms:
            return Denial(
                code=DenialCode.EXPIRED,
                detail=f"now {now_ms} ms is past valid_until {order.valid_until_ms} ms",
            )
        if state is TradingState.HALTED:
            return Denial(code=DenialCode.HALTED, detail="the signer is halted")
        if state is TradingState.REDUCING and not reduces(order):
            return Denial(
                code=DenialCode.REDUCING_ONLY,
                detail=(
                    f"reducing only: position {order.position:g} + size {order.size:g} does "
                    f"not reduce |position|"
                ),
            )
        if (denial := self._oracle_denial(order, oracle, now_ms)) is not None:
            return denial
        notional = notional_usd(order)
        cap = self.cfg.max_order_notional_usd
        if not notional <= cap:
            return Denial(
                code=DenialCode.NOTIONAL,
                detail=(
                    f"notional |{order.size:g}| x {order.underlying_price:g} = "
                    f"{notional:.2f} USD > {cap:.2f} USD"
                ),
            )
        self._evict(now_ms)
        done = self._hourly_sum.get(order.asset, Fraction(0))
        if done + Fraction(notional) > self._hourly_cap:
            return Denial(
                code=DenialCode.HOURLY_NOTIONAL,
                detail=(
                    f"{order.asset}: {float(done):.2f} USD in the last 3600 s + {notional:.2f} "
                    f"USD > {self.cfg.max_hourly_notional_usd:.2f} USD"
                ),
            )
        return self.rate_denial(now_ms)

    def rate_denial(self, now_ms: int) -> Denial | None:
        """A ``submit_rate`` denial when no transaction may be sent at ``now_ms`` (the
        executor asks this before a replacement too), else None."""
        self._evict(now_ms)
        if len(self._submits) >= self._rate_limit:
            return Denial(
                code=DenialCode.SUBMIT_RATE,
                detail=(
                    f"{len(self._submits)} submits in the last 1000 ms; at most {self._rate_limit}"
                ),
            )
        return None

    def record_submit(self, order: Order, now_ms: int) -> None:
        """The order was signed to be sent at ``now_ms``: its notional counts in its asset's
        hour, and the submit in the rate window."""
        notional = notional_usd(order)
        if not math.isfinite(notional):
            msg = f"order {order.order_id} has no finite notional ({notional!r}): check it first"
            raise ValueError(msg)
        self._evict(now_ms)
        self._assets.add(order.asset)
        self._hourly.setdefault(order.asset, deque()).append((now_ms, notional))
        self._hourly_sum[order.asset] = self._hourly_sum.get(order.asset, Fraction(0)) + Fraction(
            notional
        )
        self._submits.append(now_ms)

    def record_replacement(self, now_ms: int) -> None:
        """A replacement (or a cancel) was signed to be sent: it counts in the rate window."""
        self._evict(now_ms)
        self._submits.append(now_ms)

    def record_outcome(self, failed: bool) -> None:
        """An order's outcome: ``failed`` for a revert or a simulation refusal."""
        self._outcomes.append(failed)

    def record_fee(self, wei: int, now_ms: int) -> None:
        """A fee paid by an included transaction (gas used x effective gas price), wei."""
        if wei < 0:
            raise ValueError(f"a fee paid must be >= 0 wei; got {wei!r}")
        self._evict(now_ms)
        self._fees.append((now_ms, wei))
        self._fee_sum += wei

    def trip(self, now_ms: int, oracle: Mapping[str, OracleView]) -> tuple[str, str] | None:
        """(code, detail) of a condition that halts the signer at ``now_ms``, else None.
        ``oracle`` holds the latest row per asset; it also starts or ends each asset's stale
        streak."""
        self._evict(now_ms)
        stale = self._stale_oracle(now_ms, oracle)
        window = self.cfg.error_window
        failed = sum(self._outcomes)
        if len(self._outcomes) == window and failed / window > self.cfg.max_error_rate:
            return (
                TripCode.ERROR_RATE,
                f"{failed} of the last {window} outcomes failed ({failed / window:.0%}) > "
                f"{self.cfg.max_error_rate:.0%}",
            )
        if self._fee_sum > self._gas_cap_wei:
            return (
                TripCode.GAS_SPEND,
                f"{self._fee_sum} wei of fees in the last 3600 s > {self._gas_cap_wei} wei "
                f"({self.cfg.max_gas_per_hour_eth:g} ETH)",
            )
        return stale

    def resume(self) -> None:
        """A manual resume: the trip windows start afresh (outcomes, fees, stale streaks),
        so that what the operator has seen does not trip the signer again at once."""
        self._outcomes.clear()
        self._fees.clear()
        self._fee_sum = 0
        self._stale_since.clear()

    def to_builtins(self) -> dict[str, Any]:
        """The state as JSON-ready builtins, for the executor's SQLite store."""
        state = PretradeState(
            hourly={asset: list(entries) for asset, entries in sorted(self._hourly.items())},
            submits=list(self._submits),
            outcomes=list(self._outcomes),
            fees=[(ms, str(wei)) for ms, wei in self._fees],
            assets=sorted(self._assets),
            stale_since=dict(sorted(self._stale_since.items())),
        )
        result: dict[str, Any] = msgspec.to_builtins(state)
        return result

    @classmethod
    def from_builtins(cls, cfg: ExecutionConfig, data: Any) -> Pretrade:
        """The :class:`Pretrade` that :meth:`to_builtins` gave ``data``, under ``cfg``."""
        state = msgspec.convert(data, PretradeState)
        pretrade = cls(cfg)
        for asset, entries in state.hourly.items():
            pretrade._hourly[asset] = deque(entries)
            pretrade._hourly_sum[asset] = sum((Fraction(n) for _, n in entries), Fraction(0))
        pretrade._submits.extend(state.submits)
        pretrade._outcomes.extend(state.outcomes)
        pretrade._fees.extend((ms, int(wei)) for ms, wei in state.fees)
        pretrade._fee_sum = sum(wei for _, wei in pretrade._fees)
        pretrade._assets.update(state.assets)
        pretrade._stale_since.update(state.stale_since)
        return pretrade

    def _oracle_denial(self, order: Order, view: OracleView | None, now_ms: int) -> Denial | None:
        if view is None:
            return Denial(
                code=DenialCode.NO_ORACLE, detail=f"no oracle.prices row seen for {order.asset}"
            )
        if view.status != "ok":
            return Denial(
                code=DenialCode.ORACLE_NOT_OK,
                detail=f"{order.asset}: the latest oracle row is {view.status!r}, not 'ok'",
            )
        age_ms = now_ms - view.window_end_ms
        if age_ms > self._heartbeat_ms:
            return Denial(
                code=DenialCode.ORACLE_STALE,
                detail=(
                    f"{order.asset}: the latest oracle row is {age_ms} ms old > heartbeat "
                    f"{self._heartbeat_ms} ms"
                ),
            )
        distance_bps = (
            abs(order.underlying_price / view.price - 1) * 1e4 if view.price > 0 else math.nan
        )
        if not distance_bps <= self.cfg.price_band_bps:
            return Denial(
                code=DenialCode.PRICE_BAND,
                detail=(
                    f"{order.asset}: the order's underlying price {order.underlying_price:g} "
                    f"is {distance_bps:.1f} bps from the oracle's {view.price:g} > "
                    f"{self.cfg.price_band_bps:g} bps"
                ),
            )
        return None

    def _stale_oracle(
        self, now_ms: int, oracle: Mapping[str, OracleView]
    ) -> tuple[str, str] | None:
        tripped = None
        for asset in sorted(self._assets):
            view = oracle.get(asset)
            fresh = (
                view is not None
                and view.status == "ok"
                and now_ms - view.window_end_ms <= self._heartbeat_ms
            )
            if fresh:
                self._stale_since.pop(asset, None)
                continue
            since = self._stale_since.setdefault(asset, now_ms)
            if tripped is None and now_ms - since > self._stale_halt_ms:
                seen = (
                    "no row"
                    if view is None
                    else f"status {view.status!r}, window end {view.window_end_ms} ms"
                )
                tripped = (
                    TripCode.STALE_ORACLE,
                    f"{asset}: oracle stale since {since} ms ({seen}): {now_ms - since} ms > "
                    f"{self._stale_halt_ms} ms",
                )
        return tripped

    def _evict(self, now_ms: int) -> None:
        """Drop what has left its window at ``now_ms``: every deque stays bounded."""
        for asset, entries in list(self._hourly.items()):
            while entries and now_ms - entries[0][0] >= HOUR_MS:
                _, notional = entries.popleft()
                self._hourly_sum[asset] -= Fraction(notional)
            if not entries:
                del self._hourly[asset], self._hourly_sum[asset]
        while self._submits and now_ms - self._submits[0] >= SECOND_MS:
            self._submits.popleft()
        while self._fees and now_ms - self._fees[0][0] >= HOUR_MS:
            self._fee_sum -= self._fees.popleft()[1]
