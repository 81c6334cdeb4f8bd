"""OpenMSIStream INI config files work unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from reproducer.config import KafkaConfig, load_config
from reproducer.errors import ConfigError

REFERENCE_STYLE = """
[broker]
bootstrap.servers = $TEST_BOOTSTRAP

[producer]
batch.size       = 2000000
linger.ms        = 100
compression.type = lz4
key.serializer   = StringSerializer
value.serializer = DataFileChunkSerializer

[consumer]
group.id              = create_new
auto.offset.reset     = earliest
enable.auto.commit    = False
key.deserializer      = StringDeserializer
value.deserializer    = DataFileChunkDeserializer
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.config"
    path.write_text(text, encoding="utf-8")
    return path


def test_reference_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REFERENCE_STYLE), {"TEST_BOOTSTRAP": "127.0.0.1:1234"})
    producer = config.producer_settings()
    assert producer == {
        "bootstrap.servers": "127.0.0.1:1234",
        "batch.size": "2000000",
        "linger.ms": "100",
        "compression.type": "lz4",
    }
    consumer = config.consumer_settings()
    assert consumer["enable.auto.commit"] == "False"  # librdkafka reads it
    assert consumer["auto.offset.reset"] == "earliest"
    assert consumer["group.id"] != "create_new" and len(consumer["group.id"]) == 36
    assert config.consumer_settings()["group.id"] != consumer["group.id"]
    assert config.consumer_settings(group_id="mine")["group.id"] == "mine"
    assert config.serializers["producer.value.serializer"] == "DataFileChunkSerializer"
    assert "key.deserializer" not in consumer


def test_unset_environment_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"\[broker\] bootstrap.servers: environment variable TEST_BOOTSTRAP is not set",
    ):
        load_config(write(tmp_path, REFERENCE_STYLE), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[producer]\nx = 1\n", "missing the .broker. section"),
        ("[broker]\nclient.id = x\n", "no bootstrap.servers"),
        ("not an ini file", "not a valid INI file"),
        ("[broker]\nbootstrap.servers = a:1\n[kafkacrypto]\nx = 1\n", "not supported"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, text), {})
    assert str(tmp_path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.config")


def test_shipped_local_config_uses_the_environment() -> None:
    shipped = Path(__file__).parents[2] / "cluster" / "local_broker.config"
    config = load_config(shipped, {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert config.broker["bootstrap.servers"] == "127.0.0.1:9"
    assert KafkaConfig.for_bootstrap("h:1").producer_settings() == {"bootstrap.servers": "h:1"}


def test_variables_anywhere_in_a_value_and_a_literal_dollar(tmp_path: Path) -> None:
    text = (
        "[broker]\nbootstrap.servers = ${HOST}:$PORT\nsasl.username = $USER/lab\n"
        "sasl.password = pa$$word\nclient.id = $1 and a $ alone\n"
    )
    config = load_config(write(tmp_path, text), {"HOST": "h", "PORT": "9", "USER": "u"})
    assert config.broker == {
        "bootstrap.servers": "h:9",
        "sasl.username": "u/lab",
        "sasl.password": "pa$word",
        "client.id": "$1 and a $ alone",
    }


def test_values_stay_text_so_a_password_true_stays_a_password(tmp_path: Path) -> None:
    text = "[broker]\nbootstrap.servers = h:1\nsasl.password = True\n"
    assert load_config(write(tmp_path, text), {}).broker["sasl.password"] == "True"


def test_colon_lines_are_read_as_the_reference_reads_them(tmp_path: Path) -> None:
    text = "[broker]\nbootstrap.servers: h:1\nsasl.password: s3cret\n"
    config = load_config(write(tmp_path, text), {})
    assert config.broker == {"bootstrap.servers": "h:1", "sasl.password": "s3cret"}


@pytest.mark.parametrize(
    "text",
    [
        "[broker]\nbootstrap.servers = h:1\nsasl.password s3cretSECRET\n",  # no delimiter
        "sasl.password = s3cretSECRET\n[broker]\n",  # before any section
        "[broker]\nbootstrap.servers = h:1\nsasl.password = $s3cretSECRET\n",  # unset variable
        "[broker]\nsasl.password = s3cretSECRET\nsasl.password = s3cretSECRET\n",
    ],
)
def test_errors_never_show_a_secret(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert "s3cret" not in str(caught.value) and "SECRET" not in str(caught.value)
    assert "line" in str(caught.value) or "sasl.password" in str(caught.value)


def test_a_config_is_found_by_name_as_in_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config NAME` finds NAME or NAME.config in $RAY_REPRODUCER_CONFIG_DIR, then in the
    project's own config folder; a path is taken as it is."""
    labs = tmp_path / "labs"
    labs.mkdir()
    (labs / "beamline.config").write_text("[broker]\nbootstrap.servers = beam:9092\n")
    env = {"RAY_REPRODUCER_CONFIG_DIR": f"{tmp_path / 'empty'}:{labs}"}
    assert load_config("beamline", {**env}).broker["bootstrap.servers"] == "beam:9092"
    assert load_config("beamline.config", env).broker["bootstrap.servers"] == "beam:9092"
    shipped = load_config("local_broker", {"KAFKA_BOOTSTRAP_SERVERS": "h:1"})
    assert shipped.broker["bootstrap.servers"] == "h:1"
    with pytest.raises(ConfigError, match="not found") as caught:
        load_config("nowhere", env)
    assert str(labs / "nowhere.config") in str(caught.value)  # it says where it looked
    monkeypatch.chdir(tmp_path)  # a path is a path: not looked up by its name
    with pytest.raises(ConfigError, match="not found"):
        load_config(Path("labs") / "other.config", env)
