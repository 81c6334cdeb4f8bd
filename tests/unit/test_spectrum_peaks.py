"""The spectrum-peaks analysis on HDF5 files of generated spectra and images, and its
figures, called directly."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import matplotlib.image  # the [plots] extra, in the test set-up
import numpy as np
import pytest

from analyses import BadInput, plots, resolve
from analyses.spectrum_peaks import SpectrumPeaks, find_peaks, radial_power

CENTRES = (700, 2100, 3500)


@dataclass
class File:
    data: bytes
    full_filepath: Path | None = None
    relative_filepath: PurePosixPath = field(default_factory=lambda: PurePosixPath("run/a.h5"))

    @property
    def buffer(self) -> memoryview:
        return memoryview(self.data)


def spectrum(n: int = 4096, centres: tuple[int, ...] = CENTRES) -> np.ndarray:
    rng = np.random.default_rng(5)
    x = np.arange(n)
    peaks = sum(
        h * np.exp(-0.5 * ((x - c) / 12) ** 2) for c, h in zip(centres, (90, 60, 40), strict=True)
    )
    return peaks + rng.normal(10, 1, n)


def stripes(side: int = 256, period: int = 8) -> np.ndarray:
    x = np.arange(side)
    return np.sin(2 * np.pi * x / period)[None, :] * np.ones((side, 1)) + 5


def hdf5(tmp_path: Path, fill: Callable[[h5py.File], None]) -> File:
    """A real HDF5 file on disk, filled by ``fill``, as the pipeline hands it over."""
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        fill(f)
    return File(path.read_bytes(), full_filepath=path)


def nexus(f: h5py.File) -> None:
    """An NXdata-like group: counts against two_theta (10 to 20 degrees), and an image
    with axes y (rows) and none for the columns."""
    data = f.create_group("entry/data")
    data.attrs["signal"] = "counts"
    data.attrs["axes"] = "two_theta"
    counts = data.create_dataset("counts", data=spectrum())
    counts.attrs.update({"long_name": "intensity", "units": "counts"})
    data.create_dataset("two_theta", data=np.linspace(10.0, 20.0, 4096)).attrs["units"] = "degrees"
    scan = f.create_group("entry/scan")
    scan.attrs["signal"] = "image"
    scan.attrs["axes"] = np.array([b"height", b"."])
    scan.create_dataset("image", data=stripes()).attrs["units"] = "K"
    scan.create_dataset("height", data=np.linspace(0.0, 5.0, 256)).attrs["units"] = "mm"


def by_path(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["path"]: d for d in result["datasets"]}


def capture_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the analysis renders, kept for inspection (they are still rendered)."""
    figures: list[Any] = []
    render = plots.render_png

    def keep(fig: Any, dpi: int = plots.DPI) -> bytes:
        figures.append(fig)
        return render(fig, dpi)

    monkeypatch.setattr(plots, "render_png", keep)
    return figures


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of the PNG, decoded: it is a real image, not just a header."""
    height, width, _ = matplotlib.image.imread(io.BytesIO(png), format="png").shape
    return width, height


def test_peaks_of_a_noisy_spectrum_are_found_strongest_first() -> None:
    peaks = find_peaks(spectrum())
    assert [p["index"] for p in peaks] == pytest.approx(CENTRES, abs=3)
    assert peaks[0]["height"] > peaks[1]["height"] > peaks[2]["height"]
    assert all(20 <= p["width"] <= 40 for p in peaks)  # FWHM of sigma 12 is about 28
    assert any(p["width"] != int(p["width"]) for p in peaks)  # interpolated: scipy's
    assert find_peaks(np.random.default_rng(1).normal(0, 1, 1000)) == []  # noise only


def test_without_scipy_the_numpy_rule_finds_the_same_peaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "scipy.signal", None)  # import scipy.signal fails
    peaks = find_peaks(spectrum(), axis=np.linspace(10.0, 20.0, 4096))
    assert [p["index"] for p in peaks] == pytest.approx(CENTRES, abs=3)
    assert peaks[0]["height"] > peaks[1]["height"] > peaks[2]["height"]
    assert all(20 <= p["width"] <= 40 and p["width"] == int(p["width"]) for p in peaks)
    assert [p["position"] for p in peaks] == pytest.approx(
        [10 + 10 * p["index"] / 4095 for p in peaks]
    )
    assert find_peaks(np.random.default_rng(1).normal(0, 1, 1000)) == []


def test_the_radial_power_spectrum_finds_the_stripes_frequency() -> None:
    frequencies, power = radial_power(stripes(period=8))
    assert frequencies[int(np.argmax(power[1:])) + 1] == pytest.approx(1 / 8, abs=0.01)


def test_an_hdf5_file_gives_peaks_images_and_png_plots(tmp_path: Path) -> None:

    def fill(f: h5py.File) -> None:
        f.create_dataset("scan/spectrum", data=spectrum())
        f.create_dataset("scan/image", data=stripes().astype(np.float32))
        f.create_dataset("scan/tiny", data=np.arange(3))  # too short: skipped
        f.create_dataset("labels", data=np.array([b"x"] * 40))  # not numeric: skipped

    analysis = SpectrumPeaks()
    analysis.output_dir = tmp_path / "out"
    found = by_path(analysis.analyze(hdf5(tmp_path, fill)))
    assert set(found) == {"/scan/spectrum", "/scan/image"}
    assert [p["index"] for p in found["/scan/spectrum"]["peaks"]] == pytest.approx(CENTRES, abs=3)
    assert all("position" not in p for p in found["/scan/spectrum"]["peaks"])  # no axis
    assert "axis" not in found["/scan/spectrum"] and "axes" not in found["/scan/image"]
    assert found["/scan/image"]["strongest_frequency"] == pytest.approx(1 / 8, abs=0.01)
    for entry in found.values():
        plot = entry["plot"]
        png = Path(plot["path"]).read_bytes()
        assert Path(plot["path"]).is_relative_to(tmp_path / "out" / "plots" / "run" / "a.h5")
        assert len(png) == plot["size"] and hashlib.sha256(png).hexdigest() == plot["sha256"]
        width, height = png_size(png)
        assert width > 400 and height > 300
    assert set(analysis.take_attachments()) == {
        "plots/run/a.h5/scan_spectrum.png",
        "plots/run/a.h5/scan_image.png",
    }


def test_nexus_axes_give_positions_in_their_units_and_label_the_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = capture_figures(monkeypatch)
    analysis = SpectrumPeaks()
    analysis.output_dir = tmp_path / "out"
    found = by_path(analysis.analyze(hdf5(tmp_path, nexus)))
    counts = found["/entry/data/counts"]
    assert counts["axis"] == {"name": "two_theta", "units": "degrees"}
    axis = np.linspace(10.0, 20.0, 4096)
    assert [p["index"] for p in counts["peaks"]] == pytest.approx(CENTRES, abs=3)
    assert [p["position"] for p in counts["peaks"]] == pytest.approx(
        [axis[p["index"]] for p in counts["peaks"]]
    )
    assert found["/entry/scan/image"]["axes"] == [{"name": "height", "units": "mm"}, None]
    assert "/entry/data/two_theta" not in found  # the axis itself: positions, not data
    titles = {fig.axes[0].get_title() or fig.get_suptitle(): fig for fig in figures}
    spectrum_fig = titles["/entry/data/counts in run/a.h5"]
    assert spectrum_fig.axes[0].get_xlabel() == "two_theta (degrees)"
    assert spectrum_fig.axes[0].get_ylabel() == "intensity (counts)"
    image_fig = titles["/entry/scan/image in run/a.h5"]
    (picture,) = [ax for ax in image_fig.axes if ax.images]
    assert picture.get_ylabel() == "height (mm)" and picture.get_xlabel() == "column (pixel)"
    assert picture.images[0].colorbar.ax.get_ylabel() == "image (K)"
    assert len(figures) == 2  # no plot of the axis


def test_the_spectrum_figure_has_labelled_axes_and_marked_peaks() -> None:
    x = np.linspace(10.0, 20.0, 4096)
    mark = plots.PeakMark(x=x[700], y=100.0, left=x[685], right=x[715], level=55.0)
    fig = plots.spectrum_figure(
        x,
        spectrum(),
        [mark],
        x_label="two_theta (degrees)",
        y_label="intensity (counts)",
        title="/entry/data/counts in run/a.h5",
    )
    (ax,) = fig.axes
    assert ax.get_xlabel() == "two_theta (degrees)" and ax.get_ylabel() == "intensity (counts)"
    assert "/entry/data/counts" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == [f"{x[700]:.6g}"]  # its position
    assert len(ax.collections) == 1  # its width
    width, height = png_size(plots.render_png(fig))
    assert width > 400 and height > 300


def test_the_image_figure_has_a_colour_bar_and_a_log_power_spectrum() -> None:
    image = matplotlib.image
    frequencies, power = radial_power(stripes())
    fig = plots.image_figure(
        stripes(),
        frequencies,
        power,
        strongest=0.125,
        value_label="temperature (K)",
        title="/scan/image in run/a.h5",
    )
    assert len(fig.axes) == 3  # the image, its colour bar, the power spectrum
    (picture,) = [ax for ax in fig.axes if ax.images]
    assert isinstance(picture.images[0], image.AxesImage)
    assert picture.get_xlabel() == "column (pixel)" and picture.get_ylabel() == "row (pixel)"
    assert picture.images[0].colorbar.ax.get_ylabel() == "temperature (K)"
    (spectrum_ax,) = [ax for ax in fig.axes if ax.get_title() == "radial power spectrum"]
    assert spectrum_ax.get_yscale() == "log"
    assert spectrum_ax.get_xlabel() == "spatial frequency (cycles/pixel)"
    assert "0.125" in spectrum_ax.get_legend().get_texts()[0].get_text()
    assert "/scan/image" in fig.get_suptitle()
    width, height = png_size(plots.render_png(fig))
    assert width > 400 and height > 300


def test_without_matplotlib_entries_say_why_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "available", lambda: False)
    analysis = SpectrumPeaks()
    analysis.output_dir = tmp_path / "out"
    found = by_path(analysis.analyze(hdf5(tmp_path, nexus)))
    assert found and all(
        entry["plot"] is None and entry["plot_skipped"] == plots.MISSING for entry in found.values()
    )
    assert "pip install 'ray-reproducer[plots]'" in plots.MISSING
    assert not (tmp_path / "out").exists() and analysis.take_attachments() == {}


def test_a_missing_matplotlib_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plots.available.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="analyses.plots"):
            assert not plots.available() and not plots.available()
    finally:
        plots.available.cache_clear()
    assert [r.getMessage() for r in caplog.records] == [f"plots are skipped: {plots.MISSING}"]


def test_non_finite_values_are_skipped_or_json_nulls(tmp_path: Path) -> None:
    def fill(f: h5py.File) -> None:
        values = spectrum()
        values[[5, 2000]] = [np.nan, np.inf]
        f.create_dataset("spectrum", data=values)
        image = stripes()
        image[0, 0], image[9, 9] = np.nan, np.inf
        f.create_dataset("image", data=image)
        f.create_dataset("huge", data=stripes() * 1e200)  # its power overflows

    result = SpectrumPeaks().analyze(hdf5(tmp_path, fill))
    json.dumps(result, allow_nan=False)  # raises on NaN or infinity
    found = by_path(result)
    assert [p["index"] for p in found["/spectrum"]["peaks"]] == pytest.approx(CENTRES, abs=3)
    assert found["/image"]["strongest_frequency"] == pytest.approx(1 / 8, abs=0.01)
    assert None not in found["/image"]["radial_power"]
    assert None in found["/huge"]["radial_power"]


def test_without_an_output_folder_there_are_no_plots_and_bad_files_fail_clearly() -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("s", data=spectrum())
    (entry,) = SpectrumPeaks().analyze(File(buffer.getvalue()))["datasets"]
    assert "plot" not in entry and "plot_skipped" not in entry
    with pytest.raises(BadInput, match=r"run/a\.h5 is not a readable HDF5 file"):
        SpectrumPeaks().analyze(File(buffer.getvalue()[:100]))


def test_it_is_found_by_name() -> None:
    (spec,) = resolve("spectrum-peaks")
    assert spec.factory is SpectrumPeaks
