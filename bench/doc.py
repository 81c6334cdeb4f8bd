"""The document of ``bench/compare.py``: the report's markdown, its plots and results.json.

:func:`render` writes all three from a sitting's rows (after a measurement, or
:func:`rerender` from a saved results.json, measuring nothing): the table built by
``bench/report.py``, the plots of ``bench/plots.py``, and around them the machine, the
targets, how each figure is measured (:func:`write_doc`) and the model of a cluster's
ceiling (:func:`model_lines`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from cases import CASES
from harness import Bench, Plan, mark_bursts
from plots import plots
from report import Report, fmt_num, print_table


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
    if info["run"].get("kept"):
        lines += [f"**Not measured in this sitting:** {info['run']['kept']}.", ""]
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
        "- **The project's side, as users write it.** The same work runs in the project "
        "three ways (`bench/project_run.py`): a *ported reproducer*, a "
        "`DataFileStreamReproducer` subclass that reads `datafile.bytestring` and returns a "
        "`ReproducerMessage` subclass, as a reference user ports theirs (variant `ported`; "
        "the one every other case runs); the same taking its `lock` once per file around a "
        "shared counter (the `small_lock` and `1mib_lock` cases, as the reference's side "
        "does in them); and a *registered analysis*, an `analyses.Analysis` whose "
        "`analyze(datafile)` reads the zero-copy `datafile.buffer` and returns a dict, "
        "which the pipeline produces inside its result envelope (registered as `bench-work` "
        "and run by `analyses.runner.AnalysesRun`; variant `registered` of the small and "
        "1mib cases, a process of its own after the ported reproducer's, in each repeat).",
        "- **Throughput** is steady state: the bytes (or number) of the files of the middle "
        "80% of the results (the 10th percentile to the 90th, by time) over the time between "
        "them, both result-message timestamps; so neither the results of files read ahead "
        "during start-up nor the tail count, for either system. Start-up is "
        "reported apart: from process spawn to the first result's timestamp, so it includes "
        "interpreter start, imports, Ray's start (project) and the consumer-group join (both). "
        'Ray\'s own floor is `ray.init(address="local", include_dashboard=False)` plus '
        "trivial actors started and called at once, in a fresh interpreter: four, as many as "
        "the pipeline starts (one in sittings before 2026-12-08; the row names which).",
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
        *elastic_lines(path.parent / folder / "elastic.md"),
        "## On paper, past one machine",
        "",
        *model_lines(limit),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def elastic_lines(section: Path) -> list[str]:
    """The last ``bench/elastic.py --doc`` section, if there is one (its own sitting)."""
    if not section.exists():
        return []
    return ["## Elastic pools under a burst", "", *section.read_text().splitlines(), ""]


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
