"""librdkafka's log lines through Python logging, at levels that fit a long-running service.

Without a logger librdkafka prints to stderr itself (``%3|1764...|FAIL|rdkafka#producer-1|
...``), outside any log handler, level or file. Given :func:`client_logger` as the
client's ``logger`` setting, each line becomes a record of the ``reproducer.kafka``
logger, at the syslog level librdkafka gave it, except the transient trouble the client
retries on its own (a refused or dropped connection, a request timed out, a broker
briefly gone): that is DEBUG, since what outlasts the retries is reported where it
matters (the start-up probe, the consumer's and producer's errors, the run stopping).
``--logger_stream_level debug`` shows everything.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["LOGGER_NAME", "client_logger", "level_of", "logged"]

LOGGER_NAME = "reproducer.kafka"

# Facilities and texts of the trouble librdkafka retries by itself
_TRANSIENT_FACILITIES = frozenset({"FAIL", "BROKERFAIL", "REQTMOUT", "DISCONNECT", "CONNECT"})
_TRANSIENT_TEXT = re.compile(
    r"Connection refused|Disconnected|Connection reset|timed out|Timed out|"
    r"Receive failed|Send failed|Broker transport failure|All broker connections are down|"
    r"broker.* is down|brokers are down|Failed to resolve|No route to host|"
    # what librdkafka says it retries itself (a coordinator loading after a start, say)
    r": retrying\b|Coordinator load in progress",
)


def level_of(level: int, facility: str, text: str) -> int:
    """The level one librdkafka log line is recorded at: ``level`` (Python's, as
    confluent-kafka maps librdkafka's syslog level), or DEBUG for transient trouble."""
    if level >= logging.WARNING and (
        facility in _TRANSIENT_FACILITIES or _TRANSIENT_TEXT.search(text)
    ):
        return logging.DEBUG
    return level


class _ClientLog:
    """What confluent-kafka calls for each line: ``log(level, "%s [%s] %s", facility,
    client name, text)`` with ``level`` already a Python level (from librdkafka's syslog
    level). Picklable, so that settings holding it travel to Ray actors."""

    def __init__(self, name: str = LOGGER_NAME) -> None:
        self.name = name

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility = str(args[0]) if args else ""
        text = str(args[-1]) if args else fmt
        logging.getLogger(self.name).log(level_of(level, facility, text), fmt, *args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ClientLog) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def client_logger() -> _ClientLog:
    """The ``logger`` setting for a confluent-kafka client."""
    return _ClientLog()


def logged(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` for a confluent-kafka client, with its log lines routed here."""
    return {"logger": client_logger(), **settings}
