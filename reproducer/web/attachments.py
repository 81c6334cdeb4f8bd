"""A result's attachments (plots named by its claim checks), read from the output folder.

A claim check is ``{"path", "size", "sha256"}``. Its file is served only when it lies
inside the output folder: a relative path without ``..``, or an absolute one under the
folder (what ``Analysis.attach`` writes on the node that made it), resolved with its
symbolic links; and only when its size and SHA-256 are those the result names.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["MAX_ATTACHMENT_BYTES", "Attachment", "AttachmentError", "read_attachment"]

MAX_ATTACHMENT_BYTES = 256 * 2**20

# served inline as images; anything else is offered as a download
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


class AttachmentError(Exception):
    """Why an attachment is not served; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes
    media_type: str
    inline: bool


def read_attachment(output_dir: Path | None, check: Mapping[str, Any]) -> Attachment:
    """The file a claim check names, checked; raises :class:`AttachmentError`."""
    raw = str(check.get("path") or "")
    if output_dir is None:
        raise AttachmentError(
            "the page was started without --output_dir: attachments cannot be shown", 404
        )
    root = output_dir.resolve()
    target = _inside(root, raw)
    size, digest = check.get("size"), str(check.get("sha256") or "").lower()
    if not isinstance(size, int) or size < 0 or size > MAX_ATTACHMENT_BYTES:
        raise AttachmentError(f"the claim check of {raw!r} names no usable size", 422)
    try:
        data = _read_regular(target, size + 1)
    except FileNotFoundError as exc:
        raise AttachmentError(
            f"{raw!r} is not in the output folder (made on another node, or removed)", 404
        ) from exc
    except OSError as exc:
        raise AttachmentError(f"{raw!r} cannot be read: {exc.strerror}", 404) from exc
    if len(data) != size:
        raise AttachmentError(
            f"{raw!r} has {len(data) if len(data) <= size else 'more than ' + str(size)} bytes, "
            f"the result names {size}: it changed after the result was made",
            409,
        )
    if hashlib.sha256(data).hexdigest() != digest:
        raise AttachmentError(
            f"the SHA-256 of {raw!r} is not the one the result names: it changed after the "
            "result was made",
            409,
        )
    suffix = target.suffix.lower()
    media = _IMAGE_TYPES.get(suffix)
    return Attachment(target.name, data, media or "application/octet-stream", media is not None)


def _read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file (a FIFO or a device named by a claim
    check would block or never end: refused)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AttachmentError(f"{path.name!r} is not a regular file", 403)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def _inside(root: Path, raw: str) -> Path:
    if not raw or "\x00" in raw:
        raise AttachmentError("a claim check with no path", 422)
    parts = [p for p in re.split(r"[/\\]+", raw) if p not in ("", ".")]
    if ".." in parts:
        raise AttachmentError(f"refused: {raw!r} names a parent folder ('..')", 403)
    if PurePosixPath(raw).is_absolute() or raw.startswith("\\") or re.match(r"^[A-Za-z]:", raw):
        candidate = Path(raw)
        if not _is_under(candidate, root):
            raise AttachmentError(
                f"refused: {raw!r} is an absolute path outside the output folder", 403
            )
    else:
        candidate = root.joinpath(*parts)
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise AttachmentError(f"refused: {raw!r} leads outside the output folder", 403)
    return resolved


def _is_under(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False
