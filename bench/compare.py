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
s/MB is the CPU time of that process tree over the same window, over the bytes of its files.
Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker.

This file is the command line; the rest is beside it: the cases in ``bench/cases.py`` (one
function each, named in its ``CASES`` table), the measuring in ``bench/harness.py``, the
machine and the reference's venv in ``bench/machine.py``, the table in ``bench/report.py``,
the plots in ``bench/plots.py``, and the document and results.json in ``bench/doc.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
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

from cases import CASES  # bench/cases.py, and the modules beside it
from doc import render, rerender
from harness import ROOT, Bench
from machine import (
    DEFAULT_OMSI_VENV,
    broker_version,
    ensure_omsi,
    machine,
    versions,
)

from cluster import broker_from_env

del matplotlib, psutil  # imported by the modules that use them; checked here


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="cases:\n" + "\n".join(f"  {name:<13} {case.about}" for name, case in CASES.items()),
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
    kept: list[dict[str, Any]] = []
    kept_from = ""
    if args.keep:
        earlier = json.loads(args.keep.read_text())
        kept = [row for row in earlier["rows"] if row["case"] not in args.cases]
        kept_from = earlier.get("info", {}).get("run", {}).get("date", "an earlier sitting")
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
        try:
            for name, case in CASES.items():
                if name not in args.cases:
                    continue
                print(f"# --- {name} ({time.time() - begun:.0f} s)", flush=True)
                case.run(bench)
        finally:
            bench.delete_topics()
        bench.rows = kept + bench.rows
        measured = list(args.cases)
        if kept:  # the report shows them too, said to be from the sitting they came from
            args.cases = [c for c in CASES if c in measured or any(r["case"] == c for r in kept)]
            info["run"]["kept"] = (
                f"{', '.join(c for c in args.cases if c not in measured)}: "
                f"kept from the sitting of {kept_from} (`--keep`)"
            )
        # the command as run, but for where the kept file was (a path of this machine)
        words = [Path(w).name if w == str(args.keep) else w for w in sys.argv[1:]]
        command = ("python bench/compare.py " + " ".join(words)).strip()
        render(bench, info, args.output, command, time.time() - begun)
    print(f"# {time.time() - begun:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    raise SystemExit(main())
