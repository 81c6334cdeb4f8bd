"""This machine and the software measured, for ``bench/compare.py``.

The reference's virtualenv (:func:`ensure_omsi`: ``openmsistream==1.8.8``, built on first
use) and an environment for its interpreter without this venv's traces (:func:`clean_env`);
what writing fresh memory costs here (:func:`fresh_memory_cost`); the same kernel in bare
processes, no Ray nor Kafka (:func:`kernel_mb_s`, the ceiling of the actors' scaling); and
the machine's and the software's description for the report (:func:`machine`,
:func:`versions`, :func:`broker_version`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import work  # bench/work.py: the per-file work both systems run

KiB, MiB = 1 << 10, 1 << 20
OMSI_VERSION = "1.8.8"
DEFAULT_OMSI_VENV = Path.home() / ".cache" / "ray-reproducer" / "omsi-venv"


def fresh_memory_cost(idle_s: float = 5.0) -> dict[str, float]:
    """Seconds to write 1 GiB of newly allocated memory: again at once after freeing it
    (``warm_gib_s``), and after ``idle_s`` seconds without it (``cold_gib_s``).

    On a VM whose host takes back the pages its guest frees (free page reporting; measured
    here: a Firecracker guest, 2-3 s after the free), the first write to such a page costs
    10-25x a normal fault: about 3 s per GiB against 0.15-0.3. Every large buffer that is
    allocated a few seconds after the last one was freed pays it, in either system: a 1 GiB
    file needs more than a GiB of such memory (its buffer, the broker's page cache for its
    upload, the copies on the way), a 64 MiB file reuses what the previous file freed.
    """
    gib = 1 << 30

    def write_gib() -> float:
        start = time.perf_counter()
        block = np.ones(gib // 8)
        seconds = time.perf_counter() - start
        del block
        return seconds

    write_gib()
    warm = write_gib()
    time.sleep(idle_s)  # the quantity measured: what idle time does to freed memory
    cold = write_gib()
    return {"warm_gib_s": warm, "cold_gib_s": cold, "idle_s": idle_s}


def clean_env() -> dict[str, str]:
    """This environment without this venv's traces (for the reference's interpreter)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


# --------------------------------------------------------------------------- the reference's venv
def ensure_omsi(venv: Path) -> tuple[Path | None, str]:
    """The reference's interpreter (building its venv if needed), or None and why not."""
    python = venv / "bin" / "python"
    probe = (
        "import importlib.metadata as m;"
        "from openmsistream.data_file_io.actor.data_file_stream_reproducer import "
        "DataFileStreamReproducer;"
        "print(m.version('openmsistream'))"
    )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, env=clean_env(), check=False
        )

    if not python.exists():
        print(
            f"# building the reference's venv in {venv} (openmsistream=={OMSI_VERSION})", flush=True
        )
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"openmsistream=={OMSI_VERSION}"],
            env=clean_env(),
            check=False,
        )
        if install.returncode:
            shutil.rmtree(venv, ignore_errors=True)  # not half-built for the next run
            return None, f"pip install openmsistream=={OMSI_VERSION} failed"
    done = check()
    if done.returncode:
        if "sodium" in done.stderr.lower():
            return None, (
                "openmsistream needs libsodium (through kafkacrypto/pysodium), which is missing: "
                "apt-get install libsodium23"
            )
        return None, "openmsistream does not import: " + done.stderr.strip().splitlines()[-1]
    version = done.stdout.strip()
    if version != OMSI_VERSION:
        return None, f"{venv} has openmsistream {version}, not {OMSI_VERSION}"
    return python, version


def _kernel_loop(kind: str, seconds: float, out: Any) -> None:
    data = np.random.default_rng(3).bytes(MiB)
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        work.analyze(data, kind)
        done += 1
    out.put(done)


def kernel_mb_s(kind: str, processes: int, seconds: float) -> float:
    """MB/s of ``work.analyze(kind)`` on 1 MiB buffers in ``processes`` bare processes."""
    import multiprocessing  # noqa: PLC0415 - only this measurement needs it

    out: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_kernel_loop, args=(kind, seconds, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(out.get(timeout=seconds + 60) for _ in workers)
    for worker in workers:
        worker.join()
    return total * MiB / 1e6 / seconds


# --------------------------------------------------------------------------- machine & versions
def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} logical ({psutil.cpu_count(logical=False)} physical)",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
    }


def broker_version(started: bool) -> str:
    """Apache Kafka's version from a local broker's command line, when there is one."""
    if started:
        from cluster.broker import KAFKA_VERSION  # noqa: PLC0415

        return f"Apache Kafka {KAFKA_VERSION} (KRaft, started by this run)"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "kafka.Kafka" in cmdline:
            found = re.search(r"kafka[-_](?:2\.\d+-)?(\d+\.\d+\.\d+)", cmdline)
            if found:
                return f"Apache Kafka {found.group(1)} (a local broker)"
    return "unknown (external broker)"


def versions(omsi_version: str, broker: str) -> dict[str, str]:
    import confluent_kafka  # noqa: PLC0415
    import ray  # noqa: PLC0415

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "confluent-kafka / librdkafka": f"{confluent_kafka.__version__} / {confluent_kafka.libversion()[0]}",
        "numpy": np.__version__,
        "broker": broker,
        "openmsistream (reference)": omsi_version,
    }
