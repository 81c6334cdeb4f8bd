"""The plots of ``bench/compare.py``'s report (matplotlib, Agg), from the measured rows.

:func:`plots` writes what the rows allow, each a PNG under the report's folder, and returns
their file names and captions for the document: throughput per case, files/s for 4 KiB
files, scaling with analysis actors, seconds per file by size, the latency CDF, and memory
over time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from harness import REGISTERED, Bench, median
from report import Report, fmt_num, size_label


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
        prj_v = [
            median(bench.values(c, "project", "mb_s", bench.ported(c) or "2 actors"))
            for c, _ in cases
        ]
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
        xs = np.arange(len(small))
        positive: list[float] = []
        # (system, the variant of a case's rows, label, colour)
        bar_series: list[tuple[str, Callable[[str], str | None], str, str]] = [
            ("raw", lambda c: None, "raw consume (messages/s)", "#999999"),
            ("reference", lambda c: None, "reference (2 threads)", "#d95f02"),
            ("project", bench.ported, "project (2 actors)", "#1b9e77"),
        ]
        if any(bench.values(c, "project", "files_s", REGISTERED) for c, _ in small):
            bar_series[2] = ("project", bench.ported, "project: ported reproducer", "#1b9e77")
            bar_series.append(
                ("project", lambda c: REGISTERED, "project: registered analysis", "#7570b3")
            )
        width = 0.27 if len(bar_series) == 3 else 0.2
        for i, (system, pick, label, color) in enumerate(bar_series):
            offset = (i - (len(bar_series) - 1) / 2) * width
            values = [median(bench.values(c, system, "files_s", pick(c))) for c, _ in small]
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
