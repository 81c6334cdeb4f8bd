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

A transaction that cannot commit is mended by a fresh start from the committed offsets
only when the group moved on (a lost session) or its coordinators could not be reached:

>>> resumable(KafkaError(KafkaError._TIMED_OUT))
True
>>> resumable(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
True
>>> resumable(KafkaError(KafkaError._FENCED))
False
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


# A transaction's errors that a fresh attempt from the committed offsets mends: the group
# moved on (its session expired: offsets of an old member or generation) or a coordinator
# could not be reached in time. Never a fenced producer (another run holds the
# transactional id, which a fresh attempt would fence in turn), nor anything unknown.
_RESUMABLE = _codes(
    "UNKNOWN_MEMBER_ID",
    "ILLEGAL_GENERATION",
    "REBALANCE_IN_PROGRESS",
    "_TIMED_OUT",
    "_TIMED_OUT_QUEUE",
    "REQUEST_TIMED_OUT",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "COORDINATOR_LOAD_IN_PROGRESS",
)


# The broker refuses a whole record batch that is too large: the code says nothing of one
# message unless it went alone.
_TOO_LARGE = _codes("MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE")


def goes_alone(error: Any) -> bool:
    """Whether a result that went in a batch with others and was refused with ``error``
    must be produced again alone to tell what the error means. "Too large" from the broker
    refuses the whole batch (when the topic's limit is not known to cap the batches, or
    changed since): only a result refused so while alone is too large itself (then
    :func:`classify` says permanent).

    >>> from confluent_kafka import KafkaError
    >>> goes_alone(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    True
    >>> goes_alone(KafkaError(KafkaError._UNKNOWN_TOPIC))
    False
    """
    return not error.fatal() and error.code() in _TOO_LARGE


# Consumer errors that no retry mends: the consumer may read no more of the topic.
_CONSUMER_STOPS = _codes(
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "_AUTHENTICATION",
    "SASL_AUTHENTICATION_FAILED",
    "_FATAL",
)
_TOPIC_GONE = _codes("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION")


def consumer_error(error: Any) -> str:
    """What a consumer error means for the run: ``"stop"`` (fatal, or refused by the
    broker's authorization: reading cannot go on), ``"topic"`` (the topic or a partition
    is unknown: deleted, or the cluster's metadata is catching up; ask whether it exists),
    or ``"retry"`` (the client retries by itself: a connection, a broker restarting).

    >>> from confluent_kafka import KafkaError
    >>> consumer_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    'stop'
    >>> consumer_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    'topic'
    >>> consumer_error(KafkaError(KafkaError._TRANSPORT))
    'retry'
    """
    if error.fatal() or error.code() in _CONSUMER_STOPS:
        return "stop"
    if error.code() in _TOPIC_GONE:
        return "topic"
    return "retry"


def resumable(error: Any) -> bool:
    """Whether a transaction that failed with ``error`` (a ``KafkaError``) is mended by
    starting again from the committed offsets, as a restart would."""
    return not error.fatal() and error.code() not in _FATAL and error.code() in _RESUMABLE


def classify(error: Any) -> Verdict:
    """The verdict on a ``KafkaError`` (from ``produce()`` or a delivery report)."""
    if error.fatal() or error.code() in _FATAL:
        return Verdict.FATAL
    if error.code() in _PERMANENT:
        return Verdict.PERMANENT
    return Verdict.TRANSIENT


class Refusal(enum.Enum):
    """What becomes of a result ``produce()`` refused."""

    REJECT = "reject"  # a recorded failure; the rest goes on
    RETRY = "retry"  # produced again with back-off, for a while (at least once)
    RESUME = "resume"  # exactly once: its transaction is aborted, the run resumes from the last
    STOP = "stop"  # the producer can produce nothing more: the run stops


def on_refusal(exc: BaseException, *, transactional: bool) -> Refusal:
    """What to do with a result ``produce()`` refused with ``exc``. Exactly once, a refusal
    for the cluster's state cannot wait inside the open transaction (it may be abortable
    already): it is aborted and the run resumes from the last commit, as a restart would.

    >>> from confluent_kafka import KafkaError, KafkaException
    >>> on_refusal(KafkaException(KafkaError(KafkaError._STATE)), transactional=True)
    <Refusal.RESUME: 'resume'>
    """
    verdict = classify_exception(exc)
    if verdict is Verdict.PERMANENT:
        return Refusal.REJECT
    if verdict is Verdict.FATAL:
        return Refusal.STOP
    return Refusal.RESUME if transactional else Refusal.RETRY


def classify_exception(exc: BaseException) -> Verdict:
    """The verdict on what ``Producer.produce`` raised: a ``KafkaException``'s error, or
    a bad argument (a key or value of the wrong type: permanent)."""
    from confluent_kafka import KafkaException  # noqa: PLC0415

    if isinstance(exc, KafkaException) and exc.args:
        return classify(exc.args[0])
    if isinstance(exc, (TypeError, ValueError)):
        return Verdict.PERMANENT
    return Verdict.TRANSIENT


# Errors that no wait mends: a refused password or certificate, a mechanism the broker does
# not offer. librdkafka retries them forever, so a client would otherwise wait its timeout.
_REFUSED = _codes("_AUTHENTICATION", "_SSL", "SASL_AUTHENTICATION_FAILED", "_UNSUPPORTED_FEATURE")

_HINTS = {
    "_AUTHENTICATION": "check sasl.username, sasl.password and sasl.mechanism",
    "SASL_AUTHENTICATION_FAILED": "check sasl.username, sasl.password and sasl.mechanism",
    "_SSL": "check ssl.ca.location (the CA that signed the broker's certificate)",
}


def broker_refusal(
    settings: dict[str, Any], what: str, timeout: float = 30.0, *, unreachable: bool = True
) -> str:
    """Empty if a client with ``settings`` reaches the cluster's metadata; else why not,
    in one line that names ``what`` (the config section) and what to check.

    Fails at the first authentication or TLS error, within ``timeout`` otherwise (an
    unreachable address; empty then if not ``unreachable``: the caller has its own
    bound). The line carries librdkafka's own reason, which never includes the password,
    and no setting's value.
    """
    import time  # noqa: PLC0415

    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415

    seen: list[Any] = []
    # Consumer-only settings are ignored by a producer (with a warning, to _QUIET); a
    # transactional id would fence the run's own producer if it ever began a transaction.
    conf = {key: value for key, value in settings.items() if key != "transactional.id"}
    conf.update(error_cb=seen.append, logger=_QUIET)
    try:
        probe = Producer(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        return f"the {what} settings are refused: {exc}"
    servers = settings.get("bootstrap.servers", "?")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                probe.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
                return ""
            except KafkaException:
                pass
            probe.poll(0)
            refused = next((e for e in seen if e.code() in _REFUSED), None)
            if refused is not None:
                hint = _HINTS.get(refused.name(), "check the security settings")
                return (
                    f"the broker at {servers} refused the {what} connection ({hint}): "
                    f"{refused.str()}"
                )
            if time.monotonic() >= deadline:
                if not unreachable:
                    return ""
                last = f": {seen[-1].str()}" if seen else ""
                return f"cannot reach the broker at {servers} within {timeout:.0f} s{last}"
    finally:
        probe.flush(0)


class _Quiet:
    """A logger for probe clients: their connection errors are returned, not printed."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


_QUIET = _Quiet()
