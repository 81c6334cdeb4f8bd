"""Producer faults, against a real broker and local Ray, in both delivery modes.

A result the topic can never take ends as a recorded failure and the stream goes on; a
result topic that disappears stops the run with nothing committed past the results not
delivered, and a restart delivers them (see reproducer.delivery).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from cluster import create_topic
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.upload import upload
from tests.pipeline.size_reproducer import SizeReproducer
from tests.pipeline.test_pipeline import _group_is_consuming
from tests.results import read_results, run_in_thread, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray]

MODES = [pytest.param(False, id="at_least_once"), pytest.param(True, id="exactly_once")]


def _upload(tmp_path: Path, bootstrap: str, topic: str, names: list[str]) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in names:
        (tree / name).write_bytes(os.urandom(1000))
    upload([tree], KafkaConfig.for_bootstrap(bootstrap), topic)


def _config(tmp_path: Path, bootstrap: str) -> Path:
    config = tmp_path / "test.config"
    # A result the cluster cannot take is reported within seconds, not librdkafka's 5 min;
    # a topic that is gone is known as gone after 1 s (not 30), so that produce() itself
    # refuses the results produced again: the path where they were given up as failed.
    config.write_text(
        f"[broker]\nbootstrap.servers = {bootstrap}\n[producer]\nmessage.timeout.ms = 10000\n"
        "topic.metadata.propagation.max.ms = 1000\n"
    )
    return config


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """Messages the group has committed past, over the topic's 3 partitions."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return sum(max(tp.offset, 0) for tp in found)
    finally:
        consumer.close()


@pytest.mark.parametrize("exactly_once", MODES)
def test_a_result_the_topic_refuses_is_a_recorded_failure_and_the_rest_goes_on(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    exactly_once: bool,
) -> None:
    """The broker refuses one result for good (larger than the topic's max.message.bytes):
    it ends as a counted failure, its file is committed past, and every other result is
    delivered; exactly once, the transaction it spoiled is redone without it."""
    names = ["a0.bin", "a1.bin", "huge.bin", "a2.bin"]
    _upload(tmp_path, kafka_bootstrap, topic, names)
    results_topic = topic + "-results"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    small = NewTopic(results_topic, 1, 1, config={"max.message.bytes": "20000"})
    admin.create_topics([small])[results_topic].result(30)
    group = f"g-{uuid.uuid4().hex[:8]}"
    run = SizeReproducer(
        _config(tmp_path, kafka_bootstrap),
        topic,
        results_topic,
        consumer_group_id=group,
        exactly_once=exactly_once,
        stop_when_idle=3.0,
        output_dir=tmp_path / "out",
        huge_bytes=100_000,  # under the client's message.max.bytes: the broker refuses it
    )
    summary = run.produce_processing_results_for_files_as_read()
    assert summary.n_results_produced == 3
    assert run.last_run is not None and run.last_run.n_files_failed == 1
    got = sorted(payload["file"] for _, payload in read_results(kafka_bootstrap, results_topic))
    assert got == ["a0.bin", "a1.bin", "a2.bin"]
    assert _committed(kafka_bootstrap, group, topic) == len(names)  # one chunk each
    listed = (tmp_path / "out" / "LOGS").glob("results_produced_to_*.csv")
    assert not any("huge.bin" in path.read_text() for path in listed)


