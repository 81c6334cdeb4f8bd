"""Shared fixtures: one Kafka broker for the whole session, and a fresh topic per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from cluster import broker_from_env, create_topic

# Property tests are the same on every run (a failure in CI is a failure anywhere, and
# the example hypothesis prints reproduces it); HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The launcher tests (root, sshd, this machine's SSH keys) run only when ``-m`` names
    them: a ``-m`` of its own (``scripts/test.sh -m "not integration"``) replaces the
    default ``-m 'not launcher'`` and would bring them back."""
    if "launcher" in (config.getoption("markexpr") or "").replace("not launcher", ""):
        return
    deselected = [item for item in items if item.get_closest_marker("launcher")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("launcher")]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for the module, whose workers import this repository's modules (the
    tests' reproducers)."""
    import ray  # noqa: PLC0415 - the unit tests need no Ray

    ray.init(
        num_cpus=4,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[1])}},
    )
    yield
    ray.shutdown()
