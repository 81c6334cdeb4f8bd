"""Connecting to Ray: an existing cluster, or a local instance for testing.

Where a run goes (``connect``):

- ``--ray_address host:port`` (or ``ray://...``): that cluster.
- ``--ray_address auto``: the cluster running on this machine (``ray start`` on the head,
  which ``ray up`` did); an error naming the fix if there is none.
- no address inside a Ray job (``ray job submit``, which sets ``RAY_ADDRESS``): its cluster.
- no address otherwise: a new local Ray instance, stopped at exit. Its workers inherit
  ``PYTHONPATH`` (faster to start than a runtime environment); the dashboard is opt-in.
- ``--ray_address local``: a new local instance even where a cluster runs.

This module configures no logging: the command line does (``reproducer``, the reproducer
classes' ``run_from_command_line``, ``cluster.submit``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import ray

__all__ = ["cluster_resources", "connect", "running_cluster"]

log = logging.getLogger(__name__)

_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"
_AUTH_LOG = logging.getLogger("ray._private.authentication.authentication_token_setup")


def running_cluster() -> str | None:
    """The address of the Ray cluster this process should join without being told, if
    any: ``RAY_ADDRESS``, else one started on this machine with ``ray start``."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    from ray._private import services  # noqa: PLC0415 - Ray's own lookup, no public API

    address: str | None = services.find_bootstrap_address(None)
    return address


def connect(address: str | None = None, *, dashboard: bool = False) -> None:
    """Join the cluster at ``address`` (see the module's rules), or start local Ray.

    Does nothing if this process is connected already (a test, a notebook, a Ray job).
    Raises ``ConnectionError`` naming the address when there is no cluster there.
    """
    if ray.is_initialized():
        return
    # Actors' log lines reach this process with a coloured "(Actor pid=...)" prefix: plain
    # text when it goes to a file or a pipe (Ray reads this each time it prints one).
    if not (sys.stderr.isatty() and sys.stdout.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    if address == "auto" and running_cluster() is None:
        raise ConnectionError(
            "--ray_address auto: no Ray cluster runs on this machine (start one with "
            "`ray start --head` or `ray up ray_cluster.yaml`, or leave the address out "
            "to start local Ray)"
        )
    if address not in (None, "local"):
        _join(address)
        return
    # Local Ray: its workers inherit this environment, which is seconds faster to start
    # than a runtime environment; the dashboard costs seconds more and is opt-in.
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _python_path()
    # Ray enables token authentication for a new local instance and warns at every start
    # that it did (to say how to opt out): for a private instance started here, that is
    # the right default and no news. Other warnings of that logger still show.
    quiet = _DropMessage(_TOKEN_NOTICE)
    _AUTH_LOG.addFilter(quiet)
    try:
        ray.init(address="local", include_dashboard=dashboard, logging_level=logging.WARNING)
        log.info(
            "local Ray started at %s (`reproducer status ... --ray_address %s` finds this run)",
            ray.get_runtime_context().gcs_address,
            ray.get_runtime_context().gcs_address,
        )
    finally:
        _AUTH_LOG.removeFilter(quiet)
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _join(address: str) -> None:
    options: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    # A Ray job brings its runtime environment (--working-dir, pip) to every actor: it is
    # not replaced. Otherwise the driver's import path goes along, so that modules next to
    # it (python -m my_reproducer) import on the workers where the same folders exist: as
    # the job's driver path, which Ray gives the job's workers as it gives them the
    # driver's folder, rather than a runtime environment, whose set-up cost half a second
    # (measured, 4 actors joining a running Ray: 1.07 s against 1.65 s).
    if not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        options.update(_driver_path())
    quiet = _DropMessage(_TOKEN_NOTICE)  # the cluster's own setting, shown by `ray start`
    _AUTH_LOG.addFilter(quiet)
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise ConnectionError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    finally:
        _AUTH_LOG.removeFilter(quiet)
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    log.info("joined the Ray cluster at %s: %d nodes", address, len(nodes))


def _driver_path() -> dict[str, Any]:
    """``ray.init`` options that put this process's import path on the job's workers."""
    paths = _python_path().split(os.pathsep)
    try:
        from ray.job_config import JobConfig  # noqa: PLC0415

        return {"job_config": JobConfig(_py_driver_sys_path=paths)}
    except TypeError:  # a Ray without it: the (slower) runtime environment
        return {"runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}}


def _python_path() -> str:
    """The current folder and the driver's import path (folders that exist only)."""
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    return os.pathsep.join(dict.fromkeys([str(Path.cwd()), *paths]))


def cluster_resources() -> set[str]:
    """The custom resources any live node offers (``ingest``, ``analysis``, ...), or a node
    type the cluster's autoscaler can add does."""
    from reproducer.autoscaling import addable_node_types  # noqa: PLC0415

    offers = [node["Resources"] for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
    offers += [spec["resources"] for spec in (addable_node_types() or {}).values()]
    return {
        name
        for offered in offers
        for name in offered
        if name not in {"CPU", "GPU", "memory", "object_store_memory"}
        and not name.startswith(("node:", "accelerator_type:"))
    }
