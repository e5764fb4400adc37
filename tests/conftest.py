"""Fixtures every test level shares: a real nats-server and per-test namespaces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from labelloop.natsserver import EmbeddedNats


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    """One real nats-server (JetStream, temp store, free loopback port) for the session."""
    server = EmbeddedNats().start()
    yield server
    server.cleanup()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def private_nats() -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own, for tests that stop, kill or restart it."""
    server = EmbeddedNats().start()
    yield server
    server.cleanup()


@pytest.fixture
def namespace() -> str:
    """A unique subject/stream/bucket prefix: tests sharing a server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"
