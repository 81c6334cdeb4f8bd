"""``reproducer demo``: the main job on its local default, end to end.

Starts a broker (or uses ``$KAFKA_BOOTSTRAP_SERVERS``), makes a small realistic data set
(HDF5 scans with an image and a spectrum, an XRD CSV file, a tree of other files with a
root-level file, unicode and ``;`` in names, an empty file and one large file), uploads it
to a fresh 3-partition topic, adds one corrupt upload, runs the built-in analyses with
local Ray (``file-check`` on every file, ``hdf5-summary`` and ``spectrum-peaks`` on the
HDF5 files, ``metadata-json`` on the CSV), prints a table of the results and where the
plots are, writes the results as ``results.csv`` (and ``results.parquet`` with pyarrow)
beside the plots, and checks every result and plot; the corrupt file must be reported,
not analysed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analyses import Analysis, register
from analyses.plots import MISSING, available
from reproducer._storage import Mode
from reproducer.chunk import encode_value, make_chunk
from reproducer.config import KafkaConfig
from reproducer.errors import ReproducerError
from reproducer.results import ResultSet, read_results, write_rows
from reproducer.upload import upload

__all__ = ["FileCheck", "corrupt_upload", "make_lab_data", "make_sample_tree", "run_demo"]

ANALYSES = "file-check,hdf5-summary,metadata-json,spectrum-peaks"
XRD_CSV = """[Measurement conditions]
Sample name,quartz SiO2
Measurement date,11/27/2026
Start angle,10.000
End angle,80.000
Step,0.020
Slits,0.5,,1
[Scan points]
Angle,Intensity
"""


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


def make_lab_data(root: Path, *, seed: int = 11) -> dict[str, str]:
    """HDF5 scans (an image with stripes, a spectrum with three peaks) and an XRD CSV file
    under ``root``; returns relative path -> SHA-512 hex."""
    import h5py  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    files = {}
    for i, period in enumerate((8, 16)):
        path = root / "hdf5" / f"scan_{i + 1:03d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        x = np.arange(4096)
        spectrum = sum(
            h * np.exp(-0.5 * ((x - c) / 10) ** 2) for c, h in ((800, 90), (2000, 60), (3300, 40))
        ) + rng.normal(10, 1, x.size)
        image = np.sin(2 * np.pi * np.arange(256) / period)[None, :] + rng.normal(
            0, 0.2, (256, 256)
        )
        with h5py.File(path, "w") as h5:
            h5.attrs["instrument"] = "demo diffractometer"
            scan = h5.create_group("scan")
            # NeXus: the spectrum is the group's signal, plotted against two_theta
            scan.attrs.update(NX_class="NXdata", signal="spectrum", axes="two_theta")
            scan.create_dataset("spectrum", data=spectrum).attrs["units"] = "counts"
            angles = scan.create_dataset("two_theta", data=np.linspace(10.0, 80.0, x.size))
            angles.attrs["units"] = "degrees"
            scan.create_dataset(
                "image", data=image.astype("f4"), chunks=(64, 256), compression="gzip"
            )
            scan["image"].attrs["units"] = "counts"
        files[path.relative_to(root).as_posix()] = path.read_bytes()
    csv = root / "xrd" / "quartz.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{10 + 0.02 * i:.3f},{int(100 + 50 * rng.random())}\n" for i in range(3500))
    csv.write_text(XRD_CSV + rows)
    files["xrd/quartz.csv"] = csv.read_bytes()
    return {rel: hashlib.sha512(data).hexdigest() for rel, data in files.items()}


@register("file-check", version="1", num_cpus=0.25)
class FileCheck(Analysis):
    """The demo's check on every file: its size and SHA-512, computed where it ran."""

    def analyze(self, datafile: Any) -> dict[str, Any]:
        return {"size": datafile.size, "sha512": hashlib.sha512(datafile.buffer).hexdigest()}


def corrupt_upload(bootstrap: str, topic: str) -> str:
    """A two-chunk file whose second chunk was damaged on the way: a poison file."""
    from confluent_kafka import Producer  # noqa: PLC0415

    data = bytes(range(256)) * 4096
    digest = hashlib.sha512(data).digest()
    half = len(data) // 2
    chunks = [
        make_chunk(
            data[:half], filename="broken.h5", subdir_str="hdf5", file_hash=digest, n_total_chunks=2
        ),
        dataclasses.replace(  # zeros in place of the data its hashes were made from
            make_chunk(
                data[half:],
                filename="broken.h5",
                subdir_str="hdf5",
                file_hash=digest,
                chunk_offset_write=half,
                chunk_i=2,
                n_total_chunks=2,
            ),
            data=bytes(half),
        ),
    ]
    producer = Producer({"bootstrap.servers": bootstrap})
    for chunk in chunks:
        producer.produce(topic, key=chunk.key, value=encode_value(chunk))
    if producer.flush(30):
        raise ReproducerError("the corrupt demo upload was not acknowledged")
    return "hdf5/broken.h5"


