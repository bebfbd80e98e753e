"""The robust aggregation: MAD filter, capped weights, weighted median, confidence."""

from __future__ import annotations

import math

from hypothesis import given, settings
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


# --- extreme magnitudes and one absurd source (issue 8, section 2) --------------------------

magnitude = st.floats(-300.0, 300.0)
weight_any = st.one_of(st.just(0.0), magnitude.map(lambda e: 10.0**e))


@st.composite
def honest_and_absurd(draw: st.DrawFn) -> tuple[list[float], list[float], list[float], int]:
    """3..15 honest sources within 1% of a price anywhere in 1e-300..1e300, weights anywhere
    in 0..1e300, and one absurd source at least 10x off them, with any weight and spread,
    at a random position (returned)."""
    centre = 10.0 ** draw(magnitude)
    n = draw(st.integers(3, 15))
    prices = [centre * (1 + draw(st.floats(-0.01, 0.01))) for _ in range(n)]
    weights = [draw(weight_any) for _ in range(n)]
    spreads = [centre * draw(st.floats(0.0, 1e-3)) for _ in range(n)]
    off = draw(magnitude.filter(lambda e: abs(e - math.log10(centre)) >= 1.02))
    at = draw(st.integers(0, n))
    prices.insert(at, 10.0**off)
    weights.insert(at, draw(weight_any))
    spreads.insert(at, draw(st.floats(0.0, 1e300)))
    return prices, weights, spreads, at


@settings(max_examples=500)
@given(honest_and_absurd())
def test_one_absurd_source_moves_neither_the_price_nor_the_confidence(
    case: tuple[list[float], list[float], list[float], int],
) -> None:
    prices, weights, spreads, at = case
    honest = [[xs[i] for i in range(len(prices)) if i != at] for xs in (prices, weights, spreads)]

    with_absurd = aggregate(prices, weights, spreads, k=5.0, floor_bps=10.0)
    without = aggregate(*honest, k=5.0, floor_bps=10.0)

    assert at not in with_absurd.kept
    lo, hi = min(honest[0]), max(honest[0])
    for agg in (with_absurd, without):
        assert lo <= agg.price <= hi
        assert agg.confidence <= max(hi - lo, max(honest[2]))


@settings(max_examples=500)
@given(
    st.lists(magnitude.map(lambda e: 10.0**e), min_size=1, max_size=15).flatmap(
        lambda ps: st.tuples(
            st.just(ps),
            st.lists(weight_any, min_size=len(ps), max_size=len(ps)),
            st.lists(st.floats(0.0, 1e300), min_size=len(ps), max_size=len(ps)),
            st.floats(0.01, 20.0),
        )
    )
)
def test_aggregate_is_total_and_finite_over_extreme_magnitudes(
    case: tuple[list[float], list[float], list[float], float],
) -> None:
    prices, weights, spreads, k = case
    agg = aggregate(prices, weights, spreads, k=k, floor_bps=10.0)
    assert agg.kept and min(prices) <= agg.price <= max(prices)
    assert math.isfinite(agg.confidence) and agg.confidence >= 0


def test_a_chainlink_answer_of_2_pow_254_cannot_let_3_percent_off_pools_back_in() -> None:
    # Three honest sources at 2000, two pools 3% off with most of the depth; the 2**254
    # answer (had it passed decoding) shifted the median by half a rank and widened the MAD.
    prices = [2000.0, 2000.0, 2000.0, 2060.0, 2060.0, 2.0**254 / 1e8]
    weights = [1e6, 1e6, 1e6, 5e7, 5e7, 0.0]
    agg = aggregate(prices, weights, [0.0] * 6, k=5.0, floor_bps=10.0)
    assert agg.kept == (0, 1, 2) and agg.price == 2000.0


def test_mad_filter_keeps_the_sources_nearest_the_median_even_with_a_tiny_k() -> None:
    assert mad_filter([100.0, 200.0], k=0.01, floor_bps=0.0) == [0, 1]


@given(st.lists(weight_any, min_size=3, max_size=15))
def test_capped_weights_hold_the_45_percent_cap_over_extreme_magnitudes(
    weights: list[float],
) -> None:
    capped = capped_weights(weights)
    total = sum(capped)
    assert all(math.isfinite(w) and w > 0 for w in capped)
    assert all(w <= MAX_SHARE * total * (1 + 1e-9) for w in capped)
