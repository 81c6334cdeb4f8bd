"""Figures for analyses, as PNG bytes for :meth:`~analyses.base.Analysis.attach`.

Built on :class:`matplotlib.figure.Figure` with the Agg canvas, never pyplot: analyses run
in threads and actors, and pyplot's registry of current figures is global state that is
not thread-safe (a figure of its own per call is). matplotlib is the optional ``plots``
extra, imported only when a figure is made: check :func:`available` first.

    fig = spectrum_figure(x, y, marks, x_label="two_theta (degrees)", y_label="counts",
                          title="/entry/data/counts in run/a.h5")
    check = analysis.attach("plots/run/a.h5/entry_data_counts.png", render_png(fig))
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MISSING", "PeakMark", "available", "image_figure", "render_png", "spectrum_figure"]

log = logging.getLogger(__name__)

MISSING = "matplotlib is not installed (pip install 'ray-reproducer[plots]')"
DPI = 100


@dataclass(frozen=True)
class PeakMark:
    """A peak to draw, in the plot's units: its top (``x``, ``y``) and its width, from
    ``left`` to ``right`` at height ``level``."""

    x: float
    y: float
    left: float
    right: float
    level: float


@functools.cache
def available() -> bool:
    """Whether figures can be made; says why not (at INFO) the first time only, since
    every file of a run would repeat it."""
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        log.info("plots are skipped: %s", MISSING)
        return False
    return True


def spectrum_figure(
    x: np.ndarray,
    y: np.ndarray,
    peaks: Sequence[PeakMark] = (),
    *,
    x_label: str,
    y_label: str,
    title: str,
) -> Figure:
    """``y`` against ``x``, each peak marked on top with its position and its width drawn
    as a line at ``level``."""
    fig = _figure(9.0, 4.5)
    ax = fig.add_subplot()
    ax.plot(_finite(x), _finite(y), linewidth=0.8, color="tab:blue")
    if peaks:
        ax.plot([p.x for p in peaks], [p.y for p in peaks], "v", color="tab:red", label="peak")
        ax.hlines(
            [p.level for p in peaks],
            [p.left for p in peaks],
            [p.right for p in peaks],
            color="tab:orange",
            label="width at half height",
        )
        for peak in peaks:
            ax.annotate(
                f"{peak.x:.6g}",
                (peak.x, peak.y),
                xytext=(0, 8),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    return fig


def image_figure(
    image: np.ndarray,
    frequencies: np.ndarray,
    power: np.ndarray,
    *,
    strongest: float,
    value_label: str,
    title: str,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    x_label: str = "column (pixel)",
    y_label: str = "row (pixel)",
) -> Figure:
    """Two panels: ``image`` with a colour bar (``x``/``y``: the values along its columns
    and rows, evenly spaced, when not pixels), and its radial power spectrum on a log
    scale with the ``strongest`` frequency marked."""
    fig = _figure(13.0, 5.0)
    picture, spectrum = fig.subplots(1, 2)
    rows, cols = image.shape
    left, right = _edges(x, cols)
    bottom, top = _edges(y, rows)[::-1]
    square = x is None and y is None and max(rows, cols) <= 4 * min(rows, cols)
    shown = picture.imshow(
        np.ma.masked_invalid(image),
        extent=(left, right, bottom, top),
        aspect="equal" if square else "auto",
        interpolation="nearest",
    )
    fig.colorbar(shown, ax=picture, label=value_label)
    picture.set_xlabel(x_label)
    picture.set_ylabel(y_label)
    positive = power > 0
    spectrum.plot(frequencies, np.where(positive, power, np.nan), color="tab:blue")
    spectrum.set_yscale("log" if positive.any() else "linear")
    if strongest > 0:
        spectrum.axvline(
            strongest,
            color="tab:red",
            linestyle="--",
            label=f"strongest: {strongest:.4g} cycles/pixel (period {1 / strongest:.4g} px)",
        )
        spectrum.legend(loc="upper right", fontsize=8)
    spectrum.set_xlabel("spatial frequency (cycles/pixel)")
    spectrum.set_ylabel("radial power (mean |FFT|²)")
    spectrum.set_title("radial power spectrum")
    fig.suptitle(title)
    return fig


def render_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, made in memory."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: nothing shared with pyplot or other threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _edges(values: np.ndarray | None, size: int) -> tuple[float, float]:
    """The outer edges of the first and last pixel along one side: its values half a step
    beyond the first and last, or pixel edges when there are no values (or all the same)."""
    if values is None or size < 2 or values[0] == values[-1]:
        return -0.5, size - 0.5
    step = (float(values[-1]) - float(values[0])) / (size - 1)
    return float(values[0]) - step / 2, float(values[-1]) + step / 2


def _finite(values: np.ndarray) -> np.ndarray:
    """NaN for infinities, which matplotlib cannot scale an axis to (NaN leaves a gap)."""
    return np.where(np.isfinite(values), values, np.nan)
