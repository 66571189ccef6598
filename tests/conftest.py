"""One real broker for the whole session, and per-test topic prefixes and directories.

Where the broker comes from: `KAFKA_BOOTSTRAP_SERVERS` if set; else a testcontainers Kafka
container when a Docker engine answers; else the project's own local broker (`streams.local_kafka`),
started once per session and stopped after.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import local_kafka
from streams.config import JsonEngineConfig, load_config

TEST_BROKER_PORT = int(os.environ.get("JSON_ENGINE_TEST_KAFKA_PORT", "19092"))


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bootstrap address of a real Kafka broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    data_dir = tmp_path_factory.mktemp("kafka")
    cluster = local_kafka.up(TEST_BROKER_PORT, data_dir)
    try:
        yield cluster.bootstrap
    finally:
        local_kafka.down(cluster)


@pytest.fixture
def topic_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}."


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    path = tmp_path / "output"
    path.mkdir()
    return path


@pytest.fixture
def config_file(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, output_dir: Path) -> Path:
    """A config file of this test's own: its broker, prefix, output and models directories."""
    path = tmp_path / "json-engine.yaml"
    path.write_text(
        "json_engine:\n"
        f"  kafka: {{bootstrap_servers: '{kafka_bootstrap}', topic_prefix: '{topic_prefix}',"
        " partitions: 3}\n"
        f"  output: {{base_path: '{output_dir}'}}\n"
        f"  models: {{path: '{tmp_path / 'models'}'}}\n"
    )
    return path


@pytest.fixture
def config(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> JsonEngineConfig:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with contextlib.suppress(KeyError):
        monkeypatch.delenv("JSON_ENGINE_CONFIG")
    return load_config(config_file)
