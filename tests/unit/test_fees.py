"""EIP-1559 fee suggestions and replacement raises, in exact integer wei."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.fees import (
    MIN_PRIORITY_FEE_WEI,
    FeeHistory,
    Fees,
    bumped,
    eth_to_wei,
    expected_gas_price,
    gwei_to_wei,
    parse_fee_history,
    suggest_fees,
)

GWEI = 10**9
CAP = 500 * GWEI
wei = st.integers(min_value=0, max_value=10**24)


def _history(base: list[int], tips: list[int]) -> FeeHistory:
    return FeeHistory(base_fee_per_gas=base, reward=[[t] for t in tips])


def test_suggestion_is_twice_the_next_base_fee_plus_the_median_tip() -> None:
    history = _history([10 * GWEI, 12 * GWEI, 14 * GWEI, 11 * GWEI], [3, 1, 2])

    fees = suggest_fees(history, CAP)

    assert fees == Fees(max_fee_per_gas=2 * 11 * GWEI + 2, max_priority_fee_per_gas=2)


def test_suggestion_over_an_even_count_of_blocks_takes_the_higher_middle_tip() -> None:
    fees = suggest_fees(_history([7] * 5, [1, 9, 4, 6]), CAP)
    assert fees.max_priority_fee_per_gas == 6 and fees.max_fee_per_gas == 2 * 7 + 6


def test_suggestion_when_anvil_reports_zero_tips_then_one_wei() -> None:
    fees = suggest_fees(_history([GWEI, GWEI, GWEI], [0, 0]), CAP)
    assert fees == Fees(max_fee_per_gas=2 * GWEI + 1, max_priority_fee_per_gas=MIN_PRIORITY_FEE_WEI)


def test_suggestion_of_a_history_of_no_blocks_reads_the_next_base_fee_alone() -> None:
    assert suggest_fees(_history([5], []), CAP) == Fees(
        max_fee_per_gas=11, max_priority_fee_per_gas=1
    )


def test_suggestion_above_the_cap_is_cut_to_it_with_priority_not_above_max_fee() -> None:
    fees = suggest_fees(_history([10**15, 10**15], [10**16]), cap_wei=10**14)
    assert fees == Fees(max_fee_per_gas=10**14, max_priority_fee_per_gas=10**14)


@given(
    st.lists(wei, min_size=1, max_size=12).flatmap(
        lambda base: st.tuples(st.just(base), st.lists(wei, min_size=len(base) - 1,
                                                      max_size=len(base) - 1))
    ),
    st.integers(min_value=1, max_value=10**24),
)  # fmt: skip
def test_suggestion_property_within_cap_priority_at_most_max_fee(
    history: tuple[list[int], list[int]], cap: int
) -> None:
    base, tips = history
    fees = suggest_fees(_history(base, tips), cap)
    assert 1 <= fees.max_priority_fee_per_gas <= fees.max_fee_per_gas <= cap
    if 2 * base[-1] + max(tips, default=0) + 1 <= cap:  # nothing cut
        assert fees.max_fee_per_gas == 2 * base[-1] + fees.max_priority_fee_per_gas
        assert min(tips, default=1) <= fees.max_priority_fee_per_gas


def test_parse_fee_history_reads_json_rpc_hex_and_integers() -> None:
    result = {
        "oldestBlock": "0x10",
        "baseFeePerGas": ["0x3b9aca00", "0x3b9aca01", 1_000_000_002],
        "gasUsedRatio": [0.5, 0.0],
        "reward": [["0x0"], [7]],
    }

    history = parse_fee_history(result)

    assert history == FeeHistory(base_fee_per_gas=[10**9, 10**9 + 1, 10**9 + 2], reward=[[0], [7]])
    assert history.next_base_fee == 10**9 + 2


ANVIL_FEE_HISTORY = {
    "baseFeePerGas": ["0x3b9aca00", "0x3b9aca00", "0x34d327ff"],
    "gasUsedRatio": [0.0, 0.045014266666666664],
    "baseFeePerBlobGas": ["0x1", "0x1", "0x1"],
    "blobGasUsedRatio": [0.0, 0.0],
    "oldestBlock": "0x0",
    "reward": [["0x0"], ["0x3b9aca00"]],
}
"""``eth_feeHistory(4, "latest", [50.0])`` as Anvil 1.7.1 answered it two blocks after
genesis (the deployment block): an empty block's tip is 0."""


