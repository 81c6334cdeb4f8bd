"""Two analyses for the fan-out test: a held-back one for .bin files, a fast one for all."""

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
