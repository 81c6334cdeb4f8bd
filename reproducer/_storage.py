"""Where the bytes of a partial file live while it is rebuilt: memory, disk or both.

Memory keeps a small file's chunks as they arrived (joined once, at completion) and writes
a larger one's in place into an anonymous ``mmap`` sized from the chunk metadata: pages cost
memory only once written, so a generous estimate is free (no concatenation, no second copy
at completion). Either way a partial file holds about what arrived for it, whatever its
chunks claim. Disk writes go to a hidden temporary file next to the final path, renamed
over it only when the file is complete and verified.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "HEAP_LIMIT",
    "DiskStore",
    "MemoryStore",
    "Mode",
    "SharedFolder",
    "SharedStore",
    "Store",
    "StoreError",
    "open_store",
    "remove_abandoned",
    "shared_folder",
    "sync_folders",
    "write_atomically",
]

Mode = Literal["memory", "disk", "both"]


Buffer = bytes | memoryview  # a chunk's bytes: a view of its message, or a copy

# Above this, a buffer is its own mmap (the ingest fixes glibc's threshold at it too).
HEAP_LIMIT = 128 << 10
PAGE = mmap.PAGESIZE


class StoreError(Exception):
    """The bytes of a file could not be stored (out of memory, disk full, unsafe path).

    ``unavailable``: the output folder itself failed (disk full, read-only, an I/O error,
    a file-size limit), not this file: no file could be stored now, and giving this one up
    would lose it. The run stops instead, with nothing committed past it.
    """

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


# The output folder's state, not the file's: a restart once it is fixed stores the file.
_UNAVAILABLE = frozenset(
    {
        errno.ENOSPC,  # disk full
        errno.EDQUOT,  # quota exceeded
        errno.EROFS,  # remounted read-only (after an error, often)
        errno.EIO,
        errno.EFBIG,  # a file-size limit (RLIMIT_FSIZE, the filesystem's)
        errno.EMFILE,
        errno.ENFILE,
    }
)


def _os_error(what: str, exc: OSError | RuntimeError) -> StoreError:
    return StoreError(f"{what}: {exc}", unavailable=getattr(exc, "errno", None) in _UNAVAILABLE)


class _Count:
    """A process-wide count that the reader's and the hash workers' threads change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def __call__(self, delta: int) -> int:
        """Add ``delta``; the count after it."""
        with self._lock:
            self._n += delta
            return self._n


_count_fds = _Count()  # descriptors held open by disk stores in this process


class Store:
    """Interface of a partial file's storage."""

    @property
    def held_bytes(self) -> int:
        """Bytes of this file held in memory."""
        return 0

    @property
    def claimed_bytes(self) -> int:
        """Memory a small file's only chunk claims for it beyond what it holds (see
        :class:`MemoryStore`): counted in the budget, though not taken."""
        return 0

    def copy_in(self, offset: int, data: Buffer, *, again: bool = False) -> None:
        """Put the bytes in memory, on the caller's thread (a quick copy). ``again``: the
        same bytes range was stored before (a corrupt chunk's good copy), so the memory it
        takes is counted already."""

    def write(self, offset: int, data: Buffer) -> None:
        """Put the bytes on disk, on the worker thread (a system call that drops the GIL)."""

    def rewrite(self, offset: int, data: Buffer) -> None:
        """Put a good copy of a chunk over the corrupt bytes stored at the same place, on
        the worker thread while the file is being finished."""
        self.copy_in(offset, data, again=True)
        self.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def hash_range(self, hasher: Any, offset: int, length: int) -> None:
        """Feed stored bytes to ``hasher`` (on the worker thread)."""
        hasher.update(self.read(offset, length))

    def finish(self, size: int) -> tuple[memoryview | None, Path | None]:
        """Make the stored bytes the final file; returns (memory view, disk path)."""
        raise NotImplementedError

    def discard(self) -> None:
        """Free memory and remove any temporary file."""


