"""``gpu-spectrum``: the power spectrum of a file's bytes, on a GPU when its actor has one.

Registered with ``num_gpus=1`` (and half a CPU), so Ray places its actors only on nodes
that offer GPUs, one GPU per actor; Ray sets each actor's ``CUDA_VISIBLE_DEVICES`` to the
GPU it assigned. The work runs with CuPy, else PyTorch, when the library imports and a
CUDA device is usable there (a tiny FFT is tried first); otherwise with numpy on the CPU.
A GPU library that is missing or half-installed is never an error: numpy runs instead.

The bytes are samples (uint8 -> float32) in blocks of :data:`BLOCK` samples (a file
shorter than a block is one block; the tail that fills no block is left out); each block's
mean is removed and ``|rfft|^2`` is averaged over the blocks, :data:`BATCH` blocks at a
time (bounded memory on the device). Result::

    {"size": 1048576, "block": 65536, "n_blocks": 16,
     "peak_bin": 4096, "peak_frequency": 0.0625, "peak_power": 1.3e+12,
     "backend": "cupy", "device": "cuda:0 (NVIDIA A100-SXM4-40GB)",
     "cuda_visible_devices": "3"}

- ``peak_bin``: the strongest non-zero frequency bin of the mean spectrum,
  ``peak_frequency`` the same in cycles per sample (``peak_bin / block``), ``peak_power``
  its mean power; all ``null`` for an empty file or a block of one sample.
- ``backend``: ``"cupy"``, ``"torch"`` or ``"numpy"``, whichever ran; ``device``: the CUDA
  device (an ordinal among the visible ones) and its name, or ``"cpu"``;
  ``cuda_visible_devices``: that variable as the actor sees it (``null`` if unset).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from analyses.base import Analysis
from analyses.registry import register

__all__ = ["BATCH", "BLOCK", "Backend", "GpuSpectrum", "choose_backend", "power_spectrum"]

log = logging.getLogger(__name__)

BLOCK = 1 << 16  # samples per FFT block
BATCH = 64  # blocks per transfer to the device: 16 MiB of float32


@dataclass(frozen=True)
class Backend:
    """Where the FFTs run: ``power`` takes float32 blocks (rows, on the host) and returns
    their summed power per frequency bin (float64, on the host)."""

    name: str
    device: str
    power: Callable[[np.ndarray], np.ndarray]


def _summed_power(xp: Any, blocks: Any) -> Any:
    """``|rfft|^2`` of each block with its mean removed, summed over blocks (numpy or
    CuPy: the same calls)."""
    centred = blocks - blocks.mean(axis=1, keepdims=True)
    return (xp.abs(xp.fft.rfft(centred, axis=1)) ** 2).sum(axis=0)


NUMPY = Backend("numpy", "cpu", lambda blocks: np.asarray(_summed_power(np, blocks), np.float64))


def _cupy() -> Backend | None:
    cupy: Any = importlib.import_module("cupy")
    if cupy.cuda.runtime.getDeviceCount() < 1:
        return None
    index = cupy.cuda.Device().id
    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)

    def power(blocks: np.ndarray) -> np.ndarray:
        summed = _summed_power(cupy, cupy.asarray(blocks))
        return np.asarray(cupy.asnumpy(summed), np.float64)

    return Backend("cupy", f"cuda:{index} ({name})", power)


def _torch() -> Backend | None:
    torch: Any = importlib.import_module("torch")
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    device = torch.device("cuda", index)

    def power(blocks: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(blocks).to(device)
        x = x - x.mean(dim=1, keepdim=True)
        summed = (torch.fft.rfft(x, dim=1).abs() ** 2).sum(dim=0)
        return np.asarray(summed.double().cpu().numpy(), np.float64)

    return Backend("torch", f"cuda:{index} ({torch.cuda.get_device_name(index)})", power)


def choose_backend() -> Backend:
    """CuPy, else PyTorch, if it imports and runs a small FFT on a CUDA device; else numpy."""
    for library, make in (("cupy", _cupy), ("torch", _torch)):
        try:
            backend = make()
            if backend is not None:
                backend.power(np.ones((1, 8), np.float32))  # it really runs there
                return backend
            log.info("%s finds no CUDA device", library)
        except ImportError:
            continue
        except Exception as exc:  # noqa: BLE001 - a half-installed GPU library: not a GPU
            log.warning("%s cannot run on a GPU here (%s: %s)", library, type(exc).__name__, exc)
    return NUMPY


def power_spectrum(data: Any, backend: Backend = NUMPY) -> dict[str, Any]:
    """The spectrum's size, blocks and peak (see the module's docstring) of ``data``
    (bytes or a buffer)."""
    samples = np.frombuffer(data, dtype=np.uint8)
    block = min(BLOCK, samples.size)
    n_blocks = samples.size // block if block else 0
    out: dict[str, Any] = {"size": samples.size, "block": block, "n_blocks": n_blocks}
    peak: dict[str, Any] = {"peak_bin": None, "peak_frequency": None, "peak_power": None}
    if n_blocks and block > 1:
        blocks = samples[: n_blocks * block].reshape(n_blocks, block)
        total = np.zeros(block // 2 + 1)
        for start in range(0, n_blocks, BATCH):
            total += backend.power(blocks[start : start + BATCH].astype(np.float32))
        mean = total / n_blocks
        index = int(np.argmax(mean[1:])) + 1
        peak = {
            "peak_bin": index,
            "peak_frequency": index / block,
            "peak_power": float(mean[index]),
        }
    return {**out, **peak}


@register("gpu-spectrum", version="1", num_cpus=0.5, num_gpus=1)
class GpuSpectrum(Analysis):
    """The power spectrum of a file's bytes and its peak, on the actor's GPU if usable."""

    backend: Backend | None = None

    def setup(self) -> None:
        self._choose()

    def _choose(self) -> Backend:
        self.backend = choose_backend()
        log.info("gpu-spectrum runs on %s (%s)", self.backend.name, self.backend.device)
        return self.backend

    def analyze(self, datafile: Any) -> dict[str, Any]:
        backend = self.backend or self._choose()  # setup() not called: called directly
        return {
            **power_spectrum(datafile.buffer, backend),
            "backend": backend.name,
            "device": backend.device,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
