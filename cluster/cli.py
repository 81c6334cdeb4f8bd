"""The ``reproducer`` command.

::

    reproducer upload PATH... --config FILE --topic_name T [--chunk_size N] [--upload_regex RE]
    reproducer results --config FILE --topic_name T [--analysis A] [--since TIME]
                       [--format jsonl|csv|parquet] [--output FILE] [--follow]
    reproducer status --config FILE --topic_name T --consumer_group_id G [--output_dir DIR]
                      [--ray_address auto|HOST:PORT] [--json]
    reproducer web --config FILE --topic_name RESULTS [--dead_letter_topic D] [--output_dir DIR]
                   [--since TIME] [--host H] [--port N] [--ray_address A]   # the results page
    reproducer broker [--port N] [--sasl_ssl]   # a local Apache Kafka broker for tests and trials
    reproducer demo [--mode memory|disk|both] [--web]   # upload, pipeline and results on local Kafka + Ray

This module is the only place that parses command lines and configures logging handlers.
It is the command layer: the one place that knows both ``reproducer`` (the pipeline) and
``analyses`` (what runs in it), which only ever import in that direction.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from reproducer import __version__
from reproducer.chunk import DEFAULT_CHUNK_SIZE
from reproducer.config import load_config
from reproducer.errors import ReproducerError
from reproducer.upload import DEFAULT_UPLOAD_REGEX, progress_stream, upload

__all__ = ["build_parser", "main"]

log = logging.getLogger("reproducer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reproducer",
        description="Ray-distributed OpenMSIStream-compatible data file reproducer.",
    )
    parser.add_argument(
        "--logger_stream_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="level of log lines written to stderr (default: info)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "upload", help="chunk files and directory trees and produce them to a topic"
    )
    up.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or directories")
    up.add_argument(
        "--config",
        required=True,
        type=Path,
        help="OpenMSIStream INI config file: a path, or a NAME found as NAME.config in "
        "$RAY_REPRODUCER_CONFIG_DIR or the project's cluster/",
    )
    up.add_argument("--topic_name", required=True, help="topic to produce the chunks to")
    up.add_argument(
        "--chunk_size",
        type=_positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"bytes of file data per message (default: {DEFAULT_CHUNK_SIZE})",
    )
    up.add_argument(
        "--upload_regex",
        default=DEFAULT_UPLOAD_REGEX,
        help="only relative paths matching this regex are uploaded (default: all but *.log)",
    )

    br = sub.add_parser("broker", help="run a local Apache Kafka broker until interrupted")
    br.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    br.add_argument("--prefer", choices=["auto", "kafka", "tansu"], default="auto")
    br.add_argument(
        "--sasl_ssl",
        action="store_true",
        help="SASL_SSL with SCRAM-SHA-512 (a new certificate and password); prints the path "
        "of a client config file for it",
    )

    res = sub.add_parser(
        "results",
        help="read a results topic back: one row per result, as jsonl, csv or parquet",
    )
    res.add_argument("--config", required=True, type=Path, help="config file (as for upload)")
    res.add_argument("--topic_name", required=True, help="the results topic")
    res.add_argument("--analysis", default=None, help="only this analysis's results")
    res.add_argument(
        "--since", default=None, help="only results produced from this ISO 8601 time on"
    )
    res.add_argument(
        "--format",
        choices=["jsonl", "csv", "parquet"],
        default=None,
        help="jsonl (each result whole), csv or parquet (flat rows); default: from the "
        "--output suffix, else jsonl",
    )
    res.add_argument("--output", type=Path, default=None, help="a file (default: stdout)")
    res.add_argument(
        "--follow", action="store_true", help="keep reading new results (jsonl) until ^C"
    )

    st = sub.add_parser(
        "status",
        help="how far a consumer group is behind on a chunk topic, and what its running "
        "pipeline is doing",
    )
    st.add_argument("--config", required=True, type=Path, help="config file (as for upload)")
    st.add_argument("--topic_name", required=True, help="the chunk topic")
    st.add_argument("--consumer_group_id", required=True, help="the pipeline's consumer group")
    st.add_argument(
        "--output_dir", type=Path, default=None, help="the pipeline's output folder (its LOGS)"
    )
    st.add_argument(
        "--ray_address",
        default=None,
        help="also ask the pipelines of this group running on this Ray cluster ('auto': the "
        "one on this machine) for their live progress",
    )
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")

    web = sub.add_parser(
        "web",
        help="a live results page: results, plots, failures and progress in a browser "
        "(needs the web extra)",
    )
    web.add_argument("--config", required=True, type=Path, help="config file (as for upload)")
    web.add_argument("--topic_name", required=True, help="the results topic")
    web.add_argument(
        "--dead_letter_topic", default=None, help="the dead-letter topic (the failures view)"
    )
    web.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="the pipeline's output folder: the plots its results name are served from it",
    )
    web.add_argument(
        "--since", default=None, help="only results produced from this ISO 8601 time on"
    )
    web.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: this machine only; any other needs a token)",
    )
    web.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: a free one)")
    web.add_argument(
        "--web_token",
        default=None,
        help="a token every request must carry (default: $REPRODUCER_WEB_TOKEN; required "
        "off this machine)",
    )
    web.add_argument(
        "--ray_address",
        default=None,
        help="show the progress and lag of the pipelines running on this Ray cluster "
        "('auto': the one started on this machine)",
    )
    web.add_argument(
        "--max_entries",
        type=_positive_int,
        default=10_000,
        help="results (and as many failures) the server holds; older ones are dropped from "
        "the page (default: 10000)",
    )

    run = sub.add_parser(
        "run",
        add_help=False,
        help="run registered analyses on a chunk topic (reproducer run --help for its flags)",
    )
    run.add_argument("rest", nargs=argparse.REMAINDER)

    demo = sub.add_parser(
        "demo",
        help="the main job on its local default: upload a file tree, run the pipeline, check results",
    )
    demo.add_argument("--mode", choices=["memory", "disk", "both"], default="memory")
    demo.add_argument("--size_mb", type=_positive_int, default=64, help="size of the largest file")
    demo.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="rebuilt files (disk modes), plots and LOGS (default: ./reproducer_demo_output)",
    )
    demo.add_argument(
        "--web",
        action="store_true",
        help="show the results live on the results page (needs the web extra); on a "
        "terminal it stays open until Enter is pressed",
    )
    demo.add_argument(
        "--web_port", type=int, default=8000, help="port of the results page (default: 8000)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    before, command, after = _split_command(argv)
    if command == "run":  # its own parser (a reproducer's flags), which takes the global ones
        return _run([*before, *after])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.logger_stream_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "upload":
            return _upload(args)
        if args.command == "broker":
            from cluster.broker import main as broker_main  # noqa: PLC0415

            extra = ["--prefer", args.prefer] + (["--port", str(args.port)] if args.port else [])
            extra += ["--sasl-ssl"] if args.sasl_ssl else []
            return broker_main(extra)
        if args.command == "results":
            return _results(args)
        if args.command == "status":
            return _status(args)
        if args.command == "web":
            return _web(args)
        if args.command == "demo":
            from cluster.demo import run_demo  # noqa: PLC0415

            on_terminal = sys.stdin.isatty() and sys.stdout.isatty()
            return run_demo(
                args.mode,
                args.size_mb,
                args.output_dir,
                web_port=args.web_port if args.web else None,
                wait=input if on_terminal else None,
            )
    except ReproducerError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


_GLOBAL_WITH_VALUE = frozenset({"--logger_stream_level"})


def _split_command(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(global options, the command, what follows it): global options come before the
    command, as in ``reproducer --logger_stream_level debug run --analysis X``."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _GLOBAL_WITH_VALUE:
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return argv[:i], word, argv[i + 1 :]
    return argv, None, []


def _run(argv: list[str]) -> int:
    from analyses.runner import AnalysesRun  # noqa: PLC0415

    try:
        AnalysesRun.run_from_command_line(argv)
    except ReproducerError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _upload(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    report = upload(
        args.paths,
        config,
        args.topic_name,
        chunk_size=args.chunk_size,
        upload_regex=args.upload_regex,
        progress=progress_stream(),
    )
    print(
        f"uploaded {report.n_files} files, {report.n_chunks} chunks, {report.n_bytes} bytes "
        f"to {args.topic_name} in {report.seconds:.2f} s ({report.mb_per_s:.1f} MB/s)"
    )
    return 0


def _results(args: argparse.Namespace) -> int:
    from reproducer.results import read_results, write_rows  # noqa: PLC0415

    fmt = args.format
    if fmt is None:
        suffix = args.output.suffix.lstrip(".").lower() if args.output is not None else ""
        fmt = suffix if suffix in ("csv", "parquet") else "jsonl"
    if args.follow and fmt != "jsonl":
        raise ReproducerError("--follow writes jsonl, one result a line as it arrives")
    config = load_config(args.config)
    if args.follow:
        out = args.output.open("a", encoding="utf-8") if args.output else sys.stdout

        def write(record: dict[str, object]) -> None:
            write_rows([record], "jsonl", out)
            out.flush()

        read_results(
            config,
            args.topic_name,
            analysis=args.analysis,
            since=args.since,
            follow=True,
            on_record=write,
        )
        return 0
    records = read_results(config, args.topic_name, analysis=args.analysis, since=args.since)
    n = write_rows(records, fmt, args.output if args.output is not None else sys.stdout)
    where = f" to {args.output}" if args.output is not None else ""
    print(f"{n} results from {args.topic_name}{where}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from reproducer.status import pipeline_status  # noqa: PLC0415

    status = pipeline_status(
        load_config(args.config),
        args.topic_name,
        args.consumer_group_id,
        output_dir=args.output_dir,
        ray_address=args.ray_address,
    )
    print(json.dumps(status.as_dict(), indent=2) if args.json else status.text())
    return 0


def _web(args: argparse.Namespace) -> int:
    from reproducer.results import parse_time  # noqa: PLC0415
    from reproducer.web import FeedSettings, WebSettings, serve  # noqa: PLC0415
    from reproducer.web.feed import runs_on  # noqa: PLC0415

    config = load_config(args.config)
    serve(
        WebSettings(
            FeedSettings(
                config,
                args.topic_name,
                args.dead_letter_topic,
                since=parse_time(args.since) if args.since else None,
            ),
            host=args.host,
            port=args.port,
            token=args.web_token,
            output_dir=args.output_dir,
            max_entries=args.max_entries,
        ),
        runs_on(config, args.ray_address) if args.ray_address else None,
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value
