"""An analysis for the multi-node tests: where it ran, and what its ``full_filepath`` held."""

import hashlib
import time

from analyses import Analysis


class PathCheck(Analysis):
    name = "path-check"

    def analyze(self, datafile):
        """Files named ``slow*`` take a second, so that a run is still busy when a node goes."""
        if datafile.filename.startswith("slow"):
            time.sleep(1.0)
        path = datafile.full_filepath
        on_disk = path.read_bytes() if path is not None else None
        return {
            "sha256": hashlib.sha256(datafile.bytestring).hexdigest(),
            "path": str(path) if path is not None else None,
            "path_sha256": hashlib.sha256(on_disk).hexdigest() if on_disk is not None else None,
        }
