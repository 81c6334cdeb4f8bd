"""What the cluster says of a topic (reproducer.topics), asked of the real broker: every
part that reads or writes one (ingest, producer, results, status, download) says the same
true thing when it is not there."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from cluster.broker import _free_ports
from reproducer.config import KafkaConfig
from reproducer.download import download
from reproducer.errors import TopicUnavailable
from reproducer.reassembly import Reassembler
from reproducer.status import pipeline_status
from reproducer.topics import partitions_of

pytestmark = pytest.mark.integration


def test_a_topic_s_partitions_are_found_by_consumers_and_producers(
    kafka_bootstrap: str, topic: str
) -> None:
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "topics"})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    try:
        assert partitions_of(consumer, topic) == [0, 1, 2]
        assert partitions_of(producer, topic) == [0, 1, 2]
    finally:
        consumer.close()


def test_a_missing_topic_or_a_broker_that_does_not_answer_is_named(
    kafka_bootstrap: str,
) -> None:
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "topics"})
    try:
        with pytest.raises(TopicUnavailable, match=f"topic {missing} does not exist") as info:
            partitions_of(consumer, missing)
        assert info.value.topic == missing and info.value.reason == "does not exist"
    finally:
        consumer.close()
    (port,) = _free_ports(1)  # nothing listens there
    nobody = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "logger": _quiet()})
    with pytest.raises(TopicUnavailable, match=r"cannot be described \(the broker did not answer"):
        partitions_of(nobody, "t", timeout=1)


def test_download_and_status_say_the_topic_is_missing(kafka_bootstrap: str) -> None:
    """download() used to raise a bare KeyError for a missing topic."""
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicUnavailable, match=f"topic {missing} does not exist"):
        download(config, missing, Reassembler(), n_files=1, timeout=10)
    with pytest.raises(TopicUnavailable, match=f"topic {missing} does not exist"):
        pipeline_status(config, missing, "g", timeout=10)


def _quiet() -> logging.Logger:
    """librdkafka's connection errors, kept out of the test's output."""
    quiet = logging.getLogger("tests.topics.unreachable")
    quiet.propagate = False
    return quiet
