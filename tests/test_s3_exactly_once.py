"""Exactly once on S3 under SIGKILL at every fault point (at random instants, and the zombie:
tests/test_exactly_once.py and tests/test_zombie.py, with `output: s3`), and an S3
server that stops or refuses writes: the worker waits with a clear error, never commits past
what is durable, and completes the job once the server is back.

A restarted worker starts with an empty spool (a new process, as on another machine), so
every committed file it finishes comes from the hidden part objects alone. Every visible
object is whole at every instant and never rewritten (PartialObjectWatcher).
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import zstandard

from sinks.files.names import FINISHED
from sinks.formats.compression import decompress, suffix_of
from sinks.s3.location import S3Location
from streams import events
from streams.local import s3 as local_s3
from streams.topics import create_topics
from tests.conftest import ConfigFactory, S3Service
from tests.workers import WorkerProcess, assert_once, produce, wait_for_lines

FAST = {
    "engine_execution": {
        "buffer_size": 500,
        "auto_flush_seconds": 0.2,
        "roll_bytes": 400_000,
        "roll_seconds": 1.0,
    }
}


def objects(client: object, base: str) -> dict[str, tuple[str, int]]:
    """key below the base → (ETag, size) of every object."""
    where = S3Location.parse(base)
    found = {}
    paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    for page in paginator.paginate(Bucket=where.bucket, Prefix=where.prefix):
        for item in page.get("Contents", ()):
            found[item["Key"][len(where.prefix) :]] = (item["ETag"], item["Size"])
    return found


def visible(keys: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """The finished objects, compressed (`.jsonl.gz`, `.jsonl.zst`) or not."""
    return {
        k: v
        for k, v in keys.items()
        if FINISHED.match(k.rsplit("/", 1)[-1]) and not any(s.startswith(".") for s in k.split("/"))
    }


class PartialObjectWatcher(threading.Thread):
    """Lists and reads every visible object over and over: any that is not whole JSON lines
    (decompressed whole, if compressed), or that changes after it was first seen, is a
    failure."""

    def __init__(self, s3: S3Service, base: str):
        super().__init__(daemon=True)
        self.client = s3.client()
        self.base = base
        self.where = S3Location.parse(base)
        self.stop = threading.Event()
        self.bad: list[str] = []
        self.seen: dict[str, tuple[str, int]] = {}
        self.reads = 0
        self.names: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # the server may be down on purpose
                for key, identity in visible(objects(self.client, self.base)).items():
                    self.names.add(key.rsplit("/", 1)[-1])
                    first = self.seen.setdefault(key, identity)
                    if first != identity:
                        self.bad.append(f"{key} rewritten: {first} → {identity}")
                    if key in self.seen and self.reads % 7:
                        continue  # read each object now and then, list all the time
                    body = self.client.get_object(
                        Bucket=self.where.bucket, Key=self.where.prefix + key
                    )["Body"].read()
                    try:  # every gzip member, every zstd frame
                        body = decompress(body, suffix_of(key))
                    except (OSError, EOFError, zstandard.ZstdError) as exc:
                        self.bad.append(f"{key}: does not decompress: {exc}")
                        continue
                    self.reads += 1
                    if not body.endswith(b"\n"):
                        self.bad.append(f"{key}: no final newline")
                    for line in body.splitlines():
                        try:
                            orjson.loads(line)
                        except orjson.JSONDecodeError:
                            self.bad.append(f"{key}: {line[:60]!r}")
            time.sleep(0.05)


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def executions(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [events.engine_execution(rng, f"e{i % 8}", now + i) for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["before_write:kill:3", "after_write:kill:3", "after_commit:kill:3", "after_claim:kill:1"],
)
def test_sigkill_at_each_fault_point_on_s3(
    make_config: ConfigFactory, tmp_path: Path, s3_base: str, s3_service: S3Service, fault: str
) -> None:
    path, cfg = make_config({"output": {"base_path": s3_base}, "channels": FAST})
    create_topics(cfg)
    execs = executions(6000, seed=len(fault))
    worker = WorkerProcess(path, tmp_path, "faulty", env={"JSON_ENGINE_FAULT": fault})
    worker.start(wait_ready=False)
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[:3000]])
    assert worker.wait(120) == -9, worker.tail()  # killed at the fault point
    before = visible(objects(s3_service.client(), s3_base))
    hidden = [k for k in objects(s3_service.client(), s3_base) if "/.inprogress/" in f"/{k}"]
    if fault.startswith(("after_write", "after_commit")):
        assert hidden, "the killed worker left no part objects"
    again = WorkerProcess(path, tmp_path, "after").start()  # a new process: an empty spool
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[3000:]])
    wait_for_lines(cfg, "engine_execution", len(execs), timeout=120)
    assert again.terminate() == 0
    assert_once(cfg, execs)
    after = objects(s3_service.client(), s3_base)
    for key, identity in before.items():
        assert after.get(key) == identity, f"{key} was rewritten or removed"
    left = [k for k in after if any(s.startswith(".") for s in k.split("/"))]
    assert left == [], "hidden objects left after a graceful stop"


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["stopped", "read-only"])
def test_an_s3_outage_pauses_the_worker_and_commits_nothing_past_it(
    make_config: ConfigFactory, tmp_path: Path, own_s3: local_s3.LocalS3, outage: str
) -> None:
    base = f"s3://json-engine-outage/{outage}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path, cfg = make_config(
        {"output": {"base_path": base}, "channels": FAST, "metrics": {"port": port}}
    )
    create_topics(cfg)
    execs = executions(6000, seed=9)
    worker = WorkerProcess(path, tmp_path).start()
    try:
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[:2000]])
        wait_for_lines(cfg, "engine_execution", 2000, timeout=60)
        mount = own_s3.root
        if outage == "stopped":
            local_s3.down(own_s3)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[2000:4000]])
        time.sleep(12)  # several checkpoints and retries while it is out
        assert worker.alive(), worker.tail()
        assert _status(port, "/readyz") == 503 and _status(port, "/livez") == 200  # waiting
        log = worker.log()
        assert b"checkpoint failed" in log or b"output unavailable" in log, worker.tail()
        if outage == "stopped":
            assert own_s3.endpoint.encode() in log  # the error says which server
            local_s3.up(own_s3.port, own_s3.data_dir)
        else:
            assert b"writing" in log
            subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[4000:]])
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=120)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    assert_once(cfg, execs)
