"""Which consumed offsets are safe to commit.

Chunks of many files interleave in every partition, and one file's chunks spread over all
partitions. An offset may be committed (Kafka commits mean "next offset to read") only when
every message below it belongs to finished work: a file whose result the broker
acknowledged, or that was recorded as failed, expired or poison. Otherwise a crash would
skip chunks whose result was never delivered.

Pure: no Kafka. Per partition it keeps the pending (offset, file) pairs in consumption
order, so each query costs amortised O(1) per message.

>>> t = OffsetTracker()
>>> t.record(0, 10, file_id=1)
>>> t.record(0, 11, file_id=2)
>>> t.finish(2)
>>> t.safe_offsets()
{0: 10}
>>> t.finish(1)
>>> t.advanced()
{0: 12}
>>> t.confirm({0: 12})
>>> t.advanced()
{}
"""

from __future__ import annotations

from collections import deque

__all__ = ["OffsetTracker"]

_COMPACT_MIN = 4096  # pending messages of a partition before finished ones are dropped


class OffsetTracker:
    """Maps consumed (partition, offset) pairs to files and answers safe commit offsets.

    Contract: for each partition, :meth:`record` is called with increasing offsets (after a
    seek or a revocation, call :meth:`forget_partition` first).
    """

    def __init__(self) -> None:
        self._pending: dict[int, deque[tuple[int, int]]] = {}
        self._next: dict[int, int] = {}  # partition -> last consumed offset + 1
        self._refs: dict[int, int] = {}  # file id -> pending messages that reference it
        self._finished: set[int] = set()
        self._committed: dict[int, int] = {}
        self._first: dict[int, int] = {}  # partition -> first offset recorded
        # file id -> partition -> its highest offset there, while the file is pending
        self._extent: dict[int, dict[int, int]] = {}
        self._compact_at: dict[int, int] = {}  # partition -> queue length that compacts it

    def record(self, partition: int, offset: int, file_id: int | None) -> None:
        """A message was consumed; ``file_id`` owns it, or ``None`` if nothing does."""
        last = self._next.get(partition)
        if last is not None and offset < last:
            raise ValueError(
                f"offset {offset} of partition {partition} is below {last}, already recorded"
            )
        self._next[partition] = offset + 1
        self._first.setdefault(partition, offset)
        if file_id is None or file_id in self._finished:
            return
        self._pending.setdefault(partition, deque()).append((offset, file_id))
        self._refs[file_id] = self._refs.get(file_id, 0) + 1
        self._extent.setdefault(file_id, {})[partition] = offset

    def extent(self, file_id: int) -> dict[int, int]:
        """Per partition, the highest offset of a message of the file (while any is
        pending): all of them lie below offsets past these."""
        return dict(self._extent.get(file_id, {}))

    def finish(self, file_id: int) -> None:
        """The file's work is done (result acknowledged, or recorded as failed).

        A file finished before any of its messages is recorded stays finished, so those
        messages never pin the partition.
        """
        self._finished.add(file_id)

    def is_pending(self, file_id: int) -> bool:
        return file_id in self._refs and file_id not in self._finished

    def holds(self, file_id: int) -> bool:
        """Whether a message of the file is still at or above a safe offset (as of the last
        :meth:`safe_offsets` or :meth:`advanced`): a commit of those offsets would not
        cover the whole file."""
        return file_id in self._refs

    def safe_offsets(self) -> dict[int, int]:
        """Per partition seen so far, the highest offset that is safe to commit."""
        return {p: self._safe(p) for p in self._next}

    def advanced(self) -> dict[int, int]:
        """Safe offsets beyond the last confirmed commit: what to commit now.

        They stay "advanced" until :meth:`confirm` says the broker took them, so a commit
        that failed is simply offered again.
        """
        moved = {}
        for partition in self._next:
            safe = self._safe(partition)
            if safe > self._committed.get(partition, -1):
                moved[partition] = safe
        return moved

    def confirm(self, committed: dict[int, int]) -> None:
        """The broker accepted the commit of these offsets."""
        for partition, offset in committed.items():
            if partition in self._next:
                self._committed[partition] = max(offset, self._committed.get(partition, -1))
                # what is below a commit is done: release it
                queue = self._pending.get(partition)
                while queue and queue[0][0] < offset and queue[0][1] in self._finished:
                    _, file_id = queue.popleft()
                    self._release(file_id)

    def position(self, partition: int) -> int | None:
        """The last consumed offset + 1, or ``None`` if nothing was consumed there."""
        return self._next.get(partition)

    def lag(self) -> int:
        """Messages consumed and not committed yet, over all partitions."""
        return sum(n - self._committed.get(p, self._first[p]) for p, n in self._next.items())

    @property
    def committed(self) -> dict[int, int]:
        """The offsets last confirmed as committed, per partition."""
        return dict(self._committed)

    def forget_partition(self, partition: int) -> None:
        """The partition was revoked: drop what was recorded for it."""
        for _, file_id in self._pending.pop(partition, ()):
            self._release(file_id)
        self._next.pop(partition, None)
        self._committed.pop(partition, None)
        self._first.pop(partition, None)
        self._compact_at.pop(partition, None)

    @property
    def n_pending_messages(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def _safe(self, partition: int) -> int:
        queue = self._pending.get(partition)
        while queue and queue[0][1] in self._finished:
            _, file_id = queue.popleft()
            self._release(file_id)
        if queue and len(queue) > self._compact_at.get(partition, _COMPACT_MIN):
            queue = self._compact(partition, queue)
        return queue[0][0] if queue else self._next[partition]

    def _compact(self, partition: int, queue: deque[tuple[int, int]]) -> deque[tuple[int, int]]:
        """Drop the finished files' messages from behind an unfinished one: a partition
        pinned by one slow file would otherwise keep every message read after it. Only
        the unfinished ones decide the safe offset (and a finished file's extent was
        taken when it finished). Amortised: again only once the queue has doubled."""
        kept: deque[tuple[int, int]] = deque()
        for entry in queue:
            if entry[1] in self._finished:
                self._release(entry[1])
            else:
                kept.append(entry)
        self._pending[partition] = kept
        self._compact_at[partition] = max(_COMPACT_MIN, 2 * len(kept))
        return kept

    def _release(self, file_id: int) -> None:
        refs = self._refs[file_id] - 1
        if refs:
            self._refs[file_id] = refs
        else:
            del self._refs[file_id]
            self._finished.discard(file_id)
            self._extent.pop(file_id, None)
