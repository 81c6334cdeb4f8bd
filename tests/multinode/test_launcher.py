"""Ray's cluster launcher for real, on this machine: ``ray up`` with a copy of
``ray_cluster.yaml`` whose head is 127.0.0.1, ``ray submit`` of the entry script, then
``ray down``.

Outside the default run (``-m launcher`` selects it): it needs root, OpenSSH's server and
rsync (``apt-get install openssh-server rsync``). It makes a user of its own (the "SSH
user" of the config), so that the launcher's ``ray stop`` touches only that user's Ray,
and serves SSH without a listening port: the config's ``ssh_proxy_command`` runs
``sshd -i`` (one session on stdin/stdout) with a host key and an authorized key the test
makes. The project is not installed again on the "node": its setup puts this checkout's
virtualenv on the login PATH (folders above the interpreter get traverse permission for
others, if they lack it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from tests.multinode.test_multinode import ANALYSIS, REPO, stage
from tests.results import envelopes

pytestmark = [pytest.mark.integration, pytest.mark.launcher, pytest.mark.slow]

USER = "raylaunch"
SSHD = Path("/usr/sbin/sshd")
VENV_BIN = Path(sys.executable).parent


def run(*command: str, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    print(f"$ {' '.join(command)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def launch_user() -> Path:
    try:
        home = Path(pwd.getpwnam(USER).pw_dir)
    except KeyError:
        assert run("useradd", "--create-home", "--shell", "/bin/bash", USER).returncode == 0
        home = Path(pwd.getpwnam(USER).pw_dir)
    # no password, but not locked: sshd without PAM refuses a locked account
    assert run("usermod", "-p", "*", USER).returncode == 0
    # it runs this checkout's interpreter: every folder above it must let others pass
    # (traverse only, as /root often forbids; nothing becomes listable or readable)
    for folder in Path(os.path.realpath(sys.executable)).parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
    return home


def test_ray_up_submit_down_over_ssh(kafka_bootstrap: str, topic: str) -> None:
    assert os.geteuid() == 0, "the launcher test makes a user: run it as root"
    assert SSHD.exists() and shutil.which("rsync"), "needs openssh-server and rsync"
    home = launch_user()
    work = Path(tempfile.mkdtemp(prefix="launcher-"))
    work.chmod(0o755)
    keys = work / "keys"
    keys.mkdir(mode=0o700)
    assert (
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")).returncode == 0
    )
    assert (
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")).returncode == 0
    )
    authorized = home / ".ssh" / "authorized_keys"
    authorized.parent.mkdir(mode=0o700, exist_ok=True)
    authorized.write_text((keys / "id.pub").read_text())
    user = pwd.getpwnam(USER)
    for path in (authorized.parent, authorized):
        os.chown(path, user.pw_uid, user.pw_gid)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    sshd_config = keys / "sshd_config"
    sshd_config.write_text(
        f"HostKey {keys / 'host'}\nAuthorizedKeysFile .ssh/authorized_keys\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"AllowUsers {USER}\nSubsystem sftp internal-sftp\n"
    )

    # the data, and a config file the launch user can read
    files = stage(work / "tree", kafka_bootstrap, topic, [f"f{i}.bin" for i in range(5)])
    results = topic + "-results"
    kafka_config = work / "kafka.config"
    kafka_config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    kafka_config.chmod(0o644)

    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    config["cluster_name"] = f"launcher-{uuid.uuid4().hex[:6]}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["min_workers"] = config["max_workers"] = 0
    config["auth"] = {
        "ssh_user": USER,
        "ssh_private_key": str(keys / "id"),
        "ssh_proxy_command": f"{SSHD} -i -f {sshd_config}",
    }
    # this checkout's venv, on the login PATH; Ray's files in the user's own folder
    config["setup_commands"] = [
        "grep -q RAY_TMPDIR ~/.bashrc || echo 'export PATH="
        f"{VENV_BIN}:$PATH; export PYTHONPATH=$HOME/ray-reproducer; "
        "export RAY_TMPDIR=$HOME/raytmp; mkdir -p $RAY_TMPDIR' >> ~/.bashrc"
    ]
    head_start = config["head_start_ray_commands"][-1]
    assert "--resources='{\"ingest\": 1}'" in head_start  # the file's own head command
    config["head_start_ray_commands"] = [
        "ray stop",  # the launch user's Ray only
        "ray start --head --port=6390 --num-cpus=2 --include-dashboard=false "
        '--resources=\'{"ingest": 1, "analysis": 2}\'',
    ]
    cluster_yaml = work / "cluster.yaml"
    cluster_yaml.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    try:
        up = run(str(VENV_BIN / "ray"), "up", "-y", "--no-config-cache", str(cluster_yaml), env=env)
        assert up.returncode == 0, up.stderr[-3000:]
        submit = run(
            str(VENV_BIN / "ray"),
            "submit",
            str(cluster_yaml),
            str(REPO / "cluster" / "submit.py"),
            "--",
            "--analysis",
            ANALYSIS,
            "--config",
            str(kafka_config),
            "--topic_name",
            topic,
            "--producer_topic_name",
            results,
            "--output_dir",
            "/home/raylaunch/out",
            "--stop_when_idle",
            "4",
            env=env,
            cwd=REPO,
        )
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        output = submit.stdout + submit.stderr
        assert '--ingest_resources {"ingest": 1} --analysis_resources {"analysis": 1}' in output
    finally:
        down = run(str(VENV_BIN / "ray"), "down", "-y", str(cluster_yaml), env=env)
        shutil.rmtree(work, ignore_errors=True)
    assert down.returncode == 0, down.stderr[-3000:]
    got = envelopes(kafka_bootstrap, results)
    assert sorted(v["file"]["relative_path"] for _, _, v in got) == sorted(files)
