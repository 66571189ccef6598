"""Configuration per the Contract: file, environment overrides, and clear errors (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.config import ConfigError, load_config
from tests.workers import cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JSON_ENGINE") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def test_defaults_mirror_the_contract() -> None:
    cfg = load_config()
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.kafka.topic_prefix == "json-engine."
    assert cfg.kafka.partitions == 6
    assert cfg.channels.engine_execution.filename == "events.jsonl"
    assert cfg.channels.dead_letter.filename == "rejected.jsonl"
    assert cfg.channels.engine_execution.buffer_size == 10_000
    assert cfg.validation.on_invalid == "dead_letter"
    assert (cfg.training.thresholds.gold, cfg.training.thresholds.bronze) == (0.9, 0.5)
    assert cfg.models.max_model_bytes == 200_000_000


def test_good_file_partial_channel_keeps_default_filename(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "json_engine:\n"
        "  kafka: {topic_prefix: 'x.', partitions: 3}\n"
        "  channels:\n"
        "    engine_execution: {buffer_size: 5, validate: false}\n"
        "    comparison_result: {filename: cmp.jsonl}\n",
    )
    cfg = load_config(path)
    assert cfg.kafka.topic_prefix == "x."
    assert cfg.kafka.partitions == 3
    assert cfg.channels.engine_execution.filename == "events.jsonl"
    assert cfg.channels.engine_execution.buffer_size == 5
    assert cfg.channels.engine_execution.validate_ is False
    assert cfg.channels.comparison_result.directory == "cmp"


def test_env_overrides_file_and_bootstrap_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "json_engine:\n  kafka: {partitions: 3, bootstrap_servers: 'a:1'}\n")
    monkeypatch.setenv("JSON_ENGINE_CONFIG", str(path))
    monkeypatch.setenv("JSON_ENGINE__KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("JSON_ENGINE__AGGREGATION__WINDOW_MINUTES", "5")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b:2")
    cfg = load_config()
    assert cfg.kafka.partitions == 12
    assert cfg.aggregation.window_minutes == 5
    assert cfg.kafka.bootstrap_servers == "b:2"
    monkeypatch.setenv("JSON_ENGINE__KAFKA__BOOTSTRAP_SERVERS", "c:3")
    assert load_config().kafka.bootstrap_servers == "c:3"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("json_engine:\n  kafka: {bogus: 1}\n", "json_engine.kafka.bogus"),
        ("json_engine:\n  kafka: {partitions: many}\n", "json_engine.kafka.partitions"),
        (
            "json_engine:\n  channels: {engine_execution: {buffer_size: -1}}\n",
            "json_engine.channels.engine_execution.buffer_size",
        ),
        (
            "json_engine:\n  training: {thresholds: {gold: 0.5, silver: 0.8, bronze: 0.2}}\n",
            "json_engine.training.thresholds",
        ),
        ("json_engine:\n  training: {thresholds: {gold: 1.5}}\n", "thresholds.gold"),
        ("json_engine:\n  validation: {on_invalid: explode}\n", "validation.on_invalid"),
        ("jsonengine: {}\n", "jsonengine"),
        ("json_engine: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "top level must be a mapping"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_bad_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSON_ENGINE__KAFKA__PARTITIONS", "-3")
    with pytest.raises(ConfigError, match=r"json_engine\.kafka\.partitions"):
        load_config()


def test_cli_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "json_engine:\n  channels: {engine_execution: {buffer_size: -1}}\n")
    result = cli("topics", "list", "--config", str(path))
    assert result.returncode == 2
    assert "buffer_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_security_settings_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSON_ENGINE__KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="needs sasl_mechanism"):
        load_config()
    monkeypatch.setenv("JSON_ENGINE__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("JSON_ENGINE__KAFKA__SASL_USERNAME", "u")
    monkeypatch.setenv("JSON_ENGINE__KAFKA__SASL_PASSWORD", "p")
    kafka = load_config().kafka
    assert kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
    }
