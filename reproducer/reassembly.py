"""Rebuilding whole files from chunks that arrive in any order, from any partition.

Pure: no Kafka, no Ray. The caller feeds decoded chunks to :meth:`Reassembler.add` and
gets back what that chunk did and which files have finished since the last call. Work is
linear in the file size: each chunk is written once in place, and the whole-file SHA-512
is computed incrementally over the contiguous prefix.

Storing, hashing and finishing a file (the final check, the rename on disk) run on one
worker thread, in order per file, while the caller decodes the next message; hashlib and
file writes release the GIL, so two cores share the work and the caller never waits for a
file to be verified. A finished file is reported by a later ``add`` (or :meth:`poll`,
:meth:`flush`) in :attr:`AddResult.finished`. Every way a file can go wrong is such an
outcome (:class:`FileFailure`), never an exception that stops the caller's loop.

>>> from reproducer.chunk import make_chunk
>>> r = Reassembler("memory")
>>> r.add(make_chunk(b"abc", filename="top.txt")).status
<ChunkStatus.COMPLETING: 'completing'>
>>> [bytes(done.buffer) for done in r.flush()]
[b'abc']
"""

from __future__ import annotations

import enum
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from reproducer._outcomes import (
    CompletedFile,
    FailureReason,
    FileFailure,
    Outcome,
    PartialFileInfo,
)
from reproducer._partial import Generation, PartialFile, Reopened
from reproducer._storage import Mode, StoreError, open_store, sync_folders
from reproducer.chunk import DEFAULT_MAX_FILE_SIZE, DataFileChunk
from reproducer.errors import OutputUnavailable

__all__ = [
    "AddResult",
    "ChunkStatus",
    "CompletedFile",
    "FailureReason",
    "FileFailure",
    "Mode",
    "Outcome",
    "PartialFileInfo",
    "Reassembler",
]


