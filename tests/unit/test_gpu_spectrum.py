"""The gpu-spectrum analysis, called directly: numpy on this machine (no GPU), and the
choice of backend with GPU libraries that are missing, half-installed or (faked) working."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import analyses.gpu_spectrum as gpu_spectrum
from analyses import resolve
from analyses.gpu_spectrum import BLOCK, GpuSpectrum, choose_backend, power_spectrum


@dataclass
class File:
    data: bytes
    relative_filepath: PurePosixPath = field(default_factory=lambda: PurePosixPath("run/a.bin"))

    @property
    def buffer(self) -> memoryview:
        return memoryview(self.data)


def sine(n_samples: int, period: int) -> bytes:
    """A sine of ``period`` samples, as bytes around 128 (uint8 samples)."""
    x = np.arange(n_samples)
    return np.round(128 + 100 * np.sin(2 * np.pi * x / period)).astype(np.uint8).tobytes()


@pytest.fixture(autouse=True)
def no_gpu_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """cupy and torch do not import (as here), whatever the test environment holds."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_registered_for_one_gpu_and_every_file() -> None:
    (spec,) = resolve("gpu-spectrum")
    assert spec.factory is GpuSpectrum
    assert spec.files is None and spec.version == "1"
    assert spec.resources.actor_options() == {"num_cpus": 0.5, "num_gpus": 1}


def test_numpy_finds_the_peak_of_a_sine() -> None:
    """3.5 blocks of a sine of period 64: the peak is bin BLOCK/64 in every block (the
    half block left over is left out)."""
    data = sine(BLOCK * 7 // 2, 64)
    result = GpuSpectrum().analyze(File(data))
    assert result == {
        "size": len(data),
        "block": BLOCK,
        "n_blocks": 3,
        "peak_bin": BLOCK // 64,
        "peak_frequency": 1 / 64,
        "peak_power": pytest.approx((100 * BLOCK / 2) ** 2, rel=1e-3),
        "backend": "numpy",
        "device": "cpu",
        "cuda_visible_devices": None,
    }


def test_a_short_file_is_one_block_and_an_empty_one_has_no_peak() -> None:
    short = power_spectrum(sine(1000, 10))
    assert (short["block"], short["n_blocks"], short["peak_bin"]) == (1000, 1, 100)
    assert short["peak_frequency"] == pytest.approx(0.1)
    for data in (b"", b"x"):
        assert power_spectrum(data) == {
            "size": len(data),
            "block": len(data),
            "n_blocks": len(data),
            "peak_bin": None,
            "peak_frequency": None,
            "peak_power": None,
        }


def test_large_files_are_analysed_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of blocks sum to the spectrum of all blocks at once."""
    data = np.random.default_rng(1).integers(0, 256, BLOCK * 5, dtype=np.uint8).tobytes()
    whole = power_spectrum(data)
    monkeypatch.setattr(gpu_spectrum, "BATCH", 2)
    assert power_spectrum(data) == pytest.approx(whole)


def test_reports_cuda_visible_devices_as_the_actor_sees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    result = GpuSpectrum().analyze(File(sine(4096, 16)))
    assert (result["backend"], result["cuda_visible_devices"]) == ("numpy", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert GpuSpectrum().analyze(File(b"abc"))["cuda_visible_devices"] == ""


def ns(**parts: Any) -> SimpleNamespace:
    return SimpleNamespace(**parts)


def raises(exc: Exception) -> Any:
    def call(*args: Any) -> Any:
        raise exc

    return call


def fake_cupy(**changes: Any) -> SimpleNamespace:
    """CuPy's calls that the analysis makes, done by numpy on a "device" named Fake."""
    runtime = ns(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"Fake"})
    parts = {
        "cuda": ns(runtime=runtime, Device=lambda: ns(id=0)),
        "asarray": np.asarray,
        "asnumpy": np.asarray,
        "abs": np.abs,
        "fft": np.fft,
    }
    return ns(**{**parts, **changes})


@pytest.mark.parametrize(
    ("library", "module"),
    [
        # imports, but finds no driver (cupy raises CUDARuntimeError) or no device
        ("cupy", ns(cuda=ns(runtime=ns(getDeviceCount=raises(RuntimeError("no driver")))))),
        ("cupy", ns(cuda=ns(runtime=ns(getDeviceCount=lambda: 0)))),
        ("torch", ns(cuda=ns(is_available=lambda: False))),
        # half-installed: a device is found, but the FFT library does not load
        ("cupy", fake_cupy(fft=ns(rfft=raises(OSError("libcufft.so.11: cannot open"))))),
    ],
)
def test_an_unusable_gpu_library_falls_back_to_numpy(
    monkeypatch: pytest.MonkeyPatch, library: str, module: Any
) -> None:
    monkeypatch.setitem(sys.modules, library, module)
    backend = choose_backend()
    assert (backend.name, backend.device) == ("numpy", "cpu")
    assert GpuSpectrum().analyze(File(sine(4096, 16)))["backend"] == "numpy"


def test_cupy_runs_when_it_finds_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    data = sine(BLOCK * 2, 128)
    result = GpuSpectrum().analyze(File(data))
    assert result == {
        **power_spectrum(data),
        "backend": "cupy",
        "device": "cuda:0 (Fake)",
        "cuda_visible_devices": "3",
    }
