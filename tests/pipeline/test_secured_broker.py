"""The pipeline against a secured broker: SASL_SSL with SCRAM-SHA-512, configured only
through the INI file with the password from the environment; a wrong password or an
untrusted certificate stops the run at start-up with a clear message; the password is
found in no log, LOGS file, topic or error message."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
import ray
from confluent_kafka import Producer

from cluster import create_topic
from cluster.broker import LocalBroker, Scram
from reproducer.config import load_config
from reproducer.errors import ReproducerError
from reproducer.upload import upload
from tests.pipeline.size_reproducer import SizeReproducer
from tests.results import _read_to_end, read_results

pytestmark = [pytest.mark.integration, pytest.mark.ray]

PASSWORD = f"pw-{uuid.uuid4().hex}"  # unique: a hit anywhere is this test's password
ENV = "RAY_REPRODUCER_TEST_KAFKA_PASSWORD"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        log_dir=tmp_path_factory.mktemp("secured-broker"), sasl_ssl=Scram(password=PASSWORD)
    )
    broker.start()
    os.environ[ENV] = PASSWORD
    try:
        yield broker
    finally:
        os.environ.pop(ENV, None)
        broker.stop()


def write_config(path: Path, broker: LocalBroker, password: str = f"${ENV}", ca: str = "") -> Path:
    """The INI file a lab would write: the password by reference to the environment."""
    path.write_text(
        "[broker]\n"
        f"bootstrap.servers = {broker.bootstrap_servers}\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism = SCRAM-SHA-512\n"
        f"sasl.username = {broker.sasl_ssl.username if broker.sasl_ssl else ''}\n"
        f"sasl.password = {password}\n"
        f"ssl.ca.location = {ca or broker.ca_file}\n"
    )
    return path


def topics(broker: LocalBroker, *names: str, partitions: int = 1) -> None:
    for name in names:
        create_topic(
            broker.bootstrap_servers, name, partitions=partitions, settings=broker.client_settings()
        )


def test_upload_and_pipeline_work_and_the_password_shows_nowhere(
    secured: LocalBroker, local_ray: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    suffix = uuid.uuid4().hex[:8]
    topic, results, dead, heartbeats, logs = (
        f"{name}-{suffix}" for name in ("in", "results", "dead", "heartbeats", "logs")
    )
    topics(secured, topic, partitions=3)
    topics(secured, results, dead, heartbeats, logs)
    config_file = write_config(tmp_path / "lab.config", secured)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    files = {f"sub/f{i}.bin": os.urandom(1000 + 700 * i) for i in range(6)}
    for relative, data in files.items():
        (tree / relative).write_bytes(data)
    upload([tree], load_config(config_file), topic, chunk_size=1024)
    # and a poison message, for the dead-letter producer
    poison = Producer(secured.client_settings())
    poison.produce(topic, key=b"junk", value=b"\xc1 not a chunk", partition=0)
    assert poison.flush(30) == 0

    out = tmp_path / "out"
    run = SizeReproducer(
        config_file,
        topic,
        results,
        consumer_group_id=f"group-{suffix}",
        dead_letter_topic=dead,
        heartbeat_topic_name=heartbeats,
        heartbeat_interval_secs=0.5,
        log_topic_name=logs,
        log_interval_secs=0.5,
        stop_when_idle=3.0,
        output_dir=out,
    )
    summary = run.produce_processing_results_for_files_as_read()
    assert summary.n_results_produced == len(files)

    got = {payload["file"]: payload["size"] for _, payload in _read(secured, results, len(files))}
    assert got == {relative: len(data) for relative, data in files.items()}
    dead_letters = _raw(secured, dead, 1)
    assert [key for key, _, _ in dead_letters] == [b"junk"]
    heartbeat_messages = _raw(secured, heartbeats, 1)
    log_messages = _raw(secured, logs, 1)
    assert heartbeat_messages and log_messages

    # Nowhere: the driver's log records, every Ray process's log, the LOGS folder, the
    # topics the run wrote, the broker's own log.
    places: dict[str, str] = {"driver log records": caplog.text}
    session_logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    for folder in (session_logs, out):
        for path in folder.rglob("*"):
            if path.is_file():
                places[str(path)] = path.read_text(errors="replace")
    for name, messages in (
        ("results", _raw(secured, results, len(files))),
        ("dead letters", dead_letters),
        ("heartbeats", heartbeat_messages),
        ("log topic", log_messages),
    ):
        places[name] = repr(messages)
    assert secured.log_file is not None
    places["broker log"] = secured.log_file.read_text(errors="replace")
    assert len(places) > 10, sorted(places)  # the logs were found, not an empty search
    assert [where for where, text in places.items() if PASSWORD in text] == []


def _raw(broker: LocalBroker, topic: str, expected: int) -> list[tuple[bytes, bytes, list]]:
    """Every message of ``topic``: key, value and headers, as bytes."""
    return [
        (m.key(), m.value(), m.headers() or [])
        for m in _read_to_end(
            broker.bootstrap_servers, topic, expected, settings=broker.client_settings()
        )
    ]


def _read(broker: LocalBroker, topic: str, expected: int) -> list[tuple[str, dict]]:
    return read_results(
        broker.bootstrap_servers, topic, expected, settings=broker.client_settings()
    )


@pytest.mark.parametrize(
    ("password", "ca", "names"),
    [
        ("wrong-password", "", "sasl.password"),
        (f"${ENV}", certifi.where(), "ssl.ca.location"),  # public CAs, not the broker's
    ],
    ids=["wrong password", "untrusted certificate"],
)
def test_a_refused_connection_stops_the_run_at_start_up(
    secured: LocalBroker, tmp_path: Path, password: str, ca: str, names: str
) -> None:
    """Not a hang of every actor: a clear error within seconds, before Ray starts, that
    says what to check and does not show the password. The upload says so too."""
    topic = f"in-{uuid.uuid4().hex[:8]}"
    topics(secured, topic, partitions=3)
    config_file = write_config(tmp_path / "lab.config", secured, password, ca)
    run = SizeReproducer(config_file, topic, topic + "-out", stop_when_idle=3.0)
    start = time.monotonic()
    with pytest.raises(ReproducerError, match=f"refused the .* connection .*{names}") as caught:
        run.produce_processing_results_for_files_as_read()
    assert time.monotonic() - start < 20
    assert PASSWORD not in str(caught.value) and "wrong-password" not in str(caught.value)

    (tmp_path / "a.txt").write_bytes(b"abc")
    with pytest.raises(ReproducerError, match=f"refused the \\[producer\\] connection .*{names}"):
        upload([tmp_path / "a.txt"], load_config(config_file), topic)
