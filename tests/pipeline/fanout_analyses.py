"""Two analyses for the fan-out test: a held-back one for .bin files, a fast one for all."""

import threading
import time

import numpy as np

from analyses import Analysis, register


@register("slow-size", version="7", files=r".*\.bin$", num_cpus=0.5)
class SlowSize(Analysis):
    def setup(self):
        self.calls = 0

    def analyze(self, datafile):
        """Waits until the test creates <output_dir>/release (at most 2 minutes)."""
        self.calls += 1
        deadline = time.monotonic() + 120
        while not (self.output_dir / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"size": len(datafile.bytestring), "calls_on_this_actor": self.calls}


@register("byte-sum", num_cpus=0.5)
class ByteSum(Analysis):
    def analyze(self, datafile):  # numpy values in a result are sent as plain JSON
        return {"sum": np.frombuffer(datafile.buffer, np.uint8).sum(dtype=np.uint64)}


@register("hangs-on-stuck", timeout_s=1.5, num_cpus=0.5, n_actors=2)
class HangsOnStuck(Analysis):
    """Never returns for a file named stuck*: a hung instrument driver, a deadlock."""

    def analyze(self, datafile):
        if datafile.filename.startswith("stuck"):
            threading.Event().wait()  # forever: only the time limit ends it
        return {"size": len(datafile.bytestring)}


@register("mean-and-spread", version="2", num_cpus=0.5)
class MeanAndSpread(Analysis):
    """Statistics of the bytes; an empty file's mean is NaN, as numpy makes it."""

    def analyze(self, datafile):
        values = np.frombuffer(datafile.buffer, np.uint8).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = values.mean() if values.size else np.float64("nan")
            return {"n": values.size, "mean": mean, "ratio": np.float64(values.size) / 0.0}
