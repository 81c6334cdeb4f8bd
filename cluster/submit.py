"""The entry script for a Ray cluster: ``reproducer run`` that joins the cluster it finds.

On a cluster made by ``ray up ray_cluster.yaml``::

    ray submit ray_cluster.yaml cluster/submit.py -- \\
        --analysis hdf5-summary --config kafka.config \\
        --topic_name raw_data --producer_topic_name results

Through the Jobs API (the head's dashboard port, 8265)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m cluster.submit --analysis hdf5-summary --config kafka.config ...

and on one machine, with the same arguments: ``python -m cluster.submit ...``.

Every flag of ``reproducer run`` works. What this script adds:

- ``--ray_address`` defaults to the cluster running here (inside a Ray job, or on a head
  started with ``ray start``), else local Ray is started;
- where the cluster offers the ``ingest`` resource and ``--ingest_resources`` is not
  given, the ingest actor asks for ``{"ingest": 1}`` (it runs on the head of
  ``ray_cluster.yaml``); likewise analysis actors ask for ``{"analysis": 1}`` where
  ``analysis`` is offered. On local Ray, which offers neither, nothing is asked for.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from reproducer.ray_launch import cluster_resources, connect, running_cluster

__all__ = ["main", "masked", "with_cluster_defaults"]

log = logging.getLogger("cluster.submit")

DEFAULT_PLACEMENT = {"--ingest_resources": "ingest", "--analysis_resources": "analysis"}


def with_cluster_defaults(argv: Sequence[str], offered: set[str]) -> list[str]:
    """``argv`` plus the placement flags it leaves out, for the resources ``offered``."""
    argv = list(argv)
    given = {word.split("=", 1)[0] for word in argv if word.startswith("--")}
    for flag, resource in DEFAULT_PLACEMENT.items():
        if flag not in given and resource in offered:
            argv += [flag, json.dumps({resource: 1})]
    return argv


def _address(argv: Sequence[str]) -> str | None:
    for i, word in enumerate(argv):
        if word == "--ray_address" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--ray_address="):
            return word.split("=", 1)[1]
    return "auto" if running_cluster() else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if any(word in ("-h", "--help") for word in argv):
        from cluster.cli import main as cli_main  # noqa: PLC0415

        return cli_main(["run", *argv])
    address = _address(argv)
    try:
        connect(address)
    except ConnectionError as exc:
        log.error("%s", exc)
        return 1
    argv = with_cluster_defaults(argv, cluster_resources())
    where = "local Ray" if address in (None, "local") else address
    log.info("running on %s: reproducer run %s", where, " ".join(masked(argv)))
    from cluster.cli import main as cli_main  # noqa: PLC0415 - after Ray is up

    return cli_main(["run", *argv])


SECRET_FLAGS = ("--web_token",)


def masked(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret flags (``--web_token T``, ``--web_token=T``)
    replaced, for a log line."""
    out: list[str] = []
    hide = False
    for word in argv:
        if hide:
            out.append("***")
            hide = False
        elif word in SECRET_FLAGS:
            out.append(word)
            hide = True
        elif word.startswith(tuple(f"{flag}=" for flag in SECRET_FLAGS)):
            out.append(word.split("=", 1)[0] + "=***")
        else:
            out.append(word)
    return out


if __name__ == "__main__":
    sys.exit(main())
