"""A flood of bad input between good files, against a real broker and local Ray."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cluster import create_topic
from reproducer.chunk import encode_value, make_chunk
from tests.pipeline.size_reproducer import SizeReproducer
from tests.pipeline.test_pipeline import (
    ingest_memory_samples,
)
from tests.results import read_results

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.chaos]


def test_chunks_claiming_huge_files_cannot_push_memory_past_the_budget(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
) -> None:
    """One-chunk messages that claim files they never send, mixed with good files:
    1000 claim a small file (8 chunks of 16 KiB: a heap buffer of 128 KiB taken at once
    for the 16 KiB sent, 125 MiB in all) and 150 a large one (512 chunks: a map, whose
    pages cost only what is written). The ingest gives up on the liars that take most
    beyond their bytes whenever it is over its budget, each recorded as failed; every
    good file gets its result; the ingest's private memory, sampled from outside, stays
    within the budget (before, it grew by their claims: 1.2 GB)."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    good = {f"good{i}.bin": os.urandom(50_000) for i in range(6)}
    messages = []
    for i in range(1150):
        liar = make_chunk(
            os.urandom(16 << 10),
            filename=f"liar{i:04d}.bin",
            file_hash=bytes(64),
            n_total_chunks=8 if i < 1000 else 512,
        )
        messages.append(liar)
        if i % 200 == 0:
            name = f"good{i // 200}.bin"
            messages.append(make_chunk(good[name], filename=name))
    for i, chunk in enumerate(messages):
        producer.produce(topic, key=chunk.key, value=encode_value(chunk), partition=i % 3)
    assert producer.flush(30) == 0
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config = tmp_path / "test.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    budget_mb = 64
    run = SizeReproducer(
        config,
        topic,
        results_topic,
        max_held_mb=budget_mb,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
    )
    with ingest_memory_samples() as samples:
        summary = run.produce_processing_results_for_files_as_read()
    assert summary.n_results_produced == len(good)
    got = {p["file"]: p["sha256"] for _, p in read_results(kafka_bootstrap, results_topic)}
    assert got == {name: hashlib.sha256(data).hexdigest() for name, data in good.items()}
    assert run.last_run is not None
    # given up, each recorded: at least the small claims beyond the budget's 128 KiB each
    assert run.last_run.n_files_failed >= 1000 - budget_mb * 8
    start = run.last_run.ingest_memory["start_anon"]
    growth = max(s for s in samples if s > 0) - start
    assert growth < (budget_mb + 16) << 20, (growth >> 20, start >> 20)
