"""The reference command-line API, without running a pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reproducer import DataFileStreamReproducer, MetadataJSONReproducer
from reproducer.datafile import DownloadDataFile, FileMeta
from reproducer.errors import ReproducerError
from tests.pipeline.size_reproducer import SizeReproducer


class WithFlag(SizeReproducer):
    @classmethod
    def get_command_line_arguments(cls) -> tuple[list[str], dict[str, Any]]:
        superargs, superkwargs = super().get_command_line_arguments()
        return [*superargs, "heartbeat_topic_name", "mode"], {**superkwargs, "threshold": 3}

    def __init__(self, *args: Any, threshold: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threshold = threshold


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.config"
    path.write_text("[broker]\nbootstrap.servers = 127.0.0.1:9\n")
    return path


def test_init_args_build_a_working_instance(config_file: Path, tmp_path: Path) -> None:
    parser = SizeReproducer.get_argument_parser()
    parsed = parser.parse_args(
        [
            "--config",
            str(config_file),
            "--topic_name",
            "raw",
            "--producer_topic_name",
            "out",
            "--output_dir",
            str(tmp_path / "o"),
            "--mode",
            "disk",
        ]
    )
    args, kwargs = SizeReproducer.get_init_args_kwargs(parsed)
    made = SizeReproducer(*args, **kwargs)  # openmsistream 1.8.8 raises TypeError here
    assert (made.consumer_topic_name, made.producer_topic_name) == ("raw", "out")
    assert made.output_dir == (tmp_path / "o").resolve()
    # the work-around users of 1.8.8 wrote keeps working too
    consumer_topic = kwargs.pop("consumer_topic_name")
    producer_topic = kwargs.pop("producer_topic_name")
    assert (
        SizeReproducer(args[0], consumer_topic, producer_topic, **kwargs).producer_topic_name
        == "out"
    )


def test_defaults_follow_the_reference(config_file: Path) -> None:
    parsed = SizeReproducer.get_argument_parser().parse_args(
        ["--config", str(config_file), "--consumer_topic_name", "a", "--producer_topic_name", "b"]
    )
    assert parsed.consumer_group_id == "create_new"
    assert parsed.mode == "memory"
    assert parsed.heartbeat_interval_secs == 900.0
    args, kwargs = SizeReproducer.get_init_args_kwargs(parsed)
    made = SizeReproducer(*args, **kwargs)
    assert made.output_dir.name == "SizeReproducer_output"


def test_subclass_flags(config_file: Path) -> None:
    parsed = WithFlag.get_argument_parser().parse_args(
        [
            "--config",
            str(config_file),
            "--topic_name",
            "a",
            "--producer_topic_name",
            "b",
            "--threshold",
            "7",
        ]
    )
    assert parsed.threshold == 7 and parsed.heartbeat_topic_name is None and parsed.mode == "memory"
    args, kwargs = WithFlag.get_init_args_kwargs(parsed)
    assert WithFlag(*args, **kwargs).threshold == 7


def test_missing_topics_and_config_are_clear(config_file: Path) -> None:
    with pytest.raises(SystemExit):
        SizeReproducer.get_argument_parser().parse_args(["--topic_name", "a"])
    parsed = SizeReproducer.get_argument_parser().parse_args(
        ["--config", str(config_file), "--topic_name", "a"]
    )
    with pytest.raises(SystemExit, match="producer_topic_name"):
        SizeReproducer.get_init_args_kwargs(parsed)


def test_base_classes_name_what_to_implement(config_file: Path) -> None:
    with pytest.raises(NotImplementedError, match="_get_processing_result_message_for_file"):
        DataFileStreamReproducer(config_file, "a", "b")._get_processing_result_message_for_file(
            None, None
        )  # type: ignore[arg-type]
    meta = FileMeta(1, "s", "x.csv", b"\0" * 64, 1, 3, 0.0, None, "node")
    datafile = DownloadDataFile(meta, np.frombuffer(b"abc", np.uint8))
    base = MetadataJSONReproducer(config_file, "a", "b")
    assert base._get_processing_result_message_for_file(datafile, None) is None  # logged, skipped

    class Metadata(MetadataJSONReproducer):
        def _get_metadata_dict_for_file(self, datafile: DownloadDataFile) -> dict[str, Any]:
            return {"text": datafile.bytestring.decode()}

    message = Metadata(config_file, "a", "b")._get_processing_result_message_for_file(
        datafile, None
    )
    assert message is not None
    assert message.msg_key == "s_x.csv_chunk_processing_result"
    assert message.msg_value == '{"text": "abc"}'


def test_exactly_once_with_a_new_group_at_every_start_is_refused(config_file: Path) -> None:
    """`create_new` (the reference's default) makes a new group, and so a new transactional
    id, at every start: a restart would produce everything again. Refused before anything
    starts, saying what to set; a named group goes on (to the unreachable broker here)."""
    run = SizeReproducer(config_file, "in", "out", exactly_once=True)
    with pytest.raises(ReproducerError, match="--consumer_group_id"):
        run.produce_processing_results_for_files_as_read()
    config_file.write_text(config_file.read_text() + "[consumer]\ngroup.id = create_new\n")
    named = SizeReproducer(config_file, "in", "out", exactly_once=True, consumer_group_id="g")
    assert named._settings.group_id == "g"


def test_analysis_actors_get_no_kafka_credentials(tmp_path: Path) -> None:
    """The instance is shipped to every analysis actor (user code, object-store spills):
    it goes without the pipeline's settings, so the [broker] password stays behind."""
    from ray import cloudpickle  # noqa: PLC0415 - what Ray ships actors' arguments with

    config = tmp_path / "secret.config"
    config.write_text(
        "[broker]\nbootstrap.servers = h:1\nsecurity.protocol = SASL_SSL\n"
        "sasl.mechanism = SCRAM-SHA-512\nsasl.username = lab\nsasl.password = s3cretPW\n"
    )
    run = SizeReproducer(config, "in", "out", delay=0.5)
    shipped = cloudpickle.dumps(run)
    assert b"s3cretPW" not in shipped
    copy = cloudpickle.loads(shipped)
    assert copy.options["delay"] == 0.5 and copy.consumer_topic_name == "in"
