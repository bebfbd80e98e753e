"""The real broker and the real chain for integration tests: one Tansu and one Anvil per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.anvil import DevNode
from connectors.broker import EmbeddedBroker


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
