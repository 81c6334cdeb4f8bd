"""The reassembly core: modes, generations, failures as outcomes, disk safety, accounting."""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproducer._partial import MAX_REOPEN, Generation
from reproducer._storage import HEAP_LIMIT, MemoryStore
from reproducer.chunk import DataFileChunk, make_chunk
from reproducer.reassembly import (
    AddResult,
    ChunkStatus,
    CompletedFile,
    FailureReason,
    FileFailure,
    Outcome,
    Reassembler,
)


def split(
    data: bytes, size: int, *, filename: str = "f.bin", subdir: str = "", mtime: float = 0.0
) -> list[DataFileChunk]:
    file_hash = hashlib.sha512(data).digest()
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [
        make_chunk(
            piece,
            filename=filename,
            subdir_str=subdir,
            file_hash=file_hash,
            chunk_offset_write=i * size,
            chunk_i=i + 1,
            n_total_chunks=len(pieces),
            file_mtime=mtime,
        )
        for i, piece in enumerate(pieces)
    ]


def make(mode: str, tmp_path: Path, **kwargs: object) -> Reassembler:
    return Reassembler(mode, None if mode == "memory" else tmp_path / "out", **kwargs)  # type: ignore[arg-type]


MODES = ["memory", "disk", "both"]


def feed(
    reassembler: Reassembler, chunks: list[DataFileChunk]
) -> tuple[list[AddResult], list[Outcome]]:
    """Add every chunk; return each add's result and every outcome, after a flush."""
    results = [reassembler.add(c) for c in chunks]
    return results, [o for r in results for o in r.finished] + reassembler.flush()


def completed(outcomes: list[Outcome]) -> CompletedFile:
    (done,) = outcomes
    assert isinstance(done, CompletedFile), done
    return done


def failed(outcomes: list[Outcome]) -> FileFailure:
    (failure,) = outcomes
    assert isinstance(failure, FileFailure), failure
    return failure


