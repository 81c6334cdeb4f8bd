"""A flood of bad input between good files, against a real broker and local Ray."""

from __future__ import annotations

import dataclasses
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
from tests.results import _read_to_end, read_results

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


def _chunks(data: bytes, name: str, n: int, *, subdir: str = "", mtime: float = 0.0) -> list:
    step = -(-len(data) // n)
    digest = hashlib.sha512(data).digest()
    return [
        make_chunk(
            data[i * step : (i + 1) * step],
            filename=name,
            subdir_str=subdir,
            file_hash=digest,
            chunk_offset_write=i * step,
            chunk_i=i + 1,
            n_total_chunks=n,
            file_mtime=mtime,
        )
        for i in range(n)
    ]


def test_garbage_bit_flips_unsafe_paths_and_mixed_versions_are_dead_lettered(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
) -> None:
    """Every kind of bad input between good files, each with its dead-letter record and
    the stream going on: values that are not chunks (random bytes, an empty value, msgpack
    of the wrong shape), a chunk with a bit flipped in its data (no good copy comes: the
    file fails naming the chunk) and one whose good copy comes before the file's last
    chunk (it completes), paths out of the output folder or under LOGS/, and two versions
    of one path interleaved (the newer one wins; the older one's chunks are stale). Every
    good file gets its result, nothing is written outside the output folder, and the
    group commits to the end of every partition."""
    import msgpack  # noqa: PLC0415
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    good = {f"good{i}.bin": os.urandom(30_000) for i in range(5)}
    plan: list[tuple[int, bytes | None, bytes | None]] = []  # (partition, key, value)

    def send(chunks: list, partition: int | None = None) -> None:
        for i, chunk in enumerate(chunks):
            part = partition if partition is not None else (len(plan) + i) % 3
            plan.append((part, chunk.key.encode(), encode_value(chunk)))

    for name, data in good.items():
        send(_chunks(data, name, 3))
    for i, junk in enumerate([os.urandom(200), b"", msgpack.packb({"not": "a chunk"})]):
        plan.append((i % 3, f"junk{i}".encode(), junk))
    flipped = _chunks(os.urandom(30_000), "flipped.bin", 3)
    bad = bytearray(flipped[1].data)
    bad[100] ^= 0x01
    send([flipped[0], dataclasses.replace(flipped[1], data=bytes(bad)), flipped[2]])
    mended_data = os.urandom(30_000)
    mended = _chunks(mended_data, "mended.bin", 3)
    bad = bytearray(mended[1].data)
    bad[7] ^= 0x80
    # the corrupt copy, then a good copy, then the last chunk: all in one partition, in order
    send([mended[0], dataclasses.replace(mended[1], data=bytes(bad)), mended[1], mended[2]], 0)
    for subdir in ("../../escaped", "LOGS/sneaky"):
        send(_chunks(b"x" * 1000, "unsafe.bin", 1, subdir=subdir))
    older, newer = os.urandom(3000), os.urandom(2000)
    old_chunks = _chunks(older, "mixed.bin", 3, mtime=1.0e9)
    new_chunks = _chunks(newer, "mixed.bin", 2, mtime=2.0e9)
    # interleaved, in one partition: the newer version (fewer chunks) supersedes the older
    send([old_chunks[0], new_chunks[0], old_chunks[1], new_chunks[1], old_chunks[2]], 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, key, value in plan:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0
    results_topic, dead_topic = topic + "-results", topic + "-dead"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    create_topic(kafka_bootstrap, dead_topic, partitions=1)
    config = tmp_path / "test.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    group = f"g-{topic}"
    run = SizeReproducer(
        config,
        topic,
        results_topic,
        consumer_group_id=group,
        dead_letter_topic=dead_topic,
        file_idle_timeout=3.0,
        stop_when_idle=6.0,
        output_dir=tmp_path / "out",
    )
    summary = run.produce_processing_results_for_files_as_read()
    expected = {name: hashlib.sha256(data).hexdigest() for name, data in good.items()}
    expected["mended.bin"] = hashlib.sha256(mended_data).hexdigest()
    expected["mixed.bin"] = hashlib.sha256(newer).hexdigest()
    got = {p["file"]: p["sha256"] for _, p in read_results(kafka_bootstrap, results_topic)}
    assert got == expected
    assert summary.n_results_produced == len(expected)
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "out" / "LOGS" / "sneaky").exists()

    dead = _read_to_end(kafka_bootstrap, dead_topic)
    errors = [dict(m.headers() or [])["reproducer.error"].decode() for m in dead]
    keys = [(m.key() or b"").decode() for m in dead]
    # the three values that are not chunks, copied as they were
    for i in range(3):
        assert f"junk{i}" in keys, (keys, errors)
    # the unsafe paths, named
    assert sum("subdir_str" in e for e in errors) == 2, errors
    # the older version's two chunks read after the newer one started: stale, and why
    stale = [e for e in errors if e.startswith("chunk stale") and "mixed.bin" in e]
    assert len(stale) == 2 and all("older" in e for e in stale), errors
    # the older version itself, superseded, and the flipped file, given up naming its chunk
    reports = {k: e for k, e in zip(keys, errors, strict=True) if e.startswith("file ")}
    assert reports.get("mixed.bin") == "file superseded", reports
    assert reports.get("flipped.bin") == "file hash_mismatch", reports
    flipped_report = next(m for m in dead if m.key() == b"flipped.bin")
    assert "2 (offset 10000)" in flipped_report.value().decode()
    assert "mended.bin" not in keys  # its good copy mended it: nothing to report

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        committed = [tp.offset for tp in consumer.committed(parts, timeout=10)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
    finally:
        consumer.close()
    assert committed == ends
