"""json-engine's sink: real `json-engine worker` processes, validated, exactly-once part files.

Every repetition gets its own output directory, the workload's consumer group
(`<prefix>worker`, derived from the prefix) deleted and every other topic of the prefix made
anew beforehand (the aggregation's state and partials, dead letters, aggregated stats), so
the workers read the whole topic as a fresh deployment would; a restored aggregation state
would skip every record it already folded. Workers of one repetition share config and group.

Durable progress is the group's committed offsets on the workload topic (bench.measure.
CommittedOffsets): the worker commits them in the Kafka transaction of its checkpoint, with
the name, size and last offset of each open part file, so an offset is committed exactly when
the lines before it are durable. (Part file names no longer say it: in-progress files under
`<channel dir>/.inprogress/` are named by owner epoch and first offset only.) The run ends
once every event is committed, then waits for the files to be finished (roll_seconds), stops
the workers gracefully and checks, through sinks.reader, that the finished lines hold every
record exactly once.

Variants: `output="s3"` writes to a bucket of a local versitygw (streams/local/s3.py,
started for the repetition in its scratch directory, on the same disk as the filesystem
sink's files; not timed) instead of a directory: the S3 sink beside the filesystem sink
(issue 15); `fenced=False` runs the same path with `JSON_ENGINE_UNFENCED=1` (plain offset
commits and a non-transactional idempotent producer: what fencing costs); `shape` picks the
workload (bench.workload); `only_executions` turns the other channels' sinks off, so the
worker subscribes to one topic. With 2 workers the steady window opens only once both have
written (the group has settled: until the second joins, the first may hold every partition);
if one never writes, the run says so (`settled: false`) and the window opens at the first
output all the same; the share of lines each worker wrote is kept.
"""

from __future__ import annotations

import contextlib
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
    CommittedOffsets,
    Run,
    RunError,
    result,
    stop_all,
    wait_quiet,
    watch,
)
from bench.profile import Profiler
from bench.workload import HOT_SHARE, PARTITIONS, Workload
from sinks.reader import finished_files, iter_partition_lines
from sinks.s3.location import S3Location
from sinks.s3.store import S3Options, store_of
from streams.brokers import BrokerError
from streams.local import s3 as local_s3
from streams.topics import admin_client, create_topics, list_topics

METRIC = b'json_engine_events_written_total{channel="engine_execution"}'
BENCH_BUCKET = "json-engine-bench"
FINISH_WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OTHER_CHANNELS = ("comparison_result", "training_sample", "aggregated_stats", "dead_letter")


def worker_config(
    ctx: Context,
    base_path: Path,
    aggregation: bool,
    only_executions: bool = False,
    output: str | None = None,
    compression: str = "none",
) -> dict[str, Any]:
    """Sink-only unless `aggregation`: the comparison and training paths are off (their
    topics are empty anyway); small rolls so the finished files appear soon after the end.
    The other channels' sinks stay on as in the default config (their topics are empty, but
    the worker reads them), unless `only_executions`."""
    w = ctx.workload
    config: dict[str, Any] = {
        "json_engine": {
            "kafka": {
                "bootstrap_servers": w.bootstrap,
                "topic_prefix": w.prefix,
                "partitions": PARTITIONS,
            },
            "output": {"base_path": output or str(base_path)},
            "channels": {
                "engine_execution": {
                    "buffer_size": 10_000,
                    "auto_flush_seconds": 0.5,
                    "roll_seconds": 1.0,
                    "compression": compression,
                }
            },
            "aggregation": {"enabled": aggregation},
            "training": {"enabled": False},
            "models": {"path": str(base_path / "models")},
        }
    }
    if only_executions:
        channels = config["json_engine"]["channels"]
        channels.update({channel: {"enabled": False} for channel in OTHER_CHANNELS})
    return config


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


def fresh_topics(workload: Workload, timeout: float = 60.0) -> None:
    """Every topic of the prefix but the workload's deleted and created empty again (not
    timed): the aggregation restores no state and no partial of an earlier repetition."""
    cfg = workload.config()
    doomed = [t.name for t in list_topics(cfg) if t.name != workload.topic]
    if doomed:
        admin = admin_client(cfg)
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(30)
    deadline = time.monotonic() + timeout
    while True:
        left = {t.name for t in list_topics(cfg)} & set(doomed)
        if not left:
            try:
                create_topics(cfg)
                return
            except BrokerError as exc:  # still marked for deletion on the broker
                if time.monotonic() > deadline:
                    raise RunError(f"cannot create the topics of {workload.prefix}: {exc}") from exc
        elif time.monotonic() > deadline:
            raise RunError(f"topics {sorted(left)} not deleted after {timeout:.0f} s")
        time.sleep(0.2)


