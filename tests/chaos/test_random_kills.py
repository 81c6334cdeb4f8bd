"""Random SIGKILLs of the whole pipeline (driver and its Ray processes) over files of mixed
sizes in several folders, 4 partitions, each restart with the same group; then a run to
the end. Every file must have its result; exactly once, a read_committed reader sees one
each; at least once, the duplicates are counted and printed.

The seed and the number of kills come from ``CHAOS_SEED`` and ``CHAOS_KILLS`` (default: a
new seed, 2 kills); the seed is printed, so ``CHAOS_SEED=...`` replays a failure.
``scripts/chaos.sh`` runs the long form (20 kills, a few hundred files).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from cluster import create_topic
from reproducer.config import KafkaConfig
from reproducer.upload import upload
from tests.results import read_results, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.chaos]

REPO = Path(__file__).parents[2]


def _tree(root: Path, rng: random.Random, n_files: int) -> dict[str, tuple[int, str]]:
    """The files written: relative path -> (size, sha256), as a result must tell them."""
    files: dict[str, tuple[int, str]] = {}
    for i in range(n_files):
        folder = f"run{i % 4}/{'raw' if i % 3 else 'meta'}"
        data = rng.randbytes(rng.choice([200, 5_000, 60_000, 700_000, 2_500_000]))
        path = root / folder / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[f"{folder}/f{i:03d}.bin"] = (len(data), hashlib.sha256(data).hexdigest())
    return files


def _offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> tuple[list[int], list[int]]:
    """The group's committed offsets and the end offsets, of every partition of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
        return [tp.offset for tp in found], ends
    finally:
        consumer.close()


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at_least_once", "exactly_once"])
def test_random_kills_lose_nothing(
    kafka_bootstrap: str, tmp_path: Path, exactly_once: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    kills = int(os.environ.get("CHAOS_KILLS", "2"))
    n_files = int(os.environ.get("CHAOS_FILES", "40"))
    with capsys.disabled():
        print(f"\nchaos: CHAOS_SEED={seed} CHAOS_KILLS={kills} CHAOS_FILES={n_files}")
    rng = random.Random(seed)
    topic = f"chaos-kills-{seed:x}-{int(exactly_once)}-{time.monotonic_ns() % 10**6}"
    create_topic(kafka_bootstrap, topic, partitions=4)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    files = _tree(tmp_path / "tree", rng, n_files)
    names = list(files)
    upload(
        [tmp_path / "tree"], KafkaConfig.for_bootstrap(kafka_bootstrap), topic, chunk_size=256_000
    )
    config = tmp_path / "test.config"
    config.write_text(
        f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n"
        "[consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 1000\n"
    )
    command = [
        sys.executable,
        "-m",
        "tests.pipeline.size_reproducer",
        "--config",
        str(config),
        "--topic_name",
        topic,
        "--producer_topic_name",
        results_topic,
        "--consumer_group_id",
        f"group-{topic}",
        "--n_analysis_actors",
        "2",
        "--output_dir",
        str(tmp_path / "out"),
        "--stop_when_idle",
        "5",
        *(["--exactly_once"] if exactly_once else []),
    ]
    env = {**os.environ, "SIZE_REPRODUCER_DELAY": "0.2"}  # the run outlives each fault
    logs = tmp_path / "out" / "LOGS"
    for kill in range(kills):
        run = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: any(logs.glob("*in_progress*.csv")), 120, "the run to start")
            # when the fault comes is what is random: this long into the run
            time.sleep(rng.uniform(0.5, 4.0))
            assert run.poll() is None, f"the run ended before kill {kill + 1} (seed {seed})"
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
        for in_progress in logs.glob("*in_progress*.csv"):
            in_progress.unlink()  # the next run's start is told by a new one
    last = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert last.returncode == 0, f"seed {seed}: {last.stderr[-3000:]}"
    got = read_results(kafka_bootstrap, results_topic)
    results = [p["file"] for _, p in got]
    assert set(results) == set(names), f"seed {seed}: lost {set(names) - set(results)}"
    # each result (a duplicate too) tells the very file uploaded: its size and hash
    wrong = [
        p["file"]
        for _, p in got
        if (p["size"], p["sha256"]) != files[p["file"]] or p["path_ok"] is not True
    ]
    assert not wrong, f"seed {seed}: results that do not match their file: {wrong}"
    # and the group has committed every chunk of every partition: nothing left to read
    committed, ends = _offsets(kafka_bootstrap, f"group-{topic}", topic, 4)
    assert committed == ends, f"seed {seed}: committed {committed}, ends {ends}"
    duplicates = len(results) - len(set(results))
    with capsys.disabled():
        print(f"chaos: seed {seed}, {kills} kills, {len(names)} files, {duplicates} duplicates")
    if exactly_once:
        assert duplicates == 0, f"seed {seed}: {duplicates} duplicates in exactly-once mode"
