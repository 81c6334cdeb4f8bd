"""The analysis pool on local Ray: files go to actors in batches, and a batch whose file
kills its actor fails only that file."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from reproducer.actors import AnalysisResult, FileTask, batch_item
from reproducer.datafile import FileMeta
from reproducer.errors import ReproducerError
from reproducer.pool import AnalysisPool
from reproducer.scaling import ScaleSettings

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class RecordingActor:
    """Answers each file with the SHA-256 of its bytes; logs the size of every call's batch
    to ``calls``; a file named ``kill`` kills the actor's process."""

    def __init__(self, calls: str) -> None:
        self._calls = Path(calls)

    def ping(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def close(self) -> None:
        pass

    def analyze(
        self, metas: list[FileMeta], datas: list[Any], *objects: np.ndarray
    ) -> list[AnalysisResult]:
        with self._calls.open("a") as log:
            log.write(f"{len(metas)}\n")
        results = []
        for meta, data in zip(metas, datas, strict=True):
            if meta.filename == "kill":
                os._exit(1)
            if meta.filename == "raise":  # fails the whole call, not one file's analysis
                raise RuntimeError("the call itself failed")
            array = batch_item(data, objects)
            digest = hashlib.sha256(array.tobytes()).hexdigest().encode()
            results.append(AnalysisResult(meta.file_id, meta.relative_path, b"k", digest))
        return results


def _task(file_id: int, name: str, data: bytes, *, as_object: bool = False) -> FileTask:
    meta = FileMeta(file_id, "", name, b"\0" * 64, 1, len(data), 0.0, None, "")
    array = np.frombuffer(data, dtype=np.uint8).copy()
    return FileTask(meta, ray.put(array) if as_object else array)


def _run(pool: AnalysisPool, n: int, timeout: float = 120.0) -> list[AnalysisResult]:
    return _until(pool, lambda results: len(results) >= n, timeout)


def _until(pool: AnalysisPool, done: Any, timeout: float = 120.0) -> list[AnalysisResult]:
    """Drive the pool (as the driver's loop does) until ``done(results)``."""
    results: list[AnalysisResult] = []
    deadline = time.monotonic() + timeout
    while not done(results):
        assert time.monotonic() < deadline, f"not done: {pool.counts()}, {len(results)} results"
        ready, _ = ray.wait(pool.running, num_returns=1, timeout=0.2)
        results += pool.collect(ready)
    return results


def test_small_files_go_in_batches_and_each_gets_its_own_result(
    local_ray: None, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    pool = AnalysisPool(lambda: RecordingActor.remote(str(calls)), 2)
    pool.wait_started(60)
    data = {i: os.urandom(100 + i) for i in range(1, 301)}
    for i, payload in data.items():  # every 50th in the object store, the rest inline
        pool.submit(_task(i, f"f{i}", payload, as_object=i % 50 == 0))
    results = _run(pool, len(data))
    pool.close()
    assert sorted(r.file_id for r in results) == sorted(data)
    for result in results:
        assert result.value == hashlib.sha256(data[result.file_id]).hexdigest().encode()
    sizes = [int(line) for line in calls.read_text().split()]
    assert sum(sizes) == len(data)
    # one actor call per file would be 300 calls; batches make it a few dozen at most
    assert len(sizes) <= len(data) // 8, sizes


@pytest.mark.parametrize(
    ("culprit", "error"),
    [("kill", "killed 2 actors"), ("raise", "the call itself failed")],
    ids=["kills-its-actor", "fails-the-call"],
)
def test_a_file_that_breaks_its_batch_fails_alone(
    local_ray: None, tmp_path: Path, culprit: str, error: str
) -> None:
    """A file that kills its actor, or makes the whole call fail outside any analysis,
    among others in a batch: the others are run again, alone, and get their results; it
    alone fails."""
    calls = tmp_path / "calls"
    pool = AnalysisPool(lambda: RecordingActor.remote(str(calls)), 1, max_retries=0)
    pool.wait_started(60)
    names = [f"f{i}" for i in range(20)]
    names.insert(7, culprit)
    for i, name in enumerate(names, start=1):
        pool.submit(_task(i, name, name.encode()))
    results = _run(pool, len(names))
    pool.close()
    by_name = {r.relative_path: r for r in results}
    assert sorted(by_name) == sorted(names)
    assert error in by_name[culprit].error
    assert all(not by_name[n].error and by_name[n].value for n in names if n != culprit)
    sizes = [int(line) for line in calls.read_text().split()]
    # the first call goes with one file (until the time a file takes is known), then the
    # rest, the culprit among them, in a batch
    assert sizes[0] == 1
    assert max(sizes) >= len(names) - 2, sizes


@ray.remote(num_cpus=0)
class SlowActor:
    """Takes ``seconds`` per file (CPU work), answers with the file's SHA-256 and its own
    actor id; appends its id to ``closed`` when its ``close`` hook runs."""

    def __init__(self, closed: str, seconds: float) -> None:
        self._closed, self._seconds = Path(closed), seconds
        self._id = ray.get_runtime_context().get_actor_id()

    def ping(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def close(self) -> None:
        with self._closed.open("a") as out:
            out.write(f"{self._id}\n")

    def analyze(
        self, metas: list[FileMeta], datas: list[Any], *objects: np.ndarray
    ) -> list[AnalysisResult]:
        results = []
        for meta, data in zip(metas, datas, strict=True):
            end = time.monotonic() + self._seconds
            digest = hashlib.sha256(batch_item(data, objects).tobytes()).hexdigest()
            while time.monotonic() < end:  # busy, as an analysis is
                hashlib.sha256(b"x" * 4096).digest()
            results.append(
                AnalysisResult(
                    meta.file_id,
                    meta.relative_path,
                    self._id.encode(),
                    digest.encode(),
                    seconds=self._seconds,
                )
            )
        return results


def test_an_elastic_pool_grows_with_a_burst_and_shrinks_when_idle_losing_nothing(
    local_ray: None, tmp_path: Path
) -> None:
    """1..3 actors: a burst grows it to 3; then a trickle (one file in flight at a time)
    keeps one actor busy while the other two, idle, are retired (their ``close`` runs);
    every file has exactly one correct result throughout."""
    closed = tmp_path / "closed"
    pool = AnalysisPool(
        lambda: SlowActor.remote(str(closed), 0.3),
        1,
        max_actors=3,
        scale=ScaleSettings(idle_timeout_s=2.0, min_wait_s=0.2),
        name="slow",
    )
    pool.wait_started(60)
    assert pool.counts() == {"running": 1, "starting": 0, "pending": 0, "waiting": 0}
    data = {i: os.urandom(1000 + i) for i in range(1, 41)}
    for i, payload in data.items():
        pool.submit(_task(i, f"f{i}", payload))
    peak = 0

    def burst_done(results: list[AnalysisResult]) -> bool:
        nonlocal peak
        peak = max(peak, pool.counts()["running"])
        return len(results) == len(data)

    results = _until(pool, burst_done)
    assert peak == 3 and pool.n_grown == 2, (peak, pool.n_grown)
    assert len({r.key for r in results}) >= 2  # more than one actor took files
    # the trickle: the next file as soon as the last one's result is in
    trickle = {i: os.urandom(900 + i) for i in range(100, 1000)}
    order = iter(trickle)
    submitted = [next(order)]
    pool.submit(_task(submitted[0], "t", trickle[submitted[0]]))
    seen: list[AnalysisResult] = []

    def shrunk(results: list[AnalysisResult]) -> bool:
        while len(seen) < len(results):
            seen.append(results[len(seen)])
            following = next(order)
            submitted.append(following)
            pool.submit(_task(following, f"t{following}", trickle[following]))
        return pool.counts()["running"] == 1 and pool.n_retired == 2

    trickled = _until(pool, shrunk)
    # the last file submitted is still in flight: its result too
    trickled += _until(pool, lambda r: len(r) == 1)
    pool.close()
    assert pool.n_retired == 2
    # every actor's close hook ran once: the two retired, then the last one at the end
    assert len(set(closed.read_text().split())) == len(closed.read_text().split()) == 3
    everything = {**data, **trickle}
    ids = [r.file_id for r in results + trickled]
    assert len(ids) == len(set(ids)), "a file was analysed twice"
    assert sorted(ids) == sorted([*data, *submitted]), "a file has no result"
    for result in results + trickled:
        assert not result.error
        assert result.value == hashlib.sha256(everything[result.file_id]).hexdigest().encode()


@ray.remote(num_cpus=0)
class BrokenAfterFirst:
    """Starts once; every later actor's constructor raises (a worker image that lacks a
    module, say) once ``broken`` exists."""

    def __init__(self, broken: str) -> None:
        if Path(broken).exists():
            raise ImportError("no module named 'lab_calibration'")

    def ping(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def close(self) -> None:
        pass

    def analyze(
        self, metas: list[FileMeta], datas: list[Any], *objects: np.ndarray
    ) -> list[AnalysisResult]:
        time.sleep(0.2)  # long enough that files wait and the pool grows
        return [
            AnalysisResult(meta.file_id, meta.relative_path, b"k", b"v", seconds=0.2)
            for meta in metas
        ]


def test_actors_that_cannot_start_stop_the_run_instead_of_being_retried_forever(
    local_ray: None, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    pool = AnalysisPool(
        lambda: BrokenAfterFirst.remote(str(broken)),
        1,
        max_actors=4,
        scale=ScaleSettings(min_wait_s=0.1),
        name="calibrated",
    )
    pool.wait_started(60)
    broken.touch()
    for i in range(1, 40):
        pool.submit(_task(i, f"f{i}", b"x"))
    with pytest.raises(ReproducerError, match="calibrated: 3 actors in a row could not start"):
        _run(pool, 39)
    pool.close()