def _read_all(bootstrap: str, topic: str) -> list[tuple[dict[str, Any], bytes | None]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4()}"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[tuple[dict[str, Any], bytes | None]] = []
        while len(out) < high and (batch := consumer.consume(100, 10)):
            out += [(json.loads(m.value() or b"{}"), m.key()) for m in batch if not m.error()]
        return out
    finally:
        consumer.close()


def _figures(analysis: str, result: dict[str, Any]) -> str:
    if analysis == "file-check":
        return f"{result['size']:,} bytes"
    if analysis == "hdf5-summary":
        return f"{result['n_groups']} groups, {result['n_datasets']} datasets"
    if analysis == "metadata-json":
        return f"sample {result.get('Sample name')!r}, {len(result) - 1} keys"
    found = []
    for entry in result["datasets"]:
        if entry["kind"] == "spectrum":
            unit = (entry.get("axis") or {}).get("units") or ""
            where = [f"{p.get('position', p['index']):g}" for p in entry["peaks"]]
            found.append(f"{len(entry['peaks'])} peaks at {', '.join(where)} {unit}".rstrip())
        else:
            found.append(f"image frequency {entry['strongest_frequency']}")
    return "; ".join(found)


def run_demo(
    mode: Mode,
    size_mb: int,
    output_dir: Path | None,
    web_port: int | None = None,
    wait: Callable[[str], object] | None = None,
) -> int:
    """Upload a data set to a local broker, run the built-in analyses on it with local
    Ray, print and check the results. With ``web_port``, the results page shows them as
    they come, and stays open until ``wait`` (``input``, on a terminal) returns."""
    from analyses.runner import AnalysesRun  # noqa: PLC0415
    from cluster.broker import broker_from_env, create_topic  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="reproducer-demo-") as tmp,
        broker_from_env() as bootstrap,
    ):
        source = Path(tmp) / "upload"
        expected = make_sample_tree(source, size_mb << 20)
        expected |= make_lab_data(source)
        topic, results_topic, dead_topic = (
            f"demo_{uuid.uuid4().hex[:8]}{suffix}" for suffix in ("", "_results", "_failed")
        )
        create_topic(bootstrap, topic, partitions=3)
        create_topic(bootstrap, results_topic, partitions=1)
        create_topic(bootstrap, dead_topic, partitions=1)
        print(f"broker {bootstrap}: {len(expected)} files to {topic} (3 partitions)")
        sent = upload([source], KafkaConfig.for_bootstrap(bootstrap), topic)
        corrupt = corrupt_upload(bootstrap, topic)
        print(
            f"upload:   {sent.n_chunks} chunks, {sent.n_bytes / 1e6:.1f} MB, "
            f"{sent.mb_per_s:.1f} MB/s; and {corrupt}, corrupted on the way"
        )
        output = (output_dir or Path("reproducer_demo_output")).resolve()
        output.mkdir(parents=True, exist_ok=True)
        config_file = output / "demo.config"  # kept: the read-back command below uses it
        config_file.write_text(f"[broker]\nbootstrap.servers = {bootstrap}\n", encoding="utf-8")
        run = AnalysesRun(
            config_file,
            topic,
            results_topic,
            analysis=ANALYSES,
            mode=mode,
            output_dir=output,
            dead_letter_topic=dead_topic,
            # the corrupt file waits this long for a good copy of its chunk, then fails
            file_idle_timeout=2.0,
            stop_when_idle=3.0,
            update_seconds=5.0,
        )
        page = (
            None
            if web_port is None
            else _start_page(config_file, results_topic, dead_topic, output, web_port)
        )
        print(f"pipeline: local Ray, analyses {ANALYSES} (start-up takes a few seconds)")
        try:
            ran = run.produce_processing_results_for_files_as_read()
            problems, n_results = _show_and_check(
                ran,
                expected,
                corrupt,
                output,
                config_file=config_file,
                bootstrap=bootstrap,
                results_topic=results_topic,
                dead_topic=dead_topic,
            )
            if page is not None:
                print(f"\nresults page: {page.url}")
                if wait is not None:
                    print("press Enter to end the demo (and close the page)", flush=True)
                    wait("")
        finally:
            if page is not None:
                page.stop()
        if problems:
            raise ReproducerError("demo failed: " + "; ".join(problems))
        print(
            f"demo ok: {n_results} correct results for the {len(expected)} files, "
            f"and {corrupt} reported as corrupt"
        )
    return 0


