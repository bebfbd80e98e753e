"""Units and kinds shared by every module: the year, fixed-point scales, instrument kinds.

Time: ``T`` (an option's time to expiry) is in years of 365 days (Deribit's and Derive's
convention); event times are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from enum import IntEnum

MS_PER_S = 1000
DAYS_PER_YEAR = 365.0
YEAR_S = DAYS_PER_YEAR * 86_400
"""One year, seconds."""
YEAR_MS = YEAR_S * MS_PER_S
"""One year, milliseconds."""
E18 = 10**18
"""The venue's fixed-point scale: sizes, prices and strikes in 18 decimals."""


def e18(value: float) -> int:
    """``value`` in units of 1e-18 (the venue's scale), rounded half to even from the
    float's shortest decimal text, so 0.1 is exactly 10**17."""
    return scaled(value, 18)


def scaled(value: float, decimals: int) -> int:
    """``value`` in units of ``10**-decimals`` (a token's raw units), rounded half to even
    from the float's shortest decimal text: ``scaled(0.1, 6)`` is exactly 100,000."""
    return int(Decimal(repr(value)).scaleb(decimals).to_integral_value(ROUND_HALF_EVEN))


def ms(seconds: float) -> int:
    """Seconds (a configuration value) as whole milliseconds."""
    return round(seconds * MS_PER_S)


class InstrumentKind(IntEnum):
    """An instrument's kind, as the venue's ``InstrumentListed.kind`` encodes it."""

    SPOT = 0
    PERP = 1
    CALL = 2
    PUT = 3

    @property
    def is_option(self) -> bool:
        return self >= InstrumentKind.CALL
