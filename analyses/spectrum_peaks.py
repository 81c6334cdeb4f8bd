"""``spectrum-peaks``: peaks of 1-D spectra and radial power spectra of 2-D images, with
plots, from the numeric datasets of an HDF5 file (numpy; CPU-heavy on large images).

- A 1-D dataset of at least :data:`MIN_POINTS` values is a spectrum: it is smoothed, and
  its peaks are the local maxima standing out of the noise (more than :data:`THRESHOLD`
  robust standard deviations above the median), each with its position, height and
  width at half height.
- A 2-D dataset of at least ``MIN_POINTS`` x ``MIN_POINTS`` is an image: its radial power
  spectrum (the mean of ``|FFT|^2`` over rings of equal spatial frequency) and its
  strongest non-zero frequency are reported. Larger images are analysed on a central crop
  of :data:`MAX_SIDE` x ``MAX_SIDE``.

With an output folder, each analysed dataset gets a PNG plot under
``<output_dir>/plots/<file>/``; the result names it with its size and SHA-256 (a claim
check: the plot stays on the node that made it, the message stays small). Example::

    {"datasets": [{"path": "/scan/spectrum", "kind": "spectrum", "n_points": 4096,
                   "peaks": [{"index": 812, "height": 93.1, "width": 14.2}, ...],
                   "plot": {"path": ".../plots/run/a.h5/scan_spectrum.png",
                            "size": 3912, "sha256": "9f2c..."}},
                  {"path": "/scan/image", "kind": "image", "shape": [512, 512],
                   "strongest_frequency": 0.125, "radial_power": [...64 values...]}]}
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from analyses.base import Analysis, BadInput
from analyses.registry import register

__all__ = ["SpectrumPeaks", "find_peaks", "radial_power", "write_png"]

MIN_POINTS = 16
THRESHOLD = 5.0
MAX_SIDE = 2048
RADIAL_BINS = 64
MAX_SPECTRUM = 1 << 24  # longer 1-D datasets are not spectra


@register("spectrum-peaks", version="1", files=r"(?i).*\.(h5|hdf5|he5|nxs)$", num_cpus=0.5)
class SpectrumPeaks(Analysis):
    """Peaks of spectra and radial power spectra of images in an HDF5 file."""

    def analyze(self, datafile: Any) -> dict[str, Any]:
        path = getattr(datafile, "full_filepath", None)
        try:
            handle = (
                h5py.File(path, "r")
                if path is not None
                else h5py.File.in_memory(bytes(datafile.buffer))
            )
        except (OSError, ValueError) as exc:
            raise BadInput(
                f"{datafile.relative_filepath} is not a readable HDF5 file: {exc}"
            ) from exc
        plots = None
        if self.output_dir is not None:
            plots = Path(self.output_dir) / "plots" / str(datafile.relative_filepath)
        found: list[dict[str, Any]] = []
        with handle:
            handle.visititems(lambda name, item: _visit(name, item, found, plots))
        return {"datasets": found}


def _visit(name: str, item: Any, found: list[dict[str, Any]], plots: Path | None) -> None:
    if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "iuf" or not item.shape:
        return
    shape = item.shape
    if len(shape) == 1 and MIN_POINTS <= shape[0] <= MAX_SPECTRUM:
        values = np.asarray(item[()], dtype=np.float64)
        entry: dict[str, Any] = {
            "path": f"/{name}",
            "kind": "spectrum",
            "n_points": int(values.size),
            "peaks": find_peaks(values),
        }
        image = _line_plot(values, [p["index"] for p in entry["peaks"]])
    elif len(shape) == 2 and min(shape) >= MIN_POINTS:
        rows, cols = (min(side, MAX_SIDE) for side in shape)
        top, left = (shape[0] - rows) // 2, (shape[1] - cols) // 2
        values = np.asarray(item[top : top + rows, left : left + cols], dtype=np.float64)
        frequencies, power = radial_power(values)
        strongest = int(np.argmax(power[1:]) + 1) if power.size > 1 else 0
        entry = {
            "path": f"/{name}",
            "kind": "image",
            "shape": list(shape),
            "analysed": [rows, cols],
            "strongest_frequency": round(float(frequencies[strongest]), 6),
            "radial_power": [_number(p) for p in power],
        }
        image = _line_plot(np.log10(power + 1e-12), [strongest])
    else:
        return
    if plots is not None:
        target = plots / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png")
        entry["plot"] = write_png(target, image)
    found.append(entry)


def find_peaks(values: np.ndarray, threshold: float = THRESHOLD) -> list[dict[str, Any]]:
    """Local maxima of the smoothed values that stand more than ``threshold`` robust
    standard deviations above the median, strongest first (at most 50)."""
    if values.size < 3:
        return []
    finite = np.nan_to_num(values, nan=float(np.nanmedian(values)))
    width = max(1, finite.size // 512)
    kernel = np.ones(2 * width + 1) / (2 * width + 1)
    smooth = np.convolve(finite, kernel, mode="same")
    median = float(np.median(smooth))
    spread = 1.4826 * float(np.median(np.abs(smooth - median))) or float(np.std(smooth)) or 1.0
    inner = smooth[1:-1]
    is_peak = (inner > smooth[:-2]) & (inner >= smooth[2:]) & (inner > median + threshold * spread)
    indices = np.flatnonzero(is_peak) + 1
    peaks = []
    for index in sorted(indices, key=lambda i: -smooth[i])[:50]:
        half = median + (smooth[index] - median) / 2
        left = index
        while left > 0 and smooth[left] > half:
            left -= 1
        right = index
        while right < smooth.size - 1 and smooth[right] > half:
            right += 1
        peaks.append(
            {"index": int(index), "height": _number(finite[index]), "width": int(right - left)}
        )
    return peaks


def radial_power(image: np.ndarray, bins: int = RADIAL_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(spatial frequency in cycles per pixel, mean power) over ``bins`` rings."""
    image = np.nan_to_num(image - np.nanmean(image))
    power = np.abs(np.fft.fftshift(np.fft.fft2(image))) ** 2
    rows, cols = image.shape
    fy = np.fft.fftshift(np.fft.fftfreq(rows))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(cols))[None, :]
    radius = np.hypot(fy, fx)
    edges = np.linspace(0.0, 0.5, bins + 1)
    which = np.clip(np.digitize(radius.ravel(), edges) - 1, 0, bins - 1)
    total = np.bincount(which, weights=power.ravel(), minlength=bins)
    count = np.bincount(which, minlength=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, total / np.maximum(count, 1)


def _line_plot(values: np.ndarray, marks: list[int], height: int = 200) -> np.ndarray:
    """A white-on-black line plot, ``marks`` as vertical lines, at most 1024 wide."""
    finite = np.nan_to_num(values.astype(np.float64))
    width = min(1024, max(finite.size, 2))
    columns = np.linspace(0, finite.size - 1, width).astype(int)
    low, high = float(finite.min()), float(finite.max())
    scale = (height - 1) / (high - low) if high > low else 0.0
    ys = (height - 1 - (finite[columns] - low) * scale).astype(int)
    image = np.zeros((height, width), dtype=np.uint8)
    for x in range(width):
        y0, y1 = sorted((ys[x], ys[x - 1] if x else ys[x]))
        image[y0 : y1 + 1, x] = 255
    for mark in marks:
        image[:, int(mark * (width - 1) / max(finite.size - 1, 1))] |= 128
    return image


def write_png(path: Path, image: np.ndarray) -> dict[str, Any]:
    """Write an 8-bit greyscale PNG (no imaging library needed); returns its claim check."""
    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(image, np.uint8))
    height, width = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    temp.write_bytes(png)
    temp.replace(path)
    return {"path": str(path), "size": len(png), "sha256": hashlib.sha256(png).hexdigest()}


def _number(value: Any) -> float | str:
    number = float(value)
    return round(number, 6) if np.isfinite(number) else str(number)
