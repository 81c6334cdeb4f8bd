"""What the cluster says of a topic, asked the same way by every part that reads or
writes one: its partitions, or a :class:`~reproducer.errors.TopicUnavailable` saying why
there are none (no such topic, no partitions, a broker that refuses or does not answer).
"""

from __future__ import annotations

from typing import Any

from reproducer.errors import TopicUnavailable

__all__ = ["connection_only", "partitions_of"]

_CONNECTION_KEYS = ("bootstrap.servers", "security.", "sasl.", "ssl.", "client.", "socket.")


def connection_only(settings: dict[str, Any]) -> dict[str, Any]:
    """The keys of a client's settings that say how to reach the broker (for an admin
    client or a reader of another topic, which the producer's or consumer's own keys
    would only make librdkafka warn about), and that it never creates a topic by looking
    it up: librdkafka's admin clients and producers ask for that by default, and a broker
    that auto-creates topics (Apache Kafka's default) then makes a missing one with its
    own defaults (a state topic not compacted, a chunk topic of the wrong partitions)."""
    out = {k: v for k, v in settings.items() if k.startswith(_CONNECTION_KEYS)}
    out["allow.auto.create.topics"] = False
    return out


def partitions_of(client: Any, topic: str, *, timeout: float = 30.0) -> list[int]:
    """The partitions of ``topic``, sorted, as ``client`` (a consumer or producer) finds
    them; :class:`TopicUnavailable` saying why if there are none to read or write."""
    from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415

    try:
        described = client.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise TopicUnavailable(
            topic, f"cannot be described (the broker did not answer: {exc})"
        ) from exc
    error = described.error if described is not None else None
    missing = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    if described is None or (error is not None and error.code() in missing):
        raise TopicUnavailable(topic, "does not exist")
    if error is not None:
        raise TopicUnavailable(topic, f"cannot be described: {error.str()}")
    if not described.partitions:
        raise TopicUnavailable(topic, "has no partitions")
    return sorted(described.partitions)
