"""The elastic pools' policy (:mod:`reproducer.scaling`): when a pool grows, shrinks and
gives up actors still waiting for a node."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from analyses import Analysis, RegistrationError, Resources, known, register, resolve
from reproducer.autoscaling import node_types
from reproducer.errors import ReproducerError
from reproducer.scaling import ActorRange, PoolView, ScaleSettings, decide, target_wait
from reproducer.status import Status
from reproducer.stream_reproducer import DataFileStreamReproducer
from reproducer.telemetry import Progress, actors_line

SETTINGS = ScaleSettings(idle_timeout_s=60.0, min_wait_s=0.5)


def test_a_count_or_a_range_and_clear_errors() -> None:
    assert ActorRange.parse("3") == ActorRange(3, 3)
    assert ActorRange.parse(3) == ActorRange(3, 3)
    assert ActorRange.parse(" 1..8 ") == ActorRange(1, 8)
    assert ActorRange.parse("1..8").elastic and not ActorRange.parse("2").elastic
    assert str(ActorRange(1, 8)) == "1..8" and str(ActorRange(2, 2)) == "2"
    for bad in ("0", "4..2", "many", "1..", "..3", "1-3", True):
        with pytest.raises(ValueError):
            ActorRange.parse(bad)


def test_a_fixed_pool_never_changes() -> None:
    view = PoolView(n_queued=500, oldest_wait_s=600.0, n_placed=2, n_starting=0)
    assert not decide(ActorRange(2, 2), SETTINGS, view)


def test_a_burst_grows_the_pool_to_its_maximum_at_once() -> None:
    view = PoolView(n_queued=200, oldest_wait_s=2.0, n_placed=1, n_starting=0, file_seconds=0.3)
    assert decide(ActorRange(1, 4), SETTINGS, view).add == 3


def test_files_that_wait_less_than_one_file_takes_do_not_grow_it() -> None:
    # one file takes 2 s: a file that waited 1.5 s is not late yet
    assert target_wait(SETTINGS, 2.0) == 2.0 and target_wait(SETTINGS, 0.01) == 0.5
    view = PoolView(n_queued=3, oldest_wait_s=1.5, n_placed=1, n_starting=0, file_seconds=2.0)
    assert not decide(ActorRange(1, 4), SETTINGS, view)
    view = PoolView(n_queued=3, oldest_wait_s=2.5, n_placed=1, n_starting=0, file_seconds=2.0)
    assert decide(ActorRange(1, 4), SETTINGS, view).add == 3


def test_actors_still_starting_count_against_the_files_they_will_take() -> None:
    view = PoolView(n_queued=2, oldest_wait_s=5.0, n_placed=1, n_starting=2)
    assert not decide(ActorRange(1, 8), SETTINGS, view)  # two coming for two files
    view = PoolView(n_queued=5, oldest_wait_s=5.0, n_placed=1, n_starting=2)
    assert decide(ActorRange(1, 8), SETTINGS, view).add == 3
    view = PoolView(n_queued=50, oldest_wait_s=5.0, n_placed=2, n_starting=2)
    assert decide(ActorRange(1, 4), SETTINGS, view).add == 0  # at its maximum


def test_idle_actors_retire_longest_idle_first_down_to_the_minimum() -> None:
    view = PoolView(
        n_queued=0,
        oldest_wait_s=0.0,
        n_placed=4,
        n_starting=0,
        idle_s=((0, 61.0), (1, 90.0), (2, 75.0), (3, 10.0)),
        quiet_s=90.0,
    )
    assert decide(ActorRange(2, 4), SETTINGS, view).retire == (1, 2)
    assert decide(ActorRange(1, 4), SETTINGS, view).retire == (1, 2, 0)  # 3 idle only 10 s


def test_a_busy_actor_is_never_retired() -> None:
    view = PoolView(n_queued=0, oldest_wait_s=0.0, n_placed=3, n_starting=0, idle_s=((2, 99.0),))
    assert decide(ActorRange(1, 3), SETTINGS, view).retire == (2,)  # 0 and 1 are busy


def test_actors_waiting_for_a_node_are_given_up_once_no_file_waits() -> None:
    waiting = PoolView(n_queued=0, oldest_wait_s=0.0, n_placed=1, n_starting=3, quiet_s=30.0)
    assert not decide(ActorRange(1, 4), SETTINGS, waiting)
    quiet = PoolView(n_queued=0, oldest_wait_s=0.0, n_placed=1, n_starting=3, quiet_s=61.0)
    assert decide(ActorRange(1, 4), SETTINGS, quiet).give_up == 3
    # the minimum stays, placed or not: it is what the autoscaler must bring
    none_placed = PoolView(n_queued=0, oldest_wait_s=0.0, n_placed=0, n_starting=2, quiet_s=99.0)
    assert decide(ActorRange(1, 4), SETTINGS, none_placed).give_up == 1


def test_the_progress_line_shows_each_analysis_actors() -> None:
    assert actors_line([]) == ""
    line = actors_line([("fft", 3, 1, 2, 40), ("sha", 1, 0, 0, 0)])
    assert line == "; actors: fft 3 (+1 starting, +2 waiting for a node, 40 files waiting), sha 1"
    assert Progress(actors=(("fft", 1, 0, 0, 0),)).line(0.0).endswith("; actors: fft 1")


def test_an_elastic_range_is_registered_and_checked() -> None:
    name = f"elastic-{uuid.uuid4().hex[:8]}"

    @register(name, min_actors=2, max_actors=6)
    class Elastic(Analysis):
        def analyze(self, datafile: object) -> dict[str, int]:
            return {}

    assert name in known()
    (spec,) = resolve(name)
    assert (spec.resources.n_actors, spec.resources.max_actors) == (2, 6)
    assert Resources(n_actors=3, max_actors=2).problems() == [
        "max_actors must be an integer >= min_actors (3), not 2"
    ]
    with pytest.raises(RegistrationError, match="not both"):
        register("both-ways", n_actors=4, min_actors=1, max_actors=8)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "60"])
def test_the_idle_timeout_must_be_seconds_above_zero(tmp_path: Path, timeout: object) -> None:
    config = tmp_path / "c.config"
    config.write_text("[broker]\nbootstrap.servers = localhost:9\n")
    with pytest.raises(ReproducerError, match="idle_actor_timeout must be"):
        DataFileStreamReproducer(config, "t", "r", idle_actor_timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ReproducerError, match="n_analysis_actors"):
        DataFileStreamReproducer(config, "t", "r", n_analysis_actors="3..1")


def test_the_autoscaler_config_is_this_clusters_own(tmp_path: Path) -> None:
    """Monitors of two clusters on one machine: the node types are read from the config of
    the one whose GCS address is asked for (a relative path from its folder), never the
    other's; none without a monitor of that cluster."""
    proc = tmp_path / "proc"

    def monitor(pid: int, gcs: str, config: str, cwd: Path) -> None:
        folder = proc / str(pid)
        folder.mkdir(parents=True)
        args = ["python", "-u", "/x/ray/autoscaler/_private/monitor.py", f"--gcs-address={gcs}"]
        args.append(f"--autoscaling-config={config}")
        (folder / "cmdline").write_bytes("\0".join(args).encode() + b"\0")
        (folder / "cwd").symlink_to(cwd)

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for folder, kind in ((mine, "analysis"), (theirs, "gpu")):
        folder.mkdir()
        (folder / "c.yaml").write_text(
            f"head_node_type: head\navailable_node_types:\n  head: {{resources: {{}}}}\n"
            f"  {kind}: {{resources: {{CPU: 4}}, max_workers: 3}}\n"
        )
    monitor(10, "10.0.0.1:6379", str(theirs / "c.yaml"), theirs)
    monitor(11, "10.0.0.2:6379", "c.yaml", mine)
    types = node_types("10.0.0.2:6379", proc=proc)
    assert types is not None and set(types) == {"head", "analysis"}
    assert types["analysis"] == {"resources": {"CPU": 4}, "max_workers": 3, "head": False}
    assert node_types("10.0.0.3:6379", proc=proc) is None


def test_status_shows_a_running_pipelines_actors() -> None:
    live = {
        "actor": "ingest:g:1",
        "node": "ab" * 20,
        "driver": {"n_results": 5, "actors": [["fft", 2, 1, 1, 30]]},
        "ingest": {},
    }
    text = Status(topic="t", group="g", live=[live]).text()
    assert "actors: fft 2 (+1 starting, +1 waiting for a node, 30 files waiting)" in text
