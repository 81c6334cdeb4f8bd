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
from reproducer.pool import AnalysisPool

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
    results: list[AnalysisResult] = []
    deadline = time.monotonic() + timeout
    while len(results) < n:
        assert time.monotonic() < deadline, f"only {len(results)} of {n} results"
        ready, _ = ray.wait(pool.running, num_returns=1, timeout=1.0)
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
