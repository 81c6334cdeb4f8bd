#!/usr/bin/env python3
"""The reference's side of ``bench/compare.py``: an OpenMSIStream 1.8.8 reproducer.

Runs with the reference's virtualenv (``openmsistream==1.8.8``), never with this project's:

    OMSI_VENV/bin/python bench/omsi_reproducer.py --analysis sha256 --config FILE \\
        --consumer_topic_name CHUNKS --producer_topic_name RESULTS \\
        --n_consumer_threads 2 --n_producer_threads 2 --output_dir DIR

For each file rebuilt in memory it produces one JSON result, ``bench/work.py``'s
``analyze(bytes, kind)`` plus the file's relative path, exactly as the project's side does.
Every flag but ``--analysis`` is OpenMSIStream's own. Like every OpenMSIStream program, it
runs until ``q`` is typed on its standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import work  # bench/work.py, next to this file
from openmsistream.data_file_io.actor.data_file_stream_reproducer import (
    DataFileStreamReproducer,
)
from openmsistream.data_file_io.entity.reproducer_message import ReproducerMessage


class WorkResult(ReproducerMessage):
    def __init__(self, datafile: Any, payload: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(datafile, **kwargs)
        self.payload = payload

    @property
    def msg_value(self) -> str:
        return json.dumps(self.payload)


class WorkReproducer(DataFileStreamReproducer):  # type: ignore[misc]
    ANALYSIS = "sha256"
    N_LOCKED = 0  # the shared resource the lock guards

    def _get_processing_result_message_for_file(self, datafile: Any, lock: Any) -> Any:
        kind, locked = work.split(self.ANALYSIS)
        try:
            payload = work.analyze(datafile.bytestring, kind)
            payload["file"] = Path(datafile.relative_filepath).as_posix()
            if locked:
                with lock:
                    WorkReproducer.N_LOCKED += 1
        except Exception as exc:  # the reference's convention: log, and return None
            self.logger.error(f"analysis failed for {datafile.relative_filepath}", exc_info=exc)
            return None
        return WorkResult(datafile, payload)

    @classmethod
    def run_from_command_line(cls, args: list[str] | None = None) -> None:
        parsed = cls.get_argument_parser().parse_args(args=args)
        init_args, init_kwargs = cls.get_init_args_kwargs(parsed)
        # openmsistream 1.8.8's own run_from_command_line crashes: get_init_args_kwargs
        # gives the topics both among the positional arguments and as keywords ("got
        # multiple values for argument 'consumer_topic_name'"). Pass them once.
        consumer_topic = init_kwargs.pop("consumer_topic_name")
        producer_topic = init_kwargs.pop("producer_topic_name")
        reproducer = cls(init_args[0], consumer_topic, producer_topic, **init_kwargs)
        n_read, _, n_files, n_results, _ = reproducer.produce_processing_results_for_files_as_read()
        reproducer.close()
        print(
            json.dumps({"n_msgs_read": n_read, "n_files_read": n_files, "n_results": n_results}),
            flush=True,
        )


def main() -> None:
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--analysis", default="sha256", choices=work.CHOICES)
    known, rest = ours.parse_known_args()
    WorkReproducer.ANALYSIS = known.analysis
    WorkReproducer.run_from_command_line(rest)


if __name__ == "__main__":
    main()
