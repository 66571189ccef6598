"""Exactly once under SIGKILL, and no progress past unwritten data on a full disk."""

from __future__ import annotations

import contextlib
import random
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from sinks.files.names import FINISHED
from sinks.formats.compression import decompress, suffix_of
from sinks.reader import channel_dir
from streams import events
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.test_s3_exactly_once import PartialObjectWatcher
from tests.workers import READY, WorkerProcess, assert_once, lines_of, produce, wait_for_lines


def finished(directory: Path) -> list[Path]:
    """Finished part files in every time bucket (and the flat layout), compressed or not;
    none hidden."""
    if not directory.exists():
        return []
    return sorted(
        p
        for p in directory.rglob("*.jsonl*")
        if FINISHED.match(p.name)
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


class PartialLineWatcher(threading.Thread):
    """Reads every finished file over and over, decompressing a compressed one whole (every
    gzip member, every zstd frame); records any line that is not whole JSON, and any file
    that does not decompress."""

    def __init__(self, directory: Path):
        super().__init__(daemon=True)
        self.directory = directory
        self.stop = threading.Event()
        self.bad: list[str] = []
        self.reads = 0
        self.names: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            for path in finished(self.directory):
                self.names.add(path.name)
                with contextlib.suppress(FileNotFoundError):
                    try:
                        data = decompress(path.read_bytes(), suffix_of(path.name))
                    except (OSError, EOFError, zstandard.ZstdError) as exc:
                        self.bad.append(f"{path.name}: does not decompress: {exc}")
                        continue
                    self.reads += 1
                    if data and not data.endswith(b"\n"):
                        self.bad.append(f"{path.name}: no final newline")
                    for line in data.splitlines():
                        try:
                            orjson.loads(line)
                        except orjson.JSONDecodeError:
                            self.bad.append(f"{path.name}: {line[:60]!r}")
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("output", "compression"),
    [("files", "none"), ("s3", "none"), ("files", "zstd"), ("s3", "gzip")],
)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    make_config: ConfigFactory,
    tmp_path: Path,
    output: str,
    compression: str,
    request: pytest.FixtureRequest,
) -> None:
    """On S3 a watcher lists and reads every visible object all the while instead: each is
    whole and never rewritten (tests/test_s3_exactly_once.py PartialObjectWatcher). With
    `compression` every visible file decompresses whole at every instant (issue 27)."""
    shared = {"base_path": request.getfixturevalue("s3_base")} if output == "s3" else {}
    path, cfg = make_config(
        {
            "output": shared,
            "channels": {
                "engine_execution": {
                    "buffer_size": 500,
                    "auto_flush_seconds": 0.2,
                    "roll_bytes": 400_000,
                    "roll_seconds": 1.0,
                    "compression": compression,
                }
            },
        }
    )
    create_topics(cfg)
    rng = random.Random(42)
    now = int(time.time() * 1000)
    execs = [events.engine_execution(rng, f"e{i % 8}", now + i) for i in range(20_000)]
    watcher: PartialLineWatcher | PartialObjectWatcher
    if output == "s3":
        watcher = PartialObjectWatcher(request.getfixturevalue("s3_service"), shared["base_path"])
    else:
        watcher = PartialLineWatcher(channel_dir(cfg.output.base_path, "events.jsonl"))
    watcher.start()
    worker = WorkerProcess(path, tmp_path).start()

    def publish_in_chunks() -> None:
        for start in range(0, len(execs), 2000):
            produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[start : start + 2000]])
            time.sleep(0.3)

    publisher = threading.Thread(target=publish_in_chunks)
    publisher.start()
    kills = 0
    try:
        while kills < 5:
            time.sleep(rng.uniform(0.5, 2.5))
            worker.kill()
            kills += 1
            worker.start(wait_ready=kills % 2 == 0)  # sometimes killed again during start-up
        publisher.join()
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=180)
        worker.wait_for(READY)  # SIGTERM before start-up ends would just end the process
        assert worker.terminate() == 0
    finally:
        watcher.stop.set()
        watcher.join()
        worker.kill()
    assert_once(cfg, execs)
    assert watcher.reads > 0 and watcher.bad == []
    ending = {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}[compression]
    assert watcher.names and all(name.endswith(ending) for name in watcher.names)


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 1 MiB tmpfs: a real full disk (ENOSPC). Needs root, as CI and this machine have."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_stops_the_worker_and_a_restart_completes(
    make_config: ConfigFactory, tmp_path: Path, small_disk: Path
) -> None:
    path, cfg = make_config(
        {
            "output": {"base_path": str(small_disk / "out")},
            "channels": {
                "engine_execution": {
                    "buffer_size": 200,
                    "auto_flush_seconds": 0.2,
                    "roll_bytes": 100_000,
                }
            },
        }
    )
    create_topics(cfg)
    rng = random.Random(7)
    execs = [
        events.engine_execution(rng, f"e{i % 4}", 1_764_000_000_000 + i) for i in range(4000)
    ]  # ~2.5 MB of lines: more than the disk holds
    worker = WorkerProcess(path, tmp_path).start()
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs])
    code = worker.wait(120)
    assert code != 0
    assert b"No space left on device" in worker.log()
    written = lines_of(cfg, "engine_execution")
    assert 0 < len(written) < len(execs)
    # Space comes back; a restart finishes the job from what the files prove.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    worker.start()
    wait_for_lines(cfg, "engine_execution", len(execs), timeout=120)
    assert worker.terminate() == 0
    ids = [orjson.loads(line)["trace_id"] for line in lines_of(cfg, "engine_execution")]
    listing = sorted(p.name for p in (small_disk / "out" / "events").iterdir())
    (tmp_path / "listing.txt").write_text("\n".join(listing))
    assert len(ids) == len(set(ids)) == len(execs), (listing, worker.tail(80))


