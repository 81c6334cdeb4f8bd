"""Files -> `reproducer upload` -> a 3-partition topic -> reassembly -> the same files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from cluster import create_topic
from cluster.demo import make_sample_tree
from reproducer.chunk import decode_value, encode_value, make_chunk
from reproducer.config import KafkaConfig
from reproducer.download import download
from reproducer.errors import ChunkDecodeError, ChunkHashError, UnsafePathError, UploadError
from reproducer.reassembly import Reassembler
from reproducer.upload import find_files, upload

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
LARGE = 300 << 20


@pytest.fixture(scope="module")
def uploaded_tree(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, str], int]:
    """A varied tree with a 300 MiB file, uploaded once with the `reproducer upload` CLI."""
    root = tmp_path_factory.mktemp("tree")
    expected = make_sample_tree(root, LARGE)
    topic = f"roundtrip-{os.getpid()}-{id(root) & 0xFFFF}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    # cli.main in a child that reports its own peak RSS: VmHWM, since ru_maxrss survives
    # exec and would report this (large) test process's RSS at fork time
    wrapper = (
        "import re, sys; from cluster.cli import main; rc = main(sys.argv[1:]); "
        "status = open('/proc/self/status').read(); "
        "print('PEAK_RSS_KIB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1)); sys.exit(rc)"
    )
    config = str(REPO / "cluster" / "local_broker.config")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            "upload",
            str(root),
            "--config",
            config,
            "--topic_name",
            topic,
        ],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"uploaded {len(expected)} files" in proc.stdout
    peak_kib = int(proc.stdout.split("PEAK_RSS_KIB")[1].split()[0])
    return topic, expected, peak_kib


def test_upload_streams_with_bounded_memory(uploaded_tree: tuple[str, dict[str, str], int]) -> None:
    _, _, peak_kib = uploaded_tree
    # the largest file is 300 MiB; reading it whole would need at least that much
    assert peak_kib * 1024 < 220 << 20, f"uploader peak RSS {peak_kib / 1024:.0f} MiB"


@pytest.mark.parametrize("mode", ["memory", "disk", "both"])
def test_rebuilt_byte_identical_in_each_mode(
    mode: str, kafka_bootstrap: str, uploaded_tree: tuple[str, dict[str, str], int], tmp_path: Path
) -> None:
    topic, expected, _ = uploaded_tree
    out = tmp_path / "out"
    reassembler = Reassembler(mode, None if mode == "memory" else out)  # type: ignore[arg-type]
    report = download(
        KafkaConfig.for_bootstrap(kafka_bootstrap), topic, reassembler, n_files=len(expected)
    )
    assert report.failed == [] and report.poison == []
    got = {f.relative_path.as_posix(): f for f in report.completed}
    assert set(got) == set(expected)
    for relative, digest in expected.items():
        assert hashlib.sha512(got[relative].read_bytes()).hexdigest() == digest, relative
        if mode != "memory":
            assert hashlib.sha512((out / relative).read_bytes()).hexdigest() == digest
    assert got["empty.dat"].size == 0 and got["large/big.bin"].size == LARGE
    if mode != "memory":
        on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert on_disk == sorted(expected)  # nothing else, no temporary files left


def test_chunks_of_one_file_spread_over_all_partitions(
    kafka_bootstrap: str, uploaded_tree: tuple[str, dict[str, str], int]
) -> None:
    topic, _, _ = uploaded_tree
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "count", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    per_partition: Counter[int] = Counter()
    n_large = -(-LARGE // 524288)
    try:
        while per_partition.total() < n_large:
            batch = consumer.consume(500, 5)
            assert batch, "topic ended early"
            for message in batch:
                if decode_value(message.value()).filename == "big.bin":
                    per_partition[message.partition()] += 1
    finally:
        consumer.close()
    assert set(per_partition) == {0, 1, 2}


def test_poison_messages_are_reported_and_skipped(kafka_bootstrap: str, topic: str) -> None:
    good = make_chunk(b"fine", filename="ok.txt", subdir_str="s")
    tampered = dataclasses.replace(make_chunk(b"x", filename="bad.txt"), data=b"y")
    escaping = make_chunk(b"z", filename="passwd", subdir_str="../../etc")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for key, value in [
        (b"junk", b"\xc1not msgpack"),
        (b"tampered", encode_value(tampered)),
        (b"escaping", encode_value(escaping)),
        (good.key.encode(), encode_value(good)),
    ]:
        producer.produce(topic, key=key, value=value, partition=1)
    assert producer.flush(30) == 0
    report = download(KafkaConfig.for_bootstrap(kafka_bootstrap), topic, Reassembler(), n_files=1)
    assert [f.relative_path.as_posix() for f in report.completed] == ["s/ok.txt"]
    assert [type(e) for e in report.poison] == [ChunkDecodeError, ChunkHashError, UnsafePathError]
    assert [(e.field, e.topic, e.partition, e.offset) for e in report.poison] == [
        ("value", topic, 1, 0),
        ("chunk_hash", topic, 1, 1),
        ("subdir_str", topic, 1, 2),
    ]


def test_unreadable_files_are_named_and_the_rest_delivered(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.txt").write_bytes(b"good")
    (tree / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tree / "pipe")
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    with pytest.raises(UploadError) as caught:
        upload([tree], config, topic)
    assert set(caught.value.failed) == {"dangling", "pipe"}
    report = download(config, topic, Reassembler(), n_files=1)
    assert [f.read_bytes() for f in report.completed] == [b"good"]


def test_unacknowledged_chunks_fail_the_upload_naming_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"b" * 10)
    nobody = KafkaConfig(
        broker={"bootstrap.servers": "127.0.0.1:9"}, producer={"message.timeout.ms": 1500}
    )
    with pytest.raises(UploadError) as caught:
        upload([tmp_path], nobody, "t", flush_timeout=30)
    assert set(caught.value.failed) == {"a.txt", "sub/b.txt"}
    assert "a.txt" in str(caught.value) and "sub/b.txt" in str(caught.value)
    assert len(find_files([tmp_path]).sources) == 2


def test_cli_exit_code_names_failed_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1;2\n")
    config = tmp_path / "nobody.config"
    config.write_text(
        "[broker]\nbootstrap.servers = 127.0.0.1:9\n[producer]\nmessage.timeout.ms = 1500\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reproducer",
            "upload",
            str(tmp_path / "data"),
            "--config",
            str(config),
            "--topic_name",
            "t",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "x.csv" in proc.stderr and "not fully delivered" in proc.stderr


def test_cli_reports_config_errors_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reproducer",
            "upload",
            str(tmp_path),
            "--config",
            str(REPO / "cluster" / "local_broker.config"),
            "--topic_name",
            "t",
        ],
        env={k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "environment variable KAFKA_BOOTSTRAP_SERVERS is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
