"""An analysis: a plain class with one method, no Ray in sight.

    from analyses import Analysis, register

    @register("line-count", version="1", files=r".*\\.csv$", num_cpus=0.5, n_actors=2)
    class LineCount(Analysis):
        def analyze(self, datafile):
            return {"lines": datafile.bytestring.count(b"\\n")}

``analyze`` gets a reconstructed file (a :class:`~reproducer.datafile.DownloadDataFile`:
``bytestring``, ``buffer``, ``full_filepath`` in disk modes, ``relative_filepath``, ...)
and returns a JSON-able dict, a :class:`~reproducer.datafile.ReproducerMessage`, or
``None`` after logging why there is no result. ``setup()`` runs once per actor before the
first file (load a model, open a calibration file); ``close()`` when the actor stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproducer.errors import ReproducerError

__all__ = ["Analysis", "AnalysisSpec", "BadInput", "RegistrationError", "Resources"]


class RegistrationError(ReproducerError):
    """An analysis cannot be registered or found as asked; the message says what to fix."""


class BadInput(ValueError):
    """Raised by an analysis for a file it cannot analyse (truncated, wrong format):
    trying again, on any actor, will not help."""


class Analysis:
    """Subclass and implement :meth:`analyze`; ``name`` and ``version`` come from the
    registration (or set them as class attributes)."""

    name: str = ""
    version: str = "1"
    output_dir: Path | None = None  # the run's output folder, set before setup(), if any

    def setup(self) -> None:
        """Once per actor, before the first file."""

    def analyze(self, datafile: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement analyze(datafile)")

    def close(self) -> None:
        """Once per actor, when it stops."""


@dataclass(frozen=True)
class Resources:
    """What one actor of an analysis asks Ray for, and how many actors it runs."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes, for Ray's scheduler
    custom: dict[str, float] = field(default_factory=dict)  # e.g. {"analysis": 1}
    n_actors: int = 1

    def problems(self) -> list[str]:
        """What is impossible about these resources (empty if nothing)."""
        found = []
        amounts = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **self.custom}
        for name, amount in amounts.items():
            if not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
                found.append(f"{name} must be a number >= 0, not {amount!r}")
        if self.memory is not None and (not isinstance(self.memory, int) or self.memory <= 0):
            found.append(f"memory must be a number of bytes > 0, not {self.memory!r}")
        if not isinstance(self.n_actors, int) or self.n_actors < 1:
            found.append(f"n_actors must be an integer >= 1, not {self.n_actors!r}")
        return found

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options``: only what was asked for, so plain
        local Ray with no custom resources runs everything."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.memory:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


@dataclass(frozen=True)
class AnalysisSpec:
    """A registered analysis: how to make it, what it needs, which files it wants."""

    name: str
    factory: type
    version: str = "1"
    resources: Resources = field(default_factory=Resources)
    files: str | None = None  # re.match on the file's relative path; None: every file
    mode: str | None = None  # "memory", "disk" or "both" if it needs one
    topic: str | None = None  # its own result topic; None: the pipeline's
    timeout_s: float | None = None  # per file: past it, its actor is replaced (see pool)
    origin: str = ""  # where it was registered (module, entry point), for error messages
