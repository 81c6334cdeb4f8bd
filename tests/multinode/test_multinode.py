"""The pipeline on a multi-node Ray cluster on one machine (``ray.cluster_utils.Cluster``:
one raylet per node, each with its own resources), driven by the cluster entry script
``python -m cluster.submit`` as ``ray submit`` and ``ray job submit`` run it."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster

from cluster import create_topic
from reproducer.config import KafkaConfig
from reproducer.upload import upload
from tests.results import count_results, envelopes, read_results, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).parents[2]
ANALYSIS = "tests.multinode.node_analyses:PathCheck"


def start_cluster(
    head: dict[str, float], *workers: dict[str, float], env: list[dict[str, str]] | None = None
) -> tuple[Cluster, list]:
    """A head offering ``head`` resources, then one worker node (1 CPU) per ``workers``
    (``env``: each worker's own environment variables)."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": head, "include_dashboard": False},
    )
    envs = env or [{} for _ in workers]
    nodes = [
        cluster.add_node(num_cpus=1, resources=r, env_vars=e)
        for r, e in zip(workers, envs, strict=True)
    ]
    cluster.wait_for_nodes()
    return cluster, nodes


@pytest.fixture
def clusters() -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    yield made
    for cluster in made:
        cluster.shutdown()


def make_files(folder: Path, names: list[str], size: int = 5000) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in names:
        files[name] = os.urandom(size)
        (folder / name).write_bytes(files[name])
    return files


def stage(
    folder: Path, bootstrap: str, topic: str, names: list[str], size: int = 5000
) -> dict[str, bytes]:
    """Random files under ``folder``, uploaded to ``topic``; ``<topic>-results`` made."""
    files = make_files(folder, names, size)
    upload([folder], KafkaConfig.for_bootstrap(bootstrap), topic)
    create_topic(bootstrap, topic + "-results", partitions=1)
    return files


def run_and_remove(
    cluster: Cluster, node: Any, command: list[str], bootstrap: str, after_results: int
) -> tuple[int, str]:
    """Run ``command``; once ``after_results`` results are visible, remove ``node`` (not
    gracefully); the run's exit status and stderr."""
    results = command[command.index("--producer_topic_name") + 1]
    run = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: count_results(bootstrap, results) >= after_results, 180, "results")
        cluster.remove_node(node, allow_graceful=False)
        _, stderr = run.communicate(timeout=300)
    finally:
        run.kill()
    return run.returncode, stderr


def refused_at_start(command: list[str], bootstrap: str, topic: str) -> str:
    """Run ``command``, which must stop at its start with an error and produce nothing;
    its standard error."""
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode != 0, done.stderr[-2000:]
    assert count_results(bootstrap, topic + "-results") == 0
    return done.stderr


def submit_command(
    address: str, config: Path, topic: str, out: Path, *extra: str, n_actors: int | str = 2
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cluster.submit",
        "--ray_address",
        address,
        "--analysis",
        ANALYSIS,
        "--config",
        str(config),
        "--topic_name",
        topic,
        "--producer_topic_name",
        topic + "-results",
        "--consumer_group_id",
        f"group-{topic}",
        "--output_dir",
        str(out),
        "--n_actors",
        str(n_actors),
        *extra,
    ]


def write_config(tmp_path: Path, bootstrap: str) -> Path:
    config = tmp_path / "kafka.config"
    config.write_text(
        f"[broker]\nbootstrap.servers = {bootstrap}\n"
        "[consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 1000\n"
    )
    return config


def ingest_node(stderr: str) -> str:
    found = re.findall(r"placement: ingest actor on node \S+ \(([0-9a-f]{8})\)", stderr)
    assert found, stderr[-3000:]
    return found[-1]


