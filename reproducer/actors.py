"""The thin Ray actors of the pipeline: they move bytes and call the pure core.

- :class:`IngestActor` runs :class:`~reproducer.ingest.Ingest` on a thread and hands the
  completed files on at each ``take`` (inline, or several to an object-store buffer).
- :class:`AnalysisActor` holds one copy of the user's reproducer and runs its
  ``_get_processing_result_message_for_file`` on each file.
- :class:`ProducerActor` produces results and reports which ones the broker acknowledged.
- :class:`reproducer.lock.ClusterLock` is the cluster-wide ``lock`` handed to user code.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import mmap
import os
import socket
import tempfile
import threading
import time
import traceback
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from reproducer import __version__
from reproducer._storage import HEAP_LIMIT
from reproducer.chunk import result_key
from reproducer.datafile import (
    ByPosition,
    DownloadDataFile,
    FileMeta,
    ReproducerMessage,
    encode_message_value,
    json_default,
)
from reproducer.delivery import (
    Refusal,
    Verdict,
    classify,
    goes_alone,
    on_refusal,
    resumable,
)
from reproducer.errors import FileReplaced, ReproducerError, RunInterrupted, TopicUnavailable
from reproducer.ingest import CommitPoint, Ingest, IngestSettings, IngestStats
from reproducer.kafka_log import logged
from reproducer.lock import ClusterLock, owner_id
from reproducer.reassembly import CompletedFile, FileFailure
from reproducer.results import SCHEMA_VERSION, strict_json
from reproducer.topics import connection_only, partitions_of

__all__ = [
    "AnalysisActor",
    "AnalysisResult",
    "ClusterLock",
    "FileSource",
    "FileTask",
    "IngestActor",
    "ProducerActor",
    "Target",
    "batch_arguments",
    "batch_item",
    "owner_id",
]

if TYPE_CHECKING:  # imported by the actors that handle files, not by the driver
    import numpy as np

log = logging.getLogger(__name__)

INLINE_BYTES = 64 << 10
"""Files up to this size travel inside the calls that carry them, not as objects."""
PUT_BYTES = 4 << 20
"""Files share objects in the object store up to this size in all."""


@dataclass(frozen=True, slots=True)
class FileTask(ByPosition):
    """A completed file on its way to analysis: metadata plus its bytes (inline, in the
    object store, or on disk: ``None``)."""

    meta: FileMeta
    # in the object store; a small file's bytes travel inline (no object per file)
    data: ray.ObjectRef | bytes | np.ndarray | None  # type: ignore[type-arg]
    part: int = -1  # the object holds several files' bytes (a list): this one's place


@dataclass(frozen=True, slots=True)
class AnalysisResult(ByPosition):
    file_id: int
    relative_path: str
    key: bytes | None = None
    value: bytes | None = None
    error: str = ""  # an exception in user code: may be retried elsewhere
    declined: bool = False  # the user's method returned None: recorded as failed at once
    permanent: bool = False  # the input cannot be analysed (BadInput): never retried
    analysis: str = ""  # which analysis made it (fan-out)
    topic: str | None = None  # its own result topic, else the pipeline's
    headers: tuple[tuple[str, bytes], ...] = ()
    result_id: int = 0  # set by the driver: the unit that is produced and acknowledged
    seconds: float = 0.0  # how long the analysis of the file took on its actor
    # files the analysis attached (plots), made on another node than the driver's: the
    # driver writes them under its own output folder (relative path, bytes)
    attachments: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Target:
    """One analysis the pipeline runs: a reference-style reproducer (its result is the
    reference's exact key and value) or a registered analysis (an envelope around it)."""

    name: str
    payload: Any  # the reproducer instance, or the analysis class
    kind: str = "reproducer"  # or "analysis"
    version: str = "1"
    files: str | None = None  # re.match on the relative path
    actor_options: dict[str, Any] = field(default_factory=dict)
    n_actors: int = 1  # an elastic pool's minimum
    max_actors: int | None = None  # an elastic pool's maximum (None: n_actors, fixed)
    topic: str | None = None
    output_dir: Path | None = None  # handed to analyses (plots and other large outputs)
    timeout_s: float | None = None  # per file; past it the actor is replaced (see pool)
    home_node: str | None = None  # the driver's node: attachments made there stay there


@ray.remote(num_cpus=0, max_concurrency=4, concurrency_groups={"files": 2})  # type: ignore[call-overload]  # actor options
class IngestActor:
    """Threaded: the ingest loop runs on its own thread; ``take`` waits for files while
    ``finish`` calls go straight through; ``read_file`` (analysis actors on other nodes,
    disk mode) has threads of its own."""

    def __init__(self, settings: IngestSettings) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self._output_dir = settings.output_dir.resolve() if settings.output_dir else None
        self._outbox: deque[tuple[FileMeta, memoryview | None]] = deque()
        self._failures: deque[FileFailure] = deque()
        self._ready = threading.Condition()
        self._node = ray.get_runtime_context().get_node_id()
        self._topic, self._started = settings.topic, time.time()
        self._driver_progress: dict[str, Any] = {}  # as the driver last noted it
        self._init_error = ""
        _return_large_buffers()
        if settings.mode == "memory" and settings.shared_memory:
            settings = dataclasses.replace(settings, shared_memory_beside=_object_store_size())
        try:
            self._ingest = Ingest(settings, self._hand_off, self._failed)
        except Exception as exc:  # noqa: BLE001 - told to the driver by ready()
            self._init_error = f"{type(exc).__name__}: {exc}"
            return
        start = _memory()
        self._start_rss, self._start_anon = start["rss"], start["anon"]
        self._peak_anon = self._start_anon
        self._stop = threading.Event()
        self._stopped: ReproducerError | None = None  # why the consume loop stopped
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def ready(self) -> str:
        """Empty if it can consume; else why it could not start (e.g. no such topic)."""
        return self._init_error

    def start(self) -> None:
        """Join the consumer group and consume (once the analysis actors are placed: the
        group must not wait on them, nor files pile up before they can be analysed)."""
        if not self._thread.is_alive():
            self._ingest.prepare()  # the state records, before any chunk is read
            self._thread.start()

    def _run(self) -> None:
        sampled = 0.0
        try:
            while not self._stop.is_set():
                self._ingest.step(0.1)
                if time.monotonic() - sampled >= 0.25:  # private memory has no kernel peak
                    sampled = time.monotonic()
                    self._peak_anon = max(self._peak_anon, _memory()["anon"])
        except RunInterrupted as exc:  # exactly once: the driver resumes the run
            self._stopped = exc
            log.warning("ingest loop stopped: %s", exc)
        except Exception as exc:  # reported to the driver, which stops the run
            self._stopped = ReproducerError(f"the ingest loop stopped: {type(exc).__name__}: {exc}")
            log.exception("ingest loop stopped")
        finally:  # a waiting take() hears of it now
            with self._ready:
                self._ready.notify_all()

    def _raise_if_stopped(self) -> None:
        """Tell the caller (the driver) why the consume loop stopped, if it did: a
        :class:`RunInterrupted` resumes the run, anything else stops it."""
        if self._stopped is not None:
            raise type(self._stopped)(str(self._stopped))

    def _failed(self, failure: FileFailure) -> None:
        with self._ready:
            self._failures.append(failure)
            self._ready.notify_all()

    def _hand_off(self, done: CompletedFile) -> None:
        meta = FileMeta(
            done.file_id,
            done.subdir_str,
            done.filename,
            done.file_hash,
            done.n_chunks,
            done.size,
            done.file_mtime,
            str(done.path) if done.path is not None else None,
            self._node,
            done.first_seen,
            done.identity,
            str(done.shared) if done.shared is not None else None,
        )
        with self._ready:
            self._outbox.append((meta, done.buffer))
            self._ready.notify_all()

    def take(
        self,
        max_files: int,
        timeout: float = 0.0,
        linger: float = 0.01,
        finished: list[int] | None = None,
    ) -> tuple[list[FileTask], list[FileFailure], IngestStats]:
        """Completed files (up to ``max_files``), failures and stats; waits up to
        ``timeout`` for something to report, then up to ``linger`` more for others, so that
        a stream of files costs the driver a few calls, not one per file. ``finished``:
        files to mark finished first (as :meth:`finish`), one call fewer.

        Once the consume loop has stopped, raises why: :class:`RunInterrupted` (exactly
        once, partitions lost: the driver resumes the run) or :class:`ReproducerError`."""
        if finished:
            self.finish(finished)
        with self._ready:
            if self._ready.wait_for(
                lambda: (self._outbox and max_files > 0) or self._failures or self._stopped,
                timeout,
            ):
                self._ready.wait_for(
                    lambda: len(self._outbox) >= max_files or self._stopped, linger
                )
            self._raise_if_stopped()
            files: list[tuple[FileMeta, memoryview | None] | None] = [
                self._outbox.popleft() for _ in range(min(max_files, len(self._outbox)))
            ]
            failures = [self._failures.popleft() for _ in range(len(self._failures))]
        try:
            tasks = _package(files)
        except Exception:  # the object store refused them (full, say): the run stops, and
            with self._ready:  # what was not packed yet waits here as it was
                self._outbox.extendleft(reversed([f for f in files if f is not None]))
                self._failures.extendleft(reversed(failures))
            raise
        return tasks, failures, self._ingest.snapshot()

    def finish(self, file_ids: list[int]) -> None:
        for file_id in file_ids:
            self._ingest.finish(file_id)

    def note_progress(self, progress: dict[str, Any]) -> None:
        """The driver's counts (results, failures, files in analysis), for :meth:`progress`."""
        self._driver_progress = progress

    def progress(self) -> dict[str, Any]:
        """What ``reproducer status`` shows of a running pipeline: the driver's counts as
        last noted, and this actor's own."""
        return {
            "topic": self._topic,
            "node": self._node,
            "started": self._started,
            "driver": dict(self._driver_progress),
            "ingest": dataclasses.asdict(self._ingest.snapshot()),
        }

    def report_failures(self, reports: list[tuple[int, dict[str, Any]]]) -> None:
        """To the dead-letter topic, if there is one (librdkafka's producer is thread-safe)."""
        self._ingest.report_failures(reports)

    def commit_point(
        self, done: dict[int, tuple[str, ...]] | None = None, timeout: float = 30.0
    ) -> CommitPoint:
        """Exactly once: mark ``done`` (file id -> analyses carried) finished, then return
        the offsets now safe to commit, the group metadata and the state records, for the
        producer's transaction (see :meth:`Ingest.commit_point`)."""
        answer = self._ingest.commit_point(done)
        deadline = time.monotonic() + timeout
        while True:  # the loop thread answers; if it died meanwhile, say so, do not wait
            self._raise_if_stopped()
            try:
                return answer.result(min(0.5, max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                if time.monotonic() >= deadline:
                    raise

    def confirm(self, offsets: dict[int, int]) -> None:
        self._ingest.confirm(offsets)

    def node(self) -> str:
        """The id of the node it runs on."""
        return str(self._node)

    @ray.method(concurrency_group="files")
    def read_file(self, path: str, identity: tuple[int, int, int] | None = None) -> np.ndarray:
        """The bytes of a file this actor rebuilt on disk (or in shared memory), for an
        analysis actor on a node that cannot read it there; only files under the output
        folder (or its shared-memory folder) are served, and only the very file rebuilt
        (``identity``: its inode, size and mtime), not a newer version renamed over it
        since (:class:`FileReplaced`)."""
        resolved = Path(path).resolve()
        shared = self._ingest.shared_folder
        served = [f for f in (self._output_dir, shared) if f is not None]
        if not any(resolved.is_relative_to(folder) for folder in served):
            raise PermissionError(f"{path} is not a rebuilt file under the output folder")
        import numpy as np  # noqa: PLC0415

        with resolved.open("rb") as handle:
            st = os.fstat(handle.fileno())
            if identity is not None and (st.st_ino, st.st_size, st.st_mtime_ns) != tuple(identity):
                raise FileReplaced(path)
            if shared is not None and resolved.is_relative_to(shared) and st.st_size:
                # its pages as they are: the reply's one copy is into the object store
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                return np.frombuffer(mapped, dtype=np.uint8)
            return np.fromfile(handle, dtype=np.uint8, count=st.st_size)

    def memory(self) -> dict[str, int]:
        """This process's resident memory (``rss``; ``anon``: its private part, without the
        object store's shared pages it wrote) now, at its peak, and before reading."""
        return {
            **_memory(),
            "start_rss": self._start_rss,
            "start_anon": self._start_anon,
            "peak_anon": self._peak_anon,
        }

    def stop(self, timeout: float = 30.0) -> IngestStats:
        """Stop fetching, commit what is finished, leave the group."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self._thread.is_alive():  # never touch the consumer from two threads
            raise RuntimeError(f"the ingest loop did not stop within {timeout:g} s")
        self._ingest.close()
        return self._ingest.snapshot()


COMMIT_TIMEOUT_S = 90.0
"""Exactly-once: the most a transaction's commit may take (flush, offsets, commit and its
retries together); the driver waits a little longer for the answer."""
ABORT_TIMEOUT_S = 30.0
"""Exactly-once: the most aborting a transaction may take (after a commit that failed)."""


def _left(deadline: float) -> float:
    """Seconds to ``deadline``, at least one (librdkafka refuses 0 as "no wait")."""
    return max(deadline - time.monotonic(), 1.0)


def _package(files: list[tuple[FileMeta, memoryview | None] | None]) -> list[FileTask]:
    """The files' bytes, ready to travel: inline up to ``INLINE_BYTES`` (an object of its
    own would cost more than the bytes), else in the object store, several files to an
    object up to ``PUT_BYTES`` (each ``ray.put`` costs about a millisecond here, whatever
    its size: one per file was a large part of a 1 MiB file's cost), a larger file alone.
    Files rebuilt on disk travel as their path (``None``).

    Each file's entry in ``files`` is set to ``None`` once it is packed, so that its buffer
    is freed then, not when the last file is: packing four 50 MiB files held 200 MiB twice
    (measured: a memory-mode run 45 MiB over its budget)."""
    import numpy as np  # noqa: PLC0415

    tasks: list[FileTask] = []
    group: list[tuple[int, FileMeta, np.ndarray]] = []
    size = 0

    def put_group() -> None:
        if len(group) == 1:
            tasks.append(FileTask(group[0][1], ray.put(group[0][2])))
        elif group:
            ref = ray.put([array for _, _, array in group])
            tasks.extend(FileTask(meta, ref, part) for part, (_, meta, _) in enumerate(group))
        for index, _, _ in group:
            files[index] = None
        group.clear()

    for index, entry in enumerate(files):
        assert entry is not None
        meta, buffer = entry
        if buffer is None:
            tasks.append(FileTask(meta, None))
            files[index] = None
            continue
        if len(buffer) <= INLINE_BYTES:
            # bytes, not an array: an array would be read zero-copy out of the take's reply
            # in the object store and pin all of it until its last file is analysed
            tasks.append(FileTask(meta, bytes(buffer)))
            files[index] = None
            continue
        array = np.frombuffer(buffer, dtype=np.uint8)
        del buffer, entry
        if group and size + array.nbytes > PUT_BYTES:
            put_group()
            size = 0
        group.append((index, meta, array))
        del array
        size += group[-1][2].nbytes
    put_group()
    return tasks


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def _object_store_size() -> int:
    """The capacity of this node's object store (0 if unknown)."""
    node = ray.get_runtime_context().get_node_id()
    try:
        for entry in ray.nodes():  # type: ignore[no-untyped-call]
            if entry.get("NodeID") == node:
                return int(entry.get("Resources", {}).get("object_store_memory", 0))
    except Exception:  # only a margin: without it, the folder's room alone
        log.debug("object store size unknown", exc_info=True)
    return 0


def _return_large_buffers() -> None:
    """Have glibc give buffers of 128 KiB and more back to the system when freed.

    Its default raises that threshold to the largest block freed so far (up to 32 MiB), so
    once a file's buffer or a chunk's bytes have been freed, the next ones come from heaps
    that several threads (consumer, ``take``) share and fragment: measured, the process
    kept 15-20 MiB beyond what it held. A fixed threshold costs one ``mmap`` per chunk.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_LIMIT)  # a fixed value turns the adjustment off
    except (OSError, AttributeError):  # not glibc: its own allocator's policy applies
        pass


def _memory() -> dict[str, int]:
    fields = {"VmRSS": "rss", "VmHWM": "peak_rss", "RssAnon": "anon"}
    out = {}
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                out[fields[name]] = int(value.split()[0]) * 1024
    return out


@dataclass(frozen=True)
class FileSource:
    """Where an analysis actor gets a file rebuilt on disk on another node: ``transfer``
    ``auto`` reads it in place when this node sees it (same machine, shared output_dir)
    and else asks ``ingest``; ``always`` asks ``ingest`` for every such file."""

    ingest: Any = None
    transfer: str = "auto"


def batch_arguments(tasks: list[FileTask]) -> tuple[Any, ...]:
    """The arguments of one ``AnalysisActor.analyze`` call for ``tasks``: their metadata,
    then their data in one list (inline bytes, ``None`` for files read from disk, or where
    the bytes are: an object's position among the rest of the arguments and the file's
    place in it), then the object references, each once, where Ray resolves them before
    the call (zero-copy). One argument per file would cost a serialisation pass each."""
    metas: list[FileMeta] = []
    datas: list[bytes | np.ndarray | tuple[int, int] | None] = []
    objects: dict[Any, int] = {}  # each object once, however many of its files go along
    for task in tasks:
        metas.append(task.meta)
        if isinstance(task.data, ray.ObjectRef):
            datas.append((objects.setdefault(task.data, len(objects)), task.part))
        else:
            datas.append(task.data)
    return (metas, datas, *objects)


def batch_item(data: bytes | np.ndarray | tuple[int, int] | None, objects: tuple[Any, ...]) -> Any:
    """A file's bytes among an ``analyze`` call's arguments (see :func:`batch_arguments`)."""
    if isinstance(data, bytes):
        import numpy as np  # noqa: PLC0415

        return np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, tuple):
        return data
    held = objects[data[0]]
    return held if data[1] < 0 else held[data[1]]


@ray.remote
class AnalysisActor:
    """Runs one target on the files it is given: a reproducer's
    ``_get_processing_result_message_for_file(datafile, lock)``, or an analysis's
    ``analyze(datafile)`` (set up once here, its result wrapped in an envelope)."""

    def __init__(self, target: Target, lock: ClusterLock, source: FileSource) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self._target = target
        self._lock = lock
        self._source = source
        self._headers = (
            ("reproducer.analysis", target.name.encode()),
            ("reproducer.version", target.version.encode()),
        )
        self._where = {
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "actor": ray.get_runtime_context().get_actor_id(),
        }
        # copies of files rebuilt on nodes this one cannot read (FileSource)
        self._local_dir = (
            Path(tempfile.gettempdir()) / "ray-reproducer-files" / str(self._where["actor"])
        )
        if target.kind == "analysis":
            self._instance = target.payload()
            self._instance.output_dir = target.output_dir
            self._instance.setup()
        else:
            self._instance = target.payload

    def analyze(
        self,
        metas: list[FileMeta],
        datas: list[bytes | np.ndarray | tuple[int, int] | None],
        *objects: Any,
    ) -> list[AnalysisResult]:
        """Analyse a batch of files (see :func:`batch_arguments`), one result each, in order;
        whatever goes wrong with one file is that file's result, never the batch's."""
        results = []
        for meta, data in zip(metas, datas, strict=True):
            try:
                results.append(self._one(meta, batch_item(data, objects)))
            except Exception as exc:  # noqa: BLE001 - outside user code (a copy not removed)
                error = f"{type(exc).__name__}: {exc}"
                results.append(AnalysisResult(meta.file_id, meta.relative_path, error=error))
        return results

    def _one(self, meta: FileMeta, data: np.ndarray | None) -> AnalysisResult:
        source = self._source
        here = meta.node_id == self._where["node"]
        where = meta.path if meta.path is not None else meta.shared
        datafile = DownloadDataFile(
            meta,
            data,
            local_dir=self._local_dir,
            fetch=(
                (lambda: ray.get(source.ingest.read_file.remote(where, meta.identity)))
                if where is not None and source.ingest is not None
                else None
            ),
            # shared memory is never shared between nodes, whatever the transfer setting
            trust_path=here or (source.transfer == "auto" and meta.shared is None),
        )
        clock = time.perf_counter()
        try:
            result = self._analyze(meta, datafile)
        finally:
            datafile.discard()
        return dataclasses.replace(result, seconds=time.perf_counter() - clock)

    def _analyze(self, meta: FileMeta, datafile: DownloadDataFile) -> AnalysisResult:
        target = self._target
        base = AnalysisResult(
            meta.file_id,
            meta.relative_path,
            analysis=target.name,
            topic=target.topic,
            headers=self._headers,
        )
        started, clock = time.time(), time.perf_counter()
        try:
            if target.kind == "analysis":
                output = self._instance.analyze(datafile)
            else:
                output = self._instance._get_processing_result_message_for_file(
                    datafile, self._lock
                )
        except Exception as exc:  # noqa: BLE001 - user code: reported, maybe retried
            text = "".join(traceback.format_exception(exc))[-4000:]
            # analyses.BadInput or a subclass, by name: reproducer does not import analyses
            permanent = any(cls.__name__ == "BadInput" for cls in type(exc).__mro__)
            return dataclasses.replace(base, error=text, permanent=permanent)
        if target.kind == "analysis":
            attached = self._instance.take_attachments()
            if attached and target.home_node != self._where["node"]:
                base = dataclasses.replace(base, attachments=tuple(attached.items()))
        if output is None:
            return dataclasses.replace(base, declined=True)
        try:
            return self._message(base, meta, output, started, time.perf_counter() - clock)
        except Exception as exc:  # noqa: BLE001 - what user code returned cannot be sent
            text = f"its result cannot be made a message: {type(exc).__name__}: {exc}"
            return dataclasses.replace(base, error=text, permanent=True)

    def _message(
        self, base: AnalysisResult, meta: FileMeta, output: Any, started: float, seconds: float
    ) -> AnalysisResult:
        target = self._target
        if isinstance(output, ReproducerMessage) or target.kind != "analysis":
            key = output.msg_key
            if not isinstance(key, str | bytes):
                raise TypeError(f"msg_key must be str or bytes, not {type(key).__name__}")
            return dataclasses.replace(
                base,
                key=key.encode("utf-8") if isinstance(key, str) else key,
                value=encode_message_value(output.msg_value),
            )
        envelope = {
            "schema": SCHEMA_VERSION,
            "reproducer_version": __version__,
            "analysis": target.name,
            "version": target.version,
            "file": {
                "relative_path": meta.relative_path,
                "sha512": meta.file_hash.hex(),
                "size": meta.size,
                "n_chunks": meta.n_total_chunks,
            },
            "timing": {"started": started, "seconds": round(seconds, 6)},
            **self._where,
            "result": output,
        }
        key = f"{result_key(meta.subdir_str, meta.filename)}_{target.name}"
        # NaN named, so a reader can tell a null from a NaN the analysis made
        value, _ = strict_json(envelope, json_default, note="non_finite")
        return dataclasses.replace(base, key=key.encode(), value=value.encode())

    def ping(self) -> str:
        """Its node's id, once placed and set up."""
        return str(self._where["node"])

    def close(self) -> None:
        if self._target.kind == "analysis":
            self._instance.close()


_BATCH_OVERHEAD = 1024  # record batch and record headers, with room to spare


def _message_limit(settings: dict[str, Any], topics: tuple[str, ...]) -> int | None:
    """The largest record batch every one of ``topics`` takes (their ``max.message.bytes``,
    less the batch's own overhead), or ``None`` if the broker does not say (no such topic,
    no right to describe it: then librdkafka's own limit stands)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # noqa: PLC0415
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient(logged(connection_only(settings)))
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in dict.fromkeys(topics)]
    limits = []
    try:
        for future in admin.describe_configs(resources, request_timeout=30).values():
            entry = future.result(timeout=30).get("max.message.bytes")
            if entry is not None and entry.value:
                limits.append(int(entry.value))
    except Exception as exc:  # noqa: BLE001 - a missing topic is reported by ready()
        log.info("the result topics' max.message.bytes is unknown: %s", exc)
        return None
    return max(1000, min(limits) - _BATCH_OVERHEAD) if limits else None


class ProducerError(RuntimeError):
    """The producer cannot produce results any more (fatal error, or refused too long)."""


class Undelivered(RuntimeError):
    """Exactly once, the producer not fatal: results of the transaction were not
    acknowledged before the commit's deadline, or the broker refused them for the
    cluster's state (a delivery timed out, a topic unknown right now). A refusal for the
    result's own sake is a rejection, and a fatal one stops the run, so neither is this."""


def _mended_by_resuming(exc: Exception) -> bool:
    """Whether a transaction that failed with ``exc`` (the producer not fatal) is mended by
    starting again from the committed offsets: see :func:`reproducer.delivery.resumable`."""
    from confluent_kafka import KafkaException  # noqa: PLC0415

    if isinstance(exc, KafkaException):
        return bool(exc.args) and resumable(exc.args[0])
    return isinstance(exc, Undelivered)


@dataclass(frozen=True)
class TransactionOutcome:
    """What :meth:`ProducerActor.commit` did: ``rejected`` results (never sendable, to
    record as failures) and whether the transaction was aborted to leave them out, nothing
    committed (``redo``: produce the others again and commit once more)."""

    rejected: list[tuple[int, str]]
    redo: bool


@ray.remote(num_cpus=0, max_concurrency=4, concurrency_groups={"transaction": 1})  # type: ignore[call-overload]  # actor options
class ProducerActor:
    """Threaded: a poll thread serves delivery reports; ``take_acked`` waits for them."""

    def __init__(
        self,
        settings: dict[str, Any],
        topic: str,
        transactional_id: str | None = None,
        other_topics: tuple[str, ...] = (),
        retry_s: float = 120.0,
    ) -> None:
        """``retry_s``: how long a result refused for the cluster's state (a topic not
        known right now, a broker restarting) is produced again before the run stops."""
        from confluent_kafka import Producer  # noqa: PLC0415

        # An acknowledgement must mean the result is stored: these two are not negotiable.
        forced = {"enable.idempotence": True, "acks": "all"}
        for key, value in forced.items():
            if key in settings and str(settings[key]).lower() not in (str(value).lower(), "-1"):
                log.warning(
                    "[producer] %s = %s ignored: results need %s", key, settings[key], value
                )
        if transactional_id is not None:
            forced["transactional.id"] = transactional_id
        # A misnamed result topic is an error, not a new topic (unless the config says so).
        defaults: dict[str, Any] = {"linger.ms": 5, "allow.auto.create.topics": False}
        limit = _message_limit(settings, (topic, *other_topics))
        if limit is not None:
            # Batches the topics take, and a result too large for them refused alone, at
            # produce(): the broker refuses a whole batch that is too large, and the
            # results batched with a large one would fail with it.
            user = int(settings.get("message.max.bytes", limit))
            forced["message.max.bytes"] = min(user, limit)
            forced["batch.size"] = min(int(settings.get("batch.size", limit)), limit)
        self._topic = topic
        self._fatal = ""  # the producer can produce nothing more: the run must stop
        try:
            self._producer = Producer(
                logged({**defaults, **settings, **forced, "error_cb": self._client_error})
            )
        except Exception as exc:  # noqa: BLE001 - told to the driver by ready()
            self._init_error = f"the [producer] settings are refused: {exc}"
            return
        self._init_error = next(
            (e for e in map(self._check_topic, dict.fromkeys((topic, *other_topics))) if e), ""
        )
        self._acked: list[int] = []
        self._failed: list[tuple[int, str]] = []  # refused for now (the cluster's state)
        self._rejected: list[tuple[int, str]] = []  # never sendable (too large, invalid)
        self._queued: set[int] = set()  # exactly once: results queued in the transaction
        # results whose batch the broker found too large: each goes alone from then on, and
        # exactly once they abort the transaction to be produced again (``_resend``)
        self._alone: set[int] = set()
        self._resend: list[tuple[int, str]] = []
        self._retry_s = retry_s
        self._reported = threading.Condition()
        self._stop = threading.Event()
        self._transactional = transactional_id is not None
        self._txn = threading.Lock()  # no produce between a commit and the next begin
        self._aborted = False
        # Exactly-once: the number of the open transaction. Calls run on a pool of threads,
        # in no set order: a produce made for the next transaction must wait for this
        # one's commit, or its result would commit with offsets that do not cover it.
        self._transaction = 0
        self._turn = threading.Condition()
        if self._transactional and not self._init_error:
            # Fences any earlier producer with this id (a crashed run's zombie) and aborts
            # its open transaction: a read_committed reader never sees those results.
            try:
                self._producer.init_transactions(60)
                self._producer.begin_transaction()
            except Exception as exc:  # noqa: BLE001 - told to the driver by ready()
                self._init_error = f"cannot start transactions: {exc}"
        self._poller = threading.Thread(target=self._poll, name="delivery-reports", daemon=True)
        self._poller.start()

    def ready(self) -> str:
        """Empty if results can be produced; else why not (e.g. no such topic)."""
        return self._init_error

    def _check_topic(self, topic: str) -> str:
        try:
            partitions_of(self._producer, topic)
        except TopicUnavailable as exc:  # told to the driver by ready()
            return f"the result {exc}: create it, or check --producer_topic_name"
        return ""

    def _poll(self) -> None:
        from confluent_kafka import KafkaException  # noqa: PLC0415

        while not self._stop.is_set():
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:  # a fatal error is raised here too: kept, and
                self._note_fatal(exc)  # told by the next call; the thread serves on
                self._stop.wait(0.05)

    def produce(self, results: list[AnalysisResult], transaction: int | None = None) -> None:
        """Produce ``results``; exactly-once, into transaction number ``transaction``
        (waiting, if it is the next one, for the open one to commit)."""
        if transaction is not None:
            with self._turn:
                self._turn.wait_for(lambda: self._transaction >= transaction or self._aborted)
            if self._aborted or self._transaction != transaction:
                raise RuntimeError(
                    f"transaction {transaction} is not open (open: {self._transaction}, "
                    f"aborted: {self._aborted}): its results are not produced"
                )
        with self._txn:
            for result in results:
                self._produce(result)

    @ray.method(concurrency_group="transaction")  # never behind produce calls that wait
    def commit(
        self,
        offsets: dict[int, int],
        group_metadata: bytes,
        topic: str,
        state: list[tuple[bytes, bytes | None]] | None = None,
        state_topic: str | None = None,
    ) -> TransactionOutcome:
        """Exactly-once: commit the results produced so far together with the consumer
        offsets and the ``state`` records (to ``state_topic``: see
        :mod:`reproducer.state`), in one transaction, and begin the next. Raises if the transaction cannot
        commit (it is aborted: neither its results nor its offsets count).

        Results that can never be produced (too large, invalid) are returned, as failures
        to record. One the client refused never entered the transaction, which commits
        without it; one the broker refused has made the transaction abortable: it is
        aborted and the next one begun, nothing committed (``redo``), and the caller
        produces the others again and commits once more."""
        from confluent_kafka import KafkaException, TopicPartition  # noqa: PLC0415

        # One deadline for the whole commit: a broker that cannot be reached must stop the
        # run in bounded time (each step's own timeout, retried, added up to minutes).
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        with self._txn:
            try:
                if state and state_topic:
                    self._produce_state(state_topic, state, deadline)
                left = self._producer.flush(_left(deadline))
                with self._reported:
                    failed, self._failed = self._failed, []
                    rejected, self._rejected = self._rejected, []
                    refused = [r for r in rejected if r[0] in self._queued]
                    resend, self._resend = self._resend, []
                    self._queued.clear()
                if self._fatal:
                    raise ProducerError(f"the producer cannot go on: {self._fatal}")
                if left or failed:  # (failed: for the cluster's state; a fatal one is above)
                    raise Undelivered(
                        f"{left} results undelivered, {len(failed)} refused "
                        f"({failed[0][1] if failed else 'timeout'})"
                    )
                if refused or resend:  # produced again without (or, alone, with) them
                    self._producer.abort_transaction(ABORT_TIMEOUT_S)
                    self._producer.begin_transaction()
                    self._next_transaction()
                    return TransactionOutcome(rejected, redo=True)
                if offsets:
                    self._producer.send_offsets_to_transaction(
                        [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())],
                        group_metadata,
                        _left(deadline),
                    )
                self._commit_transaction(deadline)
            except (KafkaException, RuntimeError) as exc:
                if isinstance(exc, KafkaException):
                    self._note_fatal(exc)
                self._abort()  # which tells a fatal state too (fenced: another run has its id)
                if self._fatal:
                    raise ProducerError(f"the producer cannot go on: {self._fatal}") from exc
                if _mended_by_resuming(exc):  # a lost session, an unreachable broker
                    raise RunInterrupted(f"the transaction could not commit: {exc}") from exc
                raise
            self._producer.begin_transaction()
            self._next_transaction()
        return TransactionOutcome(rejected, redo=False)

    def _produce_state(
        self, topic: str, records: list[tuple[bytes, bytes | None]], deadline: float
    ) -> None:
        """Queue the transaction's state records; one not delivered fails the commit as a
        result would (the cluster's state: the run resumes)."""

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                with self._reported:
                    self._failed.append((0, f"state record: {err}"))
                    if classify(err) is Verdict.FATAL and not self._fatal:
                        self._fatal = str(err)

        for key, value in records:
            while True:
                try:
                    self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:  # queue full: the poll thread makes room
                    if time.monotonic() >= deadline:
                        raise Undelivered("the producer's queue stayed full") from None
                    self._stop.wait(0.05)

    def _next_transaction(self) -> None:
        with self._turn:
            self._transaction += 1
            self._turn.notify_all()

    def _commit_transaction(self, deadline: float) -> None:
        from confluent_kafka import KafkaException  # noqa: PLC0415

        while True:
            try:
                self._producer.commit_transaction(_left(deadline))
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() >= deadline - 1:
                    raise
                log.warning("transaction commit will be retried: %s", exc)

    @ray.method(concurrency_group="transaction")
    def abort(self) -> None:
        """Exactly-once, when the run fails: abort the open transaction now, so that
        read_committed readers need not wait for it to time out (once is enough)."""
        if self._txn.acquire(timeout=5):
            try:
                if not self._aborted:
                    self._abort()
            finally:
                self._txn.release()

    def _abort(self) -> None:
        from confluent_kafka import KafkaException  # noqa: PLC0415

        self._aborted = True
        with self._turn:
            self._turn.notify_all()  # produce calls waiting for a turn give up
        try:
            self._producer.abort_transaction(ABORT_TIMEOUT_S)
        except KafkaException as exc:
            log.error("the transaction could not be aborted either: %s", exc)
            self._note_fatal(exc)

    def fatal(self) -> str:
        """Why the producer can produce nothing more (fenced by another instance with its
        transactional id, say); empty while it can."""
        return self._fatal

    def _client_error(self, error: Any) -> None:
        """librdkafka's error callback: a fatal error (fenced by a newer instance with
        this transactional id) is kept at once, whatever error a call then raises.
        (confluent-kafka raises most fatal errors from the call that serves them instead:
        see :meth:`_poll` and :meth:`_note_fatal`.)"""
        if classify(error) is Verdict.FATAL and not self._fatal:
            self._fatal = error.str()

    def _note_fatal(self, exc: Exception) -> None:
        """Keep the first fatal error a transaction call raised (as the delivery reports
        keep theirs): after it, the producer can produce nothing more."""
        error = exc.args[0] if exc.args else None
        if error is not None and error.fatal() and not self._fatal:
            self._fatal = error.str()

    def _produce(self, result: AnalysisResult) -> None:
        """Queue one result. What ``produce()`` refuses is judged by :mod:`reproducer.delivery`:
        never sendable, it is reported as rejected; the cluster's state, it is produced again
        with back-off for up to ``retry_s`` (at least once; exactly once, it raises
        :class:`RunInterrupted`: the transaction is aborted and the run resumes from the last
        commit, as a restart would); anything else raises :class:`ProducerError`, and the
        run stops with nothing committed past the result."""

        def delivered(err: Any, _msg: Any, result_id: int = result.result_id) -> None:
            with self._reported:
                if err is None:
                    if not self._transactional:  # there, the commit is the acknowledgement
                        self._acked.append(result_id)
                else:
                    verdict = classify(err)
                    if result_id not in self._alone and goes_alone(err):
                        # its batch was too large: produced again alone, it tells
                        self._alone.add(result_id)
                        (self._resend if self._transactional else self._failed).append(
                            (result_id, str(err))
                        )
                    elif verdict is Verdict.PERMANENT:
                        self._rejected.append((result_id, str(err)))
                    else:
                        self._failed.append((result_id, str(err)))
                        if verdict is Verdict.FATAL and not self._fatal:
                            self._fatal = str(err)
                self._reported.notify_all()

        if result.result_id in self._alone:  # in a batch of its own, to know if it is too large
            self._producer.flush(30)

        deadline, delay = 0.0, 0.1
        while True:
            try:
                self._producer.produce(
                    result.topic or self._topic,
                    key=result.key,
                    value=result.value,
                    headers=list(result.headers) or None,
                    on_delivery=delivered,
                )
                if self._transactional:
                    self._queued.add(result.result_id)
                if result.result_id in self._alone:
                    self._producer.flush(30)
                return
            except BufferError as exc:  # queue full: the poll thread makes room, unless
                now = time.monotonic()  # the broker takes nothing for retry_s
                if not deadline:
                    deadline = now + self._retry_s
                elif now >= deadline:
                    why = (
                        f"the producer's queue stayed full for {self._retry_s:g} s (the broker "
                        f"takes no results): the result for {result.relative_path} waits"
                    )
                    if self._transactional:
                        raise RunInterrupted(f"{why}; its transaction does not commit") from exc
                    raise ProducerError(f"{why}; nothing is committed past it") from exc
                self._stop.wait(0.05)
            except Exception as exc:  # judged by its verdict
                why = f"{type(exc).__name__}: {exc}"
                refusal = on_refusal(exc, transactional=self._transactional)
                if refusal is Refusal.REJECT:
                    with self._reported:
                        self._rejected.append((result.result_id, why))
                        self._reported.notify_all()
                    log.error("result for %s can never be produced: %s", result.relative_path, why)
                    return
                if refusal is Refusal.STOP or self._fatal:  # fatal: never resumed
                    raise ProducerError(
                        f"the result for {result.relative_path} cannot be produced ({why}); "
                        "nothing is committed past it"
                    ) from exc
                if refusal is Refusal.RESUME:
                    raise RunInterrupted(
                        f"the result for {result.relative_path} cannot be produced now "
                        f"({why}); its transaction does not commit"
                    ) from exc
                now = time.monotonic()
                if not deadline:
                    deadline = now + self._retry_s
                    log.warning(
                        "result for %s refused for now (%s): producing it again for up to %g s",
                        result.relative_path,
                        why,
                        self._retry_s,
                    )
                if now >= deadline:
                    raise ProducerError(
                        f"the result for {result.relative_path} was still refused after "
                        f"{self._retry_s:g} s ({why}); nothing is committed past it"
                    ) from exc
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def take_acked(
        self, timeout: float = 0.0, linger: float = 0.005
    ) -> tuple[list[int], list[tuple[int, str]], list[tuple[int, str]]]:
        """Result ids the broker acknowledged, those it refused (worth producing again),
        and those the client rejected outright (never sendable), since the last call;
        waits up to ``timeout`` for at least one, then ``linger`` for more."""
        with self._reported:
            if self._reported.wait_for(
                lambda: self._acked or self._failed or self._rejected or self._fatal, timeout
            ):
                self._reported.wait_for(lambda: False, linger)
            if self._fatal:  # what it acknowledged stays uncommitted too: produced again
                raise ProducerError(f"the producer cannot go on: {self._fatal}")
            acked, self._acked = self._acked, []
            failed, self._failed = self._failed, []
            rejected, self._rejected = self._rejected, []
        return acked, failed, rejected

    def flush(self, timeout: float = 30.0) -> int:
        left: int = self._producer.flush(timeout)
        return left
