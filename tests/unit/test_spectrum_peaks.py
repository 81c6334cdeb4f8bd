"""The spectrum-peaks analysis on generated spectra and images, called directly."""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
import pytest

from analyses import BadInput, resolve
from analyses.spectrum_peaks import SpectrumPeaks, find_peaks, radial_power


@dataclass
class File:
    data: bytes
    full_filepath: Path | None = None
    relative_filepath: PurePosixPath = field(default_factory=lambda: PurePosixPath("run/a.h5"))

    @property
    def buffer(self) -> memoryview:
        return memoryview(self.data)


def spectrum(n: int = 4096, centres: tuple[int, ...] = (700, 2100, 3500)) -> np.ndarray:
    rng = np.random.default_rng(5)
    x = np.arange(n)
    peaks = sum(
        h * np.exp(-0.5 * ((x - c) / 12) ** 2) for c, h in zip(centres, (90, 60, 40), strict=True)
    )
    return peaks + rng.normal(10, 1, n)


def stripes(side: int = 256, period: int = 8) -> np.ndarray:
    x = np.arange(side)
    return np.sin(2 * np.pi * x / period)[None, :] * np.ones((side, 1)) + 5


def test_peaks_of_a_noisy_spectrum_are_found_strongest_first() -> None:
    peaks = find_peaks(spectrum())
    assert [p["index"] for p in peaks] == pytest.approx([700, 2100, 3500], abs=3)
    assert peaks[0]["height"] > peaks[1]["height"] > peaks[2]["height"]
    assert all(20 <= p["width"] <= 40 for p in peaks)  # FWHM of sigma 12 is about 28
    assert find_peaks(np.random.default_rng(1).normal(0, 1, 1000)) == []  # noise only


def test_the_radial_power_spectrum_finds_the_stripes_frequency() -> None:
    frequencies, power = radial_power(stripes(period=8))
    assert frequencies[int(np.argmax(power[1:])) + 1] == pytest.approx(1 / 8, abs=0.01)


def test_an_hdf5_file_gives_peaks_images_and_png_plots(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("scan/spectrum", data=spectrum())
        f.create_dataset("scan/image", data=stripes().astype(np.float32))
        f.create_dataset("scan/tiny", data=np.arange(3))  # too short: skipped
        f.create_dataset("labels", data=np.array([b"x"] * 40))  # not numeric: skipped
    analysis = SpectrumPeaks()
    analysis.output_dir = tmp_path / "out"
    result = analysis.analyze(File(buffer.getvalue()))
    by_path = {d["path"]: d for d in result["datasets"]}
    assert set(by_path) == {"/scan/spectrum", "/scan/image"}
    assert [p["index"] for p in by_path["/scan/spectrum"]["peaks"]] == pytest.approx(
        [700, 2100, 3500], abs=3
    )
    assert by_path["/scan/image"]["strongest_frequency"] == pytest.approx(1 / 8, abs=0.01)
    for entry in by_path.values():
        plot = entry["plot"]
        png = Path(plot["path"]).read_bytes()
        assert Path(plot["path"]).is_relative_to(tmp_path / "out" / "plots" / "run" / "a.h5")
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) == plot["size"]
        assert hashlib.sha256(png).hexdigest() == plot["sha256"]
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
        assert len(zlib.decompress(idat)) == height * (width + 1)  # one filter byte a row


def test_without_an_output_folder_there_are_no_plots_and_bad_files_fail_clearly() -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("s", data=spectrum())
    (entry,) = SpectrumPeaks().analyze(File(buffer.getvalue()))["datasets"]
    assert "plot" not in entry
    with pytest.raises(BadInput, match=r"run/a\.h5 is not a readable HDF5 file"):
        SpectrumPeaks().analyze(File(buffer.getvalue()[:100]))


def test_it_is_found_by_name() -> None:
    (spec,) = resolve("spectrum-peaks")
    assert spec.factory is SpectrumPeaks
