"""What the results page holds: a bounded window of the newest results and failures.

Pure (no Kafka, no web framework): the feed adds each message read as an :class:`Entry`,
the page asks for pages of them, newest first, through a :class:`Filter`. The window keeps
at most ``max_entries`` results and as many failures, and at most ``max_bytes`` of their
records; older ones are dropped (and counted), never the newest. A client holds one page.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reproducer.errors import ReproducerError
from reproducer.results import parse_time

__all__ = [
    "STATUSES",
    "Entry",
    "Filter",
    "Page",
    "Window",
    "claim_checks",
    "failure_record",
    "field_value",
    "numeric_fields",
]

# ok: a result envelope; raw: a result that is not one (a ported reproducer's own value);
# failed: a dead-letter report (a file that could not be rebuilt, an analysis that failed,
# a chunk message that could not be read)
STATUSES = ("ok", "raw", "failed")
_HEADLINE_FIELDS = 4  # scalar result fields shown in a table row


@dataclass(frozen=True)
class Entry:
    """One message read: ``record`` is what ``reproducer results`` gives for it (a
    failure's report, for a dead-letter message); ``seq`` orders entries as read."""

    seq: int
    status: str
    record: dict[str, Any]
    size: int  # bytes of the message, what the window counts against max_bytes

    @functools.cached_property
    def analysis(self) -> str:
        return str(self.record.get("analysis") or "")

    @functools.cached_property
    def path(self) -> str:
        file = self.record.get("file")
        if isinstance(file, Mapping):
            return str(file.get("relative_path") or "")
        return str(file or self.record.get("key") or "")

    @functools.cached_property
    def timestamp_ms(self) -> int | None:
        value = self.record.get("timestamp")
        return value if isinstance(value, int) else None

    def row(self) -> dict[str, Any]:
        """What a table row shows (the whole record is one request away)."""
        record = self.record
        timing = record.get("timing") if isinstance(record.get("timing"), Mapping) else {}
        row: dict[str, Any] = {
            "seq": self.seq,
            "status": self.status,
            "file": self.path,
            "analysis": self.analysis,
            "version": record.get("version"),
            "produced_at": _iso_ms(self.timestamp_ms),
            "seconds": timing.get("seconds") if isinstance(timing, Mapping) else None,
            "host": record.get("host"),
            "partition": record.get("partition"),
            "offset": record.get("offset"),
            "topic": record.get("topic"),
            "key": record.get("key"),
        }
        if self.status == "failed":
            row["reason"] = _short_reason(record.get("reason"))
            row["kind"] = record.get("kind")
            detail = record.get("detail")
            row["detail"] = detail[:300] if isinstance(detail, str) else None
        else:
            row["headline"] = _headline(record.get("result"))
            row["attachments"] = len(claim_checks(record))
        return row


def _short_reason(reason: Any) -> Any:
    """A reason that holds a traceback, as its kind and its last line (the exception)."""
    if not isinstance(reason, str) or "\n" not in reason:
        return reason
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    kind = reason.split(":", 1)[0] if ":" in lines[0] else ""
    return f"{kind}: {lines[-1]}" if kind and not lines[-1].startswith(kind) else lines[-1]


def _headline(result: Any) -> dict[str, Any]:
    """The first few figures of a result, numbers first (nested ones by their last two
    keys), long text cut short."""
    leaves = [(k, v) for k, v in _leaves(result, "") if isinstance(v, str | int | float | bool)]
    numbers = [(k, v) for k, v in leaves if not isinstance(v, str | bool)]
    out: dict[str, Any] = {}
    for key, value in [*numbers, *(kv for kv in leaves if kv not in numbers)]:
        if len(out) >= _HEADLINE_FIELDS:
            break
        short = value[:39] + "…" if isinstance(value, str) and len(value) > 40 else value
        out.setdefault(".".join(key.strip(".").split(".")[-2:]), short)
    return out


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return when.isoformat(timespec="milliseconds")


def claim_checks(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claim checks a result names (``{"path", "size", "sha256"}`` objects anywhere
    in its ``result``), in document order."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if (
                isinstance(value.get("path"), str)
                and isinstance(value.get("sha256"), str)
                and isinstance(value.get("size"), int)
            ):
                found.append(dict(value))
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(record.get("result"))
    return found


def failure_record(message_value: bytes | None, error_header: str | None) -> dict[str, Any]:
    """A dead-letter message as a record: its JSON report, or, for a chunk message copied
    as it came (not JSON), the reason from its ``reproducer.error`` header."""
    try:
        parsed = json.loads(message_value) if message_value else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("reason" in parsed or "kind" in parsed):
        return dict(parsed)
    return {
        "kind": "poison_message",
        "reason": error_header or "a message that could not be read",
        "size": len(message_value or b""),
    }


@dataclass(frozen=True)
class Filter:
    """Which entries a client wants: all given conditions hold."""

    analysis: str | None = None
    path: str | None = None  # a substring of the file's relative path (or the key)
    status: str | None = None  # one of STATUSES
    since_ms: int | None = None  # produced at or after
    until_ms: int | None = None  # produced before

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filter:
        """From a page's query (``analysis``, ``path``, ``status``, ``since``, ``until``:
        ISO 8601 times); empty values mean no condition. Raises ValueError naming a bad
        one."""
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        return cls(
            analysis=query.get("analysis") or None,
            path=query.get("path") or None,
            status=status,
            since_ms=_ms(query.get("since")),
            until_ms=_ms(query.get("until")),
        )

    def matches(self, entry: Entry) -> bool:
        if self.status is not None and entry.status != self.status:
            return False
        if self.analysis is not None and entry.analysis != self.analysis:
            return False
        if self.path is not None and self.path.lower() not in entry.path.lower():
            return False
        if self.since_ms is not None or self.until_ms is not None:
            ts = entry.timestamp_ms
            if ts is None:
                return False
            if self.since_ms is not None and ts < self.since_ms:
                return False
            if self.until_ms is not None and ts >= self.until_ms:
                return False
        return True


def _ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(parse_time(text).timestamp() * 1000)
    except ReproducerError as exc:
        raise ValueError(str(exc)) from exc


@dataclass
class _Part:
    """Entries of one kind, oldest first, within their own bounds."""

    entries: deque[Entry] = field(default_factory=deque)
    bytes: int = 0
    dropped: int = 0
    seen: int = 0


@dataclass(frozen=True)
class Page:
    entries: list[Entry]  # newest first
    total: int  # matching entries held
    more: bool  # matching entries older than the last of these are held
    upto: int  # the newest seq when the page was made: where a live stream goes on


MAX_ANALYSES = 500  # distinct analysis names counted; more are counted together


class Window:
    """The newest entries, thread-safe: the feed adds, the page reads.

    At most ``max_entries`` results and ``max_entries`` failures (kept apart, so that a
    flood of results never pushes a failure out), and at most ``max_bytes`` of their
    messages in all (the oldest results go first). Held as Python objects, the entries
    take several times their messages' bytes (about 6 KB for a 1 KB result)."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 2**20) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a window holds at least one entry and one byte")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._lock = threading.Lock()
        self._results, self._failures = _Part(), _Part()
        self._seq = 0
        self._analyses: dict[str, int] = {}

    def add(self, status: str, record: dict[str, Any], size: int) -> Entry:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        with self._lock:
            self._seq += 1
            entry = Entry(self._seq, status, record, max(size, 1))
            part = self._failures if status == "failed" else self._results
            part.entries.append(entry)
            part.bytes += entry.size
            part.seen += 1
            if entry.analysis:
                name = entry.analysis
                if name not in self._analyses and len(self._analyses) >= MAX_ANALYSES:
                    name = "(others)"
                self._analyses[name] = self._analyses.get(name, 0) + 1
            while len(part.entries) > self.max_entries:
                self._drop(part)
            # the oldest results go first; the newest entry of each kind always stays
            while self._results.bytes + self._failures.bytes > self.max_bytes:
                if len(self._results.entries) > 1:
                    self._drop(self._results)
                elif len(self._failures.entries) > 1:
                    self._drop(self._failures)
                else:
                    break
            return entry

    @staticmethod
    def _drop(part: _Part) -> None:
        old = part.entries.popleft()
        part.bytes -= old.size
        part.dropped += 1

    @property
    def last_seq(self) -> int:
        return self._seq

    def get(self, seq: int) -> Entry | None:
        with self._lock:
            for part in (self._results, self._failures):
                entries = part.entries
                if entries and entries[0].seq <= seq <= entries[-1].seq:
                    # seqs ascend within a part: bisect over the deque
                    lo, hi = 0, len(entries) - 1
                    while lo <= hi:
                        mid = (lo + hi) // 2
                        found = entries[mid].seq
                        if found == seq:
                            return entries[mid]
                        lo, hi = (mid + 1, hi) if found < seq else (lo, mid - 1)
        return None

    def page(self, where: Filter, *, before: int | None = None, limit: int = 100) -> Page:
        """Up to ``limit`` matching entries older than ``before`` (a ``seq``; ``None``:
        the newest), newest first; how many match in all; whether older ones match."""
        chosen: list[Entry] = []
        total, more = 0, False
        held, upto = self._snapshot(where.status)
        for entry in held:
            if not where.matches(entry):
                continue
            total += 1
            if before is None or entry.seq < before:
                if len(chosen) < limit:
                    chosen.append(entry)
                else:
                    more = True
        return Page(chosen, total, more, upto)

    def since(self, after: int, where: Filter, limit: int = 500) -> tuple[list[Entry], int, int]:
        """Matching entries newer than ``after`` (a ``seq``), oldest first, at most
        ``limit`` (the newest of them); the newest ``seq`` looked at, the ``after`` of the
        next call (no entry is seen twice or missed between calls); and how many matched
        (more than returned when over ``limit``)."""
        held, upto = self._snapshot(where.status, newer_than=after)
        newer = [e for e in held if where.matches(e)]
        matched = len(newer)
        newer = newer[:limit]
        newer.reverse()
        return newer, max(upto, after), matched

    def entries(self, where: Filter) -> list[Entry]:
        """Every matching entry held, oldest first."""
        held, _ = self._snapshot(where.status)
        found = [e for e in held if where.matches(e)]
        found.reverse()
        return found

    def _snapshot(self, status: str | None, newer_than: int = 0) -> tuple[list[Entry], int]:
        """The entries of ``status`` newer than ``newer_than``, newest first, and the
        newest seq; taken under the lock (the feed may add meanwhile), without copying
        the entries older than asked for."""
        parts = []
        with self._lock:
            if status != "failed":
                parts.append(self._results)
            if status in (None, "failed"):
                parts.append(self._failures)
            lists = []
            for part in parts:
                found = []
                for entry in reversed(part.entries):
                    if entry.seq <= newer_than:
                        break
                    found.append(entry)
                lists.append(found)
            upto = self._seq
        if len(lists) == 1:
            return lists[0], upto
        return list(heapq.merge(*lists, key=lambda e: -e.seq)), upto

    def counts(self) -> dict[str, Any]:
        """For the page's header: what was read and what is held."""
        with self._lock:
            return {
                "results_read": self._results.seen,
                "results_held": len(self._results.entries),
                "results_dropped": self._results.dropped,
                "failures_read": self._failures.seen,
                "failures_held": len(self._failures.entries),
                "failures_dropped": self._failures.dropped,
                "bytes_held": self._results.bytes + self._failures.bytes,
                "analyses": dict(sorted(self._analyses.items())),
            }


def numeric_fields(entries: Iterable[Entry], limit: int = 200) -> list[str]:
    """The numeric fields of these results, as dotted paths into the record
    (``result.peaks.0.position``: list items by their index, the first few of each list)."""
    seen: dict[str, None] = {}
    for entry in entries:
        for key, value in _leaves(entry.record.get("result"), "result"):
            if isinstance(value, int | float) and not isinstance(value, bool):
                seen[key] = None
                if len(seen) >= limit:
                    return list(seen)
    for extra in ("timing.seconds", "file.size"):
        seen.setdefault(extra, None)
    return list(seen)


def _leaves(value: Any, prefix: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 8:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value[:4]):
            yield from _leaves(item, f"{prefix}.{i}", depth + 1)
    else:
        yield prefix, value


def field_value(record: Mapping[str, Any], path: str) -> float | None:
    """The number at a dotted path (as :func:`numeric_fields` names them), or None."""
    value: Any = record
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
