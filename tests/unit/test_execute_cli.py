"""``hedgeflow execute`` and ``keystore``: refusals at start-up, the key's secrecy."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from connectors.anvil import CHAIN_ID
from connectors.executor_store import ExecutorStore
from flows.cli.execute import (
    check_chain,
    check_config,
    check_store,
    dev_keys,
    keystore_address,
    passphrase,
    unlock,
    write_keystore,
)
from flows.cli.main import main
from operators.config import (
    Config,
    ConfigError,
    DexHedgeConfig,
    ExecutionConfig,
    OrdersConfig,
    RiskConfig,
)

SIGNER = "0x" + "5e" * 20
"""Not one of Anvil's dev accounts."""


def _cfg(**execution: object) -> Config:
    fields: dict[str, object] = {"signers": [SIGNER], "liquidator": SIGNER, "chain_id": 1}
    return Config(
        risk=RiskConfig(venue="0x" + "71" * 20),
        orders=OrdersConfig(secret_file="/run/secrets/orders"),
        execution=ExecutionConfig(**{**fields, **execution}),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (_cfg(chain_id=0), "execution.chain_id must name the chain"),
        (_cfg(signers=[]), "execution.signers must list this executor's address"),
        (Config(execution=_cfg().execution, orders=_cfg().orders), "risk.venue must name"),
        (Config(execution=_cfg().execution, risk=_cfg().risk), "orders.secret_file must name"),
        (
            msgspec.structs.replace(
                _cfg(),
                risk=RiskConfig(
                    venue="0x" + "71" * 20,
                    dex_hedges={
                        SIGNER: {
                            "ETH": DexHedgeConfig(token="0x" + "e7" * 20, quote="0x" + "0c" * 20)
                        }
                    },
                ),
            ),
            r"risk.dex_hedges.0x5e5e.*\.ETH\.token: 0xe7e7.* is not in oracle.tokens",
        ),
    ],
)
def test_check_config_when_a_key_is_wrong_then_the_error_names_it(
    cfg: Config, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, SIGNER)


def test_check_config_when_valid_then_passes() -> None:
    check_config(_cfg(), SIGNER)


def test_dev_key_when_not_on_the_dev_chain_then_refused() -> None:
    from eth_account import Account

    dev = Account.from_key(dev_keys(2)[1]).address.lower()
    assert dev == "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"  # Anvil's account 1
    with pytest.raises(ConfigError, match="public dev keys"):
        check_config(_cfg(signers=[dev], chain_id=1), dev)
    check_config(_cfg(signers=[dev], chain_id=CHAIN_ID), dev)


def test_node_on_another_chain_is_refused_naming_both_ids() -> None:
    with pytest.raises(ConfigError, match=r"execution.chain_id is 1, but the node is on chain 5"):
        check_chain(_cfg(), 5)


def test_state_file_of_another_signer_is_refused(tmp_path: Path) -> None:
    store = ExecutorStore(tmp_path / "s.sqlite")
    check_store(store, SIGNER, 1)
    check_store(store, SIGNER, 1)
    with pytest.raises(ConfigError, match="belongs to signer"):
        check_store(store, "0x" + "99" * 20, 1)
    with pytest.raises(ConfigError, match="belongs to chain_id 1, not 2"):
        check_store(store, SIGNER, 2)


def test_keystore_when_written_then_scrypt_and_only_the_passphrase_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    key = bytes(range(1, 33))
    address = write_keystore(path, key, "pass phrase")
    data = json.loads(path.read_text())
    assert data["crypto"]["kdf"] == "scrypt" and key.hex() not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    assert keystore_address(path) == address
    assert bytes(unlock(path, "pass phrase").key) == key
    with pytest.raises(ConfigError, match="wrong passphrase") as refused:
        unlock(path, "guess")
    assert "guess" not in str(refused.value)
    with pytest.raises(ConfigError, match="never overwritten"):
        write_keystore(path, key, "pass phrase")


def test_passphrase_from_a_file_else_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEDGEFLOW_KEYSTORE_PASSPHRASE", raising=False)
    with pytest.raises(ConfigError, match="HEDGEFLOW_KEYSTORE_PASSPHRASE"):
        passphrase(None)
    monkeypatch.setenv("HEDGEFLOW_KEYSTORE_PASSPHRASE", "from env")
    assert passphrase(None) == "from env"
    f = tmp_path / "p"
    f.write_text("from file\n")
    assert passphrase(f) == "from file"


def test_execute_when_config_lacks_chain_id_then_exit_2_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keystore = tmp_path / "k.json"
    write_keystore(keystore, bytes(range(1, 33)), "p")
    config = tmp_path / "c.toml"
    config.write_text('[risk]\nvenue = "0x' + "71" * 20 + '"\n')
    code = main(["execute", "--config", str(config), "--brokers", "127.0.0.1:1",
                 "--keystore", str(keystore), "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "execution.chain_id must name the chain" in capsys.readouterr().err


def test_execute_help_names_the_kill_switch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["execute", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--halt" in out and "--resume" in out and "--keystore" in out


def test_halt_then_resume_set_the_trading_state_in_the_signers_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keystore = tmp_path / "k.json"
    signer = write_keystore(keystore, bytes(range(1, 33)), "p")
    base = [  # no broker needed
        "execute",
        "--keystore",
        str(keystore),
        "--out",
        str(tmp_path),
    ]
    assert main([*base, "--halt", "--reason", "incident 42"]) == 0
    store = ExecutorStore(tmp_path / "executor" / f"{signer}.sqlite")
    assert (store.get("trading_state"), store.get("trading_reason")) == (
        "halted",
        "manual: incident 42",
    )
    assert main([*base, "--resume"]) == 0
    assert store.get("trading_state") == "active"
    assert "ACTIVE" in capsys.readouterr().out


def test_execute_without_brokers_is_refused_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keystore = tmp_path / "k.json"
    write_keystore(keystore, bytes(range(1, 33)), "p")
    assert main(["execute", "--keystore", str(keystore), "--out", str(tmp_path)]) == 2
    assert "execute needs --brokers" in capsys.readouterr().err
