"""The producer actor's transactions, against a real broker and local Ray."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import ray
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cluster import create_topic
from reproducer.actors import AnalysisResult, ProducerActor

pytestmark = [pytest.mark.integration, pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _committed_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every message a read_committed reader sees, up to the end of the partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "no end of partition within 10 s"
            if message.error():
                break  # end of partition (the last stable offset: nothing open before it)
            values.append(message.value())
    finally:
        consumer.close()
    return values


def test_a_produce_for_the_next_transaction_waits_for_the_commit(
    local_ray: None, kafka_bootstrap: str
) -> None:
    """The driver's produce calls run on the actor's threads in no set order: one made for
    the next transaction, arriving before the open one commits, must not slip into it (its
    result would then commit with offsets that do not cover its file, and a restart would
    produce it again)."""
    topic = f"results-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, partitions=1)
    producer = ProducerActor.remote(  # type: ignore[attr-defined]
        {"bootstrap.servers": kafka_bootstrap}, topic, f"test-{topic}"
    )
    assert ray.get(producer.ready.remote()) == ""
    first = AnalysisResult(1, "a", key=b"a", value=b"first", result_id=1)
    second = AnalysisResult(2, "b", key=b"b", value=b"second", result_id=2)
    ray.get(producer.produce.remote([first], 0))
    early = producer.produce.remote([second], 1)  # made for transaction 1, before 0 commits
    ready, _ = ray.wait([early], timeout=1.0)
    assert not ready  # it waits for its turn
    ray.get(producer.commit.remote({}, b"", topic))
    ray.get(early)  # transaction 1 is open now: produced into it
    ray.get(producer.abort.remote())  # and it never commits
    assert _committed_values(kafka_bootstrap, topic) == [b"first"]
    ray.kill(producer)
