#!/usr/bin/env python3
"""The reference (OpenMSIStream 1.8.8) and this project, measured in one sitting on one broker.

    python bench/compare.py                    # every case, 3 repeats (about 30-40 min on 2 cores)
    python bench/compare.py --quick            # small sizes, 1 repeat (under 5 minutes)
    python bench/compare.py --cases small 1mib --repeats 5 --output docs/benchmarks.md

Writes the report (``docs/benchmarks.md``), its plots (``docs/benchmarks/*.png``) and every
measured row (``docs/benchmarks/results.json``). Needs matplotlib and psutil in this venv.

The reference runs in its own virtualenv (``openmsistream==1.8.8``, built on first use in
``~/.cache/ray-reproducer/omsi-venv``; ``--omsi_venv`` to choose another). Both systems read the
same uploaded topics (4 partitions, 512 KiB chunks) and do the same work per file
(``bench/work.py``); each produces its results to a fresh 1-partition topic, which a consumer
here reads. Every run is a process of its own, spawned here: the reference's
``bench/omsi_reproducer.py`` (stopped by typing ``q``, its quit command), and this project's
``bench/project_run.py`` (a fresh local Ray each; stopped by SIGTERM once every result is in).

Throughput is steady state: the bytes (or count) of the files in the middle 80% of the
results, over the time between them (result-message timestamps). Start-up is from process
spawn to the first result's timestamp. Memory is the sum of the PSS of the spawned process and
all its descendants (the whole local Ray instance for the project), sampled from /proc. CPU
s/MB is the CPU time of that process tree over the same window, over the bytes of its files. Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import matplotlib
    import psutil
except ImportError as _missing:
    print(
        f"bench/compare.py needs matplotlib and psutil ({_missing.name} is missing):\n"
        "    .venv/bin/pip install matplotlib psutil",
        file=sys.stderr,
    )
    raise SystemExit(2) from _missing

import numpy as np
import psutil
import work  # bench/work.py: the per-file work both systems run
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pipeline import RssSampler, proc_stats, raw, reader  # bench/pipeline.py

from cluster import broker_from_env, create_topic
from reproducer.chunk import decode_value, encode_value
from reproducer.config import KafkaConfig
from reproducer.upload import UploadSource, chunks_of, upload

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
KiB, MiB = 1 << 10, 1 << 20
CHUNK = 512 * KiB
OMSI_VERSION = "1.8.8"
DEFAULT_OMSI_VENV = Path.home() / ".cache" / "ray-reproducer" / "omsi-venv"
CASES = (
    "raw",
    "small",
    "small_lock",
    "small10k",
    "1mib",
    "50mib",
    "fft",
    "pyloop",
    "scaling",
    "sizes",
    "exactly_once",
    "latency",
    "startup",
    "memory",
)

# ray.init + one actor call in a fresh interpreter: Ray's own start-up floor
RAY_FLOOR = """
import json, time
start = time.time()
import ray
imported = time.time()
ray.init(address="local", include_dashboard=False, logging_level="WARNING")
initialised = time.time()

@ray.remote
class Echo:
    def ping(self):
        return 1

ray.get(Echo.remote().ping.remote())
called = time.time()
print(json.dumps({"start": start, "imported": imported, "initialised": initialised, "called": called}))
"""


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


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of everything: the full run, or ``--quick``."""

    small_n: int
    mib1_n: int
    big_n: int
    cpu_n: int
    sizes_mib: tuple[int, ...]
    ref_threads_1mib: tuple[int, ...]
    latency_seconds: float
    hash_mib: int
    small10k: bool
    ref_pyloop: bool

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(2000, 200, 4, 16, (1, 16, 64), (2, 4), 8.0, 64, False, True)
        return cls(5000, 1000, 10, 60, (1, 16, 64, 256, 1024), (2, 4), 30.0, 256, True, True)


@dataclasses.dataclass
class Dataset:
    name: str
    n: int
    size: int
    root: Path
    topic: str
    n_chunks: int
    sha256: dict[str, str]  # relative path -> hex digest
    upload_mb_s: float

    @property
    def nbytes(self) -> int:
        return self.n * self.size


# --------------------------------------------------------------------------- small helpers
def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt_num(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.{max(0, digits - 1 - int(np.floor(np.log10(magnitude))))}f}"


def fmt_spread(values: list[float], unit: str = "") -> str:
    """The median, with (min-max) when there are several values."""
    if not values:
        return "n/a"
    text = fmt_num(median(values))
    if len(values) > 1:
        text += f" ({fmt_num(min(values))}–{fmt_num(max(values))})"
    return f"{text} {unit}".rstrip()


