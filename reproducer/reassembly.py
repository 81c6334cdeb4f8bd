"""Rebuilding whole files from chunks that arrive in any order, from any partition.

Pure: no Kafka, no Ray. The caller feeds decoded chunks to :meth:`Reassembler.add` and
gets back what each one did. Work is linear in the file size: each chunk is written once
in place, and the whole-file SHA-512 is computed incrementally over the contiguous prefix,
so completing a file costs about one pass of hashing.

Every way a file can go wrong is an outcome (:class:`FileFailure`), never an exception
that stops the caller's loop.

>>> from reproducer.chunk import make_chunk
>>> r = Reassembler("memory")
>>> result = r.add(make_chunk(b"abc", filename="top.txt"))
>>> result.status is ChunkStatus.COMPLETED, bytes(result.completed.buffer)
(True, b'abc')
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from reproducer._storage import Mode, Store, StoreError, open_store
from reproducer.chunk import DEFAULT_MAX_FILE_SIZE, DataFileChunk
from reproducer.chunk import result_key as _result_key

__all__ = [
    "AddResult",
    "ChunkStatus",
    "CompletedFile",
    "FailureReason",
    "FileFailure",
    "Mode",
    "PartialFileInfo",
    "Reassembler",
]


class ChunkStatus(enum.Enum):
    """What adding one chunk did."""

    STORED = "stored"
    """New data for a file that is still partial."""
    COMPLETED = "completed"
    """The last missing chunk: see :attr:`AddResult.completed`."""
    FAILED = "failed"
    """The file this chunk belongs to failed: see :attr:`AddResult.failure`."""
    DUPLICATE = "duplicate"
    """Already stored, or part of a file that already finished: nothing changed."""
    STALE = "stale"
    """Part of an older generation of a file than the one being rebuilt: skipped."""
    REJECTED = "rejected"
    """Inconsistent with the other chunks of its file: skipped, see :attr:`AddResult.reason`."""


class FailureReason(enum.Enum):
    HASH_MISMATCH = "hash_mismatch"
    INCONSISTENT = "inconsistent"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    STORAGE = "storage"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class FileFailure:
    """A file that will not complete, and why."""

    file_id: int
    relative_path: PurePosixPath
    reason: FailureReason
    detail: str
    n_chunks_received: int
    n_total_chunks: int


@dataclass(frozen=True, slots=True)
class CompletedFile:
    """A whole file whose SHA-512 matched.

    ``buffer`` (memory and both modes) is a read-only view of the bytes; ``path`` (disk and
    both modes) is where they were written.
    """

    file_id: int
    subdir_str: str
    filename: str
    file_hash: bytes
    n_chunks: int
    size: int
    file_mtime: float
    buffer: memoryview | None
    path: Path | None

    @property
    def relative_path(self) -> PurePosixPath:
        return PurePosixPath(self.subdir_str, self.filename)

    @property
    def result_key(self) -> str:
        return _result_key(self.subdir_str, self.filename)

    def read_bytes(self) -> bytes:
        """The file's bytes, from memory if held there, else read back from disk."""
        if self.buffer is not None:
            return bytes(self.buffer)
        assert self.path is not None
        return self.path.read_bytes()


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of :meth:`Reassembler.add`.

    ``file_id`` is the partial file that now owns this chunk's message, or ``None`` when
    no pending work depends on it (duplicate, stale, rejected): a caller tracking offsets
    may release it at once.
    """

    status: ChunkStatus
    file_id: int | None
    completed: CompletedFile | None = None
    failure: FileFailure | None = None
    superseded: FileFailure | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PartialFileInfo:
    file_id: int
    relative_path: PurePosixPath
    n_chunks_received: int
    n_total_chunks: int
    bytes_received: int
    first_seen: float
    last_seen: float


@dataclass(slots=True)
class _Partial:
    file_id: int
    relative: PurePosixPath
    subdir_str: str
    filename: str
    file_hash: bytes
    n_total: int
    mtime: float
    store: Store
    first_seen: float
    last_seen: float
    chunks: set[int] = field(default_factory=set)
    bytes_received: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha512)
    hashed_to: int = 0
    waiting: dict[int, int] = field(default_factory=dict)  # offset -> length, not yet hashed
    worker: Future[None] | None = None  # the last write/hash task queued for this file
    problem: str = ""
    storage_failed: bool = False

    def info(self) -> PartialFileInfo:
        return PartialFileInfo(
            self.file_id,
            self.relative,
            len(self.chunks),
            self.n_total,
            self.bytes_received,
            self.first_seen,
            self.last_seen,
        )


@dataclass(frozen=True, slots=True)
class _Generation:
    """Identity of one version of a file, for the reference's generation policy."""

    file_hash: bytes
    n_total: int
    mtime: float

    def is_newer(self, other: _Generation) -> bool:
        """Reference policy: more chunks, or as many and a newer mtime, is a new generation."""
        return self.n_total > other.n_total or (
            self.n_total == other.n_total and self.mtime > other.mtime
        )


