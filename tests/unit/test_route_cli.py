"""``hedgeflow route``: the issue's schema in and out, and bad input named, exit 2."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.cli import main
from flows.cli.route import load_pools
from operators.routing import route
from operators.uniswap_math import Q96, tick_at_sqrt_ratio

E18 = 10**18
SQRT_PRICE = math.isqrt(5 * 10**8 * Q96 * Q96)  # 2000 USDC per WETH (token1 / token0 raw)
LIQUIDITY = 2 * 10**16
WETH, USDC = "0x" + "c0" * 20, "0x" + "a0" * 20
V2_ADDRESS, V3_ADDRESS = "0x" + "b4" * 20, "0x" + "88" * 20


def pools_json() -> dict[str, Any]:
    """The issue's example: a V2 pair (0.3 % by default) and a full-range V3 pool, 0.05 %."""
    return {
        "tokens": {"WETH": {"address": WETH, "decimals": 18},
                   "USDC": {"address": USDC, "decimals": 6}},
        "pools": [
            {"address": V2_ADDRESS, "kind": "uniswap_v2", "token0": "USDC", "token1": "WETH",
             "reserve0": str(20_000_000 * 10**6), "reserve1": str(10_000 * E18)},
            {"address": V3_ADDRESS, "kind": "uniswap_v3", "token0": "USDC", "token1": "WETH",
             "fee": 500, "tick_spacing": 10, "sqrt_price_x96": str(SQRT_PRICE),
             "liquidity": str(LIQUIDITY), "tick": tick_at_sqrt_ratio(SQRT_PRICE),
             "ticks": [{"index": -887270, "liquidity_net": str(LIQUIDITY)},
                       {"index": 887270, "liquidity_net": str(-LIQUIDITY)}]},
        ],
    }  # fmt: skip


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any, *args: str
) -> tuple[int, str, str]:
    path = tmp_path / "pools.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    code = main(["route", str(path), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_route_prints_the_issues_schema_with_exact_legs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(tmp_path, capsys, pools_json(), "--sell", "WETH",
                          "--amount", str(500 * E18))  # fmt: skip
    assert code == 0, err
    printed = json.loads(out)
    assert list(printed) == ["sell", "buy", "amount_in", "amount_out", "legs",
                             "best_single_pool_out", "gas", "price_impact_bps"]  # fmt: skip
    assert printed["sell"] == "WETH" and printed["buy"] == "USDC"  # --buy from the pools
    assert all(list(leg) == ["pool", "amount_in", "amount_out"] for leg in printed["legs"])
    _, states = load_pools(json.dumps(pools_json()).encode())
    expected = route(states, "WETH", "USDC", 500 * E18)
    assert printed["amount_out"] == str(expected.amount_out)
    assert printed["legs"] == [
        {"pool": leg.pool, "amount_in": str(leg.amount_in), "amount_out": str(leg.amount_out)}
        for leg in expected.legs
    ]
    assert {leg["pool"] for leg in printed["legs"]} == {V2_ADDRESS, V3_ADDRESS}
    assert sum(int(leg["amount_in"]) for leg in printed["legs"]) == 500 * E18
    assert int(printed["amount_out"]) > int(printed["best_single_pool_out"])
    assert isinstance(printed["gas"], int) and isinstance(printed["price_impact_bps"], float)


def test_route_takes_a_v2_fee_and_a_gas_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pools_json()
    data["pools"][0]["fee"] = 100  # a 0.01 % pair now beats the 0.05 % pool for a small order
    code, out, err = _run(tmp_path, capsys, data, "--sell", "WETH", "--buy", "USDC",
                          "--amount", str(E18), "--gas-cost", "40")  # fmt: skip
    assert code == 0, err
    printed = json.loads(out)
    assert [leg["pool"] for leg in printed["legs"]] == [V2_ADDRESS]
    assert printed["gas"] == 135_000


def test_pools_that_cannot_fill_the_order_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pools_json()
    del data["pools"][0]
    tick = tick_at_sqrt_ratio(SQRT_PRICE) // 10 * 10
    data["pools"][0]["ticks"] = [  # about 2 WETH of room within 100 ticks
        {"index": tick - 100, "liquidity_net": str(LIQUIDITY)},
        {"index": tick + 100, "liquidity_net": str(-LIQUIDITY)},
    ]
    code, out, err = _run(tmp_path, capsys, data, "--sell", "WETH", "--amount", str(100 * E18))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "pools.json: the 1 pool(s) of WETH/USDC take at most" in err
    assert "short by" in err


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    data = pools_json()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
SELL = ["--sell", "WETH", "--amount", str(E18)]