def _written(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
            for line in r.read().splitlines():
                if line.startswith(METRIC):
                    return float(line.rsplit(b" ", 1)[1])
    except OSError:
        pass
    return 0.0


def check_files(directory: Path, workload: Workload) -> None:
    """The finished lines hold every record of the workload exactly once: each partition's
    count as published, and no line twice (every event has its own trace_id). Read through
    sinks.reader, so whatever layout the sink writes (flat, time buckets) is checked."""
    counts = [0] * len(workload.partition_counts)
    seen: set[int] = set()
    for partition, line in iter_partition_lines(directory):
        counts[partition] += 1
        seen.add(hash(line))
    if tuple(counts) != workload.partition_counts:
        raise RunError(
            f"finished lines per partition {counts}, published {list(workload.partition_counts)}"
        )
    if len(seen) != workload.events:
        raise RunError(f"{workload.events - len(seen)} finished lines are duplicates")


def _shape_text(shape: str) -> str:
    return {
        "keyed": "",
        "plain": ", uncompressed",
        "spread": ", keys spread over all partitions",
        "hot": f", hot engine ({HOT_SHARE:.0%} unkeyed)",
    }[shape]


class JsonEngineSink(Contender):
    """`workers` processes of one group on the `shape` workload; sink-only unless
    `aggregation`; fenced (Kafka transactions) unless `fenced=False`; every channel's sink
    on (the default config) unless `only_executions`."""

    def __init__(
        self,
        workers: int = 1,
        aggregation: bool = False,
        fenced: bool = True,
        shape: str = "keyed",
        only_executions: bool = False,
        output: str = "files",
        compression: str = "none",
    ):
        self.output = output
        self.compression = compression  # of the executions' files (issue 27)
        self.workers = workers
        self.aggregation = aggregation
        self.fenced = fenced
        self.shape = shape
        self.only_executions = only_executions
        self.name = (
            f"json-engine-{workers}w"
            + ("" if fenced else "-unfenced")
            + ("" if shape == "keyed" else f"-{shape}")
            + ("-exec" if only_executions else "")
            + ("-agg" if aggregation else "")
            + ("-s3" if output == "s3" else "")
            + ("" if compression == "none" else f"-{compression}")
        )
        plural = "s" if workers > 1 else ""
        self.label = (
            f"json-engine, {workers} worker{plural}"
            + ("" if fenced else ", unfenced")
            + _shape_text(shape)
            + (", executions channel only" if only_executions else "")
            + (", aggregation on" if aggregation else "")
            + (", to S3 (versitygw)" if output == "s3" else "")
            + ("" if compression == "none" else f", {compression} files")
        )
        commit = (
            "plain offset commit + idempotent producer (JSON_ENGINE_UNFENCED=1)"
            if not fenced
            else "one Kafka transaction per checkpoint (offsets + file checkpoints, KIP-447)"
        )
        channels = "the executions channel only" if only_executions else "every channel's sink"
        self.what = (
            f"`json-engine worker` process(es) of one group, {self.shape} workload, "
            f"{'aggregation on' if aggregation else 'sink-only config'}, {channels}: one "
            "librdkafka consumer in a thread, consume(10000), Validator per event, "
            + (
                "per-partition part objects on a local S3 server (spool, one conditional PUT "
                "per partition per checkpoint, one PUT per finished object), "
                if output == "s3"
                else "per-partition part files, write + fsync per batch, "
            )
            + f"{commit} (buffer_size 10000, auto_flush 0.5 s, roll 1 s); progress = the "
            "group's committed offsets"
            + (
                ""
                if compression == "none"
                else f"; each checkpoint's append one {compression} frame at the codec's "
                "default level, the compression ratio kept (published bytes / file bytes)"
            )
        )
        self.smoke = self.name == "json-engine-1w"

    def run(self, ctx: Context, rep: int) -> Run:
        if self.output != "s3":
            return self._run(ctx, rep, None)
        server = local_s3.up(free_port(), ctx.run_dir(self.name, rep) / "s3")  # not timed
        try:
            server.create_bucket(BENCH_BUCKET)
            return self._run(ctx, rep, server)
        finally:
            local_s3.down(server)  # on every path: a failed repetition leaves no server

    def _run(self, ctx: Context, rep: int, server: local_s3.LocalS3 | None) -> Run:
        w = ctx.workload
        run_dir = ctx.run_dir(self.name, rep)
        base = run_dir / "output"
        config_file = run_dir / "json-engine.yaml"
        s3_env = server.env() if server is not None else {}
        output = f"s3://{BENCH_BUCKET}/bench" if server is not None else None
        config = worker_config(
            ctx, base, self.aggregation, self.only_executions, output, self.compression
        )
        config_file.write_text(yaml.safe_dump(config))
        delete_group(w.bootstrap, w.group)
        fresh_topics(w)
        if ctx.quiet_start:
            wait_quiet()
        ports = [free_port() for _ in range(self.workers)]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("JSON_ENGINE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
        }
        if not self.fenced:
            env["JSON_ENGINE_UNFENCED"] = "1"
        children: list[Child] = []
        profilers: list[Profiler] = []
        committed = CommittedOffsets(w.bootstrap, w.group, w.topic, PARTITIONS)
        directory: Path | S3Location = base / "events"
        if output is not None:
            env.update(s3_env)
            directory = S3Location.parse(output).with_options(s3_options(s3_env)) / "events"
        shares: list[float] = []
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

            def progress() -> float:
                """Committed events; with --profile, py-spy attaches at the first output, so
                that the profile is of the steady state, not of the start-up."""
                n = committed()
                if n > 0 and ctx.profile_dir is not None and not profilers:
                    for i, child in enumerate(children):
                        out = ctx.profile_dir / f"{self.name}-r{rep}-w{i}"
                        profilers.append(Profiler(child.pid, out))
                return n

            obs = watch(children, progress, w.events, ctx.timeout_s, ready=self._all_written(ports))
            for profiler in profilers:
                profiler.stop()
            deadline = time.monotonic() + FINISH_WAIT_S
            while _finished_offsets(directory) < w.events and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)  # the metrics are refreshed every 0.2 s
            shares = [_written(p) for p in ports]
        finally:
            committed.close()
            for profiler in profilers:
                profiler.stop()
            stop_all(children)
        codes = [c.returncode for c in children]
        if any(codes):
            raise RunError(f"worker exit codes {codes}:\n{children[0].tail()}")
        check_files(directory, w)
        objects = _objects_per_partition(directory) if server is not None else {}
        run = result(obs, w.events, children)
        if self.compression != "none":
            stored = _finished_bytes(directory)
            run.extra["file_bytes"] = stored
            run.extra["compression_ratio"] = round(w.total_bytes / max(stored, 1), 2)
        if objects:
            run.extra["objects_per_partition"] = objects
        run.extra["workers"] = self.workers
        if self.workers > 1 and sum(shares):
            run.extra["written_share"] = [round(s / sum(shares), 3) for s in shares]
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


