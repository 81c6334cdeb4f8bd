"""A rebuilt file on disk, as an analysis sees it (DownloadDataFile)."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from reproducer.datafile import DownloadDataFile, FileMeta


def _meta(path: Path, identity: tuple[int, int, int] | None) -> FileMeta:
    return FileMeta(
        1, "", path.name, b"\0" * 64, 1, path.stat().st_size, 0.0, str(path), "n", 0.0, identity
    )


def test_a_file_replaced_at_the_same_path_is_not_trusted(tmp_path: Path) -> None:
    """The analysis sees a file of the same size at the path the ingest wrote, but not the
    one it wrote (a newer version renamed over it, or another node's stale copy): its
    bytes come from the ingest actor instead."""
    path = tmp_path / "x.bin"
    path.write_bytes(b"right")
    st = path.stat()
    meta = _meta(path, (st.st_ino, st.st_size, st.st_mtime_ns))
    fetched = []

    def fetch() -> np.ndarray:
        fetched.append(True)
        return np.frombuffer(b"right", np.uint8)

    same = DownloadDataFile(meta, None, fetch=fetch, trust_path=True)
    assert same.full_filepath == path and same.bytestring == b"right" and not fetched

    other = tmp_path / "other.bin"
    other.write_bytes(b"wrong")  # same size, another inode
    other.replace(path)
    replaced = DownloadDataFile(meta, None, fetch=fetch, trust_path=True, local_dir=tmp_path / "c")
    assert replaced.bytestring == b"right" and fetched
    assert replaced.full_filepath != path
    replaced.discard()


def test_a_file_in_shared_memory_is_mapped_on_its_node_and_fetched_elsewhere(
    tmp_path: Path,
) -> None:
    """Memory mode, a larger file: on the ingest's node its pages are mapped (``buffer``
    copies nothing); on another node, or if the file there is not the one the ingest
    wrote, its bytes come from the ingest actor. It is never the file's ``full_filepath``
    (not an output of the run)."""
    path = tmp_path / "f.file"
    path.write_bytes(b"shared bytes")
    st = path.stat()
    meta = FileMeta(
        1, "", "f.bin", b"\0" * 64, 1, st.st_size, 0.0, None, "n", 0.0,
        (st.st_ino, st.st_size, st.st_mtime_ns), str(path),
    )  # fmt: skip
    fetched = []

    def fetch() -> np.ndarray:
        fetched.append(True)
        return np.frombuffer(b"shared bytes", np.uint8)

    here = DownloadDataFile(meta, None, fetch=fetch, trust_path=True)
    view = here.buffer
    assert bytes(view) == b"shared bytes" and view.readonly and not fetched
    assert isinstance(here._data, np.ndarray) and isinstance(here._data.base.obj, mmap.mmap)
    assert here.bytestring == b"shared bytes" and here.full_filepath is None

    elsewhere = DownloadDataFile(meta, None, fetch=fetch, trust_path=False)
    assert elsewhere.bytestring == b"shared bytes" and fetched

    fetched.clear()
    path.unlink()
    path.write_bytes(b"other bytes!")  # another file at that path: not trusted
    replaced = DownloadDataFile(meta, None, fetch=fetch, trust_path=True)
    assert bytes(replaced.buffer) == b"shared bytes" and fetched
