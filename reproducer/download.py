"""Reading a chunk topic back into whole files, without analysis.

The simplest consumer of the data path: it reads every partition of a topic from the
beginning (no consumer group, nothing committed), decodes and reassembles, until the
expected number of files has finished. The upload round trip, the demo and the tests use
it; the Ray pipeline uses the same core pieces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reproducer.chunk import decode_value
from reproducer.config import KafkaConfig
from reproducer.errors import ChunkDecodeError, ReproducerError
from reproducer.kafka_log import logged
from reproducer.reassembly import (
    ChunkStatus,
    CompletedFile,
    FailureReason,
    FileFailure,
    Outcome,
    Reassembler,
)
from reproducer.topics import partitions_of

__all__ = ["DownloadReport", "download"]

log = logging.getLogger(__name__)


@dataclass
class DownloadReport:
    completed: list[CompletedFile] = field(default_factory=list)
    failed: list[FileFailure] = field(default_factory=list)
    superseded: list[FileFailure] = field(default_factory=list)
    poison: list[ChunkDecodeError] = field(default_factory=list)
    n_messages: int = 0
    n_bytes: int = 0
    seconds: float = 0.0


def download(
    config: KafkaConfig,
    topic: str,
    reassembler: Reassembler,
    *,
    n_files: int,
    timeout: float = 300.0,
    batch: int = 500,
) -> DownloadReport:
    """Read ``topic`` from the start until ``n_files`` files have completed or failed.

    Raises :class:`ReproducerError` if that does not happen within ``timeout`` seconds.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: PLC0415

    settings: dict[str, Any] = config.consumer_settings(group_id="create_new")
    settings.update({"enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer = Consumer(logged(settings))
    report = DownloadReport()
    start = time.monotonic()
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = start + timeout
        while len(report.completed) + len(report.failed) < n_files:
            if time.monotonic() > deadline:
                raise ReproducerError(
                    f"only {len(report.completed)} of {n_files} files finished from {topic} "
                    f"within {timeout:g} s ({report.n_messages} messages read)"
                )
            for message in consumer.consume(batch, 0.5):
                if message.error():
                    log.warning("consume error on %s: %s", topic, message.error())
                    continue
                _handle(message, reassembler, report)
            _record(reassembler.poll(), report)
        _record(reassembler.flush(), report)
    finally:
        consumer.close()
    report.seconds = time.monotonic() - start
    return report


def _handle(message: Any, reassembler: Reassembler, report: DownloadReport) -> None:
    value = message.value()
    report.n_messages += 1
    report.n_bytes += len(value or b"")
    try:
        chunk = decode_value(value)
    except ChunkDecodeError as exc:
        exc.at(message.topic(), message.partition(), message.offset())
        log.warning("%s", exc)
        report.poison.append(exc)
        return
    result = reassembler.add(chunk)
    if result.status is ChunkStatus.REJECTED:
        log.warning(
            "file=%s topic=%s[%d] offset=%d chunk rejected: %s",
            chunk.relative_path,
            message.topic(),
            message.partition(),
            message.offset(),
            result.reason,
        )
    _record(result.finished, report)


def _record(outcomes: Iterable[Outcome], report: DownloadReport) -> None:
    for outcome in outcomes:
        if isinstance(outcome, CompletedFile):
            report.completed.append(outcome)
        elif outcome.reason is FailureReason.SUPERSEDED:
            report.superseded.append(outcome)
        else:
            log.warning("file=%s failed: %s", outcome.relative_path, outcome.detail)
            report.failed.append(outcome)
