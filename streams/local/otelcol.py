"""A real OpenTelemetry Collector on 127.0.0.1 for the tests: OTLP/HTTP in, Kafka out.

The binary is the Collector's own code, nothing of ours in between: `otelcol` v0.165.0 (with
the v1.71.0 stable modules), its OTLP receiver and contrib's `kafka` exporter v0.165.1, put
together by the small `main.go` in `otelcol-go/` beside this file, as the Collector builder
(OCB) would generate it. `go.mod` and `go.sum` there pin every module. It is built once with
`go build` through the Go module proxy into the project's cache, in a folder named by the
version and a hash of those three files (so that a change of them builds anew), as versitygw
is (streams/local/s3.py); a start then only launches the binary with a YAML config, and a
stop ends the PID it recorded. `JSON_ENGINE_OTELCOL` names a binary to use instead.

    python -m streams.local.otelcol provision   # builds once; prints the binary's path
    python -m streams.local.otelcol up --port 19400 --kafka 127.0.0.1:9092 --topic otlp_spans
    python -m streams.local.otelcol down --port 19400
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.local import processes

VERSION = "v0.165.0"  # otelcol and the OTLP receiver; contrib's kafka exporter is v0.165.1
SOURCES = Path(__file__).with_name("otelcol-go")
SOURCE_FILES = ("main.go", "go.mod", "go.sum")
READY = b"Everything is ready"
DEFAULT_PORT = 4318
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
BUILD_TIMEOUT_S = 1200.0


class LocalCollectorError(Exception):
    """A Collector that cannot be built, started or stopped; one paragraph."""


def sources_digest() -> str:
    """A hash of main.go, go.mod and go.sum: the build's identity beside the version."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (SOURCES / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    return processes.cache_dir(f"otelcol-{VERSION}-{sources_digest()}")


def default_data_dir(port: int) -> Path:
    return processes.default_data_dir(f"otelcol-{port}")


def provision() -> Path:
    """The Collector binary: `$JSON_ENGINE_OTELCOL`, else the cached build, else built now
    (about three minutes from nothing, seconds with Go's build cache warm) into a temporary
    folder that is moved into place only when done."""
    given = os.environ.get("JSON_ENGINE_OTELCOL")
    if given:
        if not os.access(given, os.X_OK):
            raise LocalCollectorError(f"JSON_ENGINE_OTELCOL={given} is not an executable file")
        return Path(given)
    target = cache_dir() / "otelcol"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise LocalCollectorError(
            "`go` is not on PATH: the local OpenTelemetry Collector is built with `go build` "
            f"from {SOURCES}. Install Go 1.26+ (Debian: apt-get install golang), or name a "
            "Collector binary with the otlp receiver and kafka exporter in JSON_ENGINE_OTELCOL."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        log = work / "go-build.log"
        print(f"local_otelcol: building the Collector {VERSION} with go (once)…", file=sys.stderr)
        with log.open("wb") as out:
            try:
                rc = subprocess.call(
                    [go, "build", "-trimpath", "-buildvcs=false", "-o", str(work / "otelcol")],
                    cwd=SOURCES,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "CGO_ENABLED": "0"},
                    timeout=BUILD_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0 or not (work / "otelcol").exists():
            raise LocalCollectorError(
                f"could not build the Collector {VERSION} (go build exit {rc}); is the Go "
                f"module proxy reachable? Last lines of its log:\n{processes.tail(log)}"
            )
        os.replace(work / "otelcol", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def kafka_config(
    port: int,
    brokers: str,
    topic: str,
    encoding: str = "otlp_proto",
    partition_traces_by_id: bool = True,
) -> dict[str, Any]:
    """A Collector config that works with json-engine: OTLP/HTTP on 127.0.0.1:`port` (no
    gRPC), traces to `topic` in `encoding` (`otlp_proto` or `otlp_json`), no topic created
    by the exporter (a broker default of one partition would hide a missing topic), and no
    telemetry port of the Collector's own (its default :8888 would collide)."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {
            "kafka": {
                "brokers": brokers.split(","),
                "traces": {"topic": topic, "encoding": encoding},
                "partition_traces_by_id": partition_traces_by_id,
                "producer": {"allow_auto_topic_creation": False},
            }
        },
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}},
            "telemetry": {"metrics": {"level": "none"}},
        },
    }


@dataclass(frozen=True)
class LocalCollector:
    port: int
    data_dir: Path

    @property
    def traces_endpoint(self) -> str:
        """Where an OTLP/HTTP exporter sends spans."""
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "otelcol.yaml"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "otelcol.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "otelcol.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if processes.alive(pid) else None

    def log(self) -> bytes:
        try:
            return self.log_file.read_bytes()
        except OSError:
            return b""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def up(config: dict[str, Any], port: int, data_dir: Path | None = None) -> LocalCollector:
    """Start a Collector with `config` (its OTLP/HTTP receiver on `port`); return once it
    says it is ready and the port answers. One Collector per data dir."""
    collector = LocalCollector(port, Path(data_dir or default_data_dir(port)).resolve())
    if collector.pid() is not None:
        down(collector)
    if processes.port_taken(port):
        raise LocalCollectorError(
            f"cannot start the Collector on 127.0.0.1:{port}: the port is taken by another "
            "process. Choose another port, or stop what listens there."
        )
    binary = provision()
    collector.data_dir.mkdir(parents=True, exist_ok=True)
    collector.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    collector.log_file.unlink(missing_ok=True)
    with collector.log_file.open("ab") as log:
        proc = subprocess.Popen(
            [str(binary), "--config", f"file:{collector.config_file}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    collector.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (READY in collector.log() and listening(port)):
        if proc.poll() is not None or time.monotonic() > deadline:
            down(collector)
            raise LocalCollectorError(
                f"the Collector was not ready on 127.0.0.1:{port} within "
                f"{START_TIMEOUT_S:.0f}s (exit {proc.poll()}). Last lines of "
                f"{collector.log_file}:\n{processes.tail(collector.log_file)}"
            )
        time.sleep(0.1)
    return collector


def down(collector: LocalCollector) -> int | None:
    """Stop the Collector by its recorded PID (SIGTERM: it drains its queue; then SIGKILL);
    return the PID, if any."""
    pid = collector.pid()
    if pid is None:
        collector.pid_file.unlink(missing_ok=True)
        return None
    processes.stop([pid], STOP_TIMEOUT_S)
    collector.pid_file.unlink(missing_ok=True)
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.local.otelcol", description=__doc__)
    parser.add_argument("action", choices=["provision", "up", "down"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="OTLP/HTTP receiver")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="bootstrap servers (up)")
    parser.add_argument("--topic", default="otlp_spans", help="(up)")
    parser.add_argument("--encoding", default="otlp_proto", choices=["otlp_proto", "otlp_json"])
    parser.add_argument(
        "--no-partition-by-trace-id", action="store_true", help="unkeyed records (up)"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "provision":
            print(provision())
        elif args.action == "up":
            config = kafka_config(
                args.port, args.kafka, args.topic, args.encoding, not args.no_partition_by_trace_id
            )
            print(up(config, args.port, args.data_dir).traces_endpoint)
        else:
            collector = LocalCollector(
                args.port, Path(args.data_dir or default_data_dir(args.port)).resolve()
            )
            pid = down(collector)
            print(f"stopped PID {pid}" if pid else "not running")
    except LocalCollectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
