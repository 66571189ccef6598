"""json-engine's sink: real `json-engine worker` processes, validated, exactly-once part files.

Every repetition gets its own output directory and the workload's consumer group
(`<prefix>worker`, derived from the prefix) deleted beforehand, so the workers read the
whole topic as a fresh group would. Workers of one repetition share config and group.
Durable progress is read from the part-file names (the name is the checkpoint: the offset it
carries is fsynced); the run ends once every event is durable, then waits for the files to
be finished (roll_seconds) and stops the workers gracefully; the lines are counted after.

With 2 workers the steady window opens only once both have written (the group has settled:
until the second joins, the first may hold every partition).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from bench.contenders import Contender, Context
from bench.measure import (
    Child,
    Run,
    RunError,
    finished_events,
    part_file_progress,
    result,
    stop_all,
    watch,
)
from bench.profile import Profiler
from sinks.reader import iter_lines

METRIC = b'json_engine_events_written_total{channel="engine_execution"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_config(ctx: Context, base_path: Path, aggregation: bool) -> dict[str, Any]:
    """Sink-only unless `aggregation`: the comparison and training paths are off (their
    topics are empty anyway); small rolls so the finished files appear soon after the end."""
    w = ctx.workload
    return {
        "json_engine": {
            "kafka": {
                "bootstrap_servers": w.bootstrap,
                "topic_prefix": w.prefix,
                "partitions": 6,
            },
            "output": {"base_path": str(base_path)},
            "channels": {
                "engine_execution": {
                    "buffer_size": 10_000,
                    "auto_flush_seconds": 0.5,
                    "roll_seconds": 1.0,
                }
            },
            "aggregation": {"enabled": aggregation},
            "training": {"enabled": False},
            "models": {"path": str(base_path / "models")},
        }
    }


def delete_group(bootstrap: str, group: str, timeout: float = 30.0) -> None:
    """Forget the group's committed offsets (retrying while its last members leave)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        future = admin.delete_consumer_groups([group], request_timeout=10)[group]
        try:
            future.result(15)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return
            if time.monotonic() > deadline:
                raise RunError(f"cannot delete consumer group {group}: {err}") from exc
            time.sleep(0.5)


def _written(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
            for line in r.read().splitlines():
                if line.startswith(METRIC):
                    return float(line.rsplit(b" ", 1)[1])
    except OSError:
        pass
    return 0.0


class JsonEngineSink(Contender):
    """`workers` processes of one group; the aggregation flag is the hook for issue 7's
    "worker with aggregation on" line (not registered until the aggregator exists)."""

    smoke = True

    def __init__(self, workers: int = 1, aggregation: bool = False):
        self.workers = workers
        self.aggregation = aggregation
        suffix = "-agg" if aggregation else ""
        self.name = f"json-engine-{workers}w{suffix}"
        plural = "s" if workers > 1 else ""
        agg = ", aggregation on" if aggregation else ""
        self.label = f"json-engine sink, {workers} worker{plural}{agg}"
        self.what = (
            "`json-engine worker` process(es) of one group, sink-only config: batches from "
            "Faust's consumer, Validator per event, per-partition part files, write + fsync + "
            "rename per batch (buffer_size 10000, auto_flush 0.5 s, roll 1 s), offsets from files"
        )
        self.smoke = workers == 1 and not aggregation

    def run(self, ctx: Context, rep: int) -> Run:
        w = ctx.workload
        run_dir = ctx.run_dir(self.name, rep)
        base = run_dir / "output"
        config_file = run_dir / "json-engine.yaml"
        config_file.write_text(yaml.safe_dump(worker_config(ctx, base, self.aggregation)))
        delete_group(w.bootstrap, f"{w.prefix}worker")
        ports = [free_port() for _ in range(self.workers)]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("JSON_ENGINE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
        }
        children: list[Child] = []
        profilers: list[Profiler] = []
        try:
            for i, port in enumerate(ports):
                children.append(
                    Child(
                        [
                            sys.executable,
                            "-m",
                            "streams.cli",
                            "worker",
                            "--config",
                            str(config_file),
                            "-l",
                            "warning",
                            "--log-format",
                            "text",
                        ],
                        run_dir / f"worker-{i}.log",
                        env={**env, "JSON_ENGINE__METRICS__PORT": str(port)},
                        cwd=run_dir,
                    )
                )
                if ctx.profile_dir is not None:
                    out = ctx.profile_dir / f"{self.name}-r{rep}-w{i}.svg"
                    profilers.append(Profiler(children[-1].pid, out))
            directory = base / "events"
            obs = watch(
                children,
                part_file_progress(directory),
                w.events,
                ctx.timeout_s,
                ready=self._all_written(ports),
            )
            deadline = time.monotonic() + 30
            while finished_events(directory) < w.events and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            for profiler in profilers:
                profiler.stop()
            stop_all(children)
        codes = [c.returncode for c in children]
        if any(codes):
            raise RunError(f"worker exit codes {codes}:\n{children[0].tail()}")
        lines = sum(1 for _ in iter_lines(base / "events"))
        if lines != w.events:
            raise RunError(f"{lines} lines in finished files, expected {w.events}")
        run = result(obs, w.events, children)
        run.extra["workers"] = self.workers
        shutil.rmtree(base, ignore_errors=True)
        return run

    def _all_written(self, ports: list[int]) -> Any:
        """With several workers: true once each has made some lines durable (polled at most
        every 0.1 s; the metrics are refreshed every tick)."""
        if len(ports) == 1:
            return None
        state = {"at": 0.0, "ok": False}

        def ready() -> bool:
            now = time.monotonic()
            if not state["ok"] and now - state["at"] >= 0.1:
                state["at"] = now
                state["ok"] = all(_written(p) > 0 for p in ports)
            return bool(state["ok"])

        return ready
