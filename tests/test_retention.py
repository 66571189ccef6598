"""Retention and recovery never fight (issue 23).

- Retention spares every finished file a committed checkpoint still names (its writer
  finished it after the commit; until the next commit a new owner's recovery expects it), on
  files and on S3, whoever owns the partition.
- A recovery tolerates a committed file that is gone with its finished copy when its bucket
  is past retention (retention took it), and fails anywhere else (that would be lost data).
- Several workers running retention on one shared directory at once, and an object store
  that refuses or is down while retention lists and deletes, never stop a worker.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from sinks.files import retention
from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import IN_PROGRESS_DIR, Checkpoint, finished_name, in_progress_name
from sinks.files.part_files import PartitionWriter
from sinks.files.retention import delete_before as delete_files_before
from sinks.reader import channel_dir, finished_files
from sinks.s3.location import S3Location
from sinks.s3.part_objects import S3PartitionWriter
from sinks.s3.store import store_of
from streams import events
from streams.config import JsonEngineConfig
from streams.local import s3 as local_s3
from streams.topics import create_topics
from streams.worker.retention import delete_before
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, assert_once, produce

DAY_MS = 24 * HOUR_MS
NOW = int(time.time() * 1000)
OLD = (NOW - 3 * DAY_MS) // HOUR_MS * HOUR_MS  # an hour three days ago: past a day's retention
NO_AGGREGATES = {"aggregation": {"enabled": False}, "training": {"enabled": False}}


class Channel:
    """A channel's finished files on a directory or below s3://…, by key below it."""

    def __init__(self, where: Path | S3Location):
        self.where = where

    def put(self, key: str, body: bytes) -> None:
        if isinstance(self.where, S3Location):
            assert store_of(self.where).put_new(self.where / key, body)
            return
        path = self.where / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    def exists(self, key: str) -> bool:
        if isinstance(self.where, S3Location):
            return store_of(self.where).size(self.where / key) is not None
        return (self.where / key).exists()

    def delete(self, key: str) -> None:
        if isinstance(self.where, S3Location):
            store_of(self.where).delete(self.where.bucket, [(self.where / key).key])
        else:
            (self.where / key).unlink()

    def drop_packs(self) -> None:
        """S3: the hidden packs, as their writer deletes them once their files are published
        (files have none: a finished file's hidden name goes at once)."""
        if isinstance(self.where, S3Location):
            store = store_of(self.where)
            hidden = store.list(self.where / IN_PROGRESS_DIR)
            store.delete(self.where.bucket, [k for k, _s in hidden if k.endswith(".pack")])

    def keys(self) -> set[str]:
        """`<bucket>/<name>` of every finished file."""
        return {_key(part.path) for part in finished_files(self.where)}


def _key(path: Path | S3Location) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"


def old_key(hours_before: int, partition: int = 9, first: int = 0) -> str:
    """A finished file in an old bucket; partition 9 is none of the topics' own (the worker's
    upgrade path would take the offsets of their own files as proven)."""
    return f"{bucket_of(OLD - hours_before * HOUR_MS)}/{finished_name(partition, first, first)}"


@pytest.fixture(params=["files", "s3"])
def channel(request: pytest.FixtureRequest, tmp_path: Path) -> Channel:
    if request.param == "s3":
        base = request.getfixturevalue("s3_base")
        return Channel(S3Location.parse(base) / "events")
    return Channel(tmp_path / "events")


# -- the parts on their own ----------------------------------------------------------------


def test_retention_spares_what_committed_checkpoints_name(channel: Channel) -> None:
    doomed = {old_key(h, first=h) for h in range(1, 6)}
    named = old_key(7, partition=1)
    beside = old_key(7, partition=2)  # in the same bucket: spared with it
    fresh = f"{bucket_of(NOW)}/{finished_name(0, 9, 9)}"
    for key in [*doomed, named, beside, fresh]:
        channel.put(key, b"{}\n")
    asked: list[set[str]] = []

    def committed_names() -> set[str]:
        asked.append(channel.keys())  # what exists when retention asks: it listed already
        return {named}

    assert delete_before(channel.where, NOW - DAY_MS, committed_names) == len(doomed)
    assert channel.keys() == {named, beside, fresh}
    assert asked == [{*doomed, named, beside, fresh}]
    assert delete_before(channel.where, NOW - DAY_MS, frozenset) == 2  # no longer named
    assert channel.keys() == {fresh}


def _plant(directory: Path, hours: int) -> list[str]:
    keys = [old_key(h, p, h) for h in range(1, hours + 1) for p in (7, 8, 9)]
    for key in keys:
        (directory / key).parent.mkdir(parents=True, exist_ok=True)
        (directory / key).write_bytes(b"{}\n")
    return keys


