"""The real broker for integration tests: one Tansu per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A started :class:`EmbeddedBroker`; a broker that cannot start fails the tests."""
    with EmbeddedBroker() as started:
        yield started
