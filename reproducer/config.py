"""Kafka settings from an OpenMSIStream INI config file.

Existing OpenMSIStream config files work unchanged::

    [broker]
    bootstrap.servers = $KAFKA_BOOTSTRAP_SERVERS

    [producer]
    batch.size = 2000000
    key.serializer = StringSerializer
    value.serializer = DataFileChunkSerializer

    [consumer]
    group.id = create_new
    auto.offset.reset = earliest

A value starting with ``$`` names an environment variable, which must be set. The
``*.serializer``/``*.deserializer`` keys name the reference's (de)serializers; they are
recorded but not passed to librdkafka, since the wire format is fixed. Everything else in
``[broker]``, ``[producer]`` and ``[consumer]`` passes through to librdkafka as is.
"""

from __future__ import annotations

import configparser
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproducer.errors import ConfigError

__all__ = ["KafkaConfig", "load_config"]

_SERDE_KEYS = frozenset(
    {"key.serializer", "value.serializer", "key.deserializer", "value.deserializer"}
)
_KNOWN_SECTIONS = frozenset({"broker", "producer", "consumer", "heartbeat", "log"})


@dataclass(frozen=True)
class KafkaConfig:
    """Resolved librdkafka settings, one mapping per INI section."""

    broker: Mapping[str, Any]
    producer: Mapping[str, Any] = field(default_factory=dict)
    consumer: Mapping[str, Any] = field(default_factory=dict)
    heartbeat: Mapping[str, Any] = field(default_factory=dict)
    log: Mapping[str, Any] = field(default_factory=dict)
    serializers: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def for_bootstrap(cls, bootstrap_servers: str) -> KafkaConfig:
        """Settings for a plain broker at ``bootstrap_servers`` (tests, local runs)."""
        return cls(broker={"bootstrap.servers": bootstrap_servers})

    def producer_settings(self, **overrides: Any) -> dict[str, Any]:
        """``[broker]`` + ``[producer]`` + ``overrides``, for ``confluent_kafka.Producer``."""
        return {**self.broker, **self.producer, **overrides}

    def consumer_settings(self, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """``[broker]`` + ``[consumer]`` + ``overrides``, for ``confluent_kafka.Consumer``.

        ``group_id`` (or the file's ``group.id``) of ``create_new`` becomes a fresh UUID,
        as in the reference.
        """
        settings: dict[str, Any] = {**self.broker, **self.consumer, **overrides}
        if group_id is not None:
            settings["group.id"] = group_id
        if settings.get("group.id") == "create_new":
            settings["group.id"] = str(uuid.uuid4())
        return settings


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> KafkaConfig:
    """Read an OpenMSIStream INI config file; ``$VAR`` values come from ``environ``.

    Raises :class:`ConfigError` naming the file, section and key of anything wrong.
    """
    env = os.environ if environ is None else environ
    file = Path(path)
    if not file.is_file():
        raise ConfigError("config file not found", path=str(file))
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    try:
        with file.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc}", path=str(file)) from exc
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a valid INI file: {exc}", path=str(file)) from exc
    if parser.has_section("kafkacrypto"):
        raise ConfigError(
            "[kafkacrypto] (encrypted streams) is not supported by ray-reproducer", path=str(file)
        )
    if not parser.has_section("broker"):
        raise ConfigError("missing the [broker] section", path=str(file))

    sections: dict[str, dict[str, Any]] = {}
    serializers: dict[str, str] = {}
    for section in _KNOWN_SECTIONS & set(parser.sections()):
        resolved: dict[str, Any] = {}
        for key, raw in parser.items(section):
            value = _resolve(raw.strip(), file, section, key, env)
            if key in _SERDE_KEYS:
                serializers[f"{section}.{key}"] = str(value)
            else:
                resolved[key] = value
        sections[section] = resolved
    if not sections["broker"].get("bootstrap.servers"):
        raise ConfigError(
            "[broker] has no bootstrap.servers", path=str(file), key="bootstrap.servers"
        )
    return KafkaConfig(
        broker=dict(sections["broker"]),
        producer=dict(sections.get("producer", {})),
        consumer=dict(sections.get("consumer", {})),
        heartbeat=dict(sections.get("heartbeat", {})),
        log=dict(sections.get("log", {})),
        serializers=serializers,
        path=file,
    )


def _resolve(raw: str, file: Path, section: str, key: str, env: Mapping[str, str]) -> Any:
    if raw.startswith("$"):
        name = raw[1:]
        if name not in env:
            raise ConfigError(
                f"[{section}] {key} = {raw}: environment variable {name} is not set",
                path=str(file),
                key=key,
            )
        raw = env[name]
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return raw
