"""Dispatching completed files to a pool of analysis actors, with bounded work in flight.

Driver-side and Ray-aware, but no Kafka. Each actor has at most ``per_actor`` calls in
flight (one by default: what queues meanwhile makes the next batch; ``ray.wait``, never
an unbounded queue), and a call carries a batch of files: up
to ``batch_files`` of them and ``batch_bytes`` in all, never more than the queue's fair
share per free call, and no more than about ``batch_seconds`` of work by the time files
took so far; so a stream of small files costs one actor call per batch, not one per file,
while a short queue, or slow analyses, still spread over every actor. An exception in user code
is retried on another actor up to ``max_retries`` times, then recorded as failed; ``None``
from user code is failed at once; an actor that dies is replaced and its files are run
again (those of a batch each alone, so one file that kills its actor never fails the
others).

A time limit (``timeout_s`` per file, from ``register``): a call still running past it
has its actor killed, which is then handled as a death (below the files run again, each
alone; one that hangs twice is recorded as failed).

Node failure: an actor whose node died (removed, preempted) is replaced too, and its files
run again without counting against them. A replacement gets files only once Ray placed it,
so files wait for a live actor, never behind one that has nowhere to run.

Elastic pools (``max_actors`` above ``n_actors``): the pool grows and shrinks between the
two as :mod:`reproducer.scaling` decides. A new actor is like a replacement: it gets files
once placed, and one that no node can host yet is demand for Ray's autoscaler while the
pool runs on the actors it has. Only idle actors are retired (their ``close`` hook runs,
then they are stopped), so scaling never loses a file, runs one twice or holds an offset.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from reproducer.actors import AnalysisResult, FileTask, batch_arguments, owner_id
from reproducer.errors import ReproducerError, first_line
from reproducer.scaling import (
    ActorRange,
    Decision,
    PoolView,
    ScaleSettings,
    decide,
    target_wait,
)

__all__ = ["AnalysisPool"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    task: FileTask
    attempts: int = 0
    deaths: int = 0
    last_actor: int = -1
    alone: bool = False  # its batch killed an actor: run it by itself, to know whose fault
    queued_at: float = 0.0  # when it last joined the queue (monotonic)


@dataclass
class _Call:
    jobs: list[_Job]
    index: int
    actor: Any
    seq: int  # calls run in the order they were made, one at a time per actor
    started: float | None = None  # when it began to run (its actor's calls before it ended)


MAX_DEATHS = 2
"""A file whose analysis kills its actor this often is recorded as failed."""

PLACEMENT_GRACE_S = 10.0
"""At the start, how long actors that are not placed yet are waited for once another
actor of the pool is (or, with an autoscaler, at all): then the pool runs without them."""
MAX_FAILED_STARTS = 3
"""Actors of a pool that fail to start (their constructor raised, the node went) this many
times in a row stop the run: the next would fail the same way."""
RETIRE_S = 30.0
"""How long a retired actor's ``close`` hook may run before the actor is stopped anyway."""
SCALE_EVERY_S = 0.25


