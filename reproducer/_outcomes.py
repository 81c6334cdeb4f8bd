"""What the reassembler reports: finished files, failed files, and partial-file snapshots."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeAlias

from reproducer.chunk import result_key as _result_key

__all__ = ["CompletedFile", "FailureReason", "FileFailure", "Outcome", "PartialFileInfo"]


class FailureReason(enum.Enum):
    HASH_MISMATCH = "hash_mismatch"
    INCONSISTENT = "inconsistent"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    STORAGE = "storage"
    # the output folder failed (disk full, read-only, I/O error): not the file's fault
    OUTPUT_UNAVAILABLE = "output_unavailable"
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
    first_seen: float = 0.0  # the reassembler's clock when the first chunk arrived
    identity: tuple[int, int, int] | None = None  # of the file on disk: inode, size, mtime ns
    # memory mode, a larger file: its bytes in a file in shared memory on this node
    # (``buffer`` is then None), which the ingest removes once the file is finished
    shared: Path | None = None

    @property
    def relative_path(self) -> PurePosixPath:
        return PurePosixPath(self.subdir_str, self.filename)

    @property
    def result_key(self) -> str:
        return _result_key(self.subdir_str, self.filename)

    def read_bytes(self) -> bytes:
        """The file's bytes, from memory if held there, else read back from disk (or from
        shared memory)."""
        if self.buffer is not None:
            return bytes(self.buffer)
        path = self.path if self.path is not None else self.shared
        assert path is not None
        return path.read_bytes()


Outcome: TypeAlias = CompletedFile | FileFailure
"""How a file ended."""


@dataclass(frozen=True, slots=True)
class PartialFileInfo:
    file_id: int
    relative_path: PurePosixPath
    n_chunks_received: int
    n_total_chunks: int
    bytes_received: int
    first_seen: float
    last_seen: float
