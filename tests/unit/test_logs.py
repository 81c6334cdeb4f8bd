"""The results CSV: appended in batches, read back after a restart."""

from __future__ import annotations

import csv
from pathlib import Path

from reproducer.logs import ResultsLog


def _record(log: ResultsLog, i: int) -> None:
    log.record(
        f"f{i}.bin",
        f"sub/f{i}.bin",
        n_chunks=1,
        first_message=1_800_000_000.0 + i,
        now=1_800_000_001.0 + i,
    )


def test_rows_are_appended_and_earlier_ones_never_rewritten(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "LOGS", "results")
    log.flush()  # nothing recorded: no file yet
    assert not log.path.exists()
    for i in range(3):
        _record(log, i)
    log.flush()
    first = log.path.read_bytes()
    inode = log.path.stat().st_ino
    for i in range(3, 5):
        _record(log, i)
    log.flush()
    log.flush()  # nothing new: nothing written
    # the same file, its first rows untouched: a flush costs only its new rows
    assert log.path.stat().st_ino == inode
    assert log.path.read_bytes().startswith(first)
    with log.path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert rows[0] == ["filename", "rel_filepath", "n_chunks", "first_message", "processed_at"]
    assert [r[1] for r in rows[1:]] == [f"sub/f{i}.bin" for i in range(5)]
    assert rows[1][3].startswith("2027-01-15T08:00:00")


def test_a_restart_keeps_appending(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "LOGS", "results")
    _record(log, 1)
    _record(log, 2)
    log.flush()
    _record(log, 3)  # its CSV row never flushed: the process is killed

    again = ResultsLog(tmp_path / "LOGS", "results")
    _record(again, 4)
    again.close()
    with again.path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    # the CSV is the audit trail: the row lost with the kill stays lost
    assert [r[1] for r in rows] == ["rel_filepath", "sub/f1.bin", "sub/f2.bin", "sub/f4.bin"]
