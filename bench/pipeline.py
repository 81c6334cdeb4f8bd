#!/usr/bin/env python3
"""Pipeline throughput against raw consumption, on one broker and one data set.

    python bench/pipeline.py                        # 200 x 1 MiB and 5 x 50 MiB
    python bench/pipeline.py --sets small --cases raw trivial

Cases (each on the same uploaded topic, 4 partitions, 512 KiB chunks):
  raw      confluent-kafka reading every message of the topic (the ceiling)
  trivial  the Ray pipeline, analysis = sha256 of the file, 2 analysis actors
  fft1/2   the pipeline with a CPU-heavy numpy analysis (~0.2 s/MiB), 1 and 2 actors
  idle     the pipeline on an empty topic: the memory baseline of Ray and its processes

Throughput is steady state: bytes of all files but the first, over the time from the first
result to the last (result timestamps, set by the producer). Start-up (Ray, group join) is
reported apart. Peak memory sums the PSS of every process of the local Ray instance plus this driver,
sampled every 0.5 s. Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cluster import broker_from_env, create_topic
from reproducer import DataFileStreamReproducer
from reproducer.config import KafkaConfig
from reproducer.datafile import JSONMessage
from reproducer.upload import upload

SETS = {"small": (200, 1 << 20), "large": (5, 50 << 20)}


# The per-file work of the reference's benchmark, so that both do the same: sha256 and the
# size of the bytes (trivial); plus, for fft, the bytes as float32 samples (one per byte)
# in blocks of 64 Ki, rfft over every block, 8 times (~0.2 s per MiB on a 2-core box).
FFT_BLOCK, FFT_REPS = 1 << 16, 8


def fft_work(data: Any) -> float:
    samples = np.frombuffer(data, dtype=np.uint8)
    usable = samples.size // FFT_BLOCK * FFT_BLOCK
    blocks = samples[:usable].astype(np.float32).reshape(-1, FFT_BLOCK)
    return sum(float(np.abs(np.fft.rfft(blocks, axis=1)).sum()) for _ in range(FFT_REPS))


class TrivialReproducer(DataFileStreamReproducer):
    def _get_processing_result_message_for_file(self, datafile: Any, lock: Any) -> Any:
        return JSONMessage(datafile, self.summary(datafile))

    def summary(self, datafile: Any) -> dict[str, Any]:
        return {
            "file": str(datafile.relative_filepath),
            "size": datafile.size,
            "sha256": hashlib.sha256(datafile.buffer).hexdigest(),
        }


class FFTReproducer(TrivialReproducer):
    def summary(self, datafile: Any) -> dict[str, Any]:
        return {**super().summary(datafile), "fft_sum": fft_work(datafile.buffer)}


def make_data(root: Path, n: int, size: int) -> int:
    rng = np.random.default_rng(1)
    for i in range(n):
        (root / f"f{i:04d}.bin").write_bytes(rng.bytes(size))
    return n * size


def reader(bootstrap: str, **settings: Any) -> Consumer:
    """A consumer for reading a topic through, in a group of its own, with large fetches."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 4 << 20,
            **settings,
        }
    )


def raw(
    bootstrap: str, topic: str, n_messages: int, passes: int = 1, **settings: Any
) -> dict[str, float]:
    """confluent-kafka reading every message of the topic: MB/s and messages/s from
    assignment to the last message. With ``passes`` > 1 it reads the topic again (from a
    fresh assignment each time) and also gives ``steady_mb_s``/``steady_msgs_s`` over the
    passes after the first, whose connection set-up they leave out. ``settings`` are extra
    consumer settings."""
    consumer = reader(bootstrap, **settings)
    timings = []
    for _ in range(passes):
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
        seen = nbytes = 0
        start = time.perf_counter()
        first = None
        while seen < n_messages:
            # never ask for more than is left: consume() waits out its timeout for a full batch
            for message in consumer.consume(min(100, n_messages - seen), 0.5):
                if not message.error():
                    first = first or time.perf_counter()
                    seen += 1
                    nbytes += len(message.value())
        end = time.perf_counter()
        timings.append((nbytes, seen, end - start, (first or start) - start))
    consumer.close()
    # from assignment to the last message: librdkafka prefetches before the first one returns
    nbytes, seen, seconds, startup = timings[0]
    out = {"mb_s": nbytes / 1e6 / seconds, "msgs_s": seen / seconds, "startup_s": startup}
    if passes > 1:
        later = timings[1:]
        seconds = sum(t[2] for t in later)
        out["steady_mb_s"] = sum(t[0] for t in later) / 1e6 / seconds
        out["steady_msgs_s"] = sum(t[1] for t in later) / seconds
    return out


