"""``spectrum-peaks``: peaks of 1-D spectra and radial power spectra of 2-D images, with
plots, from the numeric datasets of an HDF5 file (numpy, scipy.signal when installed;
CPU-heavy on large images).

- A 1-D dataset of at least :data:`MIN_POINTS` values is a spectrum: it is smoothed, and
  its peaks are those standing out of the noise by more than :data:`THRESHOLD` robust
  standard deviations (above the median, and above their surroundings: their
  prominence), each with its index, height and width at half prominence in samples
  (``scipy.signal.find_peaks`` and ``peak_widths``; without scipy, local maxima above the
  median and their width at half height).
- A 2-D dataset of at least ``MIN_POINTS`` x ``MIN_POINTS`` is an image: its radial power
  spectrum (the mean of ``|FFT|^2`` over rings of equal spatial frequency) and its
  strongest non-zero frequency are reported. Larger images are analysed on a central crop
  of :data:`MAX_SIDE` x ``MAX_SIDE``.
- NeXus axes: when the dataset is its group's ``signal`` and the group's ``axes`` name a
  1-D sibling of the right length, its values are the positions (``position`` of each
  peak, in its ``units``) and label the plot; the entry names it under ``axis`` (under
  ``axes``, one per dimension, for an image).

With an output folder, each analysed dataset gets a matplotlib plot (the ``plots`` extra)
as ``plots/<file>/<dataset>.png`` there, attached with :meth:`Analysis.attach`: the
result names it with its size and SHA-256 (a claim check: the message stays small).
Without matplotlib, ``plot`` is ``null`` and ``plot_skipped`` says why. Non-finite
numbers are ``null``. Example::

    {"datasets": [{"path": "/entry/data/counts", "kind": "spectrum", "n_points": 4096,
                   "axis": {"name": "two_theta", "units": "degrees"},
                   "peaks": [{"index": 812, "height": 93.1, "width": 28.43,
                              "position": 11.9829}, ...],
                   "plot": {"path": ".../plots/run/a.h5/entry_data_counts.png",
                            "size": 48213, "sha256": "9f2c..."}},
                  {"path": "/scan/image", "kind": "image", "shape": [512, 512],
                   "analysed": [512, 512], "strongest_frequency": 0.125,
                   "radial_power": [...64 values...], "plot": null,
                   "plot_skipped": "matplotlib is not installed (pip install ...)"}]}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from analyses import plots
from analyses.base import Analysis, BadInput
from analyses.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SpectrumPeaks", "find_peaks", "radial_power"]

MIN_POINTS = 16
THRESHOLD = 5.0
MAX_SIDE = 2048
RADIAL_BINS = 64
MAX_PEAKS = 50
MAX_SPECTRUM = 1 << 24  # longer 1-D datasets are not spectra

_Draw = Callable[[], "Figure"]  # makes a dataset's figure, only if it is to be plotted


@register("spectrum-peaks", version="2", files=r"(?i).*\.(h5|hdf5|he5|nxs)$", num_cpus=0.5)
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
        file = str(datafile.relative_filepath)
        found: list[dict[str, Any]] = []
        with handle:
            handle.visititems(lambda name, item: self._visit(file, name, item, found))
        return {"datasets": found}

    def _visit(self, file: str, name: str, item: Any, found: list[dict[str, Any]]) -> None:
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "iuf" or not item.shape:
            return
        if _is_an_axis(item):  # the positions of its group's signal, not a measurement
            return
        title = f"/{name} in {file}"
        if len(item.shape) == 1 and MIN_POINTS <= item.shape[0] <= MAX_SPECTRUM:
            entry, draw = _spectrum(name, item, title)
        elif len(item.shape) == 2 and min(item.shape) >= MIN_POINTS:
            entry, draw = _image(name, item, title)
        else:
            return
        if self.output_dir is not None:
            if plots.available():
                relative = f"plots/{file}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.png"
                entry["plot"] = self.attach(relative, plots.render_png(draw()))
            else:
                entry.update(plot=None, plot_skipped=plots.MISSING)
        found.append(entry)


@dataclass(frozen=True)
class _Axis:
    """A NeXus axis of one dimension: the values of a sibling dataset, in its units."""

    name: str
    units: str | None
    label: str
    values: np.ndarray

    def described(self) -> dict[str, str | None]:
        return {"name": self.name, "units": self.units}


@dataclass(frozen=True)
class _Peak:
    """A peak in samples: its top, and its width from ``left`` to ``right`` (fractional
    indices) at ``level`` on the smoothed values."""

    index: int
    height: float
    left: float
    right: float
    level: float


def _spectrum(name: str, item: h5py.Dataset, title: str) -> tuple[dict[str, Any], _Draw]:
    values = np.asarray(item[()], dtype=np.float64)
    (axis,) = _nexus_axes(item)
    peaks = _peaks(values, THRESHOLD)
    entry: dict[str, Any] = {"path": f"/{name}", "kind": "spectrum", "n_points": values.size}
    if axis is not None:
        entry["axis"] = axis.described()
    entry["peaks"] = [_summary(peak, axis.values if axis is not None else None) for peak in peaks]
    x = axis.values if axis is not None else np.arange(values.size, dtype=np.float64)

    def draw() -> Figure:
        samples = np.arange(values.size)
        marks = [
            plots.PeakMark(
                x=float(x[p.index]),
                y=p.height,
                left=float(np.interp(p.left, samples, x)),
                right=float(np.interp(p.right, samples, x)),
                level=p.level,
            )
            for p in peaks
        ]
        return plots.spectrum_figure(
            x,
            values,
            marks,
            x_label=axis.label if axis is not None else "index",
            y_label=_label(item),
            title=title,
        )

    return entry, draw


def _image(name: str, item: h5py.Dataset, title: str) -> tuple[dict[str, Any], _Draw]:
    shape = item.shape
    rows, cols = (min(side, MAX_SIDE) for side in shape)
    top, left = (shape[0] - rows) // 2, (shape[1] - cols) // 2
    values = np.asarray(item[top : top + rows, left : left + cols], dtype=np.float64)
    frequencies, power = radial_power(values)
    strongest = float(frequencies[int(np.argmax(power[1:])) + 1]) if power.size > 1 else 0.0
    entry: dict[str, Any] = {
        "path": f"/{name}",
        "kind": "image",
        "shape": list(shape),
        "analysed": [rows, cols],
        "strongest_frequency": round(strongest, 6),
        "radial_power": [_number(p) for p in power],
    }
    y_axis, x_axis = _nexus_axes(item)
    if y_axis is not None or x_axis is not None:
        entry["axes"] = [a.described() if a is not None else None for a in (y_axis, x_axis)]

    def draw() -> Figure:
        return plots.image_figure(
            values,
            frequencies,
            power,
            strongest=strongest,
            value_label=_label(item),
            title=title,
            x=x_axis.values[left : left + cols] if x_axis is not None else None,
            y=y_axis.values[top : top + rows] if y_axis is not None else None,
            x_label=x_axis.label if x_axis is not None else "column (pixel)",
            y_label=y_axis.label if y_axis is not None else "row (pixel)",
        )

    return entry, draw


def find_peaks(
    values: np.ndarray, threshold: float = THRESHOLD, axis: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Peaks of the smoothed values standing out more than ``threshold`` robust standard
    deviations, strongest first (at most :data:`MAX_PEAKS`): ``index``, ``height``,
    ``width`` (samples) and, given the values' ``axis`` (as many values), ``position``."""
    return [_summary(peak, axis) for peak in _peaks(values, threshold)]


