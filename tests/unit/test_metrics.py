"""The metrics' names and their updates, the dashboard against the registry, JSON-lines logs."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
from pathlib import Path

import bytewax.connectors.kafka  # noqa: F401  (registers Bytewax's consumer lag gauge)
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from connectors import metrics
from flows.cli.json_logs import JsonFormatter
from flows.cli.main import main
from operators.config import ConfigError
from operators.model import AccountRiskRow, Execution, OraclePrice
from tests.integration.test_metrics import dashboard_names

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


_ASSETS = itertools.count()


def _families() -> dict[str, str]:
    """Every metric family of the registry: its name -> its type."""
    return {f.name: f.type for f in REGISTRY.collect()}


def _exported() -> set[str]:
    """The names a scrape of this registry can hold (and histograms by their base name)."""
    names = set()
    for name, kind in _families().items():
        names |= {name + s for s in SUFFIXES[kind]} | {name}
    return names


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    missing = dashboard_names() - _exported()
    assert not missing, f"infra/grafana/hedgeflow.json queries unknown metrics: {missing}"


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_table() -> dict[str, str]:
    """The README's metrics table (Operations): name as scraped -> type."""
    rows = re.findall(r"^\| `(hedgeflow_[a-z_]+)` \| (\w+) \|", README.read_text(), re.M)
    return dict(rows)


def test_hedgeflow_metrics_are_the_readme_table_and_follow_prometheus_naming() -> None:
    # prometheus_client keeps a counter's family name without ``_total`` and scrapes it as
    # NAME_total
    ours = {
        n + ("_total" if k == "counter" else ""): k
        for n, k in _families().items()
        if n.startswith("hedgeflow_")
    }
    assert ours == _readme_table()
    for name, kind in ours.items():
        assert (kind == "counter") == name.endswith("_total"), name
        if kind == "histogram":  # a latency, in the base unit
            assert name.endswith("_seconds"), name


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(metrics.ORACLE_STATUSES))))
def test_oracle_status_is_one_for_the_newest_window_and_age_follows_it(
    prices: list[tuple[int, str]],
) -> None:
    asset = f"T{next(_ASSETS)}"  # a fresh asset per example: the registry is global
    gauges = metrics.OracleGauges()
    newest: tuple[int, str] | None = None
    for minute, status in prices:
        end_ms = 1_700_000_000_000 + minute * 60_000
        row = OraclePrice(
            asset=asset, window_start_ms=end_ms - 60_000, window_end_ms=end_ms, price=1.0,
            confidence=0.0, sources=1, status=status, held=False, revision=0,
        )  # fmt: skip
        gauges.on_price(row, now_s=end_ms / 1000 + 2.0)
        if newest is None or end_ms >= newest[0]:
            newest = (end_ms, status)
    if newest is None:
        assert _value("hedgeflow_oracle_age_seconds", asset=asset) == 0.0
        return
    ones = [
        s
        for s in metrics.ORACLE_STATUSES
        if _value("hedgeflow_oracle_status", asset=asset, status=s) == 1
    ]
    assert ones == [newest[1]]  # a correction of an older window does not change the status
    assert gauges.newest_ms[asset] == newest[0]
    assert _value("hedgeflow_oracle_age_seconds", asset=asset) >= 0.0


def _row(account: str, equity: float, mm: float) -> AccountRiskRow:
    return AccountRiskRow(
        account=account, ts_event_ms=0, equity=equity, im=mm, mm=mm, health=0.0,
        worst_scenario=0, pnl=0.0, bad_debt_usd=0.0, margin_mode="portfolio", greeks="{}",
    )  # fmt: skip


@given(
    st.lists(st.tuples(st.sampled_from("abcde"), st.floats(-10, 10), st.floats(0, 10)), min_size=1)
)
def test_accounts_below_maintenance_count_each_account_by_its_newest_row(
    rows: list[tuple[str, float, float]],
) -> None:
    gauges = metrics.AccountGauges()
    for account, equity, mm in rows:
        gauges.on_row(_row(account, equity, mm))
    newest = {a: (e, m) for a, e, m in rows}
    expected = sum(1 for e, m in newest.values() if m > 0 and e < m)  # operators.liquidation
    assert _value("hedgeflow_accounts_below_maintenance_margin") == expected


def _execution(state: str, final: bool, fee: str | None) -> Execution:
    return Execution(
        order_id="0x" + "1" * 64, seq=1, state=state, final=final, account="0x" + "a" * 40,  # type: ignore[arg-type]
        kind="hedge", instrument="0x" + "b" * 64, signer="0x" + "c" * 40, ts_event_ms=0,
        tx_hash=None, nonce=None, block_number=None, block_hash=None, gas_used=None,
        fee_paid_wei=fee, max_fee_per_gas_wei=None, max_priority_fee_per_gas_wei=None,
        code="", detail="",
    )  # fmt: skip


def test_gas_is_counted_once_per_order_when_its_inclusion_is_final() -> None:
    gas_before = _value("hedgeflow_executor_gas_spent_wei_total")
    mined_before = _value("hedgeflow_orders_total", kind="hedge", outcome="mined")
    for e in (
        _execution("sent", False, None),
        _execution("mined", False, "21000000"),  # included, not yet confirmed
        _execution("mined", True, "21000000"),
    ):
        metrics.count_execution(e)
    assert _value("hedgeflow_executor_gas_spent_wei_total") - gas_before == 21_000_000
    assert _value("hedgeflow_orders_total", kind="hedge", outcome="mined") - mined_before == 1


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40), st.text(max_size=40))
def test_deadletter_reason_is_the_code_before_the_colon(code: str, detail: str) -> None:
    code = code.replace(":", "").strip()
    assert metrics.reason_code(f"{code}: {detail}") == code


@given(st.text(), st.one_of(st.none(), st.text()))
def test_a_json_log_record_is_one_line_with_its_fields(message: str, tx_hash: str | None) -> None:
    record = logging.LogRecord(
        "hedgeflow.executor", logging.INFO, "x.py", 1, "%s", (message,), None
    )
    record.__dict__.update(order_id="0x" + "1" * 64, tx_hash=tx_hash)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == message and parsed["level"] == "INFO"
    assert parsed["logger"] == "hedgeflow.executor" and parsed["ts"].endswith("+00:00")
    assert parsed["order_id"] == "0x" + "1" * 64 and parsed["tx_hash"] == tx_hash
    assert set(parsed) == {"ts", "level", "logger", "message", "order_id", "tx_hash"}


@pytest.mark.parametrize(
    ("flag", "value", "error"),
    [
        ("--metrics-port", "0", "must be >= 1; got '0'"),
        ("--metrics-port", "65536", "must be a TCP port, <= 65535; got '65536'"),
        ("--log-format", "xml", "invalid choice: 'xml'"),
    ],
)
def test_a_bad_metrics_port_or_log_format_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, error: str
) -> None:
    code = main(["run", "oracle", "--brokers", "127.0.0.1:1", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"argument {flag}" in err and error in err


def test_a_metrics_port_already_taken_stops_at_start_up_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for start in (metrics.serve, lambda p: metrics.enable_dataflow_api(p, Path("unused"))):
            with pytest.raises(ConfigError, match=f"--metrics-port {port}: Address already in use"):
                start(port)
    assert "BYTEWAX_DATAFLOW_API_ENABLED" not in os.environ  # refused before anything is set
