"""Local Ray as the pipeline starts it: quiet, in a process of its own (a fresh Ray)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).parents[2]

SCRIPT = """
import logging, ray
logging.basicConfig(level=logging.INFO)
from reproducer.ray_launch import connect
connect("local")
print("nodes", len(ray.nodes()))
logging.getLogger("ray._private.authentication.authentication_token_setup").warning("kept")
ray.shutdown()
"""


ACTOR_LOGS = """
import logging, ray
from reproducer.ray_launch import connect
connect("local")

@ray.remote
class Talker:
    def talk(self):
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("talker").warning("said by an actor")
        print("printed by an actor", flush=True)
        return 1

ray.get(Talker.remote().talk.remote())
ray.shutdown()
"""


def _run(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter (a fresh local Ray), its output in pipes; it must
    succeed."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_actor_log_lines_are_plain_text_in_a_pipe() -> None:
    """Actors' log lines reach the driver with Ray's coloured "(Actor pid=...)" prefix;
    written to a file or a pipe, terminal colour codes are noise."""
    done = _run(ACTOR_LOGS)
    output = done.stdout + done.stderr
    assert "said by an actor" in output and "printed by an actor" in output
    assert "(Talker pid=" in output
    assert "\x1b[" not in output, output[-2000:]


def test_a_local_instance_starts_without_the_token_warning() -> None:
    """Ray warns at every local start that it enabled token authentication; for the
    private instance the pipeline starts, that is the right default and no news. Only
    that message is dropped: the same logger's other warnings still show."""
    done = _run(SCRIPT)
    assert "nodes 1" in done.stdout
    assert "Token authentication is enabled" not in done.stderr, done.stderr
    assert "kept" in done.stderr
