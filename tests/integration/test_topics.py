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
from reproducer.state import ensure_state_topic
from reproducer.status import pipeline_status
from reproducer.topics import connection_only, partitions_of

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


def test_looking_up_a_missing_topic_never_creates_it(kafka_bootstrap: str) -> None:
    """The test broker auto-creates topics, as Apache Kafka does by default: an admin
    client or a producer that looks up a topic asks it to, unless told not to. The
    pipeline's lookups say the topic is missing and leave it missing."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    settings = connection_only({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for client in (AdminClient(settings), Producer(settings)):
        with pytest.raises(TopicUnavailable, match="does not exist"):
            partitions_of(client, missing, timeout=10)
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "topics"})
    try:
        assert missing not in probe.list_topics(timeout=10).topics
    finally:
        probe.close()


def test_the_state_topic_is_made_compacted_with_one_partition(kafka_bootstrap: str) -> None:
    """Made by the run, not by its own lookup with the broker's defaults (a topic that is
    not compacted loses its records to retention)."""
    from confluent_kafka.admin import AdminClient, ConfigResource  # noqa: PLC0415

    name = f"g.t.reproducer-state-{uuid.uuid4().hex[:8]}"
    assert ensure_state_topic({"bootstrap.servers": kafka_bootstrap}, name) is True
    assert ensure_state_topic({"bootstrap.servers": kafka_bootstrap}, name) is False
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 1
    resource = ConfigResource("topic", name)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