class AnalysisPool:
    def __init__(
        self,
        make_actor: Callable[[], Any],
        n_actors: int,
        *,
        per_actor: int = 1,
        batch_files: int = 64,
        batch_bytes: int = 4 << 20,
        batch_seconds: float = 0.05,
        max_retries: int = 2,
        on_death: Callable[[Any], object] = lambda actor: None,
        timeout_s: float | None = None,
        name: str = "",
        max_actors: int | None = None,
        scale: ScaleSettings | None = None,
        need: dict[str, float] | None = None,
    ) -> None:
        self._make_actor = make_actor
        self._limits = ActorRange(n_actors, max(max_actors or n_actors, n_actors))
        self._scale_settings = scale or ScaleSettings()
        self.need = dict(need or {})  # one actor's resource bundle
        self._pending = 0  # unplaced actors the cluster has no room for (see counts)
        self._pending_at = 0.0  # when that was last counted (monotonic)
        self._failed_starts = 0  # actors that failed to start, in a row
        self._name = name  # the analysis: named in the failures the pool itself records
        self._timeout_s = timeout_s  # per file: a call of n files may run n times this
        self._timed_out: set[str] = set()  # actors killed for running past the time limit
        self._on_death = on_death
        # one slot per actor; a retired actor's slot is None until a new actor takes it
        self._actors: list[Any] = [make_actor() for _ in range(n_actors)]
        self._busy: list[int] = [0] * n_actors
        self._placed: list[bool] = [False] * n_actors
        self._nodes: list[str] = [""] * n_actors  # each placed actor's node id
        self._idle_since: list[float | None] = [None] * n_actors  # placed, nothing in flight
        self._retiring: list[tuple[Any, Any, float]] = []  # (actor, its close call, deadline)
        self._last_scaled = 0.0
        self._quiet_since = time.monotonic()  # since no file waited
        self.n_grown = self.n_retired = 0
        self._pings: dict[Any, int] = {}  # a replacement's ping -> its index
        self._unplaced_since = 0.0
        self._per_actor = per_actor
        self._batch_files = batch_files
        self._batch_bytes = batch_bytes
        self._batch_seconds = batch_seconds
        self._file_seconds: float | None = None  # a moving average of the time a file takes
        self._max_retries = max_retries
        self._queue: deque[_Job] = deque()
        self._running: dict[Any, _Call] = {}  # result ref -> the call's files and actor
        self._n_running = 0  # files in the running calls
        self._calls = itertools.count()
        self._culprits: dict[str, int] = {}  # a dead actor's id -> the call it died in

    @property
    def n_pending(self) -> int:
        """Files queued or being analysed."""
        return len(self._queue) + self._n_running

    def wait_started(
        self, timeout: float, report_every: float = 15.0, *, autoscaler: bool = False
    ) -> None:
        """Wait until the actors answer; say what is awaited while Ray places them.

        Actors still unplaced :data:`PLACEMENT_GRACE_S` after another was placed (with an
        ``autoscaler``, after the start) are left pending: the pool runs on the actors it
        has, takes them on once placed, and says so once. Raises :class:`ReproducerError`
        if none was placed within ``timeout`` seconds without an autoscaler (resources that
        no node has free, for instance), or if an actor cannot be created (its reproducer
        fails to unpickle, say).
        """
        pending = {actor.ping.remote(): i for i, actor in enumerate(self._actors)}
        started = reported = time.monotonic()
        deadline = started + timeout
        first: float | None = started if autoscaler else None
        while pending:
            now = time.monotonic()
            if first is not None and now - first >= PLACEMENT_GRACE_S:
                break
            if now >= deadline:
                raise ReproducerError(
                    f"{len(pending)} of {len(self._actors)} analysis actors were not placed "
                    f"within {timeout:g} s: does the cluster have the CPUs and resources they "
                    "ask for free (--analysis_num_cpus, --analysis_resources)?"
                )
            until = min(deadline, reported + report_every)
            if first is not None:
                until = min(until, first + PLACEMENT_GRACE_S)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(until - now, 0.0))
            if ready:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                index = pending.pop(ref)
                try:
                    self._nodes[index] = ray.get(ref)
                except RayActorError as exc:
                    raise ReproducerError(f"an analysis actor could not start: {exc}") from exc
                self._placed[index] = True
                self._idle_since[index] = time.monotonic()
                first = first if first is not None else time.monotonic()
            if pending and time.monotonic() - reported >= report_every:
                reported = time.monotonic()
                log.info("waiting for %d analysis actors to be placed", len(pending))
        if pending:  # taken on as they are placed, as replacements are
            self._pings.update(pending)
            self._unplaced_since = time.monotonic()
            log.warning(
                "%s: %d of %d actors have not answered yet (waiting for a node with room, or "
                "still starting%s); the run goes on with %d and takes the others on as they "
                "are placed",
                self._name or "analysis",
                len(pending),
                len(self._actors),
                ": the autoscaler is asked for nodes" if autoscaler else "",
                sum(self._placed),
            )

    def close(self, timeout: float = 10.0) -> None:
        """Stop every actor: files still running are abandoned (their offsets stay
        uncommitted); idle actors run their ``close`` hook first, within ``timeout``."""
        idle = [a for i, a in enumerate(self._actors) if self._placed[i] and not self._busy[i]]
        closing = [a.close.remote() for a in idle] + [close for _, close, _ in self._retiring]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=timeout)
        for actor in [*self._actors, *(actor for actor, _, _ in self._retiring)]:
            if actor is not None:
                ray.kill(actor)
        self._actors, self._running, self._retiring = [], {}, []
        self._queue.clear()

    def submit(self, task: FileTask) -> None:
        self._queue.append(_Job(task, queued_at=time.monotonic()))

    @property
    def running(self) -> list[Any]:
        """References to wait on (``ray.wait``) alongside other work: analyses, and
        new or replacement actors not placed yet."""
        self._enforce_time_limit()
        self._scale()
        self._dispatch()
        return [*self._running, *self._pings]

    @property
    def limits(self) -> ActorRange:
        return self._limits

    @property
    def file_seconds(self) -> float | None:
        """What one file takes on one actor (a moving average), once known."""
        return self._file_seconds

    @property
    def late(self) -> bool:
        """Whether files wait longer than the pool's target wait (it wants more actors)."""
        waited = self._oldest_wait(time.monotonic())
        return waited > target_wait(self._scale_settings, self._file_seconds)

    def _oldest_wait(self, now: float) -> float:
        """How long the longest-waiting queued file has waited (0 with none queued)."""
        return now - min(job.queued_at for job in self._queue) if self._queue else 0.0

    def _n_unplaced(self) -> int:
        """Actors made that have not answered yet (starting, or waiting for a node)."""
        return sum(actor is not None for actor in self._actors) - sum(self._placed)

    def counts(self) -> dict[str, int]:
        """Its actors: ``running`` (placed), ``starting`` (made, not placed yet), of those
        ``pending`` (what they ask for is not free anywhere in the cluster: they wait for a
        node, from the autoscaler or another run), and the files ``waiting`` for one."""
        unplaced = self._n_unplaced()
        pending = min(self._pending, unplaced)
        return {
            "running": sum(self._placed),
            "starting": unplaced - pending,
            "pending": pending,
            "waiting": len(self._queue),
        }

    def _count_pending(self, now: float) -> None:
        """How many unplaced actors the cluster has no room for, at most every 2 s: those
        beyond the room its free resources leave, and beyond the room its whole capacity
        leaves beside this pool's placed actors; the smaller (a lower bound: an actor still
        in its constructor holds its resources, and other work holds some too)."""
        unplaced = self._n_unplaced()
        if not unplaced or not self.need:
            self._pending = 0
            return
        if now - self._pending_at < 2.0:
            return
        self._pending_at = now

        def room(offered: dict[str, float]) -> int:
            return min(int(offered.get(name, 0.0) // amount) for name, amount in self.need.items())

        free = room(ray.available_resources())  # type: ignore[no-untyped-call]
        total = room(ray.cluster_resources()) - sum(self._placed)  # type: ignore[no-untyped-call]
        self._pending = max(min(unplaced - free, unplaced - total), 0)

    # ------------------------------------------------------------------ scaling
    def _scale(self) -> None:
        """Grow or shrink within the pool's range (:func:`reproducer.scaling.decide`), and
        stop retired actors whose ``close`` ended or ran too long."""
        now = time.monotonic()
        if now - self._last_scaled < SCALE_EVERY_S:
            return
        self._last_scaled = now
        self._reap(now)
        self._count_pending(now)
        if self._queue:
            self._quiet_since = now
        if not self._limits.elastic:
            return
        view = PoolView(
            n_queued=len(self._queue),
            oldest_wait_s=self._oldest_wait(now),
            n_placed=sum(self._placed),
            n_starting=self._n_unplaced(),
            idle_s=tuple(
                (i, now - since)
                for i, since in enumerate(self._idle_since)
                if since is not None and self._placed[i] and not self._busy[i]
            ),
            quiet_s=now - self._quiet_since,
            file_seconds=self._file_seconds,
        )
        decision = decide(self._limits, self._scale_settings, view)
        if decision:
            self._apply(decision, view)

    def _apply(self, decision: Decision, view: PoolView) -> None:
        for _ in range(decision.add):
            index = next((i for i, a in enumerate(self._actors) if a is None), None)
            if index is None:
                index = len(self._actors)
                self._actors.append(None)
                self._busy.append(0)
                self._placed.append(False)
                self._nodes.append("")
                self._idle_since.append(None)
            self._start(index)
        for index in decision.retire:
            actor = self._actors[index]
            self._retiring.append((actor, actor.close.remote(), time.monotonic() + RETIRE_S))
            self._vacate(index)
        starting = [i for i, a in enumerate(self._actors) if a is not None and not self._placed[i]]
        for index in reversed(starting[len(starting) - decision.give_up :]):
            ray.kill(self._actors[index])
            self._pings = {ref: i for ref, i in self._pings.items() if i != index}
            self._vacate(index)
        self.n_grown += decision.add
        self.n_retired += len(decision.retire) + decision.give_up
        counts = self.counts()
        if decision.add:
            why = f"{view.n_queued} file(s) waiting, the longest {view.oldest_wait_s:.1f} s"
        elif decision.retire:
            why = f"{len(decision.retire)} idle for {self._scale_settings.idle_timeout_s:g} s"
        else:
            why = f"{decision.give_up} not placed, no file waiting"
        log.info(
            "%s: %d actor(s) now, %d running and %d starting, range %s (%s)",
            self._name or "analysis",
            counts["running"] + counts["starting"],
            counts["running"],
            counts["starting"],
            self._limits,
            why,
        )

    def _start(self, index: int) -> None:
        """A new actor in slot ``index``: it gets files once placed."""
        actor = self._make_actor()
        self._actors[index], self._placed[index], self._busy[index] = actor, False, 0
        self._idle_since[index] = None
        self._pings[actor.ping.remote()] = index
        if not self._unplaced_since:
            self._unplaced_since = time.monotonic()

    def _vacate(self, index: int) -> None:
        self._actors[index], self._placed[index], self._busy[index] = None, False, 0
        self._idle_since[index], self._nodes[index] = None, ""

    def _reap(self, now: float) -> None:
        if not self._retiring:
            return
        done, _ = ray.wait(
            [close for _, close, _ in self._retiring], num_returns=len(self._retiring), timeout=0
        )
        ended = set(done)
        keep = []
        for actor, close, deadline in self._retiring:
            if close in ended or now >= deadline:
                ray.kill(actor)
                self._on_death(actor)  # a lock it left taken is freed
            else:
                keep.append((actor, close, deadline))
        self._retiring = keep

    def _enforce_time_limit(self) -> None:
        """Kill the actor of a call that ran past its time limit (``timeout_s`` per file):
        a hung analysis holds its actor forever otherwise. Its death is then handled like
        any other (see :meth:`_died`): the actor is replaced and the files run again, each
        alone, and a file that hangs again is recorded as failed."""
        if self._timeout_s is None:
            return
        now = time.monotonic()
        for call in self._running.values():
            if call.started is None or now - call.started <= self._timeout_s * len(call.jobs):
                continue
            actor_id = owner_id(call.actor)
            if actor_id in self._timed_out:
                continue
            self._timed_out.add(actor_id)
            log.warning(
                "file=%s%s: analysis still running after its time limit of %g s per file: "
                "killing analysis actor %d",
                call.jobs[0].task.meta.relative_path,
                f" and {len(call.jobs) - 1} other file(s)" if len(call.jobs) > 1 else "",
                self._timeout_s,
                call.index,
            )
            ray.kill(call.actor, no_restart=True)

    @property
    def nodes(self) -> list[str]:
        """The node id of each placed actor."""
        return [node for node, placed in zip(self._nodes, self._placed, strict=True) if placed]

    def collect(self, ready: list[Any]) -> list[AnalysisResult]:
        """Results of the finished references among ``ready``; retries and replacements."""
        results: list[AnalysisResult] = []
        for ref in ready:
            if ref in self._pings:
                self._placed_now(ref)
                continue
            call = self._running.pop(ref, None)
            if call is None:
                continue
            if self._actors[call.index] is call.actor:  # not a replaced or retired one's call
                self._busy[call.index] -= 1
                if not self._busy[call.index]:
                    self._idle_since[call.index] = time.monotonic()
            self._n_running -= len(call.jobs)
            self._start_next(call.actor)
            try:
                answers: list[AnalysisResult] = ray.get(ref)
            except RayTaskError as exc:  # not user code's exception: the call itself failed
                if len(call.jobs) > 1:  # whose fault is it? each file alone tells
                    for job in reversed(call.jobs):
                        job.alone = True
                        job.queued_at = time.monotonic()
                        self._queue.appendleft(job)
                    continue
                meta = call.jobs[0].task.meta
                answers = [
                    AnalysisResult(
                        meta.file_id,
                        meta.relative_path,
                        error=str(exc)[-4000:],
                        analysis=self._name,
                    )
                ]
            except RayActorError as exc:
                results += self._died(call, exc)
                continue
            for result in answers:
                if result.error:  # only analyses that ran to the end say how long one takes
                    continue
                average = self._file_seconds
                self._file_seconds = (
                    result.seconds
                    if average is None
                    else average + 0.05 * (result.seconds - average)
                )
            for job, result in zip(call.jobs, answers, strict=True):
                if self._ended(job, result, call.index):
                    results.append(result)
        self._dispatch()
        return results

    def _start_next(self, actor: Any) -> None:
        """The actor's next call (its oldest still running) begins now."""
        calls = [c for c in self._running.values() if c.actor is actor]
        if calls:
            first = min(calls, key=lambda c: c.seq)
            if first.started is None:
                first.started = time.monotonic()

    def _died(self, call: _Call, exc: RayActorError) -> list[AnalysisResult]:
        """The actor died with ``call`` in flight: replace it and run its files again. A
        lost node is not the files' fault; an actor's own death counts only against the
        call it was running (its oldest: an actor runs its calls in order, one at a time),
        and against a file only when the file ran alone (a batch's files each run alone
        next, to find the culprit); calls queued behind it never ran."""
        index, first = call.index, call.jobs[0].task.meta
        actor_id = owner_id(call.actor)
        timed_out = actor_id in self._timed_out
        if actor_id not in self._culprits:
            # (for a time limit, the call that ran past it: the oldest, the one that started)
            self._culprits[actor_id] = min(
                [call.seq, *(c.seq for c in self._running.values() if c.actor is call.actor)]
            )
        ran = call.seq == self._culprits[actor_id]
        # A lost node shows as an unreachable actor (its raylet's socket closed) or as a
        # node the cluster no longer lists; an actor whose own process died is not.
        node_died = not timed_out and (
            exc.preempted
            or isinstance(exc, ActorUnavailableError)
            or not _alive(self._nodes[index])
        )
        others = f" and {len(call.jobs) - 1} other file(s)" if len(call.jobs) > 1 else ""
        if ran and timed_out:
            log.warning(
                "analysis actor %d was stopped on %s%s (time limit); replacing it",
                index,
                first.relative_path,
                others,
            )
        elif ran:
            log.warning(
                "analysis actor %d died on %s%s%s; replacing it: %s",
                index,
                first.relative_path,
                others,
                " (its node is gone or unreachable)" if node_died else "",
                first_line(exc),
            )
        else:
            log.info(
                "file=%s%s was queued on analysis actor %d when it died: runs again",
                first.relative_path,
                others,
                index,
            )
        if self._actors[index] is call.actor:  # not yet replaced for another call it held
            self._replace(index)
        failed = []
        for job in reversed(call.jobs):  # back to the front of the queue, in their order
            if node_died or not ran:
                pass
            elif len(call.jobs) > 1:
                job.alone = True
            else:
                job.deaths += 1
            if job.deaths < MAX_DEATHS:
                job.queued_at = time.monotonic()
                self._queue.appendleft(job)  # run again: the actor, not the file, may be at fault
                continue
            meta = job.task.meta
            error = (
                f"its analysis ran past its time limit ({self._timeout_s:g} s) {job.deaths} times"
                if timed_out
                else f"its analysis killed {job.deaths} actors: {exc}"
            )
            result = AnalysisResult(
                meta.file_id, meta.relative_path, error=error, analysis=self._name
            )
            log.error("file=%s failed: %s", meta.relative_path, result.error)
            failed.append(result)
        return failed

    def _ended(self, job: _Job, result: AnalysisResult, index: int) -> bool:
        """Whether ``result`` ends the job (else it was queued again, on another actor)."""
        if not result.error:
            return True
        job.attempts += 1
        job.last_actor = index
        if job.attempts <= self._max_retries and not result.permanent:
            log.warning(
                "file=%s analysis failed (attempt %d), retrying: %s",
                result.relative_path,
                job.attempts,
                result.error.strip().splitlines()[-1],
            )
            job.queued_at = time.monotonic()
            self._queue.append(job)
            return False
        if result.permanent:  # the input, not the code: one line says it
            log.warning(
                "file=%s %s: %s",
                result.relative_path,
                result.analysis or "analysis",
                result.error.strip().splitlines()[-1],
            )
        else:
            log.error(
                "file=%s %s failed %d times:\n%s",
                result.relative_path,
                result.analysis or "analysis",
                job.attempts,
                result.error,
            )
        return True

    def _replace(self, index: int) -> None:
        self._on_death(self._actors[index])
        self._start(index)

    def _placed_now(self, ref: Any) -> None:
        index = self._pings.pop(ref)
        try:
            self._nodes[index] = ray.get(ref)
        except RayActorError as exc:  # could not start where Ray put it: another try
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                raise ReproducerError(
                    f"{self._name or 'analysis'}: {self._failed_starts} actors in a row could "
                    f"not start: {first_line(exc)}"
                ) from exc
            log.warning(
                "%s: an actor failed to start (%d in a row), another is started: %s",
                self._name or "analysis",
                self._failed_starts,
                first_line(exc),
            )
            self._replace(index)
            return
        self._failed_starts = 0
        self._placed[index] = True
        self._idle_since[index] = time.monotonic()
        log.info(
            "%s: actor %d placed on node %s",
            self._name or "analysis",
            index,
            self._nodes[index][:8],
        )
        if all(placed or a is None for placed, a in zip(self._placed, self._actors, strict=True)):
            self._unplaced_since = 0.0

    def _dispatch(self) -> None:
        """Start queued jobs in order, in batches; a retry waits for an actor other than
        the one its last attempt failed on (when there is another), and jobs behind it go
        first."""
        waiting: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            index = self._free_actor(job.last_actor)
            if index is None:
                waiting.append(job)
                if not any(
                    n < self._per_actor and placed
                    for n, placed in zip(self._busy, self._placed, strict=True)
                ):
                    break  # every actor is full: nothing else can start either
                continue
            jobs = [job, *self._batch_for(index, job)]
            actor = self._actors[index]
            ref = actor.analyze.remote(*batch_arguments([j.task for j in jobs]))
            idle = not any(c.actor is actor for c in self._running.values())
            started = time.monotonic() if idle else None
            self._running[ref] = _Call(jobs, index, actor, next(self._calls), started)
            self._busy[index] += 1
            self._idle_since[index] = None
            self._n_running += len(jobs)
        waiting.extend(self._queue)
        self._queue = waiting

    def _batch_for(self, index: int, first: _Job) -> list[_Job]:
        """More queued jobs to send along with ``first`` to actor ``index``: the queue's
        share per free call, within the batch limits, none that must avoid this actor."""
        if first.alone:
            return []
        free = sum(
            self._per_actor - n
            for n, placed in zip(self._busy, self._placed, strict=True)
            if placed
        )
        share = -(-(len(self._queue) + 1) // max(free, 1))
        limit = min(self._batch_files, share) - 1
        if self._file_seconds is None:  # until a file's time is known, one file a call
            return []
        if self._file_seconds > 0:
            limit = min(limit, int(self._batch_seconds / self._file_seconds) - 1)
        size = first.task.meta.size
        batch: list[_Job] = []
        skipped: list[_Job] = []
        several = sum(self._placed) > 1
        while self._queue and len(batch) < limit:
            job = self._queue.popleft()
            if job.alone or (several and job.last_actor == index):
                skipped.append(job)
                continue
            if size + job.task.meta.size > self._batch_bytes:
                self._queue.appendleft(job)
                break
            size += job.task.meta.size
            batch.append(job)
        self._queue.extendleft(reversed(skipped))
        return batch

    def _free_actor(self, avoid: int) -> int | None:
        candidates = [
            i for i, n in enumerate(self._busy) if n < self._per_actor and self._placed[i]
        ]
        if sum(self._placed) > 1:
            candidates = [i for i in candidates if i != avoid]
        if not any(self._placed) and self._queue:
            self._warn_unplaced()
        return min(candidates, key=lambda i: self._busy[i]) if candidates else None

    def _warn_unplaced(self) -> None:
        waited = time.monotonic() - self._unplaced_since
        if waited >= 30:
            log.warning(
                "%d files wait: no analysis actor is placed for %.0f s; does a live node "
                "offer the resources they ask for?",
                len(self._queue),
                waited,
            )
            self._unplaced_since = time.monotonic()


def _alive(node_id: str) -> bool:
    return any(
        node["NodeID"] == node_id and node.get("Alive")
        for node in ray.nodes()  # type: ignore[no-untyped-call]
    )
