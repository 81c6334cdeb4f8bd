"""Registering analyses and finding them by name.

An analysis is found, in this order, as
- ``package.module:Class`` (or ``:spec``): imported from the module path;
- a name registered in this process with :func:`register`;
- a name in the ``ray_reproducer.analyses`` entry-point group of any installed package,
  so a lab ships its analyses as its own pip package:

      [project.entry-points."ray_reproducer.analyses"]
      peak-finder = "my_lab.peaks:PeakFinder"

A bad registration (an unknown or duplicate name, a class without ``analyze``, impossible
resources, a bad file pattern) raises :class:`RegistrationError` saying what to fix.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from analyses.base import Analysis, AnalysisSpec, RegistrationError, Resources

__all__ = ["ENTRY_POINT_GROUP", "known", "make_spec", "register", "resolve"]

ENTRY_POINT_GROUP = "ray_reproducer.analyses"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MODES = (None, "memory", "disk", "both")

_registry: dict[str, AnalysisSpec] = {}

T = TypeVar("T", bound=type)


def register(
    name: str,
    *,
    version: str | None = None,
    files: str | None = None,
    mode: str | None = None,
    topic: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    memory: int | None = None,
    resources: dict[str, float] | None = None,
    n_actors: int = 1,
    timeout_s: float | None = None,
    min_actors: int | None = None,
    max_actors: int | None = None,
) -> Callable[[T], T]:
    """Class decorator: register the class under ``name`` with what it needs.

    ``n_actors``: a fixed pool of actors. ``min_actors``/``max_actors``: an elastic pool,
    which grows while files wait (up to ``max_actors``) and retires actors idle for
    ``--idle_actor_timeout`` seconds (down to ``min_actors``; ``n_actors`` if not given).

    ``timeout_s``: the most seconds one file's analysis may take. Past it the actor is
    killed and replaced (a hung analysis would hold it forever), the file runs again alone,
    and if it runs past the limit again it is recorded as failed (a dead-letter report).
    """

    if min_actors is not None and n_actors != 1:
        raise RegistrationError(
            f"analysis {name!r}: give n_actors (a fixed pool) or min_actors/max_actors (an "
            f"elastic one), not both (n_actors={n_actors}, min_actors={min_actors})"
        )

    def decorate(cls: T) -> T:
        spec = make_spec(
            cls,
            name,
            version=version,
            files=files,
            mode=mode,
            topic=topic,
            timeout_s=timeout_s,
            resources=Resources(
                num_cpus,
                num_gpus,
                memory,
                dict(resources or {}),
                n_actors if min_actors is None else min_actors,
                max_actors,
            ),
            origin=f"{cls.__module__}.{cls.__qualname__}",
        )
        _add(spec)
        return cls

    return decorate


def make_spec(
    factory: Any,
    name: str,
    *,
    version: str | None = None,
    files: str | None = None,
    mode: str | None = None,
    topic: str | None = None,
    resources: Resources | None = None,
    origin: str = "",
    timeout_s: float | None = None,
) -> AnalysisSpec:
    """A checked :class:`AnalysisSpec`; every problem found is in the error's message."""
    where = origin or getattr(factory, "__qualname__", repr(factory))
    problems = []
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(
            f"the name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-'"
        )
    if not inspect.isclass(factory):
        problems.append(f"{factory!r} is not a class")
    elif not _has_method(factory):
        problems.append(
            f"class {factory.__qualname__} has no analyze(self, datafile) method (subclass "
            "analyses.Analysis, or a DataFileStreamReproducer with "
            "_get_processing_result_message_for_file)"
        )
    if files is not None:
        try:
            re.compile(files)
        except re.error as exc:
            problems.append(f"files={files!r} is not a regular expression: {exc}")
    if mode not in _MODES:
        problems.append(f"mode must be one of memory, disk, both, not {mode!r}")
    if timeout_s is not None and (
        not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s) or timeout_s <= 0
    ):
        problems.append(f"timeout_s must be a number of seconds > 0, not {timeout_s!r}")
    resources = resources or Resources()
    problems += resources.problems()
    if problems:
        raise RegistrationError(f"analysis {name!r} ({where}): " + "; ".join(problems))
    return AnalysisSpec(
        name=name,
        factory=factory,
        version=str(version or getattr(factory, "version", None) or "1"),
        resources=resources,
        files=files,
        mode=mode,
        topic=topic,
        timeout_s=timeout_s,
        origin=where,
    )


def resolve(names: str | Iterable[str]) -> list[AnalysisSpec]:
    """The analyses named (``"a,b"`` or a list), each once, in the order given."""
    items = names.split(",") if isinstance(names, str) else list(names)
    specs: list[AnalysisSpec] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        spec = _from_module_path(item) if ":" in item else _by_name(item)
        if any(s.name == spec.name for s in specs):
            raise RegistrationError(f"analysis {spec.name!r} is asked for twice")
        specs.append(spec)
    if not specs:
        raise RegistrationError("no analysis given")
    return specs


def known() -> dict[str, str]:
    """Every analysis that can be found by name: name -> where it comes from."""
    found = {ep.name: f"entry point {ep.value}" for ep in entry_points(group=ENTRY_POINT_GROUP)}
    found.update({name: spec.origin for name, spec in _registry.items()})
    return dict(sorted(found.items()))


# ---------------------------------------------------------------------- internals
def _has_method(cls: type) -> bool:
    if callable(getattr(cls, "_get_processing_result_message_for_file", None)) and not callable(
        getattr(cls, "analyze", None)
    ):
        return True  # a DataFileStreamReproducer: run through its adapter
    analyze = getattr(cls, "analyze", None)
    return callable(analyze) and analyze is not Analysis.analyze


def _add(spec: AnalysisSpec) -> None:
    previous = _registry.get(spec.name)
    if previous is not None and previous.origin != spec.origin:
        raise RegistrationError(
            f"analysis name {spec.name!r} is registered twice: by {previous.origin} and by "
            f"{spec.origin}; rename one"
        )
    _registry[spec.name] = spec  # the same class again (a module reloaded): replaced


def _by_name(name: str) -> AnalysisSpec:
    if name in _registry:
        return _registry[name]
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if len(matches) > 1:
        values = ", ".join(ep.value for ep in matches)
        raise RegistrationError(f"analysis {name!r} has several entry points: {values}")
    if not matches:
        names = ", ".join(known()) or "none"
        raise RegistrationError(
            f"unknown analysis {name!r}; known: {names}; or give package.module:Class"
        )
    (entry,) = matches
    try:
        loaded = entry.load()
    except Exception as exc:
        raise RegistrationError(
            f"analysis {name!r}: cannot load entry point {entry.value}: {exc}"
        ) from exc
    return _as_spec(loaded, name, f"entry point {entry.value}")


def _from_module_path(path: str) -> AnalysisSpec:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistrationError(f"analysis {path!r}: cannot import {module_name}: {exc}") from exc
    try:
        loaded = getattr(module, attribute)
    except AttributeError as exc:
        raise RegistrationError(f"analysis {path!r}: {module_name} has no {attribute}") from exc
    name = getattr(loaded, "name", "") or attribute.lower()
    return _as_spec(loaded, name if isinstance(name, str) else attribute.lower(), path)


def _as_spec(loaded: Any, name: str, origin: str) -> AnalysisSpec:
    if isinstance(loaded, AnalysisSpec):
        return loaded
    for spec in _registry.values():  # importing the module may have registered it
        if spec.factory is loaded:
            return spec
    return make_spec(loaded, name, origin=origin)
