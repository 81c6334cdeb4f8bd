"""The results page's pure parts: the bounded window, its filters and pages, the claim
checks a result names, and how an attachment is read (only from inside the output
folder, only with its SHA-256)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from reproducer.web import check_host
from reproducer.web.attachments import AttachmentError, read_attachment
from reproducer.web.window import (
    Filter,
    Window,
    claim_checks,
    failure_record,
    field_value,
    numeric_fields,
)

T0 = 1_780_000_000_000


def envelope(i: int, analysis: str = "peaks", path: str | None = None) -> dict[str, Any]:
    return {
        "analysis": analysis,
        "version": "1",
        "file": {"relative_path": path or f"run/scan_{i:03d}.h5", "size": 10 * i},
        "timing": {"started": T0 / 1000, "seconds": 0.5},
        "result": {"peak": {"position": 20.0 + i}, "n": i, "peaks": [{"height": 3.0 * i}]},
        "timestamp": T0 + i * 1000,
        "partition": 0,
        "offset": i,
    }


def filled(n: int, **bounds: int) -> Window:
    window = Window(**bounds)
    for i in range(n):
        window.add("ok", envelope(i, "peaks" if i % 2 == 0 else "summary"), 100)
    return window


def test_pages_are_newest_first_and_page_back_without_gaps_or_repeats() -> None:
    window = filled(250)
    seen: list[int] = []
    before = None
    while True:
        page = window.page(Filter(), before=before, limit=100)
        assert page.total == 250 and page.upto == 250
        seen += [e.seq for e in page.entries]
        if not page.more:
            break
        before = page.entries[-1].seq
    assert seen == list(range(250, 0, -1))  # newest first, no gap, no repeat
    assert len(page.entries) == 50


def test_filters_by_analysis_path_status_and_time() -> None:
    window = filled(20)
    window.add("failed", {"file": "run/broken.h5", "reason": "hash_mismatch"}, 50)
    window.add("raw", {"value": "size=1", "key": "run/raw_result", "timestamp": T0}, 10)

    def files(**query: str) -> list[str]:
        return [e.path for e in window.page(Filter.from_query(query), limit=1000).entries]

    assert len(files(analysis="peaks")) == 10
    assert files(path="SCAN_007") == ["run/scan_007.h5"]  # a substring, any case
    assert files(status="failed") == ["run/broken.h5"]
    assert files(status="raw") == ["run/raw_result"]  # a raw result is found by its key
    since = "2026-05-28T20:26:45+00:00"  # T0 + 5 s
    until = "2026-05-28T20:26:48+00:00"  # T0 + 8 s: not included
    assert files(since=since, until=until, analysis="summary") == [
        "run/scan_007.h5",
        "run/scan_005.h5",
    ]
    with pytest.raises(ValueError, match="status must be one of"):
        Filter.from_query({"status": "<b>"})
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        Filter.from_query({"since": "yesterday"})


def test_the_window_is_bounded_by_count_and_by_bytes_and_counts_what_it_dropped() -> None:
    window = filled(50, max_entries=20)
    counts = window.counts()
    assert (counts["results_read"], counts["results_held"], counts["results_dropped"]) == (
        50,
        20,
        30,
    )
    page = window.page(Filter(), limit=100)
    assert page.total == 20 and page.entries[0].seq == 50 and page.entries[-1].seq == 31
    assert window.get(10) is None and window.get(40) is not None

    by_bytes = filled(50, max_bytes=1000)  # 100 bytes an entry
    assert by_bytes.counts()["results_held"] == 10
    by_bytes.add("failed", {"file": "x", "reason": "r"}, 100)  # one budget: results go first
    assert (by_bytes.counts()["results_held"], by_bytes.counts()["failures_held"]) == (9, 1)
    huge = Window(max_bytes=10)
    huge.add("ok", envelope(1), 10_000)  # the newest stays, however large
    assert huge.counts()["results_held"] == 1


def test_failures_are_held_apart_from_results() -> None:
    window = Window(max_entries=10)
    window.add("failed", {"file": "a.h5", "reason": "hash_mismatch"}, 10)
    for i in range(100):  # a flood of results does not push the failure out
        window.add("ok", envelope(i), 10)
    assert [e.path for e in window.page(Filter(status="failed")).entries] == ["a.h5"]
    merged = window.page(Filter(), limit=11)
    assert merged.total == 11 and merged.entries[-1].path == "a.h5"
    assert not merged.more


def test_since_gives_newer_matching_entries_oldest_first() -> None:
    window = filled(10)
    newer, upto, matched = window.since(6, Filter(analysis="peaks"))
    assert [e.seq for e in newer] == [7, 9] and upto == 10 and matched == 2  # i=6, i=8
    assert window.since(10, Filter()) == ([], 10, 0)
    window.add("ok", envelope(99, "summary"), 1)
    assert window.since(upto, Filter(analysis="peaks")) == ([], 11, 0)  # looked at, not shown
    flood, _, matched = window.since(0, Filter(), limit=3)
    assert [e.seq for e in flood] == [9, 10, 11] and matched == 11  # the newest, and a count


def test_rows_carry_text_as_it_was_sent() -> None:
    window = Window()
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    entry = window.add("ok", envelope(1, analysis=evil, path=f"run/{evil}.h5"), 10)
    row = entry.row()
    assert row["analysis"] == evil and row["file"] == f"run/{evil}.h5"  # escaped by the page
    failure = window.add(
        "failed", {"file": "a", "reason": "bad input: Traceback\n  x\nValueError: y"}, 1
    )
    assert failure.row()["reason"] == "bad input: ValueError: y"  # the last line, named


def test_claim_checks_are_found_anywhere_in_the_result() -> None:
    record = {
        "result": {
            "datasets": [
                {"plot": {"path": "plots/a.png", "size": 3, "sha256": "ab"}},
                {"plot": None, "other": [{"path": "plots/b.png", "size": 4, "sha256": "cd"}]},
            ],
            "path": "not a claim check: no size or sha256",
        }
    }
    assert [c["path"] for c in claim_checks(record)] == ["plots/a.png", "plots/b.png"]


def test_a_dead_letter_message_becomes_a_failure_record() -> None:
    report = {"schema": 1, "kind": "file_failure", "file": "a.h5", "reason": "hash_mismatch"}
    assert failure_record(json.dumps(report).encode(), None) == report
    poison = failure_record(b"\x00\x01 not json", "cannot decode the chunk: short header")
    assert poison["reason"] == "cannot decode the chunk: short header"
    assert poison["kind"] == "poison_message"


def test_numeric_fields_and_their_values() -> None:
    window = filled(3)
    fields = numeric_fields(window.entries(Filter(analysis="peaks")))
    assert "result.peak.position" in fields and "result.peaks.0.height" in fields
    record = envelope(4)
    assert field_value(record, "result.peak.position") == 24.0
    assert field_value(record, "result.peaks.0.height") == 12.0
    assert field_value(record, "result.peaks.7.height") is None
    assert field_value(record, "result.missing") is None


# ---------------------------------------------------------------- attachments


def claim(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_an_attachment_inside_the_output_folder_is_served_checked(tmp_path: Path) -> None:
    data = b"\x89PNG fake image bytes"
    (tmp_path / "plots" / "run").mkdir(parents=True)
    (tmp_path / "plots" / "run" / "a.png").write_bytes(data)
    relative = read_attachment(tmp_path, claim("plots/run/a.png", data))
    assert relative.data == data and relative.media_type == "image/png" and relative.inline
    absolute = read_attachment(tmp_path, claim(str(tmp_path / "plots/run/a.png"), data))
    assert absolute.data == data  # what Analysis.attach writes: the absolute path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../secret.png", "parent folder"),
        ("plots/../../secret.png", "parent folder"),
        ("/etc/passwd", "absolute path outside the output folder"),
        ("link/secret.png", "leads outside the output folder"),
    ],
)
def test_an_attachment_outside_the_output_folder_is_refused(
    tmp_path: Path, path: str, why: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    (out / "link").symlink_to(tmp_path)  # a link inside that leads out
    with pytest.raises(AttachmentError, match=why) as caught:
        read_attachment(out, claim(path, b"secret"))
    assert caught.value.status == 403


def test_an_attachment_that_changed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"new bytes!")
    with pytest.raises(AttachmentError, match="SHA-256") as caught:
        read_attachment(tmp_path, claim("a.png", b"old bytes!"))
    assert caught.value.status == 409
    with pytest.raises(AttachmentError, match="bytes, the result names") as caught:
        read_attachment(tmp_path, claim("a.png", b"old"))
    with pytest.raises(AttachmentError, match="not in the output folder") as caught:
        read_attachment(tmp_path, claim("b.png", b"old"))
    assert caught.value.status == 404


def test_off_this_machine_the_page_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPRODUCER_WEB_TOKEN", raising=False)
    assert check_host("127.0.0.1", None) is None
    assert check_host("::1", None) is None
    assert check_host("127.0.0.1", "t0ken") == "t0ken"  # given: required there too
    with pytest.raises(Exception, match="needs a token: give --web_token or set"):
        check_host("0.0.0.0", None)
    monkeypatch.setenv("REPRODUCER_WEB_TOKEN", "from-env")
    assert check_host("0.0.0.0", None) == "from-env"


def test_a_fifo_named_by_a_claim_check_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "plot.png")  # opening it to read would block forever
    with pytest.raises(AttachmentError, match="not a regular file") as caught:
        read_attachment(tmp_path, claim("plot.png", b"x"))
    assert caught.value.status == 403


def test_a_secret_flag_is_masked_in_the_submit_log_line() -> None:
    from cluster.submit import masked  # noqa: PLC0415

    argv = ["--config", "c", "--web_token", "s3cret", "--web_token=other", "--web_port", "80"]
    shown = " ".join(masked(argv))
    assert "s3cret" not in shown and "other" not in shown
    assert shown == "--config c --web_token *** --web_token=*** --web_port 80"


class _Message:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._where, self._value = (partition, offset), value

    def topic(self) -> str:
        return "results"

    def partition(self) -> int:
        return self._where[0]

    def offset(self) -> int:
        return self._where[1]

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, T0


def test_a_topic_read_again_after_an_error_adds_nothing_twice() -> None:
    from reproducer.config import KafkaConfig  # noqa: PLC0415
    from reproducer.web.feed import Feed, FeedSettings  # noqa: PLC0415

    window = Window()
    feed = Feed(FeedSettings(KafkaConfig.for_bootstrap("unused:1"), "results"), window)
    messages = [_Message(p, o, json.dumps(envelope(o)).encode()) for p in (0, 1) for o in range(3)]
    for message in messages:
        feed._add(message, failures=False)
    for message in messages:  # read again from the start, as after a reading error
        feed._add(message, failures=False)
    assert window.counts()["results_read"] == 6
