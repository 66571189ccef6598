"""A real Apache Kafka (KRaft) on 127.0.0.1, for the demo, the tests and development.

Kafka's jars and their runtime dependencies come from Maven Central through `mvn`, once,
into a cache directory; a start then only formats storage and launches the JVM.
Each node runs broker and controller; `nodes=3` gives a three-node quorum.

`sasl_port` adds a second client listener, SASL_SSL with SCRAM-SHA-256, beside the PLAINTEXT
one (which the controllers and the brokers keep using among themselves): a CA and a broker
certificate made with the JDK's keytool, one user whose password is generated once, and
`security.json` in the data directory with the client settings (see `sasl_settings`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from streams.local import processes

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
SASL_MECHANISM = "SCRAM-SHA-256"
SASL_USERNAME = "json-engine"
CERT_VALIDITY_DAYS = 3650
BROKER_JVM = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
# The storage format is a one-shot tool: the client compiler alone and the serial collector
# start it in half the CPU (1.8 against 3.0-4.0 s per node, measured here).
TOOL_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

KAFKA_ARTIFACTS = [
    f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
    f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
    f"org.slf4j:slf4j-api:{SLF4J_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j2-impl:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
]
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.json-engine</groupId><artifactId>jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = (
    "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
    "<version>{v}</version></dependency>"
)

_LOG4J2 = """Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: INFO, AppenderRef: [{ref: STDOUT}]}
    Logger:
      - {name: kafka.request.logger, level: WARN}
      - {name: org.apache.kafka.controller, level: WARN}
"""


class LocalKafkaError(Exception):
    """A local broker that cannot be provisioned, started or stopped; one paragraph."""


def cache_dir() -> Path:
    """One folder per Kafka version in the cache."""
    return processes.cache_dir(f"kafka-{KAFKA_VERSION}")


def default_data_dir(port: int) -> Path:
    return processes.default_data_dir(f"kafka-{port}")


def provision() -> Path:
    """Resolve Kafka's jars into the cache once; return the directory of jars."""
    return resolve_jars(cache_dir() / "libs", KAFKA_ARTIFACTS)


