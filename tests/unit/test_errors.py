"""The project's errors cross Ray's process boundary (an actor's error reaches the driver
through pickle) whole: type, message and data. One whose class takes other arguments than
its message used to arrive as Ray's "failed to deserialize exception"."""

from __future__ import annotations

import pickle

import pytest

from reproducer.errors import (
    ChunkDecodeError,
    ChunkHashError,
    ConfigError,
    FileReplaced,
    OutputUnavailable,
    ReproducerError,
    RunInterrupted,
    TopicUnavailable,
    UnsafePathError,
    UploadError,
)

ERRORS = [
    ReproducerError("plain"),
    RunInterrupted("partitions [0] of t were lost"),
    ConfigError("no bootstrap.servers", path="a.config", key="bootstrap.servers"),
    ChunkDecodeError("chunk_i", "0 is outside [1, 3]").at("t", 2, 17),
    ChunkHashError("data", "hash mismatch"),
    UnsafePathError("subdir_str", "'..' is not allowed"),
    OutputUnavailable("run/a.h5", "No space left on device"),
    TopicUnavailable("results", "does not exist"),
    UploadError({"a.bin": "timed out"}),
    FileReplaced("out/run/a.h5"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_survives_pickle_whole(error: ReproducerError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error) and again.args == error.args
    assert vars(again) == vars(error)  # topic, reason, field, partition, offset, ...


def test_a_topic_error_keeps_what_callers_decide_on() -> None:
    again = pickle.loads(pickle.dumps(TopicUnavailable("results", "does not exist")))
    assert (again.topic, again.reason) == ("results", "does not exist")
    assert str(again) == "topic results does not exist"
