"""Shared fixtures: one Kafka broker for the whole session, and a fresh topic per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cluster import broker_from_env, create_topic


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """$KAFKA_BOOTSTRAP_SERVERS if set, else a LocalBroker started for the session."""
    with broker_from_env() as bootstrap:
        yield bootstrap


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A new topic with 3 partitions, each with a leader."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, name, partitions=3)
    return name
