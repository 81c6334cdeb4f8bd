"""Wiring the actors: ingest -> analysis pool -> producer -> acknowledgements -> commit.

The driver loop moves only small things (file metadata, object references, file ids); the
bytes go from the ingest actor to an analysis actor through the object store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from reproducer._storage import Mode, write_atomically
from reproducer.actors import (
    ABORT_TIMEOUT_S,
    COMMIT_TIMEOUT_S,
    AnalysisActor,
    AnalysisResult,
    FileSource,
    FileTask,
    IngestActor,
    ProducerActor,
    Target,
)
from reproducer.autoscaling import MEASURED, addable_node_types, fits, request_nodes
from reproducer.chunk import LOGS_DIR
from reproducer.config import KafkaConfig
from reproducer.datafile import FileMeta
from reproducer.delivery import broker_refusal
from reproducer.errors import ReproducerError, RunInterrupted, first_line
from reproducer.ingest import IngestSettings, IngestStats
from reproducer.lock import ClusterLock, owner_id, release_dead_owner
from reproducer.logs import ResultsLog
from reproducer.pool import AnalysisPool
from reproducer.ray_launch import connect
from reproducer.results import SCHEMA_VERSION
from reproducer.scaling import ScaleSettings
from reproducer.state import state_topic
from reproducer.status import NAMESPACE, ingest_actor_name
from reproducer.telemetry import Console, Progress, Telemetry, TelemetrySettings

__all__ = ["PipelineSettings", "RunSummary", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything a run needs, validated once at start-up."""

    config: KafkaConfig
    consumer_topic: str
    producer_topic: str
    group_id: str | None = None
    mode: Mode = "memory"
    output_dir: Path | None = None
    download_regex: str | None = None
    ray_address: str | None = None
    ray_dashboard: bool = False  # when starting local Ray
    file_transfer: str = "auto"  # disk mode across nodes: "auto" or "always" (FileSource)
    n_analysis_actors: int = 2  # the pool's minimum
    max_analysis_actors: int | None = None  # an elastic pool's maximum (None: fixed)
    idle_actor_timeout: float = 60.0  # an elastic pool retires actors idle this long
    actor_num_cpus: float = 1.0
    analysis_timeout_s: float | None = None  # per file (reference-style reproducers)
    actor_resources: dict[str, float] = field(default_factory=dict)
    ingest_resources: dict[str, float] = field(default_factory=dict)  # e.g. {"ingest": 1}
    max_in_flight: int = 10000
    max_held_bytes: int = 2 << 30
    max_retries: int = 2
    produce_retry_s: float = 120.0  # a result refused for the cluster's state, then stop
    file_idle_timeout: float | None = 3600.0
    update_seconds: float = 30.0
    heartbeat_topic: str | None = None
    heartbeat_interval: float = 900.0
    log_topic: str | None = None
    log_interval: float = 60.0
    program_id: str = "ray-reproducer"
    progress_line: bool | None = None  # None: when stderr is a terminal
    dead_letter_topic: str | None = None
    stop_when_idle: float | None = None  # seconds without work, for batch runs and tests
    max_results: int | None = None
    startup_timeout: float = 300.0  # seconds for the analysis actors to be placed
    transaction_interval: float = 1.0  # exactly-once: seconds between transaction commits
    check_chunk_hashes: bool = False
    hash_threads: int = 2
    exactly_once: bool = False
    # a replay: "beginning" or a Unix time to start every partition at on the first
    # assignment (None: the group's committed offsets)
    start_from: str | float | None = None
    reprocess: bool = False  # produce again files the group's state records list as done


@dataclass
class RunSummary:
    """What a run did (the reference's five values, by name)."""

    n_msgs_read: int = 0
    n_msgs_processed: int = 0
    n_files_read: int = 0
    n_results_produced: int = 0
    recent_results: list[str] = field(default_factory=list)
    n_files_failed: int = 0
    n_bytes_read: int = 0
    n_result_bytes: int = 0
    n_in_analysis: int = 0
    stats: IngestStats = field(default_factory=IngestStats)  # the last attempt's, if resumed
    ingest_memory: dict[str, int] = field(default_factory=dict)  # rss, peak_rss (bytes)
    actors: tuple[tuple[str, int, int, int, int], ...] = ()  # see Progress.actors

    def progress(self) -> Progress:
        return Progress(
            n_messages=self.n_msgs_read,
            n_bytes_read=self.stats.n_bytes,
            n_files_read=self.n_files_read,
            n_files_failed=self.n_files_failed,
            n_results=self.n_results_produced,
            n_result_bytes=self.n_result_bytes,
            n_in_analysis=self.n_in_analysis,
            n_partial_files=self.stats.n_partial_files,
            held_bytes=self.stats.held_bytes,
            commit_lag=self.stats.commit_lag,
            actors=self.actors,
        )

    def as_tuple(self) -> tuple[int, int, int, int, list[str]]:
        return (
            self.n_msgs_read,
            self.n_msgs_processed,
            self.n_files_read,
            self.n_results_produced,
            self.recent_results,
        )