@pytest.mark.parametrize("exactly_once", MODES)
def test_a_result_topic_that_disappears_stops_the_run_and_a_restart_delivers_everything(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    exactly_once: bool,
) -> None:
    """The result topic is deleted while the results are being made: produce() says the
    topic is unknown (the cluster's state, not the result's fault). The run produces them
    again for a while, then stops with an error, having committed nothing past them; once
    the topic is back, a restart of the same group delivers every result."""
    names = ["a0.bin", "a1.bin", "a2.bin"]
    _upload(tmp_path, kafka_bootstrap, topic, names)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config = _config(tmp_path, kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    options = {
        "consumer_group_id": group,
        "exactly_once": exactly_once,
        "stop_when_idle": 3.0,
        "output_dir": tmp_path / "out",
        "produce_retry_secs": 5.0,
    }
    run = SizeReproducer(config, topic, results_topic, gate=str(gate), **options)
    thread, errors = run_in_thread(run)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    reached = tmp_path / "gate.reached"  # an analysis holds a file: the run is under way
    wait_for(reached.exists, 120, "an analysis to reach the gate")
    admin.delete_topics([results_topic])[results_topic].result(30)
    wait_for(lambda: results_topic not in admin.list_topics(timeout=10).topics, 30, "the deletion")
    gate.touch()
    thread.join(180)
    assert not thread.is_alive(), "the run did not stop"
    assert errors and isinstance(errors[0], ReproducerError), errors
    # a true reason (not Ray's "failed to deserialize exception")
    why = str(errors[0])
    assert "deserialize" not in why
    assert "could not commit" in why if exactly_once else "refused" in why
    assert _committed(kafka_bootstrap, group, topic) == 0  # nothing past the lost results

    create_topic(kafka_bootstrap, results_topic, partitions=1)
    again = SizeReproducer(config, topic, results_topic, **options)
    assert again.produce_processing_results_for_files_as_read().n_results_produced == 3
    got = sorted(payload["file"] for _, payload in read_results(kafka_bootstrap, results_topic))
    assert got == names
    assert _committed(kafka_bootstrap, group, topic) == len(names)


def test_a_fenced_producer_stops_the_run_and_a_restart_completes_exactly_once(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
) -> None:
    """Another producer takes the run's transactional id (a second copy of the pipeline
    started by mistake): the run's producer is fenced, a fatal error. The run stops saying
    so, within bounds, having committed nothing it did not produce; a restart of the same
    group gives every file exactly one result for a read_committed reader."""
    from confluent_kafka import Producer  # noqa: PLC0415 - only this test fences

    names = [f"a{i}.bin" for i in range(6)]
    _upload(tmp_path, kafka_bootstrap, topic, names)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config = _config(tmp_path, kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    options = {
        "consumer_group_id": group,
        "exactly_once": True,
        "n_analysis_actors": 1,
        "stop_when_idle": 3.0,
        "output_dir": tmp_path / "out",
    }
    run = SizeReproducer(config, topic, results_topic, gate=str(gate), **options)
    thread, errors = run_in_thread(run)
    wait_for((tmp_path / "gate.reached").exists, 120, "an analysis to reach the gate")
    usurper = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"ray-reproducer.{group}.{topic}",
        }
    )
    usurper.init_transactions(30)  # fences the run's producer
    gate.touch()
    thread.join(300)
    assert not thread.is_alive(), "the run did not stop"
    assert errors and isinstance(errors[0], ReproducerError), errors
    assert "fenc" in str(errors[0]).lower(), errors[0]  # the true reason

    again = SizeReproducer(config, topic, results_topic, **options)
    again.produce_processing_results_for_files_as_read()
    got = sorted(payload["file"] for _, payload in read_results(kafka_bootstrap, results_topic))
    assert got == names  # each exactly once


@pytest.mark.parametrize("exactly_once", MODES)
def test_a_chunk_topic_deleted_mid_run_ends_it_saying_so(
    local_ray: None, kafka_bootstrap: str, topic: str, tmp_path: Path, exactly_once: bool
) -> None:
    """The input topic deleted under a running pipeline: the run ends within a bounded
    time with a true message (it polled on forever, or blamed "another consumer")."""
    names = ["a0.bin", "a1.bin"]
    _upload(tmp_path, kafka_bootstrap, topic, names)
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    run = SizeReproducer(
        _config(tmp_path, kafka_bootstrap),
        topic,
        results_topic,
        consumer_group_id=f"g-{uuid.uuid4().hex[:8]}",
        exactly_once=exactly_once,
        output_dir=tmp_path / "out",
    )
    handle = run.start()
    try:
        wait_for(lambda: len(read_results(kafka_bootstrap, results_topic)) == 2, 60, "results")
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.delete_topics([topic])[topic].result(timeout=30)
        with pytest.raises(ReproducerError, match=f"chunk topic {topic} (does not exist|now has)"):
            assert handle.wait(120) is not None, "the run did not end"
    finally:
        if handle.running:
            handle.stop(60)


@pytest.mark.parametrize("exactly_once", MODES)
def test_a_batch_the_broker_finds_too_large_loses_only_the_result_too_large(
    local_ray: None,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    exactly_once: bool,
) -> None:
    """The result topic's max.message.bytes is lowered while the run goes (the producer
    capped its batches by the limit it read at the start): the broker refuses a whole
    batch as too large. Only the result that is too large by itself is a failure; the
    others batched with it are produced again, each alone, and delivered. (All of them
    were recorded as failed and committed past.)"""
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    handle = SizeReproducer(
        _config(tmp_path, kafka_bootstrap),
        topic,
        results_topic,
        consumer_group_id=group,
        exactly_once=exactly_once,
        n_analysis_actors=1,
        output_dir=tmp_path / "out",
        huge_bytes=40_000,
    ).start()
    try:
        # the producer read the topic's limit before the ingest joined the group
        wait_for(lambda: _group_is_consuming(kafka_bootstrap, group), 120, "the run to consume")
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        limit = ConfigResource(
            ResourceType.TOPIC,
            results_topic,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    "20000",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for future in admin.incremental_alter_configs([limit]).values():
            future.result(timeout=30)
        names = [f"a{i}.bin" for i in range(8)] + ["huge.bin"]
        _upload(tmp_path, kafka_bootstrap, topic, names)
        wait_for(
            lambda: handle.progress().n_results + handle.progress().n_files_failed >= len(names),
            120,
            "every file to end",
        )
    finally:
        summary = handle.stop(120)
    assert summary is not None
    got = sorted(payload["file"] for _, payload in read_results(kafka_bootstrap, results_topic))
    assert got == names[:-1]
    assert summary.n_files_failed == 1
    assert _committed(kafka_bootstrap, group, topic) == len(names)
