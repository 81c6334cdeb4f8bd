"""Measuring, for ``bench/compare.py``: the harness that spawns each system and times it.

:class:`Bench` holds one sitting's state (the broker, the uploaded data sets, the topics to
delete, every measured row) and runs one system in a process of its own:
:meth:`Bench.reference` (``bench/omsi_reproducer.py`` in the reference's virtualenv) and
:meth:`Bench.project` (``bench/project_run.py``, a fresh local Ray), both through
:meth:`Bench.run_process`, which watches the results topic (:class:`ResultWatcher`), samples
the process tree's PSS and CPU (``bench/pipeline.py``'s ``RssSampler``), stops the process
and turns what it saw into rows (steady-state rate, start-up, peak memory, CPU s/MB). Also:
raw consumption (:meth:`Bench.raw_of`), producing files while a system runs
(:class:`Sender`) and the chunk timestamps of a topic (:func:`chunk_times`). The cases are
in ``bench/cases.py``; the machine, its software and the reference's venv in
``bench/machine.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
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

import numpy as np
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from machine import clean_env  # bench/machine.py
from pipeline import RssSampler, proc_stats, raw, reader  # bench/pipeline.py

from cluster import create_topic
from reproducer.chunk import decode_value, encode_value
from reproducer.config import KafkaConfig
from reproducer.upload import upload

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
KiB, MiB = 1 << 10, 1 << 20
CHUNK = 512 * KiB
# the project's variants for the same work (bench/project_run.py): a ported reproducer
# (bytestring, ReproducerMessage), and a registered analysis (buffer, a dict)
PORTED, REGISTERED = "ported", "registered"


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


# --------------------------------------------------------------------------- results
class ResultWatcher(threading.Thread):
    """Reads a results topic from the start: the first result per file, its timestamp, and
    whether it matches the file (a ported reproducer's JSON, or a registered analysis's
    envelope, whose ``result`` is the same JSON). Calls ``on_first`` at the first result of the steady
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
        if "schema" in payload and isinstance(payload.get("result"), dict):
            payload = payload["result"]  # a registered analysis's envelope: its result inside
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

    def ported(self, case: str) -> str | None:
        """The variant of the ported reproducer's runs of ``case``: ``PORTED``, or None (all
        of the project's rows) in results from before other variants ran beside it."""
        found = any(
            r["case"] == case and r["system"] == "project" and r.get("variant") == PORTED
            for r in self.rows
        )
        return PORTED if found else None

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
                mb = (last - first) * leg.data.size / 1e6
                row["cpu_s_per_mb"] = (marks[i]["last"] - marks[i]["first"]) / mb
                # where it goes: each process's share over the same window (by name: the
                # ingest, analysis and producer actors, the driver, raylet, gcs_server)
                by_name = sampler.cpu_by_name(since=stamps[first], until=stamps[last])
                row["cpu_ms_per_mb_by_process"] = {
                    name: round(1000 * s / mb, 2) for name, s in by_name.items()
                }
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
        run per item of ``runs`` (``variant``, ``actors``, ``analysis``, ``options``, and
        ``registered``: the work as a registered analysis rather than a ported reproducer,
        see ``bench/project_run.py``), one after the other."""
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
                    "registered": bool(run.get("registered", False)),
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
