#!/usr/bin/env python3
"""Start-up as a user meets it: spawn to the first result, beside Ray's own floor.

    python bench/startup.py [--repeats 3]

Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker. Every figure is a fresh process, as
a user's ``python -m my_reproducer`` is, running a reproducer ported from the reference (it
reads ``bytestring``, takes ``lock``, returns a ``ReproducerMessage``) with a consumer group
of its own (named, as a long-running job's is: its state topic is made and read) on a topic
holding one 4 KiB file, measured from spawn to the broker timestamp of its result. Beside it, Ray's
floor with the same install: a fresh ``python`` that imports Ray, starts or joins it, and
starts as many trivial actors as the pipeline does (ingest, producer, two analysis actors),
at once, until each answered a call.

Two settings:
- cold: every process starts its own local Ray (``python -m my_reproducer --config ...``);
  the target is the floor + 1 s;
- joined: a Ray started once beforehand (``ray start --head``, as a lab's long-running setup
  or a test session), joined with ``--ray_address auto``; the target is 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster import broker_from_env, create_topic  # noqa: E402
from reproducer.config import load_config  # noqa: E402
from reproducer.upload import upload  # noqa: E402

N_ACTORS = 4  # the pipeline's: ingest, producer, and two analysis actors

FLOOR = """
import json, sys, time
import ray
address = sys.argv[1]
if address == "local":
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
else:
    ray.init(address=address, logging_level="WARNING")

@ray.remote(num_cpus=0)
class Trivial:
    def ping(self):
        return 1

actors = [Trivial.remote() for _ in range(int(sys.argv[2]))]
ray.get([a.ping.remote() for a in actors])
print(json.dumps({"done": time.time()}), flush=True)
"""

USER_MODULE = '''
"""A reproducer as the reference's docs teach, ported by changing its imports."""
import hashlib
import json

from reproducer import DataFileStreamReproducer, ReproducerMessage


class DigestMessage(ReproducerMessage):
    def __init__(self, datafile, digest):
        super().__init__(datafile)
        self.digest = digest

    @property
    def msg_value(self):
        return json.dumps({"file": str(self.datafile.relative_filepath), "sha512": self.digest})


class DigestReproducer(DataFileStreamReproducer):
    n_seen = 0

    def _get_processing_result_message_for_file(self, datafile, lock):
        digest = hashlib.sha512(datafile.bytestring).hexdigest()
        with lock:
            DigestReproducer.n_seen += 1
        return DigestMessage(datafile, digest)


if __name__ == "__main__":
    DigestReproducer.run_from_command_line()
'''


def first_result_time(bootstrap: str, topic: str, timeout: float = 120.0) -> float | None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                return message.timestamp()[1] / 1000
        return None
    finally:
        consumer.close()


def run_user(
    folder: Path, config: Path, bootstrap: str, topic: str, address: str | None
) -> dict[str, float]:
    results = f"startup-out-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, results, partitions=1)
    command = [
        sys.executable,
        "-m",
        "startup_user",
        "--config",
        str(config),
        "--topic_name",
        topic,
        "--producer_topic_name",
        results,
        "--update_seconds",
        "3600",
        # a named group, as a lab's long-running job has (its state topic is made and read)
        "--consumer_group_id",
        f"startup-{uuid.uuid4().hex[:8]}",
    ]
    if address:
        command += ["--ray_address", address]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    spawned = time.time()
    proc = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        first = first_result_time(bootstrap, results)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        ended = time.time()
    if first is None:
        raise RuntimeError(f"no result; the run said: {err.decode()[-2000:]}")
    return {"first_result_s": first - spawned, "stopped_s": ended - spawned}


def run_floor(folder: Path, address: str) -> float:
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-c", FLOOR, address, str(N_ACTORS)],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["done"]) - spawned


def start_head(folder: Path) -> subprocess.Popen[bytes]:
    """``ray start --head --block``: stopped with its processes when this one is signalled
    (``ray stop`` would stop every Ray of the machine)."""
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray),
            "start",
            "--head",
            "--block",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # joinable once a job's actors answer
        try:
            run_floor(folder, "auto")
            return head
        except subprocess.CalledProcessError as exc:
            print(f"# not joinable yet: {exc.stderr.strip().splitlines()[-1:]}", flush=True)
            time.sleep(1)
    head.kill()
    raise RuntimeError("ray start --head did not come up in 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", choices=("cold", "joined"), help="one of the two settings (default: both)"
    )
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)
        print(f"# {name}: {value:.2f} s", flush=True)

    with broker_from_env() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "startup_user.py").write_text(USER_MODULE)
        config = folder / "run.config"
        config.write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n")
        data = folder / "data"
        data.mkdir()
        (data / "scan.bin").write_bytes(os.urandom(4096))
        topic = f"startup-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=4)
        upload([data], load_config(config), topic)
        for _ in range(args.repeats if args.only != "joined" else 0):
            add("cold: Ray floor (init + 4 actors)", run_floor(folder, "local"))
            add(
                "cold: spawn to first result",
                run_user(folder, config, bootstrap, topic, None)["first_result_s"],
            )
        if args.only != "cold":
            head = start_head(folder)  # its first job also warms it, as a lab's would be
            try:
                for _ in range(args.repeats):
                    add("joined: Ray floor (init + 4 actors)", run_floor(folder, "auto"))
                    add(
                        "joined: spawn to first result",
                        run_user(folder, config, bootstrap, topic, "auto")["first_result_s"],
                    )
            finally:
                head.send_signal(signal.SIGTERM)
                head.wait(60)
    print(f"\n| measured (median of {args.repeats}) | seconds |\n|---|---|")
    for name, values in rows.items():
        print(
            f"| {name} | {statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
