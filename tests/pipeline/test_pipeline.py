"""The Ray pipeline end to end, against a real broker and local Ray."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.image  # the [plots] and [results] extras, in the test set-up
import pandas
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from cluster import create_topic
from reproducer.chunk import encode_value, make_chunk, result_key
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.state import read_state, state_topic
from reproducer.status import Status, pipeline_status
from reproducer.upload import upload
from tests.pipeline.size_reproducer import FlakyReproducer, LockProbeReproducer, SizeReproducer
from tests.results import (
    conforms,
    count_results,
    envelopes,
    read_results,
    run_in_thread,
    strict_loads,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.ray]

REPO = Path(__file__).parents[2]


def make_tree(
    root: Path, n_small: int = 24, big_size: int = 6 << 20, big_root: Path | None = None
) -> dict[str, bytes]:
    """Small files, a root-level and an empty one under ``root``; ``large/big.bin`` under
    ``big_root`` (default: ``root``). Returns relative path -> bytes."""
    files = {f"small/f{i:03d}.bin": os.urandom(1000 + 3000 * i) for i in range(n_small)}
    files["top.txt"] = b"abc"
    files["empty.dat"] = b""
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    big = (big_root or root) / "large" / "big.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    with big.open("wb") as handle:  # in pieces: the whole file is never in memory twice
        for _ in range(big_size >> 20):
            handle.write(os.urandom(1 << 20))
        handle.write(os.urandom(big_size & ((1 << 20) - 1)))
    files["large/big.bin"] = big.read_bytes()
    return files


@pytest.mark.parametrize(("mode", "big_mib"), [("memory", 6), ("disk", 300)])
def test_one_correct_result_per_file(
    mode: str, big_mib: int, local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Small files and a big one uploaded at the same time (their chunks interleave in all
    three partitions): exactly one correct result each, and the results CSV lists them."""
    files = make_tree(tmp_path / "tree", big_size=big_mib << 20, big_root=tmp_path / "big")
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    with concurrent.futures.ThreadPoolExecutor(2) as uploaders:
        sent = [
            uploaders.submit(upload, [root], config, topic, chunk_size=1 << 16)
            for root in (tmp_path / "tree", tmp_path / "big")
        ]
        assert sum(future.result().n_files for future in sent) == len(files)
    config_file = tmp_path / "test.config"
    config_file.write_text(
        f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n[consumer]\nauto.offset.reset = earliest\n"
    )

    reproducer = SizeReproducer(
        config_file,
        topic,
        results_topic,
        mode=mode,
        output_dir=tmp_path / "out",
        n_analysis_actors=2,
        stop_when_idle=4.0,
        update_seconds=5.0,
    )
    results = reproducer.produce_processing_results_for_files_as_read()
    assert results.n_results_produced == len(files)
    assert results.n_files_read == len(files)

    got = read_results(kafka_bootstrap, results_topic, len(files))
    assert len(got) == len(files)
    by_file = {payload["file"]: (key, payload) for key, payload in got}
    assert set(by_file) == set(files)
    for relative, data in files.items():
        key, payload = by_file[relative]
        subdir, _, name = relative.rpartition("/")
        assert key == f"{subdir.replace('/', '_')}_{name}_chunk_processing_result"
        assert payload["size"] == len(data)
        assert payload["sha256"] == hashlib.sha256(data).hexdigest()
        assert payload["path_ok"] is True

    logs = tmp_path / "out" / "LOGS"
    with (logs / f"results_produced_to_{results_topic}.csv").open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert rows[0] == ["filename", "rel_filepath", "n_chunks", "first_message", "processed_at"]
    assert sorted(row[1] for row in rows[1:]) == sorted(files)
    assert all(row[3] <= row[4] for row in rows[1:])  # ISO timestamps: first chunk, then result
    (in_progress,) = logs.glob(f"consuming_from_{topic}_in_progress_by_*.csv")
    assert in_progress.read_text().splitlines()[0] == (
        "filename;rel_filepath;status;n_chunks;first_message;most_recent_message"
    )


