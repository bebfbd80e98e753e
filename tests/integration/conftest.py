"""The real broker and the real chain for integration tests: one Tansu and one Anvil per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.anvil import DevNode
from connectors.broker import EmbeddedBroker
from tests.integration.executor_env import ExecutorEnv, MakeEnv


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A started :class:`EmbeddedBroker`; a broker that cannot start fails the tests."""
    with EmbeddedBroker() as started:
        yield started


@pytest.fixture(scope="session")
def devnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevNode]:
    """A started :class:`DevNode` (Anvil), its chain kept in a state file so that a test may
    stop and start it; a node that cannot start fails the tests."""
    with DevNode(state_path=tmp_path_factory.mktemp("anvil") / "state.json") as started:
        yield started


@pytest.fixture
def make_env(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[MakeEnv]:
    """``make_env(**execution)``: an :class:`ExecutorEnv` with ``execution`` overrides."""
    made: list[ExecutorEnv] = []

    def make(**execution: Any) -> ExecutorEnv:
        env = ExecutorEnv(tmp_path / f"env{len(made)}", broker.bootstrap, **execution)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()
