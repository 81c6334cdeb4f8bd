#!/usr/bin/env python3
"""Elastic analysis pools under a burst: drain time and actor-seconds, fixed against elastic.

    python bench/elastic.py [--files 200] [--quiet 300] [--idle_actor_timeout 60] \\
        [--actors 1 4 1..4] [--repeats 1] [--analysis_num_cpus CPUS] \\
        [--plot docs/benchmarks/elastic_burst.png] [--json FILE] [--logs DIR] \
        [--doc docs/benchmarks/elastic.md]
    python bench/elastic.py --from_json FILE [--plot ...] [--doc ...]   # no new measurement

Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker. For each pool (``--actors``: a fixed
count N, or an elastic range MIN..MAX), a fresh process runs a reproducer ported from the
reference (``python -m elastic_user --n_analysis_actors ...``: it reads ``bytestring`` and
returns ``bench/work.py``'s ``analyze(bytes, "fft")``, as ``bench/project_run.py``'s does) on
a fresh topic, in its own local Ray, every analysis actor reserving ``--analysis_num_cpus``
(default: this machine's cores / the largest pool, so that every pool fits). Once it consumes
(one warm-up file went through), a burst of ``--files`` files of 1 MiB of random bytes is
uploaded at once (this project's uploader); then it measures:

- drain time: from the start of the upload to the broker timestamp of the last of the burst's
  results;
- actors over time: the pool's log lines (logger ``reproducer.pool``: ``<name>: <k> actor(s)
  now, ...``), and files waiting for an actor over time: the driver's progress line
  (``--update_seconds 1``; ``...; actors: <name> <running> (+<starting> starting, <n> files
  waiting)``), beside files not done yet (the burst's results over time);
- actor-seconds over the burst and the quiet period after it (``--quiet``, 300 s): a fixed
  pool of N counts N x (drain + quiet); an elastic pool is kept running after the burst
  until its log says it is back at its minimum (it retires actors idle for
  ``--idle_actor_timeout`` s), its actors are summed over time up to then, and the rest of
  the window is counted at the minimum.

Prints a markdown table with each elastic pool's ratios to the fixed pool of its maximum and
the targets (drain <= 1.2x, actor-seconds <= 0.6x), then what each elastic pool did (when it
grew, reached its maximum, shrank; files waiting while actors sat idle). Each pipeline is
stopped with SIGINT and waited for; its process group is killed if it does not exit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from cluster import broker_from_env, create_topic  # noqa: E402
from reproducer.config import load_config  # noqa: E402
from reproducer.scaling import ActorRange  # noqa: E402
from reproducer.upload import upload  # noqa: E402

KIND = "fft"
CLASS = "FFTReproducer"  # the pool's name in the log lines is the reproducer's class name
TIME_TARGET = 1.2  # elastic drain time <= this x the fixed pool of its maximum
COST_TARGET = 0.6  # elastic actor-seconds <= this x the fixed pool of its maximum

USER_MODULE = f'''
"""bench/project_run.py's ported reproducer, doing work.analyze(bytestring, "{KIND}")."""
from project_run import WorkReproducer


class {CLASS}(WorkReproducer):
    analysis_kind = "{KIND}"


if __name__ == "__main__":
    {CLASS}.run_from_command_line()
