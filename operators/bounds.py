"""The bounds every decoded number must lie in; a message outside them goes to the deadletter.

A decoder turns wire integers and decimals into prices, weights and sizes; these bounds
keep every one of them finite and far from the edges of a float, so that no later sum,
product or ratio overflows to inf or rounds to 0, and no absurd number poisons a window.
They are wide: each is many orders of magnitude beyond any real market.

- Prices (``PRICE_MIN``..``PRICE_MAX``, quote per base, whole tokens): a pool's price from
  its integers and its tokens' decimals (registry), a Chainlink answer over
  ``10**decimals``, a quote's bid and ask. 1e-12 USD is below any listed token, 1e12 USD
  above any asset. An option's premium may be 0 at the bid (ask >= PRICE_MIN).
- Oracle prices (``USD_MIN``..``USD_MAX``, USD): a crossed asset's USD price is a price in
  its numeraire times the numeraire's USD price, so the product of two bounded prices.
- Weights (``0``..``WEIGHT_MAX``, quote units): a pool's depth, a quote's mid times its
  mean size; 0 means "no depth of its own" (``operators.aggregate`` gives it the median).
- Sizes (``0``..``SIZE_MAX``, base units): a quote's bid and ask sizes.
- Implied vol (``0 < iv <= IV_MAX``, per 1.00).
- Venue (``operators.venue``, 18 decimals): a trade's or liquidation's size
  ``0 < |size| <= SIZE_MAX``, prices and strikes ``PRICE_MIN..PRICE_MAX``; collateral
  amounts (the token's smallest unit) ``0 < amount <= AMOUNT_MAX``, a uint128 (the width
  of Uniswap's reserves, beyond any token's supply); option expiries before ``EXPIRY_MAX_S``.
- Log coordinates (``operators.abi``): ``blockNumber < 2**43`` and ``logIndex < 2**20``, so
  ``seq = block * 2**20 + index`` is unique and fits an int64; ``blockTimestamp`` below
  ``TIMESTAMP_MAX_S``, so its ms fit an int64.
"""

from __future__ import annotations

PRICE_MIN = 1e-12
PRICE_MAX = 1e12
USD_MIN = PRICE_MIN * PRICE_MIN
USD_MAX = PRICE_MAX * PRICE_MAX
WEIGHT_MAX = 1e24
SIZE_MAX = 1e12
IV_MAX = 10.0
AMOUNT_MAX = (1 << 128) - 1
EXPIRY_MAX_S = 4_102_444_800
"""2100-01-01 in Unix seconds."""
BLOCK_MAX = 1 << 43
LOG_INDEX_MAX = 1 << 20
TIMESTAMP_MAX_S = (1 << 63) // 1000
DURATION_MAX_S = 100 * 365 * 86_400.0
"""The longest duration a configuration value may hold: 100 years, in seconds."""
