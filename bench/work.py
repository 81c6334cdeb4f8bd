"""The per-file work of the benchmarks, shared by the reference and this project.

Both sides import this module (the reference's reproducer in ``bench/omsi_reproducer.py``,
this project's in ``bench/project_run.py``), so each file costs the same on both. It needs only
hashlib and numpy, so it imports in either virtualenv.

    sha256  the sha256 and size of the bytes (the trivial, I/O-bound case)
    fft     the bytes as float32 samples (uint8 -> float32), rfft over blocks of 64 Ki samples,
            8 times; plus sha256 and size (CPU-bound; numpy releases the GIL; ~0.2 s/MiB)
    pyloop  a pure-Python rolling checksum over every 2nd byte, 2 times; plus sha256 and size
            (CPU-bound and holds the GIL; ~0.2 s/MiB)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

KINDS = ("sha256", "fft", "pyloop")
# "KIND+lock": the same work, and the reproducer's ``lock`` taken once per file around one
# line (a shared counter bumped), as reference users do for a shared resource
LOCKED = "+lock"
CHOICES = (*KINDS, *(kind + LOCKED for kind in KINDS))


def split(choice: str) -> tuple[str, bool]:
    """``("sha256", True)`` for ``"sha256+lock"``."""
    kind, locked = choice.removesuffix(LOCKED), choice.endswith(LOCKED)
    return kind, locked


FFT_BLOCK = 1 << 16
FFT_REPS = 8
PY_STRIDE = 2
PY_REPS = 2


def fft_kernel(data: Any, reps: int = FFT_REPS) -> float:
    samples = np.frombuffer(data, dtype=np.uint8)
    usable = samples.size // FFT_BLOCK * FFT_BLOCK
    blocks = samples[:usable].astype(np.float32).reshape(-1, FFT_BLOCK)
    total = 0.0
    for _ in range(reps):
        total += float(np.abs(np.fft.rfft(blocks, axis=1)).sum())
    return total


def pyloop_kernel(data: Any, reps: int = PY_REPS) -> int:
    every_other = memoryview(data).cast("B")[::PY_STRIDE].tobytes()
    acc = 0
    for _ in range(reps):
        for byte in every_other:
            acc = (acc * 31 + byte) % 1_000_000_007
    return acc


def analyze(data: Any, kind: str = "sha256") -> dict[str, Any]:
    """The result of one file: ``{"size", "sha256", "analysis", ...}`` (bytes or a buffer)."""
    view = memoryview(data).cast("B")
    out: dict[str, Any] = {
        "size": view.nbytes,
        "sha256": hashlib.sha256(view).hexdigest(),
        "analysis": kind,
    }
    if kind == "fft":
        out["fft_sum"] = fft_kernel(view)
    elif kind == "pyloop":
        out["py_sum"] = pyloop_kernel(view)
    elif kind != "sha256":
        raise ValueError(f"unknown analysis {kind!r}; one of {KINDS}")
    return out
