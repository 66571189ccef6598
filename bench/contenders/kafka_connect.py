"""Kafka Connect's FileStreamSink, standalone mode: what a Kafka user reaches for first.

connect-runtime and connect-file come from Maven Central (bench.maven); the worker runs with
the heap connect-standalone.sh gives it, StringConverter values (the line is the value as
published), ByteArrayConverter keys, and the same 10000-record polls as everyone else. The
connector writes each record with a println (no fsync; it flushes on offset commits), so
progress is the file's size and the run ends when every line is in the file.
"""

from __future__ import annotations

from pathlib import Path

from bench.contenders import Contender, Context
from bench.contenders.consumer_perf import JVM_OPTS, java_command
from bench.contenders.json_engine import free_port
from bench.maven import resolve
from bench.measure import Child, Run, RunError, count_lines, file_progress, result, watch
from streams.local.kafka import KAFKA_VERSION, LOG4J_VERSION

ARTIFACTS = [
    f"org.apache.kafka:connect-runtime:{KAFKA_VERSION}",
    f"org.apache.kafka:connect-file:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j2-impl:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
]
CLASS = "org.apache.kafka.connect.cli.ConnectStandalone"
HEAP = ("-Xms256M", "-Xmx2G")  # as connect-standalone.sh sets it
LOG4J2 = """Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
"""


def _properties(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


class KafkaConnectFile(Contender):
    name = "kafka-connect"
    label = "Kafka Connect FileStreamSink"
    what = (
        "Connect standalone worker, FileStreamSinkConnector (1 task), StringConverter; "
        "println per record, flush on offset commit, no fsync"
    )

    def __init__(self) -> None:
        self.libs: Path | None = None

    def prepare(self, downloads: bool) -> None:
        self.libs = resolve(f"connect-{KAFKA_VERSION}", ARTIFACTS)

    def run(self, ctx: Context, rep: int) -> Run:
        assert self.libs is not None, "prepare() first"
        w = ctx.workload
        run_dir = ctx.run_dir(self.name, rep)
        out = run_dir / "out.jsonl"
        worker = run_dir / "worker.properties"
        connector = run_dir / "file-sink.properties"
        log4j = run_dir / "log4j2.yaml"
        log4j.write_text(LOG4J2)
        worker.write_text(
            _properties(
                {
                    "bootstrap.servers": w.bootstrap,
                    "key.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
                    "value.converter": "org.apache.kafka.connect.storage.StringConverter",
                    "offset.storage.file.filename": str(run_dir / "connect.offsets"),
                    "offset.flush.interval.ms": "1000",
                    "listeners": f"http://127.0.0.1:{free_port()}",
                    "plugin.discovery": "service_load",
                    "consumer.auto.offset.reset": "earliest",
                    "consumer.max.poll.records": "10000",
                }
            )
        )
        # The sink task's consumer group is connect-<name>: a fresh name is a fresh group.
        group = ctx.group(self.name, rep).replace(".", "-")
        connector.write_text(
            _properties(
                {
                    "name": group,
                    "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                    "tasks.max": "1",
                    "topics": w.topic,
                    "file": str(out),
                }
            )
        )
        child = Child(
            java_command(
                f"{self.libs}/*",
                f"-Dlog4j2.configurationFile={log4j}",
                CLASS,
                str(worker),
                str(connector),
                jvm_opts=(*HEAP, *JVM_OPTS[1:]),
            ),
            run_dir / "log.txt",
            cwd=run_dir,
        )
        try:
            obs = watch(
                [child], file_progress(out, w.total_bytes, w.events), w.events, ctx.timeout_s
            )
        finally:
            child.stop()
        lines = count_lines(out)
        if lines != w.events:
            raise RunError(f"{out} has {lines} lines, expected {w.events}:\n{child.tail()}")
        out.unlink()
        return result(obs, w.events, [child])
