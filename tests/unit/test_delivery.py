"""What a producer error means for its result (reproducer.delivery), on real KafkaErrors."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from reproducer.delivery import (
    Refusal,
    Verdict,
    classify,
    classify_exception,
    on_refusal,
    resumable,
)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, Verdict.PERMANENT),
        (KafkaError.INVALID_RECORD, Verdict.PERMANENT),
        (KafkaError._UNKNOWN_TOPIC, Verdict.TRANSIENT),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, Verdict.TRANSIENT),
        (KafkaError._MSG_TIMED_OUT, Verdict.TRANSIENT),
        (KafkaError.NOT_LEADER_FOR_PARTITION, Verdict.TRANSIENT),
        (KafkaError._TRANSPORT, Verdict.TRANSIENT),
        (KafkaError._FENCED, Verdict.FATAL),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, Verdict.FATAL),
    ],
)
def test_errors_are_judged_by_whose_fault_they_are(code: int, verdict: Verdict) -> None:
    assert classify(KafkaError(code)) is verdict
    assert classify_exception(KafkaException(KafkaError(code))) is verdict


def test_any_error_librdkafka_calls_fatal_is_fatal() -> None:
    """librdkafka flags the producer's fatal state on the error itself, whatever its code:
    a result refused then must stop the run, not be recorded as failed."""
    assert classify(KafkaError(KafkaError._UNKNOWN_TOPIC, fatal=True)) is Verdict.FATAL
    assert classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True)) is Verdict.FATAL


def test_a_bad_argument_is_permanent_and_anything_else_is_not() -> None:
    assert classify_exception(TypeError("key must be bytes")) is Verdict.PERMANENT
    assert classify_exception(RuntimeError("?")) is Verdict.TRANSIENT


@pytest.mark.parametrize(
    ("code", "fatal", "resumes"),
    [
        # a broker unreachable for a while: the coordinator call timed out (ci, 2 Dec)
        (KafkaError._TIMED_OUT, False, True),
        (KafkaError.COORDINATOR_NOT_AVAILABLE, False, True),
        (KafkaError.NOT_COORDINATOR, False, True),
        # the group's session expired: offsets of an old member or generation
        (KafkaError.UNKNOWN_MEMBER_ID, False, True),
        (KafkaError.ILLEGAL_GENERATION, False, True),
        # another run holds the transactional id: resuming would fence it in turn
        (KafkaError._FENCED, False, False),
        (KafkaError.PRODUCER_FENCED, False, False),
        (KafkaError.INVALID_PRODUCER_EPOCH, False, False),
        (KafkaError._TIMED_OUT, True, False),
        # not known to be mended by a fresh start
        (KafkaError._STATE, False, False),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, False, False),
    ],
)
def test_only_a_lost_session_or_an_unreachable_coordinator_resumes_a_transaction(
    code: int, fatal: bool, resumes: bool
) -> None:
    assert resumable(KafkaError(code, fatal=fatal)) is resumes


@pytest.mark.parametrize(
    ("exc", "at_least_once", "exactly_once"),
    [
        (KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), Refusal.REJECT, Refusal.REJECT),
        (TypeError("value must be bytes"), Refusal.REJECT, Refusal.REJECT),
        (KafkaException(KafkaError(KafkaError._FENCED)), Refusal.STOP, Refusal.STOP),
        (KafkaException(KafkaError(KafkaError._STATE, fatal=True)), Refusal.STOP, Refusal.STOP),
        # the cluster's state: waited out at least once; exactly once the open transaction
        # cannot wait (an abortable one refuses everything): it is aborted and resumed
        (KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC)), Refusal.RETRY, Refusal.RESUME),
        (KafkaException(KafkaError(KafkaError._STATE)), Refusal.RETRY, Refusal.RESUME),
    ],
)
def test_a_refused_result_is_rejected_retried_resumed_or_stops_the_run(
    exc: BaseException, at_least_once: Refusal, exactly_once: Refusal
) -> None:
    assert on_refusal(exc, transactional=False) is at_least_once
    assert on_refusal(exc, transactional=True) is exactly_once
