"""Which files the uploader sends, refuses or skips (no broker needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reproducer.errors import ReproducerError
from reproducer.upload import find_files


def test_tree_selection(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "LOGS").mkdir()
    (tmp_path / ".hidden_dir").mkdir()
    for name in [
        "a.txt",
        "sub/b.csv",
        "run.log",
        ".hidden",
        "LOGS/x.csv",
        ".hidden_dir/y",
        "sub/c:d.txt",
    ]:
        (tmp_path / name).write_text(name)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "back\\slash").write_text("x")
    (tmp_path / os.fsdecode(b"\xff.bin")).write_text("x")

    selection = find_files([tmp_path])
    assert [s.relative for s in selection.sources] == [
        "a.txt",
        "link.txt",
        "sub/b.csv",
        "sub/c:d.txt",
    ]
    assert set(selection.refused) == {"dangling", "pipe", "back\\slash", "?.bin"}
    assert selection.refused["pipe"] == "not a regular file"
    assert "forbidden character" in selection.refused["back\\slash"]
    assert selection.refused["?.bin"] == "name is not UTF-8"


def test_regex_is_matched_on_the_relative_path(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "x.h5").write_text("1")
    (tmp_path / "drop.h5").write_text("2")
    selection = find_files([tmp_path], r"keep/")
    assert [s.relative for s in selection.sources] == ["keep/x.h5"]


def test_same_relative_path_twice_is_an_error(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.txt").write_text(folder)
    with pytest.raises(ReproducerError, match=r"would both arrive as 'x\.txt'"):
        find_files([tmp_path / "a" / "x.txt", tmp_path / "b" / "x.txt"])


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReproducerError, match="no such file or directory"):
        find_files([tmp_path / "nope"])
