"""The cases of ``bench/compare.py``: one function each, and the table that names them.

A case is a function of the sitting's :class:`~harness.Bench` that uploads (or reuses) its
data set, runs the reference (:meth:`~harness.Bench.reference`) and this project
(:meth:`~harness.Bench.project`), each in a process of its own, ``b.repeats`` times, and
records rows (``b.record``). To add one: write ``case_NAME(b)`` here, add its row to
:data:`CASES` (the order there is the order they run in, and ``--cases`` takes its names),
and the lines it shows to ``Report.build`` in ``bench/report.py``.

The project runs the per-file work of ``bench/work.py`` as users would write it
(``bench/project_run.py``): a *ported reproducer* (variant ``ported``: reads ``bytestring``,
returns a ``ReproducerMessage``; the default), the same taking its ``lock`` once per file
(the ``*_lock`` cases), or a *registered analysis* (variant ``registered``: reads
``buffer``, returns a dict).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from harness import (
    CHUNK,
    PORTED,
    REGISTERED,
    ROOT,
    Bench,
    Dataset,
    KiB,
    Leg,
    MiB,
    ResultWatcher,
    Sender,
    chunk_times,
    kill_tree,
    median,
)
from machine import fresh_memory_cost, kernel_mb_s  # bench/machine.py
from pipeline import RssSampler  # bench/pipeline.py

from reproducer.chunk import encode_value
from reproducer.upload import UploadSource, chunks_of

# ray.init + four actors called at once in a fresh interpreter: Ray's own start-up floor
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

# as many actors as the pipeline starts at once: the ingest, the producer, 2 analysis actors
actors = [Echo.remote() for _ in range(4)]
ray.get([a.ping.remote() for a in actors])
called = time.time()
print(json.dumps({"start": start, "imported": imported, "initialised": initialised, "called": called}))
"""


def case_raw(b: Bench) -> None:
    """What writing fresh memory costs here; raw consume MB/s of the 1 MiB topic; hashlib
    on one core; the 1 MiB sha256 limit."""
    cost = fresh_memory_cost()
    print(f"# fresh memory: {json.dumps(cost)}", flush=True)
    b.record({"case": "raw", "system": "machine", "variant": "memory", "repeat": 0, **cost})
    data = b.dataset("mib1", b.plan.mib1_n, MiB)
    b.raw_of("1mib", data)
    buffer = np.random.default_rng(7).bytes(b.plan.hash_mib * MiB)
    for r in range(b.repeats):
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
        b.record(row)


def small_files(b: Bench, name: str, n: int, *, registered: bool) -> None:
    """``n`` files of 4 KiB: raw, the reference, the ported reproducer, and (``registered``)
    the registered analysis, each repeat in that order."""
    data = b.dataset(name, n, 4 * KiB)
    b.raw_of(name, data)
    for r in range(b.repeats):
        b.reference(name, data, repeat=r)
        b.project(name, data, [{"variant": PORTED}], repeat=r)
        if registered:
            b.project(name, data, [{"variant": REGISTERED, "registered": True}], repeat=r)


def case_small(b: Bench) -> None:
    small_files(b, "small", b.plan.small_n, registered=True)


def case_small_lock(b: Bench) -> None:
    """The small files, the reproducer taking its lock once per file (both systems),
    with the run without it beside it in the same sitting."""
    data = b.dataset("small", b.plan.small_n, 4 * KiB)
    for r in range(b.repeats):
        b.reference("small_lock", data, analysis="sha256+lock", repeat=r)
        b.project("small_lock", data, [{"analysis": "sha256+lock"}], repeat=r)


def case_small10k(b: Bench) -> None:
    if not b.plan.small10k:
        print("# small10k: skipped in --quick", flush=True)
        return
    small_files(b, "small10k", 10_000, registered=False)


def case_1mib(b: Bench) -> None:
    """1 MiB files: raw, the reference at each thread count, the ported reproducer and the
    registered analysis; and this machine's limit for them."""
    data = b.dataset("mib1", b.plan.mib1_n, MiB)
    b.raw_of("1mib", data)
    for r in range(b.repeats):
        for threads in b.plan.ref_threads_1mib:
            b.reference("1mib", data, threads=threads, repeat=r)
        b.project("1mib", data, [{"variant": PORTED}], repeat=r)
        b.project("1mib", data, [{"variant": REGISTERED, "registered": True}], repeat=r)
    limit = b.limit_1mib()
    if limit:
        print(
            f"# 1mib: this machine's limit {limit['limit']:.0f} MB/s = {limit['cores']} / "
            f"(1/{limit['consume']:.0f} + 1/{limit['sha512']:.0f} + 1/{limit['sha256']:.0f}) "
            f"(consume, sha512, sha256 MB/s), capped by consume; project "
            f"{median(b.values('1mib', 'project', 'mb_s', b.ported('1mib'))):.0f} MB/s",
            flush=True,
        )