@pytest.mark.parametrize("mode", MODES)
def test_out_of_order_with_duplicates(mode: str, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(100_003)
    chunks = split(data, 4096, subdir="a/b")
    order = chunks + chunks[::7]
    random.Random(2).shuffle(order)
    reassembler = make(mode, tmp_path)
    results, outcomes = feed(reassembler, order)
    statuses = [r.status for r in results]
    assert statuses.count(ChunkStatus.COMPLETING) == 1
    assert completed(outcomes).read_bytes() == data
    assert statuses.count(ChunkStatus.STORED) == len(chunks) - 1
    done = [r for r in statuses if r is ChunkStatus.DUPLICATE]
    assert len(done) == len(order) - len(chunks)


@pytest.mark.parametrize("mode", MODES)
def test_completed_file_content_and_location(mode: str, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    reassembler = make(mode, tmp_path)
    _, outcomes = feed(reassembler, split(data, 8192, subdir="x/y", filename="z.h5"))
    done = completed(outcomes)
    assert done.read_bytes() == data
    assert done.size == len(data) and done.n_chunks == 7
    assert done.result_key == "x_y_z.h5_chunk_processing_result"
    if mode == "disk":
        assert done.buffer is None
    else:
        assert done.buffer is not None and bytes(done.buffer) == data
    if mode == "memory":
        assert done.path is None
        assert not (tmp_path / "out").exists()
    else:
        assert done.path == tmp_path / "out" / "x" / "y" / "z.h5"
        assert done.path.read_bytes() == data
        leftovers = [p.name for p in done.path.parent.iterdir() if p.name != "z.h5"]
        assert leftovers == []


def test_new_generation_starting_chunk_is_kept() -> None:
    """Reference defect 3: the chunk starting a new generation was dropped."""
    old = split(b"old content " * 100, 256, mtime=1.0)
    new = split(b"new content!" * 100, 256, mtime=2.0)
    reassembler = Reassembler()
    assert reassembler.add(old[0]).status is ChunkStatus.STORED
    first_new = reassembler.add(new[0])
    assert first_new.status is ChunkStatus.STORED
    assert failed(list(first_new.finished)).reason is FailureReason.SUPERSEDED
    # stale chunks of the old generation are skipped and own no offsets
    stale = reassembler.add(old[1])
    assert (stale.status, stale.file_id) == (ChunkStatus.STALE, None)
    _, outcomes = feed(reassembler, new[1:])
    assert completed(outcomes).read_bytes() == b"new content!" * 100


@pytest.mark.parametrize(("short_mtime", "longer_mtime"), [(0.0, 0.0), (3.0, 3.0), (5.0, 0.0)])
def test_more_chunks_is_a_new_generation_when_mtimes_do_not_tell(
    short_mtime: float, longer_mtime: float
) -> None:
    """The reference policy, when the mtimes are equal or one is missing (0)."""
    short = split(b"a" * 100, 50, mtime=short_mtime)
    longer = split(b"b" * 150, 50, mtime=longer_mtime)
    reassembler = Reassembler()
    reassembler.add(short[0])
    assert failed(list(reassembler.add(longer[0]).finished)).reason is FailureReason.SUPERSEDED
    stale = reassembler.add(short[1])
    assert stale.status is ChunkStatus.STALE and "2 chunks < 3" in stale.reason


def test_a_newer_mtime_wins_over_more_chunks() -> None:
    short = split(b"a" * 100, 50, mtime=5.0)
    longer = split(b"b" * 150, 50, mtime=1.0)
    reassembler = Reassembler()
    reassembler.add(short[0])
    stale = reassembler.add(longer[0])
    assert (stale.status, stale.finished) == (ChunkStatus.STALE, ())
    assert "mtime 1.0 < 5.0" in stale.reason
    _, outcomes = feed(reassembler, short[1:])
    assert completed(outcomes).read_bytes() == b"a" * 100


def test_late_chunks_of_finished_or_older_files() -> None:
    v1 = split(b"1" * 100, 50, mtime=1.0)
    v2 = split(b"2" * 100, 50, mtime=2.0)
    reassembler = Reassembler()
    feed(reassembler, v2)
    assert reassembler.add(v2[0]).status is ChunkStatus.DUPLICATE
    assert reassembler.add(v1[0]).status is ChunkStatus.STALE
    assert len(reassembler) == 0


@pytest.mark.parametrize("mtime", [0.0, 7.0])
def test_new_content_at_a_finished_path_is_a_new_version(mtime: float) -> None:
    """A file modified and sent again with the same chunk count and mtime (legacy producers
    always send 0; `cp -p` keeps it) is rebuilt, not dropped as stale; late copies of
    either version are duplicates."""
    before = split(b"1" * 100, 50, mtime=mtime)
    after = split(b"2" * 100, 50, mtime=mtime)
    reassembler = Reassembler()
    feed(reassembler, before)
    results, outcomes = feed(reassembler, after)
    assert results[0].status is ChunkStatus.STORED
    assert completed(outcomes).read_bytes() == b"2" * 100
    assert reassembler.add(before[1]).status is ChunkStatus.DUPLICATE
    assert reassembler.add(after[0]).status is ChunkStatus.DUPLICATE


@pytest.mark.parametrize("mode", MODES)
def test_hash_mismatch_is_an_outcome(mode: str, tmp_path: Path) -> None:
    chunks = split(b"payload" * 300, 512)
    wrong = [
        DataFileChunk(
            **{**{f: getattr(c, f) for f in c.__dataclass_fields__}, "file_hash": b"\x01" * 64}
        )
        for c in chunks
    ]
    reassembler = make(mode, tmp_path)
    results, outcomes = feed(reassembler, wrong)
    assert results[-1].status is ChunkStatus.COMPLETING and results[-1].file_id is not None
    failure = failed(outcomes)
    assert failure.reason is FailureReason.HASH_MISMATCH and failure.file_id == results[-1].file_id
    assert reassembler.held_bytes == 0 and len(reassembler) == 0 and reassembler.n_completing == 0
    if mode != "memory":
        assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    # the loop goes on: the next file still works
    _, outcomes = feed(reassembler, [make_chunk(b"ok", filename="next")])
    assert completed(outcomes).read_bytes() == b"ok"


@pytest.mark.parametrize("mode", MODES)
def test_a_corrupt_chunk_then_a_good_copy_of_it_completes_the_file(
    mode: str, tmp_path: Path
) -> None:
    """As the reference does (it checks every chunk on arrival): the corrupt copy is
    dropped once the file hash fails, and the good copy sent after it completes the file."""
    data = os.urandom(5000)
    chunks = split(data, 1024)
    corrupt = [
        dataclasses.replace(c, data=bytes(len(c.data))) if c.chunk_i == 3 else c for c in chunks
    ]
    reassembler = make(mode, tmp_path)
    _, outcomes = feed(reassembler, corrupt)
    assert outcomes == [] and len(reassembler) == 1  # waiting for a good chunk 3
    _, outcomes = feed(reassembler, [chunks[2]])
    done = completed(outcomes)
    assert done.read_bytes() == data
    assert reassembler.n_reopened == 1


def test_a_file_whose_corrupt_chunk_never_comes_again_fails_as_corrupt() -> None:
    now = [0.0]
    chunks = split(os.urandom(3000), 1024)
    corrupt = [
        dataclasses.replace(c, data=bytes(len(c.data))) if c.chunk_i == 2 else c for c in chunks
    ]
    reassembler = Reassembler(clock=lambda: now[0])
    assert feed(reassembler, corrupt)[1] == []
    now[0] = 100.0
    (failure,) = reassembler.expire(idle_seconds=60)
    assert failure.reason is FailureReason.HASH_MISMATCH
    assert "2 (offset 1024)" in failure.detail and "no good copy" in failure.detail


@pytest.mark.parametrize("mode", MODES)
def test_hash_mismatch_names_the_corrupt_chunks(mode: str, tmp_path: Path) -> None:
    """Chunks are not hashed on arrival by default: the file hash covers every byte, and
    the chunk hashes say which chunks were corrupt when it fails."""
    chunks = split(bytes(range(256)) * 40, 1024)
    bad = {2, 5}
    corrupt = [
        dataclasses.replace(c, data=bytes(len(c.data))) if c.chunk_i in bad else c for c in chunks
    ]
    reassembler = make(mode, tmp_path)
    _, outcomes = feed(reassembler, corrupt)
    # the corrupt chunks are dropped and awaited again, MAX_REOPEN times: then it fails
    for _ in range(MAX_REOPEN):
        assert outcomes == [] and len(reassembler) == 1
        _, outcomes = feed(reassembler, [c for c in corrupt if c.chunk_i in bad])
    failure = failed(outcomes)
    assert failure.reason is FailureReason.HASH_MISMATCH
    assert "corrupt chunk(s), not matching their chunk hash: 2 (offset 1024), 5 (offset 4096)" in (
        failure.detail
    )
    # a wrong file hash with intact chunks is told apart
    wrong = [dataclasses.replace(c, file_hash=b"\x01" * 64) for c in chunks]
    _, outcomes = feed(make(mode, tmp_path), wrong)
    assert "every chunk matches its chunk hash" in failed(outcomes).detail


def test_overlapping_chunks_are_inconsistent() -> None:
    data = b"0123456789" * 10
    file_hash = hashlib.sha512(data).digest()
    first = make_chunk(data[:60], filename="o", file_hash=file_hash, chunk_i=1, n_total_chunks=2)
    second = make_chunk(
        data[50:],
        filename="o",
        file_hash=file_hash,
        chunk_offset_write=50,
        chunk_i=2,
        n_total_chunks=2,
    )
    _, outcomes = feed(Reassembler(), [first, second])
    assert failed(outcomes).reason is FailureReason.INCONSISTENT


def test_gap_is_inconsistent() -> None:
    file_hash = hashlib.sha512(b"ab").digest()
    chunks = [
        make_chunk(b"a", filename="g", file_hash=file_hash, chunk_i=1, n_total_chunks=2),
        make_chunk(
            b"b",
            filename="g",
            file_hash=file_hash,
            chunk_offset_write=5,
            chunk_i=2,
            n_total_chunks=2,
        ),
    ]
    _, outcomes = feed(Reassembler(), chunks)
    assert failed(outcomes).reason is FailureReason.INCONSISTENT


def test_conflicting_chunk_count_is_rejected_not_fatal() -> None:
    chunks = split(b"x" * 100, 10)
    reassembler = Reassembler()
    reassembler.add(chunks[0])
    odd = make_chunk(
        b"x" * 10,
        filename="f.bin",
        file_hash=chunks[0].file_hash,
        chunk_i=2,
        n_total_chunks=11,
        chunk_offset_write=10,
    )
    result = reassembler.add(odd)
    assert result.status is ChunkStatus.REJECTED and "n_total_chunks" in result.reason
    _, outcomes = feed(reassembler, chunks[1:])
    assert completed(outcomes).read_bytes() == b"x" * 100


def test_disk_mode_replaces_an_older_longer_file(tmp_path: Path) -> None:
    """Reference defect 5: a shorter new file left the old tail behind."""
    target = tmp_path / "out" / "s" / "f.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"OLD" * 10_000)
    reassembler = make("disk", tmp_path)
    _, outcomes = feed(reassembler, split(b"new", 2, subdir="s"))
    assert completed(outcomes).path == target
    assert target.read_bytes() == b"new"


def test_disk_mode_never_follows_a_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    reassembler = Reassembler("disk", out)
    for subdir in ("link", "link/a/b"):
        result = reassembler.add(make_chunk(b"evil", filename="x", subdir_str=subdir))
        assert result.status is ChunkStatus.REJECTED
        assert "outside the output folder" in result.reason
    assert list(outside.iterdir()) == []  # not even a folder was made there


def test_memory_accounting_and_expiry() -> None:
    now = [100.0]
    reassembler = Reassembler(clock=lambda: now[0])
    a = split(b"a" * 1000, 100, filename="a")
    b = split(b"b" * 1000, 100, filename="b")
    for c in a[:3]:
        reassembler.add(c)
    now[0] = 150.0
    for c in b[:5]:
        reassembler.add(c)
    assert reassembler.held_bytes == reassembler.partial_bytes == 800  # what arrived
    infos = {i.relative_path.name: i for i in reassembler.partial_files()}
    assert infos["a"].n_chunks_received == 3 and infos["b"].n_chunks_received == 5
    now[0] = 170.0
    expired = reassembler.expire(idle_seconds=60)
    assert [f.relative_path.name for f in expired] == ["a"]
    assert expired[0].reason is FailureReason.EXPIRED
    assert reassembler.held_bytes == 500
    # a failed file is forgotten: its chunks (a late one, or the whole file sent again)
    # start afresh, and a stray one expires in turn
    late = reassembler.add(a[5])
    assert late.status is ChunkStatus.STORED and late.file_id != expired[0].file_id
    assert reassembler.held_bytes == 500 + 1000  # one chunk: it counts the size it claims
    now[0] = 300.0
    assert {f.relative_path.name for f in reassembler.expire(idle_seconds=60)} == {"a", "b"}
    _, outcomes = feed(reassembler, a)
    assert completed(outcomes).read_bytes() == b"a" * 1000


def test_files_that_claim_more_than_they_send_count_what_they_take() -> None:
    """One chunk each, claiming a small file (8 chunks of 16 KiB): until a second chunk
    comes, the budget counts the 128 KiB each claims, not the 16 KiB that arrived, so that
    a flood of such claims is given up (see the next tests) as when a buffer of the claimed
    size was taken for each."""
    reassembler = Reassembler(worker_thread=False)
    n_files, chunk, claimed = 20, 16 << 10, 8
    for i in range(n_files):
        reassembler.add(
            make_chunk(
                os.urandom(chunk),
                filename=f"liar{i}",
                file_hash=bytes(64),
                chunk_i=1,
                n_total_chunks=claimed,
            )
        )
    assert reassembler.partial_bytes == n_files * chunk
    assert reassembler.held_bytes == n_files * claimed * chunk


def test_a_larger_claim_costs_only_what_arrives() -> None:
    """200 one-chunk files that claim 512 chunks of 16 KiB (8 MiB each): their buffers
    are maps whose pages cost memory once written, so the process grows by about the
    3 MiB that arrived, not 1.6 GB, and the budget counts those bytes."""
    reassembler = Reassembler(worker_thread=False)
    n_files, chunk = 200, 16 << 10
    before = _rss_kib()
    for i in range(n_files):
        reassembler.add(
            make_chunk(
                os.urandom(chunk),
                filename=f"liar{i}",
                file_hash=bytes(64),
                chunk_i=1,
                n_total_chunks=512,
            )
        )
    assert reassembler.held_bytes == reassembler.partial_bytes == n_files * chunk
    assert _rss_kib() - before < 64 * 1024, "the claimed sizes were allocated"


def test_over_the_budget_the_files_that_took_most_beyond_their_bytes_are_given_up() -> None:
    """Chunks that claim small files they never send: over the budget, those files go
    (ABANDONED, saying why) until memory is back within it. A good file half arrived
    stays, whatever its size: its memory is what arrived (it was given up once, when a
    2 MiB file's buffer was allocated whole and counted as 2 MiB from its first chunk; see
    also test_good_small_files_half_arrived_are_not_given_up_over_the_budget)."""
    reassembler = Reassembler(worker_thread=False)
    chunk = 16 << 10
    for size, name in ((2 << 20, "two_mib"), (20 << 20, "big")):
        for c in split(os.urandom(size), chunk, filename=name)[: size // chunk // 2]:
            reassembler.add(c)
    liars = {f"liar{i}" for i in range(40)}
    for name in sorted(liars):
        reassembler.add(
            make_chunk(os.urandom(chunk), filename=name, file_hash=bytes(64), n_total_chunks=8)
        )
    assert reassembler.held_bytes == (1 << 20) + (10 << 20) + len(liars) * 8 * chunk
    budget = 12 << 20
    failures = reassembler.shed(budget)
    assert reassembler.held_bytes <= budget
    assert failures and {f.relative_path.name for f in failures} <= liars
    assert all(f.reason is FailureReason.ABANDONED and "budget" in f.detail for f in failures)
    kept = {info.relative_path.name for info in reassembler.partial_files()}
    assert {"two_mib", "big"} <= kept
    assert reassembler.shed(budget) == []


def test_disk_mode_holds_no_memory(tmp_path: Path) -> None:
    reassembler = make("disk", tmp_path)
    for c in split(b"z" * 10_000, 1000)[:5]:
        reassembler.add(c)
    assert reassembler.held_bytes == 0 and reassembler.partial_bytes == 5000
    failures = reassembler.close()
    assert [f.reason for f in failures] == [FailureReason.ABANDONED]  # type: ignore[union-attr]
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_offset_past_the_file_limit_is_rejected() -> None:
    reassembler = Reassembler(max_file_size=1000)
    chunk = make_chunk(
        b"x" * 10,
        filename="f",
        chunk_offset_write=995,
        chunk_i=2,
        n_total_chunks=2,
        file_hash=b"\0" * 64,
    )
    assert reassembler.add(chunk).status is ChunkStatus.REJECTED


def _rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_absurd_chunk_count_does_not_allocate() -> None:
    # claims 2**32 chunks of 64 KiB (256 TiB): only what is written may cost memory
    chunk = make_chunk(
        b"y" * 65536, filename="huge", chunk_i=1, n_total_chunks=1 << 32, file_hash=b"\0" * 64
    )
    reassembler = Reassembler(worker_thread=False)
    before = _rss_kib()
    assert reassembler.add(chunk).status is ChunkStatus.STORED
    assert _rss_kib() - before < 16 * 1024
    assert reassembler.held_bytes == 65536


def test_abandon_frees_a_partial_file(tmp_path: Path) -> None:
    reassembler = make("both", tmp_path)
    first = reassembler.add(split(b"m" * 5000, 1000, subdir="x")[0])
    assert first.file_id is not None
    failure = reassembler.abandon(first.file_id, "memory budget")
    assert failure is not None and failure.reason is FailureReason.ABANDONED
    assert failure.detail == "memory budget" and failure.n_chunks_received == 1
    assert reassembler.abandon(first.file_id) is None
    assert reassembler.held_bytes == 0 and len(reassembler) == 0
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_a_failed_file_sent_again_is_rebuilt() -> None:
    data = b"retry me " * 200
    chunks = split(data, 300)
    corrupt = [
        dataclasses.replace(
            chunks[0], data=b"X" * 300, chunk_hash=hashlib.sha512(b"X" * 300).digest()
        )
    ]
    reassembler = Reassembler()
    _, outcomes = feed(reassembler, corrupt + chunks[1:])
    assert failed(outcomes).reason is FailureReason.HASH_MISMATCH
    _, outcomes = feed(reassembler, chunks)
    assert completed(outcomes).read_bytes() == data


def test_idleness_is_measured_on_the_idle_clock_not_the_wall_clock() -> None:
    """The caller stops reading (its idle clock stands still): however much wall time
    passes, no file expires; idle time read afterwards counts from where it stood."""
    wall, reading = [0.0], [0.0]
    reassembler = Reassembler(clock=lambda: wall[0], idle_clock=lambda: reading[0])
    chunks = split(b"p" * 1000, 100, filename="p")
    reassembler.add(chunks[0])
    wall[0] = 10_000.0  # paused: hours pass unread
    assert reassembler.expire(idle_seconds=60) == []
    (info,) = reassembler.partial_files()
    assert info.last_seen == 0.0  # the wall clock still stamps the file
    reading[0] = 59.0
    assert reassembler.expire(idle_seconds=60) == []
    reading[0] = 61.0
    assert [f.relative_path.name for f in reassembler.expire(idle_seconds=60)] == ["p"]


def test_expiring_while_the_worker_is_busy(tmp_path: Path) -> None:
    """A file expires while the worker still has all of its chunks to write (held by a
    task ahead of them): expire waits for the worker to be done with them, then removes
    the file; nothing is left on disk, nor written after."""
    import threading  # noqa: PLC0415

    now = [0.0]
    expiring = threading.Event()

    def idle_clock() -> float:
        if now[0] >= 100.0:  # read by expire() only: the adds were at 0
            expiring.set()
        return now[0]

    reassembler = make(
        "disk", tmp_path, clock=lambda: now[0], idle_clock=idle_clock, backlog_bytes=1 << 30
    )
    release = threading.Event()
    outcome: list[list[FileFailure]] = []
    expiry = threading.Thread(
        target=lambda: outcome.append(reassembler.expire(idle_seconds=10)), daemon=True
    )
    try:
        # the (only) worker busy with something else: the file's writes queue behind it
        ahead = reassembler._pools[0].submit(release.wait, 60)
        for chunk in split(os.urandom(4 << 20), 65536, subdir="busy")[:-1]:
            reassembler.add(chunk)
        writes = [task for task, _ in reassembler._backlog]
        assert len(writes) == 63 and not any(task.done() for task in writes)
        now[0] = 100.0
        expiry.start()
        assert expiring.wait(10), "expire() did not start"
        # it waits for the worker (still busy: none of the file's writes has run)
        expiry.join(1.0)
        assert expiry.is_alive(), f"expire() returned with the writes still queued: {outcome}"
        assert not ahead.done() and not any(task.done() for task in writes)
    finally:
        release.set()
    expiry.join(30)
    assert not expiry.is_alive()
    ((failure,),) = outcome
    assert failure.reason is FailureReason.EXPIRED and failure.n_chunks_received == 63
    assert all(task.done() and task.exception() is None for task in writes)
    assert reassembler.flush() == []
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_a_disk_error_fails_the_file_at_its_next_chunk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from reproducer import _storage  # noqa: PLC0415 - only these tests patch it

    chunks = split(b"s" * 3000, 1000)
    reassembler = make("disk", tmp_path, worker_thread=False)
    assert reassembler.add(chunks[0]).status is ChunkStatus.STORED

    def full(self: object, offset: int, data: bytes) -> None:
        raise _storage.StoreError("No space left on device")

    monkeypatch.setattr(_storage.DiskStore, "write", full)
    assert reassembler.add(chunks[1]).status is ChunkStatus.STORED  # recorded by the worker
    rejected = reassembler.add(chunks[2])
    assert rejected.status is ChunkStatus.REJECTED and "No space" in rejected.reason
    assert failed(list(rejected.finished)).reason is FailureReason.STORAGE
    assert len(reassembler) == 0
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_out_of_memory_fails_the_file_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from reproducer import _storage  # noqa: PLC0415 - only these tests patch it

    chunks = split(b"m" * 3000, 1000)
    reassembler = Reassembler()
    reassembler.add(chunks[0])

    def no_memory(self: object, offset: int, data: bytes) -> None:
        raise _storage.StoreError("cannot hold 2000 bytes in memory")

    monkeypatch.setattr(_storage.MemoryStore, "copy_in", no_memory)
    rejected = reassembler.add(chunks[1])
    assert rejected.status is ChunkStatus.REJECTED
    assert failed(list(rejected.finished)).reason is FailureReason.STORAGE
    assert reassembler.held_bytes == 0 and len(reassembler) == 0


_files = [os.urandom(n) for n in (0, 1, 700, 2500)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_files) - 1),
            st.integers(0, 30),
            st.sampled_from(["ok", "dup", "bad"]),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_fuzz_any_chunk_sequence(steps: list[tuple[int, int, str]], worker: bool) -> None:
    """Whatever arrives, in whatever order: no exception, and a completed file is right."""
    reassembler = Reassembler(worker_thread=worker, backlog_bytes=4096)
    outcomes: list[Outcome] = []
    for which, index, kind in steps:
        chunks = split(_files[which], 256, filename=f"f{which}")
        chunk = chunks[index % len(chunks)]
        if kind == "bad":  # a chunk of a different version with the same path
            chunk = dataclasses.replace(
                chunk, file_hash=hashlib.sha512(b"%d" % index).digest(), file_mtime=index
            )
        outcomes += reassembler.add(chunk).finished
        if kind == "dup":
            outcomes += reassembler.add(chunk).finished
    outcomes += reassembler.close()
    for outcome in outcomes:
        if isinstance(outcome, CompletedFile):
            assert hashlib.sha512(outcome.read_bytes()).digest() == outcome.file_hash
            assert outcome.read_bytes() == _files[int(outcome.filename[1:])]
    assert reassembler.held_bytes == 0 and len(reassembler) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        Reassembler("tape")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_dir"):
        Reassembler("disk")


@pytest.mark.parametrize("worker_thread", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_inline_and_worker_thread_agree(mode: str, worker_thread: bool, tmp_path: Path) -> None:
    data = random.Random(3).randbytes(70_001)
    order = split(data, 1000)
    random.Random(4).shuffle(order)
    reassembler = make(mode, tmp_path, worker_thread=worker_thread, backlog_bytes=5000)
    results, outcomes = feed(reassembler, order)
    assert [r.status for r in results].count(ChunkStatus.COMPLETING) == 1
    assert completed(outcomes).read_bytes() == data
    if not worker_thread:  # inline: the completing add reports the file itself
        assert results[-1].finished == tuple(outcomes)
    assert reassembler.close() == []


def test_memory_map_grows_past_its_first_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Growing the anonymous map must keep earlier bytes and back the new pages."""
    from reproducer import _storage  # noqa: PLC0415 - only this test patches it

    monkeypatch.setattr(_storage.MemoryStore, "_FIRST_MAP", 4096)
    data = random.Random(5).randbytes(300_000)
    chunks = split(data, 10_000)
    # chunk sizes that differ from the first one make the size estimate too small
    _, outcomes = feed(Reassembler(), chunks)
    assert completed(outcomes).read_bytes() == data


def test_storage_failure_is_an_outcome(tmp_path: Path) -> None:
    out = tmp_path / "out"
    reassembler = Reassembler("disk", out)
    chunks = split(b"q" * 3000, 1000, subdir="d")
    reassembler.add(chunks[0])
    reassembler.flush()
    for temp in (out / "d").iterdir():
        temp.unlink()
    (out / "d").rmdir()
    (out / "d").write_text("now a file, so the rename into d/ fails")
    _, outcomes = feed(reassembler, chunks[1:])
    assert failed(outcomes).reason is FailureReason.STORAGE
    assert (out / "d").read_text().startswith("now a file")


@pytest.mark.parametrize("mode", MODES)
def test_several_worker_threads_rebuild_interleaved_files(mode: str, tmp_path: Path) -> None:
    """Files are spread over the workers; each file's chunks still go in order to one."""
    rng = random.Random(7)
    files = {f"d{i % 3}/f{i}.bin": rng.randbytes(rng.randrange(1, 40_000)) for i in range(30)}
    chunks = [
        c
        for name, data in files.items()
        for c in split(data, 1000, subdir=name.split("/")[0], filename=name.split("/")[1])
    ]
    rng.shuffle(chunks)
    reassembler = make(mode, tmp_path, workers=3)
    _, outcomes = feed(reassembler, chunks)
    rebuilt = {
        o.relative_path.as_posix(): o.read_bytes() for o in outcomes if isinstance(o, CompletedFile)
    }
    assert rebuilt == files
    reassembler.close()


# ---------------------------------------------------------------- versions of a path
@pytest.mark.parametrize(("old_mtime", "new_mtime"), [(0.0, 0.0), (1.0, 2.0), (0.0, 2.0)])
def test_a_file_that_shrank_is_rebuilt_after_the_old_version_completed(
    old_mtime: float, new_mtime: float
) -> None:
    """A file edited to be smaller and sent again has fewer chunks: still a new version
    (only a plainly older mtime makes content at a finished path stale)."""
    old = split(b"o" * 400, 100, mtime=old_mtime)
    new = split(b"n" * 150, 100, mtime=new_mtime)
    reassembler = Reassembler()
    assert completed(feed(reassembler, old)[1]).read_bytes() == b"o" * 400
    results, outcomes = feed(reassembler, new)
    assert [r.status for r in results] == [ChunkStatus.STORED, ChunkStatus.COMPLETING]
    assert completed(outcomes).read_bytes() == b"n" * 150
    assert reassembler.add(old[2]).status is ChunkStatus.DUPLICATE  # remembered still


def test_an_older_copy_after_completion_is_stale_and_says_why() -> None:
    newer = split(b"2" * 200, 100, mtime=20.0)
    older = split(b"1" * 300, 100, mtime=10.0)  # more chunks, but plainly older
    reassembler = Reassembler()
    feed(reassembler, newer)
    for chunk in older:
        result = reassembler.add(chunk)
        assert (result.status, result.file_id) == (ChunkStatus.STALE, None)
        assert "older than the version of f.bin that completed" in result.reason
        assert "mtime 10.0 < 20.0" in result.reason
    assert len(reassembler) == 0 and reassembler.flush() == []


def test_a_shrunk_newer_version_supersedes_the_older_one_being_rebuilt() -> None:
    old = split(b"o" * 400, 100, mtime=1.0)
    new = split(b"n" * 150, 100, mtime=2.0)
    reassembler = Reassembler()
    for chunk in old[:2]:
        assert reassembler.add(chunk).status is ChunkStatus.STORED
    first_new = reassembler.add(new[0])
    assert first_new.status is ChunkStatus.STORED
    assert failed(list(first_new.finished)).reason is FailureReason.SUPERSEDED
    late = reassembler.add(old[2])
    assert (late.status, late.file_id) == (ChunkStatus.STALE, None)
    assert "older than the version being rebuilt" in late.reason
    assert "mtime 1.0 < 2.0" in late.reason
    _, outcomes = feed(reassembler, new[1:])
    assert completed(outcomes).read_bytes() == b"n" * 150


def test_a_stale_chunk_of_a_version_being_rebuilt_says_why() -> None:
    """Without mtimes to tell (legacy producers send 0), the reference rule decides: fewer
    chunks is older; the reason names both versions."""
    longer = split(b"L" * 300, 100)
    shorter = split(b"s" * 200, 100)
    reassembler = Reassembler()
    reassembler.add(longer[0])
    stale = reassembler.add(shorter[0])
    assert stale.status is ChunkStatus.STALE
    assert "older than the version being rebuilt" in stale.reason
    assert "2 chunks < 3" in stale.reason
    assert shorter[0].file_hash[:4].hex() in stale.reason
    assert longer[0].file_hash[:4].hex() in stale.reason


@pytest.mark.parametrize("seed", range(20))
def test_interleaved_old_and_new_versions_end_with_the_new_one(seed: int) -> None:
    """Chunks of an old version and of a smaller newer one, interleaved in any order: the
    newer version completes last; the old one completes only if it was whole before any
    chunk of the newer one came, and every chunk of it skipped says why."""
    old = split(b"o" * 500, 100, mtime=1.0)
    new = split(b"n" * 200, 100, mtime=2.0)
    rng = random.Random(seed)
    order = old + new
    rng.shuffle(order)
    reassembler = Reassembler(worker_thread=False)
    results, outcomes = feed(reassembler, order)
    done = [o for o in outcomes if isinstance(o, CompletedFile)]
    assert done and done[-1].read_bytes() == b"n" * 200
    assert [d.read_bytes() for d in done[:-1]] in ([], [b"o" * 500])
    assert all(r.reason for r in results if r.status is ChunkStatus.STALE)
    assert len(reassembler) == 0


def test_a_late_copy_of_a_finished_version_does_not_supersede_the_next_one() -> None:
    """A file shrank and is sent again (no mtimes): a late duplicate of the old version's
    chunks, which has more chunks, must not end the new version being rebuilt."""
    old = split(b"o" * 400, 100)
    new = split(b"n" * 200, 100)
    reassembler = Reassembler()
    feed(reassembler, old)
    assert reassembler.add(new[0]).status is ChunkStatus.STORED
    late = reassembler.add(old[3])
    assert (late.status, late.finished) == (ChunkStatus.DUPLICATE, ())
    _, outcomes = feed(reassembler, new[1:])
    assert completed(outcomes).read_bytes() == b"n" * 200


# ---------------------------------------------------------------- copies of a chunk
def _flipped(chunk: DataFileChunk) -> DataFileChunk:
    """The chunk with one bit of its data flipped (its declared chunk hash intact)."""
    data = bytearray(chunk.data)
    data[len(data) // 2] ^= 0x10
    return dataclasses.replace(chunk, data=bytes(data))


@pytest.mark.parametrize("mode", MODES)
def test_a_good_copy_of_a_corrupt_chunk_before_the_last_chunk_completes_the_file(
    mode: str, tmp_path: Path
) -> None:
    data = os.urandom(4000)
    chunks = split(data, 1000)
    reassembler = make(mode, tmp_path)
    order = [chunks[0], _flipped(chunks[1]), chunks[1], chunks[2], chunks[3]]
    results, outcomes = feed(reassembler, order)
    assert [r.status for r in results] == [
        ChunkStatus.STORED,
        ChunkStatus.STORED,
        ChunkStatus.STORED,  # a different copy, matching its chunk hash: kept
        ChunkStatus.STORED,
        ChunkStatus.COMPLETING,
    ]
    assert results[2].file_id == results[0].file_id  # its message waits for the file
    assert completed(outcomes).read_bytes() == data
    assert reassembler.n_reopened == 0 and len(reassembler) == 0
    assert reassembler.held_bytes == 0
    if mode != "memory":
        assert (tmp_path / "out" / "f.bin").read_bytes() == data


@pytest.mark.parametrize("mode", MODES)
def test_a_corrupt_copy_after_the_good_one_is_rejected(mode: str, tmp_path: Path) -> None:
    data = os.urandom(4000)
    chunks = split(data, 1000)
    reassembler = make(mode, tmp_path)
    reassembler.add(chunks[0])
    reassembler.add(chunks[1])
    bad = reassembler.add(_flipped(chunks[1]))
    assert (bad.status, bad.file_id) == (ChunkStatus.REJECTED, None)
    assert "chunk 2" in bad.reason and "chunk hash" in bad.reason
    same = reassembler.add(chunks[1])
    assert (same.status, same.file_id) == (ChunkStatus.DUPLICATE, None)
    _, outcomes = feed(reassembler, chunks[2:])
    assert completed(outcomes).read_bytes() == data


def test_a_kept_copy_counts_in_the_memory_held_until_the_file_ends() -> None:
    chunks = split(os.urandom(4000), 1000)
    reassembler = Reassembler(worker_thread=False)
    reassembler.add(chunks[0])
    reassembler.add(_flipped(chunks[1]))
    before = reassembler.held_bytes
    assert reassembler.add(chunks[1]).status is ChunkStatus.STORED
    assert reassembler.held_bytes == before + 1000
    assert reassembler.add(chunks[1]).status is ChunkStatus.DUPLICATE  # that copy again
    assert reassembler.held_bytes == before + 1000
    (failure,) = reassembler.close()
    assert isinstance(failure, FileFailure) and reassembler.held_bytes == 0


# ---------------------------------------------------------------- memory accounting
PAGE = mmap.PAGESIZE


def _sparse(n_total: int, offset: int, chunk_i: int, data: bytes = b"x") -> DataFileChunk:
    return make_chunk(
        data,
        filename="sparse",
        file_hash=bytes(64),
        chunk_offset_write=offset,
        chunk_i=chunk_i,
        n_total_chunks=n_total,
    )


def test_sparse_writes_count_the_pages_they_touch() -> None:
    """One-byte chunks a page apart in a file that claims 1 MiB (a map): each takes a
    page of memory, and the budget must see the pages, not the bytes."""
    reassembler = Reassembler(worker_thread=False)
    n = 2000
    before = _rss_kib()
    for i in range(n):
        assert reassembler.add(_sparse(1 << 20, i * PAGE, i + 1)).status is ChunkStatus.STORED
    grown = (_rss_kib() - before) * 1024
    assert reassembler.partial_bytes == n
    assert reassembler.held_bytes == n * PAGE
    assert grown < 2 * reassembler.held_bytes  # what was counted is what was taken
    assert reassembler.claimed_since_shed >= n * (PAGE - 1)


@pytest.mark.parametrize("shuffled", [False, True])
def test_contiguous_writes_count_their_bytes_rounded_up_to_pages(shuffled: bool) -> None:
    """Chunks that share pages (1000 bytes each) count each page once, in any order."""
    chunks = [_sparse(2000, i * 1000, i + 1, bytes([i % 251]) * 1000) for i in range(300)]
    if shuffled:
        random.Random(8).shuffle(chunks)
    reassembler = Reassembler(worker_thread=False)
    for chunk in chunks:
        reassembler.add(chunk)
    assert reassembler.partial_bytes == 300_000
    assert reassembler.held_bytes == -(-300_000 // PAGE) * PAGE


def test_a_good_copy_of_a_dropped_chunk_is_not_counted_twice() -> None:
    """A file (a map) whose corrupt chunk was dropped to wait for its copy holds the same
    pages when the copy comes: they are not counted again."""
    data = os.urandom(64 * PAGE)
    chunks = split(data, 4 * PAGE)
    corrupt = [_flipped(c) if c.chunk_i == 3 else c for c in chunks]
    reassembler = Reassembler(worker_thread=False)
    feed(reassembler, corrupt)
    assert len(reassembler) == 1 and reassembler.held_bytes == len(data)
    _, outcomes = feed(reassembler, [chunks[2]])
    assert completed(outcomes).read_bytes() == data


def test_good_small_files_half_arrived_are_not_given_up_over_the_budget() -> None:
    """Ten files of 8 chunks of 16 KiB, half arrived (in order or not): each holds what
    arrived, so none is given up, whatever the budget: the caller pauses for them (two
    were given up as liars when each took a buffer of its claimed 128 KiB at once)."""
    chunk = 16 << 10
    files = {f"good{i}": os.urandom(8 * chunk) for i in range(10)}
    reassembler = Reassembler(worker_thread=False)
    for i, (name, data) in enumerate(files.items()):
        pieces = split(data, chunk, filename=name)
        for c in pieces[:4] if i % 2 else pieces[::2]:
            assert reassembler.add(c).status is ChunkStatus.STORED
    for budget in (1 << 20, 512 << 10):
        assert [f.relative_path.name for f in reassembler.shed(budget)] == []
    assert len(reassembler) == 10
    assert reassembler.held_bytes == reassembler.partial_bytes == 10 * 4 * chunk
    for name, data in files.items():
        _, outcomes = feed(reassembler, split(data, chunk, filename=name))
        assert completed(outcomes).read_bytes() == data


def test_a_chunk_older_than_the_completed_version_does_not_supersede_the_next_one() -> None:
    """Completed: mtime 5. Being rebuilt: new content from a legacy producer (mtime 0).
    A chunk with more chunks but an mtime older than the completed version is stale: it
    must not end the version being rebuilt first."""
    completed_version = split(b"c" * 200, 100, mtime=5.0)
    legacy = split(b"l" * 200, 100)
    older = split(b"o" * 300, 100, mtime=3.0)
    reassembler = Reassembler()
    feed(reassembler, completed_version)
    assert reassembler.add(legacy[0]).status is ChunkStatus.STORED
    stale = reassembler.add(older[0])
    assert (stale.status, stale.finished) == (ChunkStatus.STALE, ())
    assert "that completed" in stale.reason and "mtime 3.0 < 5.0" in stale.reason
    _, outcomes = feed(reassembler, legacy[1:])
    assert completed(outcomes).read_bytes() == b"l" * 200


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 3 * PAGE), min_size=1, max_size=40),
    st.lists(st.booleans(), min_size=40, max_size=40),
    st.randoms(use_true_random=False),
)
def test_a_map_counts_each_page_touched_once(
    sizes: list[int], sent: list[bool], rng: random.Random
) -> None:
    """Chunks that tile a file, some of them sent, in any order: the map counts exactly
    the pages they touch (brute force: every page of every chunk, in a set)."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    chunks = [(o, n) for o, n, s in zip(offsets, sizes, sent, strict=False) if s]
    rng.shuffle(chunks)
    store = MemoryStore(HEAP_LIMIT + 1)
    pages: set[int] = set()
    for offset, size in chunks:
        store.copy_in(offset, b"\1" * size)
        pages.update(range(offset // PAGE, (offset + size - 1) // PAGE + 1))
    assert store.held_bytes == len(pages) * PAGE
    store.discard()


def test_remembered_versions_stay_duplicates_however_many_files_complete() -> None:
    """A version remembered from the state records (its results committed by an earlier
    run) stays a duplicate until forgotten, whatever else completes: the bounded memory of
    completed files once dropped it after 10,000 others, and it was produced again."""
    data = os.urandom(300)
    chunks = split(data, 100)
    reassembler = Reassembler(worker_thread=False, remember_finished=10)
    gen = Generation(chunks[0].file_hash, 3, chunks[0].file_mtime)
    reassembler.remember(chunks[0].relative_path, gen)
    for i in range(50):  # more than it remembers of completed files
        feed(reassembler, split(os.urandom(50), 50, filename=f"other{i}.bin"))
    assert [reassembler.add(c).status for c in chunks] == [ChunkStatus.DUPLICATE] * 3
    reassembler.forget(chunks[0].relative_path, gen.file_hash)
    _, outcomes = feed(reassembler, chunks)
    assert completed(outcomes).read_bytes() == data


def test_only_a_few_different_good_copies_of_a_chunk_are_kept() -> None:
    """Copies of one chunk that differ from the stored one yet match their own chunk hash
    (a liar, or a tool re-sending other content under the same index) are kept up to a
    few, for the file hash to choose from; more are rejected, not held without bound."""
    chunks = split(os.urandom(3000), 1000)
    reassembler = Reassembler(worker_thread=False)
    reassembler.add(chunks[0])
    statuses = []
    for _ in range(5):
        other = make_chunk(
            os.urandom(1000),
            filename=chunks[0].filename,
            file_hash=chunks[0].file_hash,
            chunk_offset_write=0,
            chunk_i=1,
            n_total_chunks=3,
        )
        statuses.append(reassembler.add(other).status)
    assert statuses == [ChunkStatus.STORED] * 2 + [ChunkStatus.REJECTED] * 3


def test_memory_mode_rebuilds_a_larger_file_in_shared_memory(tmp_path: Path) -> None:
    """With a shared-memory folder, a larger file is rebuilt in a file there (handed over
    by its path, with its identity), a small one in the heap as before; a file given up
    removes its file, and nothing is written outside the folder."""
    shared = tmp_path / "shm"
    shared.mkdir()
    reassembler = Reassembler("memory", shared=shared)
    big = os.urandom(3 * HEAP_LIMIT + 5)
    order = split(big, 64 << 10, filename="big.bin")
    random.Random(3).shuffle(order)
    _, outcomes = feed(reassembler, order)
    done = completed(outcomes)
    assert done.buffer is None and done.path is None
    assert done.shared is not None and done.shared.parent == shared
    assert done.shared.read_bytes() == big == done.read_bytes()
    st = done.shared.stat()
    assert done.identity == (st.st_ino, st.st_size, st.st_mtime_ns)
    small = os.urandom(1000)
    _, outcomes = feed(reassembler, split(small, 400, filename="small.bin"))
    assert completed(outcomes).shared is None and completed(outcomes).read_bytes() == small
    assert list(shared.iterdir()) == [done.shared]
    # a partial file given up (abandoned at close) leaves nothing behind
    reassembler.add(split(os.urandom(4 * HEAP_LIMIT), 64 << 10, filename="cut.bin")[0])
    assert len(list(shared.iterdir())) == 2
    reassembler.close()
    assert list(shared.iterdir()) == [done.shared]


def test_a_shared_memory_file_that_grows_past_its_estimate(tmp_path: Path) -> None:
    """A file whose first chunk is its smallest (the estimate, chunks x its length, is
    low) grows its file in shared memory, as an anonymous map grows."""
    shared = tmp_path / "shm"
    shared.mkdir()
    sizes = [HEAP_LIMIT + 1, 5 * HEAP_LIMIT, 3 * HEAP_LIMIT]
    data = os.urandom(sum(sizes))
    file_hash = hashlib.sha512(data).digest()
    offsets = [0, sizes[0], sizes[0] + sizes[1]]
    chunks = [
        make_chunk(
            data[o : o + n],
            filename="g.bin",
            subdir_str="",
            file_hash=file_hash,
            chunk_offset_write=o,
            chunk_i=i + 1,
            n_total_chunks=3,
            file_mtime=0.0,
        )
        for i, (o, n) in enumerate(zip(offsets, sizes, strict=True))
    ]
    _, outcomes = feed(Reassembler("memory", shared=shared), chunks)
    done = completed(outcomes)
    assert done.shared is not None and done.read_bytes() == data


def test_the_shared_folder_of_an_ingest_gone_is_removed(tmp_path: Path) -> None:
    """A dead ingest's folder (its files would hold memory until the machine restarts) is
    removed by the next one: told by the lock its owner held, which the kernel lets go
    when the process dies (a process id would not do: another PID namespace sharing
    /dev/shm, or the id reused). A live owner's folder is kept, and other folders; too
    little room, or no such parent: no folder."""
    import fcntl  # noqa: PLC0415

    from reproducer._storage import shared_folder  # noqa: PLC0415

    dead = tmp_path / "ray-reproducer-dead"
    dead.mkdir()
    (dead / "owner.lock").touch()
    (dead / "x.file").write_bytes(b"x")
    alive = tmp_path / "ray-reproducer-alive"
    alive.mkdir()
    held = os.open(alive / "owner.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # another open file: as another process's lock
    other = tmp_path / "ray-reproducer-not-ours"
    other.mkdir()
    try:
        mine = shared_folder(tmp_path)
        assert mine is not None and mine.path.is_dir() and mine.path.parent == tmp_path
        assert not dead.exists() and alive.exists() and other.exists()
        again = shared_folder(tmp_path)  # the next ingest leaves the live ones alone
        assert again is not None and mine.path.exists()
        (mine.path / "in-flight.file").write_bytes(b"x")
        mine.close()
        again.close()
        assert not mine.path.exists() and not again.path.exists()
    finally:
        os.close(held)
    assert shared_folder(tmp_path, room=1 << 62) is None
    assert shared_folder(tmp_path / "missing") is None


def test_a_shared_memory_file_that_cannot_be_completed_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file in shared memory that cannot be completed (an I/O error) is removed and says
    why (its completion once waited forever on the lock it held)."""
    from reproducer._storage import SharedStore, StoreError  # noqa: PLC0415

    store = SharedStore(4 * HEAP_LIMIT, tmp_path)
    store.copy_in(0, os.urandom(4 * HEAP_LIMIT))
    assert store.shared is not None and store.shared.exists()
    path = store.shared

    def failing(fd: int, size: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", failing)
    with pytest.raises(StoreError, match="Input/output error"):
        store.finish(4 * HEAP_LIMIT)
    assert not path.exists()


def test_past_so_many_partial_files_in_shared_memory_the_rest_are_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each partial file in shared memory holds a descriptor (its map's): past
    ``MAX_SHARED_MAPS`` of them, files are rebuilt in anonymous memory, and still whole."""
    import reproducer._storage as storage  # noqa: PLC0415

    monkeypatch.setattr(storage, "MAX_SHARED_MAPS", 1)
    reassembler = Reassembler("memory", shared=tmp_path, worker_thread=False)
    files = [os.urandom(4 * HEAP_LIMIT) for _ in range(2)]
    firsts = [split(data, 2 * HEAP_LIMIT, filename=f"f{i}")[0] for i, data in enumerate(files)]
    for chunk in firsts:
        reassembler.add(chunk)
    assert len(list(tmp_path.iterdir())) == 1  # the first file only
    outcomes: list[Outcome] = []
    for i, data in enumerate(files):
        outcomes += feed(reassembler, split(data, 2 * HEAP_LIMIT, filename=f"f{i}")[1:])[1]
    done = {o.filename: o for o in outcomes if isinstance(o, CompletedFile)}
    assert done["f0"].shared is not None and done["f1"].shared is None
    assert [done[f"f{i}"].read_bytes() for i in range(2)] == files


def test_shared_memory_full_stops_the_run_and_keeps_the_file(tmp_path: Path) -> None:
    """Shared memory that cannot take a file (full: ENOSPC; here a file-size limit, EFBIG,
    the same kind of error) is not the file's fault: no recorded failure (its offsets
    would be committed past and the file lost) but OutputUnavailable, which stops the run
    with nothing committed past it; and nothing is left in the folder."""
    import resource  # noqa: PLC0415

    from reproducer.errors import OutputUnavailable  # noqa: PLC0415

    shared = tmp_path / "shm"
    shared.mkdir()
    reassembler = Reassembler("memory", shared=shared, worker_thread=False)
    chunks = split(os.urandom(8 * HEAP_LIMIT), 2 * HEAP_LIMIT)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * HEAP_LIMIT, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(OutputUnavailable, match=r"shared memory cannot take file=f\.bin"):
            for chunk in chunks:
                reassembler.add(chunk)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    reassembler.close()
    assert list(shared.iterdir()) == []
