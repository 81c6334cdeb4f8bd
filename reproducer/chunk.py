"""The chunk message wire format of OpenMSIStream, byte for byte.

A data file travels as chunk messages. The key is a UTF-8 string
``"{subdir with '/' -> '_'}_{filename}_chunk_{i}_of_{n}"``; the value is a msgpack array:

====  ====================  ===================================================
 #    field                 type on the wire
====  ====================  ===================================================
 0    filename              str (bin from legacy producers)
 1    file_hash             bin, the raw 64-byte SHA-512 of the whole file
 2    chunk_hash            bin, the raw 64-byte SHA-512 of ``data``
 3    chunk_offset_write    int, where ``data`` goes in the rebuilt file
 4    chunk_i               int, 1-based
 5    n_total_chunks        int
 6    subdir_str            str (or bin), '/'-separated, relative to the upload root
 7    filename_append       str (or bin), usually empty
 8    data                  bin
 9    file_mtime            float, 0.0 for none; absent in the legacy 9-field form
====  ====================  ===================================================

Keys are ambiguous (``a_b`` + ``c`` vs ``a`` + ``b_c``), so nothing here parses a key: the
value carries everything. :func:`decode_value` never trusts the wire: every way a value
can be wrong raises a :class:`~reproducer.errors.ChunkDecodeError` naming the field.

>>> chunk = make_chunk(b"abc", filename="top.txt")
>>> chunk.key
'_top.txt_chunk_1_of_1'
>>> decode_value(encode_value(chunk)) == chunk
True
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

import msgpack

from reproducer.errors import ChunkDecodeError, ChunkHashError, UnsafePathError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_FILE_SIZE",
    "DIGEST_SIZE",
    "DataFileChunk",
    "decode_value",
    "encode_value",
    "make_chunk",
    "message_prepend",
    "output_filename",
    "result_key",
    "validate_relative_path",
]

DEFAULT_CHUNK_SIZE: Final = 524_288
"""The reference's default chunk size (512 KiB)."""

DIGEST_SIZE: Final = 64
"""Size of a raw SHA-512 digest."""

DEFAULT_MAX_FILE_SIZE: Final = 1 << 40
"""Largest file (1 TiB) a chunk may claim to belong to; larger offsets are rejected."""

LOGS_DIR: Final = "LOGS"
"""The folder under the output folder where the reproducer keeps its logs and records
(the reference's layout): no chunk may write there."""

_MAX_CHUNKS: Final = 1 << 32
_MAX_NAME_BYTES: Final = 4096
_FIELDS: Final = (
    "filename",
    "file_hash",
    "chunk_hash",
    "chunk_offset_write",
    "chunk_i",
    "n_total_chunks",
    "subdir_str",
    "filename_append",
    "data",
    "file_mtime",
)


@dataclass(frozen=True, slots=True)
class DataFileChunk:
    """One decoded chunk of a data file (the reference's ``DataFileChunk`` value).

    ``data`` is any bytes-like object; equality compares its bytes.
    """

    filename: str
    file_hash: bytes
    chunk_hash: bytes
    chunk_offset_write: int
    chunk_i: int
    n_total_chunks: int
    subdir_str: str
    filename_append: str
    data: bytes | memoryview  # a view of the message, decoded by the ingest
    file_mtime: float = 0.0

    @property
    def relative_path(self) -> PurePosixPath:
        """Path of the rebuilt file relative to the output folder."""
        return PurePosixPath(self.subdir_str, output_filename(self.filename, self.filename_append))

    @property
    def key(self) -> str:
        """The message key the reference producer gives this chunk."""
        prepend = message_prepend(self.subdir_str, self.filename)
        return f"{prepend}_{self.chunk_i}_of_{self.n_total_chunks}"

    @property
    def result_key(self) -> str:
        """The key the reference reproducer gives this file's processing result."""
        return result_key(self.subdir_str, self.filename)


def message_prepend(subdir_str: str, filename: str) -> str:
    """``"{subdir with '/' -> '_'}_{filename}_chunk"``, shared by chunk and result keys."""
    return f"{subdir_str.replace('/', '_')}_{filename}_chunk"


def result_key(subdir_str: str, filename: str) -> str:
    """Key of a processing-result message: ``<prepend>_processing_result``."""
    return f"{message_prepend(subdir_str, filename)}_processing_result"


def output_filename(filename: str, filename_append: str) -> str:
    """Name of the rebuilt file: ``filename_append`` goes after the first dot-separated part.

    The reference turns ``a.tar.gz`` + ``_x`` into ``a_x.tar.gz``. For a name without a dot
    it would add a trailing ``.``; here the append simply goes at the end.
    """
    if not filename_append:
        return filename
    stem, dot, rest = filename.partition(".")
    return f"{stem}{filename_append}{dot}{rest}"


