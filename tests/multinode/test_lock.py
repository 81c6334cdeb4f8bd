"""The ``lock`` a reference-style reproducer takes, across the nodes of a real Ray cluster
on one machine (``ray.cluster_utils.Cluster``: each node has its own lock files, so only
the cluster level excludes one node's actors from another's): actors on two nodes each do
read-increment-write of one shared file under it many times, and the count is exact;
a run that started on one node and gains a second stays exact; a holder killed while it
holds the lock does not block the rest."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from reproducer.lock import ClusterLock, owner_id, release_dead_owner

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).parents[2]


@ray.remote(num_cpus=0)
class Counter:
    """Does read-increment-write of a shared file under the lock, as a reproducer that
    appends to a shared file or bumps a counter would."""

    def __init__(self, lock: ClusterLock, path: str) -> None:
        self.lock, self.path = lock, Path(path)

    def flag(self) -> str:
        """Where the single-node flag of this actor's node is."""
        return str(self.lock._flag(self.node()))

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def bump(self, times: int) -> int:
        for _ in range(times):
            with self.lock:
                value = int(self.path.read_text())
                self.path.write_text(str(value + 1))
        return times

    def try_for(self, seconds: float) -> bool:
        """``acquire(timeout=)`` as threading.Lock's: False if not had in time."""
        if self.lock.acquire(timeout=seconds):
            self.lock.release()
            return True
        return False

    def hold_and_die(self, marker: str) -> None:
        self.lock.acquire()
        Path(marker).touch()
        os._exit(1)  # the holder dies holding it


def _connect(cluster: Cluster) -> None:
    ray.init(
        address=cluster.address,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"a": 100}, "include_dashboard": False},
    )
    try:
        yield made
    finally:
        ray.shutdown()
        made.shutdown()


def _counters(lock: ClusterLock, path: Path, resource: str, n: int) -> list[Any]:
    return [
        Counter.options(resources={resource: 1}).remote(lock, str(path))  # type: ignore[attr-defined]
        for _ in range(n)
    ]


def test_actors_on_two_nodes_exclude_each_other(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_node(num_cpus=2, resources={"b": 100})
    cluster.wait_for_nodes()
    _connect(cluster)
    lock = ClusterLock.for_run(uuid.uuid4().hex[:12])
    assert lock.single_node is None  # two nodes at the start: cluster-wide from the start
    shared = tmp_path / "count"
    shared.write_text("0")
    actors = _counters(lock, shared, "a", 3) + _counters(lock, shared, "b", 3)
    assert len(set(ray.get([a.node.remote() for a in actors], timeout=120))) == 2
    started = time.perf_counter()
    assert sum(ray.get([a.bump.remote(150) for a in actors], timeout=300)) == 900
    took = time.perf_counter() - started
    assert int(shared.read_text()) == 900
    print(f"900 acquires over 6 actors on 2 nodes: {took / 900 * 1e3:.2f} ms each")
    lock.close()


def test_a_run_that_gains_a_node_stays_exact(cluster: Cluster, tmp_path: Path) -> None:
    """Started alone on one node (its acquirers take only the node's lock), then actors
    on a new node take it: the first node leaves single-node mode before any of theirs is
    granted, while its own actors go on."""
    cluster.wait_for_nodes()
    _connect(cluster)
    lock = ClusterLock.for_run(uuid.uuid4().hex[:12])
    assert lock.single_node is not None
    shared = tmp_path / "count"
    shared.write_text("0")
    first = _counters(lock, shared, "a", 3)
    started = time.perf_counter()
    assert sum(ray.get([a.bump.remote(300) for a in first], timeout=300)) == 900
    per = (time.perf_counter() - started) / 900
    assert int(shared.read_text()) == 900
    print(f"900 acquires over 3 actors on one node: {per * 1e6:.0f} us each")
    going = [a.bump.remote(400) for a in first]  # still bumping when the node joins
    cluster.add_node(num_cpus=2, resources={"b": 100})
    cluster.wait_for_nodes()
    second = _counters(lock, shared, "b", 3)
    total = ray.get(going + [a.bump.remote(200) for a in second], timeout=300)
    assert sum(total) == 1200 + 600
    assert int(shared.read_text()) == 900 + 1800
    flag = Path(ray.get(first[0].flag.remote(), timeout=60))
    assert not flag.exists()  # the first node left single-node mode
    lock.close()


@pytest.mark.parametrize("nodes", [1, 2], ids=["one_node", "two_nodes"])
def test_a_holder_that_dies_does_not_block_the_rest(
    cluster: Cluster, tmp_path: Path, nodes: int
) -> None:
    """On one node the kernel frees a dead holder's lock; across nodes the pool frees it
    on the dead actor's behalf (release_dead_owner), as for any death."""
    if nodes == 2:
        cluster.add_node(num_cpus=2, resources={"b": 100})
    cluster.wait_for_nodes()
    _connect(cluster)
    lock = ClusterLock.for_run(uuid.uuid4().hex[:12])
    shared = tmp_path / "count"
    shared.write_text("0")
    doomed = _counters(lock, shared, "b" if nodes == 2 else "a", 1)[0]
    marker = tmp_path / "held"
    dying = doomed.hold_and_die.remote(str(marker))
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(dying, timeout=120)
    assert marker.exists()  # it died holding the lock
    others = _counters(lock, shared, "a", 2)
    if nodes == 2:
        # held for the dead actor until the pool frees it: timeout= as threading.Lock's
        assert ray.get(others[0].try_for.remote(0.5), timeout=60) is False
        release_dead_owner(lock, owner_id(doomed))
    assert sum(ray.get([a.bump.remote(50) for a in others], timeout=120)) == 100
    assert int(shared.read_text()) == 100
    lock.close()
