"""Partial files and the idle timeout, against a real broker and local Ray."""

from __future__ import annotations

import csv
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cluster import create_topic
from reproducer.chunk import encode_value, make_chunk
from tests.pipeline.size_reproducer import SizeReproducer
from tests.results import read_results, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def test_a_partial_file_does_not_expire_while_the_ingest_is_not_reading(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
) -> None:
    """One file is in analysis at the in-flight limit, so every partition is paused; a
    second file has its first chunk only. Paused for longer than the idle timeout, the
    second file must still be there when its last chunk is read: idleness counts only
    while the ingest reads (before, it expired, was committed past, and was lost).

    The in-progress CSV (LOGS) shows both, before and after the pause: b.bin partial
    (1 of 2 chunks) and a.bin awaiting its result all along."""
    data = os.urandom(2000)
    whole = hashlib.sha512(data).digest()
    first, last = (
        make_chunk(
            data[i : i + 1000],
            filename="b.bin",
            file_hash=whole,
            chunk_offset_write=i,
            chunk_i=i // 1000 + 1,
            n_total_chunks=2,
        )
        for i in (0, 1000)
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    # b.bin's first chunk before a.bin: read before a.bin completes and pauses everything
    for chunk in (first, make_chunk(b"a" * 1000, filename="a.bin")):
        producer.produce(topic, key=chunk.key.encode(), value=encode_value(chunk), partition=0)
    assert producer.flush(30) == 0
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config = tmp_path / "test.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    gate, idle_timeout = tmp_path / "gate", 2.0
    run = SizeReproducer(
        config,
        topic,
        results_topic,
        max_in_flight=1,  # a.bin in analysis: every partition paused
        file_idle_timeout=idle_timeout,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
        gate=str(gate),
    )
    summary: list = []
    thread = threading.Thread(
        target=lambda: summary.append(run.produce_processing_results_for_files_as_read()),
        daemon=True,
    )
    thread.start()
    wait_for((tmp_path / "gate.reached").exists, 120, "a.bin to reach its analysis")
    logs = tmp_path / "out" / "LOGS"
    paused_rows = [("a.bin", "awaiting_result", "1/1"), ("b.bin", "in_progress", "1/2")]

    def in_progress(since: float = 0.0) -> list[tuple[str, ...]]:
        """The in-progress CSV's rows (rewritten every few seconds), if written after
        ``since`` (wall clock)."""
        found = list(logs.glob("*in_progress*.csv"))
        if len(found) != 1 or found[0].stat().st_mtime <= since:
            return []
        rows = list(csv.reader(found[0].read_text().splitlines(), delimiter=";"))[1:]
        return sorted((row[1], row[2], row[3]) for row in rows)

    # b.bin is partial while a.bin is in analysis (every partition paused) ...
    wait_for(lambda: in_progress() == paused_rows, 30, f"{paused_rows} in progress")
    # What is tested is time passing unread: twice the idle timeout, paused.
    time.sleep(2 * idle_timeout)
    # ... and still is after the pause: not expired, a.bin still in analysis
    after = time.time()
    wait_for(lambda: in_progress(after) == paused_rows, 30, f"{paused_rows} after the pause")
    producer.produce(topic, key=last.key.encode(), value=encode_value(last), partition=1)
    assert producer.flush(30) == 0
    gate.touch()
    thread.join(120)
    assert not thread.is_alive() and summary, "the run did not end"
    assert run.last_run is not None and run.last_run.n_files_failed == 0
    got = sorted(payload["file"] for _, payload in read_results(kafka_bootstrap, results_topic))
    assert got == ["a.bin", "b.bin"]
