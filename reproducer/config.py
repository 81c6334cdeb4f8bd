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

``$VAR`` and ``${VAR}`` anywhere in a value are replaced by that environment variable,
which must be set (``$$`` is a literal ``$``); values are passed on as text (librdkafka
reads ``true``/``false`` itself, and a password ``True`` stays a password). An error
never shows a value, nor, for a secret-looking key, the name of its variable. ``key: value``
lines are read like ``key = value``, as by the reference. The
``*.serializer``/``*.deserializer`` keys name the reference's (de)serializers; they are
recorded but not passed to librdkafka, since the wire format is fixed. Everything else in
``[broker]``, ``[producer]`` and ``[consumer]`` passes through to librdkafka as is.
"""

from __future__ import annotations

import configparser
import os
import re
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


CONFIG_DIR_ENV = "RAY_REPRODUCER_CONFIG_DIR"
# the configs that come with the project (``local_broker.config``: the test broker's)
_PROJECT_CONFIGS = Path(__file__).resolve().parents[1] / "cluster"


def find_config(name: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Path:
    """The config file ``name`` names: a path to a file, else ``NAME`` or ``NAME.config``
    in each folder of ``$RAY_REPRODUCER_CONFIG_DIR`` (``:``-separated), then in the
    project's own config folder, as the reference finds its configs by name.

    Raises :class:`ConfigError` listing where it looked.
    """
    env = os.environ if environ is None else environ
    given = Path(name)
    if given.is_file():
        return given
    folders = [Path(p) for p in env.get(CONFIG_DIR_ENV, "").split(os.pathsep) if p]
    folders.append(_PROJECT_CONFIGS)
    tried = [given]
    if given.name == str(name):  # a bare name, not a path: look it up
        for folder in folders:
            for candidate in (folder / given.name, folder / f"{given.name}.config"):
                if candidate.is_file():
                    return candidate
                tried.append(candidate)
    raise ConfigError(
        "config file not found (looked for " + ", ".join(map(str, tried)) + ")", path=str(name)
    )


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> KafkaConfig:
    """Read an OpenMSIStream INI config file (``path``, or a name: see
    :func:`find_config`); ``$VAR`` values come from ``environ``.

    Raises :class:`ConfigError` naming the file, section and key of anything wrong.
    """
    env = os.environ if environ is None else environ
    file = find_config(path, env)
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=", ":"))
    try:
        with file.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc}", path=str(file)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not a valid INI file: not UTF-8 (byte {exc.start})", path=str(file)
        ) from exc
    except configparser.Error as exc:
        # configparser quotes the offending line, which may hold a password: say where only
        raise ConfigError(f"not a valid INI file: {_where(exc)}", path=str(file)) from None
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


_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_SECRET_KEY = re.compile(r"password|secret|jaas|token|credential|private|(^|\.)key$", re.I)


def is_secret_key(key: str) -> bool:
    """Whether a setting's value must never be shown (passwords, keys, tokens...)."""
    return bool(_SECRET_KEY.search(key))


def _resolve(raw: str, file: Path, section: str, key: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(3)
        if name not in env:
            # a literal secret with a $ in it would otherwise show part of itself here
            named = "" if is_secret_key(key) else f" {name}"
            raise ConfigError(
                f"[{section}] {key}: environment variable{named} is not set "
                "(write $$ for a literal $)",
                path=str(file),
                key=key,
            )
        return env[name]

    return _VARIABLE.sub(substitute, raw)


def _where(exc: configparser.Error) -> str:
    """What is wrong and on which line, without the line's text."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno} comes before any [section]"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in exc.errors)
        return f"line(s) {lines} are not `key = value` (their text is not shown)"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"[{exc.section}] {exc.option} is set twice (line {exc.lineno})"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"[{exc.section}] appears twice (line {exc.lineno})"
    return type(exc).__name__
