"""The elastic pools' policy (:mod:`reproducer.scaling`): when a pool grows, shrinks and
gives up actors still waiting for a node."""

from __future__ import annotations

import pytest

from reproducer.scaling import ActorRange, PoolView, ScaleSettings, decide, target_wait
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
