"""A reference-style reproducer, ported by changing imports only (used by the pipeline tests)."""

import hashlib
import json
import mmap
import os
import time
from pathlib import Path

from reproducer import DataFileStreamReproducer, JSONMessage, ReproducerMessage


class SizeMessage(ReproducerMessage):
    def __init__(self, datafile, payload):
        super().__init__(datafile)
        self.payload = payload

    @property
    def msg_value(self):
        return json.dumps(self.payload)


class SizeReproducer(DataFileStreamReproducer):
    def _get_processing_result_message_for_file(self, datafile, lock):
        if datafile.filename.startswith("decline"):
            self.logger.error("declining %s", datafile.relative_filepath)
            return None
        if datafile.filename.startswith("boom"):
            raise ValueError("analysis blew up")
        # a slow analysis
        time.sleep(float(self.options.get("delay", os.environ.get("SIZE_REPRODUCER_DELAY", "0"))))
        gate = self.options.get("gate")
        if gate and datafile.filename.startswith(self.options.get("gate_prefix", "")):
            # held until the test opens the gate (a file appears), within bounds
            Path(f"{gate}.reached").touch()
            deadline = time.monotonic() + 120
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        with lock:
            payload = {
                "file": str(datafile.relative_filepath),
                "size": len(datafile.bytestring),
                "sha256": hashlib.sha256(datafile.bytestring).hexdigest(),
                "path_ok": datafile.full_filepath is None
                or datafile.full_filepath.read_bytes() == datafile.bytestring,
            }
        if self.options.get("report_mapped"):  # does buffer map the pages the ingest wrote?
            owner = getattr(getattr(datafile.buffer.obj, "base", None), "obj", None)
            payload["mapped"] = isinstance(owner, mmap.mmap)
        if datafile.filename.startswith("huge"):  # a result larger than the topic takes
            payload["padding"] = "x" * int(self.options.get("huge_bytes", 100_000))
        return SizeMessage(datafile, payload)


def main(args=None):
    SizeReproducer.run_from_command_line(args)


if __name__ == "__main__":
    main()


class LockProbeReproducer(DataFileStreamReproducer):
    """Records when each call holds the cluster-wide lock; the first ``die*`` file kills its
    actor while holding it (used by the lock test)."""

    def _get_processing_result_message_for_file(self, datafile, lock):
        probe = Path(self.options["probe_dir"])
        if datafile.filename.startswith("die") and not (probe / "died").exists():
            lock.acquire()
            (probe / "died").touch()
            os._exit(1)  # the holder dies: the lock must not stay held
        with lock:
            start = time.time()
            time.sleep(0.1)
            with (probe / "held.log").open("a") as log:
                log.write(f"{start} {time.time()}\n")
        return JSONMessage(datafile, {"file": str(datafile.relative_filepath)})


class FlakyReproducer(DataFileStreamReproducer):
    """The first attempt at each file raises; every attempt records the actor it ran on
    (used by the retry test)."""

    def _get_processing_result_message_for_file(self, datafile, lock):
        import ray  # noqa: PLC0415 - only this test class needs it

        actor = ray.get_runtime_context().get_actor_id()
        attempts = Path(self.options["probe_dir"]) / f"{datafile.filename}.attempts"
        with attempts.open("a") as log:
            log.write(f"{actor}\n")
        if len(attempts.read_text().split()) == 1:
            raise RuntimeError(f"first attempt at {datafile.filename} fails")
        return JSONMessage(datafile, {"file": str(datafile.relative_filepath), "actor": actor})
