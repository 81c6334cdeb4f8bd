"""Strict JSON out, and results as rows (the pure parts of reproducer.results)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas
import pytest

from reproducer.datafile import DownloadDataFile, FileMeta, JSONMessage, json_default
from reproducer.errors import ReproducerError
from reproducer.results import ResultSet, flat_row, parse_time, strict_json, write_rows


def test_finite_values_are_plain_json() -> None:
    text, non_finite = strict_json({"a": 1.5, "b": [1, 2], "c": None})
    assert json.loads(text) == {"a": 1.5, "b": [1, 2], "c": None} and non_finite == []


def test_nan_and_infinity_become_null_and_are_named() -> None:
    value = {
        "mean": float("nan"),
        "peaks": [{"height": 3.0}, {"height": float("inf")}],
        "a/b": -math.inf,
        "array": np.array([1.0, np.nan]),
        "scalar": np.float32("nan"),
    }
    text, non_finite = strict_json(value, json_default)
    parsed = json.loads(text)  # strict: Python's parser would take NaN; these are null
    assert "NaN" not in text and "Infinity" not in text
    assert parsed["mean"] is None and parsed["peaks"][1]["height"] is None
    assert parsed["array"] == [1.0, None] and parsed["scalar"] is None
    assert sorted(non_finite) == sorted(
        ["/mean", "/peaks/1/height", "/a~1b", "/array/1", "/scalar"]
    )


def test_the_non_finite_pointers_can_be_noted_in_the_text() -> None:
    text, non_finite = strict_json({"r": [1.0, math.nan]}, note="non_finite")
    assert json.loads(text) == {"r": [1.0, None], "non_finite": ["/r/1"]}
    assert non_finite == ["/r/1"]
    clean, _ = strict_json({"r": 1.0}, note="non_finite")
    assert json.loads(clean) == {"r": 1.0}  # no key when there is nothing to note


def test_what_json_cannot_hold_still_raises() -> None:
    with pytest.raises(TypeError, match="object"):
        strict_json({"x": float("nan"), "y": object()}, json_default)


def test_json_message_takes_numpy_values_and_sends_no_nan() -> None:
    meta = FileMeta(1, "run", "a.csv", b"\0" * 64, 1, 3, 0.0, None, "")
    message = JSONMessage(
        DownloadDataFile(meta, np.frombuffer(b"abc", np.uint8)),
        {"n": np.int64(3), "mean": np.float64("nan")},
    )
    assert json.loads(message.msg_value) == {"n": 3, "mean": None}


def _envelope(**result: object) -> dict[str, object]:
    return {
        "schema": 1,
        "analysis": "spectrum-peaks",
        "version": "2",
        "file": {"relative_path": "run/a.h5", "sha512": "ab" * 64, "size": 10, "n_chunks": 1},
        "timing": {"started": 1_700_000_000.25, "seconds": 0.5},
        "node": "n1",
        "host": "h1",
        "result": result,
        "topic": "results",
        "partition": 0,
        "offset": 7,
        "timestamp": 1_700_000_001_000,
        "key": "run_a.h5_chunk_processing_result_spectrum-peaks",
    }


def test_a_flat_row_names_the_file_the_analysis_and_its_figures() -> None:
    row = flat_row(_envelope(n=3, stats={"mean": 1.5, "max": 9}, peaks=[{"index": 4}]))
    assert row["file"] == "run/a.h5" and row["analysis"] == "spectrum-peaks"
    assert row["version"] == "2" and row["status"] == "ok" and row["node"] == "n1"
    assert row["started"] == "2023-11-14T22:13:20.250+00:00"
    assert row["produced_at"] == "2023-11-14T22:13:21.000+00:00"
    assert row["result.n"] == 3 and row["result.stats.mean"] == 1.5
    assert json.loads(row["result.peaks"]) == [{"index": 4}]
    raw = flat_row({"value": "size=3", "topic": "t", "partition": 1, "offset": 2, "key": "k"})
    assert raw["status"] == "raw" and raw["value"] == "size=3" and raw["file"] is None


def test_rows_written_as_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    records = ResultSet([_envelope(n=1), _envelope(n=2, extra="x")])
    out = io.StringIO()
    assert write_rows(records, "csv", out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["result.n"] for r in rows] == ["1", "2"]
    assert [r["result.extra"] for r in rows] == ["", "x"]  # the union of the columns
    assert list(rows[0])[:4] == ["file", "analysis", "version", "status"]

    jsonl = tmp_path / "r.jsonl"
    write_rows(records, "jsonl", jsonl)
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == list(records)

    parquet = tmp_path / "r.parquet"
    assert write_rows(records, "parquet", parquet) == 2
    frame = pandas.read_parquet(parquet)
    assert list(frame["result.n"]) == [1, 2] and list(frame["file"]) == ["run/a.h5"] * 2
    with pytest.raises(ReproducerError, match="--output"):
        write_rows(records, "parquet", io.StringIO())

    # a file is written whole or not at all: one that cannot be put in place (a folder is
    # there) leaves what was there, and no temporary file beside it
    blocked = tmp_path / "blocked.csv"
    (blocked / "kept").mkdir(parents=True)
    with pytest.raises(OSError):
        write_rows(records, "csv", blocked)
    assert blocked.is_dir() and [p.name for p in blocked.iterdir()] == ["kept"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.csv", "r.jsonl", "r.parquet"]


def test_to_pandas_has_times_as_times() -> None:
    frame = ResultSet([_envelope(n=1)]).to_pandas()
    assert str(frame["started"].dt.tz) == "UTC" and frame["result.n"].tolist() == [1]


def test_times_are_parsed_or_refused_clearly() -> None:
    assert parse_time("2026-12-01T10:30:00Z").isoformat() == "2026-12-01T10:30:00+00:00"
    assert parse_time("2026-12-01").tzinfo is not None  # local time, made explicit
    with pytest.raises(ReproducerError, match="ISO 8601"):
        parse_time("yesterday")
