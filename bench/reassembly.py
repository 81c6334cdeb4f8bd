#!/usr/bin/env python3
"""Reassembly speed and memory, against the speed of hashing the same bytes twice.

For 512 KiB chunks, in each mode (memory, disk, both), for one large file (default
1 GiB) and for many small files (default 1,000 x 1 MiB), it measures:

- MB/s of decode (msgpack + chunk-hash check) + Reassembler.add (store + file hash);
- the same bytes SHA-512-hashed twice in one thread (chunk hashes + file hash): the floor
  every correct reassembler pays, measured in the same process, so the ratio is fair on a
  machine whose speed drifts;
- peak RSS of the process (each case runs in its own child process).

Messages are encoded on the fly from a small pool of random blocks, so the input itself
holds almost no memory; only decode + add is timed.

    python bench/reassembly.py                      # all modes, both data sets
    python bench/reassembly.py --modes memory --big_mb 256 --small_n 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from reproducer.chunk import DataFileChunk, decode_value, encode_value
from reproducer.reassembly import ChunkStatus, CompletedFile, Outcome, Reassembler

CHUNK = 512 * 1024
POOL = 16


def _pool() -> list[tuple[bytes, bytes]]:
    rng = __import__("random").Random(42)
    blocks = [rng.randbytes(CHUNK) for _ in range(POOL)]
    return [(b, hashlib.sha512(b).digest()) for b in blocks]


def _file_plan(n_files: int, file_size: int) -> Iterator[tuple[int, int, int]]:
    """(file index, chunk index, length) in upload order, 4 files interleaved at a time."""
    n_chunks = -(-file_size // CHUNK)
    for group in range(0, n_files, 4):
        files = range(group, min(group + 4, n_files))
        for i in range(n_chunks):
            for f in files:
                yield f, i, min(CHUNK, file_size - i * CHUNK)


def _data(pool: list[tuple[bytes, bytes]], f: int, i: int, length: int) -> tuple[bytes, bytes]:
    block, digest = pool[(f * 7 + i) % POOL]
    return (
        (block, digest)
        if length == CHUNK
        else (block[:length], hashlib.sha512(block[:length]).digest())
    )


def _count_completed(outcomes: Iterable[Outcome]) -> int:
    n = 0
    for outcome in outcomes:
        if not isinstance(outcome, CompletedFile):
            raise SystemExit(f"unexpected failure {outcome}")
        n += 1
    return n


def child(mode: str, n_files: int, file_size: int, fsync: bool) -> dict[str, object]:
    pool = _pool()
    n_chunks = -(-file_size // CHUNK)
    file_hashes = []
    for f in range(n_files):  # untimed set-up: the hash every chunk of file f carries
        h = hashlib.sha512()
        for i in range(n_chunks):
            h.update(_data(pool, f, i, min(CHUNK, file_size - i * CHUNK))[0])
        file_hashes.append(h.digest())

    out = tempfile.mkdtemp(prefix="bench-reassembly-")
    reassembler = Reassembler(mode, None if mode == "memory" else Path(out), fsync=fsync)  # type: ignore[arg-type]
    floor_hashers = [hashlib.sha512() for _ in range(min(n_files, 4))]
    t_hash = t_work = t_encode = 0.0
    completed = total = 0
    plan = list(_file_plan(n_files, file_size))
    block = 64  # chunks (32 MiB): floor and work alternate block by block, never overlapping
    for start in range(0, len(plan), block):
        items = plan[start : start + block]
        # The floor: the same bytes hashed twice (chunk hash, file hash) in one thread.
        t0 = time.perf_counter()
        for f, i, length in items:
            data, _ = _data(pool, f, i, length)
            hashlib.sha512(data).digest()
            floor_hashers[f % len(floor_hashers)].update(data)
        t_hash += time.perf_counter() - t0
        # The work: decode + add. Messages are encoded one at a time, as a consumer receives
        # them; the encoding is timed apart and subtracted (the worker thread may overlap it,
        # so the figure can flatter the work by at most t_encode, which is reported).
        t0 = time.perf_counter()
        for f, i, length in items:
            e0 = time.perf_counter()
            data, digest = _data(pool, f, i, length)
            value = encode_value(
                DataFileChunk(
                    f"f{f:05d}.bin",
                    file_hashes[f],
                    digest,
                    i * CHUNK,
                    i + 1,
                    n_chunks,
                    "bench",
                    "",
                    data,
                    0.0,
                )
            )
            t_encode += time.perf_counter() - e0
            result = reassembler.add(decode_value(value))
            if result.status not in (ChunkStatus.STORED, ChunkStatus.COMPLETING):
                raise SystemExit(f"unexpected {result.status} {result.reason}")
            completed += _count_completed(result.finished)
            del result, value  # drop completed files, as a caller handing them on would
        completed += _count_completed(reassembler.flush())
        t_work += time.perf_counter() - t0
        total += sum(length for _, _, length in items)
    reassembler.close()
    assert completed == n_files, completed
    t_work -= t_encode
    subprocess.run(["rm", "-rf", out], check=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode,
        "files": n_files,
        "file_mib": file_size / 2**20,
        "mb": total / 1e6,
        "reassembly_mb_s": total / 1e6 / t_work,
        "hash2x_mb_s": total / 1e6 / t_hash,
        "ratio": t_hash / t_work,
        "encode_share": t_encode / (t_work + t_encode),
        "peak_rss_mib": peak / 2**20,
        "rss_over_file": peak / file_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", default=["memory", "disk", "both"])
    parser.add_argument("--big_mb", type=int, default=1024)
    parser.add_argument("--small_n", type=int, default=1000)
    parser.add_argument("--no_fsync", action="store_true", help="disk modes: skip fsync per file")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "N", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                child(args.child[0], int(args.child[1]), int(args.child[2]), not args.no_fsync)
            )
        )
        return 0
    rows = []
    for n, size in ((1, args.big_mb << 20), (args.small_n, 1 << 20)):
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", mode, str(n), str(size)]
            cmd += ["--no_fsync"] if args.no_fsync else []
            line = subprocess.run(
                cmd, check=True, capture_output=True, text=True, env=os.environ
            ).stdout
            row = json.loads(line.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| data | mode | reassembly MB/s | hash 2x MB/s | ratio | peak RSS MiB | RSS / file |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['files']} x {r['file_mib']:.0f} MiB | {r['mode']} | {r['reassembly_mb_s']:.0f} | "
            f"{r['hash2x_mb_s']:.0f} | {r['ratio']:.2f} | {r['peak_rss_mib']:.0f} | {r['rss_over_file']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
