"""An analysis for the multi-node tests: where it ran, and what its ``full_filepath`` held."""

import hashlib
import os
import time
from pathlib import Path

from analyses import Analysis, register


class PathCheck(Analysis):
    name = "path-check"

    def setup(self):
        """A node started with RR_TEST_NODE_OUTPUT has an output folder of its own (as
        on a cluster whose nodes share no disk): what it attaches is written there."""
        if os.environ.get("RR_TEST_NODE_OUTPUT"):
            self.output_dir = Path(os.environ["RR_TEST_NODE_OUTPUT"])

    def analyze(self, datafile):
        """Files named ``slow*`` take a second, so that a run is still busy when a node goes."""
        if datafile.filename.startswith("slow"):
            time.sleep(1.0)
        path = datafile.full_filepath
        on_disk = path.read_bytes() if path is not None else None
        digest = hashlib.sha256(datafile.bytestring).hexdigest()
        return {
            "check": self.attach(f"checks/{datafile.relative_filepath}.sha256", digest.encode()),
            "sha256": digest,
            "path": str(path) if path is not None else None,
            "path_sha256": hashlib.sha256(on_disk).hexdigest() if on_disk is not None else None,
        }


class Busy(Analysis):
    """CPU work for ``RR_BUSY_SECONDS`` (default 1) of CPU time per file, then the file's
    SHA-256: a heavy analysis, for the elastic pools' tests."""

    name = "busy"

    def analyze(self, datafile):
        seconds = float(os.environ.get("RR_BUSY_SECONDS", "1"))
        end = time.process_time() + seconds
        while time.process_time() < end:
            hashlib.sha256(b"x" * 65536).digest()
        return {"sha256": hashlib.sha256(datafile.bytestring).hexdigest()}


@register("busy-a", files=r"a.*", num_cpus=1, min_actors=1, max_actors=2)
class BusyA(Busy):
    """``Busy`` for files named ``a*``, in a pool of 1..2 actors of one CPU each."""


@register("busy-b", files=r"b.*", num_cpus=1, min_actors=1, max_actors=2)
class BusyB(Busy):
    """``Busy`` for files named ``b*``, in a pool of 1..2 actors of one CPU each."""
