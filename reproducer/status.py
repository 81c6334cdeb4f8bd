"""How far a pipeline's consumer group is behind, and what a running one is doing.

``reproducer status --config C --topic_name T --consumer_group_id G`` (or
:func:`pipeline_status`) reports, per partition of the chunk topic, the group's committed
offset, the end offset and the lag in messages and bytes; with ``--output_dir``, the files
in progress and the results listed in its LOGS folder; with ``--ray_address``, the live
progress of each pipeline of that group running on the Ray cluster (its ingest actor is
named ``ingest:<group>:<run id>`` in the ``ray-reproducer`` namespace, so that
``ray list actors`` and ``ray.get_actor`` find it too).
"""

from __future__ import annotations

import csv
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reproducer.chunk import LOGS_DIR
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.kafka_log import logged
from reproducer.telemetry import actors_line
from reproducer.topics import partitions_of

__all__ = [
    "NAMESPACE",
    "PartitionLag",
    "Status",
    "ingest_actor_name",
    "partition_lags",
    "pipeline_status",
    "running_pipelines",
]

NAMESPACE = "ray-reproducer"  # the Ray namespace of the pipelines' named actors


_INGEST = "ingest:"


def ingest_actor_name(group: str, run_id: str) -> str:
    return f"{_INGEST}{group}:{run_id}"


@dataclass
class PartitionLag:
    partition: int
    committed: int | None  # the group's next offset to read; None: nothing committed
    end: int  # the partition's end offset (high watermark)
    lag: int  # messages from the committed offset (or the start) to the end
    lag_bytes: int | None = None  # their keys and values, measured (or estimated)
    lag_bytes_estimated: bool = False  # measured on a part of the lag, scaled


@dataclass
class Status:
    topic: str
    group: str
    partitions: list[PartitionLag] = field(default_factory=list)
    in_progress: list[dict[str, str]] = field(default_factory=list)  # LOGS rows
    results_logged: dict[str, int] = field(default_factory=dict)  # results topic -> rows
    live: list[dict[str, Any]] = field(default_factory=list)  # running pipelines

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}

    def text(self) -> str:
        """For people: a table per partition, then the LOGS and the live pipelines."""
        lines = [f"topic {self.topic}, consumer group {self.group}"]
        lines.append(f"{'partition':>9} {'committed':>10} {'end':>10} {'lag':>8} {'lag bytes':>12}")
        for p in self.partitions:
            size = (
                "-"
                if p.lag_bytes is None
                else f"{'~' if p.lag_bytes_estimated else ''}{p.lag_bytes:,}"
            )
            committed = "-" if p.committed is None else str(p.committed)
            lines.append(f"{p.partition:>9} {committed:>10} {p.end:>10} {p.lag:>8} {size:>12}")
        total_bytes = sum(p.lag_bytes or 0 for p in self.partitions)
        lines.append(f"{'total':>9} {'':>10} {'':>10} {self.lag:>8} {total_bytes:>12,}")
        for topic, n in sorted(self.results_logged.items()):
            lines.append(f"LOGS: {n} results produced to {topic}")
        if self.in_progress:
            lines.append(f"LOGS: {len(self.in_progress)} files in progress")
            lines += [
                f"  {row.get('rel_filepath')}  {row.get('status')}  chunks {row.get('n_chunks')}"
                for row in self.in_progress[:20]
            ]
        for run in self.live:
            driver, ingest = run.get("driver", {}), run.get("ingest", {})
            lines.append(
                f"running: {run['actor']} on node {str(run.get('node'))[:8]}: "
                f"{driver.get('n_results', 0)} results, {driver.get('n_files_failed', 0)} "
                f"failed, {ingest.get('n_partial_files', 0)} files arriving, "
                f"{driver.get('n_in_analysis', 0)} in analysis, "
                f"{ingest.get('n_messages', 0)} messages read"
                + actors_line(driver.get("actors") or ())
            )
        return "\n".join(lines)


def pipeline_status(
    config: KafkaConfig,
    topic: str,
    group: str,
    *,
    output_dir: Path | None = None,
    ray_address: str | None = None,
    measure_seconds: float = 5.0,
    timeout: float = 30.0,
) -> Status:
    """The group's progress on ``topic`` (see the module's docstring). Reading the lag's
    bytes takes at most about ``measure_seconds``; beyond that they are estimated."""
    status = Status(topic, group)
    status.partitions = _lags(config, topic, group, measure_seconds, timeout)
    if output_dir is not None:
        status.in_progress, status.results_logged = _logs(output_dir / LOGS_DIR, topic, group)
    if ray_address is not None:
        status.live = running_pipelines(ray_address, group)
    return status


def partition_lags(
    config: KafkaConfig, topic: str, group: str, *, timeout: float = 30.0
) -> list[PartitionLag]:
    """Per partition of ``topic``: the group's committed offset, the end offset and the
    lag in messages (in bytes only where there is none: 0; the rest takes reading them, see
    :func:`pipeline_status`)."""
    return _lags(config, topic, group, 0.0, timeout)