def resolve_jars(libs: Path, artifacts: list[str]) -> Path:
    """`group:artifact:version` jars and their runtime dependencies from Maven Central, once.

    A generated pom and `mvn dependency:copy-dependencies` fill a temporary directory that is
    renamed to `libs` only when complete, so an interrupted download is never taken as done.
    """
    if (libs / ".complete").exists():
        return libs
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise LocalKafkaError(
                f"`{tool}` is not on PATH: the local Kafka broker needs Java 17+ and Maven "
                "to fetch Apache Kafka's jars from Maven Central. Install them (Debian: "
                "apt-get install openjdk-17-jre-headless maven) or point json-engine at an "
                "existing cluster with KAFKA_BOOTSTRAP_SERVERS."
            )
    libs.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".provision-", dir=libs.parent))
    try:
        dependencies = "\n".join(
            _DEPENDENCY.format(g=g, a=a, v=v) for g, a, v in (x.split(":") for x in artifacts)
        )
        pom = work / "pom.xml"
        pom.write_text(_POM.format(dependencies=dependencies))
        log = work / "mvn.log"
        with log.open("wb") as out:
            rc = subprocess.call(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={work / 'libs'}",
                    "-DincludeScope=runtime",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if rc != 0:
            raise LocalKafkaError(
                f"could not resolve {', '.join(artifacts)} from Maven Central (mvn exit {rc}); "
                f"is the repository reachable? Last lines of the Maven log:\n{processes.tail(log)}"
            )
        (work / "libs" / ".complete").write_text("\n".join(artifacts))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(libs)
        os.replace(work / "libs", libs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


@dataclass(frozen=True)
class Cluster:
    """Where a local cluster lives: node i serves clients on port+i, its controller on
    port+nodes+i, SASL_SSL clients on sasl_port+i if sasl_port is set; each node keeps data,
    log and PID under data_dir/node-i; the certificates and the password are under
    data_dir/sasl."""

    port: int
    data_dir: Path
    nodes: int = 1
    sasl_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.nodes))

    def node_dir(self, i: int) -> Path:
        return self.data_dir / f"node-{i}"

    def pid_file(self, i: int) -> Path:
        return self.node_dir(i) / "kafka.pid"

    def log_file(self, i: int) -> Path:
        return self.node_dir(i) / "broker.log"

    def controller_port(self, i: int) -> int:
        return self.port + self.nodes + i

    @property
    def sasl_bootstrap(self) -> str | None:
        if self.sasl_port is None:
            return None
        return ",".join(f"127.0.0.1:{self.sasl_port + i}" for i in range(self.nodes))

    @property
    def sasl_dir(self) -> Path:
        return self.data_dir / "sasl"

    @property
    def security_file(self) -> Path:
        return self.data_dir / "security.json"

    def ports(self) -> list[int]:
        """Every port the cluster listens on."""
        sasl = [] if self.sasl_port is None else [self.sasl_port + i for i in range(self.nodes)]
        return [*(self.port + i for i in range(2 * self.nodes)), *sasl]

    def recorded_pid(self, i: int) -> int | None:
        """The PID `up` recorded for node i, if any."""
        try:
            return int(self.pid_file(i).read_text())
        except (OSError, ValueError):
            return None

    def running(self, i: int) -> bool:
        pid = self.recorded_pid(i)
        return pid is not None and processes.alive(pid)

    def pids(self) -> list[int]:
        """PIDs recorded by `up` whose process still runs."""
        pids = (self.recorded_pid(i) for i in range(self.nodes))
        return [pid for pid in pids if pid is not None and processes.alive(pid)]

    def properties(self, i: int) -> str:
        voters = ",".join(f"{n + 1}@127.0.0.1:{self.controller_port(n)}" for n in range(self.nodes))
        replication = min(3, self.nodes)
        advertised = f"PLAINTEXT://127.0.0.1:{self.port + i}"
        listeners = f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port(i)}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.sasl_port is not None:
            listeners += f",SASL_SSL://127.0.0.1:{self.sasl_port + i}"
            advertised += f",SASL_SSL://127.0.0.1:{self.sasl_port + i}"
            protocols += ",SASL_SSL:SASL_SSL"
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={i + 1}",
                f"controller.quorum.voters={voters}",
                f"listeners={listeners}",
                f"advertised.listeners={advertised}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={protocols}",
                "inter.broker.listener.name=PLAINTEXT",
                *self._sasl_properties(),
                f"log.dirs={self.node_dir(i) / 'data'}",
                f"offsets.topic.replication.factor={replication}",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min(2, replication)}",
                f"min.insync.replicas={min(2, replication)}",
                f"default.replication.factor={replication}",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.num.partitions=10",
                "group.initial.rebalance.delay.ms=0",
                # A killed worker's open transaction blocks read_committed readers until the
                # broker aborts it: checked every second, not every 10 s (the default).
                "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "log.flush.interval.messages=9223372036854775807",
                "share.coordinator.state.topic.replication.factor=" + str(replication),
                "share.coordinator.state.topic.min.isr=" + str(min(2, replication)),
                "",
            ]
        )

    def _sasl_properties(self) -> list[str]:
        """The SASL_SSL listener's settings; its keystore must exist (`_ensure_tls`)."""
        if self.sasl_port is None:
            return []
        store_password = (self.sasl_dir / "store.password").read_text().strip()
        prefix = "listener.name.sasl_ssl."
        return [
            f"sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"{prefix}sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"{prefix}{SASL_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}ssl.keystore.type=PKCS12",
            f"{prefix}ssl.keystore.location={self.sasl_dir / 'broker.p12'}",
            f"{prefix}ssl.keystore.password={store_password}",
            f"{prefix}ssl.key.password={store_password}",
            f"{prefix}ssl.client.auth=none",
        ]


