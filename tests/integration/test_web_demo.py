"""`reproducer demo --web` on a terminal: it prints the page's address, the page shows the
demo's results and its corrupt file, and it stays open until Enter is pressed."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).parents[2]


def read_until(fd: int, text: str, seen: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in "".join(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"never printed {text!r}; printed:\n{''.join(seen)[-3000:]}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen.append(os.read(fd, 65536).decode("utf-8", "replace"))
            except OSError:  # the terminal closed: the demo ended
                raise AssertionError(f"ended before {text!r}:\n{''.join(seen)[-3000:]}") from None


def test_the_demo_keeps_its_page_open_on_a_terminal_until_enter(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller, terminal = pty.openpty()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(REPO)}
    command = [str(Path(sys.executable).parent / "reproducer"), "demo", "--web"]
    command += ["--web_port", str(port), "--size_mb", "2", "--output_dir", str(tmp_path / "out")]
    demo = subprocess.Popen(
        command,
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    os.close(terminal)
    seen: list[str] = []
    try:
        read_until(controller, "press Enter", seen, timeout=300)
        printed = "".join(seen)
        assert f"results page: http://127.0.0.1:{port}/" in printed
        assert "demo ok" not in printed  # the checks' verdict comes after the page closes
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/").status_code == 200
            counts = client.get("/api/state").json()["window"]
            assert counts["results_read"] == 17
            failed = client.get("/api/entries", params={"status": "failed"}).json()["rows"]
            assert "hdf5/broken.h5" in {row["file"] for row in failed}
        os.write(controller, b"\n")
        assert demo.wait(120) == 0
        read_until(controller, "demo ok", seen, timeout=30)
        with pytest.raises(httpx.TransportError):  # closed with the demo
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
        os.close(controller)
