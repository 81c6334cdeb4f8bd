"""``reproducer demo``: the upload round trip on a local broker, end to end.

Starts a broker (or uses ``$KAFKA_BOOTSTRAP_SERVERS``), makes a small tree of data files
(a root-level file, subfolders, unicode and ``;`` in names, an empty file, an HDF5 file
and one large file), uploads it to a fresh 3-partition topic, reads it back, rebuilds every
file and checks it byte for byte.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from pathlib import Path

from reproducer._storage import Mode
from reproducer.config import KafkaConfig
from reproducer.download import download
from reproducer.errors import ReproducerError
from reproducer.reassembly import Reassembler
from reproducer.upload import find_files, upload

__all__ = ["make_sample_tree", "run_demo"]


def make_sample_tree(root: Path, large_bytes: int, *, seed: int = 7) -> dict[str, str]:
    """Write a varied tree of files under ``root``; returns relative path -> SHA-512 hex."""
    import h5py  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {
        "top.txt": b"abc",
        "empty.dat": b"",
        "sub/example.txt": b"an example file in one subdirectory\n",
        "sub/deeper/data.bin": rng.bytes(500_000),
        "with space/näme;odd.csv": b"x;y\n1;2\n3;4\n",
        "large/big.bin": rng.bytes(large_bytes),
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    h5_path = root / "sub" / "scan.h5"
    with h5py.File(h5_path, "w") as h5:
        h5.create_dataset("intensity", data=rng.normal(size=(64, 256)), compression="gzip")
        h5.attrs["instrument"] = "demo"
    files["sub/scan.h5"] = h5_path.read_bytes()
    return {rel: hashlib.sha512(data).hexdigest() for rel, data in files.items()}


def run_demo(mode: Mode, size_mb: int, output_dir: Path | None) -> int:
    from cluster.broker import broker_from_env, create_topic  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="reproducer-demo-") as tmp,
        broker_from_env() as bootstrap,
    ):
        source = Path(tmp) / "upload"
        out = output_dir or Path(tmp) / "output"
        expected = make_sample_tree(source, size_mb << 20)
        topic = f"demo_{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=3)
        config = KafkaConfig.for_bootstrap(bootstrap)
        print(f"broker {bootstrap}, topic {topic} (3 partitions), {len(expected)} files")
        sent = upload([source], config, topic)
        print(
            f"upload:   {sent.n_chunks} chunks, {sent.n_bytes / 1e6:.1f} MB, {sent.mb_per_s:.1f} MB/s"
        )
        reassembler = Reassembler(mode, out if mode != "memory" else None)
        got = download(config, topic, reassembler, n_files=len(find_files([source]).sources))
        print(
            f"rebuild:  {len(got.completed)} files in {mode} mode, {got.n_bytes / 1e6:.1f} MB read, "
            f"{got.n_bytes / 1e6 / max(got.seconds, 1e-9):.1f} MB/s"
        )
        bad = [f.relative_path.as_posix() for f in got.failed]
        for done in got.completed:
            rel = done.relative_path.as_posix()
            if hashlib.sha512(done.read_bytes()).hexdigest() != expected.get(rel):
                bad.append(rel)
            else:
                print(f"  ok  {rel:32} {done.size:>12,} bytes  {done.n_chunks:>5} chunks")
        missing = set(expected) - {d.relative_path.as_posix() for d in got.completed}
        if bad or missing:
            raise ReproducerError(
                f"round trip failed: wrong {sorted(bad)}, missing {sorted(missing)}"
            )
        print(f"round trip ok: {len(expected)} files byte-identical")
    return 0