def broker_count(bootstrap: str, timeout: float = 3.0) -> int:
    """How many brokers a metadata request reports; 0 when nothing answers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return 0


def answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when the broker answers a metadata request."""
    return broker_count(bootstrap, timeout) > 0


def broker_jvm_options() -> list[str]:
    """A broker's JIT and collector: `KAFKA_JVM_PERFORMANCE_OPTS` when set (the variable
    Kafka's own scripts read), else G1 for a broker that serves load."""
    return shlex.split(os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS", "")) or list(BROKER_JVM)


def _java_command(libs: Path, heap_mb: int, performance: Sequence[str], *args: str) -> list[str]:
    return [
        "java",
        f"-Xms{heap_mb // 2}m",
        f"-Xmx{heap_mb}m",
        *performance,
        "-Djava.awt.headless=true",
        "-cp",
        f"{libs}/*",
        *args,
    ]


def _format(cluster: Cluster, libs: Path, i: int, cluster_id: str, log4j: Path) -> bool:
    """Write the node's properties; format its storage unless done before. True if formatted.

    With a SASL listener, the user's SCRAM credential goes into the storage's first metadata
    records (`--add-scram`), so it exists before any client connects.
    """
    node = cluster.node_dir(i)
    props = node / "server.properties"
    props.touch(mode=0o600)  # it holds the keystore's password when SASL is on
    props.write_text(cluster.properties(i))
    if (node / "data" / "meta.properties").exists():
        return False
    scram = []
    if cluster.sasl_port is not None:
        password = _sasl_password(cluster)
        scram = ["--add-scram", f"{SASL_MECHANISM}=[name={SASL_USERNAME},password={password}]"]
    result = subprocess.run(
        _java_command(
            libs,
            256,
            TOOL_JVM,
            f"-Dlog4j2.configurationFile={log4j}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            *scram,
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LocalKafkaError(
            f"formatting Kafka storage in {node} failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()[-2000:]}"
        )
    return True


def _private_file(path: Path, text: str) -> None:
    """Write a secret readable by its owner only (created so, never widened in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _sasl_password(cluster: Cluster) -> str:
    """The SASL user's password: generated once per data directory, then reused."""
    path = cluster.sasl_dir / "password"
    if not path.exists():
        cluster.sasl_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_file(path, secrets.token_hex(16) + "\n")
    return path.read_text().strip()


# How the CA and the broker's certificate are made, in order; `{days}` is their validity.
_KEYTOOL_STEPS = (
    "-genkeypair -alias ca -keyalg RSA -keysize 2048 -validity {days}"
    " -dname 'CN=json-engine local Kafka CA' -ext bc:c -ext KU:c=keyCertSign,cRLSign"
    " -keystore ca.p12 -storetype PKCS12",
    "-exportcert -rfc -alias ca -keystore ca.p12 -file ca.pem",
    "-genkeypair -alias broker -keyalg RSA -keysize 2048 -validity {days} -dname CN=localhost"
    " -keystore broker.p12 -storetype PKCS12",
    "-certreq -alias broker -keystore broker.p12 -file broker.csr",
    "-gencert -alias ca -keystore ca.p12 -infile broker.csr -outfile broker.pem -rfc"
    " -validity {days} -ext SAN=IP:127.0.0.1,DNS:localhost"
    " -ext KU=digitalSignature,keyEncipherment -ext EKU=serverAuth",
    "-importcert -noprompt -alias ca -file ca.pem -keystore broker.p12",
    "-importcert -alias broker -file broker.pem -keystore broker.p12",
    "-importcert -noprompt -alias ca -file ca.pem -keystore truststore.p12 -storetype PKCS12",
)


def _ensure_tls(cluster: Cluster) -> None:
    """A CA, and a broker certificate it signs for 127.0.0.1 and localhost, made once.

    ca.pem is the CA in PEM for librdkafka's `ssl.ca.location`; broker.p12 is the broker's
    keystore (key, certificate, CA); truststore.p12 holds the CA for Java clients. Their
    password is in store.password. Made in a temporary directory, moved in when complete.
    """
    if (cluster.sasl_dir / "broker.p12").exists():
        return
    if shutil.which("keytool") is None:
        raise LocalKafkaError(
            "`keytool` is not on PATH: the SASL_SSL listener's certificate is made with the "
            "JDK's keytool (Debian: apt-get install openjdk-17-jre-headless)."
        )
    cluster.sasl_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tls-", dir=cluster.sasl_dir))
    try:
        _private_file(work / "store.password", secrets.token_hex(16) + "\n")
        for step in _KEYTOOL_STEPS:
            args = shlex.split(step.format(days=CERT_VALIDITY_DAYS))
            result = subprocess.run(
                ["keytool", *args, "-storepass:file", "store.password"],
                cwd=work,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise LocalKafkaError(
                    f"keytool {args[0]} failed in {work} (exit {result.returncode}):\n"
                    f"{(result.stdout + result.stderr).strip()[-2000:]}"
                )
        # broker.p12 last: its presence is what says the set is complete.
        for name in ("store.password", "ca.p12", "ca.pem", "broker.pem", "truststore.p12"):
            os.replace(work / name, cluster.sasl_dir / name)
        os.replace(work / "broker.p12", cluster.sasl_dir / "broker.p12")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def up(
    port: int = 9092,
    data_dir: Path | None = None,
    nodes: int = 1,
    sasl_port: int | None = None,
) -> Cluster:
    """Start the cluster unless it already answers; return when it serves metadata.

    With `sasl_port`, a cluster that runs without that SASL_SSL listener is restarted with it;
    without, a running cluster is taken as it is.
    """
    cluster = Cluster(port, Path(data_dir or default_data_dir(port)).resolve(), nodes, sasl_port)
    if sasl_port is not None:
        plain = set(range(port, port + 2 * nodes))
        if plain & set(range(sasl_port, sasl_port + nodes)):
            raise LocalKafkaError(
                f"--sasl-port {sasl_port} overlaps the PLAINTEXT and controller ports "
                f"{port}-{port + 2 * nodes - 1}; choose another."
            )
    running = cluster.pids()
    if len(running) == nodes and answers(cluster.bootstrap):
        configured = _configured_sasl_port(cluster)
        if sasl_port is None or configured == sasl_port:
            return replace(cluster, sasl_port=configured)
    if running:
        down(cluster)
    busy = [p for p in cluster.ports() if processes.port_taken(p)]
    if busy:
        raise LocalKafkaError(
            f"cannot start Kafka on 127.0.0.1: port(s) {busy} are taken by another process. "
            f"Choose another with --port, or stop what listens there."
        )
    libs = provision()
    cluster.data_dir.mkdir(parents=True, exist_ok=True)
    if sasl_port is None:
        cluster.security_file.unlink(missing_ok=True)
    else:
        _ensure_tls(cluster)
    log4j = cluster.data_dir / "log4j2.yaml"
    log4j.write_text(_LOG4J2)
    id_file = cluster.data_dir / "cluster.id"
    if not id_file.exists():
        id_file.write_text(_cluster_id())
    cluster_id = id_file.read_text().strip()
    heap = 512 if nodes == 1 else 384
    formatted = []
    for i in range(nodes):
        cluster.node_dir(i).mkdir(parents=True, exist_ok=True)
        formatted.append(_format(cluster, libs, i, cluster_id, log4j))
    for i in range(nodes):
        _launch(cluster, libs, log4j, heap, i)
    _wait_ready(cluster)
    if sasl_port is not None:
        if not all(formatted):  # storage made before SASL: no credential from --add-scram
            _upsert_scram(cluster)
        _private_file(
            cluster.security_file,
            json.dumps({"json_engine": {"kafka": _sasl_config(cluster)}}, indent=2) + "\n",
        )
        _wait_sasl_ready(cluster)
    return cluster


def _launch(cluster: Cluster, libs: Path, log4j: Path, heap: int, i: int) -> None:
    """Start node i's JVM in a session of its own (log appended) and record its PID."""
    with cluster.log_file(i).open("ab") as log:
        proc = subprocess.Popen(
            _java_command(
                libs,
                heap,
                broker_jvm_options(),
                f"-Dlog4j2.configurationFile={log4j}",
                "kafka.Kafka",
                str(cluster.node_dir(i) / "server.properties"),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    cluster.pid_file(i).write_text(str(proc.pid))


def stop_node(cluster: Cluster, i: int, sig: int = signal.SIGKILL) -> int | None:
    """Stop node i alone by its recorded PID (SIGKILL by default, as a crash would); wait
    until it has exited. Return the PID, or None when it was not running."""
    pid = cluster.recorded_pid(i)
    if pid is None or not processes.alive(pid):
        cluster.pid_file(i).unlink(missing_ok=True)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while processes.alive(pid):
        processes.reap(pid)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    processes.reap(pid)
    cluster.pid_file(i).unlink(missing_ok=True)
    return pid


def start_node(cluster: Cluster, i: int, timeout: float = START_TIMEOUT_S) -> int:
    """Start node i of a cluster `up` made (storage and properties as it left them) and wait
    until that node answers and the cluster's metadata lists every node again; return its PID.
    The other nodes must be running: one node alone is no quorum (`up` starts them all)."""
    if cluster.running(i):
        raise LocalKafkaError(f"Kafka node {i} already runs (PID {cluster.recorded_pid(i)})")
    port = cluster.port + i
    busy = [p for p in (port, cluster.controller_port(i)) if processes.port_taken(p)]
    if busy:
        raise LocalKafkaError(f"cannot start Kafka node {i}: port(s) {busy} are taken")
    heap = 512 if cluster.nodes == 1 else 384
    _launch(cluster, provision(), cluster.data_dir / "log4j2.yaml", heap, i)
    pid = cluster.recorded_pid(i)
    assert pid is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            raise LocalKafkaError(
                f"Kafka node {i} on 127.0.0.1:{port} exited during start-up. "
                f"Last lines of {cluster.log_file(i)}:\n{processes.tail(cluster.log_file(i))}"
            )
        if broker_count(f"127.0.0.1:{port}", 2.0) >= cluster.nodes:
            return pid
        time.sleep(0.5)
    raise LocalKafkaError(
        f"Kafka node {i} on 127.0.0.1:{port} did not rejoin within {timeout:.0f} s "
        f"(it still runs, PID {pid}). Last lines of {cluster.log_file(i)}:\n"
        f"{processes.tail(cluster.log_file(i))}"
    )


def _configured_sasl_port(cluster: Cluster) -> int | None:
    """The SASL_SSL port in node 0's server.properties as last written, if any."""
    try:
        text = (cluster.node_dir(0) / "server.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("advertised.listeners="):
            for listener in line.split("=", 1)[1].split(","):
                if listener.startswith("SASL_SSL://"):
                    return int(listener.rsplit(":", 1)[1])
    return None


def _sasl_config(cluster: Cluster) -> dict[str, str]:
    """The `kafka` section of a json-engine config for the SASL_SSL listener."""
    assert cluster.sasl_bootstrap is not None
    return {
        "bootstrap_servers": cluster.sasl_bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_username": SASL_USERNAME,
        "sasl_password": _sasl_password(cluster),
        "ssl_ca_location": str(cluster.sasl_dir / "ca.pem"),
    }


def sasl_settings(data_dir: Path) -> dict[str, str]:
    """The KafkaConfig settings (bootstrap_servers, security_protocol, sasl_*, ssl_ca_location)
    of the SASL_SSL listener that `up(..., sasl_port=…)` started from `data_dir`."""
    path = Path(data_dir).resolve() / "security.json"
    try:
        return json.loads(path.read_text())["json_engine"]["kafka"]
    except (OSError, ValueError, KeyError) as exc:
        raise LocalKafkaError(
            f"no SASL_SSL settings in {path} ({exc}): start the broker with "
            f"`json-engine kafka up --sasl-port PORT --data-dir {data_dir}`"
        ) from None


def _upsert_scram(cluster: Cluster) -> None:
    """Create (or reset) the user's SCRAM credential through the PLAINTEXT listener."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    upsert = UserScramCredentialUpsertion(SASL_USERNAME, info, _sasl_password(cluster).encode())
    try:
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)
    except Exception as exc:
        down(cluster)
        raise LocalKafkaError(f"could not create the SASL user {SASL_USERNAME}: {exc}") from None


def _wait_sasl_ready(cluster: Cluster) -> None:
    """Until a client with the settings of security.json gets metadata over SASL_SSL."""
    from confluent_kafka.admin import AdminClient

    from streams.config import KafkaConfig

    errors: list[str] = []
    settings = KafkaConfig(**_sasl_config(cluster)).client_config()
    admin = AdminClient({**settings, "log_level": 0, "error_cb": lambda e: errors.append(e.str())})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if len(admin.list_topics(timeout=2.0).brokers) >= cluster.nodes:
                return
        time.sleep(0.5)
    down(cluster)
    raise LocalKafkaError(
        f"Kafka's SASL_SSL listener on {cluster.sasl_bootstrap} did not accept the "
        f"credentials of {cluster.security_file} within {START_TIMEOUT_S:.0f} s; stopped it. "
        f"Last client error: {errors[-1] if errors else '(none)'}"
    )


def _cluster_id() -> str:
    """Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding."""
    import base64

    while True:  # like Kafka's own Uuid.randomUuid: never one that reads as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _wait_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if len(cluster.pids()) < cluster.nodes:
            dead = next(i for i in range(cluster.nodes) if not cluster.running(i))
            log = processes.tail(cluster.log_file(dead))
            down(cluster)
            raise LocalKafkaError(
                f"Kafka node {dead} on 127.0.0.1:{cluster.port + dead} exited during start-up. "
                f"Last lines of {cluster.log_file(dead)}:\n{log}"
            )
        if broker_count(cluster.bootstrap, 2.0) >= cluster.nodes:
            return
        time.sleep(0.5)
    log = processes.tail(cluster.log_file(0))
    down(cluster)
    raise LocalKafkaError(
        f"Kafka on {cluster.bootstrap} did not answer a metadata request within "
        f"{START_TIMEOUT_S:.0f} s; stopped it. Last lines of {cluster.log_file(0)}:\n{log}"
    )


def down(cluster: Cluster) -> list[int]:
    """Stop the processes this cluster recorded, by PID; wait until they exit.

    Every node is told at once: one after another, the last node of a cluster waited for a
    quorum of controllers that had gone before it (STOP_TIMEOUT_S, then SIGKILL)."""
    pids = [pid for i in range(cluster.nodes) if (pid := cluster.recorded_pid(i)) is not None]
    running = [pid for pid in pids if processes.alive(pid)]
    processes.stop(running, STOP_TIMEOUT_S)
    for i in range(cluster.nodes):
        cluster.pid_file(i).unlink(missing_ok=True)
    return running


def status(port: int = 9092, data_dir: Path | None = None, nodes: int = 1) -> tuple[bool, str]:
    cluster = Cluster(port, Path(data_dir or default_data_dir(port)).resolve(), nodes)
    pids = cluster.pids()
    if answers(cluster.bootstrap):
        owner = (
            f"started by json-engine, PID {', '.join(map(str, pids))}"
            if pids
            else ("not started from this data directory")
        )
        sasl = _configured_sasl_port(cluster) if pids else None
        if sasl is not None and cluster.security_file.exists():
            owner += f"; SASL_SSL on 127.0.0.1:{sasl}, client settings in {cluster.security_file}"
        return True, f"Kafka answers on {cluster.bootstrap} ({owner})"
    if pids:
        return False, f"Kafka process {pids} runs but does not answer on {cluster.bootstrap}"
    return False, f"no Kafka answers on {cluster.bootstrap}"
