"""``hdf5-summary``: what an HDF5 file holds, with statistics of every numeric dataset.

Example result (abridged)::

    {"n_groups": 2, "n_datasets": 2,
     "groups": [{"path": "/", "attrs": {"instrument": "XRD-3"}},
                {"path": "/scan", "attrs": {}}],
     "datasets": [{"path": "/scan/image", "shape": [512, 512], "dtype": "float32",
                   "chunks": [64, 512], "compression": "gzip", "compression_opts": 4,
                   "attrs": {"units": "counts"},
                   "stats": {"count": 262144, "nan_count": 3, "min": 0.0, "max": 4095.0,
                             "mean": 201.7, "std": 88.1}}]}

In memory mode the file's bytes are opened as an in-memory image (no temporary file); in
disk modes the rebuilt file is opened where it is. Datasets are read in slabs of at most
:data:`SLAB_ELEMENTS` elements, so a dataset of any size needs bounded memory. Strings,
compound and variable-length datasets are described without statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from analyses.base import Analysis, BadInput
from analyses.registry import register

__all__ = ["SLAB_ELEMENTS", "HDF5Summary", "summarize"]

SLAB_ELEMENTS = 1 << 22  # 4 Mi elements: 32 MiB of float64 at most per read
MAX_ATTR_ITEMS = 16  # longer array attributes are summarised


@register("hdf5-summary", version="1", files=r"(?i).*\.(h5|hdf5|he5|nxs)$", num_cpus=0.5)
class HDF5Summary(Analysis):
    """Groups, datasets, layouts, attributes and per-dataset statistics of an HDF5 file."""

    def analyze(self, datafile: Any) -> dict[str, Any]:
        path = getattr(datafile, "full_filepath", None)
        try:
            if path is not None:
                with h5py.File(path, "r") as handle:
                    return summarize(handle)
            with h5py.File.in_memory(bytes(datafile.buffer)) as handle:
                return summarize(handle)
        except (OSError, ValueError) as exc:
            raise BadInput(
                f"{datafile.relative_filepath} is not a readable HDF5 file "
                f"(truncated, or not HDF5): {exc}"
            ) from exc


def summarize(handle: h5py.File) -> dict[str, Any]:
    groups: list[dict[str, Any]] = [{"path": "/", "attrs": _attrs(handle.attrs)}]
    datasets: list[dict[str, Any]] = []

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Group):
            groups.append({"path": f"/{name}", "attrs": _attrs(item.attrs)})
        elif isinstance(item, h5py.Dataset):
            datasets.append(_dataset(f"/{name}", item))

    handle.visititems(visit)
    return {
        "n_groups": len(groups),
        "n_datasets": len(datasets),
        "groups": groups,
        "datasets": datasets,
    }


def _dataset(path: str, dataset: h5py.Dataset) -> dict[str, Any]:
    return {
        "path": path,
        "shape": list(dataset.shape) if dataset.shape is not None else None,
        "dtype": str(dataset.dtype),
        "chunks": list(dataset.chunks) if dataset.chunks else None,
        "compression": dataset.compression,
        "compression_opts": _jsonable(dataset.compression_opts),
        "shuffle": bool(dataset.shuffle),
        "attrs": _attrs(dataset.attrs),
        "stats": _stats(dataset) if _numeric(dataset.dtype) else None,
    }


def _numeric(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "biufc" and dtype.fields is None and dtype.subdtype is None


def _stats(dataset: h5py.Dataset) -> dict[str, Any]:
    """count, NaN count, min, max, mean and (population) std, read slab by slab and merged
    with Chan's formula, so any size needs at most one slab in memory."""
    count = nans = 0
    mean = m2 = 0.0
    low, high = math.inf, -math.inf
    if dataset.shape is None:  # an empty (null) dataspace
        return _stats_dict(0, 0, low=low, high=high, mean=mean, m2=m2)
    for where in _slabs(dataset.shape, SLAB_ELEMENTS):
        values = np.asarray(dataset[where])
        if values.dtype.kind == "c":
            values = np.abs(values)  # statistics of the magnitude
        values = values.astype(np.float64, copy=False).ravel()
        finite_mask = ~np.isnan(values)
        nans += int(values.size - np.count_nonzero(finite_mask))
        values = values[finite_mask]
        if not values.size:
            continue
        n = int(values.size)
        slab_mean = float(values.mean())
        slab_m2 = float(((values - slab_mean) ** 2).sum())
        low, high = min(low, float(values.min())), max(high, float(values.max()))
        total = count + n
        delta = slab_mean - mean
        mean += delta * n / total
        m2 += slab_m2 + delta * delta * count * n / total
        count = total
    return _stats_dict(count, nans, low=low, high=high, mean=mean, m2=m2)


def _stats_dict(
    count: int, nans: int, *, low: float, high: float, mean: float, m2: float
) -> dict[str, Any]:
    if not count:
        return {"count": 0, "nan_count": nans, "min": None, "max": None, "mean": None, "std": None}
    return {
        "count": count,
        "nan_count": nans,
        "min": _finite_or_text(low),
        "max": _finite_or_text(high),
        "mean": _finite_or_text(mean),
        "std": _finite_or_text(math.sqrt(m2 / count)),
    }


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no inf


def _slabs(shape: tuple[int, ...], limit: int) -> Iterator[tuple[Any, ...]]:
    """Index tuples that cover ``shape`` in C order, each of at most ``limit`` elements
    (or one element, for rows bigger than the limit)."""
    if not shape:
        yield ()
        return
    if 0 in shape:
        return
    row = math.prod(shape[1:])
    if row <= limit:
        step = max(1, limit // max(row, 1))
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    for index in range(shape[0]):  # a single row is too big: split it further
        for rest in _slabs(shape[1:], limit):
            yield (index, *rest)


def _attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    out = {}
    for key in attrs:
        try:
            out[key] = _jsonable(attrs[key])
        except (OSError, TypeError, ValueError) as exc:  # an unreadable attribute type
            out[key] = f"<unreadable: {exc}>"
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.size > MAX_ATTR_ITEMS:
            return {"shape": list(value.shape), "dtype": str(value.dtype)}
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