class RssSampler(threading.Thread):
    """Peak memory of this process (or of ``root``) and all its descendants (the local Ray
    instance), and CPU seconds per process name, sampled every 0.5 s from /proc; ``totals``
    keeps the total PSS of every sample (memory over time).

    Memory is the sum of PSS, not RSS: the object store's shared pages are mapped by many
    workers and would be counted once per process by RSS.
    """

    def __init__(self, root: int | None = None, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = os.getpid() if root is None else root
        self.interval = interval
        self.peak = 0
        self.cpu: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.start_cpu = {pid: cpu_s for pid, (_, cpu_s, _) in _tree(self.root).items()}
        self.history: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self.totals: list[tuple[float, int]] = []  # (time, total PSS bytes) of every sample

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, self.sample())
        self.sample()

    def sample(self) -> int:
        total = 0
        snapshot = {}
        now = time.time()
        for pid, (name, cpu_s, pss) in _tree(self.root).items():
            self.cpu[pid] = (name, cpu_s)
            snapshot[pid] = (name, cpu_s)
            total += pss
        self.history.append((now, snapshot))
        if snapshot:  # nothing left of the tree: the process is gone, not using 0 bytes
            self.totals.append((now, total))
        return total

    def cpu_by_name(self, since: float = 0.0, until: float = float("inf")) -> dict[str, float]:
        """CPU seconds per process name between two wall-clock times (default: the run)."""
        start = self.start_cpu
        end = {pid: cpu_s for pid, (_, cpu_s) in self.cpu.items()}
        if since:
            start = next(
                ({p: c for p, (_, c) in s.items()} for t, s in self.history if t >= since), start
            )
        if until != float("inf"):
            end = next(
                ({p: c for p, (_, c) in s.items()} for t, s in self.history if t >= until), end
            )
        by_name: dict[str, float] = {}
        for pid, cpu_s in end.items():
            name = self.cpu[pid][0]
            by_name[name] = by_name.get(name, 0.0) + cpu_s - start.get(pid, 0.0)
        return {
            k: round(v, 1) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v >= 0.1
        }


_TICK = os.sysconf("SC_CLK_TCK")


