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


# Tests that run only when ``-m`` names them (or one of the names given): the launcher
# tests (root, sshd, this machine's SSH keys), and the long fault injections, which
# scripts/chaos.sh runs (``-m chaos``) and the default run leaves out.
OPT_IN = {"launcher": ("launcher",), "long": ("long", "chaos")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the opt-in tests unless ``-m`` names them: a ``-m`` of its own
    (``scripts/test.sh -m "not integration"``) replaces the default ``-m 'not launcher'``
    and would bring them back."""
    expr = config.getoption("markexpr") or ""
    for marker, names in OPT_IN.items():
        if any(name in expr.replace(f"not {name}", "") for name in names):
            continue
        deselected = [item for item in items if item.get_closest_marker(marker)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for the module, whose workers import this repository's modules (the
    tests' reproducers)."""
    import ray  # noqa: PLC0415 - the unit tests need no Ray

    ray.init(
        address="local",  # a Ray started on this machine (ray start) is not the tests'
        num_cpus=4,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[1])}},
    )
    yield
    ray.shutdown()
