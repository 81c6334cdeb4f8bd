"""Integration tests of cluster.broker against a real broker."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from cluster import BrokerError, LocalBroker, create_topic

pytestmark = pytest.mark.integration

N_MESSAGES = 30


def test_produce_and_consume_on_all_partitions(kafka_bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    delivered: dict[bytes, int] = {}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.key() or b""] = msg.partition() or 0

    for i in range(N_MESSAGES):
        producer.produce(
            topic, key=f"key-{i}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert errors == []
    assert len(delivered) == N_MESSAGES

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    received: list[tuple[bytes, int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        deadline = time.monotonic() + 30
        while len(received) < N_MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append((msg.key() or b"", msg.partition() or 0, msg.value() or b""))
    finally:
        consumer.close()

    assert len(received) == N_MESSAGES
    assert {key: part for key, part, _ in received} == delivered
    assert {part for _, part, _ in received} == {0, 1, 2}
    assert sorted(value for _, _, value in received) == sorted(
        f"v{i}".encode() for i in range(N_MESSAGES)
    )


def _assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):  # nor anything left in its process group
        os.killpg(pid, 0)


def test_local_broker_restarts_on_the_same_log_dir(tmp_path: Path) -> None:
    """Stopped and started again on its log dir, the broker still has the topic made
    before (Apache Kafka; the Tansu fallback, used without Java, keeps its data in memory
    only: there the test xfails, saying so, after the checks that hold for both)."""
    log_dir = tmp_path / "broker"
    topics: set[str] = set()  # after the restart
    for round_ in range(2):
        with LocalBroker(log_dir=log_dir) as broker:
            assert broker.running
            pid = broker.pid
            assert pid is not None
            if round_ == 0:
                create_topic(broker.bootstrap_servers, "kept", partitions=3)
            else:
                admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
                topics = set(admin.list_topics(timeout=10).topics)
                del admin
        assert not broker.running
        _assert_gone(pid)
    assert (log_dir / "broker.log").is_file()  # an explicit log dir is kept
    if broker.kind == "tansu" and "kept" not in topics:
        pytest.xfail(
            "the Tansu fallback broker (no Java on PATH) keeps its data in memory only: "
            "nothing persists across a restart; install Java 17+ to test persistence"
        )
    assert "kept" in topics, f"the topic made before the restart is gone: {sorted(topics)}"


def test_a_port_in_use_is_refused_not_mistaken_for_our_broker(tmp_path: Path) -> None:
    """Something already serves on the port: starting must fail naming it, not report the
    other server as our broker."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalBroker(port=port, log_dir=tmp_path / "broker")
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is in use"):
            broker.start(timeout=60)
        assert not broker.running
