"""OpenMSIStream's ``DataFileStreamReproducer`` API, on the Ray pipeline.

A reference reproducer ports by changing its imports::

    from reproducer import DataFileStreamReproducer, ReproducerMessage

    class SizeMessage(ReproducerMessage):
        def __init__(self, datafile, size):
            super().__init__(datafile)
            self.size = size

        @property
        def msg_value(self):
            return json.dumps({"size": self.size})

    class SizeReproducer(DataFileStreamReproducer):
        def _get_processing_result_message_for_file(self, datafile, lock):
            return SizeMessage(datafile, len(datafile.bytestring))

    def main():
        SizeReproducer.run_from_command_line()

    if __name__ == "__main__":
        main()

Each analysis actor holds a copy of the instance (it is pickled once), so the method runs
in parallel on as many actors as ``--n_analysis_actors``; ``lock`` is held cluster-wide.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, NamedTuple

from reproducer.chunk import LOGS_DIR
from reproducer.config import load_config
from reproducer.datafile import DownloadDataFile, JSONMessage, ReproducerMessage
from reproducer.errors import ReproducerError
from reproducer.pipeline import PipelineSettings, RunSummary, run_pipeline
from reproducer.results import parse_time
from reproducer.scaling import ActorRange
from reproducer.telemetry import Progress

__all__ = [
    "DataFileStreamReproducer",
    "MetadataJSONReproducer",
    "PipelineHandle",
    "ProcessingResults",
]


class ProcessingResults(NamedTuple):
    """The five values the reference's ``produce_processing_results_for_files_as_read`` returns."""

    n_msgs_read: int
    n_msgs_processed: int
    n_files_read: int
    n_results_produced: int
    recent_results: list[str]