def test_anvil_fee_history_gives_twice_the_next_base_fee_plus_the_higher_middle_tip() -> None:
    fees = suggest_fees(parse_fee_history(ANVIL_FEE_HISTORY), CAP)
    assert fees == Fees(max_fee_per_gas=2 * 0x34D327FF + 10**9, max_priority_fee_per_gas=10**9)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"reward": [["0x1"]]}, "missing or bad 'baseFeePerGas'"),
        ({"baseFeePerGas": ["0x1", "0x1"], "reward": [["0x1", "0x2"]]}, "one percentile"),
        ({"baseFeePerGas": ["0x1", "0x1"], "reward": []}, "expected 1 reward rows"),
        ({"baseFeePerGas": [], "reward": []}, "next block's base fee"),
        ({"baseFeePerGas": ["0x1", "-0x1"], "reward": [["0x1"]]}, "bad_quantity"),
        ({"baseFeePerGas": ["0x1", -1], "reward": [["0x1"]]}, "bad_quantity"),
    ],
)
def test_parse_fee_history_of_a_malformed_answer_raises_naming_it(
    result: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fee_history(result)


def test_bump_raises_both_fields_by_the_bump_rounded_up() -> None:
    previous = Fees(max_fee_per_gas=100, max_priority_fee_per_gas=10)
    low = Fees(max_fee_per_gas=50, max_priority_fee_per_gas=5)

    assert bumped(previous, low, 125_000, CAP) == Fees(
        max_fee_per_gas=113, max_priority_fee_per_gas=12
    )


def test_bump_takes_the_suggestion_when_it_is_higher() -> None:
    previous = Fees(max_fee_per_gas=100, max_priority_fee_per_gas=10)
    high = Fees(max_fee_per_gas=300, max_priority_fee_per_gas=40)
    assert bumped(previous, high, 125_000, CAP) == high


def test_bump_past_the_cap_cannot_replace() -> None:
    previous = Fees(max_fee_per_gas=CAP - 1, max_priority_fee_per_gas=1)
    assert bumped(previous, previous, 125_000, CAP) is None


def test_bump_of_a_suggestion_above_the_cap_cuts_it_to_the_cap() -> None:
    previous = Fees(max_fee_per_gas=100, max_priority_fee_per_gas=10)
    huge = Fees(max_fee_per_gas=10**30, max_priority_fee_per_gas=10**30)
    assert bumped(previous, huge, 125_000, cap_wei=1_000) == Fees(
        max_fee_per_gas=1_000, max_priority_fee_per_gas=1_000
    )


def test_bump_of_a_zero_tip_still_raises_it_as_geth_requires_strictly_higher() -> None:
    # geth list.Add refuses a replacement unless both fields are strictly higher; a ppm raise
    # of 0 wei (or of 1..7 wei at 12.5%, rounded up) alone would not always be
    previous = Fees(max_fee_per_gas=0, max_priority_fee_per_gas=0)
    assert bumped(previous, previous, 125_000, CAP) == Fees(
        max_fee_per_gas=1, max_priority_fee_per_gas=1
    )


def test_bump_of_inconsistent_fees_is_a_bug_and_raises() -> None:
    bad = Fees(max_fee_per_gas=1, max_priority_fee_per_gas=2)
    good = Fees(max_fee_per_gas=2, max_priority_fee_per_gas=1)
    with pytest.raises(ValueError, match="previous fees must have"):
        bumped(bad, good, 125_000, CAP)
    with pytest.raises(ValueError, match="fee cap must be >= 1 wei"):
        bumped(good, good, 125_000, 0)


def _fees() -> st.SearchStrategy[Fees]:
    return st.tuples(wei, wei).map(
        lambda pair: Fees(max_fee_per_gas=max(pair), max_priority_fee_per_gas=min(pair))
    )


@given(
    _fees(),
    _fees(),
    st.integers(min_value=100_000, max_value=2_000_000),
    st.integers(min_value=1, max_value=10**25),
)
def test_bump_property_geth_accepts_it_and_it_stays_under_the_cap(
    previous: Fees, suggested: Fees, bump_ppm: int, cap: int
) -> None:
    raised = bumped(previous, suggested, bump_ppm, cap)
    factor = Fraction(1_000_000 + bump_ppm, 1_000_000)
    least_max = max(previous.max_fee_per_gas * factor, previous.max_fee_per_gas + 1)
    if least_max > cap:
        assert raised is None
        return
    assert raised is not None
    for new, old in (
        (raised.max_fee_per_gas, previous.max_fee_per_gas),
        (raised.max_priority_fee_per_gas, previous.max_priority_fee_per_gas),
    ):
        assert new >= old * factor and new > old  # both fields by >= the bump, strictly
        assert new * 10 >= old * 11  # so geth's 10% PriceBump holds
        assert new - 1 < max(old * factor, old + 1) or new in (
            min(suggested.max_fee_per_gas, cap),
            min(suggested.max_priority_fee_per_gas, raised.max_fee_per_gas),
        )  # the least integer, unless the suggestion is higher
    assert raised.max_priority_fee_per_gas <= raised.max_fee_per_gas <= cap
    assert raised.max_fee_per_gas >= min(suggested.max_fee_per_gas, cap)


def test_config_amounts_convert_from_their_decimal_text() -> None:
    assert gwei_to_wei(500.0) == 500 * GWEI
    assert gwei_to_wei(0.1) == 100_000_000
    assert gwei_to_wei(1.000000001) == 1_000_000_001
    assert eth_to_wei(0.3) == 3 * 10**17
    assert eth_to_wei(1.0) == 10**18


def test_expected_gas_price_is_the_next_base_fee_and_the_tip_capped() -> None:
    history = FeeHistory(base_fee_per_gas=[10, 12], reward=[[3]])
    assert expected_gas_price(history, 100) == 15
    assert expected_gas_price(history, 14) == 14


@given(
    st.lists(st.integers(0, 10**12), min_size=2, max_size=8),
    st.integers(0, 10**10),
    st.integers(1, 10**13),
)
def test_expected_gas_price_is_what_the_suggested_fees_pay_when_not_capped(
    base: list[int], tip: int, cap: int
) -> None:
    history = FeeHistory(base_fee_per_gas=base, reward=[[tip]] * (len(base) - 1))
    fees = suggest_fees(history, cap)
    expected = expected_gas_price(history, cap)
    assert expected <= cap
    # a block at the next base fee charges min(max fee, base + tip): the expected price
    assert expected == min(fees.max_fee_per_gas, base[-1] + fees.max_priority_fee_per_gas)
