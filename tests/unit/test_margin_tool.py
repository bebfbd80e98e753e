"""flows.margin_tool: the margin what-if agrees with the operators and names bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import scipy.sparse as sp

from flows.cli import main
from flows.cli.margin_tool import (
    Portfolio,
    PortfolioError,
    Report,
    load_portfolio,
    margin_report,
)
from operators.greeks import black76
from operators.liquidation import LiquidationParams, liquidation_order
from operators.margin import (
    Instruments,
    MarginParams,
    account_margin,
    collateral_value,
    equity,
    health,
    instrument_values,
    net_by_underlying,
    portfolio_margin,
    standard_margin,
)
from operators.units import InstrumentKind

SPOT_ETH = 2000.0
VOL = 0.6
T30 = 30 / 365
MARGIN = MarginParams()


def portfolio_json(usdc: float = 100_000.0, margin: str = "portfolio") -> dict[str, Any]:
    """Short 10 ETH 30-day 2,200 calls (sold at $50) and long 5 ETH perps (bought at $1,950)."""
    return {
        "collateral": [{"asset": "USDC", "amount": usdc, "price": 1.0, "haircut": 0.0}],
        "prices": {"ETH": SPOT_ETH},
        "vols": {"ETH": VOL},
        "positions": [
            {
                "kind": "call",
                "underlying": "ETH",
                "strike": 2200,
                "expiry_days": 30,
                "size": -10,
                "entry_price": 50.0,
            },
            {"kind": "perp", "underlying": "ETH", "size": 5, "entry_price": 1950},
        ],
        "margin": margin,
    }


def report_of(data: dict[str, Any], worst: int = 5) -> Report:
    return margin_report(load_portfolio(json.dumps(data).encode()), worst)


def decode_error(data: dict[str, Any]) -> str:
    with pytest.raises(PortfolioError) as raised:
        load_portfolio(json.dumps(data).encode())
    return str(raised.value)


# The same book built straight from the operators: the reference for the tool's numbers.
INST = Instruments(
    kind=np.array([InstrumentKind.CALL, InstrumentKind.PERP]),
    underlying=np.array([0, 0]),
    strike=np.array([2200.0, 0.0]),
    expiry_years=np.array([T30, 0.0]),
)
RISK = instrument_values(INST, np.array([SPOT_ETH]), np.array([VOL, VOL]), np.array([VOL]), MARGIN)
SIZES = np.array([-10.0, 5.0])
ROW = sp.csr_matrix(SIZES.reshape(1, 2))
COST = np.array([-10.0 * 50.0 + 5.0 * 1950.0])


def reference_equity(usdc: float) -> float:
    collateral = collateral_value(sp.csr_matrix([[usdc]]), np.array([1.0]), np.array([0.0]))
    return float(equity(collateral, ROW, RISK, COST)[0])


# --- numbers ------------------------------------------------------------------------------


def test_short_call_long_perp_report_equals_direct_operator_calls() -> None:
    report = report_of(portfolio_json())

    eq = reference_equity(100_000.0)
    sm_mm, sm_im = standard_margin(ROW, RISK)
    each_mm, each_im = standard_margin(sp.csr_matrix(np.diag(SIZES)), RISK)
    pm_mm, pm_im, worst = account_margin(ROW, RISK, MARGIN, np.array([True]))
    assert report.equity.equity_usd == eq
    assert report.equity.collateral_usd == 100_000.0
    assert report.equity.pnl_vs_entry_usd == pytest.approx(eq - 100_000.0, abs=1e-9)
    assert report.standard_margin.mm_usd == float(sm_mm[0])
    assert report.standard_margin.im_usd == float(sm_im[0])
    assert [p.standard_mm_usd for p in report.positions] == each_mm.tolist()
    assert [p.standard_im_usd for p in report.positions] == each_im.tolist()
    assert report.portfolio_margin.mm_usd == float(pm_mm[0])
    assert report.portfolio_margin.im_usd == float(pm_im[0])
    assert report.portfolio_margin.worst_scenario.index == int(worst[0])
    assert report.portfolio_margin.worst_scenario.index == int(portfolio_margin(ROW, RISK)[1][0])
    assert report.health == float(health(np.array([eq]), pm_mm)[0])
    assert [p.value_usd for p in report.positions] == RISK.value.tolist()

    # Greeks: delta and gamma from instrument_values, vega and theta from Black-76 (r = 0,
    # so F = S); per underlying the sum over positions (summation order: 1e-12 relative).
    call = black76(True, SPOT_ETH, 2200.0, T30, 0.0, VOL)
    eth = report.greeks["ETH"]
    assert eth.delta == pytest.approx(net_by_underlying(ROW, RISK.delta, INST, 1)[0, 0], rel=1e-12)
    assert eth.delta == pytest.approx(-10.0 * float(call.delta) + 5.0, rel=1e-12)
    assert eth.gamma_per_usd == pytest.approx(-10.0 * float(call.gamma), rel=1e-12)
    assert eth.vega_per_1_vol == pytest.approx(-10.0 * float(call.vega), rel=1e-12)
    assert eth.theta_per_year == pytest.approx(-10.0 * float(call.theta), rel=1e-12)
    perp = report.positions[1].greeks
    assert (perp.delta, perp.gamma_per_usd, perp.vega_per_1_vol, perp.theta_per_year) == (
        5.0,
        0.0,
        0.0,
        0.0,
    )


def test_portfolio_margin_is_worst_scenario_loss_plus_add_ons() -> None:
    pm = report_of(portfolio_json()).portfolio_margin
    assert pm.scenario_loss_usd == -pm.worst_scenario.pnl_usd
    assert pm.mm_usd == pytest.approx(pm.scenario_loss_usd + pm.add_ons_usd, rel=1e-12)
    # Derive's contingency add-ons: 2 % of spot per short option, 3 % per perp contract.
    assert pm.add_ons_usd == pytest.approx(10 * 0.02 * SPOT_ETH + 5 * 0.03 * SPOT_ETH, rel=1e-12)


def test_standard_margin_mode_takes_health_from_standard_mm() -> None:
    report = report_of(portfolio_json(margin="standard"))
    assert report.health == report.equity.equity_usd / report.standard_margin.mm_usd


def test_collateral_without_haircut_takes_the_default_for_its_asset_else_zero() -> None:
    data = portfolio_json()
    data["collateral"] = [
        {"asset": "ETH", "amount": 10, "price": SPOT_ETH},
        {"asset": "DAI", "amount": 1000, "price": 1.0},
    ]
    collateral = report_of(data).collateral
    assert [c.haircut for c in collateral] == [MARGIN.haircuts["ETH"], 0.0]
    assert [c.value_usd for c in collateral] == [10 * SPOT_ETH * 0.8, 1000.0]


def test_worst_scenarios_are_sorted_worst_first_and_are_the_n_worst() -> None:
    pnl = np.asarray(ROW @ RISK.scenario_pnl)[0]
    report = report_of(portfolio_json(), worst=4)
    listed = [s.pnl_usd for s in report.worst_scenarios]
    assert listed == sorted(listed)
    assert listed == sorted(pnl.tolist())[:4]
    assert report.worst_scenarios[0] == report.portfolio_margin.worst_scenario


def test_worst_scenario_reports_its_shocks_and_the_shocked_spot() -> None:
    worst = report_of(portfolio_json()).portfolio_margin.worst_scenario
    # Short calls and long perps: the tail move down with the vol up (Derive's tail row).
    assert (worst.spot_shock, worst.vol_shock) == (-0.2, "up")
    assert worst.spot_usd == {"ETH": pytest.approx(SPOT_ETH * 0.8, rel=1e-12)}


def test_worst_below_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="worst must be >= 1; got 0"):
        report_of(portfolio_json(), worst=0)


# --- liquidation --------------------------------------------------------------------------


def test_healthy_portfolio_gives_no_liquidation() -> None:
    report = report_of(portfolio_json(usdc=100_000.0))
    assert report.health is not None and report.health > 1
    assert report.liquidation is None


def test_under_margined_portfolio_gives_the_operators_liquidation_order() -> None:
    report = report_of(portfolio_json(usdc=2_000.0))  # equity about $2,096 < MM $2,360

    eq = reference_equity(2_000.0)
    order = liquidation_order(ROW, eq, RISK, MARGIN, LiquidationParams(), portfolio_margined=True)
    assert order is not None
    assert report.health is not None and report.health < 1
    assert report.liquidation is not None
    assert report.liquidation.health == order.health
    assert report.liquidation.equity_after_usd == order.equity_after
    assert [(leg.position, leg.size, leg.price_usd) for leg in report.liquidation.legs] == [
        (leg.instrument, leg.size, leg.price) for leg in order.legs
    ]


# --- bad input ----------------------------------------------------------------------------


def test_misspelt_key_is_named_with_its_place() -> None:
    data = portfolio_json()
    data["positions"][0]["strik"] = data["positions"][0].pop("strike")
    error = decode_error(data)
    assert "unknown field `strik`" in error
    assert "$.positions[0]" in error


def test_negative_strike_is_named_with_its_place() -> None:
    data = portfolio_json()
    data["positions"][0]["strike"] = -2200
    error = decode_error(data)
    assert "Expected `float` > 0.0" in error
    assert "$.positions[0].strike" in error


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["positions"][0].pop("expiry_days"), "a call needs strike and expiry_days"),
        (lambda d: d["positions"][1].update(strike=2000), "a perp takes no strike or expiry_days"),
        (lambda d: d["positions"][1].update(underlying="BTC"), "got 'BTC'"),
        (lambda d: d["positions"][1].update(kind="future"), "`$.positions[1].kind`"),
        (lambda d: d.update(vols={"ETH": 0.6, "BTC": 0.5}), "vols must have the keys of prices"),
        (lambda d: d.update(atm_vols={"ETh": 0.6}), "atm_vols must name underlyings"),
        (lambda d: d.update(margin="cross"), "`$.margin`"),
        (lambda d: d.pop("margin"), "missing required field `margin`"),
        (lambda d: d["collateral"][0].update(haircut=1.5), "`$.collateral[0].haircut`"),
        (lambda d: d["prices"].update(ETH=0), "prices['ETH'] must be > 0 (USD); got 0.0"),
        (lambda d: d["vols"].update(ETH=-0.1), "vols['ETH'] must be >= 0; got -0.1"),
    ],
    ids=[
        "option-without-expiry",
        "perp-with-strike",
        "underlying-without-price",
        "unknown-kind",
        "vol-without-price",
        "misspelt-atm-vol",
        "unknown-margin-mode",
        "missing-margin-mode",
        "haircut-above-one",
        "zero-price",
        "negative-vol",
    ],
)
def test_bad_portfolio_is_an_error_naming_what_is_wrong(change: Any, named: str) -> None:
    data = portfolio_json()
    change(data)
    assert named in decode_error(data)


def test_portfolio_is_a_frozen_record() -> None:
    portfolio = load_portfolio(json.dumps(portfolio_json()).encode())
    assert isinstance(portfolio, Portfolio)
    with pytest.raises(AttributeError):
        portfolio.margin = "standard"  # type: ignore[misc]


# --- command line -------------------------------------------------------------------------


def test_cli_margin_prints_the_report_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps(portfolio_json()))

    assert main(["margin", str(path), "--worst", "3"]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed == msgspec.to_builtins(report_of(portfolio_json(), worst=3))
    assert len(printed["worst_scenarios"]) == 3
    assert printed["liquidation"] is None
    assert set(printed["greeks"]["ETH"]) == {
        "delta",
        "gamma_per_usd",
        "vega_per_1_vol",
        "theta_per_year",
    }


def test_cli_margin_of_under_margined_portfolio_prints_the_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps(portfolio_json(usdc=2_000.0)))

    assert main(["margin", str(path)]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed["health"] < 1
    assert printed["liquidation"]["legs"]
    assert printed == msgspec.to_builtins(report_of(portfolio_json(usdc=2_000.0)))


def test_cli_margin_with_bad_portfolio_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = portfolio_json()
    data["positions"][0]["strik"] = data["positions"][0].pop("strike")
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps(data))

    assert main(["margin", str(path)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"hedgeflow: {path}: invalid portfolio: ")
    assert "unknown field `strik` - at `$.positions[0]`" in captured.err


def test_cli_margin_with_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["margin", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_long_btc_perp_against_short_eth_perp_reports_both_losses_as_scenario_loss() -> None:
    # $300k each way: each underlying loses 20 % in its own tail, 60,000 each.
    data = {
        "collateral": [{"asset": "USDC", "amount": 500_000.0, "price": 1.0, "haircut": 0.0}],
        "prices": {"BTC": 60_000.0, "ETH": 3_000.0},
        "vols": {"BTC": 0.5, "ETH": 0.5},
        "positions": [
            {"kind": "perp", "underlying": "BTC", "size": 5, "entry_price": 60_000.0},
            {"kind": "perp", "underlying": "ETH", "size": -100, "entry_price": 3_000.0},
        ],
        "margin": "portfolio",
    }
    pm = report_of(data).portfolio_margin
    assert pm.scenario_loss_usd == pytest.approx(120_000.0)
    assert pm.add_ons_usd == pytest.approx(0.03 * 600_000.0)
