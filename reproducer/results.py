"""Results as readers see them: strict JSON out, and the results topic read back as rows.

Every JSON value the pipeline produces (result envelopes, dead-letter reports, heartbeats)
is strict JSON: a NaN or an infinity from user code becomes ``null`` and its place is
named (a JSON Pointer) in the envelope's ``non_finite`` list, because a bare ``NaN`` is
rejected by jq, Java and JavaScript readers. ``docs/results.md`` describes the envelope;
``docs/schemas/`` has its JSON Schema.

Reading back, from Python::

    from reproducer import read_results
    results = read_results("local_broker", "results", analysis="spectrum-peaks")
    for record in results:          # plain dicts: the envelope plus where it was read
        print(record["file"]["relative_path"], record["result"])
    frame = results.to_pandas()     # one flat row per result (needs pandas)

or ``reproducer results --config C --topic_name T [--format csv] [--output F]``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from reproducer._storage import write_atomically
from reproducer.config import KafkaConfig, load_config
from reproducer.errors import ReproducerError, TopicUnavailable
from reproducer.kafka_log import logged
from reproducer.topics import partitions_of

__all__ = [
    "SCHEMAS",
    "SCHEMA_VERSION",
    "ResultSet",
    "as_record",
    "flat_row",
    "messages",
    "parse_time",
    "read_results",
    "schema",
    "strict_json",
    "write_rows",
]

# The envelope's layout version: a reader can tell what it reads. Adding a key keeps it;
# renaming or removing one (or changing its meaning) bumps it.
SCHEMA_VERSION = 1
SCHEMAS = ("result", "dead_letter", "heartbeat")


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a ``result`` envelope, a ``dead_letter`` report or a
    ``heartbeat`` (files under ``reproducer/schemas/``, for any JSON Schema validator)."""
    if name not in SCHEMAS:
        raise ValueError(f"no schema {name!r}: one of {', '.join(SCHEMAS)}")
    text = (Path(__file__).parent / "schemas" / f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def strict_json(
    value: Any, default: Callable[[Any], Any] | None = None, *, note: str | None = None
) -> tuple[str, list[str]]:
    """``value`` as strict JSON text, and the JSON Pointers of the non-finite numbers that
    became ``null`` (empty when there were none: then it costs one ``json.dumps``). With
    ``note``, a mapping ``value`` also lists them in the text, under that key."""
    try:
        return json.dumps(value, default=default, allow_nan=False), []
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
    found: list[str] = []
    clean = _finite(value, "", found, default)
    if note is not None and isinstance(clean, dict):
        clean[note] = found
    return json.dumps(clean, default=default, allow_nan=False), found


def _finite(value: Any, where: str, found: list[str], default: Callable[[Any], Any] | None) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        found.append(where)
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v, f"{where}/{_escape(k)}", found, default) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, f"{where}/{i}", found, default) for i, v in enumerate(value)]
    if isinstance(value, str | int | bool) or value is None or default is None:
        return value
    try:  # a numpy value or another type the default turns into JSON
        converted = default(value)
    except TypeError:
        return value  # json.dumps raises the same error, with its own message
    return _finite(converted, where, found, default)


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (``2026-12-01``, ``2026-12-01T10:30``, with or without a zone;
    without one it is local time), as an aware datetime."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReproducerError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T10:30:00+00:00)"
        ) from exc
    return when if when.tzinfo is not None else when.astimezone()


class ResultSet(list[dict[str, Any]]):
    """Records read from a results topic: each the envelope (or, for a result that is not
    one, its ``value`` as text) plus ``topic``, ``partition``, ``offset``, ``timestamp``
    and ``key``."""

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per record (see :func:`flat_row`)."""
        return [flat_row(record) for record in self]

    def to_pandas(self) -> Any:
        """The flat rows as a ``pandas.DataFrame`` (``pip install 'ray-reproducer[results]'``)."""
        try:
            import pandas as pd  # noqa: PLC0415
        except ImportError as exc:
            raise ReproducerError(
                "to_pandas needs pandas: pip install 'ray-reproducer[results]'"
            ) from exc
        frame = pd.DataFrame(self.rows())
        for column in ("started", "produced_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame


_FIRST_COLUMNS = (
    "file",
    "analysis",
    "version",
    "status",
    "started",
    "seconds",
    "node",
    "host",
    "size",
    "sha512",
    "topic",
    "partition",
    "offset",
    "produced_at",
    "key",
)


def flat_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A table row: the file, the analysis and its version, ``status`` (``ok``, or
    ``raw`` for a result that is not an envelope), when and where it ran, where it was
    read, then the result's own figures: nested keys joined with dots
    (``result.peaks.0.height`` stays out: a list is kept whole, as JSON text, in
    ``result.peaks``)."""
    envelope = "analysis" in record and "result" in record
    file = record.get("file") if isinstance(record.get("file"), Mapping) else {}
    timing = record.get("timing") if isinstance(record.get("timing"), Mapping) else {}
    started = timing.get("started") if isinstance(timing, Mapping) else None
    row: dict[str, Any] = {
        "file": file.get("relative_path") if isinstance(file, Mapping) else None,
        "analysis": record.get("analysis"),
        "version": record.get("version"),
        "status": "ok" if envelope else "raw",
        "started": _iso(started) if isinstance(started, int | float) else None,
        "seconds": timing.get("seconds") if isinstance(timing, Mapping) else None,
        "node": record.get("node"),
        "host": record.get("host"),
        "size": file.get("size") if isinstance(file, Mapping) else None,
        "sha512": file.get("sha512") if isinstance(file, Mapping) else None,
        "topic": record.get("topic"),
        "partition": record.get("partition"),
        "offset": record.get("offset"),
        "produced_at": _iso(record["timestamp"] / 1000) if record.get("timestamp") else None,
        "key": record.get("key"),
    }
    if envelope:
        _flatten(record["result"], "result", row)
    else:
        row["value"] = record.get("value")
    return row


