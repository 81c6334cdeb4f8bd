"""Which files already have committed results while their chunks may still be read again.

A file's chunks spread over every partition, and files finish out of order: a result can
be committed (exactly once: in a transaction) while some of its file's chunks still lie
above the committed offsets, because an older, slower file pins those partitions. A
restart reads those chunks again; without a record it would rebuild the file and produce
its result a second time. So each such file gets a record in a compacted topic of the
consumer group (``<group>.<topic>.reproducer-state``), written in the same transaction as its
result: its path, file hash, chunk count and mtime, the analyses done, and the highest
offset of its chunks in each partition (its *extent*). Files whose chunks all lie below
the transaction's offsets need no record (a restart never reads them again), and a record
whose extent falls below the committed offsets is removed by a tombstone in a later
transaction, so the topic stays as small as the window of unfinished files, and compaction
keeps it so on the broker.

On a start (or an in-process resume) the records are read back (``read_committed``) and
the reassembler treats the chunks of a recorded file as duplicates: it is not rebuilt,
analysed or produced again.

:class:`FileRecord` and :class:`FileState` are pure; :func:`read_state` and
:func:`ensure_state_topic` talk to the broker.

>>> r = FileRecord("a/b.h5", bytes(64), n_chunks=3, mtime=1.5, analyses=("sha",),
...                extent={0: 10, 1: 7})
>>> state = FileState()
>>> change = state.plan([r], committed={0: 5, 1: 8})  # chunk 10 of partition 0 still above
>>> [(key.endswith(b" a/b.h5"), value is not None) for key, value in change]
[(True, True)]
>>> state.plan([], committed={0: 11, 1: 8})[0][1] is None  # all below now: a tombstone
True
>>> len(state)
0
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from reproducer.errors import ReproducerError
from reproducer.topics import connection_only

__all__ = [
    "STATE_SUFFIX",
    "FileRecord",
    "FileState",
    "StateChange",
    "ensure_state_topic",
    "read_state",
    "state_topic",
]

log = logging.getLogger(__name__)

STATE_SUFFIX = ".reproducer-state"
_VERSION = 1

StateChange = list[tuple[bytes, bytes | None]]
"""Records to produce to the state topic: (key, value), a value of ``None`` a tombstone."""


def state_topic(group: str, topic: str) -> str:
    """The state topic of a consumer group reading a chunk topic (the records' extents are
    that topic's offsets): ``<group>.<topic>.reproducer-state``, with any character a
    topic name may not hold as ``_``, and a digest of the two for a name too long."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{group}.{topic}") + STATE_SUFFIX
    if len(name) <= _MAX_TOPIC_NAME:
        return name
    digest = hashlib.sha256(f"{group}\0{topic}".encode()).hexdigest()[:32]
    return (
        name[: _MAX_TOPIC_NAME - len(digest) - len(STATE_SUFFIX) - 1] + "." + digest + STATE_SUFFIX
    )


_MAX_TOPIC_NAME = 249


