"""The page's sources: the results and dead-letter topics, read into a :class:`Window`,
and the pipelines found running, with their lag.

Each topic is read on a thread of its own with the project's reader
(:func:`reproducer.results.messages`: every partition, ``read_committed``, from the
beginning or a start time, following new messages); a topic that does not exist yet is
looked for again every few seconds. Nothing is ever written to Kafka.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.results import as_record, messages
from reproducer.web.window import Window, failure_record

__all__ = ["Feed", "FeedSettings", "RunSource", "runs_on", "with_lags"]

log = logging.getLogger(__name__)

RETRY_S = 3.0  # between tries to read a topic that is missing or unreachable
STATUS_EVERY_S = 3.0  # between looks at the running pipelines and their lag

# the progress of the runs known: a list of dicts as `reproducer status` has them
RunSource = Callable[[], list[dict[str, Any]]]


@dataclass(frozen=True)
class FeedSettings:
    config: KafkaConfig
    results_topic: str
    dead_letter_topic: str | None = None
    since: dt.datetime | None = None


class Feed:
    """Fills a window from Kafka and keeps the progress of the runs ``runs`` finds (none
    without it); ``on_change`` is called (from a reader thread) after entries were added."""

    def __init__(
        self,
        settings: FeedSettings,
        window: Window,
        *,
        runs: RunSource | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings, self.window = settings, window
        self._runs = runs
        self.on_change = on_change
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.topics: dict[str, str] = {}  # topic -> "reading" or why not
        self.runs: list[dict[str, Any]] = []
        self.runs_note = (
            ""
            if runs is not None
            else "progress of a running pipeline: start the page with --ray_address"
        )
        self._next: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset

    def start(self) -> None:
        self._spawn(self._read, self.settings.results_topic, False)
        if self.settings.dead_letter_topic:
            self._spawn(self._read, self.settings.dead_letter_topic, True)
        if self._runs is not None:
            self._spawn(self._watch_runs, self._runs)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "topics": dict(self.topics),
                "runs": list(self.runs),
                "runs_note": self.runs_note,
                "window": self.window.counts(),
            }

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"web-{target.__name__}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _note(self, topic: str, text: str) -> None:
        with self._lock:
            changed = self.topics.get(topic) != text
            self.topics[topic] = text
        if changed and text not in ("reading", "connecting"):
            log.warning("results page: %s: %s", topic, text)

    def _read(self, topic: str, failures: bool) -> None:
        """Read ``topic`` into the window until stopped, trying again while it is missing."""
        while not self._stop.is_set():
            self._note(topic, "connecting")
            try:
                for message in messages(
                    self.settings.config,
                    topic,
                    since=self.settings.since,
                    follow=True,
                    timeout=10.0,
                    stop=self._stop,
                    on_assigned=lambda: self._note(topic, "reading"),
                ):
                    self._add(message, failures)
                return
            except ReproducerError as exc:
                self._note(topic, f"{exc}; trying again")
            except Exception as exc:
                log.exception("results page: reading %s failed", topic)
                self._note(topic, f"reading failed: {exc}; trying again")
            self._stop.wait(RETRY_S)

    def _add(self, message: Any, failures: bool) -> None:
        # after a reading error the topic is read again from the start: what was held
        # already is passed over, not added twice
        partition = (message.topic(), message.partition())
        if message.offset() < self._next.get(partition, 0):
            return
        self._next[partition] = message.offset() + 1
        size = len(message.value() or b"") + len(message.key() or b"")
        if failures:
            headers = dict(message.headers() or [])
            error = headers.get("reproducer.error")
            record = failure_record(
                message.value(), error.decode("utf-8", "replace") if error else None
            )
            where = as_record(message)
            for key in ("topic", "partition", "offset", "timestamp", "key"):
                record[key] = where[key]
            self.window.add("failed", record, size)
        else:
            record = as_record(message)
            self.window.add("ok" if "analysis" in record else "raw", record, size)
        self.on_change()

    def _watch_runs(self, source: RunSource) -> None:
        while not self._stop.is_set():
            try:
                runs, note = source(), ""
            except Exception as exc:  # noqa: BLE001 - shown on the page, tried again
                runs, note = [], f"cannot look for running pipelines: {exc}"
            if not runs and not note:
                note = "no running pipeline found"
            with self._lock:
                self.runs, self.runs_note = runs, note
            self._stop.wait(STATUS_EVERY_S)


def runs_on(config: KafkaConfig, address: str | None) -> RunSource:
    """The pipelines running on the Ray cluster at ``address`` (joined when first asked;
    ``None``: the one this process has joined, as a run's driver has, never a new one),
    each with its lag."""

    def runs() -> list[dict[str, Any]]:
        from reproducer.status import running_pipelines  # noqa: PLC0415 - imports Ray

        return with_lags(config, running_pipelines(address))

    return runs


def with_lags(config: KafkaConfig, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run with ``partitions``: its group's committed offset, end offset and lag per
    partition of its chunk topic."""
    from reproducer.status import partition_lags  # noqa: PLC0415

    out = []
    for found in runs:
        run = dict(found)
        try:
            lags = partition_lags(config, run["topic"], run["group"], timeout=5.0)
            run["partitions"] = [asdict(p) for p in lags]
        except (ReproducerError, KeyError) as exc:
            run["partitions_error"] = str(exc)
        run["seen"] = time.time()
        out.append(run)
    return out