def test_what_another_retention_deleted_meanwhile_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "events"
    keys = _plant(directory, 50)
    listed = list(retention.buckets(directory))
    vanished = ("date=2000-01-01/hour=00", directory / "date=2000-01-01/hour=00")
    monkeypatch.setattr(retention, "buckets", lambda _d: iter([vanished, *listed]))
    others: list[int] = []

    def another_worker_meanwhile() -> set[str]:  # between this one's listing and deleting
        others.append(delete_files_before(directory, NOW - DAY_MS))
        return set()

    assert delete_files_before(directory, NOW - DAY_MS, another_worker_meanwhile) == 0
    assert others == [len(keys)]
    assert list(directory.iterdir()) == []


def test_several_retentions_at_once_on_one_directory_never_fail(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    keys = _plant(directory, 300)
    counts: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        try:
            counts.append(delete_files_before(directory, NOW - DAY_MS))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum(counts) == len(keys)  # each file deleted once, by one of them
    assert [p.name for p in directory.iterdir()] == []  # the emptied folders went too


def test_a_recovery_tolerates_a_committed_file_gone_only_past_retention(
    channel: Channel,
) -> None:
    def gone(bucket_ms: int) -> Checkpoint:  # committed, then finished, then deleted
        return Checkpoint(in_progress_name(0, 1, 10, bucket_of(bucket_ms)), 50, 12)

    def writer(epoch: int, retention_days: float | None) -> PartitionWriter:
        kind = S3PartitionWriter if isinstance(channel.where, S3Location) else PartitionWriter
        return kind(channel.where, 0, epoch, 1 << 30, 3600, retention_days)  # type: ignore[arg-type]

    writer(2, 1).recover([gone(OLD)])  # retention deleted it: nothing to roll forward
    with pytest.raises(OSError):
        writer(3, 1).recover([gone(NOW - HOUR_MS)])  # a bucket retention keeps: lost data
    with pytest.raises(OSError):
        writer(4, None).recover([gone(OLD)])  # retention off: lost data too
    assert channel.keys() == set()


# -- real workers --------------------------------------------------------------------------


def _executions(rng: random.Random, times: list[int]) -> list[dict]:
    return [events.engine_execution(rng, f"e{i % 4}", t) for i, t in enumerate(times)]


def _wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        time.sleep(0.3)


def _settled(cfg: JsonEngineConfig, execs: list[dict]) -> bool:
    """Every execution once, and nothing else (old lines and planted files gone)."""
    try:
        assert_once(cfg, execs)
    except (AssertionError, KeyError):
        return False
    return True


def _wait_for_new(worker: WorkerProcess, marker: bytes, since: int, timeout: float) -> None:
    """`marker` in what the worker logged past byte `since`."""
    _wait_until(lambda: marker in worker.log()[since:], timeout, f"logged {marker!r}")


@pytest.mark.slow
def test_workers_running_retention_at_once_on_a_shared_directory_all_stay_up(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {**NO_AGGREGATES, "output": {"retention_days": 1, "retention_check_seconds": 0.2}}
    )
    create_topics(cfg)
    events_dir = Channel(channel_dir(cfg.output.base_path, "events.jsonl"))
    for h in range(1, 401):  # old buckets for the workers to race on
        for p in (7, 8, 9):
            events_dir.put(old_key(h, p, h), b"{}\n")
    rng = random.Random(23)
    old = _executions(rng, [OLD - rng.randrange(48) * HOUR_MS for _ in range(600)])
    fresh = _executions(rng, [NOW - 60_000 + i for i in range(3000)])
    workers = [WorkerProcess(path, tmp_path, f"w{i}") for i in range(3)]
    try:
        for worker in workers:  # at once: their first rounds overlap
            worker.start(wait_ready=False)
        for worker in workers:
            worker.wait_for(b"[^Worker]: Ready")
        for n in range(10):  # old buckets made and deleted while they run
            produce(cfg, "engine-execution", [orjson.dumps(e) for e in old[n * 60 :][:60]])
            produce(cfg, "engine-execution", [orjson.dumps(e) for e in fresh[n * 300 :][:300]])
            time.sleep(0.3)
        _wait_until(lambda: _settled(cfg, fresh), 60, "every fresh execution once, no old one")
        for worker in workers:
            assert worker.alive(), worker.tail()
        assert any(b"retention: deleted" in w.log() for w in workers)
        for worker in workers:
            assert worker.terminate() == 0, worker.tail()
    finally:
        for worker in workers:
            worker.kill()
    assert_once(cfg, fresh)
    for worker in workers:
        assert b"Traceback" not in worker.log(), worker.tail()


@pytest.mark.slow
@pytest.mark.parametrize("output", ["files", "s3"])
def test_retention_spares_a_finished_file_the_committed_checkpoint_names_and_recovery_goes_on(
    make_config: ConfigFactory, tmp_path: Path, request: pytest.FixtureRequest, output: str
) -> None:
    """The gap: a worker finished a file after its commit (on S3: published it) and dies
    before the next commit. (a) Another worker's retention spares the file meanwhile. (b) If
    it goes anyway (an outside clean-up, a retention that raced), the next owner's recovery
    logs it and goes on."""
    shared = {"base_path": request.getfixturevalue("s3_base")} if output == "s3" else {}
    common = {**NO_AGGREGATES, "kafka": {"partitions": 1}}
    path, cfg = make_config({**common, "output": shared}, name="plain.yaml")
    kept_path, _ = make_config(
        {**common, "output": {**shared, "retention_days": 1, "retention_check_seconds": 1}},
        name="retention.yaml",
    )
    create_topics(cfg)
    events_dir = Channel(channel_dir(cfg.output.base_path, "events.jsonl"))
    rng = random.Random(8)
    first, second = OLD, OLD + HOUR_MS  # two old buckets, finished after the commit
    backlog = _executions(rng, [first + i for i in range(50)] + [second + i for i in range(50)])
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in backlog])
    finished = f"{bucket_of(first)}/{finished_name(0, 0, 49)}"

    fault = {"JSON_ENGINE_FAULT": "after_publish:stop"}
    writer = WorkerProcess(path, tmp_path, "writer", env=fault)
    keeper = WorkerProcess(kept_path, tmp_path, "keeper")
    successor = WorkerProcess(kept_path, tmp_path, "successor")
    try:
        writer.start(wait_ready=False)
        writer.wait_frozen(90)  # committed, the files finished (rolled), the metadata names them
        assert events_dir.exists(finished)
        decoy = old_key(30)  # an old file nobody names: retention does delete that one
        events_dir.put(decoy, b"{}\n")
        keeper.start(wait_ready=False)
        keeper.wait_for(b"retention: deleted", 60)
        time.sleep(2.5)  # a couple more rounds
        assert not events_dir.exists(decoy)
        assert events_dir.exists(finished), "retention deleted a file the checkpoint names"

        events_dir.delete(finished)  # the gap, made by hand (as a racing retention would)
        events_dir.drop_packs()  # on S3 the writer may not have deleted them before it froze
        writer.kill()
        keeper.kill()  # whichever took the partition over: the next owner recovers it
        successor.start(wait_ready=False)
        successor.wait_for(b"past retention", 90)
        fresh = _executions(rng, [NOW - 60_000 + i for i in range(500)])
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in fresh])
        # the old lines the recovery rolled forward go at the next rounds: fresh ones stay
        _wait_until(lambda: _settled(cfg, fresh), 90, "every fresh execution once")
        assert successor.alive(), successor.tail()
        assert successor.terminate() == 0, successor.tail()
    finally:
        writer.thaw()
        for worker in (writer, keeper, successor):
            worker.kill()
    assert b"cannot recover" not in successor.log()


