"""What a running pipeline tells the world: heartbeat and log messages in the reference's
formats, Ray metrics, a progress line (or periodic log lines), and the console commands.

All of it runs on the driver, from the numbers the loop already has (:class:`Progress`);
none of it can stop the pipeline: a heartbeat that cannot be produced is logged, not raised.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from reproducer.config import KafkaConfig
from reproducer.kafka_log import logged
from reproducer.results import strict_json

__all__ = ["Console", "Progress", "Telemetry", "TelemetrySettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Cumulative counts of one run, as the driver sees them."""

    n_messages: int = 0
    n_bytes_read: int = 0
    n_files_read: int = 0
    n_files_failed: int = 0
    n_results: int = 0
    n_result_bytes: int = 0
    n_in_analysis: int = 0
    n_partial_files: int = 0
    held_bytes: int = 0
    commit_lag: int = 0  # messages consumed but not committed yet
    # per analysis: (name, actors running, starting, waiting for a node, files waiting)
    actors: tuple[tuple[str, int, int, int, int], ...] = ()

    def line(self, mb_per_s: float) -> str:
        return (
            f"{self.n_results} results, {self.n_files_failed} failed, "
            f"{self.n_in_analysis} in analysis, {self.n_partial_files} partial; "
            f"{self.n_messages} messages, {self.n_bytes_read / 1e6:.1f} MB read "
            f"({mb_per_s:.1f} MB/s), {self.held_bytes / 2**20:.0f} MiB held, "
            f"{self.commit_lag} uncommitted{actors_line(self.actors)}"
        )


def actors_line(actors: Iterable[Sequence[Any]]) -> str:
    """``; actors: fft 3 (+1 starting, +2 waiting for a node, 40 files waiting), sha 1``,
    or empty."""
    parts = []
    for name, running, starting, pending, waiting in actors:
        more = [f"+{starting} starting"] if starting else []
        more += [f"+{pending} waiting for a node"] if pending else []
        more += [f"{waiting} files waiting"] if waiting else []
        parts.append(f"{name} {running}" + (f" ({', '.join(more)})" if more else ""))
    return f"; actors: {', '.join(parts)}" if parts else ""


@dataclass(frozen=True)
class TelemetrySettings:
    program_id: str
    heartbeat_topic: str | None = None
    heartbeat_interval: float = 900.0
    log_topic: str | None = None
    log_interval: float = 60.0
    update_seconds: float = 300.0
    progress_line: bool | None = None  # None: when stderr is a terminal
    ray_metrics: bool = True
    topic: str = ""  # the chunk topic, a tag of every metric


