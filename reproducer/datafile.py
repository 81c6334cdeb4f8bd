"""The reconstructed file handed to user code, and the result message it returns.

Names and behaviour follow OpenMSIStream's ``DownloadDataFile`` and ``ReproducerMessage``
so that a user's ``_get_processing_result_message_for_file(datafile, lock)`` ports by
changing imports only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reproducer.chunk import result_key
from reproducer.results import strict_json

if TYPE_CHECKING:  # numpy is imported where files are handled, not by a driver that starts
    import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "ByPosition",
    "DownloadDataFile",
    "FileMeta",
    "JSONMessage",
    "ReproducerMessage",
    "encode_message_value",
    "json_default",
]


class ByPosition:
    """Pickled by position: records of which many cross the object store per second (a
    slots dataclass's default pickling looks each field up by name every time)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        names: tuple[str, ...] = self.__slots__
        return type(self), tuple(getattr(self, name) for name in names)


@dataclass(frozen=True, slots=True)
class FileMeta(ByPosition):
    """What travels with a file from the ingest actor to an analysis actor (small)."""

    file_id: int
    subdir_str: str
    filename: str
    file_hash: bytes
    n_total_chunks: int
    size: int
    file_mtime: float
    path: str | None  # on the ingest actor's node, in disk and both modes
    node_id: str
    first_seen: float = 0.0  # wall clock, first chunk of the file
    identity: tuple[int, int, int] | None = None  # the file on disk: inode, size, mtime ns
    # memory mode, a larger file: where its bytes lie in shared memory on the ingest
    # actor's node (mapped there, asked of the ingest actor elsewhere); not ``path``: the
    # file is no output of the run, and is removed once the file is finished
    shared: str | None = None

    @property
    def relative_path(self) -> str:
        return f"{self.subdir_str}/{self.filename}" if self.subdir_str else self.filename


class DownloadDataFile:
    """A fully reconstructed data file.

    ``bytestring`` works in every mode; ``full_filepath`` in ``disk`` and ``both`` mode.
    ``buffer`` is a zero-copy, read-only view of the bytes, for code that can use one.

    Across nodes: the rebuilt file is read where it is when this node sees it there (the
    same machine, or a shared ``output_dir``); otherwise its bytes come from the object
    store (sent along in ``both`` mode, asked of the ingest actor by ``fetch`` in ``disk``
    mode) and ``full_filepath`` is a copy under ``local_dir``, removed by ``discard()``.
    """

    def __init__(
        self,
        meta: FileMeta,
        data: np.ndarray | None,
        *,
        local_dir: Path | None = None,
        fetch: Callable[[], np.ndarray] | None = None,
        trust_path: bool = True,
    ) -> None:
        self._meta = meta
        self._data = data
        self._bytes: bytes | None = None
        self._local_dir = local_dir
        self._fetch = fetch
        self._trust_path = trust_path  # False: a path on another node is never read here
        self._copy: Path | None = None

    @property
    def filename(self) -> str:
        return self._meta.filename

    @property
    def subdir_str(self) -> str:
        return self._meta.subdir_str

    @property
    def relative_filepath(self) -> Path:
        return Path(self._meta.relative_path)

    @property
    def file_hash(self) -> bytes:
        return self._meta.file_hash

    @property
    def n_total_chunks(self) -> int:
        return self._meta.n_total_chunks

    @property
    def size(self) -> int:
        return self._meta.size

    @property
    def buffer(self) -> memoryview:
        if self._data is None:
            self._data = self._map_shared()
        if self._data is None:
            return memoryview(self.bytestring)
        return memoryview(self._data.data).toreadonly()

    @property
    def bytestring(self) -> bytes:
        """The file's bytes (``file.read()`` in ``rb`` mode); decode it for text."""
        if self._bytes is None:
            if self._data is None:
                self._data = self._map_shared()
            if self._data is not None:
                self._bytes = self._data.tobytes()
            elif path := self._visible_path() or self._copy:
                self._bytes = path.read_bytes()
            elif self._fetch is not None:
                self._data = self._fetch()
                self._bytes = self._data.tobytes()
            else:
                raise RuntimeError(
                    f"{self._meta.relative_path}: the rebuilt file is not readable on this "
                    "node and its bytes were not sent"
                )
        return self._bytes

    @property
    def full_filepath(self) -> Path | None:
        """Where the file is on disk (``disk``/``both`` mode), on the node of the caller."""
        if self._meta.path is None:
            return None
        path = self._visible_path()
        if path is not None:
            return path
        if self._copy is None:
            if self._local_dir is None:
                return Path(self._meta.path)
            if self._data is None and self._fetch is not None:
                self._data = self._fetch()
            if self._data is None:
                return Path(self._meta.path)
            # Rebuilt on another node: write a local copy once, from the bytes sent along.
            local = self._local_dir / self._meta.relative_path
            local.parent.mkdir(parents=True, exist_ok=True)
            with local.open("wb") as handle:
                handle.write(memoryview(self._data.data))
            self._copy = local
        return self._copy

    def discard(self) -> None:
        """Remove the local copy, if one was made, and let go of a mapping of the file in
        shared memory (after the analysis returned)."""
        if self._meta.shared is not None:
            self._data = None
        if self._copy is not None:
            self._copy.unlink(missing_ok=True)
            self._copy = None

    def _map_shared(self) -> np.ndarray | None:
        """Memory mode, a larger file: the pages the ingest wrote, mapped read-only, if
        this node is the ingest's (else its bytes are fetched)."""
        if self._meta.shared is None or not self._trust_path:
            return None
        import mmap  # noqa: PLC0415

        import numpy as np  # noqa: PLC0415

        try:
            with Path(self._meta.shared).open("rb") as handle:
                st = os.fstat(handle.fileno())
                if (st.st_ino, st.st_size, st.st_mtime_ns) != self._meta.identity:
                    return None  # another node's file at that path, or none
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        return np.frombuffer(mapped, dtype=np.uint8)

    def _visible_path(self) -> Path | None:
        if self._meta.path is None or not self._trust_path:
            return None
        path = Path(self._meta.path)
        try:
            st = path.stat()
        except OSError:
            return None
        # The very file the ingest wrote (a newer version renamed over it, or another
        # node's stale file at the same path, is another inode or mtime): else the bytes
        # are fetched from the ingest actor.
        if self._meta.identity is not None:
            return path if (st.st_ino, st.st_size, st.st_mtime_ns) == self._meta.identity else None
        return path if st.st_size == self._meta.size else None

    # the reference's names for the same things
    @property
    def filepath(self) -> Path:
        return self.full_filepath or self.relative_filepath

    def __repr__(self) -> str:
        return f"DownloadDataFile({self._meta.relative_path!r}, {self._meta.size} bytes)"


class ReproducerMessage:
    """A message computed from a data file, to produce to the results topic.

    Subclasses define ``msg_value`` (a str, bytes or JSON-able object); the key defaults to
    the reference's ``<subdir_>_<filename>_chunk_processing_result``.
    """

    def __init__(self, datafile: DownloadDataFile, *args: Any, **kwargs: Any) -> None:
        self._datafile = datafile
        self._args, self._kwargs = args, kwargs

    @property
    def datafile(self) -> DownloadDataFile:
        return self._datafile

    @property
    def msg_key(self) -> str:
        return result_key(self._datafile.subdir_str, self._datafile.filename)

    @property
    def msg_value(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define msg_value")

    @property
    def callback_kwargs(self) -> dict[str, Any]:
        return {
            "filename": self._datafile.filename,
            "rel_filepath": str(self._datafile.relative_filepath),
            "n_total_chunks": self._datafile.n_total_chunks,
        }


class JSONMessage(ReproducerMessage):
    """A result whose value is the payload as JSON (the reference's MetadataJSON form),
    strict: numpy values become plain ones, a NaN or an infinity ``null`` (logged)."""

    def __init__(self, datafile: DownloadDataFile, payload: Any) -> None:
        super().__init__(datafile)
        self.payload = payload

    @property
    def msg_value(self) -> str:
        return _strict(self.payload, self.datafile)


def encode_message_value(value: Any) -> bytes:
    """Bytes for a result value: str as UTF-8, bytes as is, anything else as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return _strict(value, None).encode("utf-8")


def _strict(value: Any, datafile: DownloadDataFile | None) -> str:
    text, non_finite = strict_json(value, json_default)
    if non_finite:
        where = f"file={datafile.relative_filepath} " if datafile is not None else ""
        log.warning("%sNaN or infinite values sent as null: %s", where, ", ".join(non_finite))
    return text


def json_default(value: Any) -> Any:
    """For ``json.dumps(default=...)``: numpy scalars and arrays (common in analysis
    results) and bytes as plain JSON values."""
    numpy = sys.modules.get("numpy")  # not imported: the value is none of its types
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    if numpy is not None and isinstance(value, numpy.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")