class MemoryStore(Store):
    """The bytes of one file in memory, holding about what arrived for it.

    A small file (a size hint up to ``HEAP_LIMIT``) keeps its chunks as they are and joins
    them into one buffer when it completes (a small copy, from the heap, whose memory the
    allocator reuses file after file). It holds what arrived, in
    whatever order, and nothing for the chunks that did not. (A buffer of the claimed size,
    zeroed whole at the first chunk, made every half-arrived small file look like a chunk
    claiming more than it sends, and under a tight budget good ones were given up.)

    A larger file is written in place into an anonymous mmap: pages cost memory only once
    written, and it grows with mremap (no copy), so a wrong hint from a bad chunk costs
    nothing. It counts the pages its chunks touch, not the bytes: one byte a page apart
    takes a page each. A chunk's pages other than its first and last are its own (chunks
    of a good file do not overlap), and so are those two when it covers them whole; only a
    page it covers in part can be shared with a neighbour, so those alone are remembered,
    to count each once.

    The only chunk of a small file that claims more chunks is what a flood of lies
    consists of: until a second one arrives, the size it claims counts in the budget
    (:attr:`claimed_bytes`), as when a buffer of that size was taken for it, so such a
    flood is given up before it grows past the budget. A file whose second chunk has come
    counts what it holds.
    """

    _FIRST_MAP = 64 << 20
    # MAP_PRIVATE: a shared anonymous map (the default) is shmem, and growing it with
    # mremap leaves the new pages unbacked (SIGBUS on first write). No MADV_HUGEPAGE: with
    # the usual defrag=madvise its faults compact memory synchronously, 2x slower here.

    def __init__(self, capacity: int) -> None:
        self._hint = capacity
        self._pieces: dict[int, bytes] | None = {} if capacity <= HEAP_LIMIT else None
        self._map: mmap.mmap | None = None
        self._held = 0  # bytes of the pieces, or pages of the map touched (in bytes)
        self._shared: set[int] = set()  # pages of the map written in part, maybe shared
        # held while the worker hashes a view of the map (which a resize or a close would
        # refuse): the reader's thread resizes and closes it only between two
        self._viewing = threading.Lock()

    @property
    def held_bytes(self) -> int:
        """Memory the file takes now: the bytes of a small file's chunks, the pages of a
        larger file's map that were written to."""
        return self._held

    @property
    def claimed_bytes(self) -> int:
        if self._pieces is not None and len(self._pieces) == 1:
            return max(0, self._hint - self._held)
        return 0

    def copy_in(self, offset: int, data: Buffer, *, again: bool = False) -> None:
        if not data:
            return
        if self._pieces is not None:
            replaced = self._pieces.get(offset)
            self._pieces[offset] = bytes(data)
            self._held += len(data) - (len(replaced) if replaced is not None else 0)
            return
        end = offset + len(data)
        try:
            if self._map is None:
                self._map = self._new_map(max(end, min(self._hint, self._FIRST_MAP)))
            elif end > len(self._map):
                with self._viewing:
                    self._map.resize(max(end, min(2 * len(self._map), max(self._hint, end))))
            self._commit(offset, end)
        except (OSError, ValueError, MemoryError) as exc:
            raise StoreError(f"cannot hold {end} bytes in memory: {exc}") from exc
        self._map[offset:end] = data
        if not again:
            self._held += self._pages_touched(offset, end) * PAGE

    def _new_map(self, size: int) -> mmap.mmap:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def _commit(self, offset: int, end: int) -> None:
        """Make sure ``[offset, end)`` of the map can be written (nothing to do for
        anonymous memory: the kernel's overcommit policy decides)."""

    def _pages_touched(self, offset: int, end: int) -> int:
        """Pages of ``[offset, end)`` not counted before."""
        first, last = offset // PAGE, (end - 1) // PAGE
        whole = last - first + 1
        new = 0
        if offset % PAGE:  # its first page in part: maybe a neighbour's too
            whole -= 1
            if first not in self._shared:
                self._shared.add(first)
                new += 1
        if end % PAGE and (last != first or not offset % PAGE):
            whole -= 1
            if last not in self._shared:
                self._shared.add(last)
                new += 1
        return whole + new

    def hash_range(self, hasher: Any, offset: int, length: int) -> None:
        """A larger file's bytes are hashed where they lie (no copy: a fresh buffer of a
        chunk's size was a copy and an mmap of its own, per chunk that came early)."""
        if self._pieces is not None:
            super().hash_range(hasher, offset, length)
            return
        with self._viewing:
            if self._map is None:
                raise StoreError("the file's memory was released")
            with memoryview(self._map) as whole, whole[offset : offset + length] as part:
                hasher.update(part)

    def read(self, offset: int, length: int) -> bytes:
        if self._pieces is None:
            assert self._map is not None
            return self._map[offset : offset + length]
        piece = self._pieces.get(offset)
        if piece is not None and len(piece) == length:
            return piece
        out = bytearray(length)
        for start, piece in list(self._pieces.items()):
            lo, hi = max(start, offset), min(start + len(piece), offset + length)
            if lo < hi:
                out[lo - offset : hi - offset] = piece[lo - start : hi - start]
        return bytes(out)

    def finish(self, size: int) -> tuple[memoryview | None, Path | None]:
        if size == 0:
            self.discard()
            return memoryview(b""), None
        if self._pieces is not None:
            pieces = [self._pieces[offset] for offset in sorted(self._pieces)]
            whole = b"".join(pieces)
            if len(whole) != size:  # checked by the caller: a store that disagrees is broken
                raise StoreError(f"{len(whole)} bytes stored for a file of {size}")
            self.discard()
            return memoryview(whole), None
        assert self._map is not None
        with self._viewing:
            view = memoryview(self._map)[:size].toreadonly()
            self._map = None  # the view keeps the map alive; it is freed with the view
        self._held = 0
        self._shared = set()
        return view, None

    def discard(self) -> None:
        with self._viewing:
            if self._map is not None:
                self._map.close()
            self._map = None
        if self._pieces is not None:
            self._pieces = {}
        self._held = 0
        self._shared = set()


