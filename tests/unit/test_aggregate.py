"""The robust aggregation: MAD filter, capped weights, weighted median, confidence."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from operators.aggregate import MAX_SHARE, aggregate, capped_weights, mad_filter, weighted_quantile

prices_st = st.lists(st.floats(1e-6, 1e9, allow_nan=False), min_size=1, max_size=12)
weight_st = st.floats(0.0, 1e12, allow_nan=False)


@given(st.data())
def test_published_price_lies_within_range_of_kept_sources(data: st.DataObject) -> None:
    prices = data.draw(prices_st)
    weights = data.draw(st.lists(weight_st, min_size=len(prices), max_size=len(prices)))
    spreads = [0.0] * len(prices)
    agg = aggregate(prices, weights, spreads, k=5.0, floor_bps=10.0)
    kept = [prices[i] for i in agg.kept]
    assert kept, "the median itself is never an outlier"
    assert min(kept) <= agg.price <= max(kept)
    assert agg.confidence >= 0


@given(
    honest=st.floats(100.0, 10_000.0),
    gap_bps=st.floats(0.0, 50.0),
    manipulated=st.floats(1e-3, 1e7),
    weights=st.tuples(weight_st, weight_st, weight_st),
)
def test_one_manipulated_source_of_three_cannot_move_price_outside_honest_range(
    honest: float, gap_bps: float, manipulated: float, weights: tuple[float, float, float]
) -> None:
    a, b = honest, honest * (1 + gap_bps * 1e-4)
    agg = aggregate([a, b, manipulated], list(weights), [0.0] * 3, k=5.0, floor_bps=10.0)
    assert min(a, b) <= agg.price <= max(a, b)


def test_mad_filter_drops_far_source_and_keeps_close_ones() -> None:
    assert mad_filter([100.0, 100.1, 99.9, 130.0], k=5.0, floor_bps=10.0) == [0, 1, 2]


def test_mad_floor_keeps_sources_when_all_but_one_agree_exactly() -> None:
    # MAD is 0 here; the 10 bp floor keeps a 5 bp neighbour and drops a 1% one.
    assert mad_filter([100.0, 100.0, 100.05, 101.0], k=5.0, floor_bps=10.0) == [0, 1, 2]


@given(st.lists(weight_st, min_size=3, max_size=12))
def test_capped_weights_give_no_source_more_than_max_share(weights: list[float]) -> None:
    capped = capped_weights(weights)
    total = sum(capped)
    assert all(w <= MAX_SHARE * total * (1 + 1e-9) for w in capped)
    assert all(w > 0 for w in capped)


def test_capped_weights_leave_balanced_weights_alone() -> None:
    assert capped_weights([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]


def test_feed_without_depth_takes_median_weight_of_others() -> None:
    assert capped_weights([2.0, 0.0, 4.0, 3.0]) == [2.0, 3.0, 4.0, 3.0]


def test_weighted_median_of_two_equal_weights_is_their_mean() -> None:
    assert weighted_quantile([1.0, 3.0], [1.0, 1.0], 0.5) == 2.0


def test_weighted_median_follows_weight() -> None:
    assert weighted_quantile([1.0, 2.0, 3.0], [1.0, 1.0, 5.0], 0.5) == 3.0


def test_confidence_is_interquartile_half_width_or_spread() -> None:
    agg = aggregate([99.0, 100.0, 101.0, 102.0], [1.0] * 4, [0.0] * 4, k=5.0, floor_bps=10.0)
    # q25 = 99 (cum 1 of 4 reaches 25%), median = (100 + 101) / 2, q75 = 101
    assert agg.price == 100.5
    assert math.isclose(agg.confidence, 1.5)
    wide = aggregate([100.0], [1.0], [2.5], k=5.0, floor_bps=10.0)
    assert wide.confidence == 2.5
