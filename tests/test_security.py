"""Against a real secured broker: SASL_SSL with SCRAM-SHA-256 and a keytool-made certificate.

The project's own broker (`json-engine kafka up --sasl-port`) gets a second listener; the
clients reach it with the settings of its `security.json`: the CA in PEM, hostname
verification on (librdkafka's default), the generated user's password. With a wrong password
nothing is published and the command says that authentication failed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, KafkaError

from streams import events
from streams.config import KafkaConfig, load_config
from streams.local import kafka as local_kafka
from streams.publisher import DeliveryError, Publisher
from streams.topics import create_topics, topic_name
from tests import workers
from tests.workers import cli

PORT = int(os.environ.get("JSON_ENGINE_TEST_KAFKA_PORT_3", "19392"))
SASL_PORT = PORT + 2  # PORT + 1 is the node's controller
TS = 1_764_300_000_000
# What librdkafka says, in the error callback and so in `publish`'s reason, for a bad password.
AUTH_FAILED = "SASL authentication error: Authentication failed"
AUTH_REFUSED = b"Authentication failed"  # in the log of a worker given a wrong password


@dataclass(frozen=True)
class Secured:
    cluster: local_kafka.Cluster
    settings: dict[str, str]  # KafkaConfig's fields: bootstrap over SASL_SSL, user, CA, ...


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A broker of this module's own, with a SASL_SSL listener, started as a user would."""
    data_dir = tmp_path_factory.mktemp("kafka-sasl")
    cluster = local_kafka.Cluster(PORT, data_dir.resolve(), 1, SASL_PORT)
    try:
        up = ["kafka", "up", "--port", str(PORT), "--sasl-port", str(SASL_PORT)]
        done = cli(*up, "--data-dir", str(data_dir))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"127.0.0.1:{PORT}"
        assert f"127.0.0.1:{SASL_PORT}" in done.stderr and "security.json" in done.stderr
        yield Secured(cluster, local_kafka.sasl_settings(data_dir))
    finally:
        local_kafka.down(cluster)  # by the PID it recorded


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the config file speaks: no bootstrap or JSON_ENGINE__ variable of the session."""
    for name in list(os.environ):
        if name.startswith("JSON_ENGINE_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)


def secured_config(
    secured: Secured, base: Path, prefix: str, **overrides: Any
) -> dict[str, dict[str, Any]]:
    """A config (`{"json_engine": …}`) of the secured broker, its own prefix and directories.

    `overrides` replace or add settings of the `kafka` section (say a wrong `sasl_password`).
    """
    kafka = {**secured.settings, "topic_prefix": prefix, "partitions": 3, **overrides}
    return {
        "json_engine": {
            "kafka": kafka,
            "output": {"base_path": str(base / "output")},
            "models": {"path": str(base / "models")},
        }
    }


def worker_config(
    secured: Secured, base: Path, prefix: str, **overrides: Any
) -> dict[str, dict[str, Any]]:
    """A worker's config against the secured broker: quick flushes, metrics on `/readyz`.

    For the worker tests below (and the librdkafka worker's): everything a worker reads, writes,
    commits and checkpoints goes through the SASL_SSL listener.
    """
    config = secured_config(secured, base, prefix, **overrides)
    quick = {"auto_flush_seconds": 0.2, "roll_seconds": 0.5}
    config["json_engine"].update(
        {
            "channels": {channel: dict(quick) for channel in ("engine_execution", "dead_letter")},
            "metrics": {"port": free_port()},
        }
    )
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lines_file(path: Path, count: int, seed: int = 1) -> tuple[Path, list[bytes]]:
    rng = random.Random(seed)
    lines = [
        orjson.dumps(events.engine_execution(rng, f"engine-{i % 3}", TS + i)) for i in range(count)
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path, lines


def read_back(config_file: Path, topic: str, count: int, timeout: float = 60) -> list[bytes]:
    """With a plain confluent-kafka consumer of the same settings, as any client would."""
    cfg = load_config(config_file)
    consumer = Consumer(
        {
            **cfg.kafka.client_config(),
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_security_json_is_the_clients_config(secured: Secured) -> None:
    settings = secured.settings
    assert settings["bootstrap_servers"] == f"127.0.0.1:{SASL_PORT}"
    assert settings["security_protocol"] == "SASL_SSL"
    assert settings["sasl_mechanism"] == "SCRAM-SHA-256"
    assert settings["sasl_username"] == "json-engine"
    assert settings["sasl_password"] == (secured.cluster.sasl_dir / "password").read_text().strip()
    ca = Path(settings["ssl_ca_location"])
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    # The file is a config of its own; the secrets in it are for its owner only.
    assert load_config(secured.cluster.security_file).kafka == KafkaConfig(**settings)
    for secret in (secured.cluster.security_file, secured.cluster.sasl_dir / "password"):
        assert secret.stat().st_mode & 0o077 == 0
    status = cli(
        "kafka", "status", "--port", str(PORT), "--data-dir", str(secured.cluster.data_dir)
    )
    assert status.returncode == 0 and f"SASL_SSL on 127.0.0.1:{SASL_PORT}" in status.stdout
    # `up` again with the same listeners: the broker is taken as it runs, not restarted.
    pid = secured.cluster.recorded_pid(0)
    again = local_kafka.up(PORT, secured.cluster.data_dir, sasl_port=SASL_PORT)
    assert again.recorded_pid(0) == pid and again.sasl_port == SASL_PORT


def test_topics_create_over_sasl_ssl(secured: Secured, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", secured_config(secured, tmp_path, "sec-topics."))
    done = cli("topics", "create", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "created  sec-topics.engine-execution" in done.stdout
    listed = cli("topics", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert ["sec-topics.engine-execution", "partitions=3", "replication=1"] in [
        line.split() for line in listed.stdout.splitlines()
    ]


def test_publish_over_sasl_ssl_and_read_back(secured: Secured, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", secured_config(secured, tmp_path, "sec-pub."))
    assert cli("topics", "create", "--config", str(config)).returncode == 0
    path, lines = lines_file(tmp_path / "e.jsonl", 40)
    done = cli("publish", "--type", "engine_execution", str(path), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "published 40, invalid 0, failed 0" in done.stdout
    got = read_back(config, topic_name(load_config(config), "engine_execution"), len(lines))
    assert sorted(got) == sorted(lines)


def test_publish_with_a_wrong_password_fails_naming_authentication(
    secured: Secured, tmp_path: Path
) -> None:
    good = write_config(tmp_path / "good.yaml", secured_config(secured, tmp_path, "sec-bad."))
    create_topics(load_config(good))
    bad = write_config(
        tmp_path / "bad.yaml",
        secured_config(secured, tmp_path, "sec-bad.", sasl_password="not-the-password"),
    )
    path, _ = lines_file(tmp_path / "e.jsonl", 5)
    started = time.monotonic()
    done = cli("publish", "--type", "engine_execution", str(path), "--config", str(bad))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "published 0, invalid 0, failed 5" in done.stdout
    assert AUTH_FAILED in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60  # today's bounded wait (30 s delivery timeout)
    assert read_back(good, topic_name(load_config(good), "engine_execution"), 1, timeout=5) == []


def test_auth_failure_stays_the_reason_after_brokers_down(secured: Secured, tmp_path: Path) -> None:
    """librdkafka follows a failed authentication with "1/1 brokers are down"; the Publisher
    keeps naming the authentication failure (the order of the two is not up to the test)."""
    cfg = load_config(
        write_config(
            tmp_path / "bad.yaml",
            secured_config(secured, tmp_path, "sec-order.", sasl_password="wrong"),
        )
    )
    publisher = Publisher(cfg, delivery_timeout_s=1)
    try:
        auth = KafkaError(KafkaError._AUTHENTICATION, f"sasl_ssl://x/bootstrap: {AUTH_FAILED}")
        publisher._on_client_error(auth)
        publisher._on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        publisher.collect_engine_execution(events.engine_execution(random.Random(1), "e", TS))
        with pytest.raises(DeliveryError, match=AUTH_FAILED):
            publisher.close()
    finally:
        publisher.close()


def test_worker_over_sasl_ssl(secured: Secured, tmp_path: Path) -> None:
    config = write_config(tmp_path / "w.yaml", worker_config(secured, tmp_path, "sec-worker."))
    cfg = load_config(config)
    create_topics(cfg)
    worker = workers.WorkerProcess(config, tmp_path).start()
    try:
        path, lines = lines_file(tmp_path / "e.jsonl", 200)
        done = cli("publish", "--type", "engine_execution", str(path), "--config", str(config))
        assert done.returncode == 0, done.stderr
        got = workers.wait_for_lines(cfg, "engine_execution", len(lines), timeout=60)
        assert sorted(got) == sorted(lines)
    finally:
        assert worker.terminate() == 0


def test_worker_with_a_wrong_password_writes_nothing_and_says_why(
    secured: Secured, tmp_path: Path
) -> None:
    good = write_config(tmp_path / "g.yaml", worker_config(secured, tmp_path, "sec-wbad."))
    cfg = load_config(good)
    create_topics(cfg)
    path, _ = lines_file(tmp_path / "e.jsonl", 50)
    published = cli("publish", "--type", "engine_execution", str(path), "--config", str(good))
    assert published.returncode == 0, published.stderr
    bad = write_config(
        tmp_path / "b.yaml",
        worker_config(secured, tmp_path, "sec-wbad.", sasl_password="not-the-password"),
    )
    worker = workers.WorkerProcess(bad, tmp_path, name="bad").start(wait_ready=False)
    try:
        # It exits non-zero, or stays up and not ready (`/readyz` 503) once it has said why.
        deadline = time.monotonic() + 30
        while worker.alive() and time.monotonic() < deadline:
            if AUTH_REFUSED in worker.log():
                break
            time.sleep(0.5)
        if worker.alive():
            import urllib.error
            import urllib.request

            port = load_config(bad).metrics.port
            with pytest.raises(urllib.error.HTTPError) as not_ready:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert not_ready.value.code == 503
        else:
            assert worker.proc is not None and worker.proc.returncode != 0
        assert AUTH_REFUSED in worker.log(), worker.tail()
        assert workers.lines_of(cfg, "engine_execution") == []
    finally:
        if worker.alive():
            worker.terminate()