'''

# 2026-12-07 21:47:24,611 INFO reproducer.pool: FFTReproducer: 3 actor(s) now, ...
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")
POOL = re.compile(
    r"^(?P<name>.+?): (?P<k>\d+) actor\(s\) now, (?P<r>\d+) running and (?P<s>\d+) "
    r"starting, range (?P<range>\S+) \((?P<why>.*)\)$"
)
PLACED = re.compile(r"^analysis actor (\d+) placed on node")
PROGRESS = re.compile(
    r"^(?P<results>\d+) results, (?P<failed>\d+) failed, (?P<inan>\d+) in analysis"
)
ACTORS = re.compile(r"; actors: (?P<name>\S+) (?P<running>\d+)(?: \((?P<more>[^)]*)\))?")


def log_time(stamp: str) -> float:
    """Unix time of a log line's ``%(asctime)s`` (local time, as logging writes it)."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Sample:
    """One progress line: results so far, files in analysis (waiting or running), actors
    running and starting, files waiting for an actor."""

    t: float
    results: int
    in_analysis: int
    running: int
    starting: int
    waiting: int


@dataclass
class PoolEvent:
    """One change of the pool's size, as logged."""

    t: float
    actors: int
    running: int
    starting: int
    why: str
    line: str


@dataclass
class Watch:
    """What the pipeline's stderr said, parsed as it comes (a thread reads it)."""

    samples: list[Sample] = field(default_factory=list)
    pool: list[PoolEvent] = field(default_factory=list)
    placed: list[float] = field(default_factory=list)
    notable: list[str] = field(default_factory=list)  # warnings and errors, verbatim
    tail: list[str] = field(default_factory=list)

    def read(self, stream: IO[bytes], log: IO[str] | None) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            if log is not None:
                log.write(line + "\n")
            self.tail = [*self.tail[-200:], line]
            match = STAMP.match(line)
            if match is None:
                continue
            t, level, logger, message = log_time(match[1]), match[2], match[3], match[4]
            if level in ("WARNING", "ERROR", "CRITICAL"):
                self.notable.append(line)
            if logger == "reproducer.pool":
                if (pool := POOL.match(message)) is not None:
                    self.pool.append(
                        PoolEvent(
                            t, int(pool["k"]), int(pool["r"]), int(pool["s"]), pool["why"], line
                        )
                    )
                elif PLACED.match(message):
                    self.placed.append(t)
            elif logger == "reproducer.telemetry" and (progress := PROGRESS.match(message)):
                actors = ACTORS.search(message)
                more = (actors["more"] or "") if actors else ""
                starting = re.search(r"\+(\d+) starting", more)
                waiting = re.search(r"(\d+) files waiting", more)
                self.samples.append(
                    Sample(
                        t,
                        int(progress["results"]),
                        int(progress["inan"]),
                        int(actors["running"]) if actors else -1,
                        int(starting[1]) if starting else 0,
                        int(waiting[1]) if waiting else 0,
                    )
                )


class Results:
    """The results topic, read from its start on a thread: each file's first result's
    broker timestamp."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.first: dict[str, float] = {}
        self.n_messages = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": uuid.uuid4().hex,
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error():
                continue
            self.n_messages += 1
            name = str(json.loads(message.value() or b"{}").get("file", ""))
            self.first.setdefault(name, message.timestamp()[1] / 1000)

    def count(self, prefix: str) -> int:
        return sum(name.startswith(prefix) for name in list(self.first))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def wait_for(condition: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"the pipeline exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int | None:
    """SIGINT, then wait; the process group (started by us) is killed if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"# pipeline {proc.pid} did not exit in {timeout:g} s: killing its group", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        return None


def step_integral(events: list[tuple[float, int]], start: float, end: float, k: int) -> float:
    """The integral of a step function over [start, end]: ``k`` until the first event, then
    each event's value."""
    total, t = 0.0, start
    for at, value in sorted(events):
        if at <= start:
            k = value
            continue
        if at >= end:
            break
        total += k * (at - t)
        t, k = at, value
    return total + k * max(end - t, 0.0)


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds busy on this machine so far, from /proc/stat; CPU seconds of this process
    and its descendants: the pipeline, its Ray): their difference over a span is what other
    processes ran beside the measurement. ``None`` without /proc/stat or psutil."""
    try:
        import psutil  # noqa: PLC0415 - optional: the [bench] extra

        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    except (ImportError, OSError, ValueError):
        return None
    machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait
    me = psutil.Process()
    ours = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        ours += times.user + times.system
    return machine, ours


def others_cores(before: tuple[float, float] | None, seconds: float) -> float | None:
    """Cores other processes kept busy on average since ``before`` (``seconds`` ago)."""
    after = cpu_seconds()
    if before is None or after is None or seconds <= 0:
        return None
    return max(((after[0] - before[0]) - (after[1] - before[1])) / seconds, 0.0)


def value_at(events: list[tuple[float, int]], at: float, k: int) -> int:
    """The step function's value at ``at`` (``k`` before the first event)."""
    for when, value in sorted(events):
        if when > at:
            break
        k = value
    return k


def run_one(
    spec: str, args: argparse.Namespace, folder: Path, bootstrap: str, repeat: int
) -> dict[str, Any]:
    limits = ActorRange.parse(spec)
    config = folder / "run.config"
    tag = uuid.uuid4().hex[:8]
    topic, results_topic = f"elastic-{tag}", f"elastic-out-{tag}"
    create_topic(bootstrap, topic, partitions=4)
    create_topic(bootstrap, results_topic, partitions=1)
    output = folder / f"out-{tag}"
    command = [
        sys.executable,
        "-m",
        "elastic_user",
        "--config",
        str(config),
        "--topic_name",
        topic,
        "--producer_topic_name",
        results_topic,
        "--n_analysis_actors",
        spec,
        "--idle_actor_timeout",
        str(args.idle_actor_timeout),
        "--analysis_num_cpus",
        str(args.analysis_num_cpus),
        "--update_seconds",
        "1",
        "--output_dir",
        str(output),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(BENCH), str(ROOT)]),
        "RAY_DEDUP_LOGS": "1",
    }
    print(f"# {spec} (repeat {repeat + 1}): {' '.join(command[2:])}", flush=True)
    log = None
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        log = (args.logs / f"{spec.replace('..', '-')}-r{repeat + 1}.log").open("w")
    watch = Watch()
    results = Results(bootstrap, results_topic)
    spawned = time.time()
    proc = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its group: what is killed if it does not stop
    )
    assert proc.stderr is not None
    reader = threading.Thread(target=watch.read, args=(proc.stderr, log), daemon=True)
    reader.start()
    n = args.files
    try:
        # the pipeline consumes: a warm-up file went through (Ray started, actors placed)
        upload([folder / "warm"], load_config(config), topic)
        wait_for(lambda: results.count("warm") >= 1, 300, "the warm-up result", proc)
        time.sleep(args.settle)
        before = len(watch.pool)
        burst_start, cpu_before = time.time(), cpu_seconds()
        upload([folder / "burst"], load_config(config), topic)
        upload_s = time.time() - burst_start
        wait_for(lambda: results.count("burst") >= n, 60 + 5 * n, f"{n} results", proc)
        others = others_cores(cpu_before, time.time() - burst_start)
        last = max(t for name, t in results.first.items() if name.startswith("burst"))
        window_end = last + args.quiet
        back_at_min: float | None = None
        if limits.elastic:
            # through the quiet period until the pool is back at its minimum (or the window
            # ends first)

            def at_min() -> bool:
                grown = watch.pool[before:]
                return not grown or grown[-1].actors <= limits.min

            deadline = min(window_end, time.time() + args.idle_actor_timeout + 120)
            while not at_min() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.2)
            if at_min():
                grown = watch.pool[before:]
                back_at_min = grown[-1].t if grown else burst_start
        observed_until = time.time()
    finally:
        code = stop(proc)
        reader.join(30)
        results.close()
        if log is not None:
            log.close()
    if code not in (0, None) and code != -signal.SIGINT:
        print(f"# the pipeline exited with {code}; its last lines:", flush=True)
        print("\n".join(f"#   {line}" for line in watch.tail[-20:]), flush=True)

    drain = last - burst_start
    events = [(e.t, e.actors) for e in watch.pool if e.t <= observed_until]
    if limits.elastic:
        # measured until back at the minimum (or until stopped), the rest of the window at
        # the count last logged (the minimum, once back)
        measured_end = min(back_at_min or observed_until, window_end)
        measured = step_integral(events, burst_start, measured_end, limits.min)
        rest_k = value_at(events, measured_end, limits.min)
        actor_s = measured + rest_k * max(window_end - measured_end, 0.0)
    else:
        measured_end, rest_k = burst_start, limits.min
        actor_s = limits.min * (drain + args.quiet)
    times = sorted(t - burst_start for name, t in results.first.items() if name.startswith("burst"))
    run = {
        "config": spec,
        "repeat": repeat + 1,
        "elastic": limits.elastic,
        "min": limits.min,
        "max": limits.max,
        "files": n,
        "quiet_s": args.quiet,
        "idle_actor_timeout_s": args.idle_actor_timeout,
        "analysis_num_cpus": args.analysis_num_cpus,
        "others_busy_cores": others,
        "burst_start_unix": burst_start,
        "spawn_to_burst_s": burst_start - spawned,
        "upload_s": upload_s,
        "drain_s": drain,
        "actor_s": actor_s,
        "back_at_min_s": None if back_at_min is None else back_at_min - burst_start,
        "measured_until_s": measured_end - burst_start,
        "rest_at_actors": rest_k,
        "observed_until_s": observed_until - burst_start,
        "exit_code": code,
        "result_times_s": times,
        "n_result_messages": results.n_messages,
        "pool_events": [
            {**asdict(e), "t": e.t - burst_start} for e in watch.pool if e.t <= observed_until
        ],
        "placed_s": [t - burst_start for t in watch.placed],
        "samples": [{**asdict(s), "t": s.t - burst_start} for s in watch.samples],
        "warnings": watch.notable,
    }
    print(
        f"# {spec}: drain {drain:.1f} s, actor-seconds {actor_s:.0f}"
        + ("" if others is None else f", other processes busy {others:.2f} cores in the drain")
        + (
            f" (measured until back at the minimum at {run['back_at_min_s']:.1f} s, the rest "
            f"at {rest_k} actor{'s' if rest_k != 1 else ''})"
            if back_at_min is not None
            else (
                f" (the window ended at {run['measured_until_s']:.1f} s, the pool not back at "
                f"its minimum: {rest_k} actors then)"
                if limits.elastic and measured_end >= window_end
                else (
                    f" (not back at the minimum when measured until {run['measured_until_s']:.1f}"
                    f" s: the rest of the window at {rest_k} actors)"
                    if limits.elastic
                    else ""
                )
            )
        ),
        flush=True,
    )
    return run


def behaviour(run: dict[str, Any]) -> list[str]:
    """What an elastic pool did, in lines (times from the burst's start)."""
    out = []
    events = [e for e in run["pool_events"] if e["t"] >= -1]
    grew = [e for e in events if "waiting" in e["why"]]
    if grew:
        first = grew[0]
        out.append(f"first growth at {first['t']:.1f} s: {first['line']}")
        top = next((e for e in events if e["actors"] >= run["max"]), None)
        if top:
            out.append(f"at its maximum ({run['max']}) from {top['t']:.1f} s")
    else:
        out.append("never grew")
    placed = [t for t in run["placed_s"] if t >= 0]
    if placed:
        out.append("new actors placed at " + ", ".join(f"{t:.1f} s" for t in placed))
    most = max([e["actors"] for e in events] + [run["min"]])
    if most > run["max"]:
        out.append(f"too many actors: {most} > {run['max']}")
    shrank = [e for e in events if "idle" in e["why"]]
    if shrank:
        out.append(
            "retired: "
            + ", ".join(f"{e['t']:.1f} s -> {e['actors']}" for e in shrank)
            + f" (last result at {run['drain_s']:.1f} s)"
        )
    idle = [
        s
        for s in run["samples"]
        if s["waiting"] > 0 and s["in_analysis"] - s["waiting"] < s["running"]
    ]
    if idle:
        out.append(
            f"{len(idle)} progress samples with files waiting while actors idle, e.g. at "
            + ", ".join(
                f"{s['t']:.1f} s ({s['waiting']} waiting, {s['in_analysis'] - s['waiting']} "
                f"running on {s['running']} actors)"
                for s in idle[:4]
            )
        )
    others = [e for e in events if e not in grew and e not in shrank]
    out += [f"other pool line: {e['line']}" for e in others]
    return out


def fmt(values: list[float], digits: int = 1) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["config"], []).append(run)
    lines = [
        f"| pool | drain time (s) | actor-seconds (burst + {args.quiet:g} s quiet) "
        "| drain vs fixed max | actor-seconds vs fixed max | targets |",
        "|---|---|---|---|---|---|",
    ]
    for spec, group in by.items():
        limits = ActorRange.parse(spec)
        drain = [r["drain_s"] for r in group]
        cost = [r["actor_s"] for r in group]
        name = f"elastic {spec}" if limits.elastic else f"fixed {spec}"
        ratios = ["", "", ""]
        reference = by.get(str(limits.max)) if limits.elastic else None
        if reference:
            time_ratio = statistics.median(drain) / statistics.median(
                [r["drain_s"] for r in reference]
            )
            cost_ratio = statistics.median(cost) / statistics.median(
                [r["actor_s"] for r in reference]
            )
            met_t = "met" if time_ratio <= TIME_TARGET else "not met"
            met_c = "met" if cost_ratio <= COST_TARGET else "not met"
            ratios = [
                f"{time_ratio:.2f}x",
                f"{cost_ratio:.2f}x",
                f"drain ≤ {TIME_TARGET}x: **{met_t}**; actor-seconds ≤ {COST_TARGET}x: **{met_c}**",
            ]
        lines.append(f"| {name} | {fmt(drain)} | {fmt(cost, 0)} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> bool:
    """Actors (step) and files waiting over time, one line per pool (its repeat of median
    drain time)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: the [plots] or [bench] extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("# matplotlib is not installed: no plot (pip install '.[bench]')", flush=True)
        return False
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["config"], []).append(run)
    firsts = {
        spec: sorted(group, key=lambda r: r["drain_s"])[(len(group) - 1) // 2]
        for spec, group in by.items()
    }
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    colors = ["#d95f02", "#7570b3", "#1b9e77", "#e7298a", "#66a61e"]
    end = max(r["observed_until_s"] for r in firsts.values()) + 2
    for color, (spec, run) in zip(colors, firsts.items(), strict=False):
        label = f"elastic {spec}" if run["elastic"] else f"fixed {spec}"
        shown = min(run["observed_until_s"], end)
        xs, ys = [-5.0], [run["min"]]
        for e in run["pool_events"]:
            if -5 <= e["t"] <= shown:
                xs.append(e["t"])
                ys.append(e["actors"])
        xs.append(shown)
        ys.append(ys[-1])
        top.step(xs, ys, where="post", color=color, label=label, linewidth=1.8)
        samples = [s for s in run["samples"] if -5 <= s["t"] <= shown]
        bottom.plot(
            [s["t"] for s in samples],
            [s["waiting"] for s in samples],
            color=color,
            label=f"{label}: waiting for an actor",
            linewidth=1.5,
        )
        times = run["result_times_s"]
        bottom.step(
            [0.0, *times],
            [run["files"] - i for i in range(len(times) + 1)],
            where="post",
            color=color,
            linestyle=":",
            linewidth=1.2,
            label=f"{label}: not done yet",
        )
        top.axvline(run["drain_s"], color=color, linestyle="--", linewidth=0.8)
    top.set_ylabel("analysis actors")
    top.set_ylim(0, max(r["max"] for r in firsts.values()) + 0.5)
    top.legend(loc="upper right", fontsize=8)
    top.set_title(
        f"A burst of {next(iter(firsts.values()))['files']} x 1 MiB {KIND} files at t = 0 "
        "(dashed: the last result"
        + ("; each pool's repeat of median drain time)" if len(runs) > len(by) else ")"),
        fontsize=10,
    )
    bottom.set_ylabel("files")
    bottom.set_xlabel("seconds from the burst's upload")
    bottom.legend(loc="upper right", fontsize=7)
    bottom.set_xlim(-5, end)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="files in the burst (1 MiB each)")
    parser.add_argument(
        "--actors",
        nargs="+",
        default=["1", "4", "1..4"],
        help="pools to measure: N (fixed) or MIN..MAX (elastic, compared with fixed MAX)",
    )
    parser.add_argument(
        "--quiet", type=float, default=300.0, help="seconds after the burst counted (quiet)"
    )
    parser.add_argument(
        "--idle_actor_timeout", type=float, default=60.0, help="passed to the pipeline"
    )
    parser.add_argument(
        "--analysis_num_cpus",
        type=float,
        help="CPUs each analysis actor reserves (default: cores / the largest pool, <= 1)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds idle between warm-up and burst"
    )
    parser.add_argument(
        "--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "elastic_burst.png"
    )
    parser.add_argument("--json", type=Path, help="write every run's raw samples here")
    parser.add_argument(
        "--doc",
        type=Path,
        help="write the figures as a markdown section here (docs/benchmarks/elastic.md: "
        "bench/compare.py puts it in docs/benchmarks.md)",
    )
    parser.add_argument(
        "--from_json", type=Path, help="the table, plot and doc of a run saved with --json"
    )
    parser.add_argument("--logs", type=Path, help="keep each pipeline's stderr in this folder")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        kept = argparse.Namespace(**{**saved["args"], "plot": args.plot, "doc": args.doc})
        return report(saved["runs"], kept, minutes=None)
    largest = max(ActorRange.parse(spec).max for spec in args.actors)
    if args.analysis_num_cpus is None:
        args.analysis_num_cpus = min(1.0, (os.cpu_count() or 1) / largest)
    started = time.time()
    runs: list[dict[str, Any]] = []
    with broker_from_env() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "elastic_user.py").write_text(USER_MODULE)
        (folder / "run.config").write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n")
        (folder / "warm").mkdir()
        (folder / "warm" / "warm.bin").write_bytes(os.urandom(1 << 20))
        (folder / "burst").mkdir()
        for i in range(args.files):
            (folder / "burst" / f"burst_{i:04d}.bin").write_bytes(os.urandom(1 << 20))
        for repeat in range(args.repeats):
            for spec in args.actors:
                runs.append(run_one(spec, args, folder, bootstrap, repeat))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "runs": runs}, default=str, indent=1))
        print(f"\nraw samples: {args.json}")
    return report(runs, args, minutes=(time.time() - started) / 60)


def report(runs: list[dict[str, Any]], args: argparse.Namespace, minutes: float | None) -> int:
    """The table, what each elastic pool did, the plot and (``--doc``) the markdown."""
    took = f", {minutes:.1f} min" if minutes is not None else ""
    print(
        f"\n{args.files} x 1 MiB {KIND} files, analysis actors of {args.analysis_num_cpus:g} "
        f"CPU on {os.cpu_count()} cores, idle actor timeout {args.idle_actor_timeout:g} s, "
        f"{args.repeats} repeat(s){took}\n"
    )
    busy = [r["others_busy_cores"] for r in runs if r["others_busy_cores"] is not None]
    if busy:
        print(
            f"Other processes kept {min(busy):.2f}–{max(busy):.2f} cores busy during the drains "
            "(this machine's CPU time beside this script's and its pipelines'); runs beside a "
            "busy neighbour are slower.\n"
        )
    print(table(runs, args))
    for run in runs:
        if run["elastic"]:
            print(f"\nelastic {run['config']} (repeat {run['repeat']}):")
            if run["back_at_min_s"] is not None:
                print(
                    f"- actor-seconds measured until back at the minimum at "
                    f"{run['back_at_min_s']:.1f} s, the rest at {run['rest_at_actors']} actor(s)"
                )
            for line in behaviour(run):
                print(f"- {line}")
        if run["warnings"]:
            print(f"\n{run['config']} (repeat {run['repeat']}) warnings and errors:")
            for line in run["warnings"][:10]:
                print(f"    {line}")
    plotted = plot(runs, Path(args.plot))
    if plotted:
        print(f"plot: {args.plot}")
    if args.doc:
        Path(args.doc).write_text(doc(runs, args, Path(args.plot) if plotted else None))
        print(f"doc: {args.doc}")
    return 0


def doc(runs: list[dict[str, Any]], args: argparse.Namespace, plot_path: Path | None) -> str:
    """A markdown section: when, how, the table, the plot, what the elastic pools did."""
    when = datetime.datetime.fromtimestamp(
        min(r["burst_start_unix"] for r in runs), tz=datetime.timezone.utc
    ).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured by `python bench/elastic.py --repeats {args.repeats}` on {when}: a burst of "
        f"{args.files} files of 1 MiB (`bench/work.py`'s fft, about 0.2 s of CPU each) uploaded "
        "at once to a pipeline already running (a ported reproducer, local Ray, analysis actors "
        f"of {args.analysis_num_cpus:g} CPU on {os.cpu_count()} cores), for a fixed pool of "
        "each size and an elastic one (`--n_analysis_actors MIN..MAX`, idle actor timeout "
        f"{args.idle_actor_timeout:g} s). Drain time: from the upload's start to the last "
        f"result. Actor-seconds: over the burst and the {args.quiet:g} quiet seconds after it "
        "(an elastic pool's measured until it is back at its minimum, the rest at the "
        "minimum). Medians of the repeats, with their range.",
        "",
        table(runs, args),
        "",
    ]
    if plot_path is not None:
        lines += [
            f"![Actors and files waiting during the burst](benchmarks/{plot_path.name})",
            "",
            "*Actors (top) and files waiting for an actor and not done yet (bottom), for the "
            "run of median drain time of each pool*",
            "",
        ]
    described = set()
    for run in runs:  # the first repeat of each elastic pool
        if run["elastic"] and run["config"] not in described:
            described.add(run["config"])
            lines.append(f"What the elastic pool {run['config']} did (first repeat):")
            lines += [f"- {line}" for line in behaviour(run)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
