#!/usr/bin/env python3
"""Exactly once with one slow file: how long the other files' results take to be visible.

    python bench/slow_file.py                    # a 4 MiB file held open, 200 small files
    python bench/slow_file.py --small 500 --hold 60

A 4 MiB file is uploaded in 512 KiB chunks, all but its last, spread over every partition
(so it pins every partition's offsets); then the small files, whole; the pipeline
(``--exactly_once``, a reference-style reproducer: SHA-512 of ``datafile.bytestring``
into a ``ReproducerMessage``, the lock taken) runs meanwhile. Measured: from the end of
the small files' upload to when a ``read_committed`` reader has seen all their results;
the state records written for them; then, after ``--hold`` seconds, the last chunk, and
from it to the slow file's result and to the state topic being empty again (tombstones).
Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import broker_from_env, create_topic
from reproducer import DataFileStreamReproducer, ReproducerMessage
from reproducer.chunk import encode_value, make_chunk
from reproducer.state import read_state, state_topic
from tests.results import count_results


class DigestMessage(ReproducerMessage):
    def __init__(self, datafile: Any, digest: str) -> None:
        super().__init__(datafile)
        self.digest = digest

    @property
    def msg_value(self) -> str:
        return self.digest


class DigestReproducer(DataFileStreamReproducer):
    """As the reference's docs teach: reads ``bytestring``, takes ``lock``."""

    def _get_processing_result_message_for_file(self, datafile: Any, lock: Any) -> Any:
        digest = hashlib.sha512(datafile.bytestring).hexdigest()
        with lock:
            pass
        return DigestMessage(datafile, digest)


def _wait(condition: Any, timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"gave up after {timeout:g} s")
        time.sleep(0.1)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200, help="small files (4 KiB each)")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the slow file waits")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with broker_from_env() as bootstrap:
        topic = f"slow-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=args.partitions)
        results = topic + "-results"
        create_topic(bootstrap, results, partitions=1)
        group = f"bench-{topic}"
        data = os.urandom(4 << 20)
        step = 512 << 10
        n = len(data) // step
        slow = [
            make_chunk(
                data[i * step : (i + 1) * step],
                filename="slow.h5",
                file_hash=hashlib.sha512(data).digest(),
                chunk_offset_write=i * step,
                chunk_i=i + 1,
                n_total_chunks=n,
                file_mtime=time.time(),
            )
            for i in range(n)
        ]
        producer = Producer({"bootstrap.servers": bootstrap})

        def send(chunks: list[Any]) -> None:
            for i, chunk in enumerate(chunks):
                producer.produce(
                    topic,
                    key=chunk.key.encode(),
                    value=encode_value(chunk),
                    partition=i % args.partitions,
                )
            assert producer.flush(60) == 0

        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "bench.config"
            config.write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n")
            run = DigestReproducer(
                config,
                topic,
                results,
                consumer_group_id=group,
                exactly_once=True,
                output_dir=Path(folder) / "out",
            )
            handle = run.start()
            try:
                send(slow[:-1])
                started = _wait(lambda: handle.progress().n_messages >= len(slow) - 1, 300)
                print(f"the pipeline read the slow file's first chunks {started:.1f} s after start")
                small = [
                    make_chunk(os.urandom(4096), filename=f"small{i:04d}.dat")
                    for i in range(args.small)
                ]
                send(small)
                seen = _wait(lambda: count_results(bootstrap, results) >= args.small, 600)
                records = len(
                    read_state({"bootstrap.servers": bootstrap}, state_topic(group, topic))
                )
                print(
                    f"{args.small} small files' results visible to a read_committed reader "
                    f"{seen:.1f} s after their upload, with the slow file open "
                    f"(--transaction_interval 1 s); {records} state records"
                )
                time.sleep(args.hold)
                held = count_results(bootstrap, results)
                send(slow[-1:])
                done = _wait(lambda: count_results(bootstrap, results) > held, 600)
                gone = _wait(
                    lambda: (
                        not read_state({"bootstrap.servers": bootstrap}, state_topic(group, topic))
                    ),
                    120,
                )
                print(
                    f"after {args.hold:g} s the last chunk: the slow file's result {done:.1f} s "
                    f"later, the state topic empty {done + gone:.1f} s later; "
                    f"{count_results(bootstrap, results)} results in all"
                )
            finally:
                handle.stop(120)


if __name__ == "__main__":
    main()
