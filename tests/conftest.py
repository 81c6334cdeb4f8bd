"""Shared fixtures: one Kafka broker for the whole session, and a fresh topic per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from cluster import LocalBroker, create_topic


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """$KAFKA_BOOTSTRAP_SERVERS if set, else a LocalBroker started for the session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with LocalBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A new topic with 3 partitions, each with a leader."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, name, partitions=3)
    return name
