"""Kafka's own consumer performance tool (`kafka-consumer-perf-test`'s class): the ceiling.

Run from the jars the local broker already uses, with the heap its shell script gives it,
polls of 10000 records like every other contender and the worker's 4 MiB fetch size.
It only counts records, writes nothing. Its own report gives the steady rate
(`fetch.nMsg.sec`: messages over the time after the group join) and the start of fetching
(start.time + rebalance.time.ms); CPU and peak RSS are those of the whole JVM, start-up
included, since the tool prints no instant to split them at.
"""

from __future__ import annotations

import time
from datetime import datetime

from bench.contenders import Contender, Context
from bench.measure import Child, Run, RunError
from streams.local import kafka as local_kafka

CLASS = "org.apache.kafka.tools.ConsumerPerformance"
BATCH = 10_000
DATE_FORMAT = "%Y-%m-%d %H:%M:%S:%f"
JVM_OPTS = (
    "-Xmx512M",  # as kafka-consumer-perf-test.sh sets it
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


def java_command(classpath: str, *args: str, jvm_opts: tuple[str, ...] = JVM_OPTS) -> list[str]:
    return ["java", *jvm_opts, "-cp", classpath, *args]


class ConsumerPerf(Contender):
    name = "consumer-perf"
    label = "Kafka ConsumerPerformance (ceiling)"
    what = "Kafka's Java consumer counting records (kafka-consumer-perf-test); writes nothing"
    smoke = True

    def prepare(self, downloads: bool) -> None:
        libs = local_kafka.cache_dir() / "libs"
        if not (libs / ".complete").exists():
            # Only when the broker came from elsewhere; the jars are the broker's own.
            if not downloads:
                raise RuntimeError(f"Kafka's jars are not in {libs} (no download in --smoke)")
            local_kafka.provision()

    def run(self, ctx: Context, rep: int) -> Run:
        w = ctx.workload
        run_dir = ctx.run_dir(self.name, rep)
        libs = local_kafka.cache_dir() / "libs"
        consumer_config = run_dir / "consumer.properties"
        consumer_config.write_text(f"max.poll.records={BATCH}\n")  # everyone's batch size
        wall_spawn = time.time()
        child = Child(
            java_command(
                f"{libs}/*",
                "-Dlog4j2.level=WARN",
                CLASS,
                "--bootstrap-server",
                w.bootstrap,
                "--topic",
                w.topic,
                "--messages",
                str(w.events),
                "--group",
                ctx.group(self.name, rep),
                "--timeout",
                "60000",
                "--fetch-size",
                str(4 * 1024 * 1024),  # the worker's max fetch per partition
                "--consumer.config",
                str(consumer_config),
            ),
            run_dir / "log.txt",
        )
        try:
            code = child.wait(ctx.timeout_s)
        finally:
            child.stop(5)  # a no-op once it exited by itself
        if code is None:
            raise RunError(f"timeout after {ctx.timeout_s:.0f} s:\n{child.tail()}")
        if code != 0:
            raise RunError(f"ConsumerPerformance exited {code}:\n{child.tail()}")
        stats = _parse(child.log_path.read_text(errors="replace"))
        if stats["messages"] < w.events:
            raise RunError(f"consumed {stats['messages']} of {w.events}:\n{child.tail()}")
        fetching_at = stats["start"] + stats["rebalance_ms"] / 1000
        return Run(
            events=w.events,
            rate=stats["fetch_rate"],
            startup_s=max(0.0, fetching_at - wall_spawn),
            cpu_s_per_m=(child.rusage_cpu or 0.0) / w.events * 1e6,
            rss_mb=child.peak_rss_mb,
            extra={"cpu_includes_startup": True, "whole_run_rate": stats["rate"]},
        )


def _parse(text: str) -> dict[str, float]:
    """The tool's last CSV line: start, end, MB, MB/s, messages, msg/s, rebalance ms,
    fetch ms, fetch MB/s, fetch msg/s."""
    for line in reversed(text.splitlines()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 10 and parts[4].isdigit():
            return {
                "start": datetime.strptime(parts[0], DATE_FORMAT).timestamp(),
                "messages": int(parts[4]),
                "rate": float(parts[5]),
                "rebalance_ms": float(parts[6]),
                "fetch_rate": float(parts[9]),
            }
    raise RunError(f"no result line in ConsumerPerformance's output:\n{text[-2000:]}")