def label_bars(ax: Any, bars: Any, values: list[float]) -> None:
    """Each bar's value above it (none for a missing value, NaN)."""
    for bar, value in zip(bars, values, strict=True):
        if value == value:
            ax.annotate(
                fmt_num(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants, now (cheap: no smaps)."""
    parents, cpu = proc_stats()
    total = 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            total += seconds
    return total


def kill_tree(pid: int) -> None:
    """Kill a process this harness spawned, and its descendants (by pid)."""
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
        parent.kill()


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


# --------------------------------------------------------------------------- results
class ResultWatcher(threading.Thread):
    """Reads a results topic from the start: the first result per file, its timestamp, and
    whether it matches the file. Calls ``on_first`` at the first result of the steady
    window (see :func:`window`) and ``on_all`` at its last."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        sha256: dict[str, str],
        expected: int,
        on_first: Callable[[], None] | None = None,
        on_all: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.sha256, self.expected = bootstrap, topic, sha256, expected
        self.on_first, self.on_all = on_first, on_all
        self.stamps: dict[str, float] = {}  # file -> result timestamp (s)
        self.wrong: list[str] = []
        self.duplicates = 0
        self.stop = threading.Event()
        self.all_in = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": uuid.uuid4().hex,
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        try:
            while not self.stop.is_set():
                for message in consumer.consume(500, 0.05):
                    if message.error():
                        continue
                    self._take(message)
        finally:
            consumer.close()

    def _take(self, message: Any) -> None:
        payload = json.loads(message.value())
        name = payload.get("file", "?")
        if name in self.stamps:
            self.duplicates += 1
            return
        if payload.get("sha256") != self.sha256.get(name):
            self.wrong.append(name)
        self.stamps[name] = message.timestamp()[1] / 1000
        first, last = window(self.expected)
        if len(self.stamps) == first + 1 and self.on_first:
            self.on_first()
        if len(self.stamps) == last + 1 and self.on_all:
            self.on_all()
        if len(self.stamps) >= self.expected and not self.all_in.is_set():
            self.all_in.set()


def mark_bursts(rows: list[dict[str, Any]]) -> None:
    """A rate above raw consumption of the same topic cannot be steady: start-up burst."""
    raw_rates: dict[str, list[float]] = {}
    for row in rows:
        if row["system"] == "raw" and "topic" in row:
            raw_rates.setdefault(row["topic"], []).append(row["mb_s"])
    for row in rows:
        if row["system"] in ("raw", "machine") or "mb_s" not in row:
            continue
        raw_rate = median(raw_rates.get(row.get("topic", ""), []))
        if row["mb_s"] > raw_rate:  # False when there is no raw rate (NaN)
            row["burst"] = True
            row["burst_reason"] = f"faster than raw consumption ({raw_rate:.0f} MB/s)"
        elif row.get("burst"):
            row["burst_reason"] = "steady window's rate > 1.25x the later half's"


def window(n: int) -> tuple[int, int]:
    """The steady window of ``n`` results (indexes of its first and last, in time order):
    the middle 80%, so that neither the results of files read during start-up (a pipeline
    that reads ahead releases them at once) nor the tail count; all of them for a few."""
    if n < 10:
        return 0, max(n - 1, 0)
    return n // 10, n - 1 - n // 10


def steady(stamps: list[float], file_size: int) -> dict[str, Any]:
    """Steady-state rates from the result timestamps, over the middle 80% of the results
    (:func:`window`).

    Also the rate over the later half of the results (``late_*``): a system that reads the
    topic during its start-up releases those files' results at once; ``burst`` says when
    the window's rate is still over 1.25x the later half's (too few files for the window
    to leave that start out).
    """
    if len(stamps) < 2:
        return {}
    stamps = sorted(stamps)
    first, last = window(len(stamps))
    span = max(stamps[last] - stamps[first], 1e-6)
    out: dict[str, Any] = {
        "mb_s": (last - first) * file_size / 1e6 / span,
        "files_s": (last - first) / span,
        "steady_s": span,
    }
    half = len(stamps) // 2
    if len(stamps) >= 4:
        late = max(stamps[-1] - stamps[half], 1e-6)
        out["late_mb_s"] = (len(stamps) - 1 - half) * file_size / 1e6 / late
        out["late_files_s"] = (len(stamps) - 1 - half) / late
        out["burst"] = out["mb_s"] > 1.25 * out["late_mb_s"]
    return out


@dataclasses.dataclass
class Leg:
    """One run of a system inside a spawned process: what it reads, where its results go."""

    data: Dataset
    results_topic: str
    variant: str
    expected: int = -1  # results to wait for (default: one per file of data)

    def __post_init__(self) -> None:
        if self.expected < 0:
            self.expected = self.data.n


class Sender:
    """Produces chunk messages (renamed copies, possibly) to a topic while a system runs."""

    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        self.producer = Producer(kafka.producer_settings(**{"linger.ms": 0}))
        self.topic = topic

    def send(self, chunks: list[Any], name: str | None = None) -> None:
        for original in chunks:
            chunk = original if name is None else dataclasses.replace(original, filename=name)
            self.send_encoded(chunk.key.encode(), encode_value(chunk))

    def send_encoded(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=value)
                break
            except BufferError:  # queue full: serve delivery reports until there is room
                self.producer.poll(0.05)
        self.producer.poll(0)

    def wait_for(self, watcher: ResultWatcher, name: str, timeout: float = 300) -> bool:
        self.producer.flush(timeout)
        deadline = time.time() + timeout
        while name not in watcher.stamps and time.time() < deadline:
            time.sleep(0.01)
        return name in watcher.stamps


# --------------------------------------------------------------------------- the harness
class Bench:
    def __init__(
        self, args: argparse.Namespace, bootstrap: str, tmp: Path, omsi: Path | None
    ) -> None:
        self.args = args
        self.plan = Plan.make(args.quick)
        self.repeats = args.repeats
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.omsi = omsi
        self.rows: list[dict[str, Any]] = []
        self.datasets: dict[str, Dataset] = {}
        self.topics: list[str] = []
        self.raw_done: set[str] = set()
        self.kafka = KafkaConfig.for_bootstrap(bootstrap)
        self.project_config = tmp / "project.config"
        self.project_config.write_text(
            f"[broker]\nbootstrap.servers = {bootstrap}\n[consumer]\nfetch.min.bytes = 100000\n"
        )
        # as the reference's examples: chunks in, JSON strings out
        self.omsi_config = tmp / "omsi.config"
        self.omsi_config.write_text(
            f"[broker]\nbootstrap.servers = {bootstrap}\n\n"
            "[producer]\nkey.serializer = StringSerializer\nvalue.serializer = StringSerializer\n\n"
            "[consumer]\ngroup.id = create_new\nauto.offset.reset = earliest\n"
            "enable.auto.commit = False\nfetch.min.bytes = 100000\n"
            "key.deserializer = StringDeserializer\nvalue.deserializer = DataFileChunkDeserializer\n"
        )
        (tmp / "logs").mkdir(exist_ok=True)

    # ------------------------------------------------------------------ bookkeeping
    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        shown = {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in row.items()
            if k not in ("case", "system", "variant", "repeat", "log")
            and not isinstance(v, (list, dict))
        }
        print(
            f"[{row['case']}] {row['system']} {row.get('variant', '')} "
            f"#{row.get('repeat', 0) + 1}: {json.dumps(shown)}",
            flush=True,
        )
        return row

    def values(self, case: str, system: str, key: str, variant: str | None = None) -> list[float]:
        return [
            float(r[key])
            for r in self.rows
            if r["case"] == case
            and r["system"] == system
            and (variant is None or r.get("variant") == variant)
            and isinstance(r.get(key), (int, float))
            and not isinstance(r.get(key), bool)
        ]

    def new_topic(self, prefix: str, partitions: int) -> str:
        name = f"cmp-{prefix}-{uuid.uuid4().hex[:8]}"
        create_topic(self.bootstrap, name, partitions=partitions)
        self.topics.append(name)
        return name

    def delete_topics(self) -> None:
        if not self.topics:
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.delete_topics(self.topics, request_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        self.topics.clear()

    # ------------------------------------------------------------------ data
    def files(self, name: str, files: list[tuple[str, int]]) -> tuple[Path, dict[str, str]]:
        """Files of seeded random bytes in a folder of their own; their sha256."""
        root = self.tmp / "data" / name
        root.mkdir(parents=True)
        rng = np.random.default_rng(len(list((self.tmp / "data").iterdir())))
        sha: dict[str, str] = {}
        for filename, length in files:
            digest = hashlib.sha256()
            with (root / filename).open("wb") as fh:
                left = length
                while left:
                    block = rng.bytes(min(left, 16 * MiB))
                    digest.update(block)
                    fh.write(block)
                    left -= len(block)
            sha[filename] = digest.hexdigest()
        return root, sha

    def dataset(self, name: str, n: int, size: int) -> Dataset:
        """``n`` files of ``size`` random bytes, uploaded once to a 4-partition topic with
        this project's uploader (whose chunks are the reference's, byte for byte)."""
        key = f"{name}-{n}-{size}"
        if key in self.datasets:
            return self.datasets[key]
        root, sha = self.files(key, [(f"f{i:05d}.bin", size) for i in range(n)])
        topic = self.new_topic(name, 4)
        sent = upload([root], self.kafka, topic, chunk_size=CHUNK)
        data = Dataset(name, n, size, root, topic, sent.n_chunks, sha, sent.mb_per_s)
        print(
            f"# data {name}: {n:,} x {size / KiB:,.0f} KiB uploaded to {topic} at "
            f"{sent.mb_per_s:.1f} MB/s ({sent.n_chunks:,} chunks)",
            flush=True,
        )
        self.datasets[key] = data
        return data

    # ------------------------------------------------------------------ one process
    def run_process(
        self,
        system: str,
        cmd: list[str],
        legs: list[Leg],
        *,
        env: dict[str, str] | None = None,
        sample_every: float = 0.5,
        during: Callable[[list[ResultWatcher]], None] | None = None,
    ) -> tuple[list[dict[str, Any]], list[ResultWatcher]]:
        """Spawn ``cmd``, watch the results of each of its legs (runs, one after the other)
        until the last has them all, stop it, and measure each leg."""
        marks: list[dict[str, float]] = [{} for _ in legs]
        box: list[int] = []

        def mark(i: int, name: str) -> Callable[[], None]:
            def take() -> None:
                if box:
                    marks[i][name] = tree_cpu(box[0])

            return take

        watchers = [
            ResultWatcher(
                self.bootstrap,
                leg.results_topic,
                leg.data.sha256,
                leg.expected,
                mark(i, "first"),
                mark(i, "last"),
            )
            for i, leg in enumerate(legs)
        ]
        for watcher in watchers:
            watcher.start()
        log_path = self.tmp / "logs" / f"{system}-{uuid.uuid4().hex[:6]}.log"
        timeout = 120 + sum(leg.data.n * 0.05 + leg.data.nbytes / 1e6 * 0.6 for leg in legs)
        with log_path.open("wb") as log:
            spawned = time.time()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
            box.append(proc.pid)
            sampler = RssSampler(root=proc.pid, interval=sample_every)
            sampler.start()
            if during is not None:
                during(watchers)
            while not watchers[-1].all_in.wait(0.05):
                if proc.poll() is not None or time.time() - spawned > timeout:
                    break
            timed_out = not watchers[-1].all_in.is_set()
            self._stop(system, proc)
            sampler.stop.set()
            sampler.join()
        for watcher in watchers:
            watcher.stop.set()
            watcher.join()
        rows = []
        window_start = spawned
        for i, (leg, watcher) in enumerate(zip(legs, watchers, strict=True)):
            stamps = sorted(watcher.stamps.values())
            window_end = (stamps[-1] if stamps else time.time()) + sample_every
            in_window = [b for t, b in sampler.totals if window_start <= t <= window_end]
            row: dict[str, Any] = {
                "n_files": leg.data.n,
                "file_size": leg.data.size,
                "results": len(stamps),
                "wrong": len(watcher.wrong),
                "duplicates": watcher.duplicates,
                "rc": proc.returncode,
                "timed_out": timed_out and i == len(legs) - 1,
                "peak_pss_mib": max(in_window) / MiB if in_window else None,
                "log": str(log_path),
            }
            if i == 0:  # from spawn: only the first leg includes the process's start-up
                row["startup_s"] = (stamps[0] - spawned) if stamps else None
                row["done_s"] = (stamps[-1] - spawned) if stamps else None
                row["cpu_total_s"] = round(sum(sampler.cpu_by_name().values()), 2)
                row["memory"] = [
                    (round(t - spawned, 2), round(b / MiB, 1)) for t, b in sampler.totals
                ]
            row.update(steady(stamps, leg.data.size))
            first, last = window(leg.expected)
            if "first" in marks[i] and "last" in marks[i] and last > first and leg.data.size:
                row["cpu_s_per_mb"] = (marks[i]["last"] - marks[i]["first"]) / (
                    (last - first) * leg.data.size / 1e6
                )
            if len(stamps) < watcher.expected or watcher.wrong:
                print(
                    f"# WARNING {system} {leg.variant}: {len(stamps)}/{watcher.expected} results, "
                    f"{len(watcher.wrong)} wrong, rc={proc.returncode}, timed out={timed_out}; "
                    f"log: {log_path}",
                    flush=True,
                )
                if proc.returncode:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
                    print("\n".join(f"#   {line}" for line in tail), flush=True)
            rows.append(row)
            window_start = stamps[-1] if stamps else window_start
        return rows, watchers

    def _stop(self, system: str, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                if system == "reference":
                    assert proc.stdin is not None
                    proc.stdin.write(b"q\n")  # OpenMSIStream's quit command
                    proc.stdin.flush()
                else:
                    proc.send_signal(signal.SIGTERM)  # the pipeline drains and stops
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            print(f"# {system} did not stop: killing pid {proc.pid} and its children", flush=True)
            kill_tree(proc.pid)
            proc.wait()

    def reference(
        self,
        case: str,
        data: Dataset,
        *,
        threads: int = 2,
        analysis: str = "sha256",
        repeat: int = 0,
        sample_every: float = 0.5,
    ) -> dict[str, Any] | None:
        """The reference's reproducer on ``data`` in a process of its own."""
        if self.omsi is None:
            return None
        leg = Leg(data, self.new_topic("ref-out", 1), f"{threads} threads")
        out = Path(tempfile.mkdtemp(prefix="omsi-", dir=self.tmp))
        cmd = [
            str(self.omsi),
            str(BENCH / "omsi_reproducer.py"),
            "--analysis",
            analysis,
            "--config",
            str(self.omsi_config),
            "--consumer_topic_name",
            data.topic,
            "--producer_topic_name",
            leg.results_topic,
            "--n_consumer_threads",
            str(threads),
            "--n_producer_threads",
            str(threads),
            "--output_dir",
            str(out),
        ]
        rows, _ = self.run_process(
            "reference", cmd, [leg], env=clean_env(), sample_every=sample_every
        )
        shutil.rmtree(out, ignore_errors=True)
        rows[0]["topic"] = data.topic
        return self.record(
            {
                "case": case,
                "system": "reference",
                "variant": leg.variant,
                "repeat": repeat,
                **rows[0],
            }
        )

    def project_cmd(self, spec: dict[str, Any]) -> list[str]:
        spec = {
            "bootstrap": self.bootstrap,
            "config": str(self.project_config),
            "scratch": str(self.tmp),
            **spec,
        }
        return [sys.executable, str(BENCH / "project_run.py"), json.dumps(spec)]

    def project(
        self,
        case: str,
        data: Dataset,
        runs: list[dict[str, Any]] | None = None,
        *,
        repeat: int = 0,
        sample_every: float = 0.5,
    ) -> list[dict[str, Any]]:
        """This project's pipeline on ``data`` in a process of its own (a fresh Ray): one
        run per item of ``runs`` (``variant``, ``actors``, ``analysis``, ``options``), one
        after the other."""
        runs = runs or [{}]
        legs = []
        spec_runs = []
        for run in runs:
            actors = run.get("actors", 2)
            leg = Leg(data, self.new_topic("prj-out", 1), run.get("variant", f"{actors} actors"))
            legs.append(leg)
            spec_runs.append(
                {
                    "topic": data.topic,
                    "results_topic": leg.results_topic,
                    "actors": actors,
                    "analysis": run.get("analysis", "sha256"),
                    "options": run.get("options", {}),
                }
            )
        # runs before the last end when idle; the last is stopped once its results are in
        spec = {"runs": spec_runs, "stop_when_idle": 1.5 if len(runs) > 1 else 30.0}
        rows, _ = self.run_process(
            "project", self.project_cmd(spec), legs, sample_every=sample_every
        )
        for row in rows:
            row["topic"] = data.topic
        return [
            self.record(
                {"case": case, "system": "project", "variant": leg.variant, "repeat": repeat, **row}
            )
            for leg, row in zip(legs, rows, strict=True)
        ]

    def raw_of(self, case: str, data: Dataset) -> None:
        """Raw consumption of a topic (bench/pipeline.py's ``raw()``): the ceiling."""
        if "raw" not in self.args.cases or data.topic in self.raw_done:
            return
        self.raw_done.add(data.topic)
        for r in range(self.repeats):
            # three reads from fresh assignments; the rate is that of the 2nd and 3rd (no
            # connection set-up), with a short fetch wait so that each starts at once
            got = raw(
                self.bootstrap, data.topic, data.n_chunks, passes=3, **{"fetch.wait.max.ms": 10}
            )
            self.record(
                {
                    "case": case,
                    "system": "raw",
                    "variant": "consume",
                    "repeat": r,
                    "topic": data.topic,
                    "mb_s": got["steady_mb_s"],
                    "files_s": got["steady_msgs_s"] * data.n / data.n_chunks,
                    "first_pass_mb_s": got["mb_s"],
                    "first_pass_startup_s": got["startup_s"],
                }
            )

    # ------------------------------------------------------------------ the cases
    def case_raw(self) -> None:
        """Raw consume MB/s of the 1 MiB topic; hashlib on one core; the 1 MiB sha256 limit."""
        data = self.dataset("mib1", self.plan.mib1_n, MiB)
        self.raw_of("1mib", data)
        buffer = np.random.default_rng(7).bytes(self.plan.hash_mib * MiB)
        for r in range(self.repeats):
            row: dict[str, Any] = {
                "case": "raw",
                "system": "machine",
                "variant": "hashlib",
                "repeat": r,
            }
            for name in ("sha512", "sha256"):
                start = time.perf_counter()
                hashlib.new(name, buffer).digest()
                row[f"{name}_mb_s"] = len(buffer) / 1e6 / (time.perf_counter() - start)
            self.record(row)

    def limit_1mib(self) -> dict[str, float] | None:
        """limit = 1 / (1/consume + 1/sha512 + 1/sha256) x cores, capped by consume."""
        consume = median(self.values("1mib", "raw", "mb_s"))
        sha512 = median(self.values("raw", "machine", "sha512_mb_s"))
        sha256 = median(self.values("raw", "machine", "sha256_mb_s"))
        if any(v != v for v in (consume, sha512, sha256)):
            return None
        cores = os.cpu_count() or 1
        per_core = 1 / (1 / consume + 1 / sha512 + 1 / sha256)
        return {
            "consume": consume,
            "sha512": sha512,
            "sha256": sha256,
            "cores": cores,
            "limit": min(per_core * cores, consume),
        }

    def case_small(self, name: str = "small", n: int | None = None) -> None:
        data = self.dataset(name, n or self.plan.small_n, 4 * KiB)
        self.raw_of(name, data)
        for r in range(self.repeats):
            self.reference(name, data, repeat=r)
            self.project(name, data, repeat=r)

    def case_small_lock(self) -> None:
        """The small files, the reproducer taking its lock once per file (both systems),
        with the run without it beside it in the same sitting."""
        data = self.dataset("small", self.plan.small_n, 4 * KiB)
        for r in range(self.repeats):
            self.reference("small_lock", data, analysis="sha256+lock", repeat=r)
            self.project("small_lock", data, [{"analysis": "sha256+lock"}], repeat=r)

    def case_small10k(self) -> None:
        if not self.plan.small10k:
            print("# small10k: skipped in --quick", flush=True)
            return
        self.case_small("small10k", 10_000)

    def case_1mib(self) -> None:
        data = self.dataset("mib1", self.plan.mib1_n, MiB)
        self.raw_of("1mib", data)
        for r in range(self.repeats):
            for threads in self.plan.ref_threads_1mib:
                self.reference("1mib", data, threads=threads, repeat=r)
            self.project("1mib", data, repeat=r)
        limit = self.limit_1mib()
        if limit:
            print(
                f"# 1mib: this machine's limit {limit['limit']:.0f} MB/s = {limit['cores']} / "
                f"(1/{limit['consume']:.0f} + 1/{limit['sha512']:.0f} + 1/{limit['sha256']:.0f}) "
                f"(consume, sha512, sha256 MB/s), capped by consume; project "
                f"{median(self.values('1mib', 'project', 'mb_s')):.0f} MB/s",
                flush=True,
            )

    def case_50mib(self) -> None:
        """Both systems as they come (the project's default budget): the memory case
        measures the project under a small budget apart."""
        data = self.dataset("big", self.plan.big_n, 50 * MiB)
        self.raw_of("50mib", data)
        for r in range(self.repeats):
            self.reference("50mib", data, repeat=r, sample_every=0.25)
            self.project("50mib", data, [{}], repeat=r, sample_every=0.25)

    def case_cpu(self, kind: str) -> None:
        """1 and 2 analysis actors (two runs in one process), and the reference."""
        data = self.dataset("cpu", self.plan.cpu_n, MiB)
        for r in range(self.repeats):
            if kind == "fft" or self.plan.ref_pyloop:
                self.reference(kind, data, analysis=kind, repeat=r)
            self.project(kind, data, [{"actors": a, "analysis": kind} for a in (1, 2)], repeat=r)

    def case_scaling(self) -> None:
        data = self.dataset("cpu", self.plan.cpu_n, MiB)
        for r in range(self.repeats):
            # the machine's own scaling: the same kernel in 1 and 2 bare processes (no Ray,
            # no Kafka), the ceiling of the actors' ratio on this VM in this sitting
            for n in (1, 2):
                self.record(
                    {
                        "case": "scaling",
                        "system": "raw",
                        "variant": f"{n} processes",
                        "repeat": r,
                        "mb_s": _kernel_mb_s("fft", n, seconds=6.0),
                    }
                )
            done = {a for a in (1, 2) if self.values("fft", "project", "mb_s", f"{a} actors")[r:]}
            todo = [a for a in (1, 2, 4) if a not in done]
            self.project(
                "scaling", data, [{"actors": a, "analysis": "fft"} for a in todo], repeat=r
            )

    def case_sizes(self) -> None:
        """One file at a time into a running pipeline (the next once the previous one's
        result is out): the time from its first chunk to its result, per size and mode.
        The chunks are encoded before the clock starts and produced as fast as possible."""
        sizes = list(self.plan.sizes_mib)
        root, sha = self.files(
            "sizes", [("0probe.bin", 4 * KiB)] + [(f"s{m:05d}.bin", m * MiB) for m in sizes]
        )
        names = sorted(sha)
        for r in range(self.repeats):
            for mode in ("memory", "disk"):
                topic = self.new_topic("sizes", 4)
                data = Dataset("sizes", len(names), 0, root, topic, 0, sha, 0.0)
                leg = Leg(data, self.new_topic("sizes-out", 1), mode)
                sender = Sender(self.kafka, topic)

                def one_by_one(
                    watchers: list[ResultWatcher], sender: Sender = sender, mode: str = mode
                ) -> None:
                    for name in names:
                        encoded = [
                            (c.key.encode(), encode_value(c))
                            for c in chunks_of(UploadSource(root / name, root), CHUNK)
                        ]
                        for key, value in encoded:
                            sender.send_encoded(key, value)
                        del encoded
                        if not sender.wait_for(watchers[0], name, timeout=600):
                            print(f"# WARNING sizes {mode}: no result for {name}", flush=True)
                            return

                spec = {
                    "runs": [{"topic": topic, "results_topic": leg.results_topic}],
                    "options": {"mode": mode},
                }
                rows, watchers = self.run_process(
                    "project", self.project_cmd(spec), [leg], during=one_by_one
                )
                chunks = chunk_times(self.bootstrap, topic)
                for name, mib in zip(names[1:], sizes, strict=True):
                    row: dict[str, Any] = {
                        "case": "sizes",
                        "system": "project",
                        "variant": mode,
                        "repeat": r,
                        "size_mib": mib,
                        "rc": rows[0]["rc"],
                    }
                    result = watchers[0].stamps.get(name)
                    if result is not None and name in chunks:
                        first, last = chunks[name]
                        row["seconds"] = result - first
                        row["s_per_mib"] = row["seconds"] / mib
                        row["produce_s"] = last - first
                        row["after_last_chunk_s"] = result - last
                    self.record(row)

    def case_exactly_once(self) -> None:
        data = self.dataset("mib1", self.plan.mib1_n, MiB)
        for r in range(self.repeats):
            if not self.values("1mib", "project", "mb_s")[r:]:
                self.project("exactly_once", data, [{"variant": "at least once"}], repeat=r)
            self.project(
                "exactly_once",
                data,
                [{"variant": "exactly once", "options": {"exactly_once": True}}],
                repeat=r,
            )

    def case_latency(self) -> None:
        """1 MiB files produced while the pipeline runs: first a calibration batch as fast
        as possible (the max rate), then files at half that rate, steadily. Latency is the
        time from a file's last chunk to its result (both broker timestamps)."""
        source = self.dataset("mib1", self.plan.mib1_n, MiB)
        templates = [
            list(chunks_of(UploadSource(source.root / name, source.root), CHUNK))
            for name in sorted(source.sha256)[:16]
        ]
        template_sha = [source.sha256[name] for name in sorted(source.sha256)[:16]]
        n_calibration = 60
        names = ["0probe.bin"] + [f"c{i:05d}.bin" for i in range(n_calibration)]
        names += [f"l{i:05d}.bin" for i in range(5000)]  # the paced files: as many as needed
        sha = {name: template_sha[i % len(templates)] for i, name in enumerate(names)}
        for r in range(self.repeats):
            topic = self.new_topic("latency", 4)
            data = Dataset("latency", len(names), MiB, source.root, topic, 0, sha, 0.0)
            leg = Leg(data, self.new_topic("latency-out", 1), "1 MiB paced", expected=10**9)
            sender = Sender(self.kafka, topic)
            pacing: dict[str, float] = {}

            def paced(
                watchers: list[ResultWatcher], sender: Sender = sender, pacing: dict = pacing
            ) -> None:
                watcher = watchers[0]
                sender.send(templates[0], names[0])  # the probe: its result says "running"
                sender.wait_for(watcher, names[0], timeout=180)
                calibration = names[1 : 1 + n_calibration]
                for i, name in enumerate(calibration, start=1):
                    sender.send(templates[i % len(templates)], name)
                for name in calibration:
                    sender.wait_for(watcher, name, timeout=120)
                stamps = sorted(
                    watcher.stamps[name] for name in calibration if name in watcher.stamps
                )
                top = (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-3) if stamps else 20.0
                rate = min(0.5 * top, 500.0)
                count = int(min(max(rate * self.plan.latency_seconds, 40), 5000))
                pacing.update(max_files_s=top, rate_files_s=rate, n_files=count)
                watcher.expected = 1 + n_calibration + count
                start = time.perf_counter()
                first = 1 + n_calibration
                for i in range(first, first + count):
                    wait = start + (i - first) / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    sender.send(templates[i % len(templates)], names[i])
                sender.producer.flush(60)

            spec = {"runs": [{"topic": topic, "results_topic": leg.results_topic}]}
            rows, watchers = self.run_process(
                "project", self.project_cmd(spec), [leg], during=paced
            )
            chunks = chunk_times(self.bootstrap, topic)
            result = watchers[0].stamps
            paced_names = names[
                1 + n_calibration : 1 + n_calibration + int(pacing.get("n_files", 0))
            ]
            latencies = sorted(
                result[name] - chunks[name][1]
                for name in paced_names
                if name in result and name in chunks
            )
            self.record(
                {
                    "case": "latency",
                    "system": "project",
                    "variant": leg.variant,
                    "repeat": r,
                    **pacing,
                    "results": len(latencies),
                    "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
                    "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None,
                    "max_ms": 1000 * latencies[-1] if latencies else None,
                    "latencies_ms": [round(1000 * x, 1) for x in latencies],
                    "rc": rows[0]["rc"],
                }
            )

    def case_startup(self) -> None:
        """Spawn -> first result for both (from the 1 MiB runs), and Ray's own floor."""
        if not self.values("1mib", "project", "startup_s"):
            data = self.dataset("mib1", self.plan.mib1_n, MiB)
            for r in range(self.repeats):
                self.reference("startup", data, repeat=r)
                self.project("startup", data, repeat=r)
        for r in range(self.repeats):
            spawned = time.time()
            done = subprocess.run(
                [sys.executable, "-c", RAY_FLOOR],
                capture_output=True,
                text=True,
                cwd=self.tmp,
                check=False,
            )
            exited = time.time()
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if not lines:
                print(f"# WARNING ray floor failed: {done.stderr[-500:]}", flush=True)
                continue
            marks = json.loads(lines[-1])
            self.record(
                {
                    "case": "startup",
                    "system": "ray",
                    "variant": "ray.init + 1 actor call",
                    "repeat": r,
                    "floor_s": marks["called"] - marks["imported"],
                    "import_s": marks["imported"] - marks["start"],
                    "spawn_to_call_s": marks["called"] - spawned,
                    "exit_s": exited - spawned,
                }
            )

    def case_memory(self) -> None:
        """Peak PSS above the idle baseline, 50 MiB files with a budget (max_held_mb), in
        memory mode and disk mode, a process each; the baseline is the
        pipeline on an empty topic (bench/pipeline.py's idle())."""
        data = self.dataset("big", self.plan.big_n, 50 * MiB)
        budget = {"max_held_mb": self.args.memory_budget_mb}
        for r in range(self.repeats):
            log_path = self.tmp / "logs" / f"idle-{r}.log"
            with log_path.open("wb") as log:
                spawned = time.time()
                proc = subprocess.Popen(
                    self.project_cmd({"idle": True}),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    start_new_session=True,
                )
                sampler = RssSampler(root=proc.pid, interval=0.25)
                sampler.start()
                try:
                    proc.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    kill_tree(proc.pid)
                    proc.wait()
                sampler.stop.set()
                sampler.join()
            self.record(
                {
                    "case": "memory",
                    "system": "project",
                    "variant": "idle",
                    "repeat": r,
                    "peak_pss_mib": sampler.peak / MiB,
                    "seconds": time.time() - spawned,
                    "rc": proc.returncode,
                    "memory": [
                        (round(t - spawned, 2), round(b / MiB, 1)) for t, b in sampler.totals
                    ],
                }
            )
            runs = [
                {"variant": "memory", "options": {"mode": "memory", **budget}},
                {"variant": "disk", "options": {"mode": "disk", **budget}},
            ]
            for run in runs:  # a process each: one run's memory must not stay in the next's
                self.project("memory", data, [run], repeat=r, sample_every=0.25)
            if not self.values("50mib", "reference", "peak_pss_mib")[r:]:
                self.reference("memory", data, repeat=r, sample_every=0.25)


def chunk_times(bootstrap: str, topic: str, idle: float = 3.0) -> dict[str, tuple[float, float]]:
    """file -> broker timestamps (s) of its first and last chunk message on ``topic``."""
    consumer = reader(bootstrap)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    times: dict[str, tuple[float, float]] = {}
    last = time.monotonic()
    while time.monotonic() - last < idle:
        for message in consumer.consume(500, 0.2):
            if not message.error():
                last = time.monotonic()
                chunk = decode_value(message.value(), verify_hash=False)
                name = f"{chunk.subdir_str}/{chunk.filename}".lstrip("/")
                stamp = message.timestamp()[1] / 1000
                first_seen, last_seen = times.get(name, (stamp, stamp))
                times[name] = (min(first_seen, stamp), max(last_seen, stamp))
    consumer.close()
    return times


# --------------------------------------------------------------------------- the report
def _kernel_loop(kind: str, seconds: float, out: Any) -> None:
    data = np.random.default_rng(3).bytes(MiB)
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        work.analyze(data, kind)
        done += 1
    out.put(done)


def _kernel_mb_s(kind: str, processes: int, seconds: float) -> float:
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


@dataclasses.dataclass
class Line:
    """One line of the table."""

    case: str
    metric: str
    raw: str = ""
    reference: str = ""
    project: str = ""
    ratio: str = ""
    target: str = ""
    status: str = ""  # met / not met / not measured / "" (no target)
    basis: str = "ratio"  # what the target is judged on: "ratio" or "project"


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}x"


def judge(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


class Report:
    def __init__(self, bench: Bench) -> None:
        self.b = bench
        self.lines: list[Line] = []

    def v(self, case: str, system: str, key: str, variant: str | None = None) -> list[float]:
        return self.b.values(case, system, key, variant)

    def m(self, case: str, system: str, key: str, variant: str | None = None) -> float:
        return median(self.v(case, system, key, variant))

    def best_reference(self, case: str, key: str = "mb_s") -> tuple[str | None, float]:
        """The reference's thread count with the highest median, and that median."""
        variants = sorted(
            {r["variant"] for r in self.b.rows if r["case"] == case and r["system"] == "reference"}
        )
        scored = [(self.m(case, "reference", key, v), v) for v in variants]
        scored = [(s, v) for s, v in scored if s == s]
        if not scored:
            return None, float("nan")
        score, variant = max(scored)
        return variant, score

    def s(self, case: str, system: str, key: str, variant: str | None = None) -> str:
        """``fmt_spread`` of the values, with † when a run's rate is start-up burst."""
        text = fmt_spread(self.v(case, system, key, variant))
        burst = any(
            r.get("burst")
            for r in self.b.rows
            if r["case"] == case
            and r["system"] == system
            and (variant is None or r.get("variant") == variant)
        )
        if not burst or key not in ("mb_s", "files_s", "cpu_s_per_mb"):
            return text
        late = self.v(case, system, f"late_{key}", variant)
        return f"{text} †" + (f" (later half {fmt_spread(late)})" if late else "")

    def reference_text(self, case: str, key: str, unit: str) -> str:
        variants = sorted(
            {r["variant"] for r in self.b.rows if r["case"] == case and r["system"] == "reference"}
        )
        if not variants:
            return "not run" if self.b.omsi is not None else "unavailable"
        parts = [f"{v}: {self.s(case, 'reference', key, v)}" for v in variants]
        return "; ".join(parts)

    @staticmethod
    def ratio(a: float, b: float) -> float | None:
        if a != a or b != b or b == 0:
            return None
        return a / b

    def memory_text(self) -> str:
        """What writing 1 GiB of new memory costs here (see ``fresh_memory_cost``)."""
        warm, cold = self.v("raw", "machine", "warm_gib_s"), self.v("raw", "machine", "cold_gib_s")
        if not warm or not cold:
            return ""
        idle = self.v("raw", "machine", "idle_s")
        return (
            f"; writing 1 GiB of new memory: {fmt_num(warm[0])} s right after a free, "
            f"{fmt_num(cold[0])} s after {fmt_num(idle[0])} s idle"
        )

    def build(self) -> list[Line]:  # one block per case, in table order
        b, cases = self.b, self.b.args.cases
        limit = b.limit_1mib()
        if "raw" in cases and limit:
            self.lines.append(
                Line(
                    "raw",
                    "this machine: consume MB/s (1 MiB topic); hashlib MB/s on one core",
                    raw=f"consume {fmt_spread(self.v('1mib', 'raw', 'mb_s'))}; "
                    f"sha512 {fmt_spread(self.v('raw', 'machine', 'sha512_mb_s'))}; "
                    f"sha256 {fmt_spread(self.v('raw', 'machine', 'sha256_mb_s'))}"
                    + self.memory_text(),
                )
            )
        if "small_lock" in cases and self.v("small_lock", "project", "files_s"):
            prj = self.m("small_lock", "project", "files_s")
            _, ref = self.best_reference("small_lock", "files_s")
            r = self.ratio(prj, ref)
            unlocked = self.ratio(prj, self.m("small", "project", "files_s"))
            self.lines.append(
                Line(
                    "small_lock",
                    f"files/s, {b.plan.small_n:,} x 4 KiB, sha256, the lock taken once per file",
                    reference=self.reference_text("small_lock", "files_s", ""),
                    project=self.s("small_lock", "project", "files_s"),
                    ratio=ratio_text(r),
                    target=f"≥ 4x reference; ≥ 0.85x without the lock (is {ratio_text(unlocked)})",
                    status=judge(
                        None if r is None or unlocked is None else r >= 4 and unlocked >= 0.85
                    ),
                )
            )
        for case, label in (("small", b.plan.small_n), ("small10k", 10_000)):
            if case == "small10k" and case in cases and not b.plan.small10k:
                self.lines.append(
                    Line(
                        case,
                        "files/s, 10,000 x 4 KiB, sha256",
                        target="per-file cost vs the small case ≤ 1.2x (skipped in --quick)",
                        status="not measured",
                    )
                )
            if case not in cases or not self.v(case, "project", "files_s"):
                continue
            ref_variant, ref = self.best_reference(case, "files_s")
            prj = self.m(case, "project", "files_s")
            r = self.ratio(prj, ref)
            line = Line(
                case,
                f"files/s, {label:,} x 4 KiB, sha256",
                raw=fmt_spread(self.v(case, "raw", "files_s")),
                reference=self.reference_text(case, "files_s", ""),
                project=self.s(case, "project", "files_s"),
                ratio=ratio_text(r),
            )
            if case == "small":
                line.target, line.status = "≥ 2x reference", judge(None if r is None else r >= 2)
            else:
                per_file = self.ratio(self.m("small", "project", "files_s"), prj)
                line.target = (
                    f"per-file cost vs {b.plan.small_n:,} files ≤ 1.2x (is {ratio_text(per_file)})"
                )
                line.status = judge(None if per_file is None else per_file <= 1.2)
            self.lines.append(line)
        if "1mib" in cases and self.v("1mib", "project", "mb_s"):
            ref_variant, ref = self.best_reference("1mib")
            prj = self.m("1mib", "project", "mb_s")
            r = self.ratio(prj, ref)
            raw_text = fmt_spread(self.v("1mib", "raw", "mb_s"))
            if limit:
                raw_text += f"; limit {fmt_num(limit['limit'])}"
            self.lines.append(
                Line(
                    "1mib",
                    f"MB/s, {b.plan.mib1_n} x 1 MiB, sha256",
                    raw=raw_text,
                    reference=self.reference_text("1mib", "mb_s", ""),
                    project=self.s("1mib", "project", "mb_s")
                    + (f" ({100 * prj / limit['limit']:.0f}% of limit)" if limit else ""),
                    ratio=ratio_text(r),
                    target="≥ 1.4x reference's best thread count",
                    status=judge(None if r is None else r >= 1.4),
                )
            )
            ref_cpu = self.m("1mib", "reference", "cpu_s_per_mb", ref_variant)
            prj_cpu = self.m("1mib", "project", "cpu_s_per_mb")
            rc = self.ratio(prj_cpu, ref_cpu)
            self.lines.append(
                Line(
                    "1mib",
                    "CPU s/MB (all processes, steady state)",
                    reference=self.reference_text("1mib", "cpu_s_per_mb", ""),
                    project=self.s("1mib", "project", "cpu_s_per_mb"),
                    ratio=ratio_text(rc),
                    target=f"≤ reference's ({ref_variant or 'n/a'})",
                    status=judge(None if rc is None else rc <= 1.0),
                )
            )
        if "50mib" in cases and self.v("50mib", "project", "mb_s"):
            _, ref = self.best_reference("50mib")
            r = self.ratio(self.m("50mib", "project", "mb_s"), ref)
            self.lines.append(
                Line(
                    "50mib",
                    f"MB/s, {b.plan.big_n} x 50 MiB, sha256",
                    raw=fmt_spread(self.v("50mib", "raw", "mb_s")),
                    reference=self.reference_text("50mib", "mb_s", ""),
                    project=self.s("50mib", "project", "mb_s"),
                    ratio=ratio_text(r),
                    target="≥ 5x reference",
                    status=judge(None if r is None else r >= 5),
                )
            )
        for kind in ("fft", "pyloop"):
            if kind not in cases or not self.v(kind, "project", "mb_s"):
                continue
            one = self.m(kind, "project", "mb_s", "1 actors")
            two = self.m(kind, "project", "mb_s", "2 actors")
            r = self.ratio(two, one)
            self.lines.append(
                Line(
                    kind,
                    f"MB/s, {b.plan.cpu_n} x 1 MiB, {kind}: 2 actors vs 1",
                    project=f"1 actor: {self.s(kind, 'project', 'mb_s', '1 actors')}; "
                    f"2 actors: {self.s(kind, 'project', 'mb_s', '2 actors')}",
                    ratio=ratio_text(r),
                    target="2 actors ≥ 1.8x 1 actor",
                    status=judge(None if r is None else r >= 1.8),
                )
            )
            _, ref = self.best_reference(kind)
            r = self.ratio(two, ref)
            self.lines.append(
                Line(
                    kind,
                    f"MB/s, {kind}: 2 actors vs the reference",
                    reference=self.reference_text(kind, "mb_s", ""),
                    project=self.s(kind, "project", "mb_s", "2 actors"),
                    ratio=ratio_text(r),
                    target="≥ 1.6x reference's best",
                    status=judge(None if r is None else r >= 1.6),
                )
            )
        if "scaling" in cases:
            by_actors = self.scaling()
            if by_actors:
                one = median(by_actors.get(1, []))
                parts = [f"{a}: {fmt_spread(v)}" for a, v in sorted(by_actors.items())]
                bare = {n: self.v("scaling", "raw", "mb_s", f"{n} processes") for n in (1, 2)}
                raw_text = ""
                if bare[1] and bare[2]:
                    raw_text = (
                        f"bare processes 1: {fmt_spread(bare[1])}; 2: {fmt_spread(bare[2])} "
                        f"(2/1: {ratio_text(self.ratio(median(bare[2]), median(bare[1])))})"
                    )
                self.lines.append(
                    Line(
                        "scaling",
                        "fft MB/s by analysis actors (2 cores)",
                        raw=raw_text,
                        project="; ".join(parts),
                        ratio="; ".join(
                            f"{a}/1: {ratio_text(self.ratio(median(v), one))}"
                            for a, v in sorted(by_actors.items())
                            if a > 1
                        ),
                    )
                )
        if "sizes" in cases:
            largest = max(b.plan.sizes_mib)
            for mode in ("memory", "disk"):
                per = {
                    size: [
                        r["s_per_mib"]
                        for r in b.rows
                        if r["case"] == "sizes"
                        and r["variant"] == mode
                        and r.get("size_mib") == size
                        and "s_per_mib" in r
                    ]
                    for size in b.plan.sizes_mib
                }
                ref64 = median(per.get(64, []))
                gib = self.ratio(median(per.get(1024, [])), ref64)
                self.lines.append(
                    Line(
                        "sizes",
                        f"s/MiB by file size, {mode} mode (relative to 64 MiB)",
                        project="; ".join(
                            f"{size_label(s)}: {fmt_spread(v)} ({ratio_text(self.ratio(median(v), ref64))})"
                            for s, v in per.items()
                        ),
                        ratio=ratio_text(self.ratio(median(per.get(largest, [])), ref64))
                        + f" ({size_label(largest)})",
                        target="1 GiB ≤ 1.2x 64 MiB",
                        status=judge(None if gib is None else gib <= 1.2),
                    )
                )
        if "latency" in cases and self.v("latency", "project", "p50_ms"):
            rate = self.m("latency", "project", "rate_files_s")
            for key, bound in (("p50_ms", 100), ("p99_ms", 1000)):
                value = self.m("latency", "project", key)
                self.lines.append(
                    Line(
                        "latency",
                        f"ms from last chunk to result, {key[:3]}, 1 MiB at {rate:.0f} files/s",
                        project=fmt_spread(self.v("latency", "project", key)),
                        target=f"< {bound} ms",
                        status=judge(value < bound),
                    )
                )
        if "exactly_once" in cases and self.v("exactly_once", "project", "mb_s", "exactly once"):
            alo = self.v("1mib", "project", "mb_s") or self.v(
                "exactly_once", "project", "mb_s", "at least once"
            )
            alo_text = (
                self.s("1mib", "project", "mb_s")
                if self.v("1mib", "project", "mb_s")
                else self.s("exactly_once", "project", "mb_s", "at least once")
            )
            eo = self.v("exactly_once", "project", "mb_s", "exactly once")
            r = self.ratio(median(eo), median(alo))
            self.lines.append(
                Line(
                    "exactly_once",
                    "MB/s, 1 MiB sha256: exactly-once vs at-least-once",
                    project=f"at least once: {alo_text}; exactly once: "
                    f"{self.s('exactly_once', 'project', 'mb_s', 'exactly once')}",
                    ratio=ratio_text(r),
                    target="≥ 0.85x at-least-once",
                    status=judge(None if r is None else r >= 0.85),
                )
            )
        if "startup" in cases:
            case = "1mib" if self.v("1mib", "project", "startup_s") else "startup"
            prj = self.m(case, "project", "startup_s")
            _, ref = self.best_reference(case, "startup_s")
            ref_all = [
                s
                for r in b.rows
                if r["case"] == case and r["system"] == "reference"
                for s in [r.get("startup_s")]
                if s
            ]
            self.lines.append(
                Line(
                    "startup",
                    "s from process spawn to the first result",
                    raw=f"Ray floor (init + 1 actor call) {fmt_spread(self.v('startup', 'ray', 'floor_s'))}; "
                    f"spawn to that call {fmt_spread(self.v('startup', 'ray', 'spawn_to_call_s'))}",
                    reference=fmt_spread(ref_all),
                    project=fmt_spread(self.v(case, "project", "startup_s")),
                    ratio=ratio_text(self.ratio(prj, median(ref_all))),
                    target="≤ 3 s",
                    basis="project",
                    status=judge(None if prj != prj else prj <= 3),
                )
            )
        if "memory" in cases and self.v("memory", "project", "peak_pss_mib", "idle"):
            idle = self.m("memory", "project", "peak_pss_mib", "idle")
            budget = b.args.memory_budget_mb
            ref_case = "50mib" if self.v("50mib", "reference", "peak_pss_mib") else "memory"
            for mode, allowed in (("memory", budget + 50), ("disk", budget)):
                above = [p - idle for p in self.v("memory", "project", "peak_pss_mib", mode)]
                self.lines.append(
                    Line(
                        "memory",
                        f"peak PSS MiB above idle, 50 MiB files, {mode} mode, budget {budget:.0f} MiB",
                        raw=f"idle {fmt_spread(self.v('memory', 'project', 'peak_pss_mib', 'idle'))}",
                        reference=(
                            f"peak {fmt_spread(self.v(ref_case, 'reference', 'peak_pss_mib'))}"
                            if mode == "memory"
                            else ""
                        ),
                        project=f"{fmt_spread(above)} (peak {fmt_spread(self.v('memory', 'project', 'peak_pss_mib', mode))})",
                        target=f"≤ {allowed:.0f} MiB"
                        + (" (budget + largest file)" if mode == "memory" else " (budget)"),
                        status=judge(None if not above else median(above) <= allowed),
                    )
                )
        for line in self.lines:  # a target judged on a start-up burst is in doubt
            if line.status in ("met", "not met") and "†" in line.reference + line.project:
                line.status += " †"
        return self.lines

    def scaling(self) -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for r in self.b.rows:
            if r["system"] == "project" and r["case"] in ("fft", "scaling") and "mb_s" in r:
                out.setdefault(int(r["variant"].split()[0]), []).append(r["mb_s"])
        return out


def size_label(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 else f"{mib} MiB"


# --------------------------------------------------------------------------- plots
def plots(bench: Bench, report: Report, folder: Path) -> list[tuple[str, str]]:
    """PNG files under ``folder``: (file name, caption)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional, and after the backend is set

    folder.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        made.append((name, caption))

    # throughput per case
    cases = [
        (c, label)
        for c, label in (
            ("1mib", "1 MiB sha256"),
            ("50mib", "50 MiB sha256"),
            ("fft", "1 MiB fft"),
            ("pyloop", "1 MiB pyloop"),
        )
        if bench.values(c, "project", "mb_s")
    ]
    if cases:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.27
        xs = np.arange(len(cases))
        raw_v = [
            median(bench.values("1mib" if c in ("fft", "pyloop") else c, "raw", "mb_s"))
            for c, _ in cases
        ]
        ref_v = [report.best_reference(c)[1] for c, _ in cases]
        prj_v = [median(bench.values(c, "project", "mb_s", "2 actors")) for c, _ in cases]
        for offset, values, label, color in (
            (-width, raw_v, "raw consume", "#999999"),
            (0, ref_v, "reference (best thread count)", "#d95f02"),
            (width, prj_v, "project (2 analysis actors)", "#1b9e77"),
        ):
            heights = [v if v == v else 0 for v in values]
            bars = ax.bar(xs + offset, heights, width, label=label, color=color)
            label_bars(ax, bars, values)
        ax.set_xticks(xs, [label for _, label in cases])
        ax.set_yscale("log")
        positive = [v for v in raw_v + ref_v + prj_v if v == v and v > 0]
        if positive:
            ax.set_ylim(bottom=min(positive) / 4, top=max(positive) * 3)
        ax.set_ylabel("steady-state throughput (MB/s, log scale)")
        ax.set_title("Throughput per case: raw consumption, reference, project")
        ax.legend(fontsize=8)
        save(
            fig,
            "throughput.png",
            "Steady-state MB/s per case (medians; log scale; raw: a bare consumer on the same "
            "topic, the 1 MiB one for fft and pyloop)",
        )

    # files/s for 4 KiB files
    small = [
        (c, label)
        for c, label in (("small", f"{bench.plan.small_n:,} files"), ("small10k", "10,000 files"))
        if bench.values(c, "project", "files_s")
    ]
    if small:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.27
        xs = np.arange(len(small))
        positive: list[float] = []
        for offset, system, label, color in (
            (-width, "raw", "raw consume (messages/s)", "#999999"),
            (0, "reference", "reference (2 threads)", "#d95f02"),
            (width, "project", "project (2 actors)", "#1b9e77"),
        ):
            values = [median(bench.values(c, system, "files_s")) for c, _ in small]
            positive += [v for v in values if v == v and v > 0]
            bars = ax.bar(
                xs + offset, [v if v == v else 0 for v in values], width, label=label, color=color
            )
            label_bars(ax, bars, values)
        ax.set_xticks(xs, [label for _, label in small])
        ax.set_yscale("log")
        if positive:
            ax.set_ylim(bottom=min(positive) / 4, top=max(positive) * 3)
        ax.set_ylabel("files per second (log scale)")
        ax.set_title("4 KiB files, sha256: files per second")
        ax.legend(fontsize=8)
        save(fig, "small_files.png", "Files per second for 4 KiB files (medians)")

    # actor scaling
    by_actors = report.scaling()
    if by_actors:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        actors = sorted(by_actors)
        meds = [median(by_actors[a]) for a in actors]
        ax.plot(actors, meds, "o-", color="#1b9e77", label="project (fft)")
        for a in actors:
            ax.scatter([a] * len(by_actors[a]), by_actors[a], color="#1b9e77", alpha=0.35, s=12)
        if 1 in by_actors:
            ideal = [median(by_actors[1]) * min(a, os.cpu_count() or 1) for a in actors]
            ax.plot(
                actors, ideal, "--", color="#999999", label=f"linear up to {os.cpu_count()} cores"
            )
        _, ref = report.best_reference("fft")
        if ref == ref:
            ax.axhline(ref, color="#d95f02", linestyle=":", label="reference fft (2 threads)")
        pyloop = [
            (a, median(bench.values("pyloop", "project", "mb_s", f"{a} actors"))) for a in (1, 2)
        ]
        pyloop = [(a, v) for a, v in pyloop if v == v]
        if pyloop:
            ax.plot(
                [a for a, _ in pyloop],
                [v for _, v in pyloop],
                "s-",
                color="#7570b3",
                label="project (pyloop)",
            )
        ax.set_xticks(actors)
        ax.set_xlabel("analysis actors")
        ax.set_ylabel("steady-state throughput (MB/s)")
        ax.set_title("CPU-bound analysis: scaling with analysis actors")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        save(
            fig, "scaling.png", "MB/s of the fft (and pyloop) analysis by number of analysis actors"
        )

    # seconds vs file size
    sizes = [r for r in bench.rows if r["case"] == "sizes" and "seconds" in r]
    if sizes:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for mode, color in (("memory", "#1b9e77"), ("disk", "#7570b3")):
            points = sorted({r["size_mib"] for r in sizes if r["variant"] == mode})
            meds = [
                median([r["seconds"] for r in sizes if r["variant"] == mode and r["size_mib"] == s])
                for s in points
            ]
            if points:
                ax.plot(points, meds, "o-", color=color, label=f"{mode} mode")
        anchor = [r for r in sizes if r["size_mib"] == 64 and r["variant"] == "memory"]
        if anchor:
            per_mib = median([r["seconds"] for r in anchor]) / 64
            points = sorted({r["size_mib"] for r in sizes})
            ax.plot(
                points,
                [per_mib * s for s in points],
                "--",
                color="#999999",
                label="linear through 64 MiB",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({r["size_mib"] for r in sizes})
        ax.set_xticks(ticks, [size_label(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("file size (MiB, log scale)")
        ax.set_ylabel("seconds per file (log scale)")
        ax.set_title("One file through the pipeline: seconds vs size")
        ax.legend(fontsize=8)
        save(fig, "sizes.png", "Seconds for one file by size, memory and disk mode (log-log)")

    # latency CDF
    latency = [
        r["latencies_ms"] for r in bench.rows if r["case"] == "latency" and r.get("latencies_ms")
    ]
    if latency:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for i, samples in enumerate(latency):
            if samples:
                ms = np.sort(np.array(samples))
                ax.plot(
                    ms, np.arange(1, ms.size + 1) / ms.size, label=f"run {i + 1} ({ms.size} files)"
                )
        ax.axvline(100, color="#999999", linestyle=":", label="100 ms (p50 target)")
        ax.axvline(1000, color="#999999", linestyle="--", label="1 s (p99 target)")
        ax.set_xscale("log")
        ax.set_xlabel("latency: last chunk -> result (ms, log scale)")
        ax.set_ylabel("fraction of files")
        ax.set_title("Latency of 1 MiB files uploaded at a paced rate (CDF)")
        ax.legend(fontsize=8)
        save(fig, "latency_cdf.png", "CDF of the latency from a file's last chunk to its result")

    # memory over time
    series = []
    for case, system, variant, label in (
        ("memory", "project", "memory", "project, memory mode"),
        ("memory", "project", "disk", "project, disk mode"),
        ("50mib", "reference", None, "reference"),
        ("memory", "reference", None, "reference"),
        ("memory", "project", "idle", "project, idle (empty topic)"),
    ):
        rows = [
            r
            for r in bench.rows
            if r["case"] == case
            and r["system"] == system
            and (variant is None or r.get("variant") == variant)
            and r.get("memory")
        ]
        if rows:
            series.append((label, rows[0]["memory"]))
    if series:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for label, points in series:
            ax.plot([t for t, _ in points], [m for _, m in points], label=label)
        idle = median(bench.values("memory", "project", "peak_pss_mib", "idle"))
        if idle == idle:
            budget = bench.args.memory_budget_mb
            ax.axhline(
                idle + budget + 50, color="#999999", linestyle="--", label="idle + budget + 50 MiB"
            )
            ax.axhline(idle + budget, color="#999999", linestyle=":", label="idle + budget")
        ax.set_xlabel("seconds since process spawn")
        ax.set_ylabel("total PSS of the process tree (MiB)")
        ax.set_title(f"Memory over time, {bench.plan.big_n} x 50 MiB files")
        ax.legend(fontsize=8)
        save(fig, "memory.png", "Total PSS over time (all processes of each system)")
    return made


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


# --------------------------------------------------------------------------- the document
def write_doc(
    path: Path,
    bench: Bench,
    report: Report,
    made: list[tuple[str, str]],
    info: dict[str, dict[str, str]],
    command: str,
    seconds: float,
) -> None:
    folder = path.stem
    lines = [
        "# Benchmarks: ray-reproducer and OpenMSIStream 1.8.8",
        "",
        f"Measured by `{command}` on {info['run']['date']}, in one sitting on one broker "
        f"({seconds / 60:.1f} min). Both systems read the same uploaded topics (4 partitions, "
        "512 KiB chunks), run the same per-file work (`bench/work.py`) and produce to a fresh "
        "1-partition results topic. Every figure is the median over "
        f"{bench.repeats} repeat{'s' if bench.repeats > 1 else ''}"
        + (", with (min–max)." if bench.repeats > 1 else ".")
        + f" Every row: [`{folder}/results.json`]({folder}/results.json).",
        "",
    ]
    if bench.omsi is None:
        lines += [f"**The reference did not run:** {info['run']['omsi']}.", ""]
    if bench.args.quick:
        lines += [
            "**Quick run** (`--quick`): small sizes, one repeat, no 10,000-file or 1 GiB case. "
            "Indicative only; run without `--quick` for the figures to quote.",
            "",
        ]
    lines += ["## Machine and versions", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in {**info["machine"], **info["versions"]}.items()]
    lines += [
        f"| date | {info['run']['date']} |",
        "",
        "## Results",
        "",
        "Ratio is project / reference (or as the metric says), from the medians. Raw is the "
        "ceiling: reading the same topic with a bare confluent-kafka consumer.",
        "",
        "| case | metric | raw | reference | project | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in report.lines:
        target = f"{line.target}: **{line.status}**" if line.status else line.target
        lines.append(
            f"| {line.case} | {line.metric} | {line.raw} | {line.reference} | {line.project} | {line.ratio} | {target} |"
        )
    if any(r.get("burst") for r in bench.rows):
        lines += [
            "",
            "† Start-up burst: this system read much of the topic while it started, and the "
            "results of those files came out at once, so even the middle 80% of the results "
            "overstates its steady rate (by more than 25% against the later half of the "
            "results, or beyond raw consumption of the same topic, which no steady rate can "
            "pass); its CPU s/MB misses the work done during start-up. The later half's rate "
            "is given where there are 4 results or more (`late_mb_s`, `late_files_s` in "
            "`results.json`). A target judged on such a value is marked met † / not met †. "
            "More files per run (without `--quick`) make the burst a smaller part.",
        ]
    lines += ["", "## Targets", ""]
    for line in report.lines:
        if line.status:
            measured = (
                f"ratio {line.ratio}"
                if line.ratio and line.basis == "ratio"
                else f"project {line.project}"
            )
            measured = f" ({measured})" if line.ratio or line.project else ""
            lines.append(
                f"- **{line.status}**: {line.case}, {line.metric}: {line.target}{measured}"
            )
    skipped = [c for c in CASES if c not in bench.args.cases]
    if skipped:
        lines.append(f"- not run in this invocation: {', '.join(skipped)}")
    lines += ["", "## Plots", ""]
    for name, caption in made:
        lines += [f"![{caption}]({folder}/{name})", "", f"*{caption}*", ""]
    limit = bench.limit_1mib()
    lines += [
        "## How it is measured",
        "",
        "- **Runs.** Every run is a process of its own, spawned by the harness: the reference's "
        "`bench/omsi_reproducer.py` in its own virtualenv (stopped by typing `q`, its quit "
        "command), and this project's `bench/project_run.py`, which starts a fresh local Ray "
        "(stopped by SIGTERM once every result is in; it drains and exits). The reference runs "
        "with `--n_consumer_threads N --n_producer_threads N`; the project with "
        "`n_analysis_actors` (default 2). The fft and pyloop cases run 1 and then 2 actors in "
        "one project process (one Ray), the first run ending when idle for 1.5 s.",
        "- **Throughput** is steady state: the bytes (or number) of the files of the middle "
        "80% of the results (the 10th percentile to the 90th, by time) over the time between "
        "them, both result-message timestamps; so neither the results of files read ahead "
        "during start-up nor the tail count, for either system. Start-up is "
        "reported apart: from process spawn to the first result's timestamp, so it includes "
        "interpreter start, imports, Ray's start (project) and the consumer-group join (both). "
        'Ray\'s own floor is `ray.init(address="local", include_dashboard=False)` plus one '
        "trivial actor call, in a fresh interpreter.",
        "- **Correctness.** Every result's sha256 is checked against the file's; wrong or "
        "missing results are printed as warnings and kept in `results.json`.",
        "- **CPU s/MB** is the CPU time (user + system, from /proc) of the spawned process and "
        "all its descendants (for the project: the driver and every Ray process) between the "
        "first and the last result of that steady window, over the bytes of its files.",
        "- **Memory** is the sum of the PSS (not RSS: Ray's object store is shared memory "
        "mapped by several processes) of the spawned process and all its descendants, sampled "
        "from /proc every 0.5 s (0.25 s for 50 MiB files). The project's idle baseline is the "
        "pipeline on an empty topic (`bench/pipeline.py`'s `idle()`); 50 MiB files run with "
        f"`max_held_mb={bench.args.memory_budget_mb:.0f}` (`--memory_budget_mb`) in memory "
        "mode and in disk mode (a process each; the 50mib case runs with the default budget), and the peak above that baseline is "
        "reported. Peaks of the later runs in a multi-run process are over that run's time.",
        "- **Sizes.** One pipeline per mode runs on an empty topic; once a 4 KiB probe file's "
        "result is out (the pipeline is up), each file is produced (its chunks encoded "
        "beforehand, sent as fast as the producer goes), and the next only after its result. "
        "A file's time is its result's timestamp minus its first chunk's, so it includes the "
        "time to produce it; `produce_s` and `after_last_chunk_s` in `results.json` split it. "
        "On a VM whose host takes back the memory its guest frees (this one: 2-3 s after a "
        "free), writing new memory costs about 10x more than writing reused memory (the raw "
        "row: 1 GiB right after a free, and after a few seconds idle). A 1 GiB file needs more "
        "than a GiB of such memory at once (its upload in the broker's page cache, the "
        "rebuilt file, the copies on the way) where a 64 MiB file reuses what the previous "
        "one freed: about 3 s of its time here is that cost, in either mode, which a host "
        "with its memory backed (bare metal, most cloud VMs) does not have.",
        "- **Latency.** The pipeline runs on an empty topic. Once a probe file's result is out, "
        "60 files of 1 MiB are produced as fast as possible to calibrate: their result rate is "
        "the max rate. Then 1 MiB files are produced steadily at half that rate "
        f"for {bench.plan.latency_seconds:.0f} s; a file's latency is its result's timestamp "
        "minus the timestamp of its last chunk (message timestamps, set by the producers on "
        "this machine, read back from the result and chunk topics).",
        "- **The 1 MiB limit of this machine.** Every byte is consumed once, hashed with "
        "SHA-512 (the whole-file check of the chunk format) and with SHA-256 (the analysis). "
        "On one core these take 1/consume + 1/sha512 + 1/sha256 seconds per MB, so with C cores "
        "working in parallel: limit = C / (1/consume + 1/sha512 + 1/sha256), and never more "
        "than consume itself."
        + (
            f" Here: consume {fmt_num(limit['consume'])} MB/s, sha512 {fmt_num(limit['sha512'])} MB/s, "
            f"sha256 {fmt_num(limit['sha256'])} MB/s, C = {limit['cores']}: limit "
            f"{fmt_num(limit['limit'])} MB/s."
            if limit
            else ""
        ),
        "- This machine's speed drifts (up to 2x within an hour on shared VMs): compare only "
        "figures from the same sitting, as here.",
        "",
        "## On paper, past one machine",
        "",
        *model_lines(limit),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def model_lines(limit: dict[str, Any] | None) -> list[str]:
    """The single ingest actor's ceiling, where a cluster meets it, and what would lift it."""
    sha512 = f"{fmt_num(limit['sha512'])} MB/s" if limit else "about 600 MB/s"
    return [
        "Analyses scale out: each analysis node adds its cores (the actor-scaling plot: FFT "
        "throughput with 1, 2 and 4 actors, on 2 cores here). One stage does not: the single "
        "ingest actor, through which every byte of every file passes once, and the driver, "
        "which handles every file once. Per byte, the ingest actor",
        "",
        "1. consumes and decodes the chunk messages on one thread (librdkafka copies the bytes "
        "into a message, msgpack into the chunk, the reassembler into the file's buffer), "
        "holding the GIL for the per-message work;",
        "2. hashes every byte with SHA-512 on `--n_consumer_threads` threads (hashlib "
        f"releases the GIL; {sha512} per core on this CPU, measured in this run);",
        "3. copies each completed file into the object store once (`ray.put`, about 1 ms "
        "per object here whatever its size, so several files share an object).",
        "",
        "So, with *h* hash threads on a node with *h* + 1 cores to spare:",
        "",
        "    bytes/s <= min(NIC, consume thread, h x SHA-512 per core)",
        "    files/s <= 1 / (per-file time of the consume thread + the driver's per-file time)",
        "",
        "Measured while profiling this work (1 MiB files, about 215 MB/s): the ingest actor "
        "used 0.95 of a core, 4.4 ms of CPU per MB, of which SHA-512 is 1.7 ms; the rest, "
        "about 2-2.5 ms per MB on the consume thread, puts that thread near 400-500 MB/s on "
        "this CPU. On 4 KiB files (several thousand files/s) the ingest actor and the driver "
        "each spend on the order of 100-150 us per file, so together about 5,000-10,000 "
        "files/s is the ceiling of one pipeline, however many nodes analyse.",
        "",
        "**Where a cluster meets it.** An ingest node with 16 cores and 8 hash threads hashes "
        "3-8 GB/s (0.4-1 GB/s per core, depending on the CPU); its consume thread moves "
        "roughly 0.5-1 GB/s on a faster core; a 10 GbE link carries 1.25 GB/s. So the consume "
        "thread, or the link, caps the whole cluster near 1 GB/s, and near 5,000-10,000 "
        "files/s, whatever the number of analysis nodes. Analyses that cost 0.1 s per MiB "
        "(the FFT case) need about 100 analysis cores to reach that ceiling; lighter ones "
        "reach it with a few nodes.",
        "",
        "**What would lift it, in order.**",
        "",
        "1. More hash threads (`--n_consumer_threads`), up to the ingest node's cores: until "
        "the consume thread is the limit. Place the ingest actor on a node of its own "
        "(`--ingest_resources`), near the brokers.",
        "2. Several ingest actors, files assigned by identity. A file's chunks are spread over "
        "every partition (each chunk has its own key), so partitions cannot simply be split "
        "among ingest actors. Either (a) every ingest actor reads every partition, decodes "
        "only the header of each chunk and keeps the files whose relative path hashes to it: "
        "each byte crosses the network once per actor but is copied and hashed once, and a "
        "coordinator commits, per partition, the lowest of the actors' safe offsets; or "
        "(b) uploads key each chunk by its file (a partitioner on the relative path, so all "
        "chunks of a file share a partition), and the partitions are split among ingest "
        "actors the usual Kafka way, each byte read once and each partition's offsets owned "
        "by one actor. (b) scales furthest but needs the uploaders' cooperation; the "
        "reference's uploader does not key by file.",
        "3. Take the driver off the per-file path: the ingest actors hand files to the "
        "analysis pools and collect acknowledgements themselves, the driver only supervising; "
        "with (2) that spreads the per-file work over the ingest actors.",
        "",
    ]


def print_table(report: Report) -> None:
    print("\n| case | metric | raw | reference | project | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    for line in report.lines:
        target = f"{line.target}: {line.status}" if line.status else line.target
        print(
            f"| {line.case} | {line.metric} | {line.raw} | {line.reference} | {line.project} | {line.ratio} | {target} |"
        )


# --------------------------------------------------------------------------- main
def render(
    bench: Bench, info: dict[str, Any], output: Path, command: str, seconds: float
) -> Report:
    """The report, its plots and results.json from ``bench.rows``."""
    mark_bursts(bench.rows)
    report = Report(bench)
    report.build()
    folder = output.parent / output.stem
    made = plots(bench, report, folder)
    write_doc(output, bench, report, made, info, command, seconds)
    saved = {
        "info": info,
        "command": command,
        "seconds": seconds,
        "args": {
            "quick": bench.args.quick,
            "repeats": bench.repeats,
            "cases": list(bench.args.cases),
            "memory_budget_mb": bench.args.memory_budget_mb,
            "reference_ran": bench.omsi is not None,
        },
        "plan": dataclasses.asdict(bench.plan),
        "rows": [{k: v for k, v in row.items() if k != "log"} for row in bench.rows],  # temp files
    }
    (folder / "results.json").write_text(json.dumps(saved, indent=1))
    print_table(report)
    print(f"\n# wrote {output} and {len(made)} plots in {folder}", flush=True)
    return report


def rerender(source: Path, output: Path) -> int:
    """Write the report and plots again from a results.json (no measurement)."""
    saved = json.loads(source.read_text())
    args = argparse.Namespace(**{k: v for k, v in saved["args"].items() if k != "reference_ran"})
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["plan"].items()})
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        bench = Bench(
            args, "", Path(tmp), Path("reference") if saved["args"]["reference_ran"] else None
        )
        bench.plan, bench.rows = plan, saved["rows"]
        render(bench, saved["info"], output, saved["command"], saved["seconds"])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, 1 repeat: under 5 minutes"
    )
    parser.add_argument("--repeats", type=int, help="runs of each case (default 3, --quick 1)")
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(CASES), help="default: all"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--omsi_venv", type=Path, default=DEFAULT_OMSI_VENV, help="the reference's virtualenv"
    )
    parser.add_argument(
        "--memory_budget_mb", type=float, default=256.0, help="max_held_mb in the memory case"
    )
    parser.add_argument(
        "--from_json",
        type=Path,
        help="measure nothing: write the report and plots again from this results.json",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="a results.json of the same sitting: its rows of the cases not run now are kept",
    )
    args = parser.parse_args()
    if args.from_json:
        return rerender(args.from_json, args.output)
    kept = []
    if args.keep:
        kept = [
            row
            for row in json.loads(args.keep.read_text())["rows"]
            if row["case"] not in args.cases
        ]
    args.repeats = args.repeats or (1 if args.quick else 3)
    begun = time.time()
    omsi, omsi_version = ensure_omsi(args.omsi_venv)
    if omsi is None:
        print(f"# the reference cannot run: {omsi_version}; measuring the project only", flush=True)
    started_broker = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with (
        broker_from_env() as bootstrap,
        tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp,
    ):
        bench = Bench(args, bootstrap, Path(tmp), omsi)
        info = {
            "machine": machine(),
            "versions": versions(
                omsi_version if omsi else f"not run ({omsi_version})",
                broker_version(started_broker),
            ),
            "run": {
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "omsi": omsi_version,
            },
        }
        print(f"# broker {bootstrap}; {json.dumps(info['machine'])}", flush=True)
        if "raw" in args.cases:
            cost = fresh_memory_cost()
            print(f"# fresh memory: {json.dumps(cost)}", flush=True)
            bench.record(
                {"case": "raw", "system": "machine", "variant": "memory", "repeat": 0, **cost}
            )
        try:
            for case in CASES:
                if case not in args.cases:
                    continue
                print(f"# --- {case} ({time.time() - begun:.0f} s)", flush=True)
                if case in ("fft", "pyloop"):
                    bench.case_cpu(case)
                else:
                    getattr(bench, f"case_{case}")()
        finally:
            bench.delete_topics()
        bench.rows = kept + bench.rows
        command = ("python bench/compare.py " + " ".join(sys.argv[1:])).strip()
        render(bench, info, args.output, command, time.time() - begun)
    print(f"# {time.time() - begun:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    raise SystemExit(main())