@dataclass
class _Books:
    """What the driver keeps between analysis and acknowledgement.

    A file fans out to one result per matching analysis; each result has its own id, and
    the file's offsets are released when every one of its results has ended (acknowledged,
    committed in a transaction, or failed).
    """

    producing: dict[int, AnalysisResult] = field(default_factory=dict)  # by result id
    attempts: dict[int, int] = field(default_factory=dict)  # result id -> refusals
    metas: dict[int, FileMeta] = field(default_factory=dict)  # file id -> meta
    open_results: dict[int, int] = field(default_factory=dict)  # file id -> results to end
    delivered: set[int] = field(default_factory=set)  # files with a result delivered
    finish_now: list[int] = field(default_factory=list)  # files to tell the ingest about
    last_finish: float = 0.0  # when the ingest was last told (monotonic)
    produce_calls: list[Any] = field(default_factory=list)  # awaited before the drain's flush
    acking: Any = None  # the driver's pending take_acked call
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    results_log: ResultsLog | None = None
    last_flush: float = 0.0
    # exactly-once: a file's results wait for the next transaction once all have ended
    held: dict[int, list[AnalysisResult]] = field(default_factory=dict)  # by file id
    txn_done: list[int] = field(default_factory=list)  # files finished since the last one
    last_txn: float = 0.0
    last_noted: float = 0.0  # when the ingest was last told the progress (monotonic)
    asked: tuple[tuple[tuple[str, float], ...], ...] = ()  # bundles asked of the autoscaler
    asked_at: float = 0.0  # when they were last considered (monotonic)
    backlog_at: dict[str, float] = field(default_factory=dict)  # per pool, last seen
    n_messages: int = 0  # what this run's ingest has read so far
    base_messages: int = 0  # what earlier attempts read, when this one resumes theirs
    base_files: int = 0  # the files they completed (the ingest's counts start from zero)
    transaction: int = 0  # the number of the open transaction (the producer's count)
    targets: dict[str, Target] = field(default_factory=dict)  # by name: for failure reports

    def flush_log(self, *, every: float = 5.0) -> None:
        if self.results_log is not None and time.monotonic() - self.last_flush >= every:
            self.last_flush = time.monotonic()
            try:
                self.results_log.flush()
            except OSError as exc:
                log.warning("cannot write %s: %s", self.results_log.path, exc)

    def file_ended(self, file_id: int, now: float) -> None:
        """Every result of the file ended: list it in the results CSV if one was delivered."""
        meta = self.metas.pop(file_id, None)
        if file_id in self.delivered and meta is not None and self.results_log is not None:
            self.results_log.record(
                meta.filename,
                meta.relative_path,
                n_chunks=meta.n_total_chunks,
                first_message=meta.first_seen,
                now=now,
            )
        self.delivered.discard(file_id)


def run_pipeline(
    reproducer: Any,
    settings: PipelineSettings,
    stop: threading.Event | None = None,
    summary: RunSummary | None = None,
) -> RunSummary:
    """Run a reference-style reproducer: one target, its results the reference's own."""
    options: dict[str, Any] = {"num_cpus": settings.actor_num_cpus}
    if settings.actor_resources:
        options["resources"] = dict(settings.actor_resources)
    target = Target(
        name=type(reproducer).__name__,
        payload=reproducer,
        actor_options=options,
        n_actors=settings.n_analysis_actors,
        max_actors=settings.max_analysis_actors,
        timeout_s=settings.analysis_timeout_s,
    )
    return run_targets([target], settings, stop, summary)


