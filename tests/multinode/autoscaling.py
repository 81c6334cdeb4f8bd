"""Ray's fake autoscaling cluster, beside any other Ray on the machine.

Ray's autoscaler with its fake multi-node provider: the head is started with an
autoscaling config, and the autoscaler starts worker nodes (raylets on this machine) for
demand it cannot place and stops them when idle, as on a cloud. It is what
``ray.cluster_utils.AutoscalingCluster`` starts, but that one first stops every Ray of the
machine (``ray stop --force``) and reads a config file Ray's wheels do not ship; this one
uses a port of its own and stops only its own processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeAutoscalingCluster:
    def __init__(
        self,
        head: dict[str, float],
        worker_types: dict[str, dict[str, Any]],
        *,
        idle_timeout_minutes: float = 0.1,
    ) -> None:
        self.head = dict(head)
        self.ip = ray._private.services.get_node_ip_address()
        self.port = _free_port()
        self.address = f"{self.ip}:{self.port}"
        self.config = {
            "cluster_name": f"fake-{self.port}",
            "max_workers": sum(int(t.get("max_workers", 0)) for t in worker_types.values()),
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
            },
            "available_node_types": {
                "ray.head.default": {"resources": dict(head), "node_config": {}, "max_workers": 0},
                **{
                    name: {"node_config": {}, "min_workers": 0, **spec}
                    for name, spec in worker_types.items()
                },
            },
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": idle_timeout_minutes,
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }
        # Ray's default for a new cluster, token authentication (the token in the user's
        # ~/.ray, made by the first Ray started): what every process that joins it by
        # address must say it uses
        self.joining_env = {"RAY_AUTH_MODE": "token"}
        self._folder = Path(tempfile.mkdtemp(prefix="fake-autoscaling-"))
        self._head: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> str:
        config = self._folder / "autoscaling.json"
        config.write_text(json.dumps(self.config))
        head = dict(self.head)
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            f"--autoscaling-config={config}",
            f"--num-cpus={head.pop('CPU', 1)}",
            f"--num-gpus={head.pop('GPU', 0)}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        if head:
            command.append(f"--resources={json.dumps(head)}")
        env = {
            **os.environ,
            **self.joining_env,
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_FAKE_CLUSTER": "1",
        }
        self._head = subprocess.Popen(
            command,
            env=env,
            stdout=(self._folder / "head.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        probe = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR')"
        while time.monotonic() < deadline:
            if self._head.poll() is not None:
                raise RuntimeError(f"the head did not start: {self.log()}")
            done = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                env={**os.environ, **self.joining_env},
                capture_output=True,
                check=False,
            )
            if done.returncode == 0:
                return self.address
        raise RuntimeError(f"the head did not answer within {timeout:g} s: {self.log()}")

    def log(self) -> str:
        path = self._folder / "head.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def shutdown(self) -> None:
        """Stop the head and every process of this cluster (the worker nodes the
        autoscaler started are its own processes: found by the cluster's address)."""
        if self._head is not None and self._head.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._head.pid, signal.SIGTERM)
            try:
                self._head.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self._head.pid, signal.SIGKILL)
        mine = self.address.encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if mine in cmdline.read_bytes():
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue
