"""``ray job submit`` to a head started with ``ray start --head``, and the same entry
script with the same arguments on local Ray."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multinode.test_multinode import ANALYSIS, REPO, stage, write_config
from tests.results import envelopes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers (401 without the token)
    except OSError:
        return False


# Ray's token authentication, as a cluster should run: the head and the client share it.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture
def ray_head() -> Iterator[str]:
    """``ray start --head --block`` with ``ingest`` and ``analysis`` resources, in a temp
    folder of its own (so no other Ray user on this machine finds it); its dashboard URL."""
    temp = tempfile.mkdtemp(prefix="rj")  # short: Ray's socket paths have a length limit
    dashboard = free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            '--resources={"ingest": 1, "analysis": 2}',
            f"--temp-dir={temp}",
        ],
        env={**os.environ, **AUTH, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for(lambda: dashboard_up(url) or head.poll() is not None, 120, "the Ray head")
        assert head.poll() is None, "ray start --head exited"
        yield url
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_job_through_the_jobs_api_and_the_same_arguments_locally(
    ray_head: str, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """``ray job submit --working-dir . -- python -m cluster.submit ARGS`` runs the
    pipeline on the head's cluster (placed by its resources); ``python -m cluster.submit
    ARGS`` with the same ARGS runs it on local Ray. Each reads every file (a new consumer
    group each: ``create_new``) and produces one correct result per file."""
    files = stage(tmp_path / "tree", kafka_bootstrap, topic, [f"f{i}.bin" for i in range(6)])
    results = topic + "-results"
    args = [
        "--analysis",
        ANALYSIS,
        "--config",
        str(write_config(tmp_path, kafka_bootstrap)),
        "--topic_name",
        topic,
        "--producer_topic_name",
        results,
        "--output_dir",
        str(tmp_path / "out"),
        "--stop_when_idle",
        "4",
    ]
    job = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            ray_head,
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "cluster.submit",
            *args,
        ],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **AUTH},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    assert '--ingest_resources {"ingest": 1} --analysis_resources {"analysis": 1}' in output
    assert "placement: ingest actor on node" in output

    # --ray_address local: on this machine Ray's own lookup can find the head above by its
    # processes, whatever its temp folder, and would join it (without its token)
    local = subprocess.run(
        [sys.executable, "-m", "cluster.submit", *args, "--ray_address", "local"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert local.returncode == 0, local.stderr[-4000:]
    assert "running on local Ray" in local.stderr
    assert "--ingest_resources" not in local.stderr  # local Ray offers neither resource

    got = envelopes(kafka_bootstrap, results)
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted([*files, *files])
    for _, _, value in got:
        data = files[value["file"]["relative_path"]]
        assert value["result"]["sha256"] == hashlib.sha256(data).hexdigest()