def run_targets(
    targets: list[Target],
    settings: PipelineSettings,
    stop: threading.Event | None = None,
    summary: RunSummary | None = None,
) -> RunSummary:
    """Run until ``stop`` is set, SIGINT/SIGTERM, or a batch stop condition; then drain.

    Each completed file goes to every target whose ``files`` pattern matches it, each
    target with its own pool of actors. ``summary``: counted into as the run goes (another
    thread may read its progress), and returned.
    """
    stop = stop or threading.Event()
    if settings.file_transfer not in ("auto", "always"):
        raise ReproducerError(
            f"file_transfer must be 'auto' or 'always', not {settings.file_transfer!r}"
        )
    if len({t.name for t in targets}) != len(targets):
        raise ReproducerError(f"two analyses share a name: {[t.name for t in targets]}")
    group = settings.group_id or settings.config.consumer.get("group.id")
    if settings.exactly_once and group in _NEW_GROUPS:
        raise ReproducerError(
            "--exactly_once needs a consumer group that stays the same across restarts: with "
            f"{group or 'no group'!r} each start is a new group with a new transactional id, "
            "so a restart would produce every result again; set --consumer_group_id NAME "
            "(or group.id in the config file's [consumer] section)"
        )
    # A refused password or certificate says so before anything is consumed, not as a hang
    # of every actor: asked while Ray starts and the actors start, awaited before any is
    # waited for.
    broker = _BrokerCheck(settings.config)
    broker.start()
    try:
        connect(settings.ray_address, dashboard=settings.ray_dashboard)
    except ConnectionError as exc:
        raise ReproducerError(broker.verdict() or str(exc)) from exc
    node_types = addable_node_types()  # None: the cluster has the nodes it will have
    for target in targets:
        _check_resources(f"an actor of {target.name}", target.actor_options, node_types)
    if settings.ingest_resources:
        _check_resources("the ingest actor", {"resources": settings.ingest_resources}, node_types)
    home = ray.get_runtime_context().get_node_id()
    targets = [
        dataclasses.replace(t, output_dir=t.output_dir or settings.output_dir, home_node=home)
        for t in targets
    ]
    # Pickled first: an analysis that cannot be shipped to actors fails before any actor
    # joins the consumer group.
    shared = {target.name: ray.put(target) for target in targets}
    consumer = settings.config.consumer_settings(group_id=settings.group_id)
    consumer.setdefault("auto.offset.reset", "earliest")
    # What librdkafka fetches and prefetches comes out of the budget: an eighth of it
    # (1-64 MiB) for each, the rest for files (measured: on top of it, these two took a
    # 256 MiB budget to +390 MiB). Its default of 1 MiB per partition per fetch (two
    # chunks) is too little for throughput.
    prefetch = min(max(settings.max_held_bytes // 8, 1 << 20), 64 << 20)
    files_budget = max(settings.max_held_bytes - 2 * prefetch, settings.max_held_bytes // 2)
    consumer.setdefault("queued.max.messages.kbytes", prefetch >> 10)
    consumer.setdefault("fetch.max.bytes", prefetch)
    consumer.setdefault("max.partition.fetch.bytes", min(prefetch, 8 << 20))
    # When that queue is full, librdkafka waits this long before it fetches again (1 s by
    # default): under backpressure the ingest drains it in a few ms and would then sit
    # idle for the rest of the second (measured: a budget-bound run at a third of its rate).
    consumer.setdefault("fetch.queue.backoff.ms", 10)
    # And a fetch for a partition with nothing new waits this long at the broker (500 ms by
    # default) before the partition the ingest resumes meanwhile can be fetched.
    consumer.setdefault("fetch.wait.max.ms", 100)
    ingest_settings = IngestSettings(
        topic=settings.consumer_topic,
        consumer=consumer,
        mode=settings.mode,
        output_dir=settings.output_dir,
        download_regex=settings.download_regex,
        max_in_flight=settings.max_in_flight,
        max_held_bytes=files_budget,
        file_idle_timeout=settings.file_idle_timeout,
        dead_letter_topic=settings.dead_letter_topic,
        dead_letter_producer=settings.config.producer_settings(),
        logs_dir=settings.output_dir / LOGS_DIR if settings.output_dir is not None else None,
        check_chunk_hashes=settings.check_chunk_hashes,
        hash_threads=settings.hash_threads,
        transactional=settings.exactly_once,
        start_from=settings.start_from,
        # a group named for the long run keeps state; a new one at every start has none
        state_topic=(
            state_topic(consumer["group.id"], settings.consumer_topic)
            if group not in _NEW_GROUPS
            else None
        ),
        analyses=tuple(t.name for t in targets),
        # --reprocess, or a replay: files the state records list as done are rebuilt and
        # produced again
        remember_state=not settings.reprocess and settings.start_from is None,
        analysis_slots=sum(max(t.n_actors, t.max_actors or 0) for t in targets),
    )
    summary = summary if summary is not None else RunSummary()
    console = Console(stop)  # q and c on standard input, for every resume of the run
    fruitless = 0  # resumes in a row that produced nothing
    while True:
        produced = summary.n_results_produced
        try:
            return _run_once(
                targets,
                settings,
                stop,
                summary,
                shared=shared,
                consumer=consumer,
                ingest_settings=ingest_settings,
                console=console,
                broker=broker,
                node_types=node_types,
            )
        except RunInterrupted as exc:
            fruitless = fruitless + 1 if summary.n_results_produced == produced else 1
            if stop.is_set() or fruitless > MAX_FRUITLESS_RESUMES:
                raise ReproducerError(
                    f"{exc}; exactly once, the run stops here and a restart resumes from the "
                    "last committed transaction"
                ) from exc
            log.warning(
                "%s: exactly once, resuming from the last committed transaction (all of this "
                "run's state is dropped, and read again)",
                exc,
            )
            # a replay's start applies once: from here on, the committed offsets
            # and the state records are honoured (a replay's, or --reprocess, included: what
            # this run committed must not be produced again)
            ingest_settings = dataclasses.replace(
                ingest_settings, start_from=None, remember_state=True
            )
            _wait_for_the_broker(settings, stop)


class _BrokerCheck(threading.Thread):
    """Whether the broker takes the run's client settings (``[consumer]``, then
    ``[producer]``), asked on a thread of its own: :meth:`verdict` is why not, or empty."""

    def __init__(self, config: KafkaConfig) -> None:
        super().__init__(name="broker-check", daemon=True)
        self._config = config
        self._refusal = ""

    def run(self) -> None:
        try:
            for section, client in (
                ("[consumer]", self._config.consumer_settings()),
                ("[producer]", self._config.producer_settings()),
            ):
                if refused := broker_refusal(client, section):
                    self._refusal = refused
                    return
        except Exception as exc:  # noqa: BLE001 - told by verdict(), in the driver's thread
            self._refusal = f"the broker's settings could not be checked: {exc}"

    def verdict(self) -> str:
        self.join()
        return self._refusal


def _wait_for_the_broker(settings: PipelineSettings, stop: threading.Event) -> None:
    """Before a resume: until the broker answers for the chunk topic (a broker restarting
    after a crash), so that the new attempt's actors start rather than fail on it; at most
    ``BROKER_WAIT_S``, then the attempt tries anyway and says what is wrong."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from reproducer.kafka_log import logged  # noqa: PLC0415
    from reproducer.topics import connection_only, partitions_of  # noqa: PLC0415

    admin = AdminClient(logged(connection_only(settings.config.producer_settings())))
    deadline = time.monotonic() + BROKER_WAIT_S
    said = False
    while not stop.is_set():
        try:
            partitions_of(admin, settings.consumer_topic, timeout=5)
            return
        except ReproducerError as exc:
            if time.monotonic() >= deadline:
                return
            if not said:
                log.warning("waiting for the broker before resuming: %s", exc)
                said = True
            stop.wait(1.0)


_NEW_GROUPS = (None, "", "create_new")  # a new consumer group at every start

# Resumes in a row, each without a result, before an interrupted run stops instead.
MAX_FRUITLESS_RESUMES = 3
# The most a resume waits for a broker that does not answer.
BROKER_WAIT_S = 120.0


def _run_once(
    targets: list[Target],
    settings: PipelineSettings,
    stop: threading.Event,
    summary: RunSummary,
    *,
    shared: dict[str, Any],
    consumer: dict[str, Any],
    ingest_settings: IngestSettings,
    console: Console,
    broker: _BrokerCheck,
    node_types: dict[str, dict[str, Any]] | None,
) -> RunSummary:
    """Start the actors, run the driver loop until the run ends, drain, stop them."""
    books = _Books(
        targets={t.name: t for t in targets},
        base_messages=summary.n_msgs_read,
        base_files=summary.n_files_read,
    )
    if settings.output_dir is not None:
        books.results_log = ResultsLog(settings.output_dir / LOGS_DIR, settings.producer_topic)
    restore = _install_signal_handlers(stop)
    # The producer lives on the driver's node (so does the lock's actor, if one is made):
    # a lost analysis node never takes them along (a lost driver node ends the run anyway). So does the ingest actor
    # unless --ingest_resources places it (near the brokers, say).
    here = {
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        )
    }
    # cheap on one node (an OS lock); its actor made only when the run spans nodes
    lock = ClusterLock.for_run(uuid.uuid4().hex[:12])
    # Stable across restarts of the same group: a restarted run fences its crashed one.
    transactional_id = (
        f"ray-reproducer.{consumer['group.id']}.{settings.consumer_topic}"
        if settings.exactly_once
        else None
    )
    producer = ProducerActor.options(**here).remote(  # type: ignore[attr-defined]
        settings.config.producer_settings(),
        settings.producer_topic,
        transactional_id,
        tuple(t.topic for t in targets if t.topic),
        settings.produce_retry_s,
    )
    ingest = None
    pools: dict[str, AnalysisPool] = {}
    started = ended_cleanly = False
    try:
        # Every actor starts at once (each takes a worker process and its imports); the
        # ingest actor subscribes and joins the consumer group only when all are ready, so
        # a failed start never leaves a member that is gone, and no file waits for an
        # analysis actor.
        placement = (
            {"resources": dict(settings.ingest_resources)} if settings.ingest_resources else here
        )
        # named, for `reproducer status` and `ray list actors` (a run id: a restarted run
        # never waits for the name of one whose actors are still being cleaned up)
        name = ingest_actor_name(consumer["group.id"], uuid.uuid4().hex[:8])
        ingest = IngestActor.options(  # type: ignore[attr-defined]
            name=name, namespace=NAMESPACE, **placement
        ).remote(ingest_settings)
        driver = _Driver(
            settings,
            ingest,
            producer,
            pools,
            summary,
            books,
            console,
            state_topic=ingest_settings.state_topic,
            node_types=node_types,
        )
        source = FileSource(ingest, settings.file_transfer)
        for target in targets:
            options = {**target.actor_options, "max_restarts": 0}
            pools[target.name] = AnalysisPool(
                _actor_maker(options, shared[target.name], lock, source),
                target.n_actors,
                max_retries=settings.max_retries,
                on_death=lambda actor: release_dead_owner(lock, owner_id(actor)),
                timeout_s=target.timeout_s,
                name=target.name,
                max_actors=target.max_actors,
                scale=ScaleSettings(idle_timeout_s=settings.idle_actor_timeout),
                need=_needs(options),
            )
        if refused := broker.verdict():
            raise ReproducerError(refused)
        _check_started("producer", producer)
        _check_started("ingest", ingest)
        started = True
        for pool in pools.values():
            pool.wait_started(settings.startup_timeout, autoscaler=driver.node_types is not None)
        try:
            ray.get(ingest.start.remote(), timeout=180)  # reads the state records first
        except ray.exceptions.GetTimeoutError as exc:
            raise ReproducerError("the ingest actor did not start consuming within 180 s") from exc
        except ray.exceptions.RayTaskError as exc:  # the state topic cannot be read, say
            raise ReproducerError(f"the ingest actor could not start: {first_line(exc)}") from exc
        _log_placement(ray.get(ingest.node.remote()), pools)
        driver.loop(stop, targets)
        ended_cleanly = True
    except ray.exceptions.RayActorError as exc:
        raise ReproducerError(
            f"a pipeline actor died: {first_line(exc)}; a restart resumes from the "
            "committed offsets"
        ) from exc
    finally:
        restore()
        for pool in pools.values():
            pool.close()
        try:
            if started:
                driver.drain(commit=ended_cleanly)
        finally:
            for actor in (ingest, producer):
                if actor is not None:
                    ray.kill(actor)
            lock.close()
            if books.results_log is not None:
                with contextlib.suppress(OSError):  # a write error was logged by the loop
                    books.results_log.close()
    return summary


def _log_placement(ingest_node: str, pools: dict[str, AnalysisPool]) -> None:
    """Which node runs what: a node by its address and the start of its id (8 hex digits,
    as ``ray list nodes`` ids begin)."""
    names = {
        node["NodeID"]: node.get("NodeManagerAddress", "?")
        for node in ray.nodes()  # type: ignore[no-untyped-call]
    }

    def where(node: str) -> str:
        return f"{names.get(node, '?')} ({node[:8]})"

    log.info("placement: ingest actor on node %s", where(ingest_node))
    for name, pool in pools.items():
        counts = Counter(pool.nodes)
        log.info(
            "placement: %s: %s",
            name,
            ", ".join(f"{n} actor(s) on node {where(node)}" for node, n in counts.items())
            or "no actor placed yet",
        )


def _actor_maker(
    options: dict[str, Any], target: Any, lock: ClusterLock, source: FileSource
) -> Any:
    def make() -> Any:
        return AnalysisActor.options(**options).remote(target, lock, source)  # type: ignore[attr-defined]

    return make


def _needs(options: dict[str, Any]) -> dict[str, float]:
    """What one actor made with these options asks Ray for, as a resource bundle."""
    need = {
        "CPU": float(options.get("num_cpus") or 0),
        "GPU": float(options.get("num_gpus") or 0),
        "memory": float(options.get("memory") or 0),
        **options.get("resources", {}),
    }
    return {name: amount for name, amount in need.items() if amount > 0}


def _check_resources(
    name: str, options: dict[str, Any], types: dict[str, dict[str, Any]] | None = None
) -> None:
    """Fail at once if no node could ever host an actor (not hang pending): no live node
    offers what it asks for and, with an autoscaler, no node type of its config does
    either. An actor a node type offers waits for the autoscaler to add such a node."""
    need = _needs(options)
    nodes = [node for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
    if any(fits(need, node["Resources"]) for node in nodes):
        return
    if types is not None:
        able = [
            kind
            for kind, spec in types.items()
            if spec["max_workers"] > 0
            and not spec["head"]
            and fits(need, spec["resources"], unknown=MEASURED)
        ]
        if able:
            log.info(
                "no live node can host %s needing %s yet: it waits for the autoscaler to add "
                "a node of type %s",
                name,
                need,
                " or ".join(able),
            )
            return
        offered = "; ".join(
            f"{kind}: " + ", ".join(f"{k}={v:g}" for k, v in sorted(spec["resources"].items()))
            for kind, spec in types.items()
        )
        raise ReproducerError(
            f"no node type of the autoscaler's cluster can host {name} needing {need} "
            f"(--analysis_num_cpus, --analysis_resources); its node types offer: {offered}"
        )
    offered = "; ".join(
        ", ".join(f"{k}={v:g}" for k, v in sorted(node["Resources"].items()) if "node:" not in k)
        for node in nodes
    )
    raise ReproducerError(
        f"no node of the Ray cluster can host {name} needing {need} "
        f"(--analysis_num_cpus, --analysis_resources); the nodes offer: {offered}"
    )


def _check_started(name: str, actor: Any) -> None:
    """The ingest or producer actor says why it cannot work (a missing topic, an
    unreachable broker, refused settings) before anything is consumed."""
    try:
        error = ray.get(actor.ready.remote(), timeout=120)
    except ray.exceptions.GetTimeoutError as exc:
        raise ReproducerError(f"the {name} actor did not start within 120 s") from exc
    if error:
        raise ReproducerError(error)


MAX_DELIVERY_ATTEMPTS = 3
ASK_EVERY_S = 5.0  # how often the backlog is weighed against the nodes asked for
LAG_AHEAD_S = 60.0  # a pool's share of the topic's lag past this many seconds: nodes asked


@dataclass
class _Driver:
    """The driver loop and its state: what it started (the actors, one pool per target),
    what it counts (``summary``) and what it keeps between analysis and acknowledgement
    (``books``)."""

    settings: PipelineSettings
    ingest: Any
    producer: Any
    pools: dict[str, AnalysisPool]
    summary: RunSummary
    books: _Books
    console: Console  # one per process run: a resumed run keeps it
    telemetry: Telemetry | None = None  # set by loop()
    state_topic: str | None = None  # exactly once: the group's (reproducer.state)
    node_types: dict[str, dict[str, Any]] | None = None  # an autoscaler that can add nodes

    def loop(self, stop: threading.Event, targets: list[Target]) -> None:
        """Run the passes with the run's telemetry and console around them."""
        telemetry = Telemetry(
            TelemetrySettings(
                program_id=self.settings.program_id,
                heartbeat_topic=self.settings.heartbeat_topic,
                heartbeat_interval=self.settings.heartbeat_interval,
                log_topic=self.settings.log_topic,
                log_interval=self.settings.log_interval,
                update_seconds=self.settings.update_seconds,
                progress_line=self.settings.progress_line,
                topic=self.settings.consumer_topic,
            ),
            self.settings.config,
        )
        self.telemetry = self.console.telemetry = telemetry
        try:
            self._passes(stop, targets, telemetry)
        finally:
            telemetry.tick(self.summary.progress())
            telemetry.close()
            if self.books.asked:  # the autoscaler need not keep room for a stopped run
                with contextlib.suppress(Exception):
                    request_nodes([])

    def _ask_for_nodes(self, now: float) -> None:
        """With an autoscaler that can add nodes: room for the whole range of every elastic
        pool with a backlog (files waiting past its target, or its files still in the
        topic, the lag in files, enough to keep its actors busy for over
        :data:`LAG_AHEAD_S`) in the last idle timeout, so that nodes come before the
        actors do, beside room for every other pool's actors (the request is for the
        cluster's whole size). Released once no pool had a backlog for that long."""
        if self.node_types is None or now - self.books.asked_at < ASK_EVERY_S:
            return
        self.books.asked_at = now
        per_file = self.summary.n_msgs_read / max(self.summary.n_files_read, 1)
        lag_files = self.summary.stats.topic_lag / max(per_file, 1.0)
        wanted: list[dict[str, float]] = []
        others: list[dict[str, float]] = []
        why = []
        for name, pool in self.pools.items():
            counts = pool.counts()
            actors = counts["running"] + counts["starting"] + counts["pending"]
            ahead = lag_files * (pool.file_seconds or 0.0) / max(actors, 1)
            if pool.limits.elastic and pool.need and (pool.late or ahead > LAG_AHEAD_S):
                self.books.backlog_at[name] = now
                why.append(f"{name}: {counts['waiting']} files waiting, ~{lag_files:.0f} to read")
            if now - self.books.backlog_at.get(name, -math.inf) < self.settings.idle_actor_timeout:
                wanted += [pool.need] * pool.limits.max
            elif pool.need:
                others += [pool.need] * actors
        bundles = wanted + others if wanted else []
        asked = tuple(tuple(sorted(b.items())) for b in bundles)
        if asked == self.books.asked:
            return
        try:
            request_nodes(bundles)
        except Exception as exc:  # noqa: BLE001 - the pools grow as their actors are placed
            log.warning("could not ask the autoscaler for nodes: %s", exc)
            return
        self.books.asked = asked
        if bundles:
            log.info(
                "asked the autoscaler for room for %d actor(s) (%s)",
                len(bundles),
                "; ".join(why) or "a backlog in the last idle timeout",
            )
        else:
            log.info("released the request for nodes: no backlog")

    def _passes(self, stop: threading.Event, targets: list[Target], telemetry: Telemetry) -> None:
        """Wait on whichever is ready first: new files, finished analyses, acknowledgements."""
        last_work = time.monotonic()
        taking = None
        consuming = False  # the ingest actor has its partitions: idleness counts from then on
        patterns = {t.name: re.compile(t.files) if t.files else None for t in targets}
        while not stop.is_set():
            if taking is None:  # bounded by the ingest actor; the finished files go along
                taking = self.ingest.take.remote(
                    self.settings.max_in_flight, 0.2, finished=self.books.finish_now
                )
                self.books.finish_now, self.books.last_finish = [], time.monotonic()
            if self.books.acking is None and not self.settings.exactly_once:
                self.books.acking = self.producer.take_acked.remote(0.2)
            running = [ref for pool in self.pools.values() for ref in pool.running]
            waiting = [
                taking,
                *([self.books.acking] if self.books.acking is not None else []),
                *running,
            ]
            ready, _ = ray.wait(waiting, num_returns=1, timeout=0.5)
            if ready:  # take everything that is ready now, not one thing per pass
                ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            ready_set = set(ready)
            busy = False
            if taking in ready_set:
                try:
                    files, failures, stats = ray.get(taking)
                except RunInterrupted as exc:  # partitions lost: run_targets resumes
                    raise RunInterrupted(first_line(exc)) from exc
                except ray.exceptions.RayTaskError as exc:
                    # its loop stopped (it says so), or the files could not be packed
                    why = first_line(exc)
                    if not isinstance(exc, ReproducerError):
                        why = f"the ingest actor could not hand files on: {why}"
                    raise ReproducerError(
                        f"{why}; a restart resumes from the committed offsets"
                    ) from exc
                taking = None
                for task in files:
                    self._fan_out(task, patterns)
                self.summary.n_files_failed += len(failures)
                # chunks read are work too: a large file takes many seconds to arrive
                reading = stats.n_messages > self.books.n_messages
                self.books.n_messages = stats.n_messages
                self._count(stats)
                consuming = stats.assigned
                busy = bool(files or failures or stats.in_flight or reading)
            if self.books.acking in ready_set:
                try:
                    acked, refused, rejected = ray.get(self.books.acking)
                except ray.exceptions.RayTaskError as exc:
                    raise ReproducerError(
                        f"the producer failed: {first_line(exc)}; a restart produces every "
                        "result not acknowledged"
                    ) from exc
                self.books.acking = None
                self._delivered(acked, refused, rejected)
                busy = busy or bool(acked or refused or rejected)
            for pool in self.pools.values():
                results = pool.collect(ready)
                if results:
                    self._collected(results)
                    busy = True
            self._check_produced()
            now = time.monotonic()
            # the next take carries them, unless it would be later than 20 ms from now
            if self.books.finish_now and now - self.books.last_finish >= 0.02:
                self.ingest.finish.remote(self.books.finish_now)
                self.books.finish_now, self.books.last_finish = [], now
            if (
                self.settings.exactly_once
                and now - self.books.last_txn >= self.settings.transaction_interval
            ):
                self._commit_transaction()
            self.books.flush_log()
            self.summary.n_in_analysis = sum(pool.n_pending for pool in self.pools.values())
            self.summary.actors = tuple(
                (name, counts["running"], counts["starting"], counts["pending"], counts["waiting"])
                for name, counts in ((name, pool.counts()) for name, pool in self.pools.items())
            )
            # results held for coverage (exactly once) do not keep the run busy: the drain
            # commits those it can, a restart redoes the rest
            held = sum(len(results) for results in self.books.held.values())
            producing = len(self.books.producing) > held
            if busy or not consuming or self.summary.n_in_analysis or producing:
                last_work = now
            self._ask_for_nodes(now)
            progress = self.summary.progress()
            telemetry.tick(progress)
            if now - self.books.last_noted >= 2.0:  # for `reproducer status`
                self.books.last_noted = now
                self.ingest.note_progress.remote(dataclasses.asdict(progress))
            if (
                self.settings.max_results is not None
                and self.summary.n_results_produced >= self.settings.max_results
            ):
                return
            if (
                self.settings.stop_when_idle is not None
                and now - last_work >= self.settings.stop_when_idle
            ):
                return

    def _producer_fatal(self) -> str:
        """The producer's fatal error, if it has one and answers (it may have died). Its
        open transaction is aborted first (once is enough), which tells a fatal state
        whatever the failed call itself raised."""
        try:
            ray.get(self.producer.abort.remote(), timeout=ABORT_TIMEOUT_S + 10)
            return str(ray.get(self.producer.fatal.remote(), timeout=10))
        except ray.exceptions.RayError:
            return ""

    def _count(self, stats: IngestStats) -> None:
        """The ingest's counts, over the whole run: a resumed attempt's ingest counts from
        zero (``stats`` itself, partial files and memory, is this attempt's)."""
        self.summary.stats = stats
        self.summary.n_msgs_read = self.summary.n_msgs_processed = (
            self.books.base_messages + stats.n_messages
        )
        self.summary.n_files_read = self.books.base_files + stats.n_files_completed

    def _fan_out(self, task: FileTask, patterns: dict[str, re.Pattern[str] | None]) -> None:
        """Send a completed file to every target that wants it; a file none wants (or whose
        results the results CSV already lists) ends at once."""
        meta = task.meta
        self.books.metas[meta.file_id] = meta
        names = [
            name
            for name, pattern in patterns.items()
            if pattern is None or pattern.match(meta.relative_path)
        ]
        if not names:
            self.books.open_results[meta.file_id] = 1
            self._result_ended(meta.file_id)
            return
        self.books.open_results[meta.file_id] = len(names)
        for name in names:
            self.pools[name].submit(task)

    def _collected(self, results: list[AnalysisResult]) -> None:
        """Produce the good results; a failed one ends at once (it has been logged, and
        is reported to the dead-letter topic)."""
        good = []
        for result in results:
            if self.telemetry is not None:
                ok = result.key is not None and result.value is not None
                self.telemetry.analysed(result.analysis, result.seconds, ok)
            if result.attachments:
                self._keep_attachments(result)
                result = dataclasses.replace(result, attachments=())  # noqa: PLW2901
            if result.key is None or result.value is None:
                self.summary.n_files_failed += 1
                reason = (
                    "declined (returned None)"
                    if result.declined
                    else f"{'bad input' if result.permanent else 'raised'}: {result.error}"
                )
                self._report(result, reason)
                self._result_ended(result.file_id)
                continue
            numbered = dataclasses.replace(result, result_id=next(self.books.ids))
            self.books.producing[numbered.result_id] = numbered
            good.append(numbered)
        if not good:
            return
        if self.settings.exactly_once:
            # Held until the next transaction (see _commit_transaction), which carries
            # them once every result of their file has ended.
            for result in good:
                self.books.held.setdefault(result.file_id, []).append(result)
                self._result_ended(result.file_id)
            return
        self.books.produce_calls.append(self.producer.produce.remote(good))

    def _keep_attachments(self, result: AnalysisResult) -> None:
        """Write the plots an analysis made on another node under this node's output
        folder, where the cluster's user finds them all (the result's claim check names
        them). Inside the folder only; a failure is logged, the result still counts."""
        root = self.settings.output_dir
        if root is None:
            return
        for relative, data in result.attachments:
            target = root.joinpath(*relative.split("/"))
            try:
                if relative.split("/")[0] == LOGS_DIR:
                    raise ValueError(f"{LOGS_DIR}/ holds the reproducer's own logs and records")
                if not target.resolve().is_relative_to(root.resolve()):
                    raise ValueError("it resolves outside the output folder")
                write_atomically(target, data)
            except (OSError, ValueError) as exc:
                log.warning(
                    "file=%s the %s analysis's %s was not kept: %s",
                    result.relative_path,
                    result.analysis,
                    relative,
                    exc,
                )

    def _result_ended(self, file_id: int) -> None:
        """One result of the file ended; when all have, its offsets may be committed
        (exactly-once: with the open transaction)."""
        left = self.books.open_results.get(file_id, 1) - 1
        if left > 0:
            self.books.open_results[file_id] = left
            return
        self.books.open_results.pop(file_id, None)
        if self.settings.exactly_once:
            self.books.txn_done.append(file_id)
        else:
            self.books.finish_now.append(file_id)
            self.books.file_ended(file_id, time.time())

    def _commit_transaction(self) -> None:
        """Exactly-once: commit, in one transaction, the results of every file finished
        since the last one, the state records that keep a restart from producing them
        again, and the offsets now safe.

        1. the ingest marks the files finished and answers with the safe offsets (below
           every file neither carried nor failed) and the state records: one for each
           carried file with a chunk at or above those offsets (an older, slower file
           pins its partition), tombstones for records now wholly below them
           (:mod:`reproducer.state`);
        2. the results are produced into the open transaction;
        3. the producer produces the state records, flushes, and commits them all with the
           offsets.

        No result waits for another file: one slow file holds back only the offsets. A
        failure raises: nothing of the transaction counts. One the run can mend (a lost
        session, a broker that does not answer, a commit whose outcome is unknown) raises
        :class:`RunInterrupted`: the run resumes from the last commit, whose state records
        say which files not to produce again; anything else stops it.
        """
        self.books.last_txn = time.monotonic()
        done, self.books.txn_done = self.books.txn_done, []
        analyses = tuple(self.books.targets)
        results: list[AnalysisResult] = []
        rejected: list[tuple[int, str]] = []  # reported once the transaction is settled
        try:
            point = ray.get(
                self.ingest.commit_point.remote(dict.fromkeys(done, analyses)), timeout=60
            )
            results = [r for f in point.covered for r in self.books.held.pop(f, [])]
            while True:  # again without a result the broker refused (see ProducerActor.commit)
                if results:
                    ray.get(
                        self.producer.produce.remote(results, self.books.transaction), timeout=120
                    )
                # Always, even empty (cheap: nothing reaches the broker). The actor's own
                # waits add up to less than this (see ProducerActor.commit).
                outcome = ray.get(
                    self.producer.commit.remote(
                        point.offsets,
                        point.group_metadata,
                        self.settings.consumer_topic,
                        point.state,
                        self.state_topic,
                    ),
                    timeout=COMMIT_TIMEOUT_S + ABORT_TIMEOUT_S + 30,
                )
                self.books.transaction += 1
                never = {result_id for result_id, _ in outcome.rejected}
                results = [r for r in results if r.result_id not in never]
                rejected += outcome.rejected
                if not outcome.redo:
                    break
        except ray.exceptions.GetTimeoutError as exc:
            # Whether it committed is unknown. A new producer with the same transactional
            # id completes or aborts it (init_transactions), so resuming from the committed
            # offsets and state is safe, as after a lost session.
            raise RunInterrupted(
                f"the transaction of {len(results)} results did not finish in time (a broker "
                f"that does not answer?); whether it committed is unknown until a new "
                f"producer takes its transactional id: {first_line(exc)}"
            ) from exc
        except RunInterrupted as exc:
            # The actors judged it: the ingest lost its partitions, or the producer's
            # transaction failed for the lost session or a broker that did not answer in
            # time (reproducer.delivery). run_targets resumes, as a restart would.
            raise RunInterrupted(
                f"{first_line(exc)} (the open transaction, {len(results)} results, does not count)"
            ) from exc
        except ray.exceptions.RayError as exc:
            # Anything else stops the run: resuming a fenced producer would fence the other
            # run of this group in turn. The error that reaches here does not always name
            # the cause (confluent-kafka raises a fatal error from whichever call serves it,
            # and one that serves it silently leaves a SystemError for the thread's next
            # call), so the producer is asked for its fatal error too.
            why = first_line(exc)
            fatal = self._producer_fatal()
            if fatal and fatal not in why:
                why = f"the producer cannot go on: {fatal} ({why})"
            raise ReproducerError(
                f"the transaction of {len(results)} results could not commit; nothing of it "
                f"counts, and a restart redoes it: {why}"
            ) from exc
        self._acknowledged([r.result_id for r in results], [])  # committed: they count
        self._rejected(rejected)
        # Recorded at once, before anything else can fail (the results CSV).
        now = time.time()
        for file_id in point.covered:
            try:
                self.books.file_ended(file_id, now)
            except OSError as exc:
                log.error("cannot record a committed result in the results log: %s", exc)
        if point.offsets:
            try:
                ray.get(self.ingest.confirm.remote(point.offsets), timeout=60)
            except ray.exceptions.RayError as exc:
                raise ReproducerError(
                    f"the transaction committed, but the ingest actor did not take note: "
                    f"{first_line(exc)}; a restart resumes after it"
                ) from exc

    def _delivered(
        self,
        acked: list[int],
        refused: list[tuple[int, str]],
        rejected: list[tuple[int, str]],
    ) -> None:
        """At least once: acknowledged results end (their files may be committed past);
        rejected ones (never sendable: too large, say) end as failed; refused ones are
        produced again, and too many refusals stop the run, after the rest has ended."""
        files = [self.books.producing[result_id].file_id for result_id in acked]
        self._acknowledged(acked, [])
        for file_id in files:
            self._result_ended(file_id)
        for result in self._rejected(rejected):
            self._result_ended(result.file_id)
        again = self._acknowledged([], refused)
        if again:
            self.books.produce_calls.append(self.producer.produce.remote(again))

    def _report(self, result: AnalysisResult, reason: str) -> None:
        """A dead-letter report of one failed (file, analysis), with what identifies both."""
        if self.settings.dead_letter_topic is None:
            return
        meta = self.books.metas.get(result.file_id)
        target = self.books.targets.get(result.analysis)
        report = {
            "schema": SCHEMA_VERSION,
            "kind": "analysis_failure",
            "file": result.relative_path,
            "sha512": meta.file_hash.hex() if meta is not None else None,
            "size": meta.size if meta is not None else None,
            "topic": self.settings.consumer_topic,
            "analysis": result.analysis,
            "version": target.version if target is not None else None,
            "reason": reason,
        }
        # awaited before the file is finished: its offsets wait for the report's delivery
        ray.get(self.ingest.report_failures.remote([(result.file_id, report)]), timeout=60)

    def _rejected(self, rejected: list[tuple[int, str]]) -> list[AnalysisResult]:
        """Results that can never be produced (too large, invalid: see
        :mod:`reproducer.delivery`) end as failed, counted and logged; their file is not
        listed as produced."""
        ended = []
        for result_id, why in rejected:
            result = self.books.producing.pop(result_id)
            self.books.attempts.pop(result_id, None)
            log.error(
                "file=%s the %s result can never be produced (%s): recorded as failed",
                result.relative_path,
                result.analysis,
                why,
            )
            self.summary.n_files_failed += 1
            self._report(result, f"result refused: {why}")
            ended.append(result)
        return ended

    def _check_produced(self) -> None:
        """At least once: a produce call that raised (a fatal producer error, a result
        refused for longer than the producer retries) stops the run; nothing is committed
        past a result that was not acknowledged, so a restart produces it."""
        if not self.books.produce_calls:
            return
        done, self.books.produce_calls = ray.wait(
            self.books.produce_calls, num_returns=len(self.books.produce_calls), timeout=0
        )
        try:
            ray.get(done)
        except ray.exceptions.RayTaskError as exc:
            raise ReproducerError(
                f"the producer failed: {first_line(exc)}; a restart produces every result "
                "not acknowledged"
            ) from exc

    def _acknowledged(
        self, acked: list[int], refused: list[tuple[int, str]]
    ) -> list[AnalysisResult]:
        """Count delivered results (by result id); return refused ones to produce again.

        A result is never given up silently: its offsets must not be committed without it,
        so after ``MAX_DELIVERY_ATTEMPTS`` refusals the run stops (uncommitted) instead.
        """
        for result_id in acked:
            result = self.books.producing.pop(result_id)
            self.books.attempts.pop(result_id, None)
            self.books.delivered.add(result.file_id)
            self.summary.n_results_produced += 1
            self.summary.n_result_bytes += len(result.value or b"")
            self.summary.recent_results = [*self.summary.recent_results[-99:], result.relative_path]
        again = []
        for result_id, why in refused:
            result = self.books.producing[result_id]
            self.books.attempts[result_id] = self.books.attempts.get(result_id, 0) + 1
            if self.books.attempts[result_id] >= MAX_DELIVERY_ATTEMPTS:
                raise ReproducerError(
                    f"the {result.analysis} result for {result.relative_path} was refused "
                    f"{self.books.attempts[result_id]} times ({why}); stopping without committing past it"
                )
            log.warning(
                "file=%s result not delivered (%s); producing it again", result.relative_path, why
            )
            again.append(result)
        return again

    def drain(self, *, commit: bool) -> None:
        """Deliver what was produced, mark it finished, commit, leave the group.

        Every wait is bounded: a broker that is gone must not hang a SIGTERM. After an error,
        an exactly-once run commits nothing more: its open transaction is aborted.
        """
        try:
            if self.settings.exactly_once and commit:
                self._commit_transaction()
            elif self.settings.exactly_once:
                ray.get(self.producer.abort.remote(), timeout=60)  # readers need not wait it out
            else:
                self._deliver_the_rest()
            self.books.flush_log(every=0)
            self.summary.ingest_memory = ray.get(self.ingest.memory.remote(), timeout=30)
            stats: IngestStats = ray.get(self.ingest.stop.remote(), timeout=90)
        except (ray.exceptions.RayError, ReproducerError) as exc:
            if commit:
                raise
            # the run is failing already: say what else went wrong, keep its error
            log.error("could not drain the pipeline: %s", first_line(exc))
            return
        self._count(stats)
        log.info("stopped; committed offsets %s", stats.committed)

    def _deliver_the_rest(self) -> None:
        """At least once, at shutdown: every produce call has run, the producer flushes, and
        every acknowledgement (including one the loop's pending call took) ends its result."""
        ray.get(self.books.produce_calls, timeout=60)
        self.books.produce_calls = []
        ray.get(self.producer.flush.remote(30.0), timeout=60)
        calls = [self.books.acking] if self.books.acking is not None else []
        self.books.acking = None
        for call in [*calls, self.producer.take_acked.remote(0.0)]:
            acked, refused, rejected = ray.get(call, timeout=30)
            for result_id, why in refused:  # not produced again: left uncommitted
                result = self.books.producing[result_id]
                log.error("file=%s result not delivered at shutdown: %s", result.relative_path, why)
            self._delivered(acked, [], rejected)
        if self.books.finish_now:
            ray.get(self.ingest.finish.remote(self.books.finish_now), timeout=30)
            self.books.finish_now = []


def _install_signal_handlers(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after in-flight work", signum)
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