@dataclass(frozen=True)
class FileRecord:
    """One file whose results are committed, and where its chunks lie."""

    path: str  # relative path, POSIX
    file_hash: bytes
    n_chunks: int
    mtime: float
    analyses: tuple[str, ...]
    extent: dict[int, int] = field(default_factory=dict)  # partition -> highest offset

    @property
    def key(self) -> bytes:
        return f"{self.file_hash.hex()} {self.path}".encode()

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": _VERSION,
                "path": self.path,
                "sha512": self.file_hash.hex(),
                "n_chunks": self.n_chunks,
                "mtime": self.mtime,
                "analyses": list(self.analyses),
                "extent": {str(p): o for p, o in sorted(self.extent.items())},
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> FileRecord:
        """A record as :meth:`encode` wrote it; ``ValueError`` naming what is wrong."""
        try:
            fields = json.loads(value)
            return cls(
                path=str(fields["path"]),
                file_hash=bytes.fromhex(fields["sha512"]),
                n_chunks=int(fields["n_chunks"]),
                mtime=float(fields["mtime"]),
                analyses=tuple(str(a) for a in fields["analyses"]),
                extent={int(p): int(o) for p, o in fields["extent"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a state record: {exc!r}") from exc

    def below(self, committed: dict[int, int]) -> bool:
        """Whether every chunk of the file lies below the committed offsets (offsets are
        the next to read): then no restart reads any of them again."""
        return all(
            offset < committed.get(partition, -1) for partition, offset in self.extent.items()
        )

    def merged(self, other: FileRecord) -> FileRecord:
        """The same file recorded twice (sent again while its record lives): both extents."""
        extent = dict(self.extent)
        for partition, offset in other.extent.items():
            extent[partition] = max(offset, extent.get(partition, -1))
        analyses = tuple(dict.fromkeys((*self.analyses, *other.analyses)))
        return FileRecord(self.path, self.file_hash, self.n_chunks, self.mtime, analyses, extent)


class FileState:
    """The live records: files with committed results and chunks above the committed
    offsets. :meth:`plan` says what a transaction writes to keep it so."""

    def __init__(self, records: Iterable[FileRecord] = ()) -> None:
        self._live: dict[bytes, FileRecord] = {}
        for record in records:
            self._live[record.key] = record

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Any:
        return iter(self._live.values())

    def plan(
        self,
        finished: Iterable[FileRecord],
        committed: dict[int, int],
        on_removed: Callable[[FileRecord], None] | None = None,
    ) -> StateChange:
        """The state records of a transaction that carries the results of ``finished`` and
        commits offsets so that ``committed`` are the group's offsets after it: a record
        for each finished file with a chunk at or above them, a tombstone for each live
        record now wholly below them. Applied here at once (a transaction that does not
        commit ends the attempt, and the next one reads the topic back)."""
        change: StateChange = []
        for record in finished:
            known = self._live.get(record.key)
            if known is not None:
                record = known.merged(record)  # noqa: PLW2901
                if record == known and not record.below(committed):
                    continue  # it says so already
            if record.below(committed):
                if known is not None:
                    del self._live[record.key]
                    change.append((record.key, None))
                    if on_removed is not None:
                        on_removed(known)
                continue
            self._live[record.key] = record
            change.append((record.key, record.encode()))
        written = {key for key, _ in change}
        for key in [k for k, r in self._live.items() if k not in written and r.below(committed)]:
            removed = self._live.pop(key)
            change.append((key, None))
            if on_removed is not None:
                on_removed(removed)
        return change


def ensure_state_topic(settings: dict[str, Any], topic: str, *, timeout: float = 30.0) -> bool:
    """Create the compacted state topic if it does not exist; ``True`` if it was created.
    A broker that refuses (no right to create topics, say) is a clear error naming how to
    create it by hand. One that exists is not asked for again (a client without the right
    to create topics may use one made for it)."""
    from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # noqa: PLC0415

    from reproducer.errors import TopicUnavailable  # noqa: PLC0415
    from reproducer.kafka_log import logged  # noqa: PLC0415
    from reproducer.topics import partitions_of  # noqa: PLC0415

    admin = AdminClient(logged(connection_only(settings)))
    try:
        partitions_of(admin, topic, timeout=timeout)
        return False
    except TopicUnavailable as exc:
        if "does not exist" not in exc.reason:
            raise ReproducerError(f"the state {exc}") from exc
    new = NewTopic(
        topic, num_partitions=1, replication_factor=-1, config={"cleanup.policy": "compact"}
    )
    try:
        admin.create_topics([new], request_timeout=timeout)[topic].result(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise ReproducerError(
            f"cannot create the state topic {topic} ({exc}); create it with "
            "cleanup.policy=compact, or let this client create topics"
        ) from exc
    log.info("created the state topic %s (compacted)", topic)
    return True


def read_state(settings: dict[str, Any], topic: str, *, timeout: float = 60.0) -> list[FileRecord]:
    """Every live record of the state topic, as committed transactions left it (a key's
    last value; tombstones remove it). ``settings``: a consumer's; it reads by assignment,
    joins no group and commits nothing."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition  # noqa: PLC0415

    from reproducer.kafka_log import logged  # noqa: PLC0415
    from reproducer.topics import partitions_of  # noqa: PLC0415

    reader = {
        **connection_only(settings),
        "group.id": str(settings.get("group.id", "reproducer-state")),
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,  # the end of a short topic is told at once, not in 0.5 s
    }
    consumer = Consumer(logged(reader))
    live: dict[bytes, FileRecord] = {}
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() >= deadline:
                raise ReproducerError(
                    f"the state topic {topic} gave nothing for {timeout:g} s before its end"
                )
            # consume waits its whole timeout for fewer messages than it asks for: short,
            # so that a run's start does not wait for it (the records are few)
            messages = consumer.consume(500, 0.05)
            if messages:  # a deadline for progress, not for the whole (however large)
                deadline = time.monotonic() + timeout
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition() or 0)
                        continue
                    raise ReproducerError(f"cannot read the state topic {topic}: {error.str()}")
                at_end.discard(message.partition() or 0)
                key, value = message.key() or b"", message.value()
                if value is None:
                    live.pop(key, None)
                    continue
                try:
                    live[key] = FileRecord.decode(value)
                except ValueError as exc:
                    log.warning("state record %r of %s skipped: %s", key, topic, exc)
    finally:
        consumer.close()
    return list(live.values())
