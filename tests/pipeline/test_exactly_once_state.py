"""No result waits for the slowest file: a file whose last chunk is late pins the offsets
of every partition, yet the other files' results are out (exactly once: committed,
visible to a read_committed reader, at the next transaction), each with a state record;
a restart of the same group reads the records back and produces none of them again; once
the slow file completes and the offsets pass every chunk, tombstones empty the state.
At least once, the records are written after the consumer's commit."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cluster import create_topic
from reproducer.chunk import DataFileChunk, encode_value, make_chunk
from reproducer.state import read_state, state_topic
from tests.pipeline.size_reproducer import SizeReproducer
from tests.results import count_results, read_results, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray]

N_PARTITIONS = 3  # the ``topic`` fixture's


def _send(bootstrap: str, topic: str, chunks: list[tuple[int, DataFileChunk]]) -> None:
    """Each chunk to the partition given, as the uploader writes them (key and value)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition, chunk in chunks:
        producer.produce(
            topic, key=chunk.key.encode(), value=encode_value(chunk), partition=partition
        )
    assert producer.flush(30) == 0


def _slow_file(size: int = 8 * 40_000, n_chunks: int = 8) -> list[DataFileChunk]:
    data = os.urandom(size)
    digest = hashlib.sha512(data).digest()
    step = size // n_chunks
    return [
        make_chunk(
            data[i * step : (i + 1) * step],
            filename="slow.bin",
            file_hash=digest,
            chunk_offset_write=i * step,
            chunk_i=i + 1,
            n_total_chunks=n_chunks,
            file_mtime=1.0e9,
        )
        for i in range(n_chunks)
    ]


@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly_once", "at_least_once"])
def test_one_slow_file_holds_back_no_other_result_and_a_restart_produces_none_again(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path, exactly_once: bool
) -> None:
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "test.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    slow = _slow_file()
    # all of the slow file's chunks but its last, first in every partition: it pins them all
    _send(kafka_bootstrap, topic, [(i % N_PARTITIONS, c) for i, c in enumerate(slow[:-1])])
    small = [f"small{i:02d}.txt" for i in range(20)]
    _send(
        kafka_bootstrap,
        topic,
        [
            (i % N_PARTITIONS, make_chunk(f"{name} {os.urandom(8).hex()}".encode(), filename=name))
            for i, name in enumerate(small)
        ],
    )
    options = {
        "consumer_group_id": group,
        "exactly_once": exactly_once,
        "n_analysis_actors": 1,
        "output_dir": tmp_path / "out",
    }
    started = time.monotonic()
    first = SizeReproducer(config, topic, results_topic, **options).start()
    try:
        wait_for(
            lambda: count_results(kafka_bootstrap, results_topic) >= len(small),
            90,
            "the small files' results while the slow file is open",
        )
        seen = time.monotonic() - started
        got = sorted(p["file"] for _, p in read_results(kafka_bootstrap, results_topic))
        assert got == small, got  # the slow file is not whole
        # every small file has a chunk above the offsets the slow file pins (at least once,
        # recorded after the consumer's next commit)
        wait_for(
            lambda: (
                len(read_state({"bootstrap.servers": kafka_bootstrap}, state_topic(group, topic)))
                == len(small)
            ),
            30,
            "a state record of each small file",
        )
        records = read_state({"bootstrap.servers": kafka_bootstrap}, state_topic(group, topic))
        assert sorted(r.path for r in records) == small
        assert all(r.analyses == ("SizeReproducer",) and r.extent for r in records)
    finally:
        first.stop()
    print(f"20 results visible to a read_committed reader {seen:.1f} s after the start")
    assert sorted(p["file"] for _, p in read_results(kafka_bootstrap, results_topic)) == small

    second = SizeReproducer(config, topic, results_topic, **options).start()
    try:
        _send(kafka_bootstrap, topic, [(0, slow[-1])])
        wait_for(
            lambda: count_results(kafka_bootstrap, results_topic) >= len(small) + 1,
            90,
            "the slow file's result",
        )
        # the offsets now pass every chunk: the records are removed
        wait_for(
            lambda: (
                not read_state({"bootstrap.servers": kafka_bootstrap}, state_topic(group, topic))
            ),
            60,
            "tombstones for every state record",
        )
    finally:
        summary = second.stop()
    got = sorted(p["file"] for _, p in read_results(kafka_bootstrap, results_topic))
    assert got == sorted([*small, "slow.bin"])  # each exactly once, none again on restart
    assert summary is not None and summary.n_results_produced == 1


@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly_once", "at_least_once"])
def test_a_file_sent_twice_is_not_produced_again_by_a_restart(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path, exactly_once: bool
) -> None:
    """A file sent twice: its second copy, read as a duplicate, lies above the offsets a
    slow file pins while the first copy lies below them. Its state record must cover the
    copy (a restart reads it again and would rebuild it, and produce its result twice)."""
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "test.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    slow = _slow_file(n_chunks=2)
    twice = make_chunk(os.urandom(5000), filename="twice.bin")
    _send(kafka_bootstrap, topic, [(0, twice), (1, slow[0])])  # the slow file pins partition 1
    options = {
        "consumer_group_id": group,
        "exactly_once": exactly_once,
        "n_analysis_actors": 1,
        "output_dir": tmp_path / "out",
    }
    first = SizeReproducer(config, topic, results_topic, **options).start()
    try:
        wait_for(lambda: count_results(kafka_bootstrap, results_topic) >= 1, 90, "a result")
        _send(kafka_bootstrap, topic, [(1, twice)])  # sent again, above the pin
        wait_for(lambda: first.progress().n_messages >= 3, 60, "the second copy read")
    finally:
        first.stop()  # drains: the last commit carries what the copy needs
    records = read_state({"bootstrap.servers": kafka_bootstrap}, state_topic(group, topic))
    assert [(r.path, sorted(r.extent)) for r in records] == [("twice.bin", [1])]
    second = SizeReproducer(config, topic, results_topic, **options).start()
    try:
        _send(kafka_bootstrap, topic, [(0, slow[1])])
        wait_for(lambda: count_results(kafka_bootstrap, results_topic) >= 2, 90, "slow.bin")
    finally:
        summary = second.stop()
    got = sorted(p["file"] for _, p in read_results(kafka_bootstrap, results_topic))
    assert got == ["slow.bin", "twice.bin"]
    assert summary is not None and summary.n_results_produced == 1
