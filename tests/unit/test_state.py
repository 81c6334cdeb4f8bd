"""The state records' pure core: what a transaction writes, what it removes, the names."""

from __future__ import annotations

import pytest

from reproducer.state import FileRecord, FileState, state_topic


def record(path: str, extent: dict[int, int], digest: int = 1) -> FileRecord:
    return FileRecord(path, bytes([digest]) * 64, 3, 1.0e9, ("a", "b"), extent)


def test_a_record_survives_its_encoding() -> None:
    r = record("run 1/ä.h5", {0: 10, 2: 7})
    assert FileRecord.decode(r.encode()) == r
    with pytest.raises(ValueError, match="not a state record"):
        FileRecord.decode(b'{"path": "x"}')


def test_a_file_wholly_below_the_offsets_needs_no_record() -> None:
    state = FileState()
    assert state.plan([record("a", {0: 4, 1: 9})], {0: 5, 1: 10}) == []
    assert len(state) == 0


def test_records_live_until_the_offsets_pass_every_chunk_then_are_tombstoned() -> None:
    state, removed = FileState(), []
    pinned = record("a", {0: 4, 1: 12})
    change = state.plan([pinned], {0: 5, 1: 3}, removed.append)
    assert change == [(pinned.key, pinned.encode())] and len(state) == 1
    assert state.plan([], {0: 5, 1: 12}, removed.append) == []  # offset 12 not passed yet
    assert state.plan([], {0: 5, 1: 13}, removed.append) == [(pinned.key, None)]
    assert removed == [pinned] and len(state) == 0
    # a partition never committed is never passed
    never = record("b", {3: 0})
    state.plan([never], {0: 100, 1: 100})
    assert len(state) == 1


def test_the_same_file_recorded_again_keeps_both_extents() -> None:
    """A file read back from the state and carried again (sent again while its record
    lives): one record, covering every chunk of both."""
    first = record("a", {0: 4})
    state = FileState([first])
    again = FileRecord(first.path, first.file_hash, 3, 1.0e9, ("c",), {1: 9})
    ((key, value),) = state.plan([again], {0: 2, 1: 2})
    merged = FileRecord.decode(value or b"")
    assert key == first.key and merged.extent == {0: 4, 1: 9}
    assert merged.analyses == ("a", "b", "c")


def test_state_topic_names_are_legal_topic_names() -> None:
    assert state_topic("lab", "raw_data") == "lab.raw_data.reproducer-state"
    odd = state_topic("my group/1:x", "raw")
    assert odd == "my_group_1_x.raw.reproducer-state"
    long = state_topic("g" * 300, "raw")
    assert len(long) <= 249 and long.endswith(".reproducer-state")
    assert long != state_topic("g" * 301, "raw")  # a digest keeps them apart