def test_actors_are_placed_by_resource_and_disk_files_reach_other_nodes(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Head with ``ingest``, two workers with ``analysis``: the ingest actor runs on the
    head, the analysis actors on both workers. In disk mode with ``--file_transfer
    always`` each file reaches the worker through the object store: ``full_filepath`` is a
    local copy there with the right bytes, removed after the analysis. What an analysis
    attaches on a worker whose disk the driver does not share reaches the driver's
    output folder with the result."""
    private = [tmp_path / f"node{i}" for i in range(2)]
    cluster, workers = start_cluster(
        {"ingest": 1},
        {"analysis": 1},
        {"analysis": 1},
        env=[{"RR_TEST_NODE_OUTPUT": str(folder)} for folder in private],
    )
    clusters.append(cluster)
    names = [f"f{i}.bin" for i in range(8)]
    files = stage(tmp_path / "tree", kafka_bootstrap, topic, names, size=300_000)
    out = tmp_path / "out"
    command = submit_command(
        cluster.address,
        write_config(tmp_path, kafka_bootstrap),
        topic,
        out,
        "--mode",
        "disk",
        "--file_transfer",
        "always",
        "--stop_when_idle",
        "4",
    )
    run = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert cluster.head_node.node_id.startswith(ingest_node(run.stderr))

    got = envelopes(kafka_bootstrap, topic + "-results")
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted(files)
    assert {v["node"] for _, _, v in got} == {w.node_id for w in workers}
    copies = Path(tempfile.gettempdir()) / "ray-reproducer-files"
    for _, _, value in got:
        expected = hashlib.sha256(files[value["file"]["relative_path"]]).hexdigest()
        result = value["result"]
        assert result["sha256"] == result["path_sha256"] == expected
        path = Path(result["path"])
        assert path.is_relative_to(copies), path  # a copy on the analysis node ...
        assert not path.exists()  # ... removed once the analysis returned
        assert (out / value["file"]["relative_path"]).read_bytes() == files[path.name]
        # attached on the worker, in its own folder; written by the driver in the run's
        check, relative = result["check"], f"checks/{value['file']['relative_path']}.sha256"
        assert Path(check["path"]).parent.parent in private, check
        kept = (out / relative).read_bytes()
        assert kept == expected.encode() and hashlib.sha256(kept).hexdigest() == check["sha256"]


def test_a_lost_analysis_node_reruns_its_files_elsewhere_exactly_once(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A worker running an analysis actor is removed mid-run (exactly-once mode): its
    files run again on the other worker, the run finishes, and a read_committed reader
    sees exactly one result per file."""
    cluster, (doomed, _) = start_cluster({"ingest": 1}, {"analysis": 1}, {"analysis": 1})
    clusters.append(cluster)
    files = stage(
        tmp_path / "tree", kafka_bootstrap, topic, [f"slow{i:02d}.txt" for i in range(12)]
    )
    command = submit_command(
        cluster.address,
        write_config(tmp_path, kafka_bootstrap),
        topic,
        tmp_path / "out",
        "--exactly_once",
        "--stop_when_idle",
        "5",
    )
    status, stderr = run_and_remove(cluster, doomed, command, kafka_bootstrap, after_results=2)
    assert status == 0, stderr[-3000:]
    assert "its node is gone" in stderr, stderr[-4000:]
    got = envelopes(kafka_bootstrap, topic + "-results")
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted(files)
    assert doomed.node_id in {v["node"] for _, _, v in got}  # it did run files before


def test_a_lost_ingest_node_fails_loudly_and_a_restart_resumes(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """The node running the ingest actor is removed: the run exits non-zero saying so.
    Restarted once a node offers ``ingest`` again, it produces the rest: every file has
    exactly one result (exactly-once mode)."""
    cluster, (ingest_host, _) = start_cluster({}, {"ingest": 1}, {"analysis": 1})
    clusters.append(cluster)
    files = stage(
        tmp_path / "tree", kafka_bootstrap, topic, [f"slow{i:02d}.txt" for i in range(10)]
    )
    results = topic + "-results"
    command = submit_command(
        cluster.address,
        write_config(tmp_path, kafka_bootstrap),
        topic,
        tmp_path / "out",
        "--exactly_once",
        "--stop_when_idle",
        "5",
        n_actors=1,
    )
    status, stderr = run_and_remove(cluster, ingest_host, command, kafka_bootstrap, 1)
    assert status != 0
    # the first call that meets the lost actor says so (a commit, or the ingest's take)
    last = stderr.strip().splitlines()[-1]
    assert "ERROR" in last and "restart" in last and "actor" in last, stderr[-3000:]
    assert count_results(kafka_bootstrap, results) < len(files)

    cluster.add_node(num_cpus=1, resources={"ingest": 1})
    cluster.wait_for_nodes()
    again = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr[-3000:]
    got = envelopes(kafka_bootstrap, results)
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted(files)


PORTED = """
import json

from reproducer import DataFileStreamReproducer, ReproducerMessage


class Found(ReproducerMessage):
    def __init__(self, datafile, value):
        super().__init__(datafile)
        self.value = value

    @property
    def msg_value(self):
        return json.dumps(self.value)


class HelperReproducer(DataFileStreamReproducer):
    def _get_processing_result_message_for_file(self, datafile, lock):
        import lab_helper  # imported on the analysis actor's worker

        with lock:
            return Found(datafile, {"file": datafile.filename, "made_by": lab_helper.NAME})


if __name__ == "__main__":
    HelperReproducer.run_from_command_line()
"""


def test_a_joined_run_takes_the_drivers_import_path_to_its_workers(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A ported reproducer run with ``python -m`` joins a running Ray; a module it imports
    from a folder on the driver's ``PYTHONPATH`` (a lab's helpers), which the cluster's
    processes were not started with, imports on the analysis actors' workers too."""
    cluster, _ = start_cluster({})
    clusters.append(cluster)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "helper_reproducer.py").write_text(PORTED)
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "lab_helper.py").write_text('NAME = "the lab helper"\n')
    names = ["a.bin", "b.bin", "c.bin"]
    stage(tmp_path / "tree", kafka_bootstrap, topic, names)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "lab"), str(tmp_path / "libs"), str(REPO)]),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "helper_reproducer",
            "--config",
            str(write_config(tmp_path, kafka_bootstrap)),
            "--topic_name",
            topic,
            "--producer_topic_name",
            topic + "-results",
            "--ray_address",
            cluster.address,
            "--analysis_num_cpus",
            "0.25",
            "--stop_when_idle",
            "3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = [value for _, value in read_results(kafka_bootstrap, topic + "-results", 3)]
    assert sorted(v["file"] for v in got) == names, run.stderr[-3000:]
    assert {v["made_by"] for v in got} == {"the lab helper"}
