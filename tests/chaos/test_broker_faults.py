"""The broker fails under a running pipeline: frozen past the group session, or killed and
restarted on its log directory. Each test has a broker of its own (the fault would break
the other tests' broker), a real one, and local Ray.

At least once, the run takes its partitions back in-process and every file gets a result
(duplicates allowed); exactly once, it resumes in-process from its last committed
transaction (as a restart would) and completes the work with no duplicate for a
read_committed reader.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import create_topic
from cluster.broker import LocalBroker, _free_ports
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.upload import upload
from tests.chaos.proxy import CuttableProxy
from tests.pipeline.size_reproducer import SizeReproducer
from tests.results import count_results, read_results, run_in_thread, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.chaos]

SESSION_MS = 6000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    own = LocalBroker(log_dir=tmp_path / "broker")
    own.start(timeout=120)
    try:
        yield own
    finally:
        if own.pid is not None:  # a frozen broker must not outlive the test
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(own.pid, sig)
                except ProcessLookupError:
                    break
        own.stop()


def _setup(tmp_path: Path, bootstrap: str, n_files: int) -> tuple[str, str, Path, list[str]]:
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=3)
    results = topic + "-results"
    create_topic(bootstrap, results, partitions=1)
    tree = tmp_path / "tree"
    tree.mkdir()
    names = [f"f{i:02d}.bin" for i in range(n_files)]
    for name in names:
        (tree / name).write_bytes(os.urandom(300_000))  # a few chunks each, over the partitions
    upload([tree], KafkaConfig.for_bootstrap(bootstrap), topic, chunk_size=100_000)
    config = tmp_path / "test.config"
    config.write_text(
        f"[broker]\nbootstrap.servers = {bootstrap}\n[consumer]\n"
        f"session.timeout.ms = {SESSION_MS}\nheartbeat.interval.ms = 1000\n"
    )
    return topic, results, config, names


@dataclasses.dataclass
class _Going:
    """A run under way (its first result out), on a topic of 12 files uploaded twice."""

    topic: str
    results: str
    config: Path
    names: list[str]
    options: dict[str, Any]
    run: SizeReproducer
    thread: threading.Thread
    outcome: list[Any]


def _started(tmp_path: Path, bootstrap: str, *, exactly_once: bool) -> _Going:
    topic, results_topic, config, names = _setup(tmp_path, bootstrap, 12)
    options: dict[str, Any] = {
        "consumer_group_id": f"g-{topic}",
        "exactly_once": exactly_once,
        "n_analysis_actors": 1,
        "stop_when_idle": 8.0,
        "output_dir": tmp_path / "out",
    }
    run = SizeReproducer(config, topic, results_topic, delay=0.5, **options)
    thread, outcome = run_in_thread(run)
    wait_for(lambda: count_results(bootstrap, results_topic) >= 1, 120, "a first result")
    return _Going(topic, results_topic, config, names, options, run, thread, outcome)


def _freeze(broker: LocalBroker) -> None:
    """SIGSTOP for longer than the session (the fault's length), then SIGCONT."""
    assert broker.pid is not None
    os.killpg(broker.pid, signal.SIGSTOP)
    try:
        time.sleep(SESSION_MS / 1000 + 4)
    finally:
        os.killpg(broker.pid, signal.SIGCONT)


def _kill_and_restart(broker: LocalBroker) -> None:
    """SIGKILL, down for longer than the session, then started again on its log dir."""
    assert broker.pid is not None
    os.killpg(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it
    time.sleep(SESSION_MS / 1000 + 2)
    broker.start(timeout=120)


@pytest.mark.parametrize("fault", [_freeze, _kill_and_restart], ids=["frozen", "killed"])
def test_at_least_once_takes_its_partitions_back_and_loses_nothing(
    local_ray: None,
    broker: LocalBroker,
    tmp_path: Path,
    fault: object,
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, results_topic, config, names = _setup(tmp_path, bootstrap, 12)
    run = SizeReproducer(
        config,
        topic,
        results_topic,
        consumer_group_id=f"g-{topic}",
        n_analysis_actors=1,
        delay=0.5,  # the run is still going when the fault comes
        stop_when_idle=8.0,
        output_dir=tmp_path / "out",
    )
    thread, outcome = run_in_thread(run)
    wait_for(lambda: count_results(bootstrap, results_topic) >= 1, 120, "a first result")
    fault(broker)  # type: ignore[operator]
    thread.join(300)
    assert not thread.is_alive(), "the run did not end"
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    got = {payload["file"] for _, payload in read_results(bootstrap, results_topic)}
    assert got == set(names)  # nothing lost (a file may have two results)
    assert run.last_run is not None and run.last_run.stats.n_rebalances >= 1


@pytest.mark.parametrize("fault", [_freeze, _kill_and_restart], ids=["frozen", "killed"])
def test_exactly_once_resumes_in_process_and_completes(
    local_ray: None,
    broker: LocalBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: object,
) -> None:
    """Frozen past the group session, or killed and restarted on its log directory: the
    run's partitions are taken away, or its transaction cannot commit, or the commit's
    answer does not come in time (whether it committed is unknown: a new producer with
    the same transactional id completes or aborts it); it drops its state, resumes from
    the last committed transaction in the same process, and every file gets exactly one
    result. (Before, a killed broker stopped the run: "did not finish in time".)"""
    bootstrap = broker.bootstrap_servers
    going = _started(tmp_path, bootstrap, exactly_once=True)
    fault(broker)  # type: ignore[operator]
    going.thread.join(420)
    assert not going.thread.is_alive(), "the run did not end"
    assert going.outcome and not isinstance(going.outcome[0], BaseException), going.outcome
    got = sorted(payload["file"] for _, payload in read_results(bootstrap, going.results))
    assert got == going.names  # each exactly once
    resumed = [r.getMessage() for r in caplog.records if "resuming from the last" in r.getMessage()]
    assert resumed, "the freeze did not interrupt the run"
    assert "another consumer" not in resumed[0]  # a true reason, as the lost session
    # counted over the whole run, not the last attempt's (which reads only what the
    # transactions before the freeze had not committed)
    summary = going.run.last_run
    assert summary is not None and summary.n_files_read >= len(going.names)


def test_the_ingest_actor_tells_every_caller_its_partitions_were_lost(
    local_ray: None, broker: LocalBroker
) -> None:
    """Exactly once, partitions lost under the ingest actor: whichever call the driver
    makes next, ``take`` or ``commit_point`` (inside a transaction), raises
    RunInterrupted, which resumes the run. ``commit_point`` used to raise a plain error,
    and the run stopped instead (CI, 2 Dec: "the transaction of 0 results could not
    commit ... the ingest loop stopped: RunInterrupted ...")."""
    import ray  # noqa: PLC0415

    from reproducer.actors import IngestActor  # noqa: PLC0415
    from reproducer.errors import RunInterrupted  # noqa: PLC0415
    from reproducer.ingest import IngestSettings  # noqa: PLC0415

    bootstrap = broker.bootstrap_servers
    topic = f"lost-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=3)
    consumer = {
        "bootstrap.servers": bootstrap,
        "group.id": f"g-{topic}",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 1000,
    }
    ingest = IngestActor.remote(IngestSettings(topic, consumer, transactional=True))  # type: ignore[attr-defined]
    try:
        assert ray.get(ingest.ready.remote(), timeout=60) == ""
        ray.get(ingest.start.remote(), timeout=60)
        wait_for(lambda: ray.get(ingest.take.remote(0, 0.5))[2].assigned, 60, "partitions")
        _freeze(broker)

        def interrupted() -> bool:
            try:
                ray.get(ingest.take.remote(0, 0.5), timeout=30)
            except RunInterrupted:
                return True
            return False

        wait_for(interrupted, 120, "the ingest to find its partitions lost")
        with pytest.raises(RunInterrupted, match="were lost"):
            ray.get(ingest.commit_point.remote({}), timeout=60)
    finally:
        ray.kill(ingest)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[LocalBroker, CuttableProxy]]:
    """A broker that tells its clients to connect through a proxy in front of it (its
    advertised listener), so every connection, not only the first, can be cut."""
    broker_port, proxy_port = _free_ports(2)
    proxy = CuttableProxy(proxy_port, broker_port)
    own = LocalBroker(log_dir=tmp_path / "broker", port=broker_port, advertised_port=proxy_port)
    try:
        own.start(timeout=120)
        yield own, proxy
    finally:
        proxy.close()
        own.stop()


@pytest.mark.parametrize(
    "exactly_once",
    [False, pytest.param(True, marks=pytest.mark.long)],  # 3-4 min: scripts/chaos.sh
    ids=["at least once", "exactly once"],
)
def test_a_connection_cut_through_a_proxy_loses_nothing(
    local_ray: None,
    proxied: tuple[LocalBroker, CuttableProxy],
    tmp_path: Path,
    exactly_once: bool,
) -> None:
    """Every connection to the broker reset, and new ones refused for longer than the
    group session (a network partition): at least once, the run goes on and every file
    gets a result; exactly once, the run goes on or stops with a true message, and a
    restart completes the work with no duplicate for a read_committed reader."""
    broker, proxy = proxied
    bootstrap = f"127.0.0.1:{broker.advertised_port}"
    going = _started(tmp_path, bootstrap, exactly_once=exactly_once)
    topic, results_topic, config, names = going.topic, going.results, going.config, going.names
    options, thread, outcome = going.options, going.thread, going.outcome
    proxy.cut(refuse_s=SESSION_MS / 1000 + 2)
    assert proxy.n_cut >= 2  # connections were open and were reset
    thread.join(300)
    assert not thread.is_alive(), "the run did not end"
    assert outcome, "the run left no outcome"
    if exactly_once and isinstance(outcome[0], ReproducerError):
        # the one way it may stop: resumes in a row that produced nothing (the broker out
        # of reach for them), each for a reason a resume mends (RunInterrupted), said so
        from reproducer.errors import RunInterrupted  # noqa: PLC0415

        error = outcome[0]
        assert type(error) is ReproducerError, repr(error)
        assert isinstance(error.__cause__, RunInterrupted), repr(error.__cause__)
        assert str(error).endswith(
            "; exactly once, the run stops here and a restart resumes from the last "
            "committed transaction"
        ), str(error)
        again = SizeReproducer(config, topic, results_topic, **options)
        assert again.produce_processing_results_for_files_as_read() is not None
    else:
        assert not isinstance(outcome[0], BaseException), outcome
    got = [payload["file"] for _, payload in read_results(bootstrap, results_topic)]
    assert set(got) == set(names)  # nothing lost
    if exactly_once:
        assert sorted(got) == sorted(names)  # and nothing twice, read_committed