def _summary(peak: _Peak, axis: np.ndarray | None) -> dict[str, Any]:
    summary = {
        "index": peak.index,
        "height": _number(peak.height),
        "width": _number(peak.right - peak.left),
    }
    if axis is not None:
        summary["position"] = _number(axis[peak.index])
    return summary


def _peaks(values: np.ndarray, threshold: float) -> list[_Peak]:
    finite = np.isfinite(values)
    if values.size < 3 or not finite.any():
        return []
    filled = np.where(finite, values, np.median(values[finite]))
    width = max(1, filled.size // 512)
    kernel = np.ones(2 * width + 1) / (2 * width + 1)
    smooth = np.convolve(np.pad(filled, width, mode="edge"), kernel, mode="valid")
    median = float(np.median(smooth))
    spread = 1.4826 * float(np.median(np.abs(smooth - median))) or float(np.std(smooth)) or 1.0
    try:
        from scipy.signal import find_peaks as scipy_find_peaks  # noqa: PLC0415
        from scipy.signal import peak_widths  # noqa: PLC0415
    except ImportError:
        found = _numpy_peaks(smooth, median, median + threshold * spread)
    else:
        # above the noise floor like the numpy rule, and clear of its surroundings: noise
        # alone has a prominence of several standard deviations over a long spectrum
        indices, _ = scipy_find_peaks(
            smooth, height=median + threshold * spread, prominence=threshold * spread
        )
        indices = indices[np.argsort(-smooth[indices], kind="stable")[:MAX_PEAKS]]
        _, levels, lefts, rights = peak_widths(smooth, indices, rel_height=0.5)
        found = list(zip(indices, lefts, rights, levels, strict=True))
    return [
        _Peak(int(index), float(filled[index]), float(left), float(right), float(level))
        for index, left, right, level in found
    ]


def _numpy_peaks(
    smooth: np.ndarray, median: float, floor: float
) -> list[tuple[int, float, float, float]]:
    """Local maxima above ``floor``, strongest first, each with where it crosses half its
    height above the median: (index, left, right, level)."""
    inner = smooth[1:-1]
    is_peak = (inner > smooth[:-2]) & (inner >= smooth[2:]) & (inner > floor)
    found = []
    for index in sorted(np.flatnonzero(is_peak) + 1, key=lambda i: -smooth[i])[:MAX_PEAKS]:
        half = median + (smooth[index] - median) / 2
        left = index
        while left > 0 and smooth[left] > half:
            left -= 1
        right = index
        while right < smooth.size - 1 and smooth[right] > half:
            right += 1
        found.append((int(index), float(left), float(right), half))
    return found


def radial_power(image: np.ndarray, bins: int = RADIAL_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(spatial frequency in cycles per pixel, mean power) over ``bins`` rings; missing
    (non-finite) pixels count as the mean, so one bad pixel does not swamp the rest."""
    image = np.where(np.isfinite(image), image, np.nan)
    image = np.nan_to_num(image - np.nanmean(image))
    with np.errstate(over="ignore"):  # absurd values: infinite power, reported as null
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


def _nexus_axes(item: h5py.Dataset) -> list[_Axis | None]:
    """Per dimension, the axis the NeXus attributes of the dataset's group give it: the
    group's ``signal`` names the dataset and its ``axes`` (``"."``: none) name 1-D
    numeric siblings of the dimension's length with finite values."""
    group = item.parent
    if "axes" not in group.attrs or _text(group.attrs.get("signal")) != item.name.split("/")[-1]:
        return [None] * item.ndim
    names = _texts(group.attrs["axes"])
    axes: list[_Axis | None] = []
    for dimension, size in enumerate(item.shape):
        name = names[dimension] if dimension < len(names) else "."
        found = group.get(name) if name not in ("", ".") and "/" not in name else None
        if isinstance(found, h5py.Dataset) and found.dtype.kind in "iuf" and found.shape == (size,):
            values = np.asarray(found[()], dtype=np.float64)
            if np.isfinite(values).all():
                axes.append(_Axis(name, _text(found.attrs.get("units")), _label(found), values))
                continue
        axes.append(None)
    return axes


def _is_an_axis(item: h5py.Dataset) -> bool:
    """The dataset is named in its group's NeXus ``axes`` and is not its ``signal``."""
    group, name = item.parent, item.name.split("/")[-1]
    return name in _texts(group.attrs.get("axes")) and name != _text(group.attrs.get("signal"))


def _label(item: h5py.Dataset) -> str:
    """What a plot calls the dataset's values: its ``long_name`` (else its name) and its
    ``units`` when it has them."""
    name = _text(item.attrs.get("long_name")) or item.name.split("/")[-1]
    units = _text(item.attrs.get("units"))
    return f"{name} ({units})" if units else name


def _text(value: Any) -> str | None:
    """An attribute as one string (h5py gives str, bytes or arrays of either)."""
    texts = _texts(value)
    return texts[0] if texts else None


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    items = np.asarray(value, dtype=object).ravel()
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items]


def _number(value: Any) -> float | None:
    """JSON-safe: rounded, and ``None`` (``null``) for NaN and infinities."""
    number = float(value)
    return round(number, 6) if np.isfinite(number) else None