# name -> (add_argument keywords); defaults are the reference's where it has the flag
def _actor_range(text: str) -> ActorRange:
    try:
        return ActorRange.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_CATALOGUE: dict[str, dict[str, Any]] = {
    "config": {
        "help": "OpenMSIStream INI config file ([broker], [consumer], [producer]): a path, or "
        "a NAME found as NAME.config in $RAY_REPRODUCER_CONFIG_DIR or the project's cluster/"
    },
    "topic_name": {"help": "same as --consumer_topic_name"},
    "consumer_topic_name": {"help": "topic of the chunk messages"},
    "producer_topic_name": {"help": "topic for the result messages"},
    "consumer_group_id": {"help": "consumer group ('create_new': a fresh one)"},
    "n_consumer_threads": {
        "type": int,
        "help": "threads of the ingest actor that hash and write rebuilt files (one file "
        "each at a time); the consume loop is one more",
    },
    "n_producer_threads": {
        "type": int,
        "help": "accepted for compatibility; one producer actor serves all",
    },
    "download_regex": {"help": "only files whose relative path matches (re.match) are processed"},
    "mode": {"choices": ["memory", "disk", "both"], "help": "where files are rebuilt"},
    "output_dir": {"type": Path, "help": "rebuilt files (disk/both) and LOGS/"},
    "update_seconds": {"type": float, "help": "seconds between progress log lines"},
    "heartbeat_topic_name": {"help": "topic for heartbeat messages (the reference's JSON)"},
    "heartbeat_program_id": {
        "help": "id in heartbeat and log message keys (default: the class name)"
    },
    "heartbeat_interval_secs": {"type": float, "help": "seconds between heartbeats"},
    "log_topic_name": {"help": "topic for messages carrying the driver's log records"},
    "log_interval_secs": {"type": float, "help": "seconds between log messages"},
    "logger_stream_level": {
        "choices": ["debug", "info", "warning", "error"],
        "help": "stderr log level",
    },
    "logger_file_level": {
        "choices": ["debug", "info", "warning", "error"],
        "help": "log file level",
    },
    "logger_file_path": {"type": Path, "help": "log file (default: <output_dir>/LOGS/<Class>.log)"},
    "ray_address": {
        "help": "Ray cluster to join: host:port, 'auto' (the one started on this machine) or "
        "'local' (default: the job's cluster inside `ray job submit`, else a new local Ray)"
    },
    "file_transfer": {
        "choices": ["auto", "always"],
        "help": "disk modes across nodes: 'auto' reads a rebuilt file in place where the "
        "analysis node sees it (same machine, shared output_dir) and otherwise sends it "
        "through the object store; 'always' sends every file rebuilt on another node",
    },
    "ray_dashboard": {
        "action": "store_true",
        "help": "with local Ray, also start its dashboard (a few seconds more start-up)",
    },
    "n_analysis_actors": {
        "type": _actor_range,
        "help": "analysis actors in the pool: N, or MIN..MAX for a pool that grows while "
        "files wait and shrinks when idle (e.g. 1..8)",
    },
    "idle_actor_timeout": {
        "type": float,
        "help": "an elastic pool retires an actor idle this many seconds (down to its minimum)",
    },
    "analysis_num_cpus": {"type": float, "help": "CPUs reserved by each analysis actor"},
    "analysis_resources": {
        "type": json.loads,
        "help": 'custom resources per actor, JSON: {"analysis": 1}',
    },
    "ingest_resources": {
        "type": json.loads,
        "help": 'custom resources for the ingest actor, JSON: {"ingest": 1} (a node near Kafka)',
    },
    "max_held_mb": {"type": float, "help": "memory budget for partial and in-flight files (MiB)"},
    "max_in_flight": {"type": int, "help": "completed files in analysis or production at once"},
    "max_retries": {"type": int, "help": "retries of a file whose analysis raised"},
    "analysis_timeout_secs": {
        "type": float,
        "help": "most seconds one file's analysis may take: past it the actor is replaced "
        "and the file runs again, then is recorded as failed (default: no limit)",
    },
    "produce_retry_secs": {
        "type": float,
        "help": "keep producing a result the cluster refuses for now (a topic not known, a "
        "broker restarting) this long, then stop the run without committing past it (at "
        "least once; exactly once, its transaction is aborted and the run resumes instead)",
    },
    "file_idle_timeout": {
        "type": float,
        "help": "give up on a partial file after this many idle seconds",
    },
    "stop_when_idle": {
        "type": float,
        "help": "exit after this many seconds without work (batch runs)",
    },
    "dead_letter_topic": {"help": "copy poison messages to this topic before skipping them"},
    "analysis": {
        "help": "registered analyses to run: NAME[,NAME] or package.module:Class (each file "
        "goes to every analysis whose file pattern matches it)"
    },
    "n_actors": {
        "help": "actors per registered analysis: N for each, or NAME=N[,NAME=N] (default: "
        "what each analysis registered)"
    },
    "check_chunk_hashes": {
        "action": "store_true",
        "help": "check each chunk's SHA-512 on arrival, as the reference does (by default the "
        "whole-file SHA-512 is checked, and chunk hashes only name corrupt chunks)",
    },
    "exactly_once": {
        "action": "store_true",
        "help": "produce results and commit offsets in one Kafka transaction",
    },
    "from_beginning": {
        "action": "store_true",
        "help": "read the topic from its first message, whatever the group committed (a "
        "replay, e.g. with a new analysis); later rebalances resume from the commits",
    },
    "start_time": {
        "help": "read from the first message produced at or after this ISO 8601 time (e.g. "
        "2026-12-01T08:00; without a zone, local time), whatever the group committed",
    },
    "web_port": {
        "type": int,
        "help": "serve the live results page on this port while the run lasts (needs the web "
        "extra; 0: a free port, logged)",
    },
    "web_host": {
        "help": "address of the results page (default: 127.0.0.1, this machine only; any "
        "other needs a token)"
    },
    "web_token": {
        "help": "a token every request to the results page must carry (better: set "
        "$REPRODUCER_WEB_TOKEN, which no process list shows)"
    },
    "reprocess": {
        "action": "store_true",
        "help": "rebuild and produce again files the consumer group's state records "
        "(<group>.<topic>.reproducer-state) list as done; else their chunks, read again after a "
        "restart, are skipped",
    },
}


class PipelineHandle:
    """A pipeline running on a thread of this process (see
    :meth:`DataFileStreamReproducer.start`)."""

    def __init__(self, summary: RunSummary, stop: threading.Event) -> None:
        self._summary, self._stop = summary, stop
        self._done = threading.Event()
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def progress(self) -> Progress:
        """The counts so far: messages, bytes, files read and failed, results, files in
        analysis."""
        return self._summary.progress()

    def wait(self, timeout: float | None = None) -> RunSummary | None:
        """The run's summary once it has ended (``None`` if still running after
        ``timeout`` seconds); raises what stopped it, if it failed."""
        if not self._done.wait(timeout):
            return None
        if self._error is not None:
            raise self._error
        return self._summary

    def stop(self, timeout: float | None = 300.0) -> RunSummary | None:
        """Stop reading, drain what is in flight, commit, and return the summary (as
        ``q`` or SIGTERM do); ``None`` if it has not ended within ``timeout``."""
        self._stop.set()
        return self.wait(timeout)


