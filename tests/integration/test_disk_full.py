"""A disk that fills up in disk mode (the output folder under a file-size limit, in a
process of its own): the ingest stops with a clear error, nothing half-written is left or
handed on, nothing is committed past the file; a restart with room rebuilds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from reproducer.chunk import decode_value
from reproducer.config import KafkaConfig
from reproducer.upload import upload

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


def run_ingest(bootstrap: str, topic: str, group: str, out: Path, limit: int = 0) -> dict:
    """The ingest in a child process until big.bin is rebuilt or the ingest stops."""
    command = [sys.executable, "-m", "tests.integration.disk_full_child"]
    command += [bootstrap, topic, group, str(out), "big.bin", *([str(limit)] if limit else [])]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_offsets(bootstrap: str, topic: str, name: str) -> dict[int, int]:
    """The offset of the first chunk of ``name`` in each partition that holds one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    found: dict[int, int] = {}
    try:
        for partition in range(3):
            tp = TopicPartition(topic, partition, OFFSET_BEGINNING)
            _, end = consumer.get_watermark_offsets(tp, timeout=10)
            consumer.assign([tp])
            seen = 0
            while seen < end:
                for m in consumer.consume(100, 1.0):
                    if m.error():
                        continue
                    seen = m.offset() + 1
                    if decode_value(m.value()).filename == name:
                        found.setdefault(partition, m.offset())
    finally:
        consumer.close()
    return found


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def test_a_full_disk_stops_the_ingest_and_commits_nothing_past_the_file(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    files = {"a.bin": os.urandom(20_000), "big.bin": os.urandom(3 << 20), "c.bin": b"c" * 999}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic, chunk_size=256 * 1024)
    out, group = tmp_path / "out", f"group-{topic}"

    # 1 MiB: big.bin cannot be written past it; a.bin and c.bin fit
    first = run_ingest(kafka_bootstrap, topic, group, out, limit=1 << 20)
    assert first["error"].startswith("OutputUnavailable: the output folder cannot take ")
    assert "file=big.bin" in first["error"] and "File too large" in first["error"]
    assert "restart" in first["error"]
    assert "big.bin" not in first["done"]
    left = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert "big.bin" not in left and not [n for n in left if n.endswith(".partial")], left
    big_starts = first_offsets(kafka_bootstrap, topic, "big.bin")
    assert big_starts  # the check below looks at the partitions that hold it
    after_first = committed(kafka_bootstrap, group, topic)
    for partition, offset in big_starts.items():
        assert after_first[partition] <= offset, (partition, after_first, big_starts)

    # room again: the same group rebuilds what was not committed, big.bin included
    second = run_ingest(kafka_bootstrap, topic, group, out)
    assert second["error"] == "" and "big.bin" in second["done"]
    assert (out / "big.bin").read_bytes() == files["big.bin"]