def _flatten(value: Any, prefix: str, row: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", row)
    elif isinstance(value, list):
        row[prefix] = json.dumps(value)
    else:
        row[prefix] = value


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def read_results(
    config: KafkaConfig | str | os.PathLike[str],
    topic_name: str,
    *,
    analysis: str | None = None,
    since: dt.datetime | str | None = None,
    follow: bool = False,
    timeout: float = 30.0,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> ResultSet:
    """Every result in ``topic_name`` (all partitions, committed transactions only), in
    partition order, until the end of each partition as it was when reading began.

    ``config``: a :class:`KafkaConfig` or an INI file (path or name, as ``--config``).
    ``analysis``: only that analysis's results. ``since``: only results produced at or
    after that time (``datetime`` or ISO text). ``follow``: keep reading new results until
    interrupted (each is handed to ``on_record`` as it arrives; nothing is kept then).
    ``timeout``: seconds to wait for the broker before giving up with an error.
    """
    if not isinstance(config, KafkaConfig):
        config = load_config(config)
    records = ResultSet()
    keep = records.append if on_record is None else on_record
    for message in messages(config, topic_name, since=since, follow=follow, timeout=timeout):
        record = as_record(message)
        if analysis is None or record.get("analysis") == analysis:
            keep(record)
    return records


def messages(
    config: KafkaConfig,
    topic: str,
    *,
    since: dt.datetime | str | None = None,
    follow: bool = False,
    timeout: float = 30.0,
    stop: threading.Event | None = None,
    on_assigned: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """The messages of ``topic`` as :func:`read_results` reads them (every partition,
    committed transactions only, from the beginning or ``since``), as confluent-kafka
    ``Message`` objects; ``follow`` keeps reading until ``stop`` is set (checked at least
    once a second). ``on_assigned`` is called once every partition is assigned."""
    from confluent_kafka import (  # noqa: PLC0415
        OFFSET_BEGINNING,
        OFFSET_END,
        Consumer,
        KafkaError,
        TopicPartition,
    )

    settings = config.consumer_settings(
        f"ray-reproducer-reader-{uuid.uuid4()}",
        **{
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        },
    )
    consumer = Consumer(logged(settings))
    try:
        try:
            partitions = partitions_of(consumer, topic, timeout=timeout)
        except TopicUnavailable as exc:
            raise ReproducerError(f"cannot read results: {exc}") from exc
        start = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        if since is not None:
            when = parse_time(since) if isinstance(since, str) else since
            ms = int(when.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, ms) for p in partitions], timeout=timeout
            )
            start = [
                TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in found
            ]
        consumer.assign(start)
        if on_assigned is not None:
            on_assigned()
        open_partitions = set(partitions)
        while (follow or open_partitions) and not (stop is not None and stop.is_set()):
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition())
                    continue
                if error.fatal() or not error.retriable():
                    raise ReproducerError(f"cannot read results from {topic}: {error.str()}")
                continue
            yield message
    finally:
        consumer.close()


def as_record(message: Any) -> dict[str, Any]:
    """A message as a record of :class:`ResultSet`: the envelope (or ``{"value": text}``
    for a value that is not one) plus where it was read."""
    value, key = message.value(), message.key()
    text = value.decode("utf-8", errors="replace") if value is not None else None
    try:
        parsed = json.loads(text) if text is not None else None
    except ValueError:
        parsed = None
    record: dict[str, Any] = (
        dict(parsed) if isinstance(parsed, dict) and "analysis" in parsed else {"value": text}
    )
    _, timestamp = message.timestamp()
    record.update(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp=timestamp if timestamp > 0 else None,
        key=key.decode("utf-8", errors="replace") if key is not None else None,
    )
    return record


def write_rows(records: Iterable[Mapping[str, Any]], fmt: str, out: IO[str] | Path) -> int:
    """Write records as ``jsonl`` (each record whole, one a line), ``csv`` (flat rows,
    the union of their columns) or ``parquet`` (flat rows; needs pyarrow, and a file).
    A file is written whole or not at all. Returns how many were written."""
    if fmt not in ("jsonl", "csv", "parquet"):
        raise ReproducerError(f"unknown format {fmt!r}: jsonl, csv or parquet")
    if fmt == "jsonl":
        lines = [strict_json(record)[0] + "\n" for record in records]
        _write_text(out, "".join(lines))
        return len(lines)
    rows = [flat_row(record) for record in records]
    columns = _columns(rows)
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _write_text(out, text.getvalue())
        return len(rows)
    if not isinstance(out, Path):
        raise ReproducerError("parquet is written to a file: give --output FILE.parquet")
    try:
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError as exc:
        raise ReproducerError(
            "parquet needs pyarrow: pip install 'ray-reproducer[results]'"
        ) from exc
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    data = io.BytesIO()
    pq.write_table(table, data)
    write_atomically(out, data.getvalue())
    return len(rows)


def _write_text(out: IO[str] | Path, text: str) -> None:
    if isinstance(out, Path):
        write_atomically(out, text.encode("utf-8"))
    else:
        out.write(text)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen = dict.fromkeys(_FIRST_COLUMNS)
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)