def proc_stats() -> tuple[dict[int, int], dict[int, float]]:
    """Every process's parent and CPU seconds (user + system), from /proc."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return parents, cpu


def _tree(root: int) -> dict[int, tuple[str, float, int]]:
    """(name, CPU seconds, PSS bytes) of ``root`` and all its descendants, from /proc."""
    parents, cpu = proc_stats()
    tree = {}
    for pid in parents:
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor != root:
            continue
        try:  # only for the tree: smaps_rollup is not cheap
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            name = (
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            )
        except OSError:
            continue
        pss = next(
            (
                int(line.split()[1]) * 1024
                for line in rollup.splitlines()
                if line.startswith("Pss:")
            ),
            0,
        )
        tree[pid] = (Path(name.split()[0]).name if name else "?", cpu[pid], pss)
    return tree


def pipeline(
    cls: type,
    bootstrap: str,
    topic: str,
    config_file: Path,
    n_files: int,
    file_size: int,
    actors: int,
    **options: Any,
) -> dict[str, float]:
    results_topic = f"{topic}-out-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, results_topic, partitions=1)
    sampler = RssSampler()
    sampler.start()
    start = time.time()
    reproducer = cls(
        config_file,
        topic,
        results_topic,
        n_analysis_actors=actors,
        stop_when_idle=3.0,
        update_seconds=10.0,
        output_dir=Path(tempfile.mkdtemp()),
        **options,
    )
    summary = reproducer.produce_processing_results_for_files_as_read()
    sampler.stop.set()
    sampler.join()
    assert summary.n_results_produced == n_files, summary
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(results_topic, 0, OFFSET_BEGINNING)])
    stamps: list[float] = []
    while len(stamps) < n_files:
        stamps += [m.timestamp()[1] / 1000 for m in consumer.consume(100, 10) if not m.error()]
    consumer.close()
    first, last = min(stamps), max(stamps)
    return {
        "mb_s": (n_files - 1) * file_size / 1e6 / max(last - first, 1e-9),
        "startup_s": first - start,
        "peak_pss_mib": sampler.peak / 2**20,
        "cpu_s": sampler.cpu_by_name(),  # type: ignore[dict-item]
        "steady_cpu_s": sampler.cpu_by_name(first, last),  # type: ignore[dict-item]
        "steady_s": last - first,
    }


def idle(bootstrap: str, config_file: Path) -> dict[str, float]:
    """Peak memory of the pipeline with nothing to read: the baseline of Ray and the
    pipeline's own processes, to subtract from the other cases' peaks."""
    topic = f"bench-empty-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=4)
    results_topic = topic + "-out"
    create_topic(bootstrap, results_topic, partitions=1)
    sampler = RssSampler()
    sampler.start()
    TrivialReproducer(
        config_file,
        topic,
        results_topic,
        n_analysis_actors=2,
        stop_when_idle=3.0,
        output_dir=Path(tempfile.mkdtemp()),
    ).produce_processing_results_for_files_as_read()
    sampler.stop.set()
    sampler.join()
    return {"mb_s": 0.0, "startup_s": 0.0, "peak_pss_mib": sampler.peak / 2**20}


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", default=["small", "large"], choices=list(SETS))
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["raw", "trivial", "fft1", "fft2"],
        choices=["raw", "idle", "trivial", "fft1", "fft2"],
    )
    parser.add_argument("--mode", choices=["memory", "disk", "both"], help="reassembly mode")
    parser.add_argument("--max_held_mb", type=float, help="the pipeline's memory budget")
    parser.add_argument("--max_in_flight", type=int, help="the pipeline's in-flight file limit")
    args = parser.parse_args()
    options = {
        name: getattr(args, name)
        for name in ("mode", "max_held_mb", "max_in_flight")
        if getattr(args, name) is not None
    }
    rows = []
    with broker_from_env() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "bench.config"
        config_file.write_text(
            f"[broker]\nbootstrap.servers = {bootstrap}\n[consumer]\nfetch.min.bytes = 100000\n"
        )
        for name in args.sets:
            n, size = SETS[name]
            data = Path(tmp) / name
            data.mkdir()
            make_data(data, n, size)
            topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            create_topic(bootstrap, topic, partitions=4)
            sent = upload([data], KafkaConfig.for_bootstrap(bootstrap), topic)
            print(json.dumps({"set": name, "upload_mb_s": round(sent.mb_per_s, 1)}), flush=True)
            for case in args.cases:
                if case == "raw":
                    row = raw(bootstrap, topic, sent.n_chunks)
                elif case == "idle":
                    row = idle(bootstrap, config_file)
                else:
                    cls = TrivialReproducer if case == "trivial" else FFTReproducer
                    actors = 2 if case in ("trivial", "fft2") else 1
                    row = pipeline(cls, bootstrap, topic, config_file, n, size, actors, **options)
                row = {"set": name, "case": case, **{k: _round(v) for k, v in row.items()}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| set | case | steady MB/s | start-up s | peak PSS MiB |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['case']} | {r['mb_s']} | {r['startup_s']} | {r.get('peak_pss_mib', '')} |"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    raise SystemExit(main())
