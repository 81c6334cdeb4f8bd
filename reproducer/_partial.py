"""One file being rebuilt: its bytes, its running hash, and how it ends.

The methods that touch the bytes (:meth:`PartialFile.write_and_hash`,
:meth:`PartialFile.finish`) may run on the reassembler's worker thread; they never raise,
they record problems. Bookkeeping fields (``chunks``, ``bytes_received``, ``last_seen``)
belong to the caller's thread.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from reproducer._outcomes import CompletedFile, FailureReason, FileFailure, PartialFileInfo
from reproducer._storage import Store, StoreError

__all__ = ["MAX_REOPEN", "Generation", "PartialFile", "Reopened"]

MAX_REOPEN = 3  # times a file drops corrupt chunks to wait for copies before it fails


@dataclass(frozen=True, slots=True)
class Reopened:
    """A complete file failed its hash because of corrupt chunks, which it dropped: it
    waits, as a partial file again, for good copies of them (until the idle timeout)."""

    file_id: int
    detail: str


@dataclass(frozen=True, slots=True)
class Generation:
    """Identity of one version of a file, for the reference's generation policy."""

    file_hash: bytes
    n_total: int
    mtime: float

    def is_newer(self, other: Generation) -> bool:
        """Reference policy: more chunks, or as many and a newer mtime, is a new generation."""
        return self.n_total > other.n_total or (
            self.n_total == other.n_total and self.mtime > other.mtime
        )


@dataclass(eq=False, slots=True)
class PartialFile:
    file_id: int
    relative: PurePosixPath
    subdir_str: str
    generation: Generation
    store: Store
    first_seen: float
    last_seen: float
    last_read: float = 0.0  # the idle clock at its last chunk (see Reassembler.expire)
    chunks: set[int] = field(default_factory=set)
    bytes_received: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha512)
    hashed_to: int = 0
    waiting: dict[int, int] = field(default_factory=dict)  # offset -> length, not yet hashed
    # chunk_i -> (offset, length, chunk hash): names the corrupt chunks if the file hash fails
    chunk_hashes: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)
    reopened: int = 0  # times corrupt chunks were dropped to wait for good copies
    mismatch: str = ""  # why, the last time (its failure if no copy comes)
    last_task: Future[object] | None = None  # the last worker task queued for this file
    problem: str = ""
    storage_failed: bool = False
    output_unavailable: bool = False  # the store failed for the folder's sake (disk full)

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.generation.n_total

    def info(self) -> PartialFileInfo:
        return PartialFileInfo(
            self.file_id,
            self.relative,
            len(self.chunks),
            self.generation.n_total,
            self.bytes_received,
            self.first_seen,
            self.last_seen,
        )

    def problem_reason(self) -> FailureReason:
        """Why ``problem`` fails the file: the output folder, the store, or the chunks."""
        if self.output_unavailable:
            return FailureReason.OUTPUT_UNAVAILABLE
        return FailureReason.STORAGE if self.storage_failed else FailureReason.INCONSISTENT

    def failure(self, reason: FailureReason, detail: str) -> FileFailure:
        return FileFailure(
            self.file_id, self.relative, reason, detail, len(self.chunks), self.generation.n_total
        )

    def write_and_hash(self, chunk_i: int, offset: int, data: bytes) -> None:
        """Store the bytes and extend the hashed prefix."""
        if self.problem:
            return
        if offset < self.hashed_to or offset in self.waiting:
            self.problem = f"chunk {chunk_i} at offset {offset} overlaps another chunk"
            return
        try:
            self.store.write(offset, data)
            if offset != self.hashed_to:
                self.waiting[offset] = len(data)
                return
            # This chunk, then any that arrived early and now follow the prefix.
            self.hasher.update(data)
            self.hashed_to += len(data)
            while self.hashed_to in self.waiting:
                length = self.waiting.pop(self.hashed_to)
                self.hasher.update(self.store.read(self.hashed_to, length))
                self.hashed_to += length
        except StoreError as exc:
            self.problem, self.storage_failed = str(exc), True
            self.output_unavailable = exc.unavailable
        except Exception as exc:  # noqa: BLE001 - a worker task must never raise
            self.problem, self.storage_failed = f"{type(exc).__name__}: {exc}", True

    def finish(self) -> CompletedFile | FileFailure | Reopened:
        """Check the whole file (tiling, SHA-512) and make it final, or discard it."""
        try:
            if not self.problem and (self.waiting or self.hashed_to != self.bytes_received):
                gaps = sorted(self.waiting)[:3]
                self.problem = f"chunks do not tile the file: gap before offsets {gaps}"
            if self.problem:
                return self.discard(self.problem_reason(), self.problem)
            if self.hasher.digest() != self.generation.file_hash:
                bad = self.corrupt_chunks()
                if bad and self.reopened < MAX_REOPEN:
                    self.mismatch = self._mismatch(bad)
                    self._drop(bad)
                    return Reopened(self.file_id, self.mismatch)
                return self.discard(FailureReason.HASH_MISMATCH, self._mismatch(bad))
            buffer, path = self.store.finish(self.hashed_to)
        except StoreError as exc:
            reason = FailureReason.OUTPUT_UNAVAILABLE if exc.unavailable else FailureReason.STORAGE
            return self.discard(reason, str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker task must never raise
            return self.discard(FailureReason.STORAGE, f"{type(exc).__name__}: {exc}")
        return CompletedFile(
            file_id=self.file_id,
            subdir_str=self.subdir_str,
            filename=self.relative.name,
            file_hash=self.generation.file_hash,
            n_chunks=self.generation.n_total,
            size=self.hashed_to,
            file_mtime=self.generation.mtime,
            buffer=buffer,
            path=path,
            first_seen=self.first_seen,
            identity=getattr(self.store, "identity", None),
        )

    def corrupt_chunks(self) -> list[int]:
        """The chunks whose stored bytes do not match their own chunk hash."""
        return [
            chunk_i
            for chunk_i, (offset, length, digest) in sorted(self.chunk_hashes.items())
            if hashlib.sha512(self.store.read(offset, length)).digest() != digest
        ]

    def _mismatch(self, bad: list[int]) -> str:
        """Why the file hash failed: the chunks whose bytes do not match their own hash."""
        detail = f"SHA-512 of the {self.hashed_to} rebuilt bytes does not match the file hash"
        if bad:
            named = [f"{i} (offset {self.chunk_hashes[i][0]})" for i in bad[:5]]
            shown = ", ".join(named) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            return f"{detail}; corrupt chunk(s), not matching their chunk hash: {shown}"
        return f"{detail}; every chunk matches its chunk hash: the file hash itself is wrong"

    def _drop(self, bad: list[int]) -> None:
        """Forget the corrupt chunks (their copies are awaited) and hash again from the
        start, over what is stored, up to the first one missing."""
        for chunk_i in bad:
            _, length, _ = self.chunk_hashes.pop(chunk_i)
            self.chunks.discard(chunk_i)
            self.bytes_received -= length
        self.reopened += 1
        self.hasher = hashlib.sha512()
        self.hashed_to = 0
        self.waiting = {offset: length for offset, length, _ in self.chunk_hashes.values()}
        while self.hashed_to in self.waiting:
            length = self.waiting.pop(self.hashed_to)
            self.hasher.update(self.store.read(self.hashed_to, length))
            self.hashed_to += length

    def discard(self, reason: FailureReason, detail: str) -> FileFailure:
        self.store.discard()
        return self.failure(reason, detail)
