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

Large outputs (plots, tables) go beside the results with :meth:`Analysis.attach`: written
atomically under the run's output folder, named in the result by a claim check (path,
size, SHA-256), and sent back with the result so that a plot made on another node of the
cluster also lands in the output folder of the node that runs the pipeline.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproducer._storage import write_atomically
from reproducer.chunk import LOGS_DIR
from reproducer.errors import ReproducerError

__all__ = [
    "Analysis",
    "AnalysisSpec",
    "BadInput",
    "RegistrationError",
    "Resources",
    "write_atomically",
]


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

    def attach(self, relative: str, data: bytes) -> dict[str, Any]:
        """Keep ``data`` as the file ``relative`` (a path inside the output folder, e.g.
        ``plots/run1/a.h5/spectrum.png``) and return its claim check for the result:
        ``{"path": ..., "size": ..., "sha256": ...}`` (``path`` as ``relative`` when the
        run has no output folder: the bytes then only travel with the result).

        Written atomically (a reader never sees half a file); the pipeline writes the
        same bytes under its own output folder if this actor runs on another node.
        """
        parts = [p for p in re.split(r"[/\\]+", relative) if p not in ("", ".")]
        if not parts or ".." in parts or relative.startswith(("/", "\\")):
            raise ValueError(
                f"an attachment needs a relative path inside the output folder, not {relative!r}"
            )
        if parts[0] == LOGS_DIR:
            raise ValueError(
                f"an attachment may not go under {LOGS_DIR}/, where the reproducer keeps its "
                f"logs and records: {relative!r}"
            )
        clean = "/".join(parts)
        check = {"path": clean, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if self.output_dir is not None:
            target = Path(self.output_dir).joinpath(*parts)
            if not target.resolve().is_relative_to(Path(self.output_dir).resolve()):
                raise ValueError(
                    f"an attachment needs a relative path inside the output folder, not "
                    f"{relative!r} (it resolves outside it)"
                )
            write_atomically(target, data)
            check["path"] = str(target)
        self._attachments[clean] = bytes(data)
        return check

    @property
    def _attachments(self) -> dict[str, bytes]:
        """What :meth:`attach` kept since the runtime last took them (per instance)."""
        found = self.__dict__.get("_attached")
        if found is None:
            found = self.__dict__["_attached"] = {}
        return found

    def take_attachments(self) -> dict[str, bytes]:
        """For the runtime: the attachments of the file just analysed, forgotten here."""
        return self.__dict__.pop("_attached", None) or {}

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
    n_actors: int = 1  # the minimum, when max_actors is above it
    max_actors: int | None = None  # an elastic pool: up to this many while files wait

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
        elif self.max_actors is not None and (
            not isinstance(self.max_actors, int) or self.max_actors < self.n_actors
        ):
            found.append(
                f"max_actors must be an integer >= min_actors ({self.n_actors}), "
                f"not {self.max_actors!r}"
            )
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