def _lags(
    config: KafkaConfig, topic: str, group: str, measure_seconds: float, timeout: float
) -> list[PartitionLag]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415

    # A member of no group: asking for a group's commits does not join it.
    consumer = Consumer(logged(config.consumer_settings(group, **{"enable.auto.commit": False})))
    try:
        try:
            partitions = partitions_of(consumer, topic, timeout=timeout)
            committed = consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=timeout
            )
            lags = []
            for tp in committed:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=timeout
                )
                start = tp.offset if tp.offset >= 0 else None
                lags.append(
                    PartitionLag(tp.partition, start, high, max(0, high - max(start or 0, low)))
                )
        except KafkaException as exc:
            raise ReproducerError(f"cannot read the offsets of {topic}: {exc}") from exc
    finally:
        consumer.close()
    _measure_bytes(config, topic, lags, measure_seconds)
    return lags


def _measure_bytes(
    config: KafkaConfig, topic: str, lags: list[PartitionLag], seconds: float
) -> None:
    """Sum the sizes of the messages behind, reading them (not as the group: a reader of
    its own that commits nothing), for up to ``seconds``; scale what was read if cut short."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition  # noqa: PLC0415

    behind = [p for p in lags if p.lag > 0]
    for p in lags:
        if p.lag == 0:
            p.lag_bytes = 0
    if not behind or seconds <= 0:
        return
    consumer = Consumer(
        logged(
            config.consumer_settings(
                f"ray-reproducer-status-{uuid.uuid4()}",
                **{"enable.auto.commit": False, "enable.partition.eof": True},
            )
        )
    )
    sizes = {p.partition: 0 for p in behind}
    counts = dict.fromkeys(sizes, 0)
    ends = {p.partition: p.end for p in behind}
    try:
        consumer.assign(
            [
                TopicPartition(
                    topic, p.partition, p.committed if p.committed is not None else OFFSET_BEGINNING
                )
                for p in behind
            ]
        )
        open_partitions = set(sizes)
        deadline = time.monotonic() + seconds
        while open_partitions and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                partition = message.partition()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(partition)
                    continue
                offset = message.offset() or 0
                if partition not in open_partitions or offset >= ends[partition]:
                    open_partitions.discard(partition)
                    continue
                sizes[partition] += len(message.value() or b"") + len(message.key() or b"")
                counts[partition] += 1
                if offset + 1 >= ends[partition]:
                    open_partitions.discard(partition)
    finally:
        consumer.close()
    for p in behind:
        read = counts[p.partition]
        if read >= p.lag or p.partition not in open_partitions:
            p.lag_bytes = sizes[p.partition]
        elif read:
            p.lag_bytes = round(sizes[p.partition] / read * p.lag)
            p.lag_bytes_estimated = True


def _logs(logs: Path, topic: str, group: str) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The in-progress rows of this topic and group, and how many results each results
    CSV lists (the reference's LOGS files, ``;``-separated)."""
    in_progress: list[dict[str, str]] = []
    path = logs / f"consuming_from_{topic}_in_progress_by_{group}.csv"
    if path.is_file():
        in_progress = _rows(path)
    results = {
        p.name.removeprefix("results_produced_to_").removesuffix(".csv"): len(_rows(p))
        for p in sorted(logs.glob("results_produced_to_*.csv"))
    }
    return in_progress, results


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def running_pipelines(address: str | None, group: str | None = None) -> list[dict[str, Any]]:
    """The progress of the running pipelines of ``group`` (of every group: ``None``) on
    the Ray cluster at ``address`` (joined for this, as a driver of its own; ``None``:
    the cluster this process has joined already). Each: ``actor`` (the ingest actor's
    name), ``group``, ``topic``, ``node``, ``started``, ``driver`` (the run's counts as
    its driver last noted them) and ``ingest`` (the ingest actor's own)."""
    import logging  # noqa: PLC0415
    import sys  # noqa: PLC0415

    if address is None:  # this process's own connection, if it has one (never a new one)
        joined = sys.modules.get("ray")
        if joined is None or not joined.is_initialized():
            return []
    # A local instance (a pipeline's own) authenticates clients with this machine's token
    # (Ray's default for new local instances): the client must send it, which Ray decides
    # when it is imported.
    elif (Path.home() / ".ray" / "auth_token").is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray  # noqa: PLC0415

    from reproducer.ray_launch import running_cluster  # noqa: PLC0415

    if not ray.is_initialized():
        assert address is not None
        if address == "auto" and running_cluster() is None:
            raise ReproducerError(
                "--ray_address auto: no Ray cluster was started on this machine with `ray "
                "start`; a pipeline that started its own local Ray logs its address"
            )
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise ReproducerError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    prefix = ingest_actor_name(group, "") if group is not None else _INGEST
    found = []
    for entry in _named_actors():
        if entry.get("namespace") != NAMESPACE or not entry["name"].startswith(prefix):
            continue
        try:
            actor = ray.get_actor(entry["name"], namespace=NAMESPACE)
            progress: dict[str, Any] = ray.get(actor.progress.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - it ended while we asked: not running any more
            continue
        found.append(
            {
                "actor": entry["name"],
                "group": entry["name"].removeprefix(_INGEST).rpartition(":")[0],
                **progress,
            }
        )
    return found


def _named_actors() -> Iterable[dict[str, str]]:
    from ray.util import list_named_actors  # noqa: PLC0415

    return list_named_actors(all_namespaces=True)  # type: ignore[no-any-return]
