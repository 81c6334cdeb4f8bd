"""The wire format against real messages made by openmsistream 1.8.8."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import defaultdict
from pathlib import Path

import pytest

from reproducer.chunk import DataFileChunk, decode_value, encode_value
from reproducer.reassembly import ChunkStatus, CompletedFile, Reassembler
from reproducer.upload import UploadSource, chunks_of, find_files

VECTORS = Path(__file__).parents[1] / "data" / "openmsistream-1.8.8.jsonl"
LINES = [json.loads(line) for line in VECTORS.read_text(encoding="utf-8").splitlines()]


def test_every_line_is_used() -> None:
    assert len(LINES) == 42
    assert {v["chunk_size"] for v in LINES} == {16, 1024}


@pytest.mark.parametrize("vector", LINES, ids=lambda v: v["key"] + f"@{v['chunk_size']}")
def test_decode_both_forms_and_reencode(vector: dict) -> None:
    value = bytes.fromhex(vector["value_hex"])
    legacy = bytes.fromhex(vector["value9_hex"])
    chunk = decode_value(value)
    old = decode_value(legacy)
    for decoded in (chunk, old):
        assert decoded.filename == vector["filename"]
        assert decoded.subdir_str == vector["subdir_str"]
        assert decoded.chunk_i == vector["chunk_i"]
        assert decoded.n_total_chunks == vector["n_total_chunks"]
        assert decoded.chunk_offset_write == vector["chunk_offset_write"]
        assert decoded.file_hash.hex() == vector["file_sha512"]
        assert hashlib.sha512(decoded.data).digest() == decoded.chunk_hash
    assert decode_value(value, zero_copy=True) == chunk
    assert decode_value(legacy, zero_copy=True) == old
    assert chunk.file_mtime == vector["file_mtime"]
    assert old.file_mtime == 0.0
    assert old.data == chunk.data
    assert encode_value(chunk) == value
    assert encode_value(old, legacy=True) == legacy
    assert chunk.key == vector["key"]
    assert chunk.key.encode("utf-8").hex() == vector["key_hex"]
    assert chunk.result_key == vector["result_key"]


def _groups() -> dict[tuple[str, int], list[dict]]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for vector in LINES:
        groups[(vector["file"], vector["chunk_size"])].append(vector)
    return groups


@pytest.mark.parametrize("mode", ["memory", "disk", "both"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rebuild_shuffled_with_duplicates(mode: str, seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    for (file, chunk_size), vectors in _groups().items():
        messages = [
            bytes.fromhex(v["value_hex" if rng.random() < 0.5 else "value9_hex"]) for v in vectors
        ]
        messages += rng.choices(messages, k=len(messages) // 2 + 1)  # duplicates
        rng.shuffle(messages)
        out = tmp_path / f"{chunk_size}-{seed}"
        reassembler = Reassembler(mode, None if mode == "memory" else out)  # type: ignore[arg-type]
        completed = []
        for message in messages:
            result = reassembler.add(decode_value(message))
            assert result.status in (
                ChunkStatus.STORED,
                ChunkStatus.DUPLICATE,
                ChunkStatus.COMPLETING,
            )
            completed += result.finished
        completed += reassembler.flush()
        assert len(completed) == 1, file
        done = completed[0]
        assert isinstance(done, CompletedFile)
        assert done.relative_path.as_posix() == file
        assert hashlib.sha512(done.read_bytes()).hexdigest() == vectors[0]["file_sha512"]
        assert done.result_key == vectors[0]["result_key"]
        assert done.size == vectors[0]["file_size"]
        if mode != "memory":
            assert done.path == out / file
            assert hashlib.sha512(done.path.read_bytes()).hexdigest() == vectors[0]["file_sha512"]
        assert len(reassembler) == 0


def _write_vector_tree(root: Path) -> None:
    """Rebuild the source tree the vectors were made from, mtimes pinned as there."""
    for (file, _), vectors in _groups().items():
        path = root / file
        path.parent.mkdir(parents=True, exist_ok=True)
        ordered = sorted(vectors, key=lambda v: v["chunk_i"])
        path.write_bytes(
            b"".join(decode_value(bytes.fromhex(v["value_hex"])).data for v in ordered)
        )
        os.utime(path, (1700000000.0, 1700000000.0))


@pytest.mark.parametrize("chunk_size", [16, 1024])
def test_uploader_sends_the_reference_messages(chunk_size: int, tmp_path: Path) -> None:
    _write_vector_tree(tmp_path)
    expected = {
        v["key"]: bytes.fromhex(v["value_hex"]) for v in LINES if v["chunk_size"] == chunk_size
    }
    sent: dict[str, bytes] = {}
    sources = find_files([tmp_path]).sources
    assert sorted(s.relative for s in sources) == sorted({v["file"] for v in LINES})
    for source in sources:
        for chunk in chunks_of(source, chunk_size):
            sent[chunk.key] = encode_value(chunk)
    assert sent == expected


def test_single_file_is_uploaded_with_empty_subdir(tmp_path: Path) -> None:
    _write_vector_tree(tmp_path)
    (source,) = find_files([tmp_path / "sub" / "example.txt"]).sources
    assert source.subdir_str == ""
    chunks = list(chunks_of(source, 16))
    assert [c.key for c in chunks] == [
        "_example.txt_chunk_1_of_3",
        "_example.txt_chunk_2_of_3",
        "_example.txt_chunk_3_of_3",
    ]


def test_empty_file_is_one_empty_chunk(tmp_path: Path) -> None:
    (tmp_path / "empty.dat").write_bytes(b"")
    (chunk,) = chunks_of(UploadSource(tmp_path / "empty.dat", tmp_path))
    empty = hashlib.sha512(b"").digest()
    assert (chunk.n_total_chunks, chunk.chunk_offset_write, chunk.data) == (1, 0, b"")
    assert chunk.file_hash == chunk.chunk_hash == empty
    assert isinstance(decode_value(encode_value(chunk)), DataFileChunk)
    reassembler = Reassembler()
    assert reassembler.add(decode_value(encode_value(chunk))).status is ChunkStatus.COMPLETING
    (done,) = reassembler.flush()
    assert isinstance(done, CompletedFile) and done.read_bytes() == b"" and done.size == 0
