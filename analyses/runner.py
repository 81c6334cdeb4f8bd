"""``reproducer run --analysis NAME[,NAME] ...``: registered analyses on a chunk topic.

Every flag of a reproducer's command line works here too (``--config``, ``--topic_name``,
``--producer_topic_name``, ``--mode``, ``--exactly_once``, ...). Each completed file goes
to every analysis whose file pattern matches it, each analysis with its own actors (its
registered resources and count); the file's offsets are released when all of its results
are acknowledged or have failed.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from analyses.base import AnalysisSpec
from analyses.registry import known, resolve
from reproducer.actors import Target
from reproducer.errors import ReproducerError
from reproducer.pipeline import RunSummary, run_targets
from reproducer.scaling import ActorRange
from reproducer.stream_reproducer import DataFileStreamReproducer

__all__ = ["AnalysesRun", "targets"]


class AnalysesRun(DataFileStreamReproducer):
    """Run registered analyses (--analysis NAME[,NAME] or package.module:Class)."""

    @classmethod
    def get_command_line_arguments(cls) -> tuple[list[str], dict[str, Any]]:
        args, kwargs = super().get_command_line_arguments()
        kwargs["analysis"] = ""
        kwargs["n_actors"] = None
        return args, kwargs

    @classmethod
    def get_argument_parser(cls) -> Any:
        parser = super().get_argument_parser()
        parser.prog = "reproducer run"
        parser.epilog = "analyses found by name: " + (", ".join(known()) or "none")
        return parser

    def _run(self, stop: threading.Event, summary: RunSummary) -> RunSummary:
        names = self.options.get("analysis") or ""
        if not names:
            raise ReproducerError(
                "--analysis is required: NAME[,NAME] or package.module:Class; known: "
                + (", ".join(known()) or "none")
            )
        return run_targets(targets(resolve(names), self), self._settings, stop, summary)


def targets(specs: list[AnalysisSpec], run: DataFileStreamReproducer) -> list[Target]:
    """What the pipeline runs for these analyses; a registered reproducer class is made
    with the run's own config and topics, and keeps the reference's results.

    The run's deployment flags apply on top of what each analysis registered:
    ``--analysis_resources`` adds custom resources (``{"analysis": 1}`` puts every
    analysis actor on the nodes that offer it) and ``--n_actors`` sets how many actors
    (a count, or a range MIN..MAX for an elastic pool).
    """
    extra = dict(run._settings.actor_resources)
    counts = _n_actors(run.options.get("n_actors"), [spec.name for spec in specs])
    out = []
    for spec in specs:
        options = spec.resources.actor_options()
        if extra:
            options["resources"] = {**options.get("resources", {}), **extra}
        payload: Any = spec.factory
        kind = "analysis"
        if inspect.isclass(payload) and issubclass(payload, DataFileStreamReproducer):
            payload = payload(run.config_file, run.consumer_topic_name, run.producer_topic_name)
            kind = "reproducer"
        own = ActorRange(
            spec.resources.n_actors, max(spec.resources.max_actors or 0, spec.resources.n_actors)
        )
        count = counts.get(spec.name, own)
        out.append(
            Target(
                name=spec.name,
                payload=payload,
                kind=kind,
                version=spec.version,
                files=spec.files,
                actor_options=options,
                n_actors=count.min,
                max_actors=count.max if count.elastic else None,
                topic=spec.topic,
                # its own limit, else --analysis_timeout_secs
                timeout_s=spec.timeout_s or run._settings.analysis_timeout_s,
            )
        )
    return out


def _n_actors(text: str | None, names: list[str]) -> dict[str, ActorRange]:
    """``--n_actors``: ``N`` or ``MIN..MAX`` for every analysis, or ``NAME=N[,NAME=MIN..MAX]``."""
    if not text:
        return {}
    counts: dict[str, ActorRange] = {}
    for part in str(text).split(","):
        name, _, number = part.strip().rpartition("=")
        try:
            count = ActorRange.parse(number)
        except ValueError as exc:
            raise ReproducerError(
                f"--n_actors {text!r}: {part!r} is not a count >= 1 nor a range MIN..MAX"
            ) from exc
        if not name:
            counts.update(dict.fromkeys(names, count))
        elif name not in names:
            raise ReproducerError(f"--n_actors: {name!r} is not one of the analyses run: {names}")
        else:
            counts[name] = count
    return counts
