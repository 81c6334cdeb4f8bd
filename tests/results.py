"""Reading a results topic and waiting for events, for the tests that run a pipeline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import jsonschema
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from reproducer.results import schema


def _no_nan(constant: str) -> Any:
    raise AssertionError(f"not strict JSON: a bare {constant}")


def strict_loads(text: bytes | str) -> Any:
    """JSON as strict readers (jq, Java, JavaScript) parse it: NaN and Infinity refused."""
    return json.loads(text, parse_constant=_no_nan)


def conforms(value: Any, name: str) -> Any:
    """``value``, checked against the project's JSON Schema ``name`` (result, dead_letter,
    heartbeat)."""
    jsonschema.validate(value, schema(name), format_checker=jsonschema.FormatChecker())
    return value


def _read_to_end(
    bootstrap: str,
    topic: str,
    expected: int = 0,
    timeout: float = 60.0,
    settings: dict[str, Any] | None = None,
) -> list[Any]:
    """Every message of partition 0 of ``topic`` up to its end, as a read_committed reader
    sees it, once at least ``expected`` are there (waiting up to ``timeout`` for them): the
    end, not a quiet spell, says all were read, so extra messages show and no caller waits
    out a timeout. ``settings``: more client settings (a secured broker's)."""
    consumer = Consumer(
        {
            **(settings or {}),
            "bootstrap.servers": bootstrap,
            "group.id": "check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # the end is told by an empty fetch: do not wait 500 ms
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[Any] = []
    at_end = False
    deadline = time.monotonic() + timeout
    try:
        while not (at_end and len(out) >= expected) and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.05):
                error = m.error()
                if error is not None:
                    at_end = error.code() == KafkaError._PARTITION_EOF
                    continue
                at_end = False
                out.append(m)
    finally:
        consumer.close()
    return out


def read_results(
    bootstrap: str,
    topic: str,
    expected: int = 0,
    timeout: float = 60.0,
    settings: dict[str, Any] | None = None,
) -> list[tuple[str, dict]]:
    """Every result in ``topic`` (key, JSON value), read to the end (see _read_to_end)."""
    return [
        ((m.key() or b"").decode(), json.loads(m.value()))
        for m in _read_to_end(bootstrap, topic, expected, timeout, settings)
    ]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def count_results(bootstrap: str, topic: str) -> int:
    """Result messages visible to a read_committed reader (the default isolation), now."""
    return len(_read_to_end(bootstrap, topic))


def envelopes(bootstrap: str, topic: str) -> list[tuple[str, dict[str, bytes], dict]]:
    """Every registered-analysis envelope in ``topic``: (analysis, headers, value)."""
    out = []
    for m in _read_to_end(bootstrap, topic):
        value = conforms(strict_loads(m.value()), "result")
        out.append((value["analysis"], dict(m.headers() or []), value))
    return out


def run_in_thread(run: Any) -> tuple[threading.Thread, list[Any]]:
    """``run.produce_processing_results_for_files_as_read()`` on a thread of its own; the
    list gets what it returned, or what it raised, for the test to read once it ends."""
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(run.produce_processing_results_for_files_as_read())
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome
