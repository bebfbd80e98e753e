"""The command line: help, and start-up errors that name the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main

COMMANDS = ["demo", "broker", "topics", "run", "ingest", "replay", "record", "publish", "generate",
            "devchain", "greeks", "margin", "summary"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "usage: hedgeflow " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[oracle]\nwindow_s = -5\n", ["window_s", "-5"]),
        ("[oracle]\nwindowz = 5\n", ["windowz", "$.oracle"]),
        ("[run]\nbatch_size = 0\n", ["batch_size", "0"]),
        ('[topics]\nchain_logs = "a b"\n', ["chain_logs", "'a b'"]),
    ],
)
def test_bad_config_stops_at_start_naming_key_and_value(
    toml: str, named: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    code = main(
        ["replay", str(tmp_path / "none.parquet"), "--out", str(tmp_path), "--config", str(config)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert all(text in err for text in named), err


def test_missing_recording_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "none.parquet" in capsys.readouterr().err


def test_processes_below_one_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", str(tmp_path), "--out", str(tmp_path), "--processes", "0"])
    assert code == 2
    assert "--processes must be >= 1; got 0" in capsys.readouterr().err


def test_ingest_against_an_unreachable_node_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["ingest", "--rpc", "http://127.0.0.1:9", "--dry-run"])
    assert code == 2
    assert "cannot reach an EVM node at http://127.0.0.1:9" in capsys.readouterr().err


def test_ingest_needs_brokers_unless_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest"]) == 2
    assert "ingest needs --brokers (or --dry-run)" in capsys.readouterr().err


def test_greeks_csv_prints_rows_and_flags_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "in.csv"
    rows.write_text(
        "kind,model,S,K,T,r,q,sigma\ncall,bsm,100,100,1,0.05,0,0.2\nput,bsm,100,100,-1,0,0,0.2\n"
    )
    assert main(["greeks", str(rows)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("price,delta,gamma,vega,theta,rho,error")
    assert out[1].startswith("call,bsm,100,100,1,0.05,0,0.2,10.45")  # Hull: 10.4506
    assert "T must be >= 0" in out[2]


def test_run_risk_without_a_venue_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "risk", "--brokers", "127.0.0.1:9"]) == 2
    assert "run risk needs risk.venue" in capsys.readouterr().err


def test_non_utf8_config_file_is_a_one_line_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes("[oracle]\n# réglages\nwindow_s = 60\n".encode("latin-1"))
    code = main(["replay", str(tmp_path / "r.parquet"), "--out", str(tmp_path), "--config",
                 str(config)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"hedgeflow: {config}: configuration is not UTF-8 text: ")
    assert err.count("\n") == 1 and "Traceback" not in err