def test_failures_are_recorded_and_do_not_stop_the_run(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("good1.txt", "decline.txt", "boom.txt", "good2.txt"):
        (tree / name).write_text(name)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    dead_topic = topic + "-dead"
    create_topic(kafka_bootstrap, dead_topic, partitions=1)
    reproducer = SizeReproducer(
        config_file,
        topic,
        results_topic,
        stop_when_idle=4.0,
        max_retries=1,
        output_dir=tmp_path / "out",
        dead_letter_topic=dead_topic,
    )
    results = reproducer.produce_processing_results_for_files_as_read()
    assert results.n_results_produced == 2
    # each failed (file, analysis) is reported to the dead-letter topic, with its reason
    reports = {key: report for key, report in read_results(kafka_bootstrap, dead_topic, 2)}
    assert sorted(reports) == ["boom.txt", "decline.txt"]
    assert reports["decline.txt"]["reason"] == "declined (returned None)"
    assert reports["boom.txt"]["reason"].startswith("raised: ")
    assert "analysis blew up" in reports["boom.txt"]["reason"]
    assert {r["analysis"] for r in reports.values()} == {"SizeReproducer"}
    for report in reports.values():
        conforms(report, "dead_letter")
    assert all(len(r["sha512"]) == 128 and r["topic"] == topic for r in reports.values())
    got = read_results(kafka_bootstrap, results_topic, 2)
    assert sorted(payload["file"] for _, payload in got) == ["good1.txt", "good2.txt"]
    # the two failures are counted, and only the good files are listed as produced
    assert reproducer.last_run is not None and reproducer.last_run.n_files_failed == 2
    (listed,) = (tmp_path / "out" / "LOGS").glob("results_produced_to_*.csv")
    rows = list(csv.reader(listed.read_text().splitlines(), delimiter=";"))[1:]
    assert sorted(row[1] for row in rows) == ["good1.txt", "good2.txt"]


XRD_CSV = """[Measurement conditions]
Sample name,quartz
Start angle,10.0
Measurement time,11/27/2026 01:02:03 PM
[Scan points]
Angle,Intensity
10.0,3
"""


def test_python_dash_m_runs_the_ported_metadata_example(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """The reference's metadata example shape, ported by its import, runs with python -m;
    it produces heartbeats and log messages, and answers the console's c and q."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "scan.csv").write_text(XRD_CSV)
    results_topic, beats_topic, logs_topic = (topic + s for s in ("-results", "-hb", "-logs"))
    for name in (results_topic, beats_topic, logs_topic):
        create_topic(kafka_bootstrap, name, partitions=1)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    config_file = tmp_path / "test.config"
    config_file.write_text("[broker]\nbootstrap.servers = $KAFKA_BOOTSTRAP_SERVERS\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.pipeline.xrd_metadata_reproducer",
            "--config",
            str(config_file),
            "--topic_name",
            topic,
            "--producer_topic_name",
            results_topic,
            "--output_dir",
            str(tmp_path / "out"),
            "--n_analysis_actors",
            "1",
            "--heartbeat_topic_name",
            beats_topic,
            "--heartbeat_interval_secs",
            "1",
            "--log_topic_name",
            logs_topic,
            "--log_interval_secs",
            "1",
        ],
        cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: count_results(kafka_bootstrap, results_topic) == 1, 180, "the result")
        out, err = proc.communicate("c\nq\n", timeout=120)  # check, then quit
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "1 results, 0 failed" in out  # what "c" printed
    assert "1 results produced" in err
    assert (tmp_path / "out" / "LOGS" / "XRDCSVMetadataReproducer.log").is_file()
    ((key, payload),) = read_results(kafka_bootstrap, results_topic, 1)
    assert key == result_key("", "scan.csv") == "_scan.csv_chunk_processing_result"
    assert payload["Sample name"] == "quartz" and payload["Start angle"] == 10.0
    assert payload["Measurement time"] == datetime.datetime(2026, 11, 27, 13, 2, 3).timestamp()

    beats = read_messages(kafka_bootstrap, beats_topic)
    assert beats and {k for k, _ in beats} == {"XRDCSVMetadataReproducer_heartbeat"}
    assert sum(v["n_messages_read"] for _, v in beats) == 1  # counts since the last one
    assert sum(v["n_messages_produced"] for _, v in beats) == 1
    assert all(datetime.datetime.fromisoformat(v["timestamp"]).tzinfo for _, v in beats)
    for _, beat in beats:
        conforms(beat, "heartbeat")
    logs = read_messages(kafka_bootstrap, logs_topic)
    assert {k for k, _ in logs} == {"XRDCSVMetadataReproducer_log"}
    assert any("quit" in line for _, v in logs for line in v["messages"])


def read_messages(bootstrap: str, topic: str) -> list[tuple[str, dict]]:
    """Every message of a one-partition topic, as (key, JSON value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "read"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[tuple[str, dict]] = []
        while len(out) < high and (batch := consumer.consume(100, 10)):
            out += [(m.key().decode(), json.loads(m.value())) for m in batch if not m.error()]
        return out
    finally:
        consumer.close()


def _consumer_from_the_start(bootstrap: str, topic: str) -> dict[str, str]:
    """An ingest's consumer settings: a group of its own, from the first message."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"g-{topic}",
        "auto.offset.reset": "earliest",
    }


def test_the_offsets_committed_as_the_ingest_closes_are_in_its_last_stats(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """The offsets committed as the ingest closes (files finished since its last step) are
    in the stats it reports last: the run's summary and its "stopped; committed offsets"
    line said {} after a short run whose only commit was that last one."""
    from reproducer.ingest import Ingest, IngestSettings  # noqa: PLC0415

    (tmp_path / "tree").mkdir()
    for i in range(4):
        (tmp_path / "tree" / f"f{i}.bin").write_bytes(os.urandom(3000))
    upload([tmp_path / "tree"], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    handed: list[int] = []
    settings = IngestSettings(
        topic,
        _consumer_from_the_start(kafka_bootstrap, topic),
        commit_interval=3600.0,  # no commit but the last
    )
    ingest = Ingest(settings, lambda done: handed.append(done.file_id))
    deadline = time.monotonic() + 60
    while len(handed) < 4:
        assert time.monotonic() < deadline, f"only {len(handed)} files rebuilt"
        ingest.step(0.1)
    for file_id in handed:
        ingest.finish(file_id)
    ingest.close()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}"})
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()
    assert ingest.snapshot().committed == {p: o for p, o in committed.items() if o >= 0}
    assert sum(ingest.snapshot().committed.values()) >= 4


def test_the_budget_keeps_room_for_the_copies_the_analyses_make(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Memory mode: a file in flight is in the object store, and each analysis actor may
    hold one more copy of the file it analyses (a ported reproducer's ``bytestring``). The
    ingest counted only the first, so with two actors the run held two files more than its
    budget (measured: 413 MiB over idle with a 256 MiB budget and 50 MiB files). Now the
    files in flight and a copy per analysis slot stay within the budget plus the one file
    that crosses it; and the ingest goes on once files are finished."""
    from reproducer.ingest import Ingest, IngestSettings  # noqa: PLC0415

    n_files, size, budget, slots = 12, 1 << 20, 4 << 20, 2
    (tmp_path / "tree").mkdir()
    for i in range(n_files):
        (tmp_path / "tree" / f"f{i:02d}.bin").write_bytes(os.urandom(size))
    upload([tmp_path / "tree"], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    handed: list[int] = []
    settings = IngestSettings(
        topic,
        _consumer_from_the_start(kafka_bootstrap, topic),
        max_in_flight=100,
        max_held_bytes=budget,
        analyses=("a",),
        analysis_slots=slots,
    )
    ingest = Ingest(settings, lambda done: handed.append(done.file_id))
    try:
        deadline = time.monotonic() + 60
        while not ingest.snapshot().paused:  # the budget reached, every partition paused
            assert time.monotonic() < deadline, f"never paused; {len(handed)} files handed"
            ingest.step(0.1)
        for _ in range(20):  # paused, it reads nothing more (what was fetched included)
            ingest.step(0.05)
        in_flight = len(handed) * size
        assert in_flight + slots * size <= budget + size, f"{len(handed)} files in flight"
        assert len(handed) >= 2  # not stalled below the budget either
        finished = 0
        while len(handed) < n_files:  # as analyses finish, the rest is read
            assert time.monotonic() < deadline, f"only {len(handed)} files handed"
            for file_id in handed[finished:]:
                ingest.finish(file_id)
            finished = len(handed)
            ingest.step(0.1)
    finally:
        ingest.close()


def test_one_file_over_half_the_budget_is_read_from_every_partition(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Over half the budget with partial files, the ingest reads only the partition furthest
    behind, so that files complete rather than more start. With one partial file that
    helps nothing (it needs every partition): it was read a partition at a time, and a
    1 GiB file under a 2 GiB budget took 30% longer. Now every partition is read."""
    from reproducer.ingest import Ingest, IngestSettings  # noqa: PLC0415

    size, budget = 6 << 20, 4 << 20
    (tmp_path / "tree").mkdir()
    data = os.urandom(size)
    (tmp_path / "tree" / "big.bin").write_bytes(data)
    upload(
        [tmp_path / "tree"], KafkaConfig.for_bootstrap(kafka_bootstrap), topic, chunk_size=1 << 16
    )
    handed: list[Any] = []
    settings = IngestSettings(
        topic, _consumer_from_the_start(kafka_bootstrap, topic), max_held_bytes=budget
    )
    ingest = Ingest(settings, handed.append)
    catching_up = []
    try:
        deadline = time.monotonic() + 60
        while not handed:
            assert time.monotonic() < deadline, "the file was not rebuilt"
            ingest.step(0.1)
            catching_up.append(ingest.snapshot().catching_up)
    finally:
        ingest.close()
    assert handed[0].size == size
    assert not any(catching_up), "read a partition at a time"


def test_memory_mode_hands_larger_files_over_in_shared_memory(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Memory mode: a larger file reaches its analysis as the pages the ingest wrote, mapped
    (no copy through the object store, which kept every page it ever held: a run of 50 MiB
    files held its budget and four files more); a small one inline, as before. Results are
    right, and once the run ends no file of it is left in shared memory."""
    shm = Path("/dev/shm")
    before = {p: sorted(p.iterdir()) for p in shm.glob("ray-reproducer-*")}
    tree = tmp_path / "tree"
    tree.mkdir()
    files = {f"big{i}.bin": os.urandom((1 << 20) + i) for i in range(6)}
    files |= {f"small{i}.bin": os.urandom(3000) for i in range(3)}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    run = SizeReproducer(
        config_file,
        topic,
        results_topic,
        mode="memory",
        n_analysis_actors=2,
        stop_when_idle=2.0,
        report_mapped=True,
    )
    assert run.produce_processing_results_for_files_as_read().n_results_produced == len(files)
    got = {p["file"]: p for _, p in read_results(kafka_bootstrap, results_topic, len(files))}
    assert set(got) == set(files)
    for name, data in files.items():
        assert got[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert got[name]["mapped"] is name.startswith("big"), name
    after = {p: sorted(p.iterdir()) for p in shm.glob("ray-reproducer-*")}
    assert all(p in before and names == before[p] for p, names in after.items()), after


def test_offsets_committed_only_for_delivered_results(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A clean stop commits everything delivered: the same group then reads nothing again."""
    files = make_tree(tmp_path / "tree", n_small=6)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    upload(
        [tmp_path / "tree"],
        KafkaConfig.for_bootstrap(kafka_bootstrap),
        topic,
        chunk_size=256 * 1024,
    )
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    group = f"group-{topic}"
    out = tmp_path / "out"
    first = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        stop_when_idle=3.0,
        output_dir=out,
    )
    assert first.produce_processing_results_for_files_as_read().n_results_produced == len(files)

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(3)
        ]
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == ends
    # and the run says so (its last commit, made as it stopped, included)
    assert first.last_run is not None
    assert first.last_run.stats.committed == {p: end for p, end in enumerate(ends) if end}

    again = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        stop_when_idle=3.0,
        output_dir=out,
    )
    second = again.produce_processing_results_for_files_as_read()
    assert (second.n_msgs_read, second.n_results_produced) == (0, 0)
    assert len(read_results(kafka_bootstrap, results_topic)) == len(files)

    # every file passed by the offsets: no state record is left for the group
    assert not read_state({"bootstrap.servers": kafka_bootstrap}, state_topic(group, topic))


def test_offsets_stay_below_a_file_whose_result_is_not_delivered(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """One file's result is produced but never reaches the broker, so is not acknowledged
    (the run's producer talks to the broker through a proxy that holds the produce request
    carrying it), while the other results are delivered and committed: in every partition
    the committed offset stays at or below that file's first chunk there, for as long as
    the delivery is held; once it is let through, everything is committed.

    (Not a result topic with min.insync.replicas=2: Kafka 4 caps it at the replication
    factor (Partition.effectiveMinIsr), so a one-broker cluster acknowledges regardless.)"""
    from tests.chaos.proxy import HoldingProxy  # noqa: PLC0415

    tree = tmp_path / "tree"
    tree.mkdir()
    names = ["a0.bin", "a1.bin", "a2.bin", "gated.bin", "b0.bin", "b1.bin", "b2.bin"]
    for name in names:
        (tree / name).write_bytes(os.urandom(40_000))
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic, chunk_size=10_000)
    gated: dict[int, int] = {}  # partition -> offset of gated.bin's first chunk there
    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "peek"})
    try:
        ends = [
            reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)
        ]
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        seen = 0
        while seen < sum(ends):
            message = reader.poll(10)
            assert message is not None, "the chunks could not be read back"
            if message.error():
                continue
            seen += 1
            if b"gated.bin" in message.key():
                gated[message.partition()] = min(
                    message.offset(), gated.get(message.partition(), message.offset())
                )
        (broker,) = reader.list_topics(timeout=10).brokers.values()  # one broker
    finally:
        reader.close()
    # what the others' commits reach: gated.bin's first chunk where it has one, else the end
    held_back = [gated.get(p, ends[p]) for p in range(3)]
    assert gated and held_back != ends
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    # the rewrite of the broker's address in responses keeps their size: same host
    assert broker.host == "127.0.0.1", f"the proxy needs a loopback broker, not {broker.host}"
    proxy = HoldingProxy(broker.host, broker.port, marker=b"gated.bin")
    config_file = tmp_path / "test.config"
    # only the producers go through the proxy (the ingest's consumer does not): a held
    # request must outlast the hold, not time out and go out again (message.timeout.ms
    # bounds librdkafka's retries of the result)
    config_file.write_text(
        f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n"
        f"[producer]\nbootstrap.servers = {proxy.bootstrap}\n"
        "request.timeout.ms = 120000\nmessage.timeout.ms = 300000\n"
    )
    group = f"group-{topic}"
    gate = tmp_path / "gate"
    run = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
        # gated.bin's analysis waits until the others are delivered and committed: only
        # so that its result is produced alone, last (the proxy holds the connection's
        # later requests too)
        gate=str(gate),
        gate_prefix="gated",
        # every file takes longer than the pool's 50 ms a call aims at: one file a call, so
        # that no other file waits in a call with gated.bin for its gate
        delay=0.06,
        n_analysis_actors=2,
    )

    # `reproducer status` sees the held-back chunks as lag, and finds the running
    # pipeline by its named ingest actor: its progress, as its driver last noted it
    def status() -> Status:
        return pipeline_status(
            KafkaConfig.for_bootstrap(kafka_bootstrap),
            topic,
            group,
            ray_address="auto",
            measure_seconds=0.5,
        )

    def driver() -> list[tuple[Any, Any]]:
        return [
            (r["driver"].get("n_results"), r["driver"].get("n_in_analysis")) for r in status().live
        ]

    def delivered() -> list[str]:
        return sorted(
            payload["file"] for _, payload in read_results(kafka_bootstrap, results_topic)
        )

    others = sorted(name for name in names if name != "gated.bin")
    thread, outcome = run_in_thread(run)
    try:
        wait_for(lambda: delivered() == others, 120, "the other results")
        wait_for(
            lambda: _committed(kafka_bootstrap, group, topic) == held_back,
            60,
            f"the others committed up to gated.bin's first chunks: {held_back}",
        )
        assert proxy.n_rewritten > 0  # the producer's connections went through the proxy
        gate.touch()  # gated.bin's analysis ends, and its result is produced ...
        wait_for(lambda: proxy.n_held >= 1, 60, "gated.bin's result produced (and held)")
        # ... and waits for its acknowledgement: no file in analysis any more
        wait_for(
            lambda: driver() == [(len(names) - 1, 0)],
            30,
            "the running pipeline's progress in its status: every analysis done",
        )
        # the delivery held, several reads of the commits, all below gated.bin's chunks
        deadline, reads = time.monotonic() + 5, 0
        while time.monotonic() < deadline:
            committed = _committed(kafka_bootstrap, group, topic)
            for partition, first in gated.items():
                assert committed[partition] <= first, (partition, committed, gated)
            reads += 1
            time.sleep(0.25)
        assert reads >= 5
        assert delivered() == others  # not acknowledged, not in the topic either
        assert thread.is_alive(), outcome  # the run waits for it: neither idle nor failed
        now = status()
        assert now.lag > 0 and now.live[0]["actor"].startswith(f"ingest:{group}:")
        assert now.live[0]["topic"] == topic and now.live[0]["ingest"]["n_messages"] == sum(ends)
        assert now.live[0]["driver"]["n_results"] == len(names) - 1
    finally:
        gate.touch()
        proxy.release()
        thread.join(120)
        proxy.close()
    assert not thread.is_alive()
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    assert outcome[0].n_results_produced == len(names)
    assert delivered() == sorted(names)
    assert _committed(kafka_bootstrap, group, topic) == ends


def _run_setup(bootstrap: str, topic: str, tmp_path: Path) -> tuple[str, Path, str]:
    """A results topic, a config file and a consumer group for a run reading ``topic``."""
    results_topic = topic + "-results"
    create_topic(bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n")
    return results_topic, config_file, f"group-{topic}"


def _group_is_consuming(bootstrap: str, group: str) -> bool:
    """The group has settled with a member: the pipeline's ingest reads the topic (not
    yet, while the broker does not know the group)."""
    from confluent_kafka import ConsumerGroupState, KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        return False
    return description.state == ConsumerGroupState.STABLE and bool(description.members)


def test_a_file_arriving_slower_than_stop_when_idle_is_read_to_the_end(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A file whose chunks take longer to arrive than ``stop_when_idle`` (a large file, a
    slow instrument) gets its result: reading chunks is work, even while no file completes
    (the run used to stop with the file half read)."""
    n_chunks, every = 8, 0.5  # 3.5 s from the first chunk to the last, stop_when_idle 1.5
    data = os.urandom(n_chunks * 1000)
    chunks = [
        make_chunk(
            data[i : i + 1000],
            filename="slow.bin",
            file_hash=hashlib.sha512(data).digest(),
            chunk_offset_write=i,
            chunk_i=i // 1000 + 1,
            n_total_chunks=n_chunks,
        )
        for i in range(0, len(data), 1000)
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(chunk: Any) -> None:
        producer.produce(topic, key=chunk.key.encode(), value=encode_value(chunk), partition=0)
        assert producer.flush(30) == 0

    send(chunks[0])
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    run = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        stop_when_idle=1.5,
        output_dir=tmp_path / "out",
    )
    thread, outcome = run_in_thread(run)
    wait_for(
        lambda: _group_is_consuming(kafka_bootstrap, group) or not thread.is_alive(),
        120,
        "the pipeline to join its consumer group",
    )
    for chunk in chunks[1:]:  # the instrument's pace: one chunk every half second
        assert thread.is_alive(), f"the run ended with the file half read: {outcome}"
        time.sleep(every)
        send(chunk)
    thread.join(120)
    assert not thread.is_alive()
    assert not isinstance(outcome[0], BaseException), outcome
    assert outcome[0].n_results_produced == 1
    ((_, payload),) = read_results(kafka_bootstrap, results_topic, 1)
    assert (payload["file"], payload["size"]) == ("slow.bin", len(data))


def test_poison_is_recorded_dead_lettered_and_committed_past(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    good = [make_chunk(f"good {i}".encode(), filename=f"good{i}.txt") for i in range(3)]
    tampered = dataclasses.replace(make_chunk(b"x", filename="tampered.txt"), data=b"y")
    escaping = make_chunk(b"z", filename="passwd", subdir_str="../../etc")
    data = os.urandom(3000)
    incomplete = [  # chunk 2 of 3 never arrives
        make_chunk(
            data[i : i + 1000],
            filename="incomplete.bin",
            file_hash=hashlib.sha512(data).digest(),
            chunk_offset_write=i,
            chunk_i=i // 1000 + 1,
            n_total_chunks=3,
        )
        for i in (0, 2000)
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    messages = [
        (b"junk", b"\xc1 not msgpack"),
        (b"t", encode_value(tampered)),
        (b"e", encode_value(escaping)),
    ]
    messages += [(c.key.encode(), encode_value(c)) for c in [*good, *incomplete]]
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value, partition=i % 3)
    assert producer.flush(30) == 0
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    dead_topic = topic + "-dead"
    create_topic(kafka_bootstrap, dead_topic, partitions=1)
    run = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        dead_letter_topic=dead_topic,
        file_idle_timeout=2.0,
        stop_when_idle=5.0,
        output_dir=tmp_path / "out",
    )
    assert run.produce_processing_results_for_files_as_read().n_results_produced == 3
    assert sorted(p["file"] for _, p in read_results(kafka_bootstrap, results_topic, 3)) == [
        "good0.txt",
        "good1.txt",
        "good2.txt",
    ]

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "dlq-check"})
    consumer.assign([TopicPartition(dead_topic, 0, OFFSET_BEGINNING)])
    dead = []
    try:
        while len(dead) < 4 and (batch := consumer.consume(10, 10)):
            dead += [m for m in batch if not m.error()]
        committed = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
        offsets = committed.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        ends = [
            committed.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(3)
        ]
        committed.close()
    finally:
        consumer.close()
    error_of = {m.value(): dict(m.headers())["reproducer.error"].decode() for m in dead}
    assert len(dead) == 4
    junk, _, escaping_value = (value for _, value in messages[:3])
    assert "value:" in error_of[junk]
    assert "subdir_str" in error_of[escaping_value]
    # the whole-file SHA-512 catches the corrupt chunk, and the chunk hashes name it
    # the two file reports (the other two are the poison messages' own bytes)
    reports = [m for m in dead if m.key() in (b"tampered.txt", b"incomplete.bin")]
    assert len(reports) == 2
    for m in reports:
        conforms(strict_loads(m.value()), "dead_letter")
    (tampered_report,) = [json.loads(m.value()) for m in reports if m.key() == b"tampered.txt"]
    assert tampered_report["reason"] == "hash_mismatch"
    assert (
        "corrupt chunk(s), not matching their chunk hash: 1 (offset 0)" in tampered_report["detail"]
    )
    (report,) = [m for m in dead if m.key() == b"incomplete.bin"]
    assert json.loads(report.value())["reason"] == "expired"
    assert [tp.offset for tp in offsets] == ends  # the poison does not pin the group


def test_an_exception_is_retried_on_another_actor(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    names = [f"f{i}.txt" for i in range(4)]
    for name in names:
        (tree / name).write_text(name)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    run = FlakyReproducer(
        config_file,
        topic,
        results_topic,
        n_analysis_actors=2,
        analysis_num_cpus=0.5,
        max_retries=1,
        probe_dir=str(probe),
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
    )
    summary = run.produce_processing_results_for_files_as_read()
    assert summary.n_results_produced == len(names)
    results = {p["file"]: p["actor"] for _, p in read_results(kafka_bootstrap, results_topic, 5)}
    assert sorted(results) == names
    for name in names:
        first, second = (probe / f"{name}.attempts").read_text().split()
        assert first != second  # the retry ran on the other actor
        assert results[name] == second


def test_an_analysis_that_hangs_is_stopped_by_its_time_limit(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """`register(timeout_s=...)`: a file whose analysis never returns has its actor
    replaced, runs once more, and is then a recorded failure (a dead-letter report naming
    the time limit); the other files get their results and the run ends by itself."""
    import tests.pipeline.fanout_analyses  # noqa: F401, PLC0415 - registers the analyses
    from analyses.runner import AnalysesRun  # noqa: PLC0415

    tree = tmp_path / "tree"
    tree.mkdir()
    sizes = {"a.bin": 100, "stuck.bin": 200, "b.bin": 300, "c.bin": 400}
    for name, size in sizes.items():
        (tree / name).write_bytes(os.urandom(size))
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    dead_topic = topic + "-dead"
    create_topic(kafka_bootstrap, dead_topic, partitions=1)
    run = AnalysesRun(
        config_file,
        topic,
        results_topic,
        analysis="hangs-on-stuck",
        consumer_group_id=group,
        dead_letter_topic=dead_topic,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
    )
    thread, outcome = run_in_thread(run)
    thread.join(180)  # without the limit it would never end: the bound fails the test
    assert not thread.is_alive(), "the run is stuck on the hung analysis"
    assert not isinstance(outcome[0], BaseException), outcome
    assert outcome[0].n_results_produced == 3
    assert run.last_run is not None and run.last_run.n_files_failed == 1
    done = {
        v["file"]["relative_path"]: v["result"]["size"]
        for _, _, v in envelopes(kafka_bootstrap, results_topic)
    }
    assert done == {name: size for name, size in sizes.items() if name != "stuck.bin"}
    ((key, report),) = read_results(kafka_bootstrap, dead_topic, 1)
    assert key == "stuck.bin" and report["analysis"] == "hangs-on-stuck"
    assert "time limit (1.5 s) 2 times" in report["reason"]
    assert _committed(kafka_bootstrap, group, topic) == _end_offsets(kafka_bootstrap, topic)


def test_fan_out_to_two_analyses_commits_after_both(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Every file goes to every analysis whose pattern matches; a file's offsets are
    committed only once all of its results are acknowledged, the slow one included."""
    import tests.pipeline.fanout_analyses  # noqa: F401, PLC0415 - registers the analyses
    from analyses.runner import AnalysesRun  # noqa: PLC0415

    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    texts, bins = tmp_path / "texts", tmp_path / "bins"
    files: dict[str, bytes] = {}
    for folder, names in ((texts, ["a.txt", "b.txt"]), (bins, [f"{i}.bin" for i in range(4)])):
        folder.mkdir()
        for name in names:
            files[name] = os.urandom(3000)
            (folder / name).write_bytes(files[name])
    upload([texts], config, topic)  # first: their chunks come before the slow files'
    upload([bins], config, topic)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    group = f"group-{topic}"
    run = AnalysesRun(
        config_file,
        topic,
        results_topic,
        analysis="slow-size,byte-sum",
        consumer_group_id=group,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
    )
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(run.produce_processing_results_for_files_as_read()),
        daemon=True,
    )
    thread.start()
    ends = _end_offsets(kafka_bootstrap, topic)

    def text_files_committed() -> bool:  # only byte-sum analyses them: they finish first
        return sum(_committed(kafka_bootstrap, group, topic)) >= 2

    wait_for(text_files_committed, 120, "the text files' offsets to be committed")
    slow_done = [v for v in envelopes(kafka_bootstrap, results_topic) if v[0] == "slow-size"]
    assert not slow_done  # the slow analysis is held back ...
    assert sum(_committed(kafka_bootstrap, group, topic)) < sum(ends)  # ... and so are they
    (tmp_path / "out" / "release").touch()
    thread.join(180)
    assert outcome and outcome[0].n_results_produced == len(files) + 4
    assert _committed(kafka_bootstrap, group, topic) == ends

    got = envelopes(kafka_bootstrap, results_topic)
    assert sorted((name, v["file"]["relative_path"]) for name, _, v in got) == sorted(
        [("byte-sum", f) for f in files] + [("slow-size", f) for f in files if f.endswith(".bin")]
    )
    for name, headers, value in got:
        data = files[value["file"]["relative_path"]]
        assert headers["reproducer.analysis"] == name.encode() and value["analysis"] == name
        assert value["version"] == ("7" if name == "slow-size" else "1")
        assert value["file"]["sha512"] == hashlib.sha512(data).hexdigest()
        assert (value["file"]["size"], value["file"]["n_chunks"]) == (len(data), 1)
        assert value["node"] and value["actor"] and value["timing"]["seconds"] >= 0
        expected = {"sum": sum(data)} if name == "byte-sum" else {"size": len(data)}
        assert expected.items() <= value["result"].items()
    slow_calls = sorted(v["result"]["calls_on_this_actor"] for n, _, v in got if n == "slow-size")
    assert slow_calls == [1, 2, 3, 4]  # one actor, set up once, kept across files


def test_results_are_strict_json_and_read_back_as_a_table(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A NaN and an infinity from an analysis reach the topic as null, named in
    ``non_finite``; ``reproducer.read_results`` gives the results back as a table."""
    import reproducer  # noqa: PLC0415
    import tests.pipeline.fanout_analyses  # noqa: F401, PLC0415 - registers the analyses
    from analyses.runner import AnalysesRun  # noqa: PLC0415

    tree = tmp_path / "tree"
    tree.mkdir()
    files = {"a.bin": bytes([1, 2, 3]), "b.bin": bytes([10] * 5), "empty.bin": b""}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    run = AnalysesRun(
        config_file,
        topic,
        results_topic,
        analysis="mean-and-spread",
        consumer_group_id=group,
        stop_when_idle=3.0,
    )
    assert run.produce_processing_results_for_files_as_read().n_results_produced == 3
    got = {v["file"]["relative_path"]: v for _, _, v in envelopes(kafka_bootstrap, results_topic)}
    assert got["a.bin"]["result"] == {"n": 3, "mean": 2.0, "ratio": None}
    assert got["a.bin"]["non_finite"] == ["/result/ratio"]
    assert got["empty.bin"]["result"] == {"n": 0, "mean": None, "ratio": None}
    assert sorted(got["empty.bin"]["non_finite"]) == ["/result/mean", "/result/ratio"]
    assert got["b.bin"]["schema"] == 1
    assert got["b.bin"]["reproducer_version"] == reproducer.__version__

    frame = reproducer.read_results(config_file, results_topic).to_pandas()
    assert sorted(frame["file"]) == sorted(files)
    assert set(frame["analysis"]) == {"mean-and-spread"} and set(frame["version"]) == {"2"}
    by_file = frame.set_index("file")
    assert by_file.loc["b.bin", "result.mean"] == 10.0
    assert pandas.isna(by_file.loc["empty.bin", "result.mean"])
    assert (frame["started"] <= frame["produced_at"]).all()


def test_replays_start_where_asked_and_reprocess_ignores_the_done_list(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A group that has read everything reads it again with ``from_beginning``, or from a
    time with ``start_time``, and produces what it reads again (a replay, e.g. for a new
    analysis), with or without ``reprocess``."""
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, names in ((first, ["a1.txt", "a2.txt"]), (second, ["b1.txt", "b2.txt"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(name)
    upload([first], config, topic)
    middle = datetime.datetime.now(datetime.timezone.utc)
    wait_for(lambda: datetime.datetime.now(datetime.timezone.utc) > middle, 5, "the clock")
    upload([second], config, topic)
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)

    def run(**options: Any) -> list[str]:
        before = len(read_results(kafka_bootstrap, results_topic))
        done = SizeReproducer(
            config_file,
            topic,
            results_topic,
            consumer_group_id=group,
            output_dir=tmp_path / "out",
            stop_when_idle=3.0,
            **options,
        ).produce_processing_results_for_files_as_read()
        produced = [p["file"] for _, p in read_results(kafka_bootstrap, results_topic)][before:]
        assert done.n_results_produced == len(produced)
        return sorted(produced)

    everything = ["a1.txt", "a2.txt", "b1.txt", "b2.txt"]
    assert run() == everything
    assert run() == []  # the group has committed everything
    assert run(from_beginning=True) == everything
    assert run(start_time=middle.isoformat(), reprocess=True) == ["b1.txt", "b2.txt"]
    assert run(from_beginning=True, reprocess=True) == everything
    with pytest.raises(ReproducerError, match="give one of them"):
        SizeReproducer(
            config_file, topic, results_topic, from_beginning=True, start_time=middle.isoformat()
        )


def test_a_notebook_starts_a_run_watches_it_and_stops_it(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """``start()`` returns at once; ``progress()`` counts while it runs; ``stop()`` drains,
    commits and returns the summary."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(3):
        (tree / f"f{i}.txt").write_text(str(i) * 100)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    run = SizeReproducer(config_file, topic, results_topic, consumer_group_id=group)
    handle = run.start()  # no stop_when_idle: it runs until stopped
    try:
        assert handle.running
        wait_for(lambda: handle.progress().n_results == 3, 120, "three results, counted live")
        assert handle.wait(0.1) is None  # still running: it waits for more files
    finally:
        summary = handle.stop(120)
    assert summary is not None and not handle.running
    assert summary.n_results_produced == 3 and run.last_run is summary
    assert _committed(kafka_bootstrap, group, topic) == _end_offsets(kafka_bootstrap, topic)


def _end_offsets(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(3)
        ]
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return [max(tp.offset, 0) for tp in found]
    finally:
        consumer.close()


def test_reproducer_run_finds_an_installed_package_analysis_by_entry_point(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """`reproducer run --analysis NAME` with NAME from another installed package's
    ``ray_reproducer.analyses`` entry point (scripts/test.sh installs tests/data/lab_analyses)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "notes.txt").write_text("one\ntwo\nthree\n")
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "reproducer", "run", "--analysis", "lab-line-count"),
            *("--config", str(config_file), "--topic_name", topic),
            *("--producer_topic_name", results_topic, "--stop_when_idle", "4"),
            *("--output_dir", str(tmp_path / "out"), "--n_analysis_actors", "1"),
        ],
        cwd=tmp_path,  # not the repository: the package must come from its installation
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ((name, headers, value),) = envelopes(kafka_bootstrap, results_topic)
    assert (name, value["version"], value["result"]) == ("lab-line-count", "2.0", {"lines": 3})
    assert headers["reproducer.version"] == b"2.0"


def test_start_up_mistakes_fail_at_once_with_what_to_fix(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    out = tmp_path / "out"
    with pytest.raises(ReproducerError, match=r"result topic no-such-results does not exist"):
        SizeReproducer(
            config_file, topic, "no-such-results", output_dir=out
        ).produce_processing_results_for_files_as_read()
    with pytest.raises(ReproducerError, match=r"topic no-such-chunks does not exist"):
        SizeReproducer(
            config_file, "no-such-chunks", topic, output_dir=out
        ).produce_processing_results_for_files_as_read()
    with pytest.raises(ReproducerError, match=r"no node of the Ray cluster .*'gpu_xl': 1"):
        SizeReproducer(
            config_file, topic, topic, analysis_resources={"gpu_xl": 1}, output_dir=out
        ).produce_processing_results_for_files_as_read()
    with pytest.raises(ReproducerError, match=r"host the ingest actor needing .*'ingest': 1"):
        SizeReproducer(
            config_file, topic, topic, ingest_resources={"ingest": 1}, output_dir=out
        ).produce_processing_results_for_files_as_read()


def test_a_dead_ingest_actor_stops_the_run_loudly(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """SIGKILL of the ingest actor's process: the run fails with an error naming it
    (a restart resumes from the committed offsets: see the kill/restart test)."""
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    run = SizeReproducer(config_file, topic, results_topic, output_dir=tmp_path / "out")
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run.produce_processing_results_for_files_as_read()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: bool(_ingest_pids()), 120, "the ingest actor")
    os.kill(_ingest_pids()[0], signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive(), "the run hangs after its ingest actor died"
    assert isinstance(outcome[0], ReproducerError), outcome
    assert "actor died" in str(outcome[0]) and "restart resumes" in str(outcome[0])


@contextlib.contextmanager
def ingest_memory_samples() -> Iterator[list[int]]:
    """The ingest actor's private resident memory, sampled from outside every 0.1 s while
    the block runs (the object store's shared pages aside)."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.extend(_anon_bytes(pid) for pid in _ingest_pids()[:1])
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def _anon_bytes(pid: int) -> int:
    """A process's private resident memory (RssAnon), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _ingest_pids() -> list[int]:
    """Processes of this test session's local Ray named ``ray::IngestActor``."""
    parents, names = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
                names[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue

    def ours(pid: int) -> bool:
        while pid in parents and pid > 1:
            if pid == os.getpid():
                return True
            pid = parents[pid]
        return False

    return [p for p, name in names.items() if name.startswith(b"ray::IngestActor") and ours(p)]


def test_backpressure_keeps_the_ingest_under_its_budget(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A flood of files into a slow analysis: the ingest pauses its partitions at the
    budget and keeps polling, so it stays in the group (a blocked poll would be evicted
    after max.poll.interval.ms, and a lost partition stops the run) and within budget."""
    tree = tmp_path / "tree"
    tree.mkdir()
    n_files, size, budget_mb = 60, 2 << 20, 8
    for i in range(n_files):
        (tree / f"f{i:02d}.bin").write_bytes(os.urandom(size))
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(
        f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n[consumer]\n"
        "session.timeout.ms = 6000\nheartbeat.interval.ms = 1000\nmax.poll.interval.ms = 6000\n"
    )
    run = SizeReproducer(
        config_file,
        topic,
        results_topic,
        n_analysis_actors=1,
        delay=0.15,  # 60 files: 9 s of analysis, beyond max.poll.interval.ms
        max_held_mb=budget_mb,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
    )
    # The ingest actor's private memory, sampled from outside (the object store's pages,
    # shared, aside): from before it reads to the end of the run.
    with ingest_memory_samples() as samples:
        assert run.produce_processing_results_for_files_as_read().n_results_produced == n_files
    assert run.last_run is not None
    stats = run.last_run.stats
    assert stats.n_pauses >= 1  # the budget was reached and the partitions paused
    assert stats.peak_held_bytes <= (budget_mb << 20) + size
    samples = [s for s in samples if s > 0]
    assert len(samples) >= 20, "too few samples of the ingest actor's memory"
    # from what the actor had once set up (its own figure: the samples begin while it is
    # still importing) to the peak seen from outside
    start = run.last_run.ingest_memory["start_anon"]
    growth = max(samples) - start
    memory = {"start": start, "peak": max(samples), "last": samples[-1]}
    # the budget (librdkafka's fetch buffer and prefetch queue inside it) and allocator
    # slack (glibc kept freed large buffers unless told not to: 33-42 MiB with 8 MiB more
    # for librdkafka on top of the budget)
    assert growth < (budget_mb + 12) << 20 < n_files * size, memory
    assert len(read_results(kafka_bootstrap, results_topic)) == n_files


@pytest.mark.parametrize(
    ("exactly_once", "kill_point"),
    [(False, "after_results"), (True, "after_results"), (True, "mid_upload")],
)
def test_killed_and_restarted_loses_no_result(
    exactly_once: bool, kill_point: str, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """SIGKILL the whole run (driver and its Ray processes), restart with the same group:
    every file gets its result. At least once: duplicates at most the files in flight.
    Exactly once: a read_committed reader sees one result per file.

    Kill points: ``after_results``, once results are out and more files are in analysis
    or produced but not committed; ``mid_upload``, while files are still arriving chunk
    by chunk (partial files in the reassembler)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    names = [f"f{i:02d}.txt" for i in range(16)]
    for name in names:
        (tree / name).write_text(name * 100)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    if kill_point == "after_results":
        upload([tree], config, topic)
    config_file = tmp_path / "test.config"
    config_file.write_text(
        f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n"
        "[consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 1000\n"
    )
    command = [
        sys.executable,
        "-m",
        "tests.pipeline.size_reproducer",
        "--config",
        str(config_file),
        "--topic_name",
        topic,
        "--producer_topic_name",
        results_topic,
        "--consumer_group_id",
        f"group-{topic}",
        "--n_analysis_actors",
        "1",
        "--max_in_flight",
        "4",
        "--output_dir",
        str(tmp_path / "out"),
        "--stop_when_idle",
        "5",
        *(["--exactly_once"] if exactly_once else []),
    ]
    env = {**os.environ, "SIZE_REPRODUCER_DELAY": "0.5"}
    first = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if kill_point == "mid_upload":
            # the run is consuming once it reports progress; then half of the files arrive
            # whole and one only in part (its other chunk comes after the kill)
            in_progress = tmp_path / "out" / "LOGS"
            wait_for(lambda: any(in_progress.glob("*in_progress*.csv")), 120, "the run to start")
            big = os.urandom(3000)
            upload([tree / n for n in names[:8]], config, topic)
            chunks = [
                make_chunk(
                    big[i : i + 2000],
                    filename="partial.bin",
                    file_hash=hashlib.sha512(big).digest(),
                    chunk_offset_write=i,
                    chunk_i=i // 2000 + 1,
                    n_total_chunks=2,
                )
                for i in (0, 2000)
            ]
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            producer.produce(topic, key=chunks[0].key, value=encode_value(chunks[0]))
            assert producer.flush(30) == 0
            wait_for(lambda: "partial.bin" in _in_progress_text(in_progress), 60, "a partial file")
        else:
            wait_for(lambda: count_results(kafka_bootstrap, results_topic) >= 3, 120, "results")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    if kill_point == "mid_upload":
        upload([tree / n for n in names[8:]], config, topic)
        producer.produce(topic, key=chunks[1].key, value=encode_value(chunks[1]))
        assert producer.flush(30) == 0
        names.append("partial.bin")

    second = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    results = [p["file"] for _, p in read_results(kafka_bootstrap, results_topic)]
    assert set(results) == set(names)  # nothing lost
    if exactly_once:
        assert sorted(results) == sorted(names)  # read_committed: exactly one each
    else:
        assert len(results) <= len(names) + 4 + 1  # duplicates: at most what was in flight


def test_sigterm_drains_commits_and_exits_0(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """SIGTERM mid-run: what was produced is delivered and committed, in-flight analyses
    are abandoned uncommitted, exit status 0; a restart then produces exactly the rest."""
    tree = tmp_path / "tree"
    tree.mkdir()
    names = [f"f{i}.txt" for i in range(8)]
    for name in names:
        (tree / name).write_text(name * 10)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    command = [
        sys.executable,
        "-m",
        "tests.pipeline.size_reproducer",
        "--config",
        str(config_file),
        "--topic_name",
        topic,
        "--producer_topic_name",
        results_topic,
        "--consumer_group_id",
        f"group-{topic}",
        "--n_analysis_actors",
        "1",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        run = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "SIZE_REPRODUCER_DELAY": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        wait_for(lambda: count_results(kafka_bootstrap, results_topic) >= 2, 180, "results")
        # another process finds the run on the local Ray it logged, and its progress
        found = re.search(r"local Ray started at (\S+)", log.read_text())
        assert found, log.read_text()[-3000:]
        status = [sys.executable, "-m", "reproducer", "status", "--config", str(config_file)]
        status += ["--topic_name", topic, "--consumer_group_id", f"group-{topic}", "--json"]
        status += ["--ray_address", found[1]]
        answer = subprocess.run(
            status, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )
        assert answer.returncode == 0, answer.stderr[-3000:]
        (live,) = json.loads(answer.stdout)["live"]
        assert live["actor"].startswith(f"ingest:group-{topic}:") and live["topic"] == topic
        assert live["ingest"]["n_messages"] == len(names)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=120)
    finally:
        run.kill()
    err = log.read_text()
    assert run.returncode == 0, err[-3000:]
    first = [p["file"] for _, p in read_results(kafka_bootstrap, results_topic)]
    assert 2 <= len(first) < len(names)  # stopped early: the rest was not produced

    again = subprocess.run(
        [*command, "--stop_when_idle", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    results = [p["file"] for _, p in read_results(kafka_bootstrap, results_topic)]
    assert sorted(results) == sorted(names)  # each exactly once: the drain committed


def _in_progress_text(logs: Path) -> str:
    return "".join(p.read_text() for p in logs.glob("*in_progress*.csv"))


def test_the_readme_demo_command(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The demo runs the built-in analyses, prints its table, and checks every result."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "reproducer", "demo", "--size_mb", "3", "--mode", "both"]
    proc = subprocess.run(
        [*command, "--output_dir", str(out)],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "demo ok: 17 correct results for the 10 files" in table
    assert "and hdf5/broken.h5 reported as corrupt" in table
    assert "corrupt chunk(s), not matching their chunk hash: 2 (offset 524288)" in table
    assert re.search(r"scan_001\.h5 +spectrum-peaks +ok +image frequency 0\.12\d+; 3 peaks", table)
    assert re.search(r"xrd/quartz\.csv +metadata-json +ok +sample 'quartz SiO2'", table)
    # the spectrum's peaks in its NeXus axis's units (800, 2000, 3300 of 4096 samples
    # from 10 to 80 degrees)
    assert re.search(r"3 peaks at 23\.\d+, 44\.\d+, 66\.\d+ degrees", table)
    plots = sorted((out / "plots").rglob("*.png"))
    assert len(plots) == 5
    for plot in plots:  # real figures (axes, labels, a colour bar), not pixel strips
        height, width, _ = matplotlib.image.imread(plot).shape
        assert width >= 600 and height >= 400, (plot, width, height)
    # the results as a table beside the plots: one row per result, their figures as columns
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(rows) == 17 and {r["status"] for r in rows} == {"ok"}
    sizes = {r["file"]: r["result.size"] for r in rows if r["analysis"] == "file-check"}
    assert sizes["large/big.bin"] == str(3 << 20) and sizes["empty.dat"] == "0"
    assert len(pandas.read_parquet(out / "results.parquet")) == 17
    assert f"results:  17 rows in {out / 'results.csv'}" in table
    assert "read back: reproducer results --config" in table


def test_another_group_member_stops_the_run_loudly(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Chunks of a file spread over all partitions: sharing them with another member would
    leave files incomplete, so the run stops with a clear error instead."""
    group = f"group-{topic}"
    other = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    other.subscribe([topic])
    stop = threading.Event()

    def keep_polling() -> None:  # a live member takes part in the rebalance
        while not stop.is_set():
            other.poll(0.2)

    poller = threading.Thread(target=keep_polling)
    deadline = time.monotonic() + 60
    while not other.assignment():
        assert time.monotonic() < deadline, "the other member got no partitions in 60 s"
        other.poll(0.2)
    poller.start()
    create_topic(kafka_bootstrap, topic + "-results", partitions=1)
    try:
        config_file = tmp_path / "test.config"
        config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
        run = SizeReproducer(
            config_file,
            topic,
            topic + "-results",
            consumer_group_id=group,
            stop_when_idle=20,
            output_dir=tmp_path / "out",
        )
        with pytest.raises(ReproducerError, match="another consumer"):
            run.produce_processing_results_for_files_as_read()
    finally:
        stop.set()
        poller.join()
        other.close()


@pytest.mark.timeout(240)
def test_cluster_lock_excludes_and_survives_a_dead_holder(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ["die.txt", *(f"f{i}.txt" for i in range(6))]:
        (tree / name).write_text(name)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    run = LockProbeReproducer(
        config_file,
        topic,
        results_topic,
        n_analysis_actors=2,
        stop_when_idle=4.0,
        output_dir=tmp_path / "out",
        probe_dir=str(probe),
    )
    assert run.produce_processing_results_for_files_as_read().n_results_produced == 7
    assert (probe / "died").exists()  # one holder did die
    spans = sorted(
        tuple(map(float, line.split())) for line in (probe / "held.log").read_text().splitlines()
    )
    assert len(spans) == 7
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # never two holders at once, across actors


def test_every_re_uploaded_version_gets_a_result_and_an_older_copy_is_dead_lettered(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Files edited and uploaded again by the uploader: one grew, one shrank across a chunk
    boundary, one was edited in place. Each version gets its result (the shrunk one's
    second version used to get none, and no log line). A copy plainly older than a
    version that completed (an older mtime) is skipped, said in the log and copied to
    the dead-letter topic with the reason."""
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    tree = tmp_path / "tree"
    tree.mkdir()
    chunk = 1000
    contents = {"grows.bin": 2500, "shrinks.bin": 3500, "edited.bin": 2500}
    for name, size in contents.items():
        (tree / name).write_bytes(os.urandom(size))
    first = {name: (tree / name).read_bytes() for name in contents}
    old = tmp_path / "old"
    old.mkdir()
    (old / "edited.bin").write_bytes(first["edited.bin"])  # kept for a late, older copy
    os.utime(old / "edited.bin", (1.0e9, 1.0e9))
    upload([tree], config, topic, chunk_size=chunk)
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    dead_topic = topic + "-dead"
    create_topic(kafka_bootstrap, dead_topic, partitions=1)

    def reproducer() -> SizeReproducer:
        return SizeReproducer(
            config_file,
            topic,
            results_topic,
            consumer_group_id=group,
            dead_letter_topic=dead_topic,
            stop_when_idle=3.0,
            output_dir=tmp_path / "out",
        )

    reproducer().produce_processing_results_for_files_as_read()
    (tree / "grows.bin").write_bytes(first["grows.bin"] + os.urandom(1500))
    (tree / "shrinks.bin").write_bytes(first["shrinks.bin"][:1800])  # 4 chunks, now 2
    edited = bytearray(first["edited.bin"])
    edited[10:20] = os.urandom(10)
    (tree / "edited.bin").write_bytes(bytes(edited))
    later = time.time() + 10
    for name in contents:
        os.utime(tree / name, (later, later))
    second = {name: (tree / name).read_bytes() for name in contents}
    upload([tree], config, topic, chunk_size=chunk)
    going = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        dead_letter_topic=dead_topic,
        output_dir=tmp_path / "out",
    ).start()
    try:
        wait_for(lambda: count_results(kafka_bootstrap, results_topic) >= 6, 60, "6 results")
        upload([old], config, topic, chunk_size=chunk)  # the first version, plainly older
        copies: list[Any] = []
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "dlq-stale"})
        consumer.assign([TopicPartition(dead_topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 60
        try:
            while len(copies) < 3 and time.monotonic() < deadline:
                copies += [m for m in consumer.consume(10, 1) if not m.error()]
        finally:
            consumer.close()
    finally:
        going.stop()
    got = sorted((p["file"], p["sha256"]) for _, p in read_results(kafka_bootstrap, results_topic))
    expected = sorted(
        (name, hashlib.sha256(version[name]).hexdigest())
        for version in (first, second)
        for name in contents
    )
    assert got == expected  # each version once, the older copy none
    reasons = [dict(m.headers())["reproducer.error"].decode() for m in copies]
    assert len(reasons) == 3, reasons  # the older copy's three chunks
    assert all("stale" in r and "edited.bin" in r and "older" in r for r in reasons), reasons


def test_a_missing_dead_letter_topic_stops_the_run_at_start_up(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A dead-letter topic that does not exist is said at the start, before anything is
    read: copies sent to it would never be acknowledged, and nothing may be committed
    past a poison message or failed file before its copy is."""
    results_topic, config_file, group = _run_setup(kafka_bootstrap, topic, tmp_path)
    run = SizeReproducer(
        config_file,
        topic,
        results_topic,
        consumer_group_id=group,
        dead_letter_topic=topic + "-no-such-dead-letters",
        stop_when_idle=2.0,
        output_dir=tmp_path / "out",
    )
    with pytest.raises(ReproducerError, match="no-such-dead-letters does not exist"):
        run.produce_processing_results_for_files_as_read()


def test_the_ingest_serves_only_the_very_file_it_rebuilt(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Disk mode across nodes: an analysis actor that cannot see a rebuilt file asks the
    ingest actor for its bytes. If a newer version was renamed over it meanwhile, the
    ingest says so instead of serving the newer bytes as the old file's."""
    import ray  # noqa: PLC0415

    from reproducer.actors import IngestActor  # noqa: PLC0415
    from reproducer.errors import FileReplaced  # noqa: PLC0415
    from reproducer.ingest import IngestSettings  # noqa: PLC0415

    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    rebuilt = out / "run" / "a.bin"
    rebuilt.write_bytes(b"version 1")
    st = rebuilt.stat()
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    settings = IngestSettings(
        topic,
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}"},
        mode="disk",
        output_dir=out,
    )
    ingest = IngestActor.remote(settings)  # type: ignore[attr-defined]
    try:
        assert ray.get(ingest.ready.remote(), timeout=60) == ""
        served = ray.get(ingest.read_file.remote(str(rebuilt), identity), timeout=60)
        assert bytes(served) == b"version 1"
        newer = out / "run" / ".a.bin.new"
        newer.write_bytes(b"version 2, longer")
        newer.replace(rebuilt)  # as the reassembler renames a newer version into place
        with pytest.raises(FileReplaced, match="was replaced since it was rebuilt"):
            ray.get(ingest.read_file.remote(str(rebuilt), identity), timeout=60)
        with pytest.raises(PermissionError):
            ray.get(ingest.read_file.remote(str(tmp_path / "elsewhere"), None), timeout=60)
    finally:
        ray.kill(ingest)
