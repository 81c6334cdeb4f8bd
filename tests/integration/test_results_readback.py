"""Reading a results topic back (``reproducer.read_results``, ``reproducer results``)
against the real broker: every partition, committed transactions only, filters, formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pandas
import pytest
from confluent_kafka import Producer

from cluster import create_topic
from reproducer import read_results
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
T0 = 1_780_000_000_000  # produced-at times, in ms, set on each message


def _envelope(analysis: str, name: str, n: int) -> bytes:
    value = {
        "schema": 1,
        "analysis": analysis,
        "version": "1",
        "file": {"relative_path": f"run/{name}", "sha512": "00" * 64, "size": n, "n_chunks": 1},
        "timing": {"started": T0 / 1000, "seconds": 0.1},
        "node": "node-1",
        "result": {"n": n, "stats": {"mean": n / 2}},
    }
    return json.dumps(value).encode()


@pytest.fixture
def results_topic(kafka_bootstrap: str) -> str:
    """Two partitions: five envelopes of two analyses, one raw value, and a result in an
    aborted transaction (never to be read)."""
    topic = f"results-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(5):
        analysis = "peaks" if i % 2 == 0 else "summary"
        producer.produce(
            topic,
            key=f"f{i}_{analysis}",
            value=_envelope(analysis, f"f{i}.h5", i),
            partition=i % 2,
            timestamp=T0 + i * 60_000,  # a minute apart
        )
    producer.produce(topic, key="raw", value=b"size=12", partition=1, timestamp=T0 + 300_000)
    assert producer.flush(30) == 0
    transactional = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{topic}"}
    )
    transactional.init_transactions(30)
    transactional.begin_transaction()
    transactional.produce(topic, value=_envelope("peaks", "aborted.h5", 99), partition=0)
    transactional.flush(30)
    transactional.abort_transaction(30)
    return topic


def test_every_committed_result_is_read_back_from_every_partition(
    kafka_bootstrap: str, results_topic: str
) -> None:
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    records = read_results(config, results_topic, timeout=30)
    files = sorted(r["file"]["relative_path"] for r in records if "file" in r)
    assert files == [f"run/f{i}.h5" for i in range(5)]  # not the aborted one
    assert {r["partition"] for r in records} == {0, 1}
    raw = [r for r in records if "value" in r]
    assert [(r["value"], r["key"]) for r in raw] == [("size=12", "raw")]
    rows = records.rows()
    assert {r["status"] for r in rows} == {"ok", "raw"}
    row = next(r for r in rows if r["file"] == "run/f3.h5")
    assert (row["analysis"], row["result.n"], row["result.stats.mean"]) == ("summary", 3, 1.5)
    assert row["node"] == "node-1" and row["produced_at"].startswith("2026-05-28T20:")

    peaks = read_results(config, results_topic, analysis="peaks")
    assert sorted(r["file"]["relative_path"] for r in peaks) == [
        "run/f0.h5",
        "run/f2.h5",
        "run/f4.h5",
    ]
    # from the third minute on: f2, f3, f4 and the raw value (their times, not their offsets)
    later = read_results(config, results_topic, since="2026-05-28T20:28:40+00:00")
    assert sorted(r.get("key") for r in later) == ["f2_peaks", "f3_summary", "f4_peaks", "raw"]


def test_to_pandas_gives_one_row_per_result(kafka_bootstrap: str, results_topic: str) -> None:
    frame = read_results(
        KafkaConfig.for_bootstrap(kafka_bootstrap), results_topic, analysis="summary"
    ).to_pandas()
    assert sorted(frame["result.n"]) == [1, 3] and set(frame["analysis"]) == {"summary"}


def _results_command(
    bootstrap: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``python -m reproducer results --config <a config for bootstrap> ARGS...``."""
    config = tmp_path / "c.config"
    config.write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n")
    return subprocess.run(
        [sys.executable, "-m", "reproducer", "results", "--config", str(config), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_results_command_writes_csv_and_parquet(
    kafka_bootstrap: str, results_topic: str, tmp_path: Path
) -> None:
    done = _results_command(
        kafka_bootstrap,
        tmp_path,
        "--topic_name",
        results_topic,
        "--format",
        "csv",
        "--analysis",
        "peaks",
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert sorted(r["file"] for r in rows) == ["run/f0.h5", "run/f2.h5", "run/f4.h5"]
    assert "3 results from" in done.stderr
    target = tmp_path / "all.parquet"
    done = _results_command(
        kafka_bootstrap, tmp_path, "--topic_name", results_topic, "--output", str(target)
    )
    assert done.returncode == 0, done.stderr
    assert len(pandas.read_parquet(target)) == 6  # the format from the suffix


def test_a_missing_topic_is_a_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    with pytest.raises(ReproducerError, match="no-such-results"):
        read_results(KafkaConfig.for_bootstrap(kafka_bootstrap), "no-such-results", timeout=10)
    done = _results_command(kafka_bootstrap, tmp_path, "--topic_name", "no-such-results")
    assert done.returncode == 1 and "topic no-such-results does not exist" in done.stderr
    done = _results_command(
        kafka_bootstrap, tmp_path, "--topic_name", "x", "--format", "csv", "--follow"
    )
    assert done.returncode == 1 and "--follow writes jsonl" in done.stderr