BAD_INPUT = [
    (_with(["pools", 0, "reserve0"], 20_000_000_000_000), SELL, "Expected `str`, got `int`"),
    (_with(["pools", 0, "reserve0"], "020"), SELL, "$.pools[0].reserve0"),
    (_with(["pools", 0, "reserve0"], "1e13"), SELL, "$.pools[0].reserve0"),
    (_with(["pools", 0, "reserve1"], "9" * 79), SELL, "$.pools[0].reserve1"),
    (_with(["pools", 0, "reserve1"], str(2**112)), SELL, "pools[0].reserve1: expected 0 <="),
    (_with(["pools", 0, "fees"], 500), SELL, "unknown field `fees` - at `$.pools[0]`"),
    (_with(["pools", 0, "fee"], 1_000_000), SELL, "$.pools[0].fee"),
    (_with(["pools", 1, "kind"], "uniswap_v4"), SELL, "$.pools[1].kind"),
    (_with(["pools", 1, "kind"], _DELETE), SELL, "missing required field `kind`"),
    (_with(["pools", 1, "ticks", 0, "index"], -887265), SELL,
     "pools[1].ticks[0]: expected a multiple of tick_spacing 10"),
    (_with(["pools", 1, "ticks", 1, "liquidity_net"], "-1"), SELL,
     "pools[1].ticks: expected liquidity_net summing to 0"),
    (_with(["pools", 1, "liquidity"], "1"), SELL, "pools[1].liquidity: expected"),
    (_with(["pools", 1, "tick"], 0), SELL, "pools[1].tick: expected"),
    (_with(["pools", 1, "tick_spacing"], 0), SELL, "$.pools[1].tick_spacing"),
    (_with(["pools", 1, "sqrt_price_x96"], "1"), SELL, "pools[1].sqrt_price_x96: expected"),
    (_with(["pools", 1, "token0"], "USDT"), SELL, "pools[1].token0: unknown token 'USDT'"),
    (_with(["pools", 1, "token0"], "WETH"), SELL, "pools[1].token1: expected a token other"),
    (_with(["pools", 1, "address"], V2_ADDRESS), SELL, f"pools[1].address: {V2_ADDRESS} is also"),
    (_with(["pools", 1, "address"], "0x…"), SELL, "$.pools[1].address"),
    (_with(["tokens", "WETH", "decimals"], -1), SELL, "decimals"),
    (_with(["block"], 1), SELL, "unknown field `block`"),
    (pools_json(), ["--sell", "DAI", "--amount", "1"], "--sell: unknown token 'DAI'"),
    (pools_json(), [*SELL, "--buy", "DAI"], "--buy: unknown token 'DAI'"),
    (pools_json(), [*SELL, "--buy", "WETH"], "--buy: expected a token other than --sell"),
    (pools_json(), ["--sell", "WETH", "--amount", "0"], "argument --amount: must be >= 1"),
    (pools_json(), ["--sell", "WETH", "--amount", "1.5"], "argument --amount: expected raw"),
    (pools_json(), ["--sell", "WETH", "--amount", "-1"], "argument --amount"),
    (pools_json(), [*SELL, "--gas-cost", "-1"], "argument --gas-cost"),
    (pools_json(), ["--amount", "1"], "the following arguments are required: --sell"),
    ("{not json", SELL, "invalid pools file: JSON is malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "args", "named"), BAD_INPUT)
def test_bad_input_is_one_line_naming_the_key_and_exit_2(
    data: Any, args: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(tmp_path, capsys, data, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("hedgeflow: route: "), err
    assert named in err, err


def test_a_token_paired_with_two_others_needs_buy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pools_json()
    data["tokens"]["DAI"] = {"address": "0x" + "6b" * 20, "decimals": 18}
    data["pools"][0]["token0"] = "DAI"
    code, _, err = _run(tmp_path, capsys, data, *SELL)
    assert code == 2
    assert "--buy: WETH trades against DAI, USDC; name one with --buy" in err
    code, out, _ = _run(tmp_path, capsys, data, *SELL, "--buy", "DAI")
    assert code == 0
    assert [leg["pool"] for leg in json.loads(out)["legs"]] == [V2_ADDRESS]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return [prefix]
    return [prefix] + [p for key, child in items for p in _paths(child, (*prefix, key))]


_PATHS = _paths(pools_json())[1:]
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**300), 2**300), st.floats(),
    st.text(max_size=90), st.from_regex(r"-?[0-9]{1,90}", fullmatch=True),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=2),
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=st.lists(st.tuples(st.sampled_from(_PATHS), _VALUES), min_size=1, max_size=3))
def test_any_value_at_any_key_routes_or_is_refused_in_one_line(
    changes: list[tuple[tuple[Any, ...], Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data = pools_json()
    for path, value in changes:
        target: Any = data
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):  # an earlier change replaced the parent
            continue
    code, out, err = _run(tmp_path, capsys, data, *SELL)
    assert code in (0, 2)
    if code == 0:
        assert json.loads(out)["amount_in"] == str(E18)
    else:
        assert out == "" and err.count("\n") == 1 and err.startswith("hedgeflow: route: "), err


def test_route_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--help"]) == 0
    assert "usage: hedgeflow route" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["\n", "uni\nswap_v3", "\r\x00\x1b[31m"])
def test_a_value_with_control_characters_is_echoed_escaped_on_one_line(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by the any-value fuzz test: a kind of "\n" echoed in the error made it two lines.
    data = pools_json()
    data["pools"][1]["kind"] = bad
    code, out, err = _run(tmp_path, capsys, data, *SELL)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("hedgeflow: route: "), err
    assert "$.pools[1].kind" in err and repr(bad)[1:-1] in err
