"""``reproducer demo``: the main job on its local default, end to end.

Starts a broker (or uses ``$KAFKA_BOOTSTRAP_SERVERS``), makes a small tree of data files
(a root-level file, subfolders, unicode and ``;`` in names, an empty file, an HDF5 file
and one large file), uploads it to a fresh 3-partition topic, runs the Ray pipeline on it
with local Ray (an analysis that summarises each file), and checks that every file got
exactly the right result.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import uuid
from pathlib import Path

from reproducer._storage import Mode
from reproducer.config import KafkaConfig
from reproducer.datafile import DownloadDataFile, JSONMessage, ReproducerMessage
from reproducer.errors import ReproducerError
from reproducer.stream_reproducer import DataFileStreamReproducer
from reproducer.upload import upload

__all__ = ["FileSummaryReproducer", "make_sample_tree", "run_demo"]


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


class FileSummaryReproducer(DataFileStreamReproducer):
    """The demo's analysis: size and SHA-512 of every file, and the datasets of HDF5 files."""

    def _get_processing_result_message_for_file(
        self, datafile: DownloadDataFile, lock: object
    ) -> ReproducerMessage | None:
        summary: dict[str, object] = {
            "file": str(datafile.relative_filepath),
            "size": datafile.size,
            "sha512": hashlib.sha512(datafile.buffer).hexdigest(),
        }
        if datafile.filename.endswith(".h5"):
            import h5py  # noqa: PLC0415

            with h5py.File(io.BytesIO(datafile.bytestring), "r") as h5:
                summary["datasets"] = {
                    name: list(h5[name].shape) for name in h5 if isinstance(h5[name], h5py.Dataset)
                }
        return JSONMessage(datafile, summary)


def run_demo(mode: Mode, size_mb: int, output_dir: Path | None) -> int:
    """Upload a tree to a local broker, run the pipeline on it with local Ray, check results."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: PLC0415

    from cluster.broker import broker_from_env, create_topic  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="reproducer-demo-") as tmp,
        broker_from_env() as bootstrap,
    ):
        source = Path(tmp) / "upload"
        expected = make_sample_tree(source, size_mb << 20)
        topic, results_topic = (
            f"demo_{uuid.uuid4().hex[:8]}",
            f"demo_results_{uuid.uuid4().hex[:8]}",
        )
        create_topic(bootstrap, topic, partitions=3)
        create_topic(bootstrap, results_topic, partitions=1)
        print(f"broker {bootstrap}: {len(expected)} files to {topic} (3 partitions)")
        sent = upload([source], KafkaConfig.for_bootstrap(bootstrap), topic)
        print(
            f"upload:   {sent.n_chunks} chunks, {sent.n_bytes / 1e6:.1f} MB, {sent.mb_per_s:.1f} MB/s"
        )
        config_file = Path(tmp) / "demo.config"
        config_file.write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n", encoding="utf-8")
        reproducer = FileSummaryReproducer(
            config_file,
            topic,
            results_topic,
            mode=mode,
            output_dir=output_dir or Path(tmp) / "output",
            stop_when_idle=3.0,
            update_seconds=5.0,
        )
        print("pipeline: local Ray, 2 analysis actors (start-up takes a few seconds)")
        ran = reproducer.produce_processing_results_for_files_as_read()
        print(
            f"pipeline: {ran.n_msgs_read} messages read, {ran.n_results_produced} results produced"
        )
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "demo", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(results_topic, 0, OFFSET_BEGINNING)])
        results: dict[str, dict[str, object]] = {}
        while len(results) < len(expected) and (
            batch := consumer.consume(len(expected) - len(results), 10)
        ):
            for message in batch:
                if not message.error():
                    payload = json.loads(message.value() or b"{}")
                    results[payload["file"]] = payload
        consumer.close()
        wrong = sorted(
            rel for rel, digest in expected.items() if results.get(rel, {}).get("sha512") != digest
        )
        for rel, payload in sorted(results.items()):
            extra = f"  datasets {payload['datasets']}" if "datasets" in payload else ""
            print(
                f"  {'ok' if rel not in wrong else 'BAD'}  {rel:28} {payload['size']:>12,} bytes{extra}"
            )
        if wrong:
            raise ReproducerError(f"demo failed: no correct result for {wrong}")
        print(f"demo ok: one correct result for each of the {len(expected)} files")
    return 0
