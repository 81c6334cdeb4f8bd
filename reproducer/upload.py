"""Chunking files and producing them to a topic, as OpenMSIStream's uploader does.

For the same tree and chunk size the messages are identical to the reference's, with one
deliberate difference: a 0-byte file is sent as one chunk with empty data (the reference
sends nothing), which reference consumers also rebuild.

Files are read streaming, twice: once for the whole-file hash (which every chunk carries),
once to send. Memory stays bounded by the producer queue, whatever the file size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from reproducer.chunk import (
    DEFAULT_CHUNK_SIZE,
    LOGS_DIR,
    DataFileChunk,
    encode_value,
    validate_relative_path,
)
from reproducer.config import KafkaConfig
from reproducer.delivery import broker_refusal
from reproducer.errors import ChunkDecodeError, ReproducerError, UploadError
from reproducer.kafka_log import logged

__all__ = [
    "DEFAULT_UPLOAD_REGEX",
    "FileSelection",
    "UploadReport",
    "UploadSource",
    "chunks_of",
    "find_files",
    "upload",
]

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_REGEX = r"^(?!.*\.log$).*$"
"""Everything but ``*.log`` files; hidden files and a top-level ``LOGS`` folder are always skipped."""

_READ_BLOCK = 4 << 20
_QUEUE_KBYTES = 64 * 1024  # librdkafka's default is 1 GiB; this bounds the uploader's memory


@dataclass(frozen=True, slots=True)
class UploadSource:
    """A file to upload and the root its subdirectory is taken relative to."""

    path: Path
    root: Path

    @property
    def subdir_str(self) -> str:
        rel = self.path.parent.relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    @property
    def relative(self) -> str:
        return self.path.relative_to(self.root).as_posix()


@dataclass
class UploadReport:
    """What an upload did."""

    n_files: int = 0
    n_chunks: int = 0
    n_bytes: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.n_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FileSelection:
    """The files to upload, and those that cannot be uploaded (relative path -> why)."""

    sources: list[UploadSource] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sources)


def find_files(paths: Iterable[Path], upload_regex: str = DEFAULT_UPLOAD_REGEX) -> FileSelection:
    """Regular files under ``paths`` (files or directory trees), in a stable order.

    A directory is the root of its files' subdirectories; a file given directly has its
    own folder as root. ``upload_regex`` is matched (``re.match``) on the relative path;
    hidden files and a top-level ``LOGS`` folder are skipped. Files a consumer could not
    rebuild (dangling links, FIFOs, names that are not UTF-8 or not portable) are
    ``refused``, not sent. Two files with the same relative path are an error.
    """
    pattern = re.compile(upload_regex)
    selection = FileSelection()
    for given in paths:
        path = Path(given)
        if path.is_file():
            _consider(UploadSource(path, path.parent), selection)
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".") and not (here == path and d == LOGS_DIR)
                )
                for name in sorted(filenames):
                    source = UploadSource(here / name, path)
                    if not name.startswith(".") and pattern.match(source.relative):
                        _consider(source, selection)
        else:
            raise ReproducerError(f"no such file or directory: {path}")
    seen: dict[str, Path] = {}
    for source in selection.sources:
        other = seen.setdefault(source.relative, source.path)
        if other != source.path:
            raise ReproducerError(
                f"{other} and {source.path} would both arrive as {source.relative!r}; "
                "upload them separately or from their common folder"
            )
    return selection


def _consider(source: UploadSource, selection: FileSelection) -> None:
    relative = source.relative
    try:
        relative.encode("utf-8")
        validate_relative_path(source.subdir_str, "subdirectory", allow_empty=True)
        validate_relative_path(source.path.name, "file name", allow_empty=False, single=True)
        mode = source.path.stat().st_mode
    except UnicodeEncodeError:
        selection.refused[relative.encode("utf-8", "replace").decode()] = "name is not UTF-8"
        return
    except (ChunkDecodeError, OSError) as exc:
        selection.refused[relative] = str(exc)
        return
    if not stat.S_ISREG(mode):
        selection.refused[relative] = "not a regular file"
        return
    selection.sources.append(source)


def chunks_of(
    source: UploadSource, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[DataFileChunk]:
    """The chunk messages of one file, read streaming (two passes, bounded memory)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    before = source.path.stat()
    file_hash = hashlib.sha512()
    with source.path.open("rb") as fh:
        while block := fh.read(_READ_BLOCK):
            file_hash.update(block)
    digest = file_hash.digest()
    n_total = max(1, -(-before.st_size // chunk_size))
    subdir = source.subdir_str
    with source.path.open("rb") as fh:
        for chunk_i in range(1, n_total + 1):
            offset = (chunk_i - 1) * chunk_size
            data = fh.read(chunk_size)
            yield DataFileChunk(
                filename=source.path.name,
                file_hash=digest,
                chunk_hash=hashlib.sha512(data).digest(),
                chunk_offset_write=offset,
                chunk_i=chunk_i,
                n_total_chunks=n_total,
                subdir_str=subdir,
                filename_append="",
                data=data,
                file_mtime=before.st_mtime,
            )
    after = source.path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise ReproducerError(f"{source.path} changed while it was being uploaded")


class _Progress:
    """Counts acknowledged chunks per file; draws a status line on a terminal."""

    def __init__(self, total_bytes: int, stream: TextIO | None) -> None:
        self.total_bytes = total_bytes
        self.acked_bytes = 0
        self.done_files = 0
        self.acked: dict[str, int] = {}  # chunks delivered per file not yet done
        self.queued: dict[str, int] = {}  # chunks produced, once the file is fully queued
        self.failed: dict[str, str] = {}
        self._stream = stream
        self._start = time.monotonic()
        self._drawn = 0.0

    def delivered(self, relative: str, size: int, error: object) -> None:
        if error is not None:
            self.failed.setdefault(relative, str(error))
        else:
            self.acked_bytes += size
        self.acked[relative] = self.acked.get(relative, 0) + 1
        self._check(relative)

    def fully_queued(self, relative: str, n_chunks: int) -> None:
        self.queued[relative] = n_chunks
        self._check(relative)

    def pending(self) -> list[str]:
        return [r for r in self.queued if self.acked.get(r, 0) < self.queued[r]]

    def _check(self, relative: str) -> None:
        if relative in self.queued and self.acked.get(relative, 0) >= self.queued[relative]:
            self.done_files += 1
            del self.queued[relative]
            self.acked.pop(relative, None)

    def draw(self, n_files: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._stream is None or (not final and now - self._drawn < 0.5):
            return
        self._drawn = now
        seconds = max(now - self._start, 1e-9)
        self._stream.write(
            f"\r{self.done_files}/{n_files} files  {self.acked_bytes / 1e6:,.1f}/"
            f"{self.total_bytes / 1e6:,.1f} MB  {self.acked_bytes / 1e6 / seconds:,.1f} MB/s"
            + ("\n" if final else "")
        )
        self._stream.flush()


def upload(
    paths: Sequence[Path],
    config: KafkaConfig,
    topic: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    upload_regex: str = DEFAULT_UPLOAD_REGEX,
    progress: TextIO | None = None,
    flush_timeout: float = 300.0,
    producer_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> UploadReport:
    """Chunk and produce every file under ``paths``; wait until each chunk is acknowledged.

    Raises :class:`UploadError` naming the files of which any chunk was not acknowledged.
    ``progress`` is a stream for a status line (the CLI passes stderr on a terminal).
    """
    from confluent_kafka import Producer  # noqa: PLC0415 - keep the pure modules importable alone

    selection = find_files(paths, upload_regex)
    sources = selection.sources
    settings = config.producer_settings()
    settings.setdefault("queue.buffering.max.kbytes", _QUEUE_KBYTES)
    # data + two digests + key + names (each up to 4 KiB) + msgpack framing
    if chunk_size + 20_000 > int(settings.get("message.max.bytes", 1_000_000)):
        raise ReproducerError(
            f"chunk_size {chunk_size} does not fit in message.max.bytes "
            f"{settings.get('message.max.bytes', 1_000_000)}; raise it in [producer]"
        )
    # a refused password or certificate at once; an unreachable broker fails the chunks
    if producer_factory is None and (
        refused := broker_refusal(settings, "[producer]", 5.0, unreachable=False)
    ):
        raise ReproducerError(refused)
    producer = producer_factory(settings) if producer_factory else Producer(logged(settings))
    state = _Progress(sum(s.path.stat().st_size for s in sources), progress)
    state.failed.update(selection.refused)
    report = UploadReport(n_files=len(sources))
    start = time.monotonic()
    for source in sources:
        relative = source.relative
        queued = 0
        try:
            for chunk in chunks_of(source, chunk_size):
                _produce(producer, topic, chunk, relative, state)
                queued += 1
                report.n_bytes += len(chunk.data)
                state.draw(len(sources))
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
            state.failed[relative] = f"{type(exc).__name__}: {exc}"
            log.error("upload of %s stopped: %s", source.path, exc)
        state.fully_queued(relative, queued)
        report.n_chunks += queued
    left = producer.flush(flush_timeout)
    state.draw(len(sources), final=True)
    report.seconds = time.monotonic() - start
    for relative in state.pending():
        state.failed.setdefault(relative, f"{left} message(s) still unacknowledged after flush")
    report.failed = dict(state.failed)
    if report.failed:
        raise UploadError(report.failed)
    log.info(
        "uploaded %d files (%d chunks, %d bytes) to %s in %.2f s",
        report.n_files,
        report.n_chunks,
        report.n_bytes,
        topic,
        report.seconds,
    )
    return report


def _produce(
    producer: Any, topic: str, chunk: DataFileChunk, relative: str, state: _Progress
) -> None:
    size = len(chunk.data)

    def on_delivery(err: object, _msg: object) -> None:
        state.delivered(relative, size, err)

    value = encode_value(chunk)
    while True:
        try:
            producer.produce(
                topic, key=chunk.key.encode("utf-8"), value=value, on_delivery=on_delivery
            )
            break
        except BufferError:
            producer.poll(0.05)  # queue full: serve delivery reports until there is room
    producer.poll(0)


def progress_stream() -> TextIO | None:
    """stderr if it is a terminal, else ``None`` (no status line in logs and CI)."""
    return sys.stderr if sys.stderr.isatty() else None
