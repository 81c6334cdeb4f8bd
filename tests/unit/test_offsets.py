"""The offset tracker never returns an unsafe offset and always advances when it may."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproducer.offsets import OffsetTracker

# A run: consume messages (partition, file or None) and finish files, interleaved.
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("consume"), st.integers(0, 3), st.one_of(st.none(), st.integers(1, 8))),
        st.tuples(st.just("finish"), st.integers(1, 8), st.none()),
    ),
    max_size=120,
)


def _replay(
    steps: list[tuple[str, int, int | None]], check_every_step: bool
) -> tuple[OffsetTracker, dict, set]:
    tracker = OffsetTracker()
    consumed: dict[int, list[tuple[int, int | None]]] = {}
    finished: set[int] = set()
    recorded: set[int] = set()
    for action, a, b in steps:
        if action == "consume":
            partition, file_id = a, b
            if file_id in finished:
                file_id = None  # the core never hands out an id again once it finished
            log = consumed.setdefault(partition, [])
            offset = (log[-1][0] + 1 + (len(log) % 3)) if log else 5 * partition
            log.append((offset, file_id))
            tracker.record(partition, offset, file_id)
            if file_id is not None:
                recorded.add(file_id)
        elif a in recorded:
            finished.add(a)
            tracker.finish(a)
        if check_every_step:
            _check_safe(tracker, consumed, finished)
    return tracker, consumed, finished


def _check_safe(tracker: OffsetTracker, consumed: dict, finished: set) -> None:
    safe = tracker.safe_offsets()
    assert set(safe) == set(consumed)
    for partition, log in consumed.items():
        unfinished = [o for o, f in log if f is not None and f not in finished]
        # never at or above the lowest offset whose file is unfinished...
        if unfinished:
            assert safe[partition] == min(unfinished)
        else:
            # ...and all the way to "last consumed + 1" when nothing below is pending
            assert safe[partition] == log[-1][0] + 1


@settings(max_examples=400, deadline=None)
@given(_steps)
def test_never_unsafe_and_always_advances(steps: list) -> None:
    _replay(steps, check_every_step=True)


@settings(max_examples=200, deadline=None)
@given(_steps)
def test_finishing_everything_releases_everything(steps: list) -> None:
    tracker, consumed, _ = _replay(steps, check_every_step=False)
    for file_id in range(1, 9):
        tracker.finish(file_id)
    safe = tracker.safe_offsets()
    for partition, log in consumed.items():
        assert safe[partition] == log[-1][0] + 1
    assert tracker.n_pending_messages == 0


@settings(max_examples=200, deadline=None)
@given(_steps)
def test_advanced_until_confirmed_and_monotonic(steps: list) -> None:
    tracker = OffsetTracker()
    last: dict[int, int] = {}
    offsets: dict[int, int] = {}
    recorded: set[int] = set()
    for action, a, b in steps:
        if action == "consume":
            offsets[a] = offsets.get(a, -1) + 1
            tracker.record(a, offsets[a], b)
            if b is not None:
                recorded.add(b)
        elif a in recorded:
            tracker.finish(a)
        moved = tracker.advanced()
        assert tracker.advanced() == moved  # offered again until confirmed
        for partition, offset in moved.items():
            assert offset > last.get(partition, -1)
            last[partition] = offset
        tracker.confirm(moved)
        assert tracker.committed == {**tracker.committed, **moved}
    assert tracker.advanced() == {}


def test_one_file_across_partitions() -> None:
    tracker = OffsetTracker()
    tracker.record(0, 0, 1)
    tracker.record(1, 0, 2)
    tracker.record(1, 1, 1)
    tracker.record(2, 7, None)
    assert tracker.safe_offsets() == {0: 0, 1: 0, 2: 8}
    tracker.finish(2)
    assert tracker.safe_offsets() == {0: 0, 1: 1, 2: 8}
    assert tracker.is_pending(1) and not tracker.is_pending(2)
    tracker.finish(1)
    assert tracker.safe_offsets() == {0: 1, 1: 2, 2: 8}


def test_offsets_must_increase() -> None:
    tracker = OffsetTracker()
    tracker.record(0, 10, 1)
    with pytest.raises(ValueError, match="already recorded"):
        tracker.record(0, 10, 2)


def test_forget_partition_releases_its_files() -> None:
    tracker = OffsetTracker()
    tracker.record(0, 0, 1)
    tracker.record(1, 0, 1)
    tracker.forget_partition(0)
    assert tracker.safe_offsets() == {1: 0}
    tracker.finish(1)
    assert tracker.safe_offsets() == {1: 1}


def test_a_file_finished_before_it_is_recorded_does_not_pin() -> None:
    tracker = OffsetTracker()
    tracker.finish(9)
    tracker.record(0, 3, 9)
    assert tracker.safe_offsets() == {0: 4}


def test_lag_counts_consumed_messages_not_committed() -> None:
    tracker = OffsetTracker()
    for offset in range(100, 110):  # a restart: consumption starts at the committed offset
        tracker.record(0, offset, offset - 100 if offset % 2 else None)
    tracker.record(1, 0, None)
    assert tracker.lag() == 11
    tracker.finish(1)  # the messages at 101 (file 1) and 103 (file 3) own their files
    moved = tracker.advanced()
    assert moved == {0: 103, 1: 1}
    tracker.confirm(moved)
    assert tracker.lag() == 110 - 103


@settings(max_examples=400, deadline=None)
@given(_steps)
def test_a_file_is_covered_exactly_when_the_safe_offsets_pass_all_its_messages(
    steps: list,
) -> None:
    """Exactly once commits a result only with offsets that cover its file whole: a
    finished file is reported covered if and only if every message of it is below the
    safe offset of its partition."""
    tracker, consumed, finished = _replay(steps, check_every_step=False)
    safe = tracker.safe_offsets()
    for file_id in finished:
        whole = all(
            offset < safe[partition]
            for partition, log in consumed.items()
            for offset, owner in log
            if owner == file_id
        )
        assert tracker.holds(file_id) == (not whole), (file_id, safe)


def test_a_finished_file_behind_an_unfinished_one_is_not_covered() -> None:
    tracker = OffsetTracker()
    tracker.record(0, 0, 1)  # older, unfinished
    tracker.record(0, 1, 2)
    tracker.finish(2)
    assert tracker.advanced() == {0: 0}
    assert tracker.holds(2)  # its result must wait: offset 1 is not committed
    tracker.finish(1)
    assert tracker.advanced() == {0: 2}
    assert not tracker.holds(1) and not tracker.holds(2)


@settings(max_examples=400, deadline=None)
@given(_steps)
def test_a_files_extent_bounds_every_message_of_it(steps: list) -> None:
    """Exactly once, a file whose result is committed while its chunks are not all below
    the offsets gets a state record with its extent: every message of a pending file lies
    at or below its extent in that partition, and the extent is one of its messages."""
    tracker, consumed, _ = _replay(steps, check_every_step=False)
    tracker.advanced()  # releases what is finished and below
    owners = {owner for log in consumed.values() for _, owner in log if owner is not None}
    for owner in owners:
        if not tracker.holds(owner):
            assert tracker.extent(owner) == {}
            continue
        highest = {
            partition: max(offset for offset, o in log if o == owner)
            for partition, log in consumed.items()
            if any(o == owner for _, o in log)
        }
        assert tracker.extent(owner) == highest


def test_a_file_across_partitions_is_committed_with_its_extent() -> None:
    """File 5 has chunks in partitions 1 and 2; partition 2 is held by an older unfinished
    file. Its result commits at once, the offsets pass its chunks in partition 1 only, and
    its extent says which of its chunks a restart would read again (partition 2, offset 1):
    what its state record keeps, until the offsets pass that too."""
    tracker = OffsetTracker()
    tracker.record(1, 0, 3)
    tracker.record(1, 1, 5)
    tracker.record(1, 2, 5)
    tracker.record(2, 0, 4)  # unfinished: holds partition 2
    tracker.record(2, 1, 5)
    assert tracker.extent(5) == {1: 2, 2: 1}
    tracker.finish(3)
    tracker.finish(5)
    offsets = tracker.advanced()
    assert offsets == {1: 3, 2: 0}
    tracker.confirm(offsets)
    assert tracker.extent(5) == {1: 2, 2: 1}  # still pending in partition 2
    tracker.finish(4)
    assert tracker.advanced() == {2: 2}
    assert tracker.extent(5) == {}  # released: wholly below the offsets


def test_a_partition_pinned_by_one_file_keeps_only_what_is_unfinished() -> None:
    """One slow file pins a partition; 100,000 messages of files that finish are read
    behind it. The safe offset stays at the slow file, but the messages kept stay few
    (they grew with every message read: memory unbounded while the partition was
    pinned); once it finishes, everything is committed."""
    tracker = OffsetTracker()
    tracker.record(0, 0, 1)  # the slow file's first chunk
    for offset in range(1, 100_001):
        file_id = offset + 1
        tracker.record(0, offset, file_id)
        tracker.finish(file_id)
        if offset % 1000 == 0:
            assert tracker.advanced() == {0: 0}
            assert tracker.n_pending_messages <= 2 * 4096 + 1000
    tracker.record(0, 100_001, 1)  # its last chunk
    assert tracker.extent(1) == {0: 100_001}
    tracker.finish(1)
    assert tracker.advanced() == {0: 100_002}
    assert tracker.n_pending_messages == 0
