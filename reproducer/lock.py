"""The ``lock`` handed to a reference-style reproducer: a ``threading.Lock`` held cluster-wide.

A reproducer takes it around work on a shared resource (a file, a database, a counter),
once per file, so it must cost microseconds, not actor round trips. Two levels, always
taken in this order (one order: no deadlock):

1. **The node's**: ``fcntl.flock`` on a file of this run and node in Ray's session folder
   (after a ``threading.Lock`` of the process: flock does not exclude threads sharing a
   descriptor). Uncontended, two system calls; the kernel frees it when its holder dies.
2. **The cluster's**, only while the run's actors may span more than one node: a
   :class:`LockActor` with a queue of waiters, one round trip per acquire (it answers when
   the lock is granted: no polling), none per release (not waited on).

A run whose Ray instance has one node starts *single-node*: a flag file beside that node's
lock says so, and acquirers there take the node lock only. An acquirer on a node without
the flag (one that joined later) asks the :class:`LockActor`, created then, which first has
the single node leave that mode: a task there takes the node lock (waiting for its holder
to finish) and removes the flag, so every later acquirer there takes the cluster lock too;
only then is the newcomer granted. A holder that dies frees the node lock (the kernel) and
the cluster lock (the analysis pool calls :func:`release_dead_owner`, as for any death).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

__all__ = ["ClusterLock", "LockActor", "owner_id", "release_dead_owner"]

log = logging.getLogger(__name__)

NAMESPACE = "ray-reproducer"


def owner_id(actor: Any = None) -> str:
    """Who holds the lock: an actor's id (the caller's, or ``actor``'s), else "driver"."""
    if actor is not None:
        return str(actor._actor_id.hex())
    return ray.get_runtime_context().get_actor_id() or "driver"


def _lock_folder() -> Path:
    """This node's folder for the run's lock files: Ray's session folder (the same name on
    every node of a cluster), else the temporary folder."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    try:
        session = node.get_session_dir_path() if node is not None else tempfile.gettempdir()
    except AttributeError:  # Ray's internals moved
        session = tempfile.gettempdir()
    folder = Path(session) / "ray-reproducer-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _node_id() -> str:
    return str(ray.get_runtime_context().get_node_id())


@dataclass
class _NodeLock:
    """The node level: a process lock, then ``flock`` on the node's lock file."""

    path: Path
    _thread_lock: threading.Lock = field(default_factory=threading.Lock)
    _fd: int = -1

    def acquire(self, blocking: bool, deadline: float | None) -> bool:
        wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._thread_lock.acquire(blocking, wait if blocking else -1):
            return False
        try:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if blocking and deadline is None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # waits in the kernel, GIL released
                return True
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if not blocking or (deadline is not None and time.monotonic() >= deadline):
                        self._thread_lock.release()
                        return False
                    time.sleep(delay)  # flock has no timeout: a short back-off
                    delay = min(delay * 2, 0.01)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


class ClusterLock:
    """Behaves like ``threading.Lock`` (``acquire(blocking=True, timeout=-1)``,
    ``release()``, ``locked()``, ``with``), held cluster-wide: see the module's text.

    Made by the driver for one run (:meth:`for_run`), pickled to every actor; each process
    opens its node's lock file at the first acquire.
    """

    def __init__(self, run: str, single_node: str | None, home: str | None = None) -> None:
        self.run = run
        self.single_node = single_node  # the node the run started alone on, if it did
        self.home = home  # the driver's node, where the lock actor goes (if one is made)
        self._local: _NodeLock | None = None
        self._node = ""
        self._actor: Any = None
        self._owner = ""
        self._held = False
        self._cluster_held = False
        self._single_flag: Path | None = None

    @classmethod
    def for_run(cls, run: str) -> ClusterLock:
        """The driver's: single-node if the Ray instance has one node now (its flag file
        written here, on that node)."""
        alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        home = _node_id()
        lock = cls(run, home if len(alive) == 1 else None, home)
        single = lock.single_node
        if single is not None:
            lock._flag(single).touch()
        return lock

    def __getstate__(self) -> dict[str, Any]:
        return {"run": self.run, "single_node": self.single_node, "home": self.home}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run"], state["single_node"], state["home"])  # type: ignore[misc]

    @property
    def actor_name(self) -> str:
        return f"lock:{self.run}"

    def _flag(self, node: str) -> Path:
        return _lock_folder() / f"{self.run}.{node}.single"

    def _node_lock(self) -> _NodeLock:
        if self._local is None:
            self._node = _node_id()
            self._owner = owner_id()
            self._local = _NodeLock(_lock_folder() / f"{self.run}.{self._node}.lock")
            # only the node it started alone on has the flag (until it leaves that mode)
            self._single_flag = self._flag(self._node) if self._node == self.single_node else None
        return self._local

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        deadline = None if timeout < 0 else time.monotonic() + timeout
        local = self._node_lock()
        if not local.acquire(blocking, deadline):
            return False
        try:
            if self._single_flag is not None and self._single_flag.exists():  # alone: all
                self._held, self._cluster_held = True, False
                return True
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            granted = ray.get(
                self._lock_actor().acquire.remote(self._owner, self._node, wait if blocking else 0)
            )
        except BaseException:
            local.release()
            raise
        if not granted:
            local.release()
            return False
        self._held, self._cluster_held = True, True
        return True

    def release(self) -> None:
        if not self._held or self._local is None:
            raise RuntimeError("release unlocked lock")
        if self._cluster_held:
            self._lock_actor().release.remote(self._owner)  # not waited on
        self._held = self._cluster_held = False
        self._local.release()

    def locked(self) -> bool:
        """Whether this process holds it (a ``threading.Lock`` tells whether anyone does;
        across a cluster that would cost a round trip)."""
        return self._held

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _lock_actor(self) -> Any:
        """The run's :class:`LockActor`, made by the first process that needs it."""
        if self._actor is None:
            # on the driver's node: a lost analysis node never takes the lock's state along
            placement = (
                {"scheduling_strategy": NodeAffinitySchedulingStrategy(self.home, soft=True)}
                if self.home
                else {}
            )
            self._actor = LockActor.options(  # type: ignore[attr-defined]
                name=self.actor_name,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",  # not its maker's: the driver ends it with the run
                **placement,
            ).remote(self.run, self.single_node)
        return self._actor

    def close(self) -> None:
        """The driver, at the end of the run: the lock actor, if one was made, and the
        flag file."""
        with contextlib.suppress(ValueError):  # never made: the run stayed on one node
            ray.kill(ray.get_actor(self.actor_name, namespace=NAMESPACE))
        if self.single_node is not None:
            self._flag(self.single_node).unlink(missing_ok=True)


