"""Reading a results topic and waiting for events, for the tests that run a pipeline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def read_results(
    bootstrap: str, topic: str, expected: int = 0, timeout: float = 60.0
) -> list[tuple[str, dict]]:
    """Every result in ``topic`` up to its end, as a read_committed reader sees it, once at
    least ``expected`` are there (waiting up to ``timeout`` for them): the end, not a quiet
    spell, says all were read, so extra results show and no test waits out a timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[tuple[str, dict]] = []
    at_end = False
    deadline = time.monotonic() + timeout
    try:
        while not (at_end and len(out) >= expected) and time.monotonic() < deadline:
            for m in consumer.consume(100, 1):
                error = m.error()
                if error is not None:
                    at_end = error.code() == KafkaError._PARTITION_EOF
                    continue
                at_end = False
                out.append((m.key().decode(), json.loads(m.value())))
    finally:
        consumer.close()
    return out


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def count_results(bootstrap: str, topic: str) -> int:
    """Result messages visible to a read_committed reader (the default isolation)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watch"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if high == low:
            return 0
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        return sum(1 for m in consumer.consume(100, 2) if not m.error())
    finally:
        consumer.close()


def envelopes(bootstrap: str, topic: str) -> list[tuple[str, dict[str, bytes], dict]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "envelopes"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        while len(out) < high and (batch := consumer.consume(100, 5)):
            for m in batch:
                if not m.error():
                    value = json.loads(m.value())
                    out.append((value["analysis"], dict(m.headers() or []), value))
        return out
    finally:
        consumer.close()