@pytest.mark.parametrize(
    ("skip", "at_end"), [(7, False), (-5, False), (7, True)], ids=["past", "before", "to-the-end"]
)
def test_a_fetch_resuming_off_the_committed_offset_loses_and_duplicates_nothing(
    make_config: ConfigFactory, tmp_path: Path, skip: int, at_end: bool
) -> None:
    """Adversary: after a recovery the consumer's fetch resumes `skip` records past the
    committed offset (records would be lost) or before it (records read twice), as
    librdkafka's can after a pause, a seek and a leader change (its issues #2190, #4686).
    The fault makes every recovery's seek land there; the worker must notice and read from
    the committed offset. `to-the-end`: the partition holds exactly `skip` new records, so
    the fetch resumes at its end and no batch shows the gap."""
    path, cfg = make_config({"channels": {"engine_execution": {"auto_flush_seconds": 0.2}}})
    create_topics(cfg)
    rng = random.Random(skip)
    now = int(time.time() * 1000)
    execs = [events.engine_execution(rng, f"e{i % 9}", now + i) for i in range(2000)]
    if at_end:  # one engine, keyed: all in one partition
        later = [events.engine_execution(rng, "e-end", now + 2000 + i) for i in range(skip)]
    else:
        later = [events.engine_execution(rng, f"e{i % 9}", now + 2000 + i) for i in range(2000)]
    fault = {"JSON_ENGINE_FAULT": f"after_seek:skip:{skip}"}
    worker = WorkerProcess(path, tmp_path, env=fault if skip > 0 else {})
    try:
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs])
        worker.start()
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=60)
        assert worker.terminate() == 0, worker.tail()
        keys = [e["engine_id"].encode() for e in later] if at_end else None
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in later], keys)
        execs += later
        worker.env = fault  # a committed offset to seek from: before it is past 0 too
        worker.start()
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=60)
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    assert_once(cfg, execs)
    marker = b"after a second seek" if skip > 0 else b"fetched again from"
    assert marker in worker.log(), worker.tail()


def test_a_checkpoint_failing_in_flight_rolls_back_the_batches_read_meanwhile(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: a checkpoint's transaction fails (refused, or the broker went away) after
    the loop has read, parsed and buffered the next records, since it commits in the
    background. Its lines were written but must never count, its dead letters (produced in
    the aborted transaction) must come again, and the records read meanwhile must not be
    skipped: the worker rolls back to the last committed checkpoint."""
    path, cfg = make_config(
        {"channels": {"engine_execution": {"auto_flush_seconds": 0.2, "buffer_size": 200}}}
    )
    create_topics(cfg)
    rng = random.Random(11)
    now = int(time.time() * 1000)
    execs = [events.engine_execution(rng, f"e{i % 9}", now + i) for i in range(4000)]
    values = [orjson.dumps(e) for e in execs]
    bad = [f'{{"broken": {i}'.encode() for i in range(40)]  # malformed JSON: dead letters
    for i, value in enumerate(bad):
        values.insert(i * 100, value)
    worker = WorkerProcess(path, tmp_path, env={"JSON_ENGINE_FAULT": "commit_in_flight:fail:3"})
    try:
        produce(cfg, "engine-execution", values)
        worker.start()
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=90)
        wait_for_lines(cfg, "dead_letter", len(bad), timeout=30)
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    assert_once(cfg, execs)
    letters = [orjson.loads(line) for line in lines_of(cfg, "dead_letter")]
    where = {(r["partition"], r["offset"]) for r in letters}
    assert len(letters) == len(where) == len(bad), f"{len(letters)} dead letters of {len(bad)}"
    log = worker.log()
    assert b"fault injected: the transaction in flight failed" in log, worker.tail()
    assert b"rolling back to the last committed one" in log, worker.tail()


def test_a_recovery_that_fails_leaves_the_partitions_being_read_alone(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: a recovery fails (a broker went away) while the worker reads other
    partitions, here when a second worker leaves and hands its partitions back. The failed
    recovery is retried; the partitions read meanwhile keep being read, none falls silent."""
    path, cfg = make_config({"channels": {"engine_execution": {"auto_flush_seconds": 0.2}}})
    create_topics(cfg)
    rng = random.Random(7)
    now = int(time.time() * 1000)
    execs = [events.engine_execution(rng, f"e{i % 9}", now + i) for i in range(3000)]
    fault = {"JSON_ENGINE_FAULT": "recover_while_reading:fail:1"}
    first = WorkerProcess(path, tmp_path, "first", env=fault)
    second = WorkerProcess(path, tmp_path, "second")
    try:
        first.start()
        first.wait_for(b"ready: reading", timeout=60)
        second.start()
        second.wait_for(b"ready: reading", timeout=60)
        assert second.terminate() == 0, second.tail()  # its partitions go back to the first
        first.wait_for(b"fault injected", timeout=60)
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs])
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=60)
        assert first.terminate() == 0, first.tail()
    finally:
        first.kill()
        second.kill()
    assert_once(cfg, execs)
