"""``reproducer status`` / ``pipeline_status`` against the real broker: per partition the
group's committed offset, the end, the lag in messages and bytes; the LOGS folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.logs import InProgressLog, InProgressRow, ResultsLog
from reproducer.status import pipeline_status
from reproducer.upload import upload

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


def _messages(bootstrap: str, topic: str) -> dict[int, list[int]]:
    """partition -> the size (key + value) of each message, in order."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "sizes", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    sizes: dict[int, list[int]] = {0: [], 1: [], 2: []}
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < 3:
            assert time.monotonic() < deadline, f"only partitions {sorted(at_end)} read to the end"
            for m in consumer.consume(100, 5):
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    at_end.add(m.partition())
                    continue
                sizes[m.partition()].append(len(m.key() or b"") + len(m.value() or b""))
    finally:
        consumer.close()
    return sizes


def test_the_lag_per_partition_in_messages_and_bytes(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(6):
        (tree / f"f{i}.bin").write_bytes(bytes([i]) * (20_000 + 7_000 * i))
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    upload([tree], config, topic, chunk_size=8192)
    sizes = _messages(kafka_bootstrap, topic)
    assert all(sizes.values())
    group = f"group-{topic}"
    # the group has read two messages of partition 0 and all of partition 1, none of 2
    committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    committer.commit(
        offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, len(sizes[1]))],
        asynchronous=False,
    )
    committer.close()

    status = pipeline_status(config, topic, group)
    by_partition = {p.partition: p for p in status.partitions}
    assert [(p.committed, p.end) for p in status.partitions] == [
        (2, len(sizes[0])),
        (len(sizes[1]), len(sizes[1])),
        (None, len(sizes[2])),
    ]
    assert by_partition[0].lag == len(sizes[0]) - 2 and by_partition[1].lag == 0
    assert by_partition[2].lag == len(sizes[2])
    assert by_partition[0].lag_bytes == sum(sizes[0][2:])
    assert by_partition[1].lag_bytes == 0 and by_partition[2].lag_bytes == sum(sizes[2])
    assert not any(p.lag_bytes_estimated for p in status.partitions)
    assert status.lag == len(sizes[0]) - 2 + len(sizes[2])

    # no time to read them: the bytes behind are unknown, not made up
    quick = pipeline_status(config, topic, group, measure_seconds=0.0)
    assert [p.lag_bytes for p in quick.partitions] == [None, 0, None]
    assert [line.split()[-1] for line in quick.text().splitlines()[2:5]] == ["-", "0", "-"]


def test_status_shows_the_logs_and_answers_on_the_command_line(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    upload([Path(__file__)], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    group = f"group-{topic}"
    logs = tmp_path / "out" / "LOGS"
    InProgressLog(logs, topic, group).write(
        [InProgressRow("big.h5", "run/big.h5", "in_progress", "3/10", 1.0, 2.0)]
    )
    results = ResultsLog(logs, "results")
    for name in ("a.txt", "b.txt"):
        results.record(name, name, n_chunks=1, first_message=1.0, now=2.0)
    results.close()
    config = tmp_path / "c.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    command = [sys.executable, "-m", "reproducer", "status", "--config", str(config)]
    command += ["--topic_name", topic, "--consumer_group_id", group]
    command += ["--output_dir", str(tmp_path / "out")]
    table = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"topic {topic}, consumer group {group}" in table
    assert "LOGS: 2 results produced to results" in table
    assert "run/big.h5  in_progress  chunks 3/10" in table
    done = subprocess.run(
        [*command, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    status = json.loads(done.stdout)
    assert status["lag"] == 1 and status["results_logged"] == {"results": 2}
    assert [row["rel_filepath"] for row in status["in_progress"]] == ["run/big.h5"]


def test_a_missing_topic_is_named(kafka_bootstrap: str) -> None:
    with pytest.raises(ReproducerError, match="no-such-chunks"):
        pipeline_status(KafkaConfig.for_bootstrap(kafka_bootstrap), "no-such-chunks", "g")