class SharedStore(MemoryStore):
    """Memory mode, a larger file: its bytes in a file of a shared-memory folder (tmpfs) of
    the ingest's, mapped and written in place as :class:`MemoryStore` does. Once whole it
    is handed over by its path (:attr:`shared`): analysis actors on this node map the very
    pages the ingest wrote, so the file is in memory once, with no copy into the object
    store (which kept every page it had ever held resident: a memory-mode run of 50 MiB
    files held its budget and four files more). The ingest removes it once the file is
    finished; a folder whose ingest died is removed by the next ingest of the node.

    Pages are allocated (``posix_fallocate``) before they are written: a write to a map of
    a full tmpfs would kill the process (SIGBUS), an allocation fails with ENOSPC. The map
    holds the only descriptor (Python's mmap keeps one); the file is opened by its path for
    the allocation and to complete it.
    """

    def __init__(self, capacity: int, folder: Path) -> None:
        super().__init__(capacity)
        self._folder = folder
        self.shared: Path | None = None  # the file, once the first chunk is written
        self.identity: tuple[int, int, int] | None = None  # inode, size, mtime ns once whole

    def _error(self, exc: OSError) -> StoreError:
        # Full (ENOSPC), or the folder removed under it: no file could be held now, through
        # no fault of this one, which giving up would lose: the run stops with nothing
        # committed past it, as when a disk-mode output folder is full.
        error = _os_error(f"cannot hold the file in shared memory ({self._folder})", exc)
        error.unavailable = error.unavailable or exc.errno == errno.ENOENT
        return error

    def _new_map(self, size: int) -> mmap.mmap:
        path = self._folder / f"{uuid.uuid4().hex}.file"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            self.shared = path
            try:
                os.ftruncate(fd, size)
                mapped = mmap.mmap(fd, size)  # shared, read and write; keeps a descriptor
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._error(exc) from exc
        _count_maps(+1)
        return mapped

    def _commit(self, offset: int, end: int) -> None:
        assert self.shared is not None
        try:
            fd = os.open(self.shared, os.O_RDWR)
            try:
                os.posix_fallocate(fd, offset, end - offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._error(exc) from exc

    def finish(self, size: int) -> tuple[memoryview | None, Path | None]:
        if self._pieces is not None or size == 0:
            return super().finish(size)
        assert self._map is not None and self.shared is not None
        with self._viewing:
            self._map.close()
            self._map = None
        _count_maps(-1)
        try:
            fd = os.open(self.shared, os.O_RDWR)
            try:
                os.ftruncate(fd, size)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.discard()
            raise self._error(exc) from exc
        self.identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._held = 0
        self._shared = set()
        return None, None

    def discard(self) -> None:
        mapped = self._map is not None
        super().discard()
        if mapped:
            _count_maps(-1)
        if self.shared is not None:
            self.shared.unlink(missing_ok=True)
            self.shared = None


MAX_SHARED_MAPS = 256
"""Partial files rebuilt in shared memory at once (each map holds a descriptor); more are
rebuilt in anonymous memory."""
_count_maps = _Count()  # partial files' maps in shared memory in this process


SHARED_PARENT = Path("/dev/shm")  # tmpfs on Linux: a file's pages are freed with it
_SHARED_PREFIX = "ray-reproducer-"
_OWNER = "owner.lock"


class SharedFolder:
    """A folder of this process's in shared memory for :class:`SharedStore` files. Its
    owner holds an exclusive ``flock`` on a file in it while it lives (the kernel lets go
    when the process dies, however it dies, and whatever PID namespace it is in), so the
    folders of dead owners are told from live ones by the lock, not by a process id."""

    def __init__(self, path: Path, lock: int) -> None:
        self.path = path
        self._lock: int | None = lock

    def close(self) -> None:
        """Remove the folder and the files still in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            lock, self._lock = self._lock, None
            os.close(lock)


def shared_folder(parent: Path = SHARED_PARENT, room: int = 0) -> SharedFolder | None:
    """A new :class:`SharedFolder` under ``parent``, after removing the folders there whose
    owner is gone (a killed ingest's files, which would hold their memory until the machine
    restarts); ``None`` if ``parent`` is missing, not writable, or has less than ``room``
    bytes free (a container's small /dev/shm: files then go through anonymous memory and
    the object store)."""
    try:
        remove_abandoned(parent)
        fs = os.statvfs(parent)
        if fs.f_bavail * fs.f_frsize < room:
            return None
        name = f"{_SHARED_PREFIX}{uuid.uuid4().hex[:16]}"
        # made under a hidden name and renamed once locked: a folder under its final name
        # always has its lock, so no other ingest takes it for abandoned
        staging = parent.resolve() / f".{name}"
        staging.mkdir(mode=0o700)
        lock = os.open(staging / _OWNER, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        final = staging.with_name(name)
        staging.rename(final)
    except OSError:
        return None
    return SharedFolder(final, lock)


def remove_abandoned(parent: Path) -> None:
    """Remove the folders under ``parent`` whose owner is gone (its lock free)."""
    try:
        folders = list(parent.glob(f"{_SHARED_PREFIX}*"))
    except OSError:
        return
    for old in folders:
        try:
            lock = os.open(old / _OWNER, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile, or not a folder of ours
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it: owner gone
        except OSError:
            continue  # alive
        else:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(lock)


_WRITEBACK_EVERY = 32 << 20


def _inside(root: Path, folder: Path) -> bool:
    """Whether ``folder`` (or, if it does not exist yet, its nearest existing ancestor)
    resolves inside ``root``: a symlink already under ``root`` must not lead elsewhere."""
    existing = folder
    while not os.path.lexists(existing) and existing not in (root, existing.parent):
        existing = existing.parent
    try:
        return existing.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # dangling link or a symlink loop
        return False


class DiskStore(Store):
    def __init__(
        self, output_dir: Path, relative: str, *, fsync: bool, renamed_in: set[Path] | None = None
    ) -> None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            root = output_dir.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise _os_error(f"cannot use the output folder {output_dir}", exc) from exc
        final = root.joinpath(*relative.split("/"))
        # Checked before and after mkdir: nothing is created outside the output folder.
        if not _inside(root, final.parent):
            raise StoreError(f"{relative!r} resolves outside the output folder {root}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(f"cannot create {final.parent}", exc) from exc
        if not _inside(root, final.parent):
            raise StoreError(f"{relative!r} resolves outside the output folder {root}")
        self.final = final
        # (inode, size, mtime ns) of the finished file: what an analysis on another node
        # checks before trusting a file it sees at the same path
        self.identity: tuple[int, int, int] | None = None
        # A short name: a long but valid file name plus a suffix must not exceed NAME_MAX.
        self.temp = final.with_name(f".rr-{uuid.uuid4().hex[:16]}.partial")
        self._fsync = fsync
        self._renamed_in = renamed_in
        self._unflushed = 0
        try:
            self._fd: int | None = os.open(self.temp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except OSError as exc:
            raise _os_error(f"cannot create {self.temp}", exc) from exc
        _count_fds(+1)
        self._release_if_crowded()

    # Each partial file keeps its descriptor open (one syscall per chunk, not three),
    # unless too many partial files are open at once; then they reopen per operation.
    MAX_OPEN_FDS = 256

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.temp, os.O_RDWR)
            _count_fds(+1)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _count_fds(-1)
            os.close(fd)

    def _release_if_crowded(self) -> None:
        if _count_fds(0) > self.MAX_OPEN_FDS:
            self._close()

    def write(self, offset: int, data: Buffer) -> None:
        try:
            fd = self._descriptor()
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            self._unflushed += len(data)
            if self._fsync and self._unflushed >= _WRITEBACK_EVERY:
                # Start writing back what is dirty now, without waiting: the final fsync
                # then has little left to do instead of the whole file.
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                self._unflushed = 0
            self._release_if_crowded()
        except OSError as exc:
            raise _os_error(f"cannot write {self.temp}", exc) from exc

    def read(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._descriptor(), length, offset)
            self._release_if_crowded()
            return data
        except OSError as exc:
            raise _os_error(f"cannot read back {self.temp}", exc) from exc

    def finish(self, size: int) -> tuple[memoryview | None, Path | None]:
        try:
            fd = self._descriptor()
            os.ftruncate(fd, size)
            if self._fsync:
                os.fsync(fd)
            st = os.fstat(fd)  # the rename keeps it: what an analysis checks before reading
            self.identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            self._close()
            # Atomic: an older, longer file of the same name is replaced whole (defect 5).
            self.temp.replace(self.final)
            if self._fsync:  # the rename is made durable by sync_folders, in batches
                if self._renamed_in is None:
                    sync_folders({self.final.parent})
                else:
                    self._renamed_in.add(self.final.parent)
        except OSError as exc:
            self.discard()
            raise _os_error(f"cannot complete {self.final}", exc) from exc
        return None, self.final

    def discard(self) -> None:
        try:
            self._close()
            self.temp.unlink(missing_ok=True)
        except OSError:
            pass  # best effort: gone already, or its folder was replaced; nothing to free


class _BothStore(Store):
    def __init__(self, memory: MemoryStore, disk: DiskStore) -> None:
        self._memory, self._disk = memory, disk

    @property
    def held_bytes(self) -> int:
        return self._memory.held_bytes

    @property
    def claimed_bytes(self) -> int:
        return self._memory.claimed_bytes

    def copy_in(self, offset: int, data: Buffer, *, again: bool = False) -> None:
        self._memory.copy_in(offset, data, again=again)

    def write(self, offset: int, data: Buffer) -> None:
        self._disk.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        return self._memory.read(offset, length)

    def hash_range(self, hasher: Any, offset: int, length: int) -> None:
        self._memory.hash_range(hasher, offset, length)

    @property
    def identity(self) -> tuple[int, int, int] | None:
        return self._disk.identity

    def finish(self, size: int) -> tuple[memoryview | None, Path | None]:
        _, path = self._disk.finish(size)
        view, _ = self._memory.finish(size)
        return view, path

    def discard(self) -> None:
        self._memory.discard()
        self._disk.discard()


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` as ``path``, whole or not at all: a temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temp.write_bytes(data)
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


def sync_folders(folders: set[Path]) -> None:
    """fsync each folder (making renames into it durable), then forget them."""
    while folders:
        folder = os.open(folders.pop(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def open_store(
    mode: Mode,
    capacity: int,
    output_dir: Path | None,
    relative: str,
    *,
    fsync: bool,
    renamed_in: set[Path] | None = None,
    shared: Path | None = None,
) -> Store:
    """Storage for one partial file; ``capacity`` is a size estimate (memory modes).
    ``shared``: memory mode's folder in shared memory for larger files (see
    :class:`SharedStore`), if there is one."""
    if mode == "memory":
        if shared is not None and capacity > HEAP_LIMIT and _count_maps(0) < MAX_SHARED_MAPS:
            return SharedStore(capacity, shared)
        return MemoryStore(capacity)
    if output_dir is None:
        raise StoreError(f"mode {mode!r} needs an output folder")
    disk = DiskStore(output_dir, relative, fsync=fsync, renamed_in=renamed_in)
    if mode == "disk":
        return disk
    return _BothStore(MemoryStore(capacity), disk)
