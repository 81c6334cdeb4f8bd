"""The table of ``bench/compare.py``: its lines, built from the measured rows.

:class:`Report` reads a sitting's rows (``Bench.rows``) and builds one :class:`Line` per
metric, in table order (``Report.build``: a block per case), each with the raw ceiling, the
reference's figure, the project's, their ratio and the target it is judged against. The
project's figures are its ported reproducer (variant ``ported``, or every project row of
results from before the variants), its ported reproducer taking the lock (``*_lock``
cases) and its registered analysis (variant ``registered``), each beside the reference's.
The document around the table is ``bench/doc.py``'s; the plots ``bench/plots.py``'s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from harness import REGISTERED, Bench, median

PORTED_LABEL = "ported reproducer (bytestring, ReproducerMessage)"
LOCK_LABEL = "ported reproducer, lock once per file"
REGISTERED_LABEL = "registered analysis (buffer)"


_COPIES_PER_FILE = 2
"""Copies of a file the project makes in fresh memory (see ``Report.sizes_lines``)."""


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

    def build(self) -> list[Line]:
        """The table: one block of lines per case, in table order (a new case adds its
        block to ``blocks``)."""
        blocks = (
            self.raw_lines,
            self.small_lines,
            self.small10k_lines,
            self.mib1_lines,
            self.mib50_lines,
            self.cpu_lines,
            self.scaling_lines,
            self.sizes_lines,
            self.latency_lines,
            self.exactly_once_lines,
            self.startup_lines,
            self.memory_lines,
        )
        cases = self.b.args.cases
        for block in blocks:
            block(cases)
        for line in self.lines:  # a target judged on a start-up burst is in doubt
            if line.status in ("met", "not met") and "†" in line.reference + line.project:
                line.status += " †"
        return self.lines

    def raw_lines(self, cases: list[str]) -> None:
        if "raw" in cases and self.b.limit_1mib():
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

    def registered_line(self, case: str, metric: str, key: str, suffix: str = "") -> None:
        """The registered analysis's line of ``case``, beside the reference's best and the
        ported reproducer (no target of its own)."""
        if not self.v(case, "project", key, REGISTERED):
            return
        prj = self.m(case, "project", key, REGISTERED)
        _, ref = self.best_reference(case, key)
        ported = self.m(case, "project", key, self.b.ported(case))
        self.lines.append(
            Line(
                case,
                f"{metric}: {REGISTERED_LABEL}",
                reference=self.reference_text(case, key, ""),
                project=self.s(case, "project", key, REGISTERED) + suffix,
                ratio=ratio_text(self.ratio(prj, ref)),
                target=f"none; vs the ported reproducer {ratio_text(self.ratio(prj, ported))}",
            )
        )

    def small_lines(self, cases: list[str]) -> None:
        """4 KiB files: the ported reproducer, taking the lock, the registered analysis."""
        b = self.b
        metric = f"files/s, {b.plan.small_n:,} x 4 KiB, sha256"
        ported = b.ported("small")
        if "small" in cases and self.v("small", "project", "files_s", ported):
            _, ref = self.best_reference("small", "files_s")
            r = self.ratio(self.m("small", "project", "files_s", ported), ref)
            self.lines.append(
                Line(
                    "small",
                    f"{metric}: {PORTED_LABEL}",
                    raw=fmt_spread(self.v("small", "raw", "files_s")),
                    reference=self.reference_text("small", "files_s", ""),
                    project=self.s("small", "project", "files_s", ported),
                    ratio=ratio_text(r),
                    target="≥ 2x reference",
                    status=judge(None if r is None else r >= 2),
                )
            )
        if "small_lock" in cases and self.v("small_lock", "project", "files_s"):
            prj = self.m("small_lock", "project", "files_s")
            _, ref = self.best_reference("small_lock", "files_s")
            r = self.ratio(prj, ref)
            unlocked = self.ratio(prj, self.m("small", "project", "files_s", ported))
            self.lines.append(
                Line(
                    "small_lock",
                    f"{metric}: {LOCK_LABEL}",
                    reference=self.reference_text("small_lock", "files_s", ""),
                    project=self.s("small_lock", "project", "files_s"),
                    ratio=ratio_text(r),
                    target=f"≥ 4x reference; ≥ 0.85x without the lock (is {ratio_text(unlocked)})",
                    status=judge(
                        None if r is None or unlocked is None else r >= 4 and unlocked >= 0.85
                    ),
                )
            )
        if "small" in cases:
            self.registered_line("small", metric, "files_s")

    def small10k_lines(self, cases: list[str]) -> None:
        b, case = self.b, "small10k"
        if case not in cases:
            return
        if not b.plan.small10k:
            self.lines.append(
                Line(
                    case,
                    "files/s, 10,000 x 4 KiB, sha256",
                    target="per-file cost vs the small case ≤ 1.2x (skipped in --quick)",
                    status="not measured",
                )
            )
        ported = b.ported(case)
        if not self.v(case, "project", "files_s", ported):
            return
        _, ref = self.best_reference(case, "files_s")
        prj = self.m(case, "project", "files_s", ported)
        per_file = self.ratio(self.m("small", "project", "files_s", b.ported("small")), prj)
        self.lines.append(
            Line(
                case,
                "files/s, 10,000 x 4 KiB, sha256",
                raw=fmt_spread(self.v(case, "raw", "files_s")),
                reference=self.reference_text(case, "files_s", ""),
                project=self.s(case, "project", "files_s", ported),
                ratio=ratio_text(self.ratio(prj, ref)),
                target=f"per-file cost vs {b.plan.small_n:,} files ≤ 1.2x (is {ratio_text(per_file)})",
                status=judge(None if per_file is None else per_file <= 1.2),
            )
        )

    def mib1_lines(self, cases: list[str]) -> None:
        """1 MiB files: the ported reproducer, taking the lock, the registered analysis,
        and the CPU each costs."""
        b = self.b
        metric = f"MB/s, {b.plan.mib1_n} x 1 MiB, sha256"
        ported = b.ported("1mib")
        limit = b.limit_1mib()

        def of_limit(variant: str | None) -> str:
            prj = self.m("1mib", "project", "mb_s", variant)
            return f" ({100 * prj / limit['limit']:.0f}% of limit)" if limit else ""

        if "1mib" in cases and self.v("1mib", "project", "mb_s", ported):
            _, ref = self.best_reference("1mib")
            r = self.ratio(self.m("1mib", "project", "mb_s", ported), ref)
            raw_text = fmt_spread(self.v("1mib", "raw", "mb_s"))
            if limit:
                raw_text += f"; limit {fmt_num(limit['limit'])}"
            self.lines.append(
                Line(
                    "1mib",
                    f"{metric}: {PORTED_LABEL}",
                    raw=raw_text,
                    reference=self.reference_text("1mib", "mb_s", ""),
                    project=self.s("1mib", "project", "mb_s", ported) + of_limit(ported),
                    ratio=ratio_text(r),
                    target="≥ 1.4x reference's best thread count",
                    status=judge(None if r is None else r >= 1.4),
                )
            )
        if "1mib_lock" in cases and self.v("1mib_lock", "project", "mb_s"):
            prj = self.m("1mib_lock", "project", "mb_s")
            _, ref = self.best_reference("1mib_lock")
            unlocked = self.ratio(prj, self.m("1mib", "project", "mb_s", ported))
            self.lines.append(
                Line(
                    "1mib_lock",
                    f"{metric}: {LOCK_LABEL}",
                    reference=self.reference_text("1mib_lock", "mb_s", ""),
                    project=self.s("1mib_lock", "project", "mb_s"),
                    ratio=ratio_text(self.ratio(prj, ref)),
                    target=f"none; vs without the lock {ratio_text(unlocked)}",
                )
            )
        if "1mib" not in cases or not self.v("1mib", "project", "mb_s", ported):
            return
        self.registered_line("1mib", metric, "mb_s", of_limit(REGISTERED))
        ref_variant, _ = self.best_reference("1mib")
        ref_cpu = self.m("1mib", "reference", "cpu_s_per_mb", ref_variant)
        rc = self.ratio(self.m("1mib", "project", "cpu_s_per_mb", ported), ref_cpu)
        project = self.s("1mib", "project", "cpu_s_per_mb", ported)
        ratio = ratio_text(rc)
        if self.v("1mib", "project", "cpu_s_per_mb", REGISTERED):
            registered = self.m("1mib", "project", "cpu_s_per_mb", REGISTERED)
            project = (
                f"ported: {project}; registered: "
                f"{self.s('1mib', 'project', 'cpu_s_per_mb', REGISTERED)}"
            )
            ratio = f"ported: {ratio}; registered: {ratio_text(self.ratio(registered, ref_cpu))}"
        self.lines.append(
            Line(
                "1mib",
                "CPU s/MB (all processes, steady state)",
                reference=self.reference_text("1mib", "cpu_s_per_mb", ""),
                project=project,
                ratio=ratio,
                target=f"≤ reference's ({ref_variant or 'n/a'})",
                status=judge(None if rc is None else rc <= 1.0),
            )
        )

    def mib50_lines(self, cases: list[str]) -> None:
        b = self.b
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

    def cpu_lines(self, cases: list[str]) -> None:
        b = self.b
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

    def scaling_lines(self, cases: list[str]) -> None:
        if "scaling" in cases:
            by_actors = self.scaling()
            if by_actors:
                one = median(by_actors.get(1, []))
                parts = [f"{a}: {fmt_spread(v)}" for a, v in sorted(by_actors.items())]
                bare = {n: self.v("scaling", "raw", "mb_s", f"{n} processes") for n in (1, 2)}
                raw_text = ""
                machine = None  # the machine's own 2/1 scaling of the same kernel
                if bare[1] and bare[2]:
                    machine = self.ratio(median(bare[2]), median(bare[1]))
                    raw_text = (
                        f"bare processes 1: {fmt_spread(bare[1])}; 2: {fmt_spread(bare[2])} "
                        f"(2/1: {ratio_text(machine)})"
                    )
                two = self.ratio(median(by_actors.get(2, [])), one)
                of_machine = self.ratio(two, machine) if two and machine else None
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
                        )
                        + (
                            f"; 2/1 is {of_machine:.2f} of the machine's"
                            if of_machine is not None
                            else ""
                        ),
                        target="2/1 ≥ 0.95 of the machine's own 2/1",
                        status=judge(None if of_machine is None else of_machine >= 0.95),
                    )
                )

    def sizes_lines(self, cases: list[str]) -> None:
        b = self.b
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
                # This VM's cost of fresh memory taken out (the raw row: writing memory
                # freed seconds ago, less writing memory freed just now, per MiB), once for
                # each copy of a file this project makes that a 64 MiB file takes from what
                # the previous one freed and a 1 GiB file cannot: the rebuilt file (in
                # shared memory, or the page cache) and the ported reproducer's bytestring.
                # (The broker's page cache for the upload is fresh memory too: not taken out.)
                fresh = self.fresh_s_per_mib()
                corrected = None
                if gib is not None and fresh is not None:
                    corrected = self.ratio(
                        median(per.get(1024, [])) - _COPIES_PER_FILE * fresh, ref64
                    )
                ratio = ratio_text(self.ratio(median(per.get(largest, [])), ref64))
                ratio += f" ({size_label(largest)})"
                if corrected is not None:
                    ratio += f"; {ratio_text(corrected)} with fresh memory's cost taken out"
                verdict = corrected if corrected is not None else gib
                self.lines.append(
                    Line(
                        "sizes",
                        f"s/MiB by file size, {mode} mode (relative to 64 MiB)",
                        project="; ".join(
                            f"{size_label(s)}: {fmt_spread(v)} ({ratio_text(self.ratio(median(v), ref64))})"
                            for s, v in per.items()
                        ),
                        ratio=ratio,
                        target="1 GiB ≤ 1.2x 64 MiB (fresh memory's cost taken out)",
                        status=judge(None if verdict is None else verdict <= 1.2),
                    )
                )

    def fresh_s_per_mib(self) -> float | None:
        """Seconds per MiB that writing fresh memory costs beyond reused memory here (the
        raw row), or None if it was not measured."""
        warm, cold = self.v("raw", "machine", "warm_gib_s"), self.v("raw", "machine", "cold_gib_s")
        if not warm or not cold:
            return None
        return max(0.0, median(cold) - median(warm)) / 1024

    def latency_lines(self, cases: list[str]) -> None:
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

    def exactly_once_lines(self, cases: list[str]) -> None:
        b = self.b
        ported = b.ported("1mib")
        if "exactly_once" in cases and self.v("exactly_once", "project", "mb_s", "exactly once"):
            alo = self.v("1mib", "project", "mb_s", ported) or self.v(
                "exactly_once", "project", "mb_s", "at least once"
            )
            alo_text = (
                self.s("1mib", "project", "mb_s", ported)
                if self.v("1mib", "project", "mb_s", ported)
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

    def startup_lines(self, cases: list[str]) -> None:
        b = self.b
        if "startup" in cases:
            case = "1mib" if self.v("1mib", "project", "startup_s") else "startup"
            ported = b.ported(case)
            prj = self.m(case, "project", "startup_s", ported)
            ref_all = [
                s
                for r in b.rows
                if r["case"] == case and r["system"] == "reference"
                for s in [r.get("startup_s")]
                if s
            ]
            # what the floor measured, as its rows say (older sittings: one actor)
            floor = next(
                (r["variant"] for r in b.rows if r["case"] == "startup" and r["system"] == "ray"),
                "",
            ).removeprefix("ray.")
            self.lines.append(
                Line(
                    "startup",
                    "s from process spawn to the first result",
                    raw=f"Ray floor ({floor}) {fmt_spread(self.v('startup', 'ray', 'floor_s'))}; "
                    f"spawn to that call {fmt_spread(self.v('startup', 'ray', 'spawn_to_call_s'))}",
                    reference=fmt_spread(ref_all),
                    project=fmt_spread(self.v(case, "project", "startup_s", ported)),
                    ratio=ratio_text(self.ratio(prj, median(ref_all))),
                    target="≤ 3 s",
                    basis="project",
                    status=judge(None if prj != prj else prj <= 3),
                )
            )

    def memory_lines(self, cases: list[str]) -> None:
        b = self.b
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

    def scaling(self) -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for r in self.b.rows:
            if r["system"] == "project" and r["case"] in ("fft", "scaling") and "mb_s" in r:
                out.setdefault(int(r["variant"].split()[0]), []).append(r["mb_s"])
        return out


def size_label(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 else f"{mib} MiB"


def print_table(report: Report) -> None:
    print("\n| case | metric | raw | reference | project | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    for line in report.lines:
        target = f"{line.target}: {line.status}" if line.status else line.target
        print(
            f"| {line.case} | {line.metric} | {line.raw} | {line.reference} | {line.project} | {line.ratio} | {target} |"
        )
