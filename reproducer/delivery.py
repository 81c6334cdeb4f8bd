"""What a producer error means for the result it concerns.

A result may end as failed (and its file's offsets be committed past) only when the error
is about that one message and would come back every time: too large, invalid. An error of
the producer's own state (fatal: fenced, unauthorised) stops the run; one of the cluster's
state (a topic that is not known right now, a leader moving, a broker restarting) is
waited out and the result produced again, and only if it lasts does the run stop. In no
case is a result given up while its file's offsets go on.

>>> from confluent_kafka import KafkaError
>>> classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
<Verdict.PERMANENT: 'permanent'>
>>> classify(KafkaError(KafkaError._UNKNOWN_TOPIC))
<Verdict.TRANSIENT: 'transient'>
>>> classify(KafkaError(KafkaError._FENCED))
<Verdict.FATAL: 'fatal'>
"""

from __future__ import annotations

import enum
from typing import Any


class Verdict(enum.Enum):
    PERMANENT = "permanent"  # this message can never be produced: a recorded failure
    TRANSIENT = "transient"  # the cluster's state: produce it again, later
    FATAL = "fatal"  # the producer's state: nothing more can be produced; stop the run


def _codes(*names: str) -> frozenset[int]:
    from confluent_kafka import KafkaError  # noqa: PLC0415

    return frozenset(getattr(KafkaError, name) for name in names if hasattr(KafkaError, name))


_PERMANENT = _codes(
    "MSG_SIZE_TOO_LARGE",  # message.max.bytes (the client's), max.message.bytes (the topic's)
    "RECORD_LIST_TOO_LARGE",
    "INVALID_RECORD",  # the topic refuses it (a compacted topic and no key, say)
    "_INVALID_ARG",
    "_KEY_SERIALIZATION",
    "_VALUE_SERIALIZATION",
)
_FATAL = _codes(
    "_FATAL",
    "_FENCED",
    "PRODUCER_FENCED",
    "INVALID_PRODUCER_EPOCH",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "TOPIC_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "_AUTHENTICATION",
    "SASL_AUTHENTICATION_FAILED",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
)


def classify(error: Any) -> Verdict:
    """The verdict on a ``KafkaError`` (from ``produce()`` or a delivery report)."""
    if error.fatal() or error.code() in _FATAL:
        return Verdict.FATAL
    if error.code() in _PERMANENT:
        return Verdict.PERMANENT
    return Verdict.TRANSIENT


def classify_exception(exc: BaseException) -> Verdict:
    """The verdict on what ``Producer.produce`` raised: a ``KafkaException``'s error, or
    a bad argument (a key or value of the wrong type: permanent)."""
    from confluent_kafka import KafkaException  # noqa: PLC0415

    if isinstance(exc, KafkaException) and exc.args:
        return classify(exc.args[0])
    if isinstance(exc, (TypeError, ValueError)):
        return Verdict.PERMANENT
    return Verdict.TRANSIENT
