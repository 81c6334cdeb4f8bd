"""The reference's LOGS folder: files in progress and results produced, as CSV.

Same names and ``;``-separated columns as OpenMSIStream, so people and scripts that browse
them keep working: the in-progress CSV is rewritten atomically (a temporary file renamed
over the old one), the results CSV is appended to, a batch of rows every few seconds (a
rewrite would cost more with every result already listed). They
are an audit trail, not the recovery mechanism (Kafka's committed offsets are), with one
use on restart: a result already recorded for the same path and file hash is not produced
again (``results_produced_to_<topic>.hashes``, one ``<sha512 hex> <path>`` a line).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from reproducer._storage import write_atomically

__all__ = ["InProgressLog", "InProgressRow", "ResultsLog", "timestamp"]

_RESULT_COLUMNS = ["filename", "rel_filepath", "n_chunks", "first_message", "processed_at"]
_PROGRESS_COLUMNS = [
    "filename",
    "rel_filepath",
    "status",
    "n_chunks",
    "first_message",
    "most_recent_message",
]


def timestamp(seconds: float) -> str:
    """A wall-clock time as the CSV files show it (ISO 8601, UTC)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def _write_atomically(path: Path, columns: list[str], rows: Iterable[list[object]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    write_atomically(path, buffer.getvalue().encode("utf-8"))


class ResultsLog:
    """``LOGS/results_produced_to_<topic>.csv`` and the hashes of what it lists."""

    def __init__(self, logs_dir: Path, topic: str) -> None:
        self.path = logs_dir / f"results_produced_to_{topic}.csv"
        self._hashes_path = logs_dir / f"results_produced_to_{topic}.hashes"
        self._new_rows: list[list[object]] = []
        self._hashes: TextIO | None = None
        self._produced: set[tuple[str, str]] = set()
        if self._hashes_path.is_file():
            for line in self._hashes_path.read_text(encoding="utf-8").splitlines():
                digest, _, relative = line.partition(" ")
                self._produced.add((relative, digest))

    def already_produced(self, relative_path: str, file_hash: bytes) -> bool:
        return (relative_path, file_hash.hex()) in self._produced

    def record(
        self,
        filename: str,
        relative_path: str,
        *,
        n_chunks: int,
        file_hash: bytes,
        first_message: float,
        now: float,
    ) -> None:
        self._new_rows.append(
            [filename, relative_path, n_chunks, timestamp(first_message), timestamp(now)]
        )
        self._produced.add((relative_path, file_hash.hex()))
        # At once, not with the CSV's next batch: a result can be committed (exactly once:
        # in its transaction) before the offsets of its file can (an older file in the same
        # partition is unfinished); after a crash this line is what keeps it from being
        # produced a second time. Written through to the kernel, so a killed process
        # loses none.
        if self._hashes is None:
            self._hashes_path.parent.mkdir(parents=True, exist_ok=True)
            self._hashes = self._hashes_path.open("a", encoding="utf-8")
        self._hashes.write(f"{file_hash.hex()} {relative_path}\n")
        self._hashes.flush()

    def flush(self) -> None:
        """Append the CSV rows recorded since the last flush (the cost of a flush does not
        grow with the rows already written), and make both files durable (a power cut
        loses at most what came after the last flush: results produced again, not lost)."""
        if self._hashes is not None:
            os.fsync(self._hashes.fileno())
        if not self._new_rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.is_file() or self.path.stat().st_size == 0
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=";", lineterminator="\n")
            if fresh:
                writer.writerow(_RESULT_COLUMNS)
            writer.writerows(self._new_rows)
            handle.flush()
            os.fsync(handle.fileno())
        self._new_rows = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._hashes is not None:
                self._hashes.close()
                self._hashes = None


@dataclass(frozen=True, slots=True)
class InProgressRow:
    filename: str
    relative_path: str
    status: str
    n_chunks: str  # "received/total"
    first_message: float
    most_recent_message: float


class InProgressLog:
    """``LOGS/consuming_from_<topic>_in_progress_by_<group>.csv``."""

    def __init__(self, logs_dir: Path, topic: str, group: str) -> None:
        self.path = logs_dir / f"consuming_from_{topic}_in_progress_by_{group}.csv"

    def write(self, rows: Iterable[InProgressRow]) -> None:
        _write_atomically(
            self.path,
            _PROGRESS_COLUMNS,
            (
                [
                    r.filename,
                    r.relative_path,
                    r.status,
                    r.n_chunks,
                    timestamp(r.first_message),
                    timestamp(r.most_recent_message),
                ]
                for r in rows
            ),
        )