def case_1mib_lock(b: Bench) -> None:
    """The 1 MiB files, the reproducer taking its lock once per file (both systems)."""
    data = b.dataset("mib1", b.plan.mib1_n, MiB)
    for r in range(b.repeats):
        for threads in b.plan.ref_threads_1mib:
            b.reference("1mib_lock", data, threads=threads, analysis="sha256+lock", repeat=r)
        b.project("1mib_lock", data, [{"analysis": "sha256+lock"}], repeat=r)


def case_50mib(b: Bench) -> None:
    """Both systems as they come (the project's default budget): the memory case
    measures the project under a small budget apart."""
    data = b.dataset("big", b.plan.big_n, 50 * MiB)
    b.raw_of("50mib", data)
    for r in range(b.repeats):
        b.reference("50mib", data, repeat=r, sample_every=0.25)
        b.project("50mib", data, [{}], repeat=r, sample_every=0.25)


def cpu_bound(b: Bench, kind: str) -> None:
    """1 and 2 analysis actors (two runs in one process), and the reference."""
    data = b.dataset("cpu", b.plan.cpu_n, MiB)
    for r in range(b.repeats):
        if kind == "fft" or b.plan.ref_pyloop:
            b.reference(kind, data, analysis=kind, repeat=r)
        b.project(kind, data, [{"actors": a, "analysis": kind} for a in (1, 2)], repeat=r)


def case_fft(b: Bench) -> None:
    cpu_bound(b, "fft")


def case_pyloop(b: Bench) -> None:
    cpu_bound(b, "pyloop")


def case_scaling(b: Bench) -> None:
    data = b.dataset("cpu", b.plan.cpu_n, MiB)
    for r in range(b.repeats):
        # the machine's own scaling: the same kernel in 1 and 2 bare processes (no Ray,
        # no Kafka), the ceiling of the actors' ratio on this VM in this sitting
        for n in (1, 2):
            b.record(
                {
                    "case": "scaling",
                    "system": "raw",
                    "variant": f"{n} processes",
                    "repeat": r,
                    "mb_s": kernel_mb_s("fft", n, seconds=6.0),
                }
            )
        done = {a for a in (1, 2) if b.values("fft", "project", "mb_s", f"{a} actors")[r:]}
        todo = [a for a in (1, 2, 4) if a not in done]
        b.project("scaling", data, [{"actors": a, "analysis": "fft"} for a in todo], repeat=r)


def case_sizes(b: Bench) -> None:
    """One file at a time into a running pipeline (the next once the previous one's
    result is out): the time from its first chunk to its result, per size and mode.
    The chunks are encoded before the clock starts and produced as fast as possible."""
    sizes = list(b.plan.sizes_mib)
    root, sha = b.files(
        "sizes", [("0probe.bin", 4 * KiB)] + [(f"s{m:05d}.bin", m * MiB) for m in sizes]
    )
    names = sorted(sha)
    for r in range(b.repeats):
        for mode in ("memory", "disk"):
            topic = b.new_topic("sizes", 4)
            data = Dataset("sizes", len(names), 0, root, topic, 0, sha, 0.0)
            leg = Leg(data, b.new_topic("sizes-out", 1), mode)
            sender = Sender(b.kafka, topic)

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
            rows, watchers = b.run_process("project", b.project_cmd(spec), [leg], during=one_by_one)
            chunks = chunk_times(b.bootstrap, topic)
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
                b.record(row)


def case_exactly_once(b: Bench) -> None:
    data = b.dataset("mib1", b.plan.mib1_n, MiB)
    for r in range(b.repeats):
        if not b.values("1mib", "project", "mb_s", b.ported("1mib"))[r:]:
            b.project("exactly_once", data, [{"variant": "at least once"}], repeat=r)
        b.project(
            "exactly_once",
            data,
            [{"variant": "exactly once", "options": {"exactly_once": True}}],
            repeat=r,
        )