def release_dead_owner(lock: ClusterLock, owner: str) -> None:
    """An actor died: if it held the cluster lock, free it (the node lock the kernel frees
    with its process)."""
    try:
        actor = ray.get_actor(lock.actor_name, namespace=NAMESPACE)
    except ValueError:
        return  # single-node: nothing to free
    actor.release_owner.remote(owner)


@ray.remote(num_cpus=0)
def _leave_single_mode(run: str, node: str) -> None:
    """On the node a run started alone on: once its holder is done (the node lock), remove
    the flag, so that every later acquirer there takes the cluster lock too."""
    folder = _lock_folder()
    fd = os.open(folder / f"{run}.{node}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        (folder / f"{run}.{node}.single").unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock


@ray.remote(num_cpus=0, max_concurrency=10_000)  # type: ignore[call-overload]  # actor options
class LockActor:
    """The cluster level: who holds it, and who waits, in order. ``acquire`` answers when
    the lock is granted (or the wait times out); ``release`` is not waited on."""

    def __init__(self, run: str, single_node: str | None) -> None:
        self._run = run
        self._single = single_node
        self._holder: str | None = None
        self._waiters: deque[tuple[str, asyncio.Future[bool]]] = deque()
        self._switch: asyncio.Task[None] | None = None

    async def acquire(self, owner: str, node: str, timeout: float | None) -> bool:
        if self._single is not None and node != self._single:
            await self._leave_single_mode()
        if self._holder is None and not self._waiters:
            self._holder = owner
            return True
        if timeout == 0:
            return False
        granted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((owner, granted))
        try:
            return await asyncio.wait_for(asyncio.shield(granted), timeout)
        except asyncio.TimeoutError:
            if granted.done():  # granted as the wait ran out: it is this owner's now
                return True
            self._waiters.remove((owner, granted))
            return False

    async def release(self, owner: str) -> None:
        if self._holder == owner:
            self._grant_next()

    async def release_owner(self, owner: str) -> None:
        """The owner died: free the lock if it held it, and drop its waits."""
        self._waiters = deque((o, f) for o, f in self._waiters if o != owner)
        if self._holder == owner:
            log.warning("the cluster lock's holder %s died; lock released", owner)
            self._grant_next()

    async def holder(self) -> str | None:
        return self._holder

    def _grant_next(self) -> None:
        self._holder = None
        while self._waiters:
            owner, granted = self._waiters.popleft()
            if not granted.done():
                self._holder = owner
                granted.set_result(True)
                return

    async def _leave_single_mode(self) -> None:
        """Once, before any other node is granted: the single node takes the cluster lock
        from then on (see the module's text)."""
        if self._switch is None:
            single = self._single
            assert single is not None
            strategy = NodeAffinitySchedulingStrategy(single, soft=False)

            async def switch() -> None:
                try:
                    await _leave_single_mode.options(scheduling_strategy=strategy).remote(
                        self._run, single
                    )
                except ray.exceptions.RayError as exc:  # that node is gone, its actors too
                    log.warning("the single node %s did not leave its mode: %s", single, exc)
                log.info("the run's lock is cluster-wide now: an actor joined on another node")

            self._switch = asyncio.ensure_future(switch())
        await self._switch
        self._single = None