class _LogBuffer(logging.Handler):
    """Keeps the last log records for the next log message (bounded)."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__(logging.INFO)
        self.records: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    def take(self) -> list[str]:
        out = list(self.records)
        self.records.clear()
        return out


# Seconds of one file's analysis: from a quick look at a small file to a heavy image
ANALYSIS_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)


class _RayMetrics:
    """Counters, gauges and a histogram in Ray's metrics system (the dashboard,
    Prometheus as ``ray_reproducer_*``), tagged with the program id and the chunk topic;
    per analysis, the time each file took and how many ended well or not."""

    def __init__(self, program: str, topic: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram  # noqa: PLC0415

        tags = {"program": program, "topic": topic}

        def tagged(metric: Any) -> Any:
            metric.set_default_tags(tags)
            return metric

        def counter(name: str, what: str) -> Any:
            return tagged(Counter(f"reproducer_{name}", description=what, tag_keys=tuple(tags)))

        self._counters = {
            "n_messages": counter("chunks", "chunk messages consumed"),
            "n_bytes_read": counter("bytes_read", "bytes of chunk messages consumed"),
            "n_files_read": counter("files_completed", "files fully rebuilt"),
            "n_files_failed": counter("files_failed", "files that failed or were poison"),
            "n_results": counter("results_acknowledged", "results the broker acknowledged"),
        }

        def gauge(name: str, what: str) -> Any:
            return tagged(Gauge(f"reproducer_{name}", description=what, tag_keys=tuple(tags)))

        self._gauges = {
            "held_bytes": gauge("bytes_held", "bytes of files held"),
            "commit_lag": gauge("commit_lag", "messages consumed and not committed"),
            "n_in_analysis": gauge("files_in_analysis", "files in analysis"),
        }
        per_analysis = (*tags, "analysis")
        self._actors = tagged(
            Gauge(
                "reproducer_analysis_actors",
                description="analysis actors by state (running, starting, pending: waiting for "
                "a node), and files waiting for one (waiting)",
                tag_keys=(*per_analysis, "state"),
            )
        )
        self._seconds = tagged(
            Histogram(
                "reproducer_analysis_seconds",
                description="seconds one file's analysis took on its actor",
                boundaries=list(ANALYSIS_SECONDS),
                tag_keys=per_analysis,
            )
        )
        self._analysed = tagged(
            Counter(
                "reproducer_analyses",
                description="files an analysis ended with, by outcome (ok, failed)",
                tag_keys=(*per_analysis, "outcome"),
            )
        )
        self._last = Progress()

    def analysed(self, analysis: str, seconds: float, ok: bool) -> None:
        self._seconds.observe(seconds, tags={"analysis": analysis})
        self._analysed.inc(1, tags={"analysis": analysis, "outcome": "ok" if ok else "failed"})

    def update(self, progress: Progress) -> None:
        for name, metric in self._counters.items():
            delta = getattr(progress, name) - getattr(self._last, name)
            if delta > 0:
                metric.inc(delta)
        for name, metric in self._gauges.items():
            metric.set(getattr(progress, name))
        for analysis, *values in progress.actors:
            for state, value in zip(
                ("running", "starting", "pending", "waiting"), values, strict=True
            ):
                self._actors.set(value, tags={"analysis": analysis, "state": state})
        self._last = progress


class Telemetry:
    """Call :meth:`tick` from the driver loop; :meth:`close` at the end."""

    def __init__(self, settings: TelemetrySettings, config: KafkaConfig) -> None:
        self.settings = settings
        self._producer: Any = None
        if settings.heartbeat_topic or settings.log_topic:
            from confluent_kafka import Producer  # noqa: PLC0415

            self._producer = Producer(
                logged({**config.broker, **config.heartbeat, **config.log, "linger.ms": 100})
            )
        self._log_buffer: _LogBuffer | None = None
        if settings.log_topic:
            self._log_buffer = _LogBuffer()
            logging.getLogger().addHandler(self._log_buffer)
        self._metrics: _RayMetrics | None = None
        if settings.ray_metrics:
            try:
                self._metrics = _RayMetrics(settings.program_id, settings.topic)
            except Exception as exc:  # noqa: BLE001 - metrics are optional
                log.warning("Ray metrics are off: %s", exc)
        tty = sys.stderr.isatty()
        self._line = tty if settings.progress_line is None else settings.progress_line
        now = time.monotonic()
        self._last_heartbeat = self._last_logs = self._last_update = now
        self._last_metrics = self._last_line = 0.0
        self._rate = _Rate()
        self._heartbeat_base = Progress()
        self.last = Progress()

    def analysed(self, analysis: str, seconds: float, ok: bool) -> None:
        """One file's analysis ended (``ok``: with a result to produce)."""
        if self._metrics is not None:
            self._metrics.analysed(analysis, seconds, ok)

    def tick(self, progress: Progress) -> None:
        now = time.monotonic()
        self.last = progress
        mb_per_s = self._rate.update(now, progress.n_bytes_read)
        if self._metrics is not None and now - self._last_metrics >= 1.0:
            self._last_metrics = now
            self._metrics.update(progress)
        if self._line and now - self._last_line >= 1.0:
            self._last_line = now
            sys.stderr.write(f"\r\033[K{progress.line(mb_per_s)}")
            sys.stderr.flush()
        elif not self._line and now - self._last_update >= self.settings.update_seconds:
            self._last_update = now
            log.info("%s", progress.line(mb_per_s))
        if self.settings.heartbeat_topic and (
            now - self._last_heartbeat >= self.settings.heartbeat_interval
        ):
            self._last_heartbeat = now
            self._heartbeat(progress)
        if self.settings.log_topic and now - self._last_logs >= self.settings.log_interval:
            self._last_logs = now
            self._logs()
        if self._producer is not None:
            self._producer.poll(0)

    def report(self, stream: TextIO) -> None:
        """The ``c``/``check`` console command."""
        stream.write(f"\n{self.last.line(self._rate.value)}\n")
        stream.flush()

    def close(self) -> None:
        if self._line:
            sys.stderr.write("\n")
        if self.settings.heartbeat_topic:
            self._heartbeat(self.last)
        if self.settings.log_topic:
            self._logs()
        if self._log_buffer is not None:
            logging.getLogger().removeHandler(self._log_buffer)
        if self._producer is not None and self._producer.flush(10):
            log.warning("some heartbeat or log messages were not delivered")

    def _heartbeat(self, progress: Progress) -> None:
        """Counts since the last heartbeat, in the reference's JSON."""
        base, self._heartbeat_base = self._heartbeat_base, progress
        value = {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "n_messages_read": progress.n_messages - base.n_messages,
            "n_messages_processed": progress.n_messages - base.n_messages,
            "n_messages_produced": progress.n_results - base.n_results,
            "n_bytes_read": progress.n_bytes_read - base.n_bytes_read,
            "n_bytes_processed": progress.n_bytes_read - base.n_bytes_read,
            "n_bytes_produced": progress.n_result_bytes - base.n_result_bytes,
        }
        self._send(self.settings.heartbeat_topic, "heartbeat", value)

    def _logs(self) -> None:
        assert self._log_buffer is not None
        value = {"timestamp": time.time(), "messages": self._log_buffer.take()}
        self._send(self.settings.log_topic, "log", value)

    def _send(self, topic: str | None, kind: str, value: dict[str, Any]) -> None:
        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                log.warning("%s message not delivered to %s: %s", kind, topic, err)

        try:
            self._producer.produce(
                topic,
                key=f"{self.settings.program_id}_{kind}".encode(),
                value=strict_json(value)[0].encode(),
                on_delivery=delivered,
            )
        except Exception as exc:  # noqa: BLE001 - telemetry never stops the pipeline
            log.warning("cannot produce a %s message to %s: %s", kind, topic, exc)