class DataFileStreamReproducer:
    """Base class: implement ``_get_processing_result_message_for_file(datafile, lock)``."""

    def __init__(
        self,
        config_file: str | Path,
        consumer_topic_name: str,
        producer_topic_name: str,
        *,
        output_dir: str | Path | None = None,
        mode: str = "memory",
        consumer_group_id: str = "create_new",
        download_regex: str | None = None,
        update_seconds: float = 300.0,
        ray_address: str | None = None,
        ray_dashboard: bool = False,
        file_transfer: str = "auto",
        n_analysis_actors: int | str | ActorRange = 2,
        idle_actor_timeout: float = 60.0,
        analysis_num_cpus: float = 1.0,
        analysis_resources: dict[str, float] | None = None,
        ingest_resources: dict[str, float] | None = None,
        max_held_mb: float = 2048.0,
        max_in_flight: int = 10000,
        max_retries: int = 2,
        analysis_timeout_secs: float | None = None,
        produce_retry_secs: float = 120.0,
        file_idle_timeout: float = 3600.0,
        dead_letter_topic: str | None = None,
        stop_when_idle: float | None = None,
        check_chunk_hashes: bool = False,
        exactly_once: bool = False,
        from_beginning: bool = False,
        start_time: str | None = None,
        reprocess: bool = False,
        n_consumer_threads: int = 2,
        heartbeat_topic_name: str | None = None,
        heartbeat_program_id: str | None = None,
        heartbeat_interval_secs: float = 900.0,
        log_topic_name: str | None = None,
        log_interval_secs: float = 60.0,
        **other: Any,
    ) -> None:
        self.logger = logging.getLogger(type(self).__name__)
        self.last_run: RunSummary | None = None
        self.config_file = Path(config_file)
        self.consumer_topic_name = consumer_topic_name
        self.producer_topic_name = producer_topic_name
        # absolute: files are rebuilt by the ingest actor, whose working folder differs
        self.output_dir = (
            Path(output_dir) if output_dir else Path(f"{type(self).__name__}_output")
        ).resolve()
        self.options = dict(other)  # flags a subclass added, and accepted reference flags
        try:
            actors = ActorRange.parse(n_analysis_actors)
        except ValueError as exc:
            raise ReproducerError(f"n_analysis_actors: {exc}") from exc
        if not (isinstance(idle_actor_timeout, int | float) and 0 < idle_actor_timeout < math.inf):
            raise ReproducerError(
                f"idle_actor_timeout must be a number of seconds > 0, not {idle_actor_timeout!r}"
            )
        self._settings = PipelineSettings(
            config=load_config(self.config_file),
            consumer_topic=consumer_topic_name,
            producer_topic=producer_topic_name,
            group_id=consumer_group_id,
            mode=mode,  # type: ignore[arg-type]
            output_dir=self.output_dir,
            download_regex=download_regex,
            ray_address=ray_address,
            ray_dashboard=ray_dashboard,
            file_transfer=file_transfer,
            n_analysis_actors=actors.min,
            max_analysis_actors=actors.max if actors.elastic else None,
            idle_actor_timeout=idle_actor_timeout,
            actor_num_cpus=analysis_num_cpus,
            actor_resources=dict(analysis_resources or {}),
            ingest_resources=dict(ingest_resources or {}),
            max_in_flight=max_in_flight,
            max_held_bytes=int(max_held_mb * 2**20),
            max_retries=max_retries,
            analysis_timeout_s=analysis_timeout_secs,
            produce_retry_s=produce_retry_secs,
            file_idle_timeout=file_idle_timeout,
            update_seconds=update_seconds,
            dead_letter_topic=dead_letter_topic,
            stop_when_idle=stop_when_idle,
            check_chunk_hashes=check_chunk_hashes,
            hash_threads=n_consumer_threads,
            exactly_once=exactly_once,
            start_from=_start_from(from_beginning, start_time),
            reprocess=reprocess,
            heartbeat_topic=heartbeat_topic_name,
            heartbeat_interval=heartbeat_interval_secs,
            log_topic=log_topic_name,
            log_interval=log_interval_secs,
            program_id=heartbeat_program_id or type(self).__name__,
        )

    def _get_processing_result_message_for_file(
        self, datafile: DownloadDataFile, lock: Any
    ) -> ReproducerMessage | None:
        raise NotImplementedError(
            f"{type(self).__name__} must implement _get_processing_result_message_for_file"
        )

    def __getstate__(self) -> dict[str, Any]:
        """What goes to the analysis actors (a copy each): the instance without the
        pipeline's settings, whose Kafka credentials user code has no use for (nor object
        store spill files, nor the actors' logs)."""
        state = dict(self.__dict__)
        state.pop("_settings", None)
        state.pop("last_run", None)
        state["options"] = {k: v for k, v in self.options.items() if k != "web_token"}
        return state

    def produce_processing_results_for_files_as_read(self) -> ProcessingResults:
        """Run the pipeline until stopped; return the reference's five values."""
        page = self._start_page()
        try:
            summary = self._run(threading.Event(), RunSummary())
        finally:
            if page is not None:
                page.stop()
        self.last_run = summary  # everything the run counted, beyond the reference's five
        return ProcessingResults(*summary.as_tuple())

    def start(self) -> PipelineHandle:
        """Run the pipeline on a thread of its own and return at once (a notebook stays
        usable): ``handle.progress()`` while it runs, ``handle.stop()`` to drain and
        stop it, ``handle.wait()`` for a batch run (``stop_when_idle``) to end."""
        summary, stop = RunSummary(), threading.Event()
        handle = PipelineHandle(summary, stop)

        page = self._start_page()

        def body() -> None:
            try:
                self.last_run = self._run(stop, summary)
            except BaseException as exc:  # noqa: BLE001 - raised by the handle's wait()
                handle._error = exc
            finally:
                if page is not None:
                    page.stop()
                handle._done.set()

        threading.Thread(target=body, name=type(self).__name__, daemon=True).start()
        return handle

    def _start_page(self) -> Any:
        """The results page beside the run (``web_port``), showing its results topic, its
        dead-letter topic and its progress; ``None`` without a port."""
        port = self.options.get("web_port")
        if port is None:
            return None
        from reproducer.web import FeedSettings, WebSettings, start  # noqa: PLC0415
        from reproducer.web.feed import runs_on  # noqa: PLC0415

        config = self._settings.config

        # this run's results (and others produced to the topic meanwhile); `reproducer web
        # --since` shows earlier ones
        feed = FeedSettings(
            config,
            self.producer_topic_name,
            self._settings.dead_letter_topic,
            since=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5),
        )
        settings = WebSettings(
            feed,
            host=self.options.get("web_host") or "127.0.0.1",
            port=int(port),
            token=self.options.get("web_token"),
            output_dir=self.output_dir,
        )
        return start(settings, runs_on(config, None))  # once this run joined Ray

    def _run(self, stop: threading.Event, summary: RunSummary) -> RunSummary:
        """One run of the pipeline (a subclass running other targets overrides it)."""
        return run_pipeline(self, self._settings, stop, summary)

    def close(self) -> None:
        """Nothing to release: the pipeline's actors stop when the run ends."""

    # ------------------------------------------------------------------ command line
    @classmethod
    def get_command_line_arguments(cls) -> tuple[list[str], dict[str, Any]]:
        """(required flag names, {flag name: default}); a subclass extends ``super()``'s."""
        args = ["config"]
        kwargs: dict[str, Any] = {
            "topic_name": None,
            "consumer_topic_name": None,
            "producer_topic_name": None,
            "consumer_group_id": "create_new",
            "n_consumer_threads": 2,
            "n_producer_threads": 1,
            "download_regex": None,
            "mode": "memory",
            "output_dir": None,
            "update_seconds": 300.0,
            "heartbeat_topic_name": None,
            "heartbeat_program_id": None,
            "heartbeat_interval_secs": 900.0,
            "log_topic_name": None,
            "log_interval_secs": 60.0,
            "logger_stream_level": "info",
            "logger_file_level": "warning",
            "logger_file_path": None,
            "ray_address": None,
            "ray_dashboard": False,
            "file_transfer": "auto",
            "n_analysis_actors": 2,
            "idle_actor_timeout": 60.0,
            "analysis_num_cpus": 1.0,
            "analysis_resources": None,
            "ingest_resources": None,
            "max_held_mb": 2048.0,
            "max_in_flight": 10000,
            "max_retries": 2,
            "analysis_timeout_secs": None,
            "produce_retry_secs": 120.0,
            "file_idle_timeout": 3600.0,
            "dead_letter_topic": None,
            "stop_when_idle": None,
            "check_chunk_hashes": False,
            "exactly_once": False,
            "from_beginning": False,
            "start_time": None,
            "reprocess": False,
            "web_port": None,
            "web_host": "127.0.0.1",
            "web_token": None,
        }
        return args, kwargs

    @classmethod
    def get_argument_parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=cls.__name__, description=(inspect.getdoc(cls) or cls.__name__).splitlines()[0]
        )
        args, kwargs = cls.get_command_line_arguments()
        added: set[str] = set()
        for name in args:  # as in the reference: flags with no default; only --config is required
            if name not in added:
                added.add(name)
                spec = dict(_CATALOGUE.get(name, {}))
                if name == "config":
                    spec["required"] = True
                else:
                    spec["default"] = kwargs.get(name)
                parser.add_argument(f"--{name}", **spec)
        for name, default in kwargs.items():
            if name in added:
                continue
            added.add(name)
            spec = dict(_CATALOGUE.get(name, {}))
            if name not in _CATALOGUE and default is not None and not isinstance(default, bool):
                spec["type"] = type(default)
            if isinstance(default, bool) and name not in _CATALOGUE:
                spec = {"action": "store_false" if default else "store_true"}
            parser.add_argument(f"--{name}", default=default, **spec)
        return parser

    @classmethod
    def get_init_args_kwargs(
        cls, parsed_args: argparse.Namespace
    ) -> tuple[list[Any], dict[str, Any]]:
        """Constructor arguments from parsed flags (unlike openmsistream 1.8.8, they work)."""
        options = dict(vars(parsed_args))
        consumer_topic = options.pop("consumer_topic_name", None) or options.pop("topic_name", None)
        options.pop("topic_name", None)
        producer_topic = options.pop("producer_topic_name", None)
        if not consumer_topic or not producer_topic:
            raise SystemExit(
                f"{cls.__name__}: --consumer_topic_name (or --topic_name) and --producer_topic_name are required"
            )
        options["consumer_topic_name"] = consumer_topic
        options["producer_topic_name"] = producer_topic
        config = options.pop("config")
        for unused in (
            "n_producer_threads",
            "logger_stream_level",
            "logger_file_level",
            "logger_file_path",
        ):
            options.pop(unused, None)
        # The topics as keywords: cls(*args, **kwargs) works, and so does the 1.8.8-era
        # work-around of popping them from kwargs.
        return [config], options

    @classmethod
    def run_from_command_line(cls, args: list[str] | None = None) -> ProcessingResults:
        parsed = cls.get_argument_parser().parse_args(args)
        _configure_logging(cls.__name__, parsed)
        init_args, init_kwargs = cls.get_init_args_kwargs(parsed)
        reproducer = cls(*init_args, **init_kwargs)
        results = reproducer.produce_processing_results_for_files_as_read()
        reproducer.close()
        reproducer.logger.info(
            "%d messages read, %d files read, %d results produced",
            results.n_msgs_read,
            results.n_files_read,
            results.n_results_produced,
        )
        return results