def _finished_offsets(directory: Path | S3Location) -> int:
    """Offsets the finished part files cover: the workload's events once every line is
    finished (it has no invalid record), compressed or not."""
    return sum(part.last - part.first + 1 for part in finished_files(directory))


def _finished_bytes(directory: Path | S3Location) -> int:
    """Bytes in finished part files (what readers see): the workload's `total_bytes` once
    every line is finished, since every line is the value as published plus a newline
    (less when compressed)."""
    if isinstance(directory, S3Location):
        store = store_of(directory)
        names = {p.path.key for p in finished_files(directory)}
        return sum(size for key, size in store.list(directory) if key in names)
    total = 0
    for part in finished_files(directory):
        with contextlib.suppress(FileNotFoundError):
            total += part.path.stat().st_size
    return total


def s3_options(env: dict[str, str]) -> S3Options:
    """Options to reach the bench's own S3 server from this process (its env is the
    workers')."""
    for name, value in env.items():  # boto3 reads the credentials from the environment
        os.environ.setdefault(name, value)
    return S3Options(endpoint_url=env["AWS_ENDPOINT_URL"], region=env["AWS_REGION"])


def _objects_per_partition(directory: S3Location) -> dict[int, int]:
    """Visible objects of each partition at the end of a run."""
    counts: dict[int, int] = {}
    for part in finished_files(directory):
        counts[part.partition] = counts.get(part.partition, 0) + 1
    return counts