class _Rate:
    """Bytes per second over the last ten seconds or so."""

    def __init__(self) -> None:
        self._points: collections.deque[tuple[float, int]] = collections.deque(maxlen=20)
        self.value = 0.0

    def update(self, now: float, total: int) -> float:
        if not self._points or now - self._points[-1][0] >= 0.5:
            self._points.append((now, total))
        first_t, first_n = self._points[0]
        if now > first_t:
            self.value = (total - first_n) / 1e6 / (now - first_t)
        return self.value


class Console:
    """``q``/``quit`` stops the run, ``c``/``check`` prints progress (as in the reference).

    Reads standard input on a daemon thread, only where that cannot stop the process: a
    pipe or a file, or a terminal this process has in the foreground.
    """

    def __init__(self, stop: threading.Event, telemetry: Telemetry | None = None) -> None:
        self._stop = stop
        self.telemetry = telemetry  # the current run's (a resumed run brings its own)
        if _can_read_stdin():
            threading.Thread(target=self._read, name="console", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            command = line.strip().lower()
            if command in ("q", "quit"):
                log.info("quit: stopping after in-flight work")
                self._stop.set()
                return
            if command in ("c", "check") and self.telemetry is not None:
                self.telemetry.report(sys.stdout)


def _can_read_stdin() -> bool:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    if not os.isatty(fd):
        return True
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()  # a background job would get SIGTTIN
    except OSError:
        return False
