"""Ray metrics, read back from Ray's Prometheus endpoint after a real run: tagged with
the program id, the topic and the analysis, with a histogram of analysis time per file."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cluster import create_topic
from reproducer.chunk import encode_value, make_chunk
from reproducer.config import KafkaConfig
from reproducer.upload import upload
from tests.results import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray]

REPO = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    """A local Ray of this module's own, exporting its metrics on a known port."""
    import ray  # noqa: PLC0415

    port = _free_port()
    ray.init(
        address="local",  # a Ray started on this machine (ray start) is not the tests'
        num_cpus=4,
        include_dashboard=False,
        logging_level="WARNING",
        _metrics_export_port=port,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[2])}},
    )
    yield port
    ray.shutdown()


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""  # the metrics agent is not up yet


def test_metrics_carry_tags_and_time_each_analysis(
    metrics_port: int, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    import tests.pipeline.fanout_analyses  # noqa: F401, PLC0415 - registers the analyses
    from analyses.runner import AnalysesRun  # noqa: PLC0415

    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(5):
        (tree / f"f{i}.bin").write_bytes(bytes([i]) * 1000)
    (tree / "empty.bin").write_bytes(b"")
    upload([tree], KafkaConfig.for_bootstrap(kafka_bootstrap), topic)
    # and a file whose bytes do not match its hash: a failure, counted
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    bad = make_chunk(b"not what was hashed", filename="bad.bin", file_hash=bytes(64))
    producer.produce(topic, key=bad.key, value=encode_value(bad))
    assert producer.flush(30) == 0
    results_topic = topic + "-results"
    create_topic(kafka_bootstrap, results_topic, partitions=1)
    config_file = tmp_path / "test.config"
    config_file.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    run = AnalysesRun(
        config_file,
        topic,
        results_topic,
        analysis="byte-sum",
        stop_when_idle=3.0,
        heartbeat_program_id="metrics-test",
    )
    assert run.produce_processing_results_for_files_as_read().n_results_produced == 6

    tags = f'program="metrics-test",topic="{topic}"'

    def published() -> bool:
        text = _scrape(metrics_port)
        return f"{tags}" in text and "reproducer_analysis_seconds" in text

    wait_for(published, 90, "the run's metrics at Ray's metrics endpoint")
    text = _scrape(metrics_port)
    lines = [line for line in text.splitlines() if topic in line and not line.startswith("#")]
    count = [
        line
        for line in lines
        if line.startswith("ray_reproducer_analysis_seconds_count")
        and 'analysis="byte-sum"' in line
    ]
    assert count and float(count[0].rsplit(" ", 1)[1]) == 6, lines
    assert any(
        line.startswith("ray_reproducer_analysis_seconds_bucket") and 'le="0.01"' in line
        for line in lines
    ), lines
    ok = [line for line in lines if "reproducer_analyses" in line and 'outcome="ok"' in line]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) == 6, lines
    chunks = [line for line in lines if re.match(r"ray_reproducer_chunks(_total)?\{", line)]
    assert chunks and float(chunks[0].rsplit(" ", 1)[1]) == 7, lines
    failed = [line for line in lines if line.startswith("ray_reproducer_files_failed")]
    assert failed and float(failed[0].rsplit(" ", 1)[1]) == 1, lines

    # the Grafana dashboard draws only metrics a run exports
    dashboard = json.loads((REPO / "cluster/examples/grafana_dashboard.json").read_text())
    drawn = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ray_reproducer_[a-z_]+", target["expr"])
    }
    exported = {line.split("{")[0] for line in lines}
    assert len(drawn) >= 8 and drawn <= exported, drawn - exported
