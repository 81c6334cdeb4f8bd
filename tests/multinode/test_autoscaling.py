"""Elastic analysis pools on multi-node Ray: on Ray's fake autoscaling cluster (a head with
no ``analysis`` resource and a worker node type that has it, which Ray's autoscaler adds,
at most two, for actors it cannot place and removes once idle), and on a fixed cluster
shared by two analyses. The pipeline runs as ``ray submit`` runs it (``python -m
cluster.submit``), exactly once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from reproducer.config import KafkaConfig
from reproducer.status import pipeline_status
from tests.multinode.autoscaling import FakeAutoscalingCluster
from tests.multinode.test_multinode import (
    REPO,
    clusters,
    refused_at_start,
    stage,
    submit_command,
    write_config,
)
from tests.results import count_results, envelopes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

__all__ = ["clusters"]  # the fixture, shared with test_multinode

WORKER = {"resources": {"CPU": 1, "analysis": 1}, "max_workers": 2}


@pytest.fixture
def autoscaling(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAutoscalingCluster]:
    cluster = FakeAutoscalingCluster({"CPU": 1}, {"analysis": WORKER}, idle_timeout_minutes=0.1)
    # every process that joins it (the runs, the probes) authenticates as the cluster does
    for name, value in cluster.joining_env.items():
        monkeypatch.setenv(name, value)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()


COUNT_WORKERS = """
import ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
print("workers:", sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("analysis")))
"""


def _alive_workers(cluster: FakeAutoscalingCluster) -> int:
    """The worker nodes up now (asked from another process: Ray's authentication mode is
    read once per process, and this one may have run a local Ray before)."""
    done = subprocess.run(
        [sys.executable, "-c", COUNT_WORKERS, cluster.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (count,) = re.findall(r"^workers: (\d+)$", done.stdout, re.MULTILINE)  # among Ray's lines
    return int(count)


def _command(
    cluster: FakeAutoscalingCluster, tmp_path: Path, bootstrap: str, topic: str, *extra: str
) -> list[str]:
    """``python -m cluster.submit`` of the ``Busy`` analysis on the cluster."""
    config = write_config(tmp_path, bootstrap)
    command = submit_command(
        cluster.address, config, topic, tmp_path / "out", *extra, n_actors="1..2"
    )
    command[command.index("--analysis") + 1] = "tests.multinode.node_analyses:Busy"
    return command


@contextlib.contextmanager
def _busy_run(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The run started, its standard error into ``log``, each Busy file 1.5 CPU-s."""
    with log.open("w") as stderr:
        yield subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "RR_BUSY_SECONDS": "1.5"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def test_resources_no_node_type_offers_stop_the_run_at_once(
    autoscaling: FakeAutoscalingCluster, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """What no node type of the autoscaler's config offers is said at the start (it would
    wait forever); what one offers is not (the next test)."""
    stage(tmp_path / "tree", kafka_bootstrap, topic, ["f.bin"], 1000)
    stderr = refused_at_start(
        _command(
            autoscaling, tmp_path, kafka_bootstrap, topic, "--analysis_resources", '{"tpu_pod": 1}'
        ),
        kafka_bootstrap,
        topic,
    )
    assert "no node type of the autoscaler's cluster can host" in stderr, stderr[-2000:]
    assert "'tpu_pod': 1" in stderr and "analysis: CPU=1, analysis=1" in stderr


def test_a_burst_grows_the_pool_and_the_cluster_then_both_shrink(
    autoscaling: FakeAutoscalingCluster, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """1..2 actors of an analysis only worker nodes can host, none up at the start: the
    run starts anyway (its actor waits for the autoscaler's node), a burst of CPU-heavy
    files grows the pool to 2 and the cluster to 2 worker nodes; once the burst is done the
    pool shrinks to 1 and the autoscaler removes the idle node. Exactly once: every file
    has one correct result and the committed offsets reach the end."""
    assert _alive_workers(autoscaling) == 0
    names = [f"scan{i:02d}.bin" for i in range(16)]
    group = f"group-{topic}"  # submit_command's
    log = tmp_path / "run.log"
    command = _command(
        autoscaling,
        tmp_path,
        kafka_bootstrap,
        topic,
        "--exactly_once",
        "--idle_actor_timeout",
        "3",
        "--update_seconds",
        "1",
    )
    files = stage(tmp_path / "tree", kafka_bootstrap, topic, names, 20_000)
    workers_seen = 0

    def count_workers() -> int:
        nonlocal workers_seen
        now = _alive_workers(autoscaling)
        workers_seen = max(workers_seen, now)
        return now

    with _busy_run(command, log) as run:
        try:
            results = topic + "-results"
            wait_for(
                lambda: count_workers() >= 0 and count_results(kafka_bootstrap, results) >= 16,
                300,
                "every file's result",
            )
            text = log.read_text()
            assert re.search(r"busy: 2 actor\(s\) now", text), text[-3000:]
            # the burst over: back to one actor, and to one worker node
            wait_for(lambda: "busy: 1 actor(s) now" in log.read_text(), 120, "the pool to shrink")
            wait_for(lambda: count_workers() == 1, 180, "the idle node to be removed")
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=120)
        finally:
            run.kill()
    text = log.read_text()
    assert run.returncode == 0, text[-3000:]
    assert workers_seen == 2, f"the autoscaler added {workers_seen} worker node(s)"
    # the pool's second actor waited for the autoscaler's node, and the run said so
    assert re.search(r"actors: busy 1 \([^)]*\+1 waiting for a node", text), text[-3000:]
    # room for the whole range asked ahead of the actors, and released after the burst
    asked = text.find("asked the autoscaler for room for 2 actor(s)")
    assert 0 <= asked < text.find("released the request for nodes"), text[-3000:]
    # the start did not wait for a node
    assert "it waits for the autoscaler to add a node of type analysis" in text, text[-3000:]

    got = envelopes(kafka_bootstrap, topic + "-results")
    paths = [value["file"]["relative_path"] for _, _, value in got]
    assert sorted(paths) == sorted(files), "a file has no result or more than one"
    for _, _, value in got:
        data = files[value["file"]["relative_path"]]
        assert value["result"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len({value["node"] for _, _, value in got}) == 2  # both worker nodes worked
    status = pipeline_status(KafkaConfig.for_bootstrap(kafka_bootstrap), topic, group)
    assert status.lag == 0, status.text()


def test_the_busy_analysis_takes_the_capacity_the_idle_one_leaves(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Two analyses of 1..2 one-CPU actors on a cluster of 3 CPUs: a burst for ``busy-b``
    grows it to 2 (all 3 CPUs taken); then a burst for ``busy-a``, at once: its second actor
    waits for a CPU until ``busy-b``'s idle actor is retired, then takes it. Every file has
    one correct result."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False}
    )
    clusters.append(cluster)
    command = submit_command(
        cluster.address,
        write_config(tmp_path, kafka_bootstrap),
        topic,
        tmp_path / "out",
        "--exactly_once",
        "--idle_actor_timeout",
        "8",  # longer than busy-a's burst takes to arrive, shorter than its work
    )
    command.remove("--n_actors")
    command.remove("2")  # each analysis's own range
    both = "tests.multinode.node_analyses:BusyA,tests.multinode.node_analyses:BusyB"
    command[command.index("--analysis") + 1] = both
    results = topic + "-results"
    files = stage(tmp_path / "b", kafka_bootstrap, topic, [f"b{i}.bin" for i in range(8)], 5000)
    log = tmp_path / "run.log"
    with _busy_run(command, log) as run:
        try:
            wait_for(lambda: count_results(kafka_bootstrap, results) >= 8, 180, "busy-b's results")
            files |= stage(
                tmp_path / "a", kafka_bootstrap, topic, [f"a{i}.bin" for i in range(10)], 5000
            )
            wait_for(lambda: count_results(kafka_bootstrap, results) >= 18, 180, "busy-a's results")
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=120)
        finally:
            run.kill()
    text = log.read_text()
    assert run.returncode == 0, text[-3000:]
    order = [
        "busy-b: 2 actor(s) now",
        "busy-a: 2 actor(s) now",  # asked for while busy-b held the third CPU
        "busy-b: 1 actor(s) now",  # its idle actor retired
        "busy-a: actor 1 placed",  # on the CPU it left
    ]
    at = [text.find(line) for line in order]
    assert -1 not in at and at == sorted(at), (at, text[-3000:])
    actors: dict[str, set[str]] = {"busy-a": set(), "busy-b": set()}
    got = envelopes(kafka_bootstrap, results)
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted(files)
    for analysis, _, value in got:
        data = files[value["file"]["relative_path"]]
        assert value["result"]["sha256"] == hashlib.sha256(data).hexdigest()
        actors[analysis].add(value["actor"])
    # 2 + 2 actors of one CPU never fit in 3: busy-a's second came after busy-b shrank
    assert len(actors["busy-b"]) == 2 and len(actors["busy-a"]) == 2, actors
