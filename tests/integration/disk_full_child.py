"""Run the ingest (no Ray) on a topic until it stops or every file is in, in a process of
its own, optionally under a file-size limit: a disk that fills up, as the output folder
sees it (EFBIG on the write past the limit).

    python -m tests.integration.disk_full_child BOOTSTRAP TOPIC GROUP OUTPUT_DIR FILE [LIMIT]

Prints one JSON line: the files handed off and the error that stopped the ingest, if any.
Every handed-off file is finished at once (as if its result were acknowledged), and the
offsets are committed at the end, whatever happened: the worst a drain could do.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time
from pathlib import Path

from reproducer.errors import ReproducerError
from reproducer.ingest import Ingest, IngestSettings


def main() -> int:
    bootstrap, topic, group, output_dir, awaited = sys.argv[1:6]  # until FILE is in
    if len(sys.argv) > 6:
        limit = int(sys.argv[6])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    done: list[str] = []
    holder: list[Ingest] = []

    def hand_off(completed) -> None:
        done.append(str(completed.path.relative_to(output_dir)))
        holder[0].finish(completed.file_id)

    settings = IngestSettings(
        topic=topic,
        consumer={
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
        },
        mode="disk",
        output_dir=Path(output_dir),
        commit_interval=0.1,
    )
    ingest = Ingest(settings, hand_off)
    holder.append(ingest)
    error = ""
    deadline = time.monotonic() + 120
    try:
        while awaited not in done and time.monotonic() < deadline:
            ingest.step(0.1)
    except ReproducerError as exc:
        error = f"{type(exc).__name__}: {exc}"
    for end in (ingest.commit, ingest.close):  # what a drain does, even after the error
        try:
            end()
        except ReproducerError as exc:
            error = error or f"{type(exc).__name__}: {exc}"
    print(json.dumps({"done": sorted(done), "error": error}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
