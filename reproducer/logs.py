"""The reference's LOGS folder: files in progress and results produced, as CSV.

Same names and ``;``-separated columns as OpenMSIStream, so people and scripts that browse
them keep working: the in-progress CSV is rewritten atomically (a temporary file renamed
over the old one), the results CSV is appended to, a batch of rows every few seconds (a
rewrite would cost more with every result already listed). They
are an audit trail, not the recovery mechanism: Kafka's committed offsets are, with the
group's state records for files committed above them (:mod:`reproducer.state`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

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
    """``LOGS/results_produced_to_<topic>.csv``."""

    def __init__(self, logs_dir: Path, topic: str) -> None:
        self.path = logs_dir / f"results_produced_to_{topic}.csv"
        self._new_rows: list[list[object]] = []

    def record(
        self, filename: str, relative_path: str, *, n_chunks: int, first_message: float, now: float
    ) -> None:
        self._new_rows.append(
            [filename, relative_path, n_chunks, timestamp(first_message), timestamp(now)]
        )

    def flush(self) -> None:
        """Append the CSV rows recorded since the last flush (the cost of a flush does not
        grow with the rows already written), durably."""
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
        self.flush()


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
