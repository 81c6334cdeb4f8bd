"""The pure parts of running on a cluster: placement defaults, actor counts, and how an
analysis node reads a file rebuilt on another node."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from analyses.runner import _n_actors
from cluster.submit import with_cluster_defaults
from reproducer.datafile import DownloadDataFile, FileMeta
from reproducer.errors import ReproducerError
from reproducer.scaling import ActorRange


def test_placement_flags_are_added_only_for_resources_the_cluster_offers() -> None:
    argv = ["--analysis", "x"]
    assert with_cluster_defaults(argv, set()) == argv
    assert with_cluster_defaults(argv, {"ingest", "analysis"}) == [
        *argv,
        "--ingest_resources",
        '{"ingest": 1}',
        "--analysis_resources",
        '{"analysis": 1}',
    ]
    given = [*argv, '--analysis_resources={"gpu_box": 1}']
    assert with_cluster_defaults(given, {"analysis"}) == given  # the user's choice stays


def test_n_actors_for_all_or_by_name_and_clear_errors() -> None:
    names = ["a", "b"]
    assert _n_actors(None, names) == {}
    assert _n_actors("3", names) == {"a": ActorRange(3, 3), "b": ActorRange(3, 3)}
    assert _n_actors("a=2, b=5", names) == {"a": ActorRange(2, 2), "b": ActorRange(5, 5)}
    assert _n_actors("a=1..8", names) == {"a": ActorRange(1, 8)}
    with pytest.raises(ReproducerError, match="nor a range"):
        _n_actors("a=4..2", names)
    with pytest.raises(ReproducerError, match="'c' is not one of the analyses"):
        _n_actors("c=2", names)
    with pytest.raises(ReproducerError, match="not a count >= 1"):
        _n_actors("a=0", names)
    with pytest.raises(ReproducerError, match="not a count >= 1"):
        _n_actors("many", names)


def _meta(path: Path, data: bytes) -> FileMeta:
    return FileMeta(
        1, "sub", "f.bin", hashlib.sha512(data).digest(), 1, len(data), 0.0, str(path), "node-a"
    )


def test_a_file_seen_in_place_is_read_there_and_nothing_is_fetched(tmp_path: Path) -> None:
    data = b"rebuilt bytes"
    path = tmp_path / "out" / "sub" / "f.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)

    def fetch() -> np.ndarray:
        raise AssertionError("fetched although the file is readable here")

    datafile = DownloadDataFile(_meta(path, data), None, local_dir=tmp_path / "copies", fetch=fetch)
    assert datafile.full_filepath == path
    assert datafile.bytestring == data


@pytest.mark.parametrize("visible", [False, True])
def test_a_file_from_another_node_is_fetched_once_into_a_local_copy(
    tmp_path: Path, visible: bool
) -> None:
    """Not visible here (no shared folder), or visible but not trusted (``--file_transfer
    always``): the bytes are fetched once, the copy holds them, ``discard`` removes it."""
    data = b"0123456789" * 1000
    path = tmp_path / "elsewhere" / "sub" / "f.bin"
    if visible:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * len(data))  # same size, other bytes: must not be read
    calls = []

    def fetch() -> np.ndarray:
        calls.append(1)
        return np.frombuffer(data, np.uint8)

    datafile = DownloadDataFile(
        _meta(path, data),
        None,
        local_dir=tmp_path / "copies",
        fetch=fetch,
        trust_path=not visible,
    )
    local = datafile.full_filepath
    assert local == tmp_path / "copies" / "sub" / "f.bin"
    assert local.read_bytes() == data
    assert datafile.bytestring == data
    assert len(calls) == 1
    datafile.discard()
    assert not local.exists()


def test_a_wrong_size_file_in_place_is_not_trusted(tmp_path: Path) -> None:
    """A stale file of another run under the same path: its size differs, so the bytes
    are fetched instead."""
    data = b"new contents"
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    datafile = DownloadDataFile(
        _meta(path, data),
        None,
        local_dir=tmp_path / "c",
        fetch=lambda: np.frombuffer(data, np.uint8),
    )
    assert datafile.bytestring == data
    assert datafile.full_filepath != path
