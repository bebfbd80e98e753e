"""Our compiled contracts: their artifacts, and deploying one on a dev node.

The Solidity sources and their solcjs artifacts live in ``infra/contracts/`` (``make
contracts`` rebuilds ``infra/contracts/build/``). ``connectors.uniswap`` adds the Uniswap
artifacts from their npm packages, in the same :class:`Artifact` form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from web3 import Web3

from connectors.anvil import receipt, send_transaction

ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "infra" / "contracts" / "build"
"""Where ``make contracts`` writes the artifacts (committed with the sources)."""
DEPLOY_GAS = 15_000_000
"""Gas limit of a contract creation (the V3 factory, the largest, takes about 5M)."""


class Artifact(msgspec.Struct, frozen=True):
    """A compiled contract, as ``infra/contracts/build.js`` writes it."""

    contractName: str
    abi: list[dict[str, Any]]
    bytecode: str


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    """The artifact of contract ``name`` (e.g. ``"MarginVenue"``) under ``directory``."""
    path = directory / f"{name}.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = f"no artifact for {name}: expected {path} (run `make contracts`)"
        raise FileNotFoundError(msg) from None
    return msgspec.json.decode(data, type=Artifact)


def deploy_artifact(rpc_url: str, sender: str, artifact: Artifact, args: list[Any]) -> str:
    """Deploy ``artifact`` with constructor ``args`` from the unlocked account ``sender``
    and wait until it is mined (the node's automine must be on); the new contract's
    address, lower-case hex."""
    factory = Web3().eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(*args).data_in_transaction
    mined = receipt(rpc_url, send_transaction(rpc_url, sender, None, data, gas=DEPLOY_GAS))
    if not mined.ok or mined.contractAddress is None:
        msg = f"deploying {artifact.contractName} failed: {mined!r}"
        raise RuntimeError(msg)
    return mined.contractAddress.lower()
