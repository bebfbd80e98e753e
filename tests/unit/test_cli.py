"""The command line: help, and start-up errors that name the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from connectors.recording import write_recording
from flows.cli import main
from flows.cli.runner import claim_recovery, config_digest
from flows.cli.summary import summary_text
from operators.config import ConfigError, load_config
from operators.model import RawMessage

COMMANDS = ["demo", "broker", "topics", "run", "ingest", "replay", "record", "publish", "generate",
            "devchain", "greeks", "margin", "summary"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
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


DEAD_BROKER = ["--brokers", "127.0.0.1:9", "--broker-timeout", "0.5"]
"""Nothing listens on port 9 (discard) here: a broker that refuses every connection."""


def _bad_arguments(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, text the error must contain) for each class of bad start-up argument."""
    recording = tmp / "recording.parquet"
    write_recording([RawMessage("chain.logs", 0, 0, 1_700_000_000_000, None, b"{}")], recording)
    jsonl = tmp / "bad.jsonl"
    row = '{"topic": "chain.logs", "partition": %s, "offset": 0, "timestamp_ms": 1}\n'
    jsonl.write_text(row % "0" + row % '"x"')
    garbage = tmp / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    latin1 = tmp / "latin1.toml"
    latin1.write_bytes(b"# caf\xe9\n")
    out = ["--out", str(tmp / "out")]
    return [
        (["generate", *out, "--minutes", "0"], "argument --minutes: must be > 0 and finite"),
        (["generate", *out, "--minutes", "nan"], "argument --minutes"),
        (["generate", *out, "--partitions", "0"], "argument --partitions: must be >= 1; got '0'"),
        (["generate", *out, "--seed", "-1"], "argument --seed: must be >= 0"),
        (["generate", *out, "--minutes", "1e300"], "generate: minutes is out of range; got 1e+300"),
        (["publish", str(recording), "--brokers", "b:1", "--speed", "0"], "argument --speed"),
        (["publish", str(recording), *DEAD_BROKER], "cannot reach a Kafka broker at 127.0.0.1:9"),
        (["topics", *DEAD_BROKER], "cannot reach a Kafka broker at 127.0.0.1:9 within 0.5 s"),
        (["run", "oracle", *DEAD_BROKER], "cannot reach a Kafka broker at 127.0.0.1:9"),
        (["record", *DEAD_BROKER, "--topics", "t", *out], "cannot reach a Kafka broker"),
        (["topics", "--brokers", "b:1", "--broker-timeout", "0"], "argument --broker-timeout"),
        (["topics", "--brokers", "b:1", "--partitions", "x"], "expected an integer; got 'x'"),
        (["greeks", str(tmp)], "argument input: expected a file; got"),
        (["margin", str(tmp)], "argument input: expected a file; got"),
        (["margin", str(recording), "--worst", "0"], "argument --worst: must be >= 1"),
        (["replay", str(jsonl), *out], "(line 2)"),
        (["replay", str(garbage), *out], "garbage.parquet: expected a Parquet file"),
        (["replay", str(tmp / "none.parquet"), *out], "none.parquet"),
        (["replay", str(recording), *out, "--processes", "0"], "argument --processes: must be"),
        (["replay", str(recording), *out, "--config", str(tmp)], "--config: expected a TOML file"),
        (["replay", str(recording), *out, "--config", str(latin1)], "not UTF-8 text"),
        (["ingest", "--from-block", "-1", "--dry-run"], "argument --from-block: must be >= 0"),
        (["devchain", "--accounts", "0"], "argument --accounts: must be >= 1"),
        (["summary", str(tmp / "missing")], "which does not exist"),
        (["summary", str(tmp)], "found none"),
        (["run", "sideways", "--brokers", "b:1"], "argument stage: invalid choice: 'sideways'"),
    ]  # fmt: skip


