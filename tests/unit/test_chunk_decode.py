"""Decoding never trusts the wire: typed errors for every bad field, and a fuzz test."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproducer.chunk import DataFileChunk, decode_value, encode_value, make_chunk
from reproducer.errors import ChunkDecodeError, ChunkHashError, UnsafePathError

GOOD = make_chunk(b"0123456789abcdef", filename="data.bin", subdir_str="sub/deeper", file_mtime=1.5)


def fields(**changes: Any) -> list[Any]:
    """The wire fields of GOOD (the dataclass declares them in wire order), some changed."""
    return [changes.get(f.name, getattr(GOOD, f.name)) for f in dataclasses.fields(GOOD)]


def packed(values: Any) -> bytes:
    return msgpack.packb(values, use_bin_type=True)


def test_round_trip() -> None:
    assert decode_value(encode_value(GOOD)) == GOOD


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b"", "value"),
        (b"\xc1", "value"),
        (packed({"a": 1}), "value"),
        (packed(fields()[:8]), "value"),
        (packed([*fields(), 1]), "value"),
        (packed(7), "value"),
        (packed(fields()) + b"\x00", "value"),
        (packed(fields(filename=3)), "filename"),
        (packed(fields(filename=b"\xff\xfe")), "filename"),
        (packed(fields(file_hash=b"short")), "file_hash"),
        (packed(fields(chunk_hash=None)), "chunk_hash"),
        (packed(fields(chunk_offset_write=-1)), "chunk_offset_write"),
        (packed(fields(chunk_offset_write=1 << 41)), "chunk_offset_write"),
        (packed(fields(chunk_offset_write=1.0)), "chunk_offset_write"),
        (packed(fields(chunk_i=0)), "chunk_i"),
        (packed(fields(chunk_i=2, n_total_chunks=1)), "chunk_i"),
        (packed(fields(chunk_i=True)), "chunk_i"),
        (packed(fields(n_total_chunks=0)), "n_total_chunks"),
        (packed(fields(n_total_chunks=1 << 40)), "n_total_chunks"),
        (packed(fields(data=[1, 2])), "data"),
        (packed(fields(file_mtime="now")), "file_mtime"),
        (packed(fields(file_mtime=float("nan"))), "file_mtime"),
        (packed(fields(subdir_str=["a"])), "subdir_str"),
    ],
)
def test_bad_values_name_the_field(value: bytes, field: str) -> None:
    with pytest.raises(ChunkDecodeError) as caught:
        decode_value(value)
    assert caught.value.field == field
    assert field in str(caught.value)
    with pytest.raises(ChunkDecodeError) as shared:  # the ingest's way: the same error
        decode_value(value, zero_copy=True)
    assert str(shared.value) == str(caught.value)


@pytest.mark.parametrize("size", [0, 10, 300, 70_000, 1 << 19])  # bin 8, 16 and 32
@pytest.mark.parametrize("legacy", [False, True])
def test_zero_copy_data_is_a_view_of_the_message(size: int, legacy: bool) -> None:
    """The ingest's decoding keeps the chunk's bytes where the message has them: no copy of
    half a megabyte per chunk (and no fresh pages for it)."""
    chunk = make_chunk(bytes(range(256)) * (size // 256) + b"x" * (size % 256), filename="f.bin")
    value = encode_value(chunk, legacy=legacy)
    shared = decode_value(value, zero_copy=True)
    assert isinstance(shared.data, memoryview) and shared.data.obj is value
    assert shared.data.readonly
    assert shared == decode_value(value)
    assert bytes(shared.data) == chunk.data


def test_zero_copy_takes_names_longer_than_the_head() -> None:
    """Fields before ``data`` longer than the head read apart (16 KiB) are decoded the whole
    way, and judged as the copying decoder judges them."""
    chunk = make_chunk(b"abc", filename="f.bin", subdir_str="/".join(["d" * 200] * 100))
    with pytest.raises(UnsafePathError) as caught:
        decode_value(encode_value(chunk))
    with pytest.raises(UnsafePathError) as shared:
        decode_value(encode_value(chunk), zero_copy=True)
    assert str(shared.value) == str(caught.value)
    long_append = make_chunk(b"abc", filename="f.bin", filename_append="_" * 20_000)
    with pytest.raises(UnsafePathError):
        decode_value(encode_value(long_append), zero_copy=True)


def test_not_bytes() -> None:
    with pytest.raises(ChunkDecodeError, match="expected bytes"):
        decode_value(None)


def test_chunk_hash_mismatch() -> None:
    with pytest.raises(ChunkHashError, match="does not match"):
        decode_value(packed(fields(data=b"0123456789abcdeX")))
    # opting out of the check (e.g. when it was done upstream) decodes it
    assert decode_value(packed(fields(data=b"x")), verify_hash=False).data == b"x"


@pytest.mark.parametrize(
    "subdir",
    [
        "/etc",
        "../..",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\x00b",
        "x/\x1bz",
        "..",
        "LOGS",  # the reproducer's own logs and records live there
        "LOGS/deeper",
    ],
)
def test_unsafe_subdirectories(subdir: str) -> None:
    with pytest.raises(UnsafePathError) as caught:
        decode_value(packed(fields(subdir_str=subdir)))
    assert caught.value.field == "subdir_str"


def test_folders_named_like_logs_elsewhere_are_fine() -> None:
    for subdir in ("logs", "a/LOGS", "LOGS2"):
        assert decode_value(packed(fields(subdir_str=subdir))).subdir_str == subdir


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "nul\x00", "x" * 5000])
def test_unsafe_filenames(name: str) -> None:
    with pytest.raises(UnsafePathError):
        decode_value(packed(fields(filename=name)))


@pytest.mark.parametrize("append", ["/x", "\\x", "/../.."])
def test_unsafe_filename_append(append: str) -> None:
    with pytest.raises(UnsafePathError):
        decode_value(packed(fields(filename_append=append)))


@pytest.mark.parametrize(
    ("name", "subdir"), [("näme;odd .csv", "with space/ünï;code"), ("T:25C.csv", "c:data")]
)
def test_safe_unusual_names_pass(name: str, subdir: str) -> None:
    chunk = make_chunk(b"x", filename=name, subdir_str=subdir)
    assert decode_value(encode_value(chunk)) == chunk


def test_coordinates_are_attached() -> None:
    with pytest.raises(ChunkDecodeError) as caught:
        decode_value(b"\xc1")
    err = caught.value.at("chunks", 2, 1234)
    assert (err.topic, err.partition, err.offset) == ("chunks", 2, 1234)
    assert "chunks[2] offset=1234" in str(err)


def test_huge_declared_lengths_do_not_allocate() -> None:
    # array32 claiming 2**32-1 items, bin32 claiming 4 GiB: rejected from a few bytes
    for value in (b"\xdd\xff\xff\xff\xff", b"\x9a\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"):
        with pytest.raises(ChunkDecodeError):
            decode_value(value)


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(ChunkDecodeError):
        decode_value(b"\x91" * 100_000)


@st.composite
def mutated_values(draw: st.DrawFn) -> bytes:
    base = bytearray(encode_value(GOOD))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(base) - 1, 0)))
        if action == "flip" and base:
            base[pos] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del base[pos : pos + draw(st.integers(1, 40))]
        else:
            base[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(base)


def _check_decodes_or_refuses(value: bytes) -> None:
    try:
        chunk = decode_value(value)
    except ChunkDecodeError as exc:
        assert exc.field
        with pytest.raises(ChunkDecodeError) as shared:
            decode_value(value, zero_copy=True)
        assert str(shared.value) == str(exc)
        return
    assert decode_value(value, zero_copy=True) == chunk
    assert isinstance(chunk, DataFileChunk)
    assert hashlib.sha512(chunk.data).digest() == chunk.chunk_hash
    assert 1 <= chunk.chunk_i <= chunk.n_total_chunks


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(value: bytes) -> None:
    _check_decodes_or_refuses(value)


@settings(max_examples=600, deadline=None)
@given(mutated_values())
def test_fuzz_mutated_messages(value: bytes) -> None:
    _check_decodes_or_refuses(value)


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=80),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(_leaf, st.lists(_leaf, max_size=3)), min_size=8, max_size=11))
def test_fuzz_structured_fields(values: list[Any]) -> None:
    _check_decodes_or_refuses(packed(values))