def make_chunk(
    data: bytes,
    *,
    filename: str,
    subdir_str: str = "",
    file_hash: bytes | None = None,
    chunk_offset_write: int = 0,
    chunk_i: int = 1,
    n_total_chunks: int = 1,
    filename_append: str = "",
    file_mtime: float = 0.0,
) -> DataFileChunk:
    """Build a chunk, hashing ``data`` (and, for a one-chunk file, the file) for you."""
    chunk_hash = hashlib.sha512(data).digest()
    if file_hash is None:
        if n_total_chunks != 1:
            raise ValueError("file_hash is required for a file of more than one chunk")
        file_hash = chunk_hash
    return DataFileChunk(
        filename=filename,
        file_hash=file_hash,
        chunk_hash=chunk_hash,
        chunk_offset_write=chunk_offset_write,
        chunk_i=chunk_i,
        n_total_chunks=n_total_chunks,
        subdir_str=subdir_str,
        filename_append=filename_append,
        data=data,
        file_mtime=file_mtime,
    )


def encode_value(chunk: DataFileChunk, *, legacy: bool = False) -> bytes:
    """The msgpack value the reference producer sends for ``chunk``.

    ``legacy=True`` gives what older producers sent: 9 fields (no ``file_mtime``), with the
    string fields packed as bin.
    """

    def text(value: str) -> str | bytes:
        return value.encode("utf-8") if legacy else value

    fields: list[Any] = [
        text(chunk.filename),
        chunk.file_hash,
        chunk.chunk_hash,
        chunk.chunk_offset_write,
        chunk.chunk_i,
        chunk.n_total_chunks,
        text(chunk.subdir_str),
        text(chunk.filename_append),
        chunk.data,
    ]
    if not legacy:
        fields.append(float(chunk.file_mtime))
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def decode_value(
    value: bytes | None,
    *,
    verify_hash: bool = True,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    zero_copy: bool = False,
) -> DataFileChunk:
    """Decode and validate a chunk message value.

    Raises :class:`ChunkDecodeError` (or its subclasses :class:`ChunkHashError` and
    :class:`UnsafePathError`) naming the field that is wrong. Work and memory are bounded by
    the size of ``value``: msgpack's own limits default to the buffer length, and the
    array may hold at most 10 items with no maps or extension types.

    ``zero_copy``: the chunk's ``data`` is a read-only ``memoryview`` of ``value`` (which it
    keeps alive) rather than a copy of its bytes; the same values are accepted and refused.
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ChunkDecodeError("value", f"expected bytes, got {type(value).__name__}")
    fields = _fields_sharing_data(value) if zero_copy and isinstance(value, bytes) else None
    if fields is None:
        try:
            fields = msgpack.unpackb(value, **_UNPACKING)
        except Exception as exc:
            raise ChunkDecodeError(
                "value", f"not a msgpack value ({type(exc).__name__}: {exc})"
            ) from exc
    if not isinstance(fields, list):
        raise ChunkDecodeError("value", f"expected a msgpack array, got {type(fields).__name__}")
    if len(fields) not in (9, 10):
        raise ChunkDecodeError("value", f"expected 9 or 10 fields, got {len(fields)}")

    filename = _text(fields[0], "filename")
    file_hash = _digest(fields[1], "file_hash")
    chunk_hash = _digest(fields[2], "chunk_hash")
    offset = _integer(fields[3], "chunk_offset_write", 0, max_file_size)
    n_total = _integer(fields[5], "n_total_chunks", 1, _MAX_CHUNKS)
    chunk_i = _integer(fields[4], "chunk_i", 1, n_total)
    subdir_str = _text(fields[6], "subdir_str")
    filename_append = _text(fields[7], "filename_append")
    data = fields[8]
    if not isinstance(data, bytes | memoryview):
        raise ChunkDecodeError("data", f"expected bin, got {type(data).__name__}")
    if offset + len(data) > max_file_size:
        raise ChunkDecodeError(
            "chunk_offset_write",
            f"chunk ends at byte {offset + len(data)}, past the {max_file_size}-byte file limit",
        )
    mtime = 0.0
    if len(fields) == 10:
        raw_mtime = fields[9]
        if isinstance(raw_mtime, bool) or not isinstance(raw_mtime, int | float):
            raise ChunkDecodeError(
                "file_mtime", f"expected a number, got {type(raw_mtime).__name__}"
            )
        mtime = float(raw_mtime)
        if not math.isfinite(mtime):
            raise ChunkDecodeError("file_mtime", f"not a finite number: {mtime}")

    validate_relative_path(subdir_str, "subdir_str", allow_empty=True)
    if subdir_str.split("/")[0] == LOGS_DIR:
        raise UnsafePathError(
            "subdir_str",
            f"is under {LOGS_DIR}/, where the reproducer keeps its logs and records: "
            f"{subdir_str!r}",
        )
    validate_relative_path(filename, "filename", allow_empty=False, single=True)
    validate_relative_path(
        output_filename(filename, filename_append),
        "filename_append",
        allow_empty=False,
        single=True,
    )
    if verify_hash and hashlib.sha512(data).digest() != chunk_hash:
        raise ChunkHashError(
            "chunk_hash",
            f"SHA-512 of the {len(data)} data bytes of chunk {chunk_i}/{n_total} of "
            f"{subdir_str + '/' if subdir_str else ''}{filename} does not match",
        )
    return DataFileChunk(
        filename=filename,
        file_hash=file_hash,
        chunk_hash=chunk_hash,
        chunk_offset_write=offset,
        chunk_i=chunk_i,
        n_total_chunks=n_total,
        subdir_str=subdir_str,
        filename_append=filename_append,
        data=data,
        file_mtime=mtime,
    )


_UNPACKING: Final[dict[str, Any]] = {  # a chunk's array: 10 items at most, no maps or exts
    "raw": True,
    "use_list": True,
    "max_array_len": len(_FIELDS),
    "max_map_len": 0,
    "max_ext_len": 0,
}
_HEAD_BYTES: Final = 16 << 10  # the fields before ``data`` fit in this, but for odd names
_BIN_HEADERS: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4}  # bin 8/16/32: bytes of the length


def _fields_sharing_data(value: bytes) -> list[Any] | None:
    """The array's fields, its ``data`` (the 9th) a view of ``value``: the fields before it
    are unpacked from the head of the value, its bin header is read here, and what follows
    it is unpacked apart. ``None`` if the value is not plainly such an array (a field too
    long for the head, a ``data`` that is not bin, bytes left over...): the caller's own
    unpacking then accepts or refuses it, with its error."""
    try:
        head = msgpack.Unpacker(max_buffer_size=_HEAD_BYTES, **_UNPACKING)
        head.feed(memoryview(value)[:_HEAD_BYTES])
        n_fields = head.read_array_header()
        if n_fields not in (9, 10):
            return None
        fields = [head.unpack() for _ in range(8)]
        at = head.tell()
        width = _BIN_HEADERS.get(value[at])
        if width is None:
            return None
        start = at + 1 + width
        end = start + int.from_bytes(value[at + 1 : start], "big")
        if end > len(value):
            return None
        fields.append(memoryview(value)[start:end].toreadonly())
        if n_fields == 10:
            fields.append(msgpack.unpackb(value[end:], **{**_UNPACKING, "max_array_len": 0}))
        elif end != len(value):
            return None
    except Exception:  # noqa: BLE001 - the whole value is unpacked again, and judged
        return None
    return fields


def validate_relative_path(
    text: str, field: str = "path", *, allow_empty: bool, single: bool = False
) -> None:
    """Raise :class:`UnsafePathError` unless ``text`` is a safe '/'-separated relative path.

    Refused: absolute paths, ``.`` and ``..`` parts, empty parts, NUL and other control
    characters, and backslashes (a separator on Windows). ``single`` also refuses any ``/``
    (for a file name). Paths are only ever joined POSIX-style, so ``c:data`` is a plain name.
    """
    if not text:
        if allow_empty:
            return
        raise UnsafePathError(field, "must not be empty")
    if len(text.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise UnsafePathError(field, f"longer than {_MAX_NAME_BYTES} bytes")
    bad = next((c for c in text if ord(c) < 0x20 or c in "\\\x7f"), None)
    if bad is not None:
        raise UnsafePathError(field, f"contains the forbidden character {bad!r} in {text!r}")
    if text.startswith("/"):
        raise UnsafePathError(field, f"is absolute: {text!r}")
    parts = text.split("/")
    if single and len(parts) > 1:
        raise UnsafePathError(field, f"must be a single name, got {text!r}")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(field, f"has a {part or 'empty'!r} component: {text!r}")


def _text(raw: object, field: str) -> str:
    if not isinstance(raw, bytes):
        raise ChunkDecodeError(field, f"expected str or bin, got {type(raw).__name__}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChunkDecodeError(
            field, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc


def _digest(raw: object, field: str) -> bytes:
    if not isinstance(raw, bytes):
        raise ChunkDecodeError(field, f"expected bin, got {type(raw).__name__}")
    if len(raw) != DIGEST_SIZE:
        raise ChunkDecodeError(
            field, f"expected a {DIGEST_SIZE}-byte SHA-512 digest, got {len(raw)}"
        )
    return raw


def _integer(raw: object, field: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ChunkDecodeError(field, f"expected an integer, got {type(raw).__name__}")
    if not low <= raw <= high:
        raise ChunkDecodeError(field, f"{raw} is out of range [{low}, {high}]")
    return raw
