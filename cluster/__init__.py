"""Local Kafka cluster helpers for tests and local runs (real Apache Kafka 4.x in KRaft mode).

The names are loaded lazily so that ``python -m cluster.broker`` does not import the module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.broker import BrokerError, LocalBroker, create_topic, kafka_jars

__all__ = ["BrokerError", "LocalBroker", "broker_from_env", "create_topic", "kafka_jars"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cluster import broker  # noqa: PLC0415

        return getattr(broker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