def _show_and_check(
    ran: Any,
    expected: dict[str, str],
    corrupt: str,
    output: Path,
    *,
    config_file: Path,
    bootstrap: str,
    results_topic: str,
    dead_topic: str,
) -> tuple[list[str], int]:
    """Print the results, failures and plots of the run; what is wrong, and how many
    results there are."""
    print(f"pipeline: {ran.n_msgs_read} messages read, {ran.n_results_produced} results")
    records = read_results(config_file, results_topic)
    results = {(r["file"]["relative_path"], r["analysis"]): r["result"] for r in records}
    reports = [value for value, key in _read_all(bootstrap, dead_topic) if key]
    # the ingest's reports (a file that could not be rebuilt) and the analyses' (a
    # file an analysis could not take: "analysis" names it)
    failed = {value["file"]: value for value in reports if "analysis" not in value}
    declined = {
        (value["file"], value["analysis"]): value for value in reports if "analysis" in value
    }
    problems = _check(expected, results, failed, corrupt)
    print(f"\n{'file':28} {'analysis':15} {'status':7} key figures")
    for (relative, analysis), result in sorted(results.items()):
        bad = any(f" {relative}" in p for p in problems)
        status = "BAD" if bad else "ok"
        print(f"{relative:28} {analysis:15} {status:7} {_figures(analysis, result)}")
    for relative, report in sorted(failed.items()):
        print(f"{relative:28} {'-':15} {'failed':7} {report['reason']}: {report['detail']}")
    for (relative, analysis), report in sorted(declined.items()):
        why = report["reason"].strip().splitlines()[-1]  # the exception, not its trace
        print(f"{relative:28} {analysis:15} {'n/a':7} {why}")
    plots = sorted((output / "plots").rglob("*.png"))
    print(f"\n{len(plots)} plots under {output / 'plots'}" if plots else "\nno plots")
    plot_problems, skipped = _check_plots(results)
    problems += plot_problems
    if skipped:
        print(f"plots skipped for {skipped} datasets: {MISSING}")
    _save_tables(records, output, config_file, results_topic)
    return problems, len(results)


def _start_page(
    config_file: Path, results_topic: str, dead_topic: str, output: Path, port: int
) -> Any:
    """The results page for the demo's topics (the progress of its run once it joined Ray)."""
    from reproducer.config import load_config  # noqa: PLC0415
    from reproducer.web import FeedSettings, WebSettings, start  # noqa: PLC0415
    from reproducer.web.feed import runs_on  # noqa: PLC0415

    config = load_config(config_file)
    page = start(
        WebSettings(FeedSettings(config, results_topic, dead_topic), port=port, output_dir=output),
        runs_on(config, None),
    )
    print(f"results page: {page.url} (live while the pipeline runs)")
    return page


def _save_tables(records: ResultSet, output: Path, config_file: Path, results_topic: str) -> None:
    """The results as a table beside the plots (CSV, and Parquet with pyarrow), and how
    to read them back from the topic."""
    written = [output / "results.csv"]
    write_rows(records, "csv", written[0])
    try:
        write_rows(records, "parquet", output / "results.parquet")
        written.append(output / "results.parquet")
    except ReproducerError:  # no pyarrow: the [results] extra is not installed
        pass
    print(f"results:  {len(records)} rows in {' and '.join(str(p) for p in written)}")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # a broker that outlives the demo
        print(
            f"read back: reproducer results --config {config_file} --topic_name "
            f"{results_topic} --format csv"
        )


def _check_plots(results: dict[tuple[str, str], dict[str, Any]]) -> tuple[list[str], int]:
    """Every dataset of a spectrum-peaks result has a plot whose claim check matches, or
    says it was skipped because matplotlib is not installed (a plain install: the plots
    come with the ``plots`` extra); the problems, and how many were skipped so."""
    problems, skipped = [], 0
    for (relative, analysis), result in results.items():
        if analysis != "spectrum-peaks":
            continue
        for entry in result["datasets"]:
            plot = entry.get("plot")
            if plot is None and entry.get("plot_skipped") == MISSING and not available():
                skipped += 1
                continue
            if plot is None:
                problems.append(
                    f"no plot of {entry['path']} in {relative}: {entry.get('plot_skipped')}"
                )
                continue
            path = Path(plot["path"])
            data = path.read_bytes() if path.is_file() else b""
            if (len(data), hashlib.sha256(data).hexdigest()) != (plot["size"], plot["sha256"]):
                problems.append(f"the plot {path} does not match its claim check")
    return problems, skipped


def _check(
    expected: dict[str, str],
    results: dict[tuple[str, str], dict[str, Any]],
    failed: dict[str, dict[str, Any]],
    corrupt: str,
) -> list[str]:
    problems = []
    for relative, digest in expected.items():
        if results.get((relative, "file-check"), {}).get("sha512") != digest:
            problems.append(f"no correct file-check result for {relative}")
        wanted = {"hdf5-summary", "spectrum-peaks"} if relative.endswith(".h5") else set()
        wanted |= {"metadata-json"} if relative.startswith("xrd/") else set()
        problems += [
            f"no {name} result for {relative}"
            for name in wanted - {name for (rel, name) in results if rel == relative}
        ]
    if corrupt not in failed or failed[corrupt].get("reason") != "hash_mismatch":
        problems.append(f"{corrupt} was not reported as corrupt")
    if any(rel == corrupt for rel, _ in results):
        problems.append(f"{corrupt} was analysed")
    return problems
