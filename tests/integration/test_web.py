"""The results page's server over HTTP, against the real broker: results pushed to a
client as they are produced, filters and pages, one result whole with its attachment,
paths outside the output folder refused, markup kept as text, and the token."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from cluster import create_topic
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.web import FeedSettings, PageServer, WebSettings

pytestmark = pytest.mark.integration

EVIL = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # bytes served as they are; not decoded here
SECRET = b"top secret: outside the output folder"


def envelope(name: str, analysis: str, i: int, result: dict[str, Any] | None = None) -> bytes:
    value = {
        "schema": 1,
        "analysis": analysis,
        "version": "1",
        "file": {"relative_path": name, "sha512": "00" * 64, "size": i, "n_chunks": 1},
        "timing": {"started": time.time(), "seconds": 0.1},
        "node": "n1",
        "host": "h1",
        "result": result if result is not None else {"n": i, "position": 20.0 + i},
    }
    return json.dumps(value).encode()


def claim(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture(scope="module")
def page(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Topics with results (one holding markup, one with a good plot and three bad
    claim checks), a dead-letter report, and a page server on a free port."""
    out = tmp_path_factory.mktemp("out")
    (out / "plots").mkdir()
    (out / "plots" / "good.png").write_bytes(PNG)
    (out.parent / "secret.png").write_bytes(SECRET)
    results, dead = (f"web-{uuid.uuid4().hex[:10]}{s}" for s in ("", "-dead"))
    create_topic(kafka_bootstrap, results, partitions=2)
    create_topic(kafka_bootstrap, dead, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(30):
        analysis = "peaks" if i % 3 else "summary"
        producer.produce(results, envelope(f"run/scan_{i:03d}.h5", analysis, i), partition=i % 2)
    plots = {
        "good": claim("plots/good.png", PNG),
        "up": claim("../secret.png", SECRET),
        "absolute": claim(str(out.parent / "secret.png"), SECRET),
        "changed": claim("plots/good.png", b"other bytes"),
    }
    producer.produce(
        results, envelope("run/plotted.h5", "peaks", 99, {"plots": plots}), partition=0
    )
    producer.produce(results, envelope(f"run/{EVIL}.h5", EVIL, 100, {"note": EVIL}), partition=1)
    producer.produce(
        dead,
        json.dumps(
            {
                "schema": 1,
                "kind": "file_failure",
                "file": "run/broken.h5",
                "reason": "hash_mismatch",
            }
        ).encode(),
        key=b"run/broken.h5",
    )
    assert producer.flush(30) == 0
    config = KafkaConfig.for_bootstrap(kafka_bootstrap)
    server = PageServer(
        WebSettings(FeedSettings(config, results, dead), port=0, output_dir=out)
    ).start()
    guarded = PageServer(
        WebSettings(FeedSettings(config, results), port=0, token="s3cret-t0ken")
    ).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    wait_for(lambda: client.get("/api/state").json()["window"]["results_read"] == 32)
    wait_for(lambda: client.get("/api/state").json()["window"]["failures_read"] == 1)
    try:
        yield {
            "client": client,
            "server": server,
            "guarded": guarded,
            "producer": producer,
            "results": results,
        }
    finally:
        client.close()
        server.stop()
        guarded.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the page server did not read the topics in time"
        time.sleep(0.1)


def test_a_result_produced_is_pushed_to_a_listening_client(page: dict[str, Any]) -> None:
    client: httpx.Client = page["client"]
    last = client.get("/api/entries").json()["last_seq"]
    name = f"run/live_{uuid.uuid4().hex[:6]}.h5"
    with client.stream("GET", "/api/events", params={"after": last, "analysis": "peaks"}) as events:
        lines = events.iter_lines()
        assert next(lines) == ": connected"  # listening: now produce
        page["producer"].produce(page["results"], envelope(name, "other", 1))  # filtered out
        page["producer"].produce(page["results"], envelope(name, "peaks", 1))
        assert page["producer"].flush(30) == 0
        rows = []
        for line in lines:
            if line.startswith("data: ") and '"rows"' in line:
                rows += json.loads(line[6:])["rows"]
                if any(r["file"] == name for r in rows):
                    break
    assert [(r["file"], r["analysis"]) for r in rows] == [(name, "peaks")]


def test_pages_and_filters(page: dict[str, Any]) -> None:
    client: httpx.Client = page["client"]
    first = client.get("/api/entries", params={"limit": 10, "path": "scan_"}).json()
    assert first["total"] >= 30 and len(first["rows"]) == 10
    second = client.get(
        "/api/entries", params={"limit": 10, "path": "scan_", "before": first["rows"][-1]["seq"]}
    ).json()
    seqs = [r["seq"] for r in first["rows"] + second["rows"]]
    assert seqs == sorted(set(seqs), reverse=True)  # newest first, no repeats
    summary = client.get("/api/entries", params={"analysis": "summary", "limit": 500}).json()
    assert summary["total"] == 10 and {r["analysis"] for r in summary["rows"]} == {"summary"}
    failed = client.get("/api/entries", params={"status": "failed"}).json()
    assert [(r["file"], r["reason"]) for r in failed["rows"]] == [
        ("run/broken.h5", "hash_mismatch")
    ]
    future = client.get("/api/entries", params={"since": "2100-01-01T00:00:00Z"}).json()
    assert future["rows"] == []
    bad = client.get("/api/entries", params={"status": "nonsense"})
    assert bad.status_code == 400 and "status must be one of" in bad.json()["error"]


def find(client: httpx.Client, path: str) -> dict[str, Any]:
    rows = client.get("/api/entries", params={"path": path}).json()["rows"]
    assert rows, path
    found: dict[str, Any] = client.get(f"/api/entries/{rows[0]['seq']}").json()
    return found


def test_an_attachment_is_served_checked_and_paths_outside_are_refused(
    page: dict[str, Any],
) -> None:
    client: httpx.Client = page["client"]
    entry = find(client, "plotted")
    by_key = {c["path"]: i for i, c in enumerate(entry["claims"])}
    assert len(by_key) == 3  # good and changed share a path
    seq = entry["row"]["seq"]
    good = client.get(f"/api/entries/{seq}/attachments/0")
    assert good.status_code == 200 and good.content == PNG
    assert good.headers["content-type"] == "image/png"
    answers = [client.get(f"/api/entries/{seq}/attachments/{i}") for i in (1, 2, 3)]
    assert [a.status_code for a in answers] == [403, 403, 409]
    assert "parent folder" in answers[0].json()["error"]
    assert "outside the output folder" in answers[1].json()["error"]
    assert "changed after the result was made" in answers[2].json()["error"]
    assert SECRET not in b"".join(a.content for a in answers)
    assert client.get(f"/api/entries/{seq}/attachments/9").status_code == 404


def test_markup_in_a_result_is_sent_as_json_text_never_as_html(page: dict[str, Any]) -> None:
    client: httpx.Client = page["client"]
    entry = find(client, "<script>")
    assert entry["record"]["result"]["note"] == EVIL and entry["row"]["analysis"] == EVIL
    answer = client.get(f"/api/entries/{entry['row']['seq']}")
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-content-type-options"] == "nosniff"
    index = client.get("/")
    # no inline script may run on the page: what a result holds could never execute
    assert "script-src" not in index.headers["content-security-policy"]
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert "innerHTML" not in client.get("/static/app.js").text


def test_trend_points_and_plot(page: dict[str, Any]) -> None:
    client: httpx.Client = page["client"]
    fields = client.get("/api/fields", params={"analysis": "summary"}).json()["fields"]
    assert "result.position" in fields
    points = client.get(
        "/api/trend", params={"analysis": "summary", "field": "result.position"}
    ).json()["points"]
    assert sorted(p["y"] for p in points) == [20.0 + i for i in range(0, 30, 3)]
    plot = client.get(
        "/api/trend.png", params={"analysis": "summary", "field": "result.position", "x": "time"}
    )
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_the_token_is_required_when_set(page: dict[str, Any]) -> None:
    url = page["guarded"].url
    port = url.rstrip("/").rsplit(":", 1)[1]
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in ("/", "/api/entries", "/api/state", "/api/events", "/static/app.js"):
            refused = client.get(path)
            assert refused.status_code == 401 and "s3cret" not in refused.text, path
        assert client.get("/api/entries/1/attachments/0").status_code == 401
        assert (
            client.get("/api/state", headers={"authorization": "Bearer wrong"}).status_code == 401
        )
        assert (
            client.get("/api/state", headers={"authorization": "bearer s3cret-t0ken"}).status_code
            == 200
        )
        opened = client.get("/", params={"token": "s3cret-t0ken"})
        # the token leaves the address (and the history) at once, for a cookie of this port's
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        assert opened.headers["set-cookie"].startswith(f"reproducer_token_{port}=")
        assert "HttpOnly" in opened.headers["set-cookie"]
        assert client.get("/api/state").status_code == 200  # the cookie it set


def test_without_a_token_only_this_machine_s_names_are_answered(page: dict[str, Any]) -> None:
    """A site that points its own name at 127.0.0.1 (DNS rebinding) reads nothing."""
    client: httpx.Client = page["client"]
    refused = client.get("/api/state", headers={"host": "evil.example:8000"})
    assert refused.status_code == 421 and "results" not in refused.text
    assert client.get("/api/state", headers={"host": "localhost:8000"}).status_code == 200


def test_a_port_in_use_and_a_public_address_without_token_are_clear_errors(
    page: dict[str, Any], kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPRODUCER_WEB_TOKEN", raising=False)
    feed = FeedSettings(KafkaConfig.for_bootstrap(kafka_bootstrap), page["results"])
    port = int(page["server"].url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(ReproducerError, match=f"cannot listen on 127.0.0.1:{port}"):
        PageServer(WebSettings(feed, port=port))
    with pytest.raises(ReproducerError, match="needs a token"):
        PageServer(WebSettings(feed, host="0.0.0.0", port=0))


def test_every_route_only_reads(page: dict[str, Any]) -> None:
    """Every route answers GET only; a POST is refused."""
    client: httpx.Client = page["client"]
    for path in ("/api/entries", "/api/state", "/api/events", "/"):
        assert client.post(path).status_code == 405


def test_the_command_refuses_a_public_address_without_a_token(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from cluster.cli import main  # noqa: PLC0415

    monkeypatch.delenv("REPRODUCER_WEB_TOKEN", raising=False)
    config = tmp_path / "c.config"
    config.write_text(f"[broker]\nbootstrap.servers = {kafka_bootstrap}\n")
    argv = ["web", "--config", str(config), "--topic_name", "r", "--host", "0.0.0.0"]
    assert main(argv) == 1
    assert "needs a token: give --web_token or set REPRODUCER_WEB_TOKEN" in caplog.text
