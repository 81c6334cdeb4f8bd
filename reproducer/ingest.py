"""The ingest loop: the only consumer-group member; chunks in, whole files out.

:class:`Ingest` is a plain class (no Ray) that owns the Kafka consumer, the
:class:`~reproducer.reassembly.Reassembler` and the :class:`~reproducer.offsets.OffsetTracker`.
It never blocks ``consume``: when too many files are in flight or too much memory is held,
it pauses its partitions and keeps polling, so the group never evicts it. The Ray actor in
:mod:`reproducer.actors` runs :meth:`Ingest.step` in a thread and hands files on.

The commit protocol, at least once (the driver does steps 3-5):

1. every consumed message is recorded against the file it belongs to (or none);
2. a completed file is handed on (its bytes go on at the driver's next take) and counts
   as in flight;
3. an analysis actor computes its result;
4. the producer actor produces it and sees the broker's acknowledgement;
5. :meth:`Ingest.finish` marks the file finished (also for failed, expired, poison files);
6. :meth:`Ingest.step` commits, per partition, the offset below which everything is finished.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from reproducer._partial import Generation
from reproducer._storage import Mode, SharedFolder, remove_abandoned, shared_folder
from reproducer.chunk import decode_value
from reproducer.delivery import consumer_error
from reproducer.errors import (
    ChunkDecodeError,
    OutputUnavailable,
    ReproducerError,
    RunInterrupted,
    TopicUnavailable,
)
from reproducer.kafka_log import logged
from reproducer.logs import InProgressLog, InProgressRow
from reproducer.offsets import OffsetTracker
from reproducer.reassembly import (
    ChunkStatus,
    CompletedFile,
    FailureReason,
    FileFailure,
    Outcome,
    Reassembler,
)
from reproducer.results import SCHEMA_VERSION, strict_json
from reproducer.state import FileRecord, FileState, StateChange, ensure_state_topic, read_state
from reproducer.topics import connection_only, partitions_of

__all__ = ["CommitPoint", "Ingest", "IngestSettings", "IngestStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    topic: str
    consumer: dict[str, Any]
    mode: Mode = "memory"
    output_dir: Path | None = None
    download_regex: str | None = None
    max_in_flight: int = 8
    max_held_bytes: int = 2 << 30
    file_idle_timeout: float | None = 3600.0
    commit_interval: float = 1.0
    batch: int = 200
    dead_letter_topic: str | None = None
    dead_letter_producer: dict[str, Any] = field(default_factory=dict)
    logs_dir: Path | None = None  # for the in-progress CSV
    logs_interval: float = 5.0
    # Each chunk's SHA-512 as it arrives (the reference's way). Off, the whole-file SHA-512
    # still covers every byte, and the chunk hashes name the corrupt chunks when it fails.
    check_chunk_hashes: bool = False
    hash_threads: int = 2  # threads hashing and writing files (one file each at a time)
    # Exactly-once: offsets are committed by the producer's transaction, never by the
    # consumer; the driver asks for them with :meth:`Ingest.commit_point`.
    transactional: bool = False
    # A replay: every partition starts at its first message ("beginning") or at the first
    # produced at or after a Unix time, on its first assignment in this run (later ones,
    # after a rebalance, resume from what this run committed).
    start_from: str | float | None = None
    # The group's state topic (see reproducer.state), read back at the start (files
    # recorded there with every one of ``analyses`` done are not rebuilt, unless not
    # ``remember_state``) and kept by the records each commit writes: exactly once in the
    # transaction (the commit point says which), at least once after the offsets commit.
    state_topic: str | None = None
    analyses: tuple[str, ...] = ()
    remember_state: bool = True
    # Files analysed at once (every analysis actor's calls together). Each may hold a copy
    # of its file besides the one in flight (a ported reproducer's ``bytestring``), so in
    # memory mode the budget keeps room for that many of the largest files in flight.
    analysis_slots: int = 0
    # Memory mode: larger files are rebuilt in a folder in shared memory and handed to the
    # analysis actors by path (see reproducer._storage.SharedStore), if the machine has
    # one with room for the budget; else, and when False, in anonymous memory, sent on
    # through the object store.
    shared_memory: bool = True
    # Bytes of that shared memory that others may take beside the files: the node's object
    # store, which Ray keeps there too when it has room (its pages taken as it fills).
    shared_memory_beside: int = 0


@dataclass(frozen=True)
class CommitPoint:
    """What a transaction commits besides the results of the files it carries: the
    offsets now safe (below every file not carried or failed), the group's metadata, and
    the state records that keep a restart from producing the carried files again (those
    with a chunk at or above the offsets), with tombstones for records no longer needed."""

    offsets: dict[int, int]
    group_metadata: bytes
    covered: list[int]
    state: StateChange = field(default_factory=list)


@dataclass
class IngestStats:
    n_messages: int = 0
    n_bytes: int = 0
    n_files_completed: int = 0
    n_files_failed: int = 0
    n_poison: int = 0
    n_skipped: int = 0
    held_bytes: int = 0
    in_flight: int = 0
    paused: bool = False
    assigned: bool = False
    n_partial_files: int = 0
    peak_held_bytes: int = 0
    n_pauses: int = 0  # times every partition was paused (the in-flight limits)
    n_rebalances: int = 0  # times partitions were revoked or lost (and read again)
    catching_up: bool = False  # over budget with partial files: reading the oldest partition
    commit_lag: int = 0  # messages consumed and not committed yet
    topic_lag: int = 0  # messages in the assigned partitions not read yet (cached ends)
    committed: dict[int, int] = field(default_factory=dict)


class Ingest:
    """Consumes a chunk topic and turns it into completed files.

    ``hand_off(file, stats)`` is called for each completed file (on the loop thread) and
    ``on_failure(failure)`` for each file that will never complete.
    """

    def __init__(
        self,
        settings: IngestSettings,
        hand_off: Callable[[CompletedFile], None],
        on_failure: Callable[[FileFailure], None] = lambda failure: None,
    ) -> None:
        from confluent_kafka import Consumer  # noqa: PLC0415

        self.settings = settings
        self.stats = IngestStats()
        self._hand_off = hand_off
        self._on_failure = on_failure
        self._regex = re.compile(settings.download_regex) if settings.download_regex else None
        # wall clock: partial files' first/last chunk times go to the in-progress CSV
        # Idleness counts only while every assigned partition is being read: paused (files
        # in flight at the limits, or catching up on one partition), a file's next chunk
        # may wait in a partition the ingest is not reading, through no fault of the file.
        self._reading_s = 0.0  # seconds spent reading every assigned partition, until...
        self._reading_since: float | None = None  # ... this (monotonic), while reading
        self._shared: SharedFolder | None = None
        if settings.mode == "memory" and settings.shared_memory:
            room = settings.max_held_bytes + settings.shared_memory_beside
            self._shared = shared_folder(room=room)
            if self._shared is None:
                log.info(
                    "larger files go through the object store: no folder in shared memory "
                    "with room for the budget and the object store (%d MiB)",
                    room >> 20,
                )
        self._reassembler = Reassembler(
            settings.mode,
            settings.output_dir,
            workers=settings.hash_threads,
            clock=time.time,
            idle_clock=self._reading_clock,
            shared=self.shared_folder,
        )
        self._tracker = OffsetTracker()
        self._finished: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, CompletedFile] = {}
        self._copies_counted: tuple[tuple[int, int, int], int] = ((0, 0, 0), 0)  # _copies
        self._in_flight_bytes = 0  # their sizes, kept as a total (summed per step, it cost
        # O(files in flight) per message)
        self._recent_failures: deque[FileFailure] = deque(maxlen=1000)
        self._in_progress = (
            InProgressLog(settings.logs_dir, settings.topic, str(settings.consumer.get("group.id")))
            if settings.logs_dir is not None
            else None
        )
        self._last_log = 0.0
        self._last_commit = time.monotonic()
        self._commit_requests: queue.SimpleQueue[
            tuple[dict[int, tuple[str, ...]], Future[CommitPoint]]
        ] = queue.SimpleQueue()
        self._confirmed: queue.SimpleQueue[dict[int, int]] = queue.SimpleQueue()
        self._assigned: set[int] = set()
        self._paused: set[int] = set()
        self._last_timestamp: dict[int, int] = {}  # partition -> last message's timestamp
        self._last_message_at: dict[int, float] = {}  # partition -> when (monotonic)
        self._behind: tuple[int, float] | None = None  # catching up on: (partition, since)
        # partition -> position (None: not read yet) where, chosen, it gave nothing
        self._stalled: dict[int, int | None] = {}
        self._lost_partitions: str = ""
        self._interrupted = False  # exactly once, partitions taken away: resumable
        self._closing = False
        consumer_settings = {"enable.auto.commit": False, **settings.consumer}
        consumer_settings["enable.auto.commit"] = False
        self._consumer = Consumer(logged(consumer_settings))
        try:
            partitions = partitions_of(self._consumer, settings.topic)
        except TopicUnavailable:
            self._consumer.close()
            raise
        self._n_partitions = len(partitions)
        self._start_offsets = self._replay_offsets(partitions)
        try:
            self._dead_letters = _DeadLetters(settings) if settings.dead_letter_topic else None
        except Exception:
            self._consumer.close()
            raise
        self._state: FileState | None = None  # read by prepare()
        # the state topic is made now, while the other actors start (read by prepare():
        # exactly once, only after the producer fenced an earlier run)
        self._state_made: bool | ReproducerError | None = None
        if settings.state_topic:
            try:
                self._state_made = ensure_state_topic(settings.consumer, settings.state_topic)
            except ReproducerError as exc:  # said by prepare(), as a warning or an error
                self._state_made = exc
        # at least once: the files finished since the last commit (their records, if their
        # chunks lie above it), and the producer that writes the records after it
        self._unrecorded: list[FileRecord] = []
        self._state_writer: _StateWriter | None = None
        # copies of files read as duplicates (see _cover): the files not carried yet, by
        # (path, file hash), the extents of their copies, and records for carried ones
        self._uncarried: dict[tuple[str, bytes], int] = {}
        self._key_of: dict[int, tuple[str, bytes]] = {}
        self._dup_extent: dict[tuple[str, bytes], dict[int, int]] = {}
        self._dup_records: list[FileRecord] = []
        self._stats_lock = threading.Lock()
        self._published = IngestStats()
        # file id -> its dead-letter reports not acknowledged yet; files finished meanwhile
        self._reports_pending: dict[int, int] = {}
        self._finish_deferred: set[int] = set()
        self._reports_lock = threading.Lock()  # the driver's calls add, the loop removes
        self._subscribed = False  # the group is joined by the first step, not before
        self._topic_checked = time.monotonic()
        self._topic_missing_since: float | None = None

    def prepare(self) -> None:
        """Read the group's state records, before the first step. Exactly once, only once
        the producer is ready: its ``init_transactions`` completed or aborted what an
        earlier run left open, so the records read (``read_committed``) are exactly those
        of the committed offsets. At least once, a state topic that cannot be made or read
        is a warning: without it a restart may produce some results again."""
        if not self.settings.state_topic or self._state is not None:
            return
        try:
            self._state = self._read_state()
        except ReproducerError as exc:
            if self.settings.transactional:
                raise
            log.warning(
                "%s; without it, a restart may produce again the results of files whose "
                "chunks lie above the committed offsets",
                exc,
            )
            return
        if not self.settings.transactional:
            self._state_writer = _StateWriter(self.settings)

    # ------------------------------------------------------------------ thread-safe
    def finish(self, file_id: int) -> None:
        """The file's result was acknowledged, or it failed: its offsets may be committed."""
        self._finished.put(file_id)

    def commit_point(self, done: dict[int, tuple[str, ...]] | None = None) -> Future[CommitPoint]:
        """Exactly once: mark ``done`` (file id -> the analyses whose results the
        transaction carries) finished, and answer the offsets now safe (disk files made
        durable), the consumer group's metadata and the state records to write with them;
        answered by the loop thread."""
        request: Future[CommitPoint] = Future()
        self._commit_requests.put((dict(done or {}), request))
        return request

    def confirm(self, offsets: dict[int, int]) -> None:
        """A transaction with these offsets committed."""
        self._confirmed.put(offsets)

    # ------------------------------------------------------------------ loop thread
    def step(self, timeout: float = 0.1) -> None:
        """One pass: consume a batch, feed the reassembler, apply finishes, maybe commit."""
        if self._lost_partitions:
            if self._interrupted:
                raise RunInterrupted(self._lost_partitions)
            # fewer partitions assigned: was the topic deleted? (asked twice, 2 s apart)
            self._check_topic()
            if self._topic_missing_since is not None:
                time.sleep(2.0)
                self._check_topic()
            raise ReproducerError(self._lost_partitions)
        if not self._subscribed:
            self._subscribed = True
            self._consumer.subscribe(
                [self.settings.topic],
                on_assign=self._assigned_cb,
                on_revoke=self._revoked_cb,
                on_lost=self._lost_cb,
            )
        # What is there now, without waiting for a whole batch (consume waits for all of
        # it or the timeout: a trickle of files would wait the timeout each); else wait for
        # one message, shortly while files are being finished on the hash threads.
        messages = self._consumer.consume(self._batch_size(), 0)
        if not messages:
            wait = min(timeout, 0.005) if self._reassembler.n_completing else timeout
            messages = self._consumer.consume(1, wait)
        # Each message's bytes are freed once its chunk is stored (and hashed), not with the
        # batch: a batch of up to half the budget was held twice, as messages and as files.
        messages.reverse()
        while messages:
            message = messages.pop()
            if message.error():
                self._consume_error(message.error())
                continue
            self._handle(message)
            # A file's first chunk may take the size the chunk claims for it: a flood of
            # such claims is given up on before it grows past the budget, not a step later.
            if self._reassembler.claimed_since_shed > _CLAIMS_CHECKED:
                for failure in self._reassembler.shed(self.settings.max_held_bytes):
                    self._failed(failure)
        self._outcomes(self._reassembler.poll())
        if self._dead_letters is not None:
            self._dead_lettered(self._dead_letters.delivered())
        if time.monotonic() - self._topic_checked >= _TOPIC_CHECK_S:
            # librdkafka says nothing of a subscribed topic deleted: it would poll on
            self._check_topic()
            if self._shared is not None:  # an ingest killed since this one started (a
                remove_abandoned(self._shared.path.parent)  # resumed run's, say)
        if self.settings.file_idle_timeout is not None:
            for failure in self._reassembler.expire(self.settings.file_idle_timeout):
                self._failed(failure)
        self._apply_finished()
        for failure in self._reassembler.shed(self.settings.max_held_bytes):
            self._failed(failure)
        self._backpressure()
        self._update_reading()
        if self.settings.transactional:
            self._transactional_commits()
        elif time.monotonic() - self._last_commit >= self.settings.commit_interval:
            self.commit()
        if (
            self._in_progress is not None
            and time.monotonic() - self._last_log >= self.settings.logs_interval
        ):
            self._write_in_progress()
        self._publish()

    def _consume_error(self, error: Any) -> None:
        """A consumer error: logged if the client retries it; one no retry mends (an
        authorization refused, a fatal error, the topic deleted) stops the run, saying so,
        rather than polling on forever."""
        verdict = consumer_error(error)
        if verdict == "stop":
            raise ReproducerError(
                f"the consumer cannot read {self.settings.topic}: {error.str()}; nothing is "
                "committed past what was not finished"
            )
        if verdict == "topic":
            self._check_topic()
        log.warning("consume error on %s: %s", self.settings.topic, error.str())

    def _check_topic(self) -> None:
        """Stop, saying so, if the chunk topic no longer exists or changed its partitions
        (a metadata request: every few seconds, and after a consumer error or a short
        assignment)."""
        now = self._topic_checked = time.monotonic()
        try:
            partitions = partitions_of(self._consumer, self.settings.topic, timeout=10)
        except TopicUnavailable as exc:
            if "does not exist" not in exc.reason and "no partitions" not in exc.reason:
                return  # the broker did not answer: the client retries
            # said twice, seconds apart: not a broker that restarted and is catching up
            if self._topic_missing_since is None:
                self._topic_missing_since = now
                self._topic_checked = now - _TOPIC_CHECK_S + 2.0  # again in 2 s
                return
            if now - self._topic_missing_since < 2.0:
                return
            raise ReproducerError(
                f"the chunk {exc}: it was deleted while the run read it; nothing is "
                "committed past what was not finished"
            ) from exc
        self._topic_missing_since = None
        if len(partitions) != self._n_partitions:
            raise ReproducerError(
                f"the chunk topic {self.settings.topic} now has {len(partitions)} partitions, "
                f"not the {self._n_partitions} it had at the start: restart the run"
            )

    def _write_in_progress(self) -> None:
        assert self._in_progress is not None
        self._last_log = time.monotonic()
        rows = [
            InProgressRow(
                p.relative_path.name,
                p.relative_path.as_posix(),
                "in_progress",
                f"{p.n_chunks_received}/{p.n_total_chunks}",
                p.first_seen,
                p.last_seen,
            )
            for p in self._reassembler.partial_files()
        ]
        rows += [
            InProgressRow(
                f.filename,
                f.relative_path.as_posix(),
                "awaiting_result",
                f"{f.n_chunks}/{f.n_chunks}",
                f.first_seen,
                f.first_seen,
            )
            for f in self._in_flight.values()
        ]
        rows += [
            InProgressRow(
                f.relative_path.name,
                f.relative_path.as_posix(),
                f"failed: {f.reason.value}",
                f"{f.n_chunks_received}/{f.n_total_chunks}",
                0.0,
                0.0,
            )
            for f in self._recent_failures
        ]
        try:
            self._in_progress.write(rows)
        except OSError as exc:
            log.warning("cannot write %s: %s", self._in_progress.path, exc)

    def commit(self) -> None:
        """Commit what is safe (after making finished disk files durable).

        A failed commit (a rebalance, a coordinator move) is logged and retried next time:
        offsets count as committed only once the broker took them.
        """
        from confluent_kafka import KafkaException, TopicPartition  # noqa: PLC0415

        self._outcomes(self._reassembler.flush())
        self._apply_finished()
        self._last_commit = time.monotonic()
        moved = self._tracker.advanced()
        if moved:
            offsets = [TopicPartition(self.settings.topic, p, o) for p, o in moved.items()]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                if exc.args and consumer_error(exc.args[0]) == "topic":
                    self._check_topic()
                log.warning("commit of %s failed, will retry: %s", moved, exc)
                return
            self._tracker.confirm(moved)
            self.stats.committed.update(moved)
            log.debug("committed %s", moved)
        if self._state_writer is not None and self._state is not None:
            # after the commit: records for the files it could not pass, tombstones for
            # those it now passes (a crash before they are written costs a duplicate)
            records, self._unrecorded, self._dup_records = (
                [*self._unrecorded, *self._dup_records],
                [],
                [],
            )
            change = self._state.plan(records, self._tracker.committed, self._forget)
            self._state_writer.write(change)

    def _transactional_commits(self) -> None:
        for moved in _take_all(self._confirmed):
            self._tracker.confirm(moved)
            self.stats.committed.update(moved)
        for done, request in _take_all(self._commit_requests):
            try:
                self._outcomes(self._reassembler.flush())
                records = [self._record(file_id, analyses) for file_id, analyses in done.items()]
                for file_id in done:
                    self._finished.put(file_id)
                self._apply_finished()
                offsets = self._tracker.advanced()
                state: StateChange = []
                if self._state is not None:
                    after = {**self._tracker.committed, **offsets}
                    carried = [r for r in records if r is not None]
                    carried += self._dup_records
                    self._dup_records = []
                    state = self._state.plan(carried, after, self._forget)
                metadata = self._consumer.consumer_group_metadata()
                request.set_result(CommitPoint(offsets, metadata, list(done), state))
            except Exception as exc:  # noqa: BLE001 - the asker raises it
                request.set_exception(exc)

    def _record(self, file_id: int, analyses: tuple[str, ...]) -> FileRecord | None:
        """The state record of a file whose results a transaction carries: where its
        chunks lie (taken before its messages are released)."""
        done = self._in_flight.get(file_id)
        if done is None:
            return None
        extent = self._tracker.extent(file_id)
        for partition, offset in self._carried(file_id).items():  # copies of it read
            extent[partition] = max(offset, extent.get(partition, -1))
        return FileRecord(
            done.relative_path.as_posix(),
            done.file_hash,
            done.n_chunks,
            done.file_mtime,
            tuple(analyses),
            extent,
        )

    def _remember_recorded(self, records: Iterable[FileRecord]) -> int:
        """Have the reassembler take the chunks of recorded files for duplicates (those
        with every analysis of this run done); returns how many."""
        if not self.settings.remember_state:
            return 0
        wanted, seeded = set(self.settings.analyses), 0
        for record in records:
            if wanted <= set(record.analyses):
                self._reassembler.remember(
                    PurePosixPath(record.path),
                    Generation(record.file_hash, record.n_chunks, record.mtime),
                )
                seeded += 1
        return seeded

    def _forget(self, record: FileRecord) -> None:
        """A record is removed: the offsets passed all of its file's chunks."""
        self._reassembler.forget(PurePosixPath(record.path), record.file_hash)

    def _read_state(self) -> FileState:
        """Exactly once, at the start: the files the group's earlier transactions
        committed results for whose chunks lie above the committed offsets. Their chunks,
        read again, are duplicates (if every analysis of this run is among theirs)."""
        topic = self.settings.state_topic
        assert topic is not None
        created = self._state_made  # made by the constructor
        if isinstance(created, ReproducerError):
            raise created
        assert created is not None
        records = [] if created else read_state(self.settings.consumer, topic)
        seeded = self._remember_recorded(records)
        if records:
            log.info(
                "%d files have committed results with chunks still to be read (%s): "
                "%d of them are not rebuilt",
                len(records),
                topic,
                seeded,
            )
        return FileState(records)

    def close(self) -> None:
        self._closing = True
        try:
            if self._dead_letters is not None:
                self._dead_lettered(self._dead_letters.delivered(flush=True), closing=True)
            if self.settings.transactional:
                self._transactional_commits()
            else:
                self.commit()
            if self._in_progress is not None:
                self._write_in_progress()
            self._publish()  # the last commit's offsets, for the run's summary
        finally:
            try:
                self._reassembler.close()
                self._consumer.close()
                if self._state_writer is not None:
                    self._state_writer.close()
            finally:
                if self._shared is not None:  # the files still in flight with it
                    self._shared.close()

    @property
    def shared_folder(self) -> Path | None:
        """Memory mode: the folder in shared memory where larger files are rebuilt."""
        return self._shared.path if self._shared is not None else None

    def snapshot(self) -> IngestStats:
        """The stats as of the end of the last step (safe from any thread)."""
        with self._stats_lock:
            return self._published

    def _topic_lag(self) -> int:
        """Messages not read yet in the assigned partitions, by the ends the last fetches
        told (no request to the broker; a partition paused for the budget keeps its last)."""
        from confluent_kafka import TopicPartition  # noqa: PLC0415

        lag = 0
        for partition in self._assigned:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.settings.topic, partition), cached=True
            )
            position = self._tracker.position(partition)
            if position is None:  # nothing read yet: from its commit, else its start
                position = self.stats.committed.get(partition, low)
            if position is not None and 0 <= position < high:
                lag += high - position
        return lag

    def _publish(self) -> None:
        self.stats.n_partial_files = len(self._reassembler)
        self.stats.commit_lag = self._tracker.lag()
        self.stats.topic_lag = self._topic_lag()
        self.stats.held_bytes = self._reassembler.held_bytes
        self.stats.in_flight = len(self._in_flight)
        copy = IngestStats(**{**self.stats.__dict__, "committed": dict(self.stats.committed)})
        with self._stats_lock:
            self._published = copy

    # ------------------------------------------------------------------ internals
    def _handle(self, message: Any) -> None:
        value = message.value()
        partition, offset = message.partition(), message.offset()
        self._last_timestamp[partition] = message.timestamp()[1]
        self._last_message_at[partition] = time.monotonic()
        self.stats.n_messages += 1
        self.stats.n_bytes += len(value or b"")
        try:
            chunk = decode_value(
                value, verify_hash=self.settings.check_chunk_hashes, zero_copy=True
            )
        except ChunkDecodeError as exc:
            exc.at(message.topic(), partition, offset)
            log.warning("poison message skipped: %s", exc)
            self.stats.n_poison += 1
            poison_id = None
            if self._dead_letters is not None:  # the offset is released once the copy is acked
                poison_id = self._dead_letters.send(message.key(), value, str(exc))
            self._tracker.record(partition, offset, poison_id)
            return
        if self._regex is not None and not self._regex.match(chunk.relative_path.as_posix()):
            self.stats.n_skipped += 1
            self._tracker.record(partition, offset, None)
            return
        result = self._reassembler.add(chunk)
        file_id = result.file_id
        if result.reason:
            log.warning(
                "file=%s topic=%s[%d] offset=%d chunk %s: %s",
                chunk.relative_path,
                message.topic(),
                partition,
                offset,
                result.status.value,
                result.reason,
            )
        if result.status in _SKIPPED and self._dead_letters is not None:
            # a copy, as for poison: its offset is released once the copy is acknowledged
            file_id = self._dead_letters.send(
                message.key(),
                value,
                f"chunk {result.status.value} ({chunk.relative_path} chunk {chunk.chunk_i}"
                f"/{chunk.n_total_chunks} at {message.topic()}[{partition}]@{offset}): "
                f"{result.reason or 'skipped'}",
            )
        self._tracker.record(partition, offset, file_id)
        if self._state is not None:
            self._cover(chunk, result, partition, offset)
        self._outcomes(result.finished)

    def _cover(self, chunk: Any, result: Any, partition: int, offset: int) -> None:
        """Keep the state records covering every copy of a file read: a chunk that is a
        duplicate (a file sent again whole, say) is released at once, and once the offsets
        passed the file, a restart reading that copy again would rebuild it and produce
        its result again. A duplicate of a file not carried yet widens the extent its
        record will have; of one carried (its results committed, or going into the next
        transaction), it makes a record of its own for the next commit."""
        key = (chunk.relative_path.as_posix(), chunk.file_hash)
        if result.file_id is not None and result.status is not ChunkStatus.DUPLICATE:
            if self._uncarried.get(key) != result.file_id:
                self._uncarried[key] = result.file_id
                self._key_of[result.file_id] = key
            return
        if result.status is not ChunkStatus.DUPLICATE:
            return
        if key in self._uncarried:
            extent = self._dup_extent.setdefault(key, {})
            extent[partition] = max(offset, extent.get(partition, -1))
            return
        self._dup_records.append(
            FileRecord(
                key[0],
                chunk.file_hash,
                chunk.n_total_chunks,
                chunk.file_mtime,
                tuple(self.settings.analyses),
                {partition: offset},
            )
        )

    def _carried(self, file_id: int) -> dict[int, int]:
        """A file's results are carried (or it failed): no longer one to widen; the extent
        of the duplicates of it read meanwhile."""
        key = self._key_of.pop(file_id, None)
        if key is None:
            return {}
        if self._uncarried.get(key) == file_id:
            del self._uncarried[key]
        return self._dup_extent.pop(key, {})

    def _outcomes(self, outcomes: list[Outcome] | tuple[Outcome, ...]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, CompletedFile):
                self.stats.n_files_completed += 1
                self._hand_off(outcome)
                # Handed off (the ingest actor sends the bytes on at the driver's next take,
                # or they are on disk): not kept here until the acknowledgement, so their
                # memory is reused for the next file.
                self._in_flight[outcome.file_id] = dataclasses.replace(outcome, buffer=None)
                self._in_flight_bytes += outcome.size
            else:
                self._failed(outcome)

    def _failed(self, failure: FileFailure) -> None:
        if failure.reason is FailureReason.OUTPUT_UNAVAILABLE:
            # Not the file's fault: recorded and committed past, it would be lost. The run
            # stops here instead; its chunks stay uncommitted for a restart.
            raise OutputUnavailable(failure.relative_path, failure.detail)
        self.stats.n_files_failed += 1
        self._recent_failures.append(failure)
        log.warning(
            "file=%s failed (%s): %s", failure.relative_path, failure.reason.value, failure.detail
        )
        self._carried(failure.file_id)
        if self._dead_letters is not None:  # finished once its report is acknowledged
            self._dead_letters.send_failure(failure)
        else:
            self._tracker.finish(failure.file_id)
        self._on_failure(failure)

    def _dead_lettered(self, delivered: tuple[list[int], list[str]], closing: bool = False) -> None:
        """Copies and reports the dead-letter topic acknowledged: what they stand for is
        finished (offsets of poison and skipped chunks, failed files, files whose analysis
        failed). One that was not delivered stops the run, nothing committed past it."""
        ids, undelivered = delivered
        for owner in ids:
            with self._reports_lock:
                reported = owner in self._reports_pending
                if reported:
                    self._reports_pending[owner] -= 1
                    if self._reports_pending[owner] == 0:
                        del self._reports_pending[owner]
                        if owner in self._finish_deferred:
                            self._finish_deferred.discard(owner)
                            self._finished.put(owner)
            if not reported:
                self._tracker.finish(owner)
        if undelivered:
            why = (
                f"{len(undelivered)} dead-letter copies or reports were not delivered to "
                f"{self.settings.dead_letter_topic} ({undelivered[0]}); nothing is committed "
                "past them, and a restart sends them again"
            )
            if closing:
                log.error("%s", why)
                return
            raise ReproducerError(why)

    def _apply_finished(self) -> None:
        for file_id in _take_all(self._finished):
            with self._reports_lock:
                if file_id in self._reports_pending:  # finished once its report is acked
                    self._finish_deferred.add(file_id)
                    continue
            if self._state_writer is not None and file_id in self._in_flight:
                record = self._record(file_id, self.settings.analyses)
                if record is not None:
                    self._unrecorded.append(record)
            done = self._in_flight.pop(file_id, None)
            if done is not None:
                self._in_flight_bytes -= done.size
                if done.shared is not None:  # its analyses are done: its memory is freed
                    done.shared.unlink(missing_ok=True)
            self._tracker.finish(file_id)

    def _held(self) -> int:
        """Bytes of partial files and of completed files not finished yet, and room for the
        copies their analyses may make (see :meth:`_copies`)."""
        held = self._reassembler.held_bytes + self._in_flight_bytes
        held += self._copies(held)
        self.stats.peak_held_bytes = max(self.stats.peak_held_bytes, held)
        return held

    def _copies(self, held: int) -> int:
        """Room for the copies the analyses may hold: one per analysis slot, of the largest
        files in flight (as many times as analyses run on a file). Not in disk mode, where
        the files in flight count in full though they are on disk.

        Counted only when it could matter: it is at most (analyses) x the bytes in
        flight, so with ``held`` under an eighth of the budget over that, every threshold
        of :meth:`_backpressure` (a quarter of the budget and up) stays out of reach, and
        thousands of small files in flight cost no sort per step."""
        slots, n = self.settings.analysis_slots, max(len(self.settings.analyses), 1)
        if not slots or not self._in_flight or self.settings.mode == "disk":
            return 0
        if held * (1 + n) < self.settings.max_held_bytes // 4:
            return 0
        # the same files in flight as at the last count (their number and total bytes, the
        # finished count telling apart a file that replaced another of the same size)
        key = (len(self._in_flight), self._in_flight_bytes, self.stats.n_files_completed)
        if self._copies_counted[0] != key:
            largest = heapq.nlargest(slots, (f.size for f in self._in_flight.values()))
            self._copies_counted = (key, sum(sorted(largest * n, reverse=True)[:slots]))
        return self._copies_counted[1]

    def _batch_size(self) -> int:
        """Messages to take now: no more than half the memory budget has room for. Chunks
        read ahead in one partition start partial files whose other chunks are in the
        others; catching up on those (see :meth:`_backpressure`) can take about as much
        again, so the two together stay within the budget."""
        if self.stats.n_messages == 0:
            return 1  # until the size of a message is known
        room = self.settings.max_held_bytes // 2 - self._held()
        typical = max(self.stats.n_bytes // self.stats.n_messages, 1)
        return max(1, min(self.settings.batch, room // typical))

    def _backpressure(self) -> None:
        """Pause what must wait, resume what may go on.

        - Files in flight at the limits: pause every partition until they are down to half
          (pausing drops what librdkafka prefetched, so flapping would refetch constantly).
        - Over half the budget with partial files only: their missing chunks are in other
          partitions, behind the ones read so far (a file's chunks spread over all of them,
          and librdkafka hands out one partition's batch at a time). Read only the partition
          that is furthest behind in time (its last message is the oldest), so files
          complete instead of more being started; blocking everything would deadlock. Not
          with one partial file: it needs every partition, so all are read (one file over
          half the budget, 1 GiB under 2, was read a partition at a time: 30% slower).
        """
        held = self._held()
        n_in_flight = len(self._in_flight)
        limit, budget = self.settings.max_in_flight, self.settings.max_held_bytes
        if self.stats.paused:
            full = n_in_flight > limit // 2 or (held > budget // 2 and bool(self._in_flight))
        else:
            full = n_in_flight >= limit or (held > budget and bool(self._in_flight))
        if full:
            wanted = set(self._assigned)
        elif held > (budget // 4 if self.stats.catching_up else budget // 2) and (
            len(self._reassembler) > 1
        ):
            behind = self._furthest_behind()
            # With no partition known to have something to read, everything is read.
            wanted = set(self._assigned) - {behind} if behind is not None else set()
        else:
            wanted = set()
        if full and not self.stats.paused:
            self.stats.n_pauses += 1
        self.stats.paused = full
        self.stats.catching_up = not full and bool(wanted)
        if wanted == self._paused or not self._assigned:
            return
        from confluent_kafka import TopicPartition  # noqa: PLC0415

        pause, resume = wanted - self._paused, self._paused - wanted
        if pause:
            self._consumer.pause([TopicPartition(self.settings.topic, p) for p in sorted(pause)])
        if resume:
            resumed = [TopicPartition(self.settings.topic, p) for p in sorted(resume)]
            self._consumer.resume(resumed)
            self._wake_fetcher(resumed)
        self._paused = wanted
        log.debug(
            "partitions %s paused (%d files in flight, %d bytes held)",
            sorted(wanted),
            n_in_flight,
            held,
        )

    def report_failures(self, reports: list[tuple[int, dict[str, Any]]]) -> None:
        """Dead-letter reports of files whose analysis or result failed (see the driver),
        by file id: the file's offsets are released only once its reports are
        acknowledged. Nothing without a dead-letter topic (they are counted and logged
        anyway). Called by the driver before it finishes the file."""
        if self._dead_letters is None:
            return
        with self._reports_lock:
            for file_id, _ in reports:
                self._reports_pending[file_id] = self._reports_pending.get(file_id, 0) + 1
        for file_id, report in reports:
            self._dead_letters.send_report(
                file_id, report["file"], report, f"{report['analysis']} {report['reason']}"
            )

    def _reading_clock(self) -> float:
        """Seconds spent reading every assigned partition: partial files' idle clock."""
        if self._reading_since is None:
            return self._reading_s
        return self._reading_s + time.monotonic() - self._reading_since

    def _update_reading(self) -> None:
        now = time.monotonic()
        if self._reading_since is not None:
            self._reading_s += now - self._reading_since
        reading = bool(self._assigned) and not self._paused
        self._reading_since = now if reading else None

    def _wake_fetcher(self, resumed: list[Any]) -> None:
        """Have librdkafka fetch the resumed partitions now. A resume alone does not wake
        its fetcher, which sleeps up to a second while every partition was paused (measured:
        700 ms from a resume 0.3 s after the pause to the next message, and a run bound by
        its budget at a third of its rate); a seek to where the partition stands does, and
        changes nothing else (the pause already set the next fetch there)."""
        from confluent_kafka import KafkaException  # noqa: PLC0415

        try:
            positions = self._consumer.position(resumed)
        except KafkaException as exc:
            log.debug("no positions to wake the fetcher: %s", exc)
            return
        for position in positions:
            if position.offset < 0:  # nothing consumed yet: the resume looks it up itself
                continue
            try:
                self._consumer.seek(position)
            except KafkaException as exc:  # e.g. revoked meanwhile: the resume stands
                log.debug("no seek on %s [%d]: %s", position.topic, position.partition, exc)

    def _furthest_behind(self) -> int | None:
        """The partition whose last message read is the oldest among those that may have
        more (one not read yet in this run comes first), or ``None``. One chosen that gives
        nothing for 2 s (empty, only transaction markers left, a stale watermark) is
        passed over until it moves."""
        from confluent_kafka import TopicPartition  # noqa: PLC0415

        now = time.monotonic()
        if self._behind is not None:
            partition, chosen_at = self._behind
            position = self._tracker.position(partition)
            quiet = self._last_message_at.get(partition, 0.0) < chosen_at
            if quiet and now - chosen_at >= 2.0:
                self._stalled[partition] = position
        candidates = []
        for partition in self._assigned:
            position = self._tracker.position(partition)
            if partition in self._stalled and self._stalled[partition] == position:
                continue
            if position is None:  # not read yet: its chunks are the oldest we may lack
                candidates.append((-1, partition))
                continue
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.settings.topic, partition), cached=True
            )
            if 0 <= position < high:
                candidates.append((self._last_timestamp.get(partition, -1), partition))
        if not candidates:
            self._behind = None
            return None
        choice = min(candidates)[1]
        if self._behind is None or self._behind[0] != choice:
            self._behind = (choice, now)
        return choice

    def _replay_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Where each partition starts, for a replay (see ``IngestSettings.start_from``)."""
        from confluent_kafka import (  # noqa: PLC0415
            OFFSET_BEGINNING,
            OFFSET_END,
            KafkaException,
            TopicPartition,
        )

        start = self.settings.start_from
        if start is None:
            return {}
        if start == "beginning":
            return dict.fromkeys(partitions, OFFSET_BEGINNING)
        assert isinstance(start, float | int)
        wanted = [TopicPartition(self.settings.topic, p, int(start * 1000)) for p in partitions]
        try:
            found = self._consumer.offsets_for_times(wanted, timeout=30)
        except KafkaException as exc:
            self._consumer.close()
            raise ReproducerError(
                f"cannot find where to start {self.settings.topic}: {exc}"
            ) from exc
        # no message at or after that time: start at the end (only new messages)
        offsets = {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_END for tp in found}
        log.info("replay of %s from offsets %s", self.settings.topic, offsets)
        return offsets

    def _assigned_cb(self, consumer: Any, partitions: list[Any]) -> None:
        replay = [tp for tp in partitions if tp.partition in self._start_offsets]
        if replay:  # the first assignment of a replay: its offsets, not the group's
            for tp in replay:
                tp.offset = self._start_offsets.pop(tp.partition)
            consumer.assign(partitions)
            log.info("%s read from the replay's start, not the committed offsets", replay)
        self._assigned |= {tp.partition for tp in partitions}
        self.stats.assigned = bool(self._assigned)
        if len(self._assigned) < self._n_partitions:
            self._interrupted = False  # another member: resuming would not help
            self._lost_partitions = (
                f"only partitions {sorted(self._assigned)} of the {self._n_partitions} of "
                f"{self.settings.topic} were assigned: another consumer is in this reproducer's "
                f"group ({self.settings.consumer.get('group.id')}). Chunks of one file spread "
                "over all partitions, so one member must own them all; stopping"
            )
            log.error("%s", self._lost_partitions)
        log.info(
            "assigned %s[%s]", self.settings.topic, ",".join(str(p) for p in sorted(self._assigned))
        )
        # librdkafka keeps a partition paused across a revocation and a new assignment
        held_back = [tp for tp in partitions if tp.partition in self._paused]
        if held_back:
            consumer.pause(held_back)
        going = [tp for tp in partitions if tp.partition not in self._paused]
        if going:
            consumer.resume(going)

    def _revoked_cb(self, consumer: Any, partitions: list[Any]) -> None:
        """A rebalance takes the partitions back (another member joined, or the group is
        rebalancing for its own reasons): commit what is finished while still a member,
        then start over from the committed offsets. If the next assignment is not every
        partition, :meth:`_assigned_cb` stops the run."""
        if self._closing:
            return
        if not self.settings.transactional:
            try:
                self.commit()
            except Exception as exc:  # noqa: BLE001 - the commit is a courtesy; offsets stay safe
                log.warning("no commit before the rebalance: %s", exc)
        self._take_back(partitions, "revoked in a rebalance")

    def _lost_cb(self, consumer: Any, partitions: list[Any]) -> None:
        """The group session expired (the broker unreachable, or frozen, for longer than
        ``session.timeout.ms``): the partitions are no longer this member's and nothing can
        be committed. librdkafka rejoins on the next poll; reading starts over from the
        committed offsets once they are assigned again."""
        if self._closing:
            return
        self._take_back(
            partitions,
            "lost: the consumer group session expired (was the broker unreachable for longer "
            f"than session.timeout.ms = {self.settings.consumer.get('session.timeout.ms', 45000)}"
            " ms?)",
        )

    def _take_back(self, partitions: list[Any], why: str) -> None:
        """Forget what was read from ``partitions`` beyond the committed offsets: it will
        be read again. Partial files are dropped, and completed files no longer count as
        seen, so their chunks read again rebuild them (at least once: a result may come
        twice, none is lost). Exactly once, the open transaction's offsets belong to the old
        assignment: the run stops, and a restart resumes from the last transaction."""
        taken = sorted(tp.partition for tp in partitions)
        self.stats.n_rebalances += 1
        if self.settings.transactional:
            # The open transaction's offsets belong to the old assignment: this run's
            # state goes, and the pipeline resumes from the last committed transaction.
            self._lost_partitions = f"partitions {taken} of {self.settings.topic} were {why}"
            self._interrupted = True
            log.warning("%s", self._lost_partitions)
            return
        for partition in taken:
            self._tracker.forget_partition(partition)
            self._assigned.discard(partition)
            self._paused.discard(partition)
        self.stats.assigned = bool(self._assigned)
        dropped = self._reassembler.restart()
        for file_id in [f for f in self._key_of if f not in self._in_flight]:
            self._carried(file_id)  # a partial file dropped: its chunks come again
        if self._state is not None:  # what has results stays done, read again or not
            self._remember_recorded(self._state)
        log.warning(
            "partitions %s of %s were %s; %d partial files dropped, reading resumes from the "
            "committed offsets once they are assigned again",
            taken,
            self.settings.topic,
            why,
            dropped,
        )


class _DeadLetters:
    """Copies poison and skipped messages, and reports of failed files, to the dead-letter
    topic; :meth:`delivered` says which were acknowledged (by the id each was sent for)
    and which could not be delivered."""

    def __init__(self, settings: IngestSettings) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        assert settings.dead_letter_topic is not None
        self._topic = settings.dead_letter_topic
        # a missing topic is said, not made with the broker's defaults: librdkafka's
        # producers ask for topics to be created as they look them up, unless told not to
        producer = {
            "enable.idempotence": True,
            "acks": "all",
            **settings.dead_letter_producer,
            "allow.auto.create.topics": False,
        }
        self._producer = Producer(logged(producer))
        partitions_of(self._producer, self._topic)  # TopicUnavailable: said at the start
        self._ids = itertools.count(-1, -1)  # negative: never a file id
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._undelivered: queue.SimpleQueue[str] = queue.SimpleQueue()

    def _send(self, owner: int, key: bytes | None, value: bytes | None, error: str) -> None:
        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                self._done.put(owner)
            else:
                self._undelivered.put(f"{err}: {error}")

        headers: list[tuple[str, str | bytes | None]] = [("reproducer.error", error)]
        deadline = time.monotonic() + _DEAD_LETTER_WAIT_S
        while True:
            try:
                self._producer.produce(
                    self._topic, key=key, value=value, headers=headers, on_delivery=delivered
                )
                break
            except BufferError as exc:  # its queue is full: serve delivery reports, then again
                if time.monotonic() >= deadline:
                    raise ReproducerError(
                        f"the dead-letter topic {self._topic} took nothing for "
                        f"{_DEAD_LETTER_WAIT_S:g} s (its producer's queue stayed full): "
                        "nothing is committed past what it should have taken"
                    ) from exc
                self._producer.poll(0.1)
        self._producer.poll(0)

    def send(self, key: bytes | None, value: bytes | None, error: str) -> int:
        """A copy of a message that is not a chunk, or a skipped chunk; returns the id its
        offset is recorded against (released once the copy is acknowledged)."""
        owner = next(self._ids)
        self._send(owner, key, value, error)
        return owner

    def send_report(self, file_id: int, key: str, report: dict[str, Any], error: str) -> None:
        """A report of a file that failed after the ingest (its analysis, its result)."""
        self._send(file_id, key.encode(), strict_json(report)[0].encode(), error)

    def send_failure(self, failure: FileFailure) -> None:
        report = {
            "schema": SCHEMA_VERSION,
            "kind": "file_failure",
            "file": failure.relative_path.as_posix(),
            "reason": failure.reason.value,
            "detail": failure.detail,
            "n_chunks_received": failure.n_chunks_received,
            "n_total_chunks": failure.n_total_chunks,
        }
        self._send(
            failure.file_id,
            failure.relative_path.as_posix().encode(),
            strict_json(report)[0].encode(),
            f"file {failure.reason.value}",
        )

    def delivered(self, *, flush: bool = False) -> tuple[list[int], list[str]]:
        if flush:
            self._producer.flush(30)
        else:
            self._producer.poll(0)
        return list(_take_all(self._done)), list(_take_all(self._undelivered))


class _StateWriter:
    """At least once: writes state records after the offsets commit (exactly once, the
    transaction carries them instead). They only spare a restart duplicates, so one not
    delivered is logged, not a reason to stop."""

    def __init__(self, settings: IngestSettings) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        assert settings.state_topic is not None
        self._topic = settings.state_topic
        producer = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 50,
        }
        self._producer = Producer(logged({**connection_only(settings.consumer), **producer}))

    def write(self, change: StateChange) -> None:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                log.warning(
                    "state record %r not written (%s): a restart may redo it", msg.key(), err
                )

        from confluent_kafka import KafkaException  # noqa: PLC0415

        for key, value in change:
            try:
                self._producer.produce(self._topic, key=key, value=value, on_delivery=delivered)
            except (BufferError, KafkaException) as exc:
                log.warning("state records not written (%s): a restart may redo them", exc)
                break
        self._producer.poll(0)

    def close(self) -> None:
        if self._producer.flush(30):
            log.warning("state records not written at the end: a restart may redo their files")


_SKIPPED = frozenset({ChunkStatus.STALE, ChunkStatus.REJECTED})  # chunks dead-lettered
_DEAD_LETTER_WAIT_S = 120.0  # the most a dead-letter copy waits for room in the queue

_TOPIC_CHECK_S = 10.0  # seconds between checks that the chunk topic still exists
_CLAIMS_CHECKED = 1 << 20  # claimed beyond the bytes received, before the budget is checked

T = TypeVar("T")


def _take_all(waiting: queue.SimpleQueue[T]) -> Iterator[T]:
    """What is in the queue now (put by other threads), without waiting."""
    while True:
        try:
            yield waiting.get_nowait()
        except queue.Empty:
            return
