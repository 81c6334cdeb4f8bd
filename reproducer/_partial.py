"""One file being rebuilt: its bytes, its running hash, and how it ends.

The methods that touch the bytes (:meth:`PartialFile.write_and_hash`,
:meth:`PartialFile.finish`) may run on the reassembler's worker thread; they never raise,
they record problems. Bookkeeping fields (``chunks``, ``bytes_received``, ``last_seen``)
belong to the caller's thread. The caller adds other copies of chunks (``copies``) while
the file is partial; :meth:`PartialFile.finish` uses them once it is whole.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from reproducer._outcomes import CompletedFile, FailureReason, FileFailure, PartialFileInfo
from reproducer._storage import Buffer, Store, StoreError

__all__ = ["MAX_REOPEN", "Generation", "PartialFile", "Reopened"]

MAX_REOPEN = 3  # times a file drops corrupt chunks to wait for copies before it fails
MAX_COPIES = 2  # different good copies of one chunk kept (beyond it, they are rejected)


@dataclass(frozen=True, slots=True)
class Reopened:
    """A complete file failed its hash because of corrupt chunks, which it dropped: it
    waits, as a partial file again, for good copies of them (until the idle timeout)."""

    file_id: int
    detail: str


@dataclass(frozen=True, slots=True)
class Generation:
    """Identity of one version of a file (its content hash), and what tells which of two
    versions of a path is newer: see :meth:`older_than`."""

    file_hash: bytes
    n_total: int
    mtime: float  # 0 from legacy producers, which send none

    def __str__(self) -> str:
        return f"{self.file_hash[:4].hex()} ({self.n_total} chunks, mtime {self.mtime})"

    def older_than(self, other: Generation, *, completed: bool = False) -> str:
        """Why this version (a different file hash at the same path) is older than
        ``other``, so that its chunks are stale; ``""`` if it is newer and replaces it.

        When both have an mtime and they differ, the newer mtime wins, whatever the chunk
        counts (a file edited to be smaller has fewer chunks). Otherwise (equal mtimes, or
        one missing) it depends on what ``other`` is: against a version being rebuilt, the
        reference policy holds (more chunks, or as many and a newer mtime, is newer); against
        one that ``completed``, any other content is a new version (the file was modified
        and sent again: `cp -p` keeps an mtime, legacy producers always send 0).
        """
        if self.mtime and other.mtime and self.mtime != other.mtime:
            return f"mtime {self.mtime} < {other.mtime}" if self.mtime < other.mtime else ""
        if completed:
            return ""
        if self.n_total != other.n_total:
            return (
                f"{self.n_total} chunks < {other.n_total}" if self.n_total < other.n_total else ""
            )
        if self.mtime > other.mtime:
            return ""
        return f"as many chunks, and mtime {self.mtime} not newer than {other.mtime}"


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
    # chunk_i -> other copies of a stored chunk, each matching its own chunk hash: the good
    # one, should the stored copy prove corrupt when the file hash fails (see finish)
    copies: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    copy_bytes: int = 0
    dropped: dict[int, int] = field(default_factory=dict)  # offset -> length, of corrupt chunks
    reopened: int = 0  # times corrupt chunks were dropped to wait for good copies
    mismatch: str = ""  # why, the last time (its failure if no copy comes)
    last_task: Future[object] | None = None  # the last worker task queued for this file
    problem: str = ""
    storage_failed: bool = False
    output_unavailable: bool = False  # the store failed for the folder's sake (disk full)

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.generation.n_total

    @property
    def held_bytes(self) -> int:
        """What this file counts against the memory budget: what its store holds and
        claims (see :class:`~reproducer._storage.MemoryStore`), and the copies it keeps."""
        return self.store.held_bytes + self.store.claimed_bytes + self.copy_bytes

    @property
    def excess(self) -> int:
        """What it counts beyond the bytes that arrived for it."""
        return self.held_bytes - self.bytes_received - self.copy_bytes

    def another_copy(
        self, chunk_i: int, offset: int, data: Buffer, chunk_hash: bytes
    ) -> tuple[bool, str]:
        """A chunk whose index is stored already: whether it is kept (it differs from the
        copies held and matches its own chunk hash: the stored copy may be the corrupt one,
        see :meth:`finish`), and if not, why it is rejected (``""``: the same bytes are held,
        a duplicate). The worker must be done with the stored bytes."""
        stored_offset, length, _ = self.chunk_hashes[chunk_i]
        kept = self.copies.get(chunk_i, [])
        if offset == stored_offset and (
            data == self.store.read(offset, length) or any(data == c for c, _ in kept)
        ):
            return False, ""
        if hashlib.sha512(data).digest() != chunk_hash:
            return False, (
                f"chunk {chunk_i} differs from the copy stored and does not match its chunk "
                "hash: corrupt"
            )
        if (offset, len(data)) != (stored_offset, length):
            return False, (
                f"chunk {chunk_i} at offset {offset} ({len(data)} bytes) does not fit where "
                f"the copy stored is: offset {stored_offset} ({length} bytes)"
            )
        if len(kept) >= MAX_COPIES:  # only a liar sends so many different good copies
            return False, (
                f"chunk {chunk_i}: {MAX_COPIES} other copies that match their chunk hashes are "
                "held already"
            )
        self.copies.setdefault(chunk_i, []).append((bytes(data), chunk_hash))
        self.copy_bytes += len(data)
        return True, ""

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

    def write_and_hash(self, chunk_i: int, offset: int, data: Buffer) -> None:
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
                self.store.hash_range(self.hasher, self.hashed_to, length)
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
                if self._use_copies(bad):
                    bad = self.corrupt_chunks()
                if self.hasher.digest() != self.generation.file_hash:
                    if bad and self.reopened < MAX_REOPEN:
                        self.mismatch = self._mismatch(bad)
                        self._drop(bad)
                        return Reopened(self.file_id, self.mismatch)
                    return self.discard(FailureReason.HASH_MISMATCH, self._mismatch(bad))
            buffer, path = self.store.finish(self.hashed_to)
            self._free_copies()
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
            shared=getattr(self.store, "shared", None),
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

    def _use_copies(self, bad: list[int]) -> bool:
        """Put a good copy kept for each corrupt chunk that has one over it, and hash the
        file again; whether there was any."""
        used = False
        for chunk_i in bad:
            kept = self.copies.pop(chunk_i, None)
            if not kept:
                continue
            offset, length, declared = self.chunk_hashes[chunk_i]
            # a copy with the hash the stored one declared, if any: else any good one
            data, digest = next((c for c in kept if c[1] == declared), kept[0])
            self.copy_bytes -= sum(len(c) for c, _ in kept)
            self.store.rewrite(offset, data)
            self.chunk_hashes[chunk_i] = (offset, length, digest)
            used = True
        if used:
            self._rehash()
        return used

    def _free_copies(self) -> None:
        self.copies = {}
        self.copy_bytes = 0

    def _drop(self, bad: list[int]) -> None:
        """Forget the corrupt chunks (their copies are awaited) and hash again from the
        start, over what is stored, up to the first one missing."""
        for chunk_i in bad:
            offset, length, _ = self.chunk_hashes.pop(chunk_i)
            self.chunks.discard(chunk_i)
            self.bytes_received -= length
            self.dropped[offset] = length  # its memory stays taken: a copy goes there
        self.reopened += 1
        self._rehash()

    def _rehash(self) -> None:
        """Hash again from the start, over what is stored, up to the first chunk missing."""
        self.hasher = hashlib.sha512()
        self.hashed_to = 0
        self.waiting = {offset: length for offset, length, _ in self.chunk_hashes.values()}
        while self.hashed_to in self.waiting:
            length = self.waiting.pop(self.hashed_to)
            self.store.hash_range(self.hasher, self.hashed_to, length)
            self.hashed_to += length

    def discard(self, reason: FailureReason, detail: str) -> FileFailure:
        self.store.discard()
        self._free_copies()
        return self.failure(reason, detail)
