"""What Ray's cluster autoscaler can bring, asked from the driver (connected to Ray).

- :func:`autoscaler_running`: whether Ray's monitor reports an autoscaler status in the
  cluster's key-value store (every ``ray start --head`` cluster's does, even one that
  cannot add nodes).
- :func:`node_types`: the node types of its config (each type's resources and most
  workers), when the driver runs where the autoscaler does (the head node, as ``ray
  submit`` and ``ray job submit`` run it); ``None`` when it cannot be read.
- :func:`addable_node_types`: those, when an autoscaler runs with a config that can add
  worker nodes (``ray up``, or a head started with ``--autoscaling-config``); else ``None``.
- :func:`request_nodes`: ``ray.autoscaler.sdk.request_resources``: room for these actors
  ahead of time, or none (an empty list releases the request).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["addable_node_types", "autoscaler_running", "fits", "node_types", "request_nodes"]

_STATUS_KEY = "__autoscaling_status"
_CONFIG_FLAG = "--autoscaling-config="


def autoscaler_running() -> bool:
    from ray.experimental.internal_kv import (  # noqa: PLC0415
        _internal_kv_get,
        _internal_kv_initialized,
    )

    try:
        return bool(_internal_kv_initialized() and _internal_kv_get(_STATUS_KEY))  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - an older or newer Ray without it: no autoscaler known
        return False


def node_types(
    gcs_address: str | None = None, proc: Path = Path("/proc")
) -> dict[str, dict[str, Any]] | None:
    """``{type name: {"resources": {...}, "max_workers": n, "head": bool}}`` from the
    config file the autoscaler of this cluster (the one whose GCS is at ``gcs_address``,
    by default the one this process joined) was started with, if it runs on this machine;
    else ``None``."""
    if gcs_address is None:
        import ray  # noqa: PLC0415

        gcs_address = ray.get_runtime_context().gcs_address
    ours = f"--gcs-address={gcs_address}".encode()
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if ours not in args or not any(b"autoscaler" in a and b"monitor" in a for a in args[:4]):
            continue  # another cluster's monitor, or not a monitor
        for arg in args:
            text = arg.decode(errors="replace")
            if text.startswith(_CONFIG_FLAG):
                path = Path(text[len(_CONFIG_FLAG) :]).expanduser()
                if not path.is_absolute():  # as the monitor sees it, from its folder
                    path = cmdline.parent / "cwd" / path
                return _read_types(path)
    return None


def addable_node_types() -> dict[str, dict[str, Any]] | None:
    if not autoscaler_running():
        return None
    types = node_types()
    if types is None or not any(
        spec["max_workers"] > 0 and not spec.get("head") for spec in types.values()
    ):
        return None
    return types


def _read_types(path: Path) -> dict[str, dict[str, Any]] | None:
    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        log.debug("the autoscaler's config %s cannot be read: %s", path, exc)
        return None
    try:
        config = json.loads(text)
    except ValueError:
        import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 - a dependency of Ray

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    types = config.get("available_node_types") if isinstance(config, dict) else None
    if not isinstance(types, dict):
        return None
    head = config.get("head_node_type")
    return {
        name: {
            "resources": dict(spec.get("resources") or {}),
            # the head is there already; a worker type adds up to its max_workers
            "max_workers": 1 if name == head else int(spec.get("max_workers", 0) or 0),
            "head": name == head,
        }
        for name, spec in types.items()
        if isinstance(spec, dict)
    }


def fits(
    need: Mapping[str, float],
    offered: Mapping[str, float],
    *,
    unknown: frozenset[str] = frozenset(),
) -> bool:
    """Whether ``offered`` has room for ``need``; a resource in ``unknown`` that ``offered``
    does not name counts as enough (a node type's CPUs and memory, which a cloud launcher
    fills in from the machine type)."""
    return all(
        (name in unknown and name not in offered) or float(offered.get(name, 0) or 0) >= amount
        for name, amount in need.items()
    )


MEASURED = frozenset({"CPU", "memory"})
"""What a node type may leave out of its config: its machine says."""


def request_nodes(bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler for room for ``bundles`` (one per actor) now, before the actors
    are made; ``[]`` releases the request."""
    from ray.autoscaler.sdk import request_resources  # noqa: PLC0415

    request_resources(bundles=bundles)
