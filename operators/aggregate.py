"""Robust aggregation of one asset's source prices in one window.

Anchors: Chainlink OCR (median of independent sources, with a quorum), Pyth (a
confidence half-width from the spread of the sources). All prices share one unit
(USD per asset); weights are depths in USD.

1. Drop outliers: sources farther than ``k`` scaled MADs from the (unweighted) median,
   scale = max(1.4826 * MAD, floor_bps * 1e-4 * median), then again over the sources
   kept, until a pass drops none. One absurd source shifts the first pass's median by half
   a rank and can widen its MAD; it is dropped in that pass, and the passes after it judge
   the others by their own spread, so the price and the confidence stay within what the
   honest sources give (a property test over 1e-300..1e300). The source(s) nearest the
   median are always kept.
2. Cap each kept source's weight at ``max_share`` of the total (water-filling), so no one
   source holds a majority; a source with no depth of its own (weight 0, e.g. a Chainlink
   feed) gets the median weight of the others.
3. Price = weighted median; confidence = the larger distance from it to the weighted 25th
   and 75th percentiles, and at least the weighted median of the sources' half-spreads.

Inputs are finite, prices > 0 and weights >= 0 (``operators.bounds`` holds the decoded
ones far inside that); the functions stay total over 1e-300..1e300 of either.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

MAD_TO_SIGMA = 1.4826
"""Scales a median absolute deviation to a normal standard deviation."""

MAX_SHARE = 0.45
"""No source carries more than this fraction of the weight (below 1/2: no majority)."""


@dataclass(frozen=True)
class Aggregate:
    """A window's price (USD), its confidence half-width (USD) and the sources kept."""

    price: float
    confidence: float
    kept: tuple[int, ...]


def mad_filter(prices: list[float], k: float, floor_bps: float) -> list[int]:
    """Indexes of the prices within ``k`` scaled MADs of the median of those kept, repeated
    until a pass drops none (at least the one(s) nearest the median); ``prices`` not empty."""
    kept = list(range(len(prices)))
    while True:
        ps = [prices[i] for i in kept]
        med = median(ps)
        dev = [abs(p - med) for p in ps]
        scale = max(MAD_TO_SIGMA * median(dev), floor_bps * 1e-4 * abs(med))
        limit = max(k * scale, min(dev))
        inside = [i for i, d in zip(kept, dev, strict=True) if d <= limit]
        if len(inside) == len(kept):
            return kept
        kept = inside


def capped_weights(weights: list[float], max_share: float = MAX_SHARE) -> list[float]:
    """Weights with none above ``max_share`` of the capped total (equal if infeasible).

    Zero weights (sources without a depth) first take the median of the positive ones.
    """
    positive = [w for w in weights if w > 0]
    fill = median(positive) if positive else 1.0
    w = [x if x > 0 else fill for x in weights]
    n = len(w)
    if n * max_share <= 1.0:
        return [1.0] * n
    ordered = sorted(w, reverse=True)
    for capped in range(n):  # cap the `capped` largest at level L = share * total
        rest = sum(ordered[capped:])
        level = max_share * rest / (1.0 - capped * max_share)
        if ordered[capped] <= level:
            return [min(x, level) for x in w]
    return [1.0] * n  # unreachable when n * max_share > 1


def weighted_quantile(prices: list[float], weights: list[float], q: float) -> float:
    """The smallest price whose cumulative weight reaches ``q`` of the total.

    At exactly one half with an exact tie it returns the midpoint of the two neighbours,
    so two equal-weight sources give their mean.
    """
    pairs = sorted(zip(prices, weights, strict=True))
    total = sum(weights)
    target = q * total
    cum = 0.0
    for i, (p, w) in enumerate(pairs):
        cum += w
        if cum >= target:
            if cum == target and q == 0.5 and i + 1 < len(pairs):
                return (p + pairs[i + 1][0]) / 2
            return p
    return pairs[-1][0]


def aggregate(
    prices: list[float],
    weights: list[float],
    spreads: list[float],
    *,
    k: float,
    floor_bps: float,
) -> Aggregate:
    """Robust price of one window from at least one source (see the module docstring)."""
    kept = mad_filter(prices, k, floor_bps)
    p = [prices[i] for i in kept]
    w = capped_weights([weights[i] for i in kept])
    mid = weighted_quantile(p, w, 0.5)
    spread = weighted_quantile([spreads[i] for i in kept], w, 0.5)
    lo, hi = weighted_quantile(p, w, 0.25), weighted_quantile(p, w, 0.75)
    return Aggregate(mid, max(mid - lo, hi - mid, spread), tuple(kept))
