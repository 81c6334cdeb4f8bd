"""The hdf5-summary analysis on generated HDF5 files, called directly."""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
import pytest

import analyses.hdf5_summary as hdf5_summary
from analyses import BadInput, resolve
from analyses.hdf5_summary import HDF5Summary


@dataclass
class File:
    """What an analysis sees of a rebuilt file: bytes (memory mode) or a path (disk)."""

    data: bytes
    full_filepath: Path | None = None
    relative_filepath: PurePosixPath = field(default_factory=lambda: PurePosixPath("run/scan.h5"))

    @property
    def buffer(self) -> memoryview:
        return memoryview(self.data)


def sample(path: Path | None = None) -> bytes:
    rng = np.random.default_rng(3)
    target = io.BytesIO() if path is None else path
    with h5py.File(target, "w") as f:
        f.attrs["instrument"] = "XRD-3"
        f.attrs["angles"] = np.array([10.0, 20.0])
        scan = f.create_group("scan/deep")
        image = rng.normal(100, 5, (64, 48)).astype(np.float32)
        image[3, 4] = np.nan
        d = scan.create_dataset("image", data=image, chunks=(8, 48), compression="gzip")
        d.attrs["units"] = b"counts"
        f.create_dataset("ints", data=np.arange(-5, 5, dtype=np.int16))
        f.create_dataset("flags", data=np.array([True, False, True]))
        f.create_dataset("waves", data=np.array([3 + 4j, 0j], dtype=np.complex64))
        f.create_dataset("empty", shape=(0, 3), dtype=np.float64)
        f.create_dataset("null", data=h5py.Empty("f8"))
        f.create_dataset("names", data=np.array([b"a", b"bc"]))
        f.create_dataset("scalar", data=7.5)
    return target.getvalue() if isinstance(target, io.BytesIO) else path.read_bytes()


def by_path(result: dict) -> dict[str, dict]:
    return {d["path"]: d for d in result["datasets"]}


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_groups_datasets_layouts_attributes_and_statistics(mode: str, tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    data = sample(path)
    file = File(data, path if mode == "disk" else None)
    result = HDF5Summary().analyze(file)
    json.dumps(result, allow_nan=False)  # a result message is strict JSON
    assert {g["path"] for g in result["groups"]} == {"/", "/scan", "/scan/deep"}
    assert result["groups"][0]["attrs"] == {"instrument": "XRD-3", "angles": [10.0, 20.0]}
    datasets = by_path(result)
    assert result["n_datasets"] == len(datasets) == 8
    image = datasets["/scan/deep/image"]
    assert (image["shape"], image["dtype"], image["chunks"]) == ([64, 48], "float32", [8, 48])
    assert image["compression"] == "gzip" and image["attrs"] == {"units": "counts"}
    with h5py.File(path) as f:
        values = f["scan/deep/image"][()].astype(np.float64)
    stats = image["stats"]
    assert stats["count"] == values.size - 1 and stats["nan_count"] == 1
    assert stats["min"] == pytest.approx(np.nanmin(values))
    assert stats["max"] == pytest.approx(np.nanmax(values))
    assert stats["mean"] == pytest.approx(np.nanmean(values))
    assert stats["std"] == pytest.approx(np.nanstd(values))
    assert datasets["/ints"]["stats"] | {} == {
        "count": 10,
        "nan_count": 0,
        "min": -5.0,
        "max": 4.0,
        "mean": -0.5,
        "std": pytest.approx(np.std(np.arange(-5, 5))),
    }
    assert datasets["/flags"]["stats"]["mean"] == pytest.approx(2 / 3)
    assert datasets["/waves"]["stats"]["max"] == 5.0  # the magnitude of complex values
    assert datasets["/empty"]["stats"]["count"] == 0 and datasets["/empty"]["shape"] == [0, 3]
    assert datasets["/null"]["shape"] is None and datasets["/null"]["stats"]["count"] == 0
    assert datasets["/names"]["stats"] is None  # strings: described, no statistics
    assert datasets["/scalar"]["stats"]["mean"] == 7.5


def test_statistics_are_merged_exactly_across_many_slabs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hdf5_summary, "SLAB_ELEMENTS", 7)  # rows of 48 > 7: split further
    path = tmp_path / "scan.h5"
    sample(path)
    with h5py.File(path) as f:
        values = f["scan/deep/image"][()].astype(np.float64)
    stats = by_path(HDF5Summary().analyze(File(b"", path)))["/scan/deep/image"]["stats"]
    assert stats["count"] == np.count_nonzero(~np.isnan(values))
    assert stats["mean"] == pytest.approx(np.nanmean(values), rel=1e-12)
    assert stats["std"] == pytest.approx(np.nanstd(values), rel=1e-9)


def test_a_large_dataset_is_read_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 MiB of float64 with 1 MiB slabs: the peak of numpy's allocations stays a few
    slabs (the way a 2 GiB dataset does not need 2 GiB)."""
    monkeypatch.setattr(hdf5_summary, "SLAB_ELEMENTS", 1 << 17)
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("big", shape=(1 << 23,), dtype=np.float64, chunks=(1 << 16,))
        for start in range(0, 1 << 23, 1 << 20):
            d[start : start + (1 << 20)] = np.arange(start, start + (1 << 20), dtype=np.float64)
    tracemalloc.start()
    try:
        stats = by_path(HDF5Summary().analyze(File(b"", path)))["/big"]["stats"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["count"] == 1 << 23 and stats["max"] == (1 << 23) - 1
    assert stats["mean"] == pytest.approx(((1 << 23) - 1) / 2)
    assert peak < 8 << 20, peak  # the dataset is 64 MiB


def test_a_truncated_file_is_a_clear_failure(tmp_path: Path) -> None:
    data = sample(tmp_path / "scan.h5")
    with pytest.raises(BadInput, match=r"run/scan\.h5 is not a readable HDF5 file"):
        HDF5Summary().analyze(File(data[: len(data) // 2]))
    with pytest.raises(BadInput, match="truncated, or not HDF5"):
        HDF5Summary().analyze(File(b"not hdf5 at all"))


def test_it_is_found_by_name_with_its_file_pattern() -> None:
    (spec,) = resolve("hdf5-summary")
    assert spec.factory is HDF5Summary
    assert spec.files is not None
    assert re.match(spec.files, "a/b/scan.H5") and not re.match(spec.files, "a/b/scan.csv")