def case_latency(b: Bench) -> None:
    """1 MiB files produced while the pipeline runs: first a calibration batch as fast
    as possible (the max rate), then files at half that rate, steadily. Latency is the
    time from a file's last chunk to its result (both broker timestamps)."""
    source = b.dataset("mib1", b.plan.mib1_n, MiB)
    templates = [
        list(chunks_of(UploadSource(source.root / name, source.root), CHUNK))
        for name in sorted(source.sha256)[:16]
    ]
    template_sha = [source.sha256[name] for name in sorted(source.sha256)[:16]]
    n_calibration = 60
    names = ["0probe.bin"] + [f"c{i:05d}.bin" for i in range(n_calibration)]
    names += [f"l{i:05d}.bin" for i in range(5000)]  # the paced files: as many as needed
    sha = {name: template_sha[i % len(templates)] for i, name in enumerate(names)}
    for r in range(b.repeats):
        topic = b.new_topic("latency", 4)
        data = Dataset("latency", len(names), MiB, source.root, topic, 0, sha, 0.0)
        leg = Leg(data, b.new_topic("latency-out", 1), "1 MiB paced", expected=10**9)
        sender = Sender(b.kafka, topic)
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
            stamps = sorted(watcher.stamps[name] for name in calibration if name in watcher.stamps)
            top = (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-3) if stamps else 20.0
            rate = min(0.5 * top, 500.0)
            count = int(min(max(rate * b.plan.latency_seconds, 40), 5000))
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
        rows, watchers = b.run_process("project", b.project_cmd(spec), [leg], during=paced)
        chunks = chunk_times(b.bootstrap, topic)
        result = watchers[0].stamps
        paced_names = names[1 + n_calibration : 1 + n_calibration + int(pacing.get("n_files", 0))]
        latencies = sorted(
            result[name] - chunks[name][1]
            for name in paced_names
            if name in result and name in chunks
        )
        b.record(
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


def case_startup(b: Bench) -> None:
    """Spawn -> first result for both (from the 1 MiB runs), and Ray's own floor."""
    if not b.values("1mib", "project", "startup_s"):
        data = b.dataset("mib1", b.plan.mib1_n, MiB)
        for r in range(b.repeats):
            b.reference("startup", data, repeat=r)
            b.project("startup", data, repeat=r)
    for r in range(b.repeats):
        spawned = time.time()
        done = subprocess.run(
            [sys.executable, "-c", RAY_FLOOR],
            capture_output=True,
            text=True,
            cwd=b.tmp,
            check=False,
        )
        exited = time.time()
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(f"# WARNING ray floor failed: {done.stderr[-500:]}", flush=True)
            continue
        marks = json.loads(lines[-1])
        b.record(
            {
                "case": "startup",
                "system": "ray",
                "variant": "ray.init + 4 actor calls",
                "repeat": r,
                "floor_s": marks["called"] - marks["imported"],
                "import_s": marks["imported"] - marks["start"],
                "spawn_to_call_s": marks["called"] - spawned,
                "exit_s": exited - spawned,
            }
        )


def case_memory(b: Bench) -> None:
    """Peak PSS above the idle baseline, 50 MiB files with a budget (max_held_mb), in
    memory mode and disk mode, a process each; the baseline is the
    pipeline on an empty topic (bench/pipeline.py's idle())."""
    data = b.dataset("big", b.plan.big_n, 50 * MiB)
    budget = {"max_held_mb": b.args.memory_budget_mb}
    for r in range(b.repeats):
        log_path = b.tmp / "logs" / f"idle-{r}.log"
        with log_path.open("wb") as log:
            spawned = time.time()
            proc = subprocess.Popen(
                b.project_cmd({"idle": True}),
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
        b.record(
            {
                "case": "memory",
                "system": "project",
                "variant": "idle",
                "repeat": r,
                "peak_pss_mib": sampler.peak / MiB,
                "seconds": time.time() - spawned,
                "rc": proc.returncode,
                "memory": [
                    (round(t - spawned, 2), round(total / MiB, 1)) for t, total in sampler.totals
                ],
            }
        )
        runs = [
            {"variant": "memory", "options": {"mode": "memory", **budget}},
            {"variant": "disk", "options": {"mode": "disk", **budget}},
        ]
        for run in runs:  # a process each: one run's memory must not stay in the next's
            b.project("memory", data, [run], repeat=r, sample_every=0.25)
        if not b.values("50mib", "reference", "peak_pss_mib")[r:]:
            b.reference("memory", data, repeat=r, sample_every=0.25)


class Case(NamedTuple):
    run: Callable[[Bench], None]
    about: str  # one line, for --help


# every case, in the order they run; ``--cases`` takes these names
CASES: dict[str, Case] = {
    "raw": Case(case_raw, "this machine: fresh memory, raw consumption, hashlib on one core"),
    "small": Case(case_small, "4 KiB files, sha256: files/s, ported and registered"),
    "small_lock": Case(case_small_lock, "4 KiB files, the lock taken once per file"),
    "small10k": Case(case_small10k, "10,000 files of 4 KiB (not in --quick)"),
    "1mib": Case(case_1mib, "1 MiB files, sha256: MB/s and CPU s/MB, ported and registered"),
    "1mib_lock": Case(case_1mib_lock, "1 MiB files, the lock taken once per file"),
    "50mib": Case(case_50mib, "50 MiB files, sha256: MB/s and memory"),
    "fft": Case(case_fft, "1 MiB files, fft (numpy, releases the GIL): 1 and 2 actors"),
    "pyloop": Case(case_pyloop, "1 MiB files, pure-Python loop (holds the GIL): 1 and 2 actors"),
    "scaling": Case(case_scaling, "fft MB/s by analysis actors (1, 2, 4), bare processes"),
    "sizes": Case(case_sizes, "one file at a time, 1 MiB to 1 GiB: seconds per MiB, by mode"),
    "exactly_once": Case(case_exactly_once, "1 MiB files: exactly-once vs at-least-once"),
    "latency": Case(case_latency, "1 MiB files at a paced rate: last chunk to result"),
    "startup": Case(case_startup, "process spawn to the first result; Ray's own floor"),
    "memory": Case(case_memory, "50 MiB files under a budget: peak PSS above idle, by mode"),
}