class ChunkStatus(enum.Enum):
    """What adding one chunk did."""

    STORED = "stored"
    """New data for a file that is still partial (or a different copy of a chunk stored,
    matching its chunk hash: kept until the file is whole, in case the first is corrupt)."""
    COMPLETING = "completing"
    """The last missing chunk: the file is being verified; its outcome follows."""
    DUPLICATE = "duplicate"
    """Already stored, or part of a file that already finished: nothing changed."""
    STALE = "stale"
    """Part of an older version of a file than the one being rebuilt or the last one that
    completed (see ``Generation.older_than``): skipped; ``reason`` says why."""
    REJECTED = "rejected"
    """Inconsistent with the other chunks of its file, a corrupt copy of a chunk stored, or
    unstorable: see ``reason``."""


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of :meth:`Reassembler.add`.

    ``file_id`` is the file that now owns this chunk's message, or ``None`` when no pending
    work depends on it (duplicate, stale, rejected): a caller tracking offsets may release
    it at once. ``finished`` lists files that ended since the last call, this chunk's own
    file possibly among them (and a partial file this chunk superseded).
    """

    status: ChunkStatus
    file_id: int | None
    reason: str = ""
    finished: tuple[Outcome, ...] = ()


_VERSIONS = 4  # completed versions remembered per path (their late chunks are duplicates)


class Reassembler:
    """Turns chunks into whole files in ``memory``, on ``disk`` or ``both``.

    ``output_dir`` is required for the disk modes; nothing is ever written outside it.
    ``remember_finished`` bounds how many finished files are remembered so that late
    duplicates of their chunks are recognised rather than starting a file that can never
    complete. ``fsync`` makes each rebuilt file durable before it is renamed into place.
    ``worker_thread=False`` does all the work inline (finished files are then reported by
    the very ``add`` that completed them). At most ``backlog_bytes`` wait for the worker.
    ``clock`` stamps files (``first_seen``, ``last_seen``); ``idle_clock`` (default:
    ``clock``) measures idleness for :meth:`expire`: a caller that stops reading for a while
    passes one that stands still meanwhile, so a file is not given up for chunks the caller
    did not read. Both are injectable for tests.
    """

    def __init__(
        self,
        mode: Mode = "memory",
        output_dir: Path | None = None,
        *,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        remember_finished: int = 10_000,
        fsync: bool = True,
        worker_thread: bool = True,
        workers: int = 1,
        backlog_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
        idle_clock: Callable[[], float] | None = None,
        shared: Path | None = None,
    ) -> None:
        if mode not in ("memory", "disk", "both"):
            raise ValueError(f"mode must be 'memory', 'disk' or 'both', not {mode!r}")
        if mode != "memory" and output_dir is None:
            raise ValueError(f"mode {mode!r} needs an output_dir")
        self.mode: Mode = mode
        self.output_dir = output_dir
        self.shared = shared  # memory mode: the folder in shared memory for larger files
        self._max_file_size = max_file_size
        self._remember = remember_finished
        self._fsync = fsync
        self._clock = clock
        self._idle_clock = idle_clock or clock
        self.n_reopened = 0  # files that dropped corrupt chunks to wait for their copies
        # bytes partial files came to count beyond what arrived for them (a small file's
        # claim, pages touched in part), since the last shed(): the caller need not check
        # its budget after every chunk, only after so much of these
        self.claimed_since_shed = 0
        self._ids = itertools.count(1)
        self._partials: dict[PurePosixPath, PartialFile] = {}
        self._completing: dict[int, PartialFile] = {}
        # path -> the versions of it that completed (the last few), for late duplicates
        self._finished: OrderedDict[PurePosixPath, tuple[Generation, ...]] = OrderedDict()
        # versions whose results an earlier run committed (see remember): never evicted
        self._recorded: dict[tuple[PurePosixPath, bytes], Generation] = {}
        # appended by the worker, drained here
        self._outcomes: deque[Outcome | Reopened] = deque()
        # One single-thread executor per worker: a file's tasks all go to the same one
        # (by file id), so they run in order; different files hash and write in parallel.
        self._pools = (
            [
                ThreadPoolExecutor(1, thread_name_prefix=f"reassembly-{i}")
                for i in range(max(1, workers))
            ]
            if worker_thread
            else []
        )
        self._backlog: deque[tuple[Future[Any], int]] = deque()
        self._backlog_bytes = 0
        self._backlog_limit = backlog_bytes
        self._renamed_in: set[Path] = set()  # folders with renames not yet fsynced (worker's)

    # ------------------------------------------------------------------ queries
    @property
    def held_bytes(self) -> int:
        """Bytes of unfinished files counted against the memory budget: what their buffers
        take (the pages they touch, not the bytes that arrived), the size a small file's
        only chunk claims (see MemoryStore), and the other copies of chunks kept (in disk
        mode, these alone)."""
        held = sum(p.held_bytes for p in self._partials.values())
        return held + sum(p.held_bytes for p in self._completing.values())

    @property
    def partial_bytes(self) -> int:
        """Bytes received for files still missing chunks, wherever they are stored."""
        return sum(p.bytes_received for p in self._partials.values())

    @property
    def n_completing(self) -> int:
        """Files with every chunk, whose outcome is not reported yet."""
        return len(self._completing)

    def partial_files(self) -> list[PartialFileInfo]:
        return [p.info() for p in self._partials.values()]

    def __len__(self) -> int:
        """Files still missing chunks."""
        return len(self._partials)

    # ------------------------------------------------------------------ updates
    def add(self, chunk: DataFileChunk) -> AddResult:
        """Add one decoded chunk; never raises for anything about the chunk's content."""
        relative = chunk.relative_path
        gen = Generation(chunk.file_hash, chunk.n_total_chunks, chunk.file_mtime)
        if chunk.chunk_offset_write + len(chunk.data) > self._max_file_size:
            return self._result(ChunkStatus.REJECTED, None, f"ends past {self._max_file_size}")

        ended: list[Outcome] = []
        # A late copy of a version that completed is a duplicate, even while a later version
        # is being rebuilt (one with fewer chunks and no mtime would be superseded by it).
        versions = self._finished.get(relative, ())
        if (relative, gen.file_hash) in self._recorded or any(
            g.file_hash == gen.file_hash for g in versions
        ):
            return self._result(ChunkStatus.DUPLICATE, None)
        partial = self._partials.get(relative)
        if versions and (partial is None or partial.generation.file_hash != gen.file_hash):
            # Other content at a finished path is a new version (a file modified and sent
            # again, maybe smaller) unless plainly older: see Generation.older_than.
            older = gen.older_than(versions[-1], completed=True)
            if older:
                reason = (
                    f"version {gen} is older than the version of {relative} that completed, "
                    f"{versions[-1]}: {older}"
                )
                return self._result(ChunkStatus.STALE, None, reason)
        if partial is not None and partial.generation.file_hash != gen.file_hash:
            older = gen.older_than(partial.generation)
            if older:
                reason = (
                    f"version {gen} is older than the version being rebuilt, "
                    f"{partial.generation}: {older}"
                )
                return self._result(ChunkStatus.STALE, None, reason)
            # Unlike the reference (defect 3), the chunk that starts the new generation is kept.
            ended.append(self._fail(partial, FailureReason.SUPERSEDED, "a newer version arrived"))
            partial = None
        if partial is None:
            try:
                partial = self._start(chunk, relative, gen)
            except StoreError as exc:
                if exc.unavailable:  # the folder's fault: the chunk is not poison
                    raise OutputUnavailable(relative, str(exc)) from exc
                return self._result(ChunkStatus.REJECTED, None, str(exc), ended)

        if chunk.chunk_i in partial.chunks and partial.last_task is not None:
            partial.last_task.result()  # another copy: compared below with the stored bytes
        if partial.problem:
            # The worker could not store an earlier chunk (e.g. disk full): fail the file now
            # rather than accept chunks that can never make it whole.
            failure = self._fail(partial, partial.problem_reason(), partial.problem)
            if failure.reason is FailureReason.OUTPUT_UNAVAILABLE:
                # Not a rejected chunk (whose offset would be committed past, and the file
                # could never be rebuilt): the caller stops, this chunk not taken.
                raise OutputUnavailable(relative, partial.problem)
            ended.append(failure)
            return self._result(ChunkStatus.REJECTED, None, partial.problem, ended)
        if chunk.n_total_chunks != partial.generation.n_total:
            reason = (
                f"n_total_chunks {chunk.n_total_chunks} != {partial.generation.n_total} "
                "of other chunks with the same file hash"
            )
            return self._result(ChunkStatus.REJECTED, None, reason, ended)
        if chunk.chunk_i in partial.chunks:
            return self._another_copy(partial, chunk, ended)

        excess = partial.excess
        try:
            # Memory copies here, disk writes and hashing on the worker: both threads busy.
            if partial.dropped.get(chunk.chunk_offset_write) == len(chunk.data):
                # a good copy of a corrupt chunk that was dropped: its memory is held still
                del partial.dropped[chunk.chunk_offset_write]
                partial.store.copy_in(chunk.chunk_offset_write, chunk.data, again=True)
            else:
                partial.store.copy_in(chunk.chunk_offset_write, chunk.data)
        except StoreError as exc:
            if exc.unavailable:  # shared memory full: the file is not at fault, and kept
                raise OutputUnavailable(relative, str(exc), where="shared memory") from exc
            ended.append(self._fail(partial, FailureReason.STORAGE, str(exc)))
            return self._result(ChunkStatus.REJECTED, None, str(exc), ended)
        partial.last_seen = self._clock()
        partial.last_read = self._idle_clock()
        partial.chunks.add(chunk.chunk_i)
        partial.chunk_hashes[chunk.chunk_i] = (
            chunk.chunk_offset_write,
            len(chunk.data),
            chunk.chunk_hash,
        )
        partial.bytes_received += len(chunk.data)
        self.claimed_since_shed += max(0, partial.excess - excess)
        self._submit(
            partial,
            len(chunk.data),
            partial.write_and_hash,
            chunk.chunk_i,
            chunk.chunk_offset_write,
            chunk.data,
        )
        if not partial.complete:
            return self._result(ChunkStatus.STORED, partial.file_id, ended=ended)
        self._remember_generation(partial)
        self._completing[partial.file_id] = partial
        self._submit(partial, 0, self._finish, partial)
        return self._result(ChunkStatus.COMPLETING, partial.file_id, ended=ended)

    def poll(self) -> list[Outcome]:
        """Files that ended since the last call, without waiting."""
        return self._drain()

    def flush(self) -> list[Outcome]:
        """Wait until the worker has done everything queued, make finished files durable
        (with ``fsync``), and return what ended meanwhile.

        Disk modes fsync each file before renaming it into place, but the folders holding
        the renames only here, in one batch: call it before committing offsets past files
        whose copy on disk must survive a power loss.
        """
        while self._backlog:
            self._backlog.popleft()[0].result()
        self._backlog_bytes = 0
        if self.mode != "memory" and self._fsync:
            self._sync_renames()  # every worker is idle: this covers every rename so far
        return self._drain()

    def expire(self, idle_seconds: float) -> list[FileFailure]:
        """Give up on partial files that received no chunk for ``idle_seconds`` of the
        idle clock."""
        cutoff = self._idle_clock() - idle_seconds
        stale = [p for p in self._partials.values() if p.last_read <= cutoff]
        return [
            self._fail(
                p,
                FailureReason.HASH_MISMATCH,
                f"{p.mismatch}; no good copy of them came within {idle_seconds:g} s",
            )
            if p.mismatch
            else self._fail(p, FailureReason.EXPIRED, f"no chunk for {idle_seconds:g} s")
            for p in stale
        ]

    def abandon(self, file_id: int, detail: str = "abandoned by the caller") -> FileFailure | None:
        """Drop one partial file (e.g. to free memory); returns its failure, if it existed."""
        for partial in self._partials.values():
            if partial.file_id == file_id:
                return self._fail(partial, FailureReason.ABANDONED, detail)
        return None

    def shed(self, budget: int) -> list[FileFailure]:
        """Over ``budget`` bytes held in memory: give up on the partial files that count
        most beyond what arrived for them (the only chunk of a small file it claims and
        never sends, bytes scattered a page apart), until back within it.

        A file that counts no more than twice what arrived is kept, whatever its size: its
        memory is about what arrived (a small file holds its chunks, a larger one the pages
        they touch, pages it shares with a gap not filled yet included), and a file larger
        than the budget is the caller's to pause for, not to drop."""
        failures: list[FileFailure] = []
        self.claimed_since_shed = 0
        if self.mode == "disk":
            return failures
        held = self.held_bytes
        if held <= budget:
            return failures
        waste = sorted(
            (p.excess, p.file_id, p)
            for p in self._partials.values()
            if p.excess > p.bytes_received + p.copy_bytes
        )
        while held > budget and waste:
            _, _, partial = waste.pop()
            taken = partial.held_bytes
            failures.append(
                self._fail(
                    partial,
                    FailureReason.ABANDONED,
                    f"over the memory budget ({budget} bytes): it counts {taken} bytes for "
                    f"the {partial.bytes_received} that arrived (its chunks claim "
                    f"{partial.generation.n_total} of them)",
                )
            )
            held -= taken
        return failures

    def restart(self) -> int:
        """The caller will read every chunk again from an earlier point: drop the partial
        files (no outcome: they are not failures, their chunks come again) and forget the
        completed versions (their chunks read again rebuild them). Files completing go on.
        Returns how many partial files were dropped."""
        partials = list(self._partials.values())
        for partial in partials:
            self._fail(partial, FailureReason.ABANDONED, "read again after a rebalance")
        self._finished.clear()
        return len(partials)

    def remember(self, relative: PurePosixPath, generation: Generation) -> None:
        """A version of a file completed before (in an earlier run whose results are
        committed): its chunks read again are duplicates, not a file to rebuild, however
        many other files complete meanwhile, until :meth:`forget`."""
        self._recorded[(relative, generation.file_hash)] = generation
        versions = self._finished.get(relative, ())
        if generation not in versions:
            self._finished[relative] = (*versions[-(_VERSIONS - 1) :], generation)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def forget(self, relative: PurePosixPath, file_hash: bytes) -> None:
        """A remembered version's chunks will not be read again (the offsets passed them)."""
        self._recorded.pop((relative, file_hash), None)

    def close(self) -> list[Outcome]:
        """Finish queued work, drop every partial file (removing temporary files), stop."""
        outcomes: list[Outcome] = self.flush()
        outcomes += [
            self._fail(p, FailureReason.ABANDONED, "closed") for p in list(self._partials.values())
        ]
        for pool in self._pools:
            pool.shutdown(wait=True)
        return outcomes

    # ------------------------------------------------------------------ internals
    def _start(self, chunk: DataFileChunk, relative: PurePosixPath, gen: Generation) -> PartialFile:
        n, length = chunk.n_total_chunks, len(chunk.data)
        end = chunk.chunk_offset_write + length
        # Exact for the last chunk; for uniform chunking n*length bounds the size from above.
        estimate = end if chunk.chunk_i == n else max(end, n * length)
        store = open_store(
            self.mode,
            min(estimate, self._max_file_size),
            self.output_dir,
            relative.as_posix(),
            fsync=self._fsync,
            renamed_in=self._renamed_in,
            shared=self.shared,
        )
        now = self._clock()
        partial = PartialFile(
            next(self._ids), relative, chunk.subdir_str, gen, store, now, now, self._idle_clock()
        )
        self._partials[relative] = partial
        return partial

    def _submit(
        self, partial: PartialFile, size: int, task: Callable[..., object], *args: object
    ) -> None:
        """Run ``task`` on the worker after everything queued before it, or inline."""
        if not self._pools:
            task(*args)
            return
        pool = self._pools[partial.file_id % len(self._pools)]
        partial.last_task = pool.submit(task, *args)
        self._backlog.append((partial.last_task, size))
        self._backlog_bytes += size
        while self._backlog and (
            self._backlog_bytes > self._backlog_limit or self._backlog[0][0].done()
        ):
            done, done_size = self._backlog.popleft()
            done.result()
            self._backlog_bytes -= done_size

    def _another_copy(
        self, partial: PartialFile, chunk: DataFileChunk, ended: list[Outcome]
    ) -> AddResult:
        """A chunk whose index is stored already: a duplicate, unless its bytes differ.
        Then it is corrupt (rejected), or a good copy, kept until the file is whole: the
        stored one may be corrupt, which only the file hash tells (see PartialFile.finish)."""
        try:
            kept, why = partial.another_copy(
                chunk.chunk_i, chunk.chunk_offset_write, chunk.data, chunk.chunk_hash
            )
        except StoreError as exc:  # the stored copy cannot be read back: the worker says why
            return self._result(ChunkStatus.REJECTED, None, str(exc), ended)
        if kept:
            partial.last_seen, partial.last_read = self._clock(), self._idle_clock()
            return self._result(ChunkStatus.STORED, partial.file_id, ended=ended)
        status = ChunkStatus.REJECTED if why else ChunkStatus.DUPLICATE
        return self._result(status, None, why, ended)

    def _sync_renames(self) -> None:
        try:
            sync_folders(self._renamed_in)
        except OSError:
            self._renamed_in.clear()  # the folder is gone: nothing left to make durable

    def _finish(self, partial: PartialFile) -> None:
        self._outcomes.append(partial.finish())

    def _result(
        self,
        status: ChunkStatus,
        file_id: int | None,
        reason: str = "",
        ended: Iterable[Outcome] = (),
    ) -> AddResult:
        return AddResult(status, file_id, reason, (*ended, *self._drain()))

    def _drain(self) -> list[Outcome]:
        drained: list[Outcome] = []
        while self._outcomes:
            outcome = self._outcomes.popleft()
            partial = self._completing.pop(outcome.file_id, None)
            if isinstance(outcome, Reopened):
                if partial is not None:
                    drained += self._reopen(partial, outcome.detail)
                continue
            if isinstance(outcome, FileFailure) and partial is not None:
                self._forget_generation(partial)
            drained.append(outcome)
        return drained

    def _reopen(self, partial: PartialFile, detail: str) -> list[Outcome]:
        """A file that dropped corrupt chunks is partial again: good copies of them (a
        re-send) complete it, else it expires. If a newer version of the path started
        meanwhile, the file fails instead."""
        self._forget_generation(partial)
        if partial.relative in self._partials:
            return [partial.discard(FailureReason.HASH_MISMATCH, detail)]
        self.n_reopened += 1
        partial.last_seen, partial.last_read = self._clock(), self._idle_clock()
        self._partials[partial.relative] = partial
        return []

    def _fail(self, partial: PartialFile, reason: FailureReason, detail: str) -> FileFailure:
        if partial.last_task is not None:
            partial.last_task.result()  # the worker must be done with its bytes first
        del self._partials[partial.relative]
        return partial.discard(reason, detail)

    def _remember_generation(self, partial: PartialFile) -> None:
        """A file has every chunk: late duplicates of its chunks are to be ignored.

        Only files that complete are remembered. A failed file is forgotten, so that sending
        it again (after freeing disk space, say) rebuilds it; stray late chunks of it start
        a partial file that expires.
        """
        self._partials.pop(partial.relative, None)
        versions = self._finished.get(partial.relative, ())
        self._finished[partial.relative] = (*versions[-(_VERSIONS - 1) :], partial.generation)
        self._finished.move_to_end(partial.relative)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def _forget_generation(self, partial: PartialFile) -> None:
        versions = self._finished.get(partial.relative, ())
        if partial.generation in versions:
            kept = tuple(g for g in versions if g != partial.generation)
            if kept:
                self._finished[partial.relative] = kept
            else:
                del self._finished[partial.relative]