def test_every_command_with_a_bad_argument_stops_with_one_line_and_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The class behind generate --minutes 0, --partitions 0, publish --speed 0, topics
    against a dead broker, greeks or margin given a directory and a bad recording file:
    each stops at start with one ``hedgeflow:`` line naming the flag or file, exit 2."""
    cases = _bad_arguments(tmp_path)
    assert {argv[0] for argv, _ in cases} >= set(COMMANDS) - {"demo", "broker"}
    for argv, named in cases:
        code = main(argv)
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line and " INFO " not in line]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("hedgeflow: "), (argv, err)
        assert named in lines[0], (argv, err)
        assert "Traceback" not in err


def test_greeks_csv_saved_with_a_utf8_bom_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "excel.csv"
    rows.write_bytes(b"\xef\xbb\xbfkind,model,S,K,T,r,q,sigma\r\ncall,bsm,100,100,1,0.05,0,0.2\r\n")
    assert main(["greeks", str(rows)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("kind,model,")
    assert out[1].startswith("call,bsm,100,100,1,0.05,0,0.2,10.45")


def test_replay_into_a_directory_with_datasets_of_an_earlier_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "out" / "oracle_prices" / "date=2023-05-02"
    earlier.mkdir(parents=True)
    pl.DataFrame({"asset": ["ETH"]}).write_parquet(earlier / "part-0-00000000.parquet")
    recording = tmp_path / "recording.parquet"
    write_recording([RawMessage("chain.logs", 0, 0, 1_700_000_000_000, None, b"{}")], recording)

    assert main(["replay", str(recording), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "holds datasets of an earlier run (oracle_prices)" in err


def test_summary_counts_rows_of_topics_the_configuration_does_not_name(tmp_path: Path) -> None:
    stats = tmp_path / "partition_stats" / "date=2023-05-02"
    stats.mkdir(parents=True)
    pl.DataFrame({"part": ["0-chain.logs"], "messages": [3], "observations": [1],
                  "retractions": [0], "skipped": [2], "rejected": [0]}).write_parquet(
        stats / "part-0-00000000.parquet"
    )  # fmt: skip
    text = summary_text(tmp_path, unread={"orders": 5, "fills": 2}, identical=4)
    assert (
        "not replayed: 7 rows of topics the configuration does not name (fills 2, orders 5)" in text
    )
    assert "replayed once: 4 identical repeated rows" in text


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


def test_recovery_directory_refuses_another_run_naming_the_field(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    identity = {"stage": "replay", "recording": "1 file(s), 10 bytes", "config": "sha256 ab"}

    assert claim_recovery(recovery, identity) is False  # new: initialised
    assert claim_recovery(recovery, identity) is True  # the same run: resumed
    with pytest.raises(ConfigError, match=r"belongs to another run: its config is 'sha256 ab', "
                       r"this run's is 'sha256 cd'; give a new directory"):  # fmt: skip
        claim_recovery(recovery, {**identity, "config": "sha256 cd"})
    with pytest.raises(ConfigError, match=r"its stage is 'replay', this run's is 'run oracle'"):
        claim_recovery(recovery, {**identity, "stage": "run oracle"})


def test_recovery_directory_without_its_identity_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "part-0.sqlite3").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"is not empty and has no hedgeflow-recovery\.json"):
        claim_recovery(tmp_path, {"stage": "replay"})


def test_config_digest_ignores_run_and_sees_the_rest() -> None:
    base = load_config(None)
    assert config_digest(base) == config_digest(load_config("[run]\nbatch_size = 7\n"))
    assert config_digest(base) != config_digest(load_config("[risk]\nshards = 5\n"))


def test_replay_sends_conflicting_offsets_to_the_deadletter_and_counts_unnamed_topics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The findings: duplicate offsets with different content were accepted silently (and
    which copy won depended on row order); rows of topics the configuration does not name
    were dropped without a word."""
    quote = b'{"source": "s", "base": "ETH", "quote": "USD", "bid": 1, "ask": 2, "ts": %d}'
    ts = [1_700_000_000_000 + n for n in range(5)]
    rows = [RawMessage("dex.quotes", 0, n, t, b"s", quote % t) for n, t in enumerate(ts)]
    conflict = RawMessage("dex.quotes", 0, 2, 1_700_000_000_002, b"s", b"another")
    unnamed = [RawMessage("orders", 0, n, 1_700_000_000_000, None, b"{}") for n in range(3)]
    write_recording([*rows, conflict, rows[1], *unnamed], tmp_path / "recording.parquet")

    assert (
        main(["replay", str(tmp_path / "recording.parquet"), "--out", str(tmp_path / "out")]) == 0
    )
    out = capsys.readouterr().out
    assert "not replayed: 3 rows of topics the configuration does not name (orders 3)" in out
    assert "replayed once: 1 identical repeated rows" in out
    deadletter = pl.read_parquet(tmp_path / "out" / "deadletter" / "**" / "*.parquet")
    duplicates = deadletter.filter(pl.col("stage") == "recording")
    assert duplicates["offset"].to_list() == [2, 2]
    assert sorted(duplicates["raw"].to_list()) == sorted([conflict.value, rows[2].value])
    assert duplicates["reason"][0] == (
        "duplicate_offset: 2 different copies of dex.quotes[0] offset 2; none is replayed"
    )
    stats = pl.read_parquet(tmp_path / "out" / "partition_stats" / "**" / "*.parquet")
    assert stats["messages"].max() == 4, "offsets 0, 1, 3, 4"