@pytest.mark.slow
def test_an_object_store_refusing_or_down_during_retention_never_stops_the_worker(
    make_config: ConfigFactory, tmp_path: Path, own_s3: local_s3.LocalS3
) -> None:
    base = "s3://json-engine-outage/retention"
    path, cfg = make_config(
        {
            **NO_AGGREGATES,
            "output": {"base_path": base, "retention_days": 1, "retention_check_seconds": 1},
        }
    )
    create_topics(cfg)
    events_dir = Channel(S3Location.parse(base) / "events")
    worker = WorkerProcess(path, tmp_path).start()
    try:
        for round_, outage in enumerate(("read-only", "stopped")):
            old = {old_key(h, first=round_) for h in range(1, 6)}
            for key in old:
                events_dir.put(key, b"{}\n")
            seen = len(worker.log())
            if outage == "read-only":  # listing works, every delete is refused
                subprocess.run(["mount", "-o", "remount,ro", str(own_s3.root)], check=True)
            else:  # nothing answers
                local_s3.down(own_s3)
            _wait_for_new(worker, b"retention of", seen, 30)
            time.sleep(3)  # more rounds fail meanwhile
            assert worker.alive(), worker.tail()
            if outage == "read-only":
                subprocess.run(["mount", "-o", "remount,rw", str(own_s3.root)], check=True)
            else:
                assert own_s3.endpoint.encode() in worker.log()[seen:]  # it names the server
                local_s3.up(own_s3.port, own_s3.data_dir)
            _wait_until(lambda old=old: not (events_dir.keys() & old), 30, "deleted after it")
        rng = random.Random(4)
        fresh = _executions(rng, [NOW - 60_000 + i for i in range(1000)])
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in fresh])
        _wait_until(lambda: _settled(cfg, fresh), 60, "every execution once")
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
