"""A plain install (``pip install .``, no extras) runs the main job: the demo passes, saying
it skipped the plots that need the ``[plots]`` extra, and plain ``ray`` is what it runs on
(``ray[default]`` comes with the ``[cluster]`` extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).parents[2]


def test_the_demo_passes_on_a_plain_install(kafka_bootstrap: str, tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: the build writes nothing into the checkout
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", "build"),
    )
    venv = tmp_path / "plain"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    missing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('matplotlib', 'scipy', 'pandas', 'pyarrow', 'aiohttp', "
            "'starlette', 'uvicorn') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert missing.stdout.strip() == "[]"  # no extra, nor ray[default]'s dashboard deps
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    demo = subprocess.run(
        [str(venv / "bin" / "reproducer"), "demo", "--output_dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env={**env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, (demo.stdout[-3000:], demo.stderr[-3000:])
    assert "demo ok: 17 correct results for the 10 files" in demo.stdout
    assert "plots skipped for 5 datasets: matplotlib is not installed" in demo.stdout
    assert not list((tmp_path / "out").rglob("*.png"))
    assert (tmp_path / "out" / "results.csv").is_file()
    assert not (tmp_path / "out" / "results.parquet").exists()  # no pyarrow: said, skipped

    # the results page: its files are in the package; without the web extra it says so
    config = tmp_path / "plain.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    page_files = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.resources as r; s = r.files('reproducer.web') / 'static'; "
            "print(sorted(p.name for p in s.iterdir()))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert page_files.stdout.strip() == "['app.js', 'index.html', 'style.css']"
    web = subprocess.run(
        [str(venv / "bin" / "reproducer"), "web", "--config", str(config), "--topic_name", "r"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert web.returncode == 1
    assert "needs the web extra: pip install 'ray-reproducer[web]'" in web.stderr
