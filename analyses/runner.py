"""``reproducer run --analysis NAME[,NAME] ...``: registered analyses on a chunk topic.

Every flag of a reproducer's command line works here too (``--config``, ``--topic_name``,
``--producer_topic_name``, ``--mode``, ``--exactly_once``, ...). Each completed file goes
to every analysis whose file pattern matches it, each analysis with its own actors (its
registered resources and count); the file's offsets are released when all of its results
are acknowledged or have failed.
"""

from __future__ import annotations

import inspect
from typing import Any

from analyses.base import AnalysisSpec
from analyses.registry import known, resolve
from reproducer.actors import Target
from reproducer.errors import ReproducerError
from reproducer.pipeline import RunSummary, run_targets
from reproducer.stream_reproducer import DataFileStreamReproducer, ProcessingResults

__all__ = ["AnalysesRun", "targets"]


class AnalysesRun(DataFileStreamReproducer):
    """Run registered analyses (--analysis NAME[,NAME] or package.module:Class)."""

    @classmethod
    def get_command_line_arguments(cls) -> tuple[list[str], dict[str, Any]]:
        args, kwargs = super().get_command_line_arguments()
        kwargs["analysis"] = ""
        return args, kwargs

    @classmethod
    def get_argument_parser(cls) -> Any:
        parser = super().get_argument_parser()
        parser.prog = "reproducer run"
        parser.epilog = "analyses found by name: " + (", ".join(known()) or "none")
        return parser

    def produce_processing_results_for_files_as_read(self) -> ProcessingResults:
        names = self.options.get("analysis") or ""
        if not names:
            raise ReproducerError(
                "--analysis is required: NAME[,NAME] or package.module:Class; known: "
                + (", ".join(known()) or "none")
            )
        summary: RunSummary = run_targets(targets(resolve(names), self), self._settings)
        self.last_run = summary
        return ProcessingResults(*summary.as_tuple())


def targets(specs: list[AnalysisSpec], run: DataFileStreamReproducer) -> list[Target]:
    """What the pipeline runs for these analyses; a registered reproducer class is made
    with the run's own config and topics, and keeps the reference's results."""
    out = []
    for spec in specs:
        payload: Any = spec.factory
        kind = "analysis"
        if inspect.isclass(payload) and issubclass(payload, DataFileStreamReproducer):
            payload = payload(run.config_file, run.consumer_topic_name, run.producer_topic_name)
            kind = "reproducer"
        out.append(
            Target(
                name=spec.name,
                payload=payload,
                kind=kind,
                version=spec.version,
                files=spec.files,
                actor_options=spec.resources.actor_options(),
                n_actors=spec.resources.n_actors,
                topic=spec.topic,
            )
        )
    return out
