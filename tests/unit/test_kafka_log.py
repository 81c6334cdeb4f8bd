"""librdkafka's log lines go through Python logging: transient trouble at DEBUG, the rest
at its own level (a real client; no broker needed)."""

from __future__ import annotations

import logging
import pickle
import time

import pytest
from confluent_kafka import Producer

from reproducer.kafka_log import LOGGER_NAME, level_of, logged


def test_transient_trouble_is_debug_and_the_rest_keeps_its_level() -> None:
    refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    assert level_of(logging.ERROR, "FAIL", refused) == logging.DEBUG
    assert level_of(logging.WARNING, "REQTMOUT", "Timed out 1 in-flight request") == logging.DEBUG
    assert level_of(logging.ERROR, "ERROR", "1/1 brokers are down") == logging.DEBUG
    ignored = "Configuration property group.id is a consumer property and will be ignored"
    assert level_of(logging.WARNING, "CONFWARN", ignored) == logging.WARNING
    assert level_of(logging.ERROR, "SASL", "SASL authentication error") == logging.ERROR
    assert level_of(logging.INFO, "FAIL", "anything") == logging.INFO
    # a transactional producer's first moments, while the broker's coordinator loads
    getpid = (
        "[thrd:main]: Failed to acquire transactional PID from broker TxnCoordinator/1: "
        "Broker: Coordinator load in progress: retrying"
    )
    assert level_of(logging.WARNING, "GETPID", getpid) == logging.DEBUG


def test_a_real_client_logs_through_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    # nothing listens on port 1: librdkafka retries the connection, and says so
    producer = Producer(logged({"bootstrap.servers": "127.0.0.1:1", "group.id": "x"}))
    deadline = time.monotonic() + 20
    while not any("Connection refused" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "librdkafka logged no connection failure"
        producer.poll(0.2)
    ours = [r for r in caplog.records if r.name == LOGGER_NAME]
    refused = [r for r in ours if "Connection refused" in r.getMessage()]
    assert refused and {r.levelno for r in refused} == {logging.DEBUG}
    warned = [r for r in ours if "consumer property" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING  # a mistake in the settings
    assert "rdkafka#producer" in refused[0].getMessage()  # the client is named
    producer.flush(0)


def test_the_settings_travel_to_actors() -> None:
    settings = logged({"bootstrap.servers": "h:1"})
    assert pickle.loads(pickle.dumps(settings)) == settings
