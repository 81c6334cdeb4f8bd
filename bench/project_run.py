#!/usr/bin/env python3
"""This project's side of ``bench/compare.py``: one case, in a process of its own.

    python bench/project_run.py '{"config": FILE, "runs": [{"topic": T, "results_topic": R,
                                  "analysis": "sha256", "actors": 2, "options": {...},
                                  "registered": false}]}'

Each run is one ``DataFileStreamReproducer`` pipeline whose analysis is ``bench/work.py``'s
``analyze(bytes, kind)`` plus the file's relative path, exactly as the reference's side does:
by default a *ported reproducer* (:class:`WorkReproducer`, as a reference user ports theirs);
with ``"registered": true`` in a run, the same work as a *registered analysis*
(:class:`WorkAnalysis`, registered here as ``bench-work`` and run by
``analyses.runner.AnalysesRun``), as a new analysis is written. The runs of one invocation
go one after the other in the same (fresh, local) Ray instance; ``options`` are the
reproducer's keyword options (``mode``, ``max_held_mb``, ``exactly_once``...). A run ends
after ``stop_when_idle`` seconds without work, or on SIGTERM (``compare.py`` sends it once it
has seen every result). ``{"idle": true}`` instead runs ``bench/pipeline.py``'s
``idle()`` (the pipeline on an empty topic: the memory baseline). One JSON line per run is
printed on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import work  # bench/work.py: this folder is the script's, so on the path of Ray's workers too

import analyses
from analyses.runner import AnalysesRun
from reproducer import DataFileStreamReproducer, ReproducerMessage

REGISTERED_NAME = "bench-work"


class WorkResult(ReproducerMessage):
    def __init__(self, datafile: Any, payload: dict[str, Any]) -> None:
        super().__init__(datafile)
        self.payload = payload

    @property
    def msg_value(self) -> str:
        return json.dumps(self.payload)


class WorkReproducer(DataFileStreamReproducer):
    """Every file's result is ``work.analyze(bytes, kind)``, written as the reference's
    users write it (and as ``bench/omsi_reproducer.py`` does): it reads ``bytestring``,
    returns a ``ReproducerMessage`` subclass, and with ``KIND+lock`` takes the lock once
    per file around a shared counter."""

    analysis_kind = "sha256"
    n_locked = 0  # the shared resource the lock guards

    def _get_processing_result_message_for_file(self, datafile: Any, lock: Any) -> Any:
        kind, locked = work.split(self.analysis_kind)
        payload = work.analyze(datafile.bytestring, kind)
        payload["file"] = Path(datafile.relative_filepath).as_posix()
        if locked:
            with lock:
                WorkReproducer.n_locked += 1
        return WorkResult(datafile, payload)


class WorkAnalysis(analyses.Analysis):
    """The same work as a registered analysis, written as a new analysis is: it reads
    ``buffer`` (a zero-copy view of the rebuilt file) and returns a dict, which the pipeline
    produces inside its result envelope (``{"analysis", "file", ..., "result": dict}``)."""

    kind = "sha256"  # set per run in this (driver) process: the class goes to the actors by value

    def analyze(self, datafile: Any) -> dict[str, Any]:
        payload = work.analyze(datafile.buffer, self.kind)
        payload["file"] = Path(datafile.relative_filepath).as_posix()
        return payload


def registered_run(config: str, one: dict[str, Any], actors: int, **kwargs: Any) -> AnalysesRun:
    """``WorkAnalysis`` registered for this run (its kind, actors and CPUs), and the run of
    it by name, as ``reproducer run --analysis bench-work`` would."""
    kind, locked = work.split(one.get("analysis", "sha256"))
    if locked:
        raise SystemExit("a registered analysis has no lock: run KIND, not KIND+lock")
    WorkAnalysis.kind = kind
    # the same class registered again (same origin) replaces the previous run's registration
    analyses.register(
        REGISTERED_NAME,
        version="1",
        num_cpus=float(kwargs["analysis_num_cpus"]),
        n_actors=actors,
    )(WorkAnalysis)
    return AnalysesRun(
        config, one["topic"], one["results_topic"], analysis=REGISTERED_NAME, **kwargs
    )


def run(spec: dict[str, Any]) -> None:
    if spec.get("idle"):
        from pipeline import idle  # noqa: PLC0415 - bench/pipeline.py

        print(json.dumps(idle(spec["bootstrap"], Path(spec["config"]))), flush=True)
        return
    for one in spec["runs"]:
        actors = int(one.get("actors", spec.get("actors", 2)))
        options = {**spec.get("options", {}), **one.get("options", {})}
        # a 2-core machine offers 2 CPUs to Ray: more actors than cores share them
        options.setdefault("analysis_num_cpus", min(1.0, (os.cpu_count() or 1) / actors))
        # a group of its own, stable for the run (exactly once needs one that is not
        # create_new)
        options.setdefault("consumer_group_id", f"bench-{uuid.uuid4().hex[:12]}")
        started = time.time()
        # rebuilt files (disk mode) and logs, removed after the run
        with tempfile.TemporaryDirectory(prefix="bench-project-", dir=spec.get("scratch")) as out:
            common = {
                "n_analysis_actors": actors,
                "stop_when_idle": float(spec.get("stop_when_idle", 30.0)),
                "update_seconds": 3600.0,
                "output_dir": Path(out),
                **options,
            }
            kind = one.get("analysis", spec.get("analysis", "sha256"))
            reproducer: DataFileStreamReproducer
            if one.get("registered"):
                reproducer = registered_run(
                    spec["config"], {**one, "analysis": kind}, actors, **common
                )
            else:
                ported = WorkReproducer(
                    spec["config"], one["topic"], one["results_topic"], **common
                )
                ported.analysis_kind = kind
                reproducer = ported
            results = reproducer.produce_processing_results_for_files_as_read()
        print(
            json.dumps(
                {
                    "topic": one["topic"],
                    "registered": bool(one.get("registered")),
                    "n_results": results.n_results_produced,
                    "n_files_read": results.n_files_read,
                    "seconds": round(time.time() - started, 3),
                }
            ),
            flush=True,
        )


def main() -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(json.loads(sys.argv[1]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    raise SystemExit(main())
