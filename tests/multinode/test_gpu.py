"""GPU placement on a multi-node Ray cluster on one machine: nodes that declare GPUs
(``ray.cluster_utils.Cluster`` nodes with ``num_gpus``: Ray's GPUs are counted, not
detected, so no GPU is needed) host the ``gpu-spectrum`` analysis, each actor with its own
GPU in ``CUDA_VISIBLE_DEVICES``."""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster

from analyses.gpu_spectrum import power_spectrum
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


def gpu_cluster(*gpus: int) -> tuple[Cluster, list[Any]]:
    """A head with 1 CPU and no GPU, then one worker node (1 CPU) per ``gpus`` with that
    many GPUs (declared: on a machine with real GPUs the head would otherwise detect them)."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
    )
    nodes = [cluster.add_node(num_cpus=1, num_gpus=n) for n in gpus]
    cluster.wait_for_nodes()
    return cluster, nodes


def gpu_command(cluster: Cluster, tmp_path: Path, bootstrap: str, topic: str) -> list[str]:
    command = submit_command(
        cluster.address, write_config(tmp_path, bootstrap), topic, tmp_path / "out"
    )
    command[command.index("--analysis") + 1] = "gpu-spectrum"
    return command


def test_gpu_actors_run_on_the_gpu_node_each_with_its_own_gpu(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Two actors of one GPU each, on a cluster whose only GPUs are the two of one worker
    (its one CPU fits both actors' half CPU): every file is analysed there, by actors that
    see distinct GPUs, ``"0"`` and ``"1"``; numpy runs (the GPUs are not real)."""
    cluster, (gpu_node, _) = gpu_cluster(2, 0)
    clusters.append(cluster)
    files = stage(
        tmp_path / "tree", kafka_bootstrap, topic, [f"f{i:02d}.bin" for i in range(12)], 300_000
    )
    results = topic + "-results"
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        run = subprocess.Popen(
            gpu_command(cluster, tmp_path, kafka_bootstrap, topic),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(lambda: count_results(kafka_bootstrap, results) >= len(files), 120, "results")
            run.send_signal(signal.SIGTERM)  # stops as q does: drains, then exits
            run.wait(timeout=60)
        finally:
            run.kill()
    assert run.returncode == 0, log.read_text()[-3000:]

    got = envelopes(kafka_bootstrap, results)
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted(files)
    seen: dict[str, set[str]] = defaultdict(set)  # actor -> its CUDA_VISIBLE_DEVICES
    for analysis, _, value in got:
        result = value["result"]
        assert analysis == "gpu-spectrum"
        assert value["node"] == gpu_node.node_id
        assert (result["backend"], result["device"]) == ("numpy", "cpu")
        data = files[value["file"]["relative_path"]]
        assert {k: result[k] for k in power_spectrum(b"")} == pytest.approx(power_spectrum(data))
        seen[value["actor"]].add(result["cuda_visible_devices"])
    assert all(len(devices) == 1 for devices in seen.values()), seen
    assert sorted(d for devices in seen.values() for d in devices) == ["0", "1"], seen


def test_without_a_gpu_node_the_run_says_so_at_once(
    clusters: list[Cluster], kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A cluster that can never offer a GPU (no GPU node, no autoscaler that could add one):
    the run stops at the start, naming the resource, instead of waiting for a node."""
    cluster, _ = gpu_cluster(0)
    clusters.append(cluster)
    stage(tmp_path / "tree", kafka_bootstrap, topic, ["f.bin"], 1000)
    stderr = refused_at_start(
        gpu_command(cluster, tmp_path, kafka_bootstrap, topic), kafka_bootstrap, topic
    )
    assert "no node of the Ray cluster can host" in stderr and "'GPU': 1.0" in stderr
