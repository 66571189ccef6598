"""One real broker for the whole session, and per-test topic prefixes and directories.

Where the broker comes from: `KAFKA_BOOTSTRAP_SERVERS` if set; else a testcontainers Kafka
container when a Docker engine answers; else the project's own local broker (`streams.local.kafka`),
started once per session and stopped after.

The S3 server (tests of the S3 sink, `s3_base`): `AWS_ENDPOINT_URL` with the standard AWS
credential variables if set (bucket `JSON_ENGINE_TEST_S3_BUCKET`, else one is created); else
the project's own versitygw (`streams.local.s3`) on `JSON_ENGINE_TEST_S3_PORT` (19730),
started once per session and stopped after, by PID.

Tests run in parallel processes (pytest-xdist, `-n 3 --dist loadfile`: a file's tests stay
in one process, so a module's own servers on its fixed ports never meet another copy); each
process's own servers are on ports of its own (`XDIST_INDEX`).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.config import CHANNELS, JsonEngineConfig, load_config
from streams.local import kafka as local_kafka
from streams.local import s3 as local_s3

# Under pytest-xdist each test process (gw0, gw1, ...) starts its own servers, on ports of
# its own: the session's broker (when no KAFKA_BOOTSTRAP_SERVERS is given) and versitygw.
XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_BROKER_PORT = int(os.environ.get("JSON_ENGINE_TEST_KAFKA_PORT", "19092")) + 10 * XDIST_INDEX
TEST_S3_PORT = int(os.environ.get("JSON_ENGINE_TEST_S3_PORT", "19730")) + 20 * XDIST_INDEX
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
# The brokers the tests start for themselves (clusters killed node by node, a fresh one per
# demo run, a SASL one) live a minute or two: with the client compiler alone a node is ready
# in half the CPU, on cores the tests keep busy. CI's shared broker keeps Kafka's default.
os.environ.setdefault(
    "KAFKA_JVM_PERFORMANCE_OPTS", " ".join(("-XX:TieredStopAtLevel=1", *local_kafka.BROKER_JVM))
)


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


class S3Service:
    """Where the S3 tests write: an endpoint, the AWS variables for it, and a bucket."""

    def __init__(self, env: dict[str, str], bucket: str, server: local_s3.LocalS3 | None):
        self.env = env
        self.bucket = bucket
        self.server = server  # the local versitygw, when the session started one

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self.env.get("AWS_SECRET_ACCESS_KEY"),
            region_name=self.env.get("AWS_REGION", local_s3.REGION),
        )


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """A real S3 API: `AWS_ENDPOINT_URL` if set, else a local versitygw for the session."""
    bucket = (
        os.environ.get("JSON_ENGINE_TEST_S3_BUCKET") or f"json-engine-test-{uuid.uuid4().hex[:8]}"
    )
    if os.environ.get("AWS_ENDPOINT_URL"):
        env = {name: os.environ[name] for name in AWS_VARIABLES if os.environ.get(name)}
        service = S3Service(env, bucket, None)
        if not os.environ.get("JSON_ENGINE_TEST_S3_BUCKET"):
            service.client().create_bucket(Bucket=bucket)
        yield service
        return
    server = local_s3.up(TEST_S3_PORT, tmp_path_factory.mktemp("s3"))
    try:
        server.create_bucket(bucket)
        yield S3Service(server.env(), bucket, server)
    finally:
        local_s3.down(server)


@pytest.fixture
def own_s3(
    tmp_path: Path, s3_service: S3Service, monkeypatch: pytest.MonkeyPatch
) -> Iterator[local_s3.LocalS3]:
    """A versitygw of this test's own (it stops and starts it), on a tmpfs it can make
    read-only; the AWS variables point at it."""
    data_dir = tmp_path / "s3"
    mount = data_dir / "buckets"  # the posix backend's folder; log and PID stay outside
    mount.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    server = local_s3.up(TEST_S3_PORT + 1, data_dir)
    try:
        server.create_bucket("json-engine-outage")
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        local_s3.down(server)
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def s3_base(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://bucket/<prefix of this test>`, with the AWS variables set for it (and so for the
    workers this test starts)."""
    for name, value in s3_service.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_service.bucket}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """Kill (SIGKILL, by PID) the worker processes a test left running, failed or not."""
    yield
    from tests.workers import STARTED

    for worker in STARTED:
        worker.thaw_and_kill()
    STARTED.clear()


@pytest.fixture
def topic_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}."


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    path = tmp_path / "output"
    path.mkdir()
    return path


ConfigFactory = Callable[..., tuple[Path, JsonEngineConfig]]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_prefix: str,
    output_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> ConfigFactory:
    """Write a config of this test's own (its broker, prefix, directories) with overrides."""
    clear_engine_env(monkeypatch)

    def make(
        overrides: dict[str, Any] | None = None, name: str = "json-engine.yaml"
    ) -> tuple[Path, JsonEngineConfig]:
        return write_config(
            tmp_path / name, kafka_bootstrap, topic_prefix, output_dir, tmp_path, overrides
        )

    return make


def clear_engine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JSON_ENGINE_* or KAFKA_BOOTSTRAP_SERVERS: the config file alone says (workers too)."""
    for name in list(os.environ):
        if name.startswith("JSON_ENGINE_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)


def write_config(
    path: Path,
    bootstrap: str,
    topic_prefix: str,
    output_dir: Path,
    models_parent: Path,
    overrides: dict[str, Any] | None = None,
) -> tuple[Path, JsonEngineConfig]:
    """A test's config file (its broker, prefix, directories) with overrides, and its config;
    for a fixture wider than one test too."""
    base = {
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": topic_prefix, "partitions": 3},
        "output": {"base_path": str(output_dir)},
        "models": {"path": str(models_parent / "models")},
        # Files become visible when they finish: tests want that within a second or two,
        # not after the production default of a few minutes.
        "channels": {channel: {"roll_seconds": 1.0} for channel in CHANNELS},
    }
    path.write_text(yaml.safe_dump({"json_engine": _merge(base, overrides or {})}))
    return path, load_config(path)


@pytest.fixture
def config_file(make_config: ConfigFactory) -> Path:
    return make_config()[0]


@pytest.fixture
def config(make_config: ConfigFactory) -> JsonEngineConfig:
    return make_config()[1]


# The longest files in CI (its log's "seconds per test file"), longest first. `--dist
# loadfile` hands whole files to the workers in collection order: collected alphabetically,
# the longest (test_zombie.py, ~450 s) was handed out last and made the run's tail.
SLOW_FILES_FIRST = (
    "test_zombie.py",
    "test_broker_faults.py",
    "test_exactly_once.py",
    "test_newcomer.py",
    "test_s3_exactly_once.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first (SLOW_FILES_FIRST), every file's tests in their own order."""
    rank = {name: n for n, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Seconds per test file (setup, call and teardown), the slowest first: where CI's time
    goes, in every run's log."""
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                path = report.nodeid.split("::", 1)[0]
                seconds[path] = seconds.get(path, 0.0) + report.duration
    if not seconds:
        return
    terminalreporter.write_sep("=", "seconds per test file")
    for path, total in sorted(seconds.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{total:8.1f}  {path}")
    terminalreporter.write_line(f"{sum(seconds.values()):8.1f}  in all")
