#!/usr/bin/env python3
"""The results page with thousands of results: catch-up, page requests, live delivery, memory.

    python bench/web.py [--results 20000] [--window 10000] [--doc docs/benchmarks/web.md]

Uses $KAFKA_BOOTSTRAP_SERVERS, or starts a local broker. Produces ``--results`` result
envelopes (each about 1 KB of JSON: a file, timing, a result with a list of peaks and a
claim check, as spectrum-peaks makes them) to a fresh 3-partition topic, then starts the page
server in this process (``--max_entries --window``) and measures:

- catch-up: seconds from the server's start until it has read every result, and results/s;
- memory: this process's resident memory before the server and after the catch-up (the
  window holds at most ``--window`` results);
- page requests: latency of ``GET /api/entries?limit=100`` over 200 requests, newest page,
  an older page, and with each filter (analysis, path substring, time), p50 and p95;
- live delivery: a client listening on ``/api/events``; 200 results produced one at a time,
  each carrying its send time; the time from ``produce`` to the client's receipt, p50 and
  p95 (the broker's acknowledgement and the reader's poll included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from cluster import broker_from_env, create_topic  # noqa: E402
from reproducer.config import KafkaConfig  # noqa: E402
from reproducer.web import FeedSettings, PageServer, WebSettings  # noqa: E402


def envelope(i: int, sent: float | None = None) -> bytes:
    value: dict[str, Any] = {
        "schema": 1,
        "analysis": "spectrum-peaks" if i % 3 else "hdf5-summary",
        "version": "2",
        "file": {
            "relative_path": f"run_{i // 1000:03d}/scan_{i:06d}.h5",
            "sha512": "ab" * 64,
            "size": 317_145,
            "n_chunks": 1,
        },
        "timing": {"started": time.time(), "seconds": 0.41},
        "node": "5f0c" * 14,
        "host": "worker-3",
        "result": {
            "peaks": [
                {"index": 800 + k, "height": 101.9 - k, "width": 23.6, "position": 23.675 + k}
                for k in range(3)
            ],
            "plot": {"path": f"plots/scan_{i:06d}.png", "size": 48213, "sha256": "cd" * 32},
            "n_points": 4096,
        },
    }
    if sent is not None:
        value["result"]["sent"] = sent
    return json.dumps(value).encode()


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def measure(bootstrap: str, n: int, window: int) -> dict[str, Any]:
    topic = f"bench-web-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=3)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        producer.produce(topic, envelope(i))
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    server = PageServer(
        WebSettings(
            FeedSettings(KafkaConfig.for_bootstrap(bootstrap), topic),
            port=0,
            max_entries=window,
        )
    ).start()
    client = httpx.Client(base_url=server.url, timeout=60)
    try:
        while client.get("/api/state").json()["window"]["results_read"] < n:
            time.sleep(0.05)
        catch_up = time.perf_counter() - started
        rss_after = process.memory_info().rss
        counts = client.get("/api/state").json()["window"]
        oldest = client.get("/api/entries", params={"limit": 100}).json()["rows"][-1]["seq"]
        when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        queries: dict[str, dict[str, str]] = {
            "newest page": {},
            "older page": {"before": str(oldest)},
            "analysis": {"analysis": "hdf5-summary"},
            "path substring": {"path": "scan_0012"},
            "time": {"since": when.isoformat()},
        }
        pages = {}
        for name, query in queries.items():
            times = []
            for _ in range(200):
                t0 = time.perf_counter()
                answer = client.get("/api/entries", params={"limit": "100", **query})
                times.append(time.perf_counter() - t0)
                assert answer.status_code == 200
            pages[name] = percentiles(times)
        live = live_delivery(client, producer, topic)
    finally:
        client.close()
        server.stop()
    return {
        "results": n,
        "window": window,
        "catch_up_s": catch_up,
        "results_per_s": n / catch_up,
        "held": counts["results_held"],
        "dropped": counts["results_dropped"],
        "bytes_held": counts["bytes_held"],
        "rss_growth_mib": (rss_after - rss_before) / 2**20,
        "pages_ms": {k: (a * 1000, b * 1000) for k, (a, b) in pages.items()},
        "live_ms": live,
    }


def live_delivery(client: httpx.Client, producer: Producer, topic: str) -> tuple[float, float]:
    delays: list[float] = []
    received = threading.Event()
    last = client.get("/api/entries", params={"limit": 1}).json()["last_seq"]

    def listen() -> None:
        with client.stream("GET", "/api/events", params={"after": last}) as events:
            for line in events.iter_lines():
                if line.startswith("data: ") and '"rows"' in line:
                    now = time.time()
                    for row in json.loads(line[6:])["rows"]:
                        delays.append(now - row["headline"]["sent"])
                    received.set()
                    if len(delays) >= 200:
                        return

    # the row carries no result figures beyond the headline: the send time is put first
    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    for i in range(200):
        received.clear()
        sent = time.time()
        producer.produce(topic, live_envelope(i, sent))
        producer.flush(10)
        if not received.wait(30):
            raise RuntimeError("a live result did not arrive within 30 s")
    reader.join(30)
    return percentiles([d * 1000 for d in delays])


def live_envelope(i: int, sent: float) -> bytes:
    value = json.loads(envelope(i))
    value["result"] = {"sent": sent}  # the row's headline carries it to the client
    return json.dumps(value).encode()


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['results']} results of about 1 KB each, a window of {figures['window']} "
        f"(sitting of {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| catch-up: every result read | {figures['catch_up_s']:.2f} s "
        f"({figures['results_per_s']:,.0f} results/s) |",
        f"| held / dropped from the window | {figures['held']} / {figures['dropped']} "
        f"({figures['bytes_held'] / 2**20:.1f} MiB of messages) |",
        f"| resident memory grown by | {figures['rss_growth_mib']:.0f} MiB |",
    ]
    for name, (p50, p95) in figures["pages_ms"].items():
        lines.append(f"| `GET /api/entries` {name}: p50 / p95 | {p50:.1f} / {p95:.1f} ms |")
    p50, p95 = figures["live_ms"]
    lines.append(
        f"| live: produce to the browser's event stream, p50 / p95 | {p50:.0f} / {p95:.0f} ms |"
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--doc", type=Path, default=None, help="write the table here too")
    args = parser.parse_args()
    with broker_from_env() as bootstrap:
        figures = measure(bootstrap, args.results, args.window)
    text = markdown(figures)
    print(text)
    print(json.dumps(figures))
    if args.doc is not None:
        args.doc.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