class MetadataJSONReproducer(DataFileStreamReproducer):
    """Implement ``_get_metadata_dict_for_file(datafile) -> dict``; results are its JSON."""

    def _get_metadata_dict_for_file(self, datafile: DownloadDataFile) -> dict[str, Any]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement _get_metadata_dict_for_file"
        )

    def _get_processing_result_message_for_file(
        self, datafile: DownloadDataFile, lock: Any
    ) -> ReproducerMessage | None:
        try:
            metadata = self._get_metadata_dict_for_file(datafile)
        except Exception:
            self.logger.exception("metadata extraction failed for %s", datafile.relative_filepath)
            return None
        return JSONMessage(datafile, metadata)


def _configure_logging(name: str, parsed: argparse.Namespace) -> None:
    level = getattr(
        logging, str(getattr(parsed, "logger_stream_level", "info")).upper(), logging.INFO
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_dir = getattr(parsed, "output_dir", None) or Path(f"{name}_output")
    log_path = (
        getattr(parsed, "logger_file_path", None) or Path(output_dir) / LOGS_DIR / f"{name}.log"
    )
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path)
    handler.setLevel(
        getattr(
            logging, str(getattr(parsed, "logger_file_level", "warning")).upper(), logging.WARNING
        )
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _start_from(from_beginning: bool, start_time: str | None) -> str | float | None:
    """Where a replay starts: ``"beginning"``, a Unix time, or ``None`` (the commits)."""
    if from_beginning and start_time:
        raise ReproducerError("--from_beginning and --start_time: give one of them")
    if start_time:
        return parse_time(start_time).timestamp()
    return "beginning" if from_beginning else None