class Reassembler:
    """Turns chunks into whole files in ``memory``, on ``disk`` or ``both``.

    ``output_dir`` is required for the disk modes; nothing is ever written outside it.
    ``remember_finished`` bounds how many finished files are remembered so that late
    duplicates of their chunks are recognised rather than starting a file that can never
    complete. ``clock`` is injectable for tests of :meth:`expire`.

    With ``worker_thread`` (the default) storing the bytes and the whole-file SHA-512 run
    on one background thread, in order per file, while the caller decodes the next chunk;
    hashlib and file writes release the GIL, so two cores share the work. At most
    ``backlog_bytes`` wait for the worker.
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
        backlog_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("memory", "disk", "both"):
            raise ValueError(f"mode must be 'memory', 'disk' or 'both', not {mode!r}")
        if mode != "memory" and output_dir is None:
            raise ValueError(f"mode {mode!r} needs an output_dir")
        self.mode: Mode = mode
        self.output_dir = output_dir
        self._max_file_size = max_file_size
        self._remember = remember_finished
        self._fsync = fsync
        self._clock = clock
        self._ids = itertools.count(1)
        self._partials: dict[PurePosixPath, _Partial] = {}
        self._finished: OrderedDict[PurePosixPath, _Generation] = OrderedDict()
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="reassembly") if worker_thread else None
        )
        self._backlog: deque[tuple[Future[None], int]] = deque()
        self._backlog_bytes = 0
        self._backlog_limit = backlog_bytes

    # ------------------------------------------------------------------ queries
    @property
    def held_bytes(self) -> int:
        """Bytes of partial files held in memory (0 in disk mode)."""
        if self.mode == "disk":
            return 0
        return sum(p.bytes_received for p in self._partials.values())

    @property
    def partial_bytes(self) -> int:
        """Bytes received for files that are not complete yet, wherever they are stored."""
        return sum(p.bytes_received for p in self._partials.values())

    def partial_files(self) -> list[PartialFileInfo]:
        return [p.info() for p in self._partials.values()]

    def __len__(self) -> int:
        return len(self._partials)

    # ------------------------------------------------------------------ updates
    def add(self, chunk: DataFileChunk) -> AddResult:
        """Add one decoded chunk; never raises for anything about the chunk's content."""
        relative = chunk.relative_path
        gen = _Generation(chunk.file_hash, chunk.n_total_chunks, chunk.file_mtime)
        end = chunk.chunk_offset_write + len(chunk.data)
        if end > self._max_file_size:
            return AddResult(ChunkStatus.REJECTED, None, reason=f"ends past {self._max_file_size}")

        superseded = None
        partial = self._partials.get(relative)
        if partial is not None and partial.file_hash != chunk.file_hash:
            current = _Generation(partial.file_hash, partial.n_total, partial.mtime)
            if not gen.is_newer(current):
                return AddResult(ChunkStatus.STALE, None)
            # Unlike the reference (defect 3), the chunk that starts the new generation is kept.
            superseded = self._fail(partial, FailureReason.SUPERSEDED, "a newer version arrived")
            partial = None
        if partial is None:
            finished = self._finished.get(relative)
            if finished is not None:
                if finished.file_hash == gen.file_hash:
                    return AddResult(ChunkStatus.DUPLICATE, None, superseded=superseded)
                if finished.file_hash != gen.file_hash and not gen.is_newer(finished):
                    return AddResult(ChunkStatus.STALE, None, superseded=superseded)
            try:
                partial = self._start(chunk, relative)
            except StoreError as exc:
                return AddResult(ChunkStatus.REJECTED, None, superseded=superseded, reason=str(exc))

        if chunk.n_total_chunks != partial.n_total:
            return AddResult(
                ChunkStatus.REJECTED,
                None,
                superseded=superseded,
                reason=f"n_total_chunks {chunk.n_total_chunks} != {partial.n_total} "
                "of other chunks with the same file hash",
            )
        if chunk.chunk_i in partial.chunks:
            return AddResult(ChunkStatus.DUPLICATE, None, superseded=superseded)

        partial.last_seen = self._clock()
        try:
            self._store(partial, chunk)
        except StoreError as exc:
            failure = self._fail(partial, FailureReason.STORAGE, str(exc))
            return AddResult(
                ChunkStatus.FAILED, partial.file_id, failure=failure, superseded=superseded
            )
        if len(partial.chunks) < partial.n_total:
            return AddResult(ChunkStatus.STORED, partial.file_id, superseded=superseded)
        return self._complete(partial, superseded)

    def flush(self) -> None:
        """Wait until the worker thread has stored and hashed every chunk added so far."""
        while self._backlog:
            done, size = self._backlog.popleft()
            done.result()
            self._backlog_bytes -= size

    def expire(self, idle_seconds: float) -> list[FileFailure]:
        """Give up on partial files that received no chunk for ``idle_seconds``."""
        cutoff = self._clock() - idle_seconds
        stale = [p for p in self._partials.values() if p.last_seen <= cutoff]
        return [
            self._fail(p, FailureReason.EXPIRED, f"no chunk for {idle_seconds:g} s") for p in stale
        ]

    def abandon(self, file_id: int, detail: str = "abandoned by the caller") -> FileFailure | None:
        """Drop one partial file (e.g. to free memory); returns its failure, if it existed."""
        for partial in self._partials.values():
            if partial.file_id == file_id:
                return self._fail(partial, FailureReason.ABANDONED, detail)
        return None

    def close(self) -> list[FileFailure]:
        """Drop every partial file, freeing memory and removing temporary files."""
        return [
            self._fail(p, FailureReason.ABANDONED, "closed") for p in list(self._partials.values())
        ]

    # ------------------------------------------------------------------ internals
    def _start(self, chunk: DataFileChunk, relative: PurePosixPath) -> _Partial:
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
        )
        now = self._clock()
        partial = _Partial(
            file_id=next(self._ids),
            relative=relative,
            subdir_str=chunk.subdir_str,
            filename=relative.name,
            file_hash=chunk.file_hash,
            n_total=n,
            mtime=chunk.file_mtime,
            store=store,
            first_seen=now,
            last_seen=now,
        )
        self._partials[relative] = partial
        return partial

    def _store(self, partial: _Partial, chunk: DataFileChunk) -> None:
        """Account the chunk now; write and hash it on the worker (or inline)."""
        partial.chunks.add(chunk.chunk_i)
        partial.bytes_received += len(chunk.data)
        if self._pool is None:
            self._write_and_hash(partial, chunk.chunk_i, chunk.chunk_offset_write, chunk.data)
            return
        # One worker runs the tasks in submission order, so each file's are in order, while
        # the caller decodes (and hashes) the next chunk: hashlib and pwrite release the GIL.
        partial.worker = self._pool.submit(
            self._write_and_hash, partial, chunk.chunk_i, chunk.chunk_offset_write, chunk.data
        )
        self._backlog.append((partial.worker, len(chunk.data)))
        self._backlog_bytes += len(chunk.data)
        while self._backlog and (
            self._backlog_bytes > self._backlog_limit or self._backlog[0][0].done()
        ):
            done, size = self._backlog.popleft()
            done.result()
            self._backlog_bytes -= size

    @staticmethod
    def _write_and_hash(partial: _Partial, chunk_i: int, offset: int, data: bytes) -> None:
        """Store the bytes and extend the hashed prefix. Never raises: problems are recorded."""
        if partial.problem:
            return
        if offset < partial.hashed_to or offset in partial.waiting:
            partial.problem = f"chunk {chunk_i} at offset {offset} overlaps another chunk"
            return
        try:
            partial.store.write(offset, data)
            if offset != partial.hashed_to:
                partial.waiting[offset] = len(data)
                return
            # This chunk, then any that arrived early and now follow the prefix.
            partial.hasher.update(data)
            partial.hashed_to += len(data)
            while partial.hashed_to in partial.waiting:
                length = partial.waiting.pop(partial.hashed_to)
                partial.hasher.update(partial.store.read(partial.hashed_to, length))
                partial.hashed_to += length
        except StoreError as exc:
            partial.problem, partial.storage_failed = str(exc), True
        except Exception as exc:  # noqa: BLE001 - a worker task must never raise
            partial.problem, partial.storage_failed = f"{type(exc).__name__}: {exc}", True

    def _settle(self, partial: _Partial) -> None:
        """Wait until the worker has done everything queued for ``partial``."""
        if partial.worker is not None:
            partial.worker.result()
            partial.worker = None

    def _complete(self, partial: _Partial, superseded: FileFailure | None) -> AddResult:
        self._settle(partial)
        if not partial.problem and (partial.waiting or partial.hashed_to != partial.bytes_received):
            gaps = sorted(partial.waiting)[:3]
            partial.problem = f"chunks do not tile the file: gap before offsets {gaps}"
        if partial.problem:
            reason = FailureReason.STORAGE if partial.storage_failed else FailureReason.INCONSISTENT
            failure = self._fail(partial, reason, partial.problem)
            return AddResult(
                ChunkStatus.FAILED, partial.file_id, failure=failure, superseded=superseded
            )
        if partial.hasher.digest() != partial.file_hash:
            failure = self._fail(
                partial,
                FailureReason.HASH_MISMATCH,
                f"SHA-512 of the {partial.hashed_to} rebuilt bytes does not match the file hash",
            )
            return AddResult(
                ChunkStatus.FAILED, partial.file_id, failure=failure, superseded=superseded
            )
        try:
            buffer, path = partial.store.finish(partial.hashed_to)
        except StoreError as exc:
            failure = self._fail(partial, FailureReason.STORAGE, str(exc))
            return AddResult(
                ChunkStatus.FAILED, partial.file_id, failure=failure, superseded=superseded
            )
        self._forget(partial)
        completed = CompletedFile(
            file_id=partial.file_id,
            subdir_str=partial.subdir_str,
            filename=partial.filename,
            file_hash=partial.file_hash,
            n_chunks=partial.n_total,
            size=partial.hashed_to,
            file_mtime=partial.mtime,
            buffer=buffer,
            path=path,
        )
        return AddResult(
            ChunkStatus.COMPLETED, partial.file_id, completed=completed, superseded=superseded
        )

    def _fail(self, partial: _Partial, reason: FailureReason, detail: str) -> FileFailure:
        self._settle(partial)
        partial.store.discard()
        self._forget(partial)
        return FileFailure(
            partial.file_id, partial.relative, reason, detail, len(partial.chunks), partial.n_total
        )

    def _forget(self, partial: _Partial) -> None:
        """Remove a partial file and remember its generation as finished."""
        del self._partials[partial.relative]
        self._finished[partial.relative] = _Generation(
            partial.file_hash, partial.n_total, partial.mtime
        )
        self._finished.move_to_end(partial.relative)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
