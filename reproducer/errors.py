"""Exceptions of ray-reproducer.

One root, :class:`ReproducerError`; each subclass carries the data it concerns (field,
file, topic, partition, offset) so callers can log coordinates and decide what to do
without parsing messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChunkDecodeError",
    "ChunkHashError",
    "ConfigError",
    "FileReplaced",
    "OutputUnavailable",
    "ReproducerError",
    "RunInterrupted",
    "TopicUnavailable",
    "UnsafePathError",
    "UploadError",
    "first_line",
]


class ReproducerError(Exception):
    """Root of every error raised by ray-reproducer."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt as it is, not by calling the class with its message (subclasses take
        # other arguments): an actor's error reaches the driver through pickle whole, not
        # as Ray's "failed to deserialize exception".
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[ReproducerError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class RunInterrupted(ReproducerError):
    """The run stopped at a point a restart resumes from, as if it had been restarted:
    exactly once, its partitions were taken away (the group session expired while the
    broker was unreachable) or its transaction could not commit. Nothing uncommitted
    counts; the pipeline resumes in-process from the last committed transaction."""


class ConfigError(ReproducerError):
    """A configuration file or setting is missing or invalid."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{message}")
        self.path = path
        self.key = key


class ChunkDecodeError(ReproducerError):
    """A chunk message could not be decoded or is inconsistent.

    ``field`` names the offending field (or ``"value"`` for the message as a whole).
    ``topic``/``partition``/``offset`` are filled in by the consumer that read it.
    """

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.field = field
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(self._text())

    def _text(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" (topic={self.topic}[{self.partition}] offset={self.offset})"
        return f"bad chunk message: {self.field}: {self.reason}{where}"

    def at(self, topic: str, partition: int, offset: int) -> ChunkDecodeError:
        """Return this error with the Kafka coordinates of the message filled in."""
        self.topic, self.partition, self.offset = topic, partition, offset
        self.args = (self._text(),)
        return self


class ChunkHashError(ChunkDecodeError):
    """The SHA-512 of a chunk's data does not match the chunk hash it was sent with."""


class UnsafePathError(ChunkDecodeError):
    """A subdirectory or file name would escape the output folder or is not portable."""


class OutputUnavailable(ReproducerError):
    """The output folder could not take a file (disk full, read-only, an I/O error, a
    file-size limit): the run stops with nothing committed past the file, which a restart
    rebuilds once the folder is fixed. Not the file's fault, so not a recorded failure."""

    def __init__(
        self, relative_path: object, detail: str, *, where: str = "the output folder"
    ) -> None:
        self.relative_path = str(relative_path)
        super().__init__(
            f"{where} cannot take file={relative_path} ({detail}); nothing is "
            "committed past it: free space (or fix the folder) and restart"
        )


class TopicUnavailable(ReproducerError):
    """A topic that does not exist, has no partitions, or could not be described (the
    broker unreachable, or refusing): ``reason`` says which."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"topic {topic} {reason}")


class UploadError(ReproducerError):
    """Some chunks of some files were not acknowledged by the broker."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = dict(failed)
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(self.failed.items()))
        super().__init__(f"{len(self.failed)} file(s) not fully delivered: {listed}")


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (Ray's span many); for an error
    Ray relays from an actor, that of the exception the actor raised (Ray's own first line
    only names the actor)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return first_line(cause)
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class FileReplaced(ReproducerError):
    """The file at a rebuilt file's path is no longer the one rebuilt (a newer version
    was renamed over it before an analysis on another node could read it)."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} was replaced since it was rebuilt (a newer version of the file?): its "
            "bytes are gone, and it is not analysed as the newer one"
        )
        self.path = path
