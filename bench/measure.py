"""One yardstick for every contender: child processes watched from outside, output polled.

Every contender runs as its own process(es), so that CPU and peak memory are its own and not
the harness's. The harness polls what the contender has made durable (or written) every
`POLL_SECONDS` and reads its CPU from /proc at two instants:

- first: the first poll that sees output (the first batch is durable), with `n_first` events;
- end: the first poll that sees at least 95% of the N events durable, with `n_end` events;
- last: the poll that sees all N events durable (and the contender's own "done" marker):
  the run is complete and checked from here.

steady events/s = (n_end - n_first) / (t_end - t_first), CPU s per million events over the
same window; start-up = t_first - spawn. Counting from an observed instant to an observed
instant makes the polling delay cancel out instead of biasing the rate. The last 5% are left
out of the window because the end of a finite topic is not a steady state: a last, partial
batch waits for a flush timer (json-engine's auto_flush_seconds, Quix's checkpoint interval)
and one worker may finish before the other; `rate_to_all` in the JSON keeps the figure with
the end included. Peak RSS is the kernel's
high-water mark of each process image (VmHWM, sampled), the largest of them.

Over the same window it also reads what the contender shares the machine with: the broker's
CPU per million events (when the benchmark started the broker, `BROKER_PIDS`) and how many
cores the whole machine kept busy (/proc/stat), so that a contender held back by a saturated
machine shows as such, and how many of those cores the hypervisor stole for other guests
(steal: a repetition slowed by the machine rather than by the code shows as such).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.01
END_SHARE = 0.95  # the steady window ends once this share of the events is durable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# PIDs of the broker the benchmark started (python -m bench sets them): its CPU is reported.
BROKER_PIDS: list[int] = []


class RunError(Exception):
    """A repetition that did not complete; the message says why (with a log tail)."""


@dataclass
class Run:
    """One repetition of one contender."""

    events: int
    rate: float | None = None  # steady events/s
    startup_s: float | None = None
    cpu_s_per_m: float | None = None
    rss_mb: float | None = None
    steady: bool = True  # False: too few events after the first batch, whole-run rate
    broker_cpu_s_per_m: float | None = None  # the broker's CPU over the same window
    machine_busy_cores: float | None = None  # cores the whole machine kept busy, on average
    stolen_cores: float | None = None  # of those, cores the hypervisor ran something else on
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Child:
    """A process the benchmark started: its log, its CPU, its exit status and peak RSS."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.argv = list(argv)
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # a Ctrl-C of the harness must not reach it first
            )
        self.pid = self.proc.pid
        self.returncode: int | None = None
        self.rusage_cpu: float | None = None
        self.hwm_kb = 0
        self._sampled_at = 0.0

    def sample_rss(self, every: float = 0.1) -> None:
        """Keep the kernel's RSS high-water mark of this process image (VmHWM), read at most
        every `every` s while it runs. (wait4's ru_maxrss would also count the harness's
        own memory, which the child shares between fork and exec.)"""
        now = time.monotonic()
        if now - self._sampled_at < every or self.returncode is not None:
            return
        self._sampled_at = now
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
                    return
        except (OSError, ValueError):
            pass

    @property
    def peak_rss_mb(self) -> float | None:
        return self.hwm_kb / 1024 if self.hwm_kb else None

    def cpu_seconds(self) -> float:
        """User + system CPU of all its threads so far (0 once it has been reaped)."""
        cpu = process_cpu_seconds(self.pid)
        return (self.rusage_cpu or 0.0) if cpu is None else cpu

    def poll(self) -> int | None:
        """Exit code once it exited (reaping it with wait4 to keep its rusage)."""
        if self.returncode is None:
            self.sample_rss()
            with contextlib.suppress(ChildProcessError):
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    self._reaped(status, usage)
        return self.returncode

    def _reaped(self, status: int, usage: Any) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode  # so that Popen does not wait for it again
        self.rusage_cpu = usage.ru_utime + usage.ru_stime

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.returncode

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop), then SIGKILL after `timeout`; only this PID."""
        if self.poll() is None:
            self.sample_rss(every=0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.wait(30)
        return self.returncode if self.returncode is not None else -9

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_bytes().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of all threads of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_seconds() -> tuple[float, float]:
    """CPU seconds every core of the machine spent busy since boot (all but idle and iowait),
    and of those the seconds stolen: a virtual machine's cores that the hypervisor gave to
    another guest. Steal is what makes a shared cloud machine slow for minutes at a time."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS, ticks[7] / CLOCK_TICKS


QUIET_CORES = 0.3  # the machine's busy cores under which a run may start
QUIET_WAIT_S = 15.0


def wait_quiet(step: float = 0.5) -> float:
    """Wait (at most QUIET_WAIT_S) until the machine was busy less than QUIET_CORES over one
    `step`: the broker's work on the topics a repetition just deleted and created (its
    controller, metadata and JIT compiler) ends before the run it would slow down starts.
    Returns the seconds waited."""
    start = time.monotonic()
    busy, _stolen = machine_seconds()
    while time.monotonic() - start < QUIET_WAIT_S:
        time.sleep(step)
        now, _stolen = machine_seconds()
        if (now - busy) / step < QUIET_CORES:
            break
        busy = now
    return time.monotonic() - start


@dataclass(frozen=True)
class Shared:
    """What the contender shares the machine with, at one instant."""

    broker_cpu: float
    machine_busy: float
    stolen: float

    @classmethod
    def now(cls) -> Shared:
        broker = sum(process_cpu_seconds(pid) or 0.0 for pid in BROKER_PIDS)
        return cls(broker, *machine_seconds())


@dataclass(frozen=True)
class Snapshot:
    """One poll: when, events durable, the contender's CPU, what it shares the machine with."""

    at: float
    n: float
    cpu: float
    shared: Shared

    @classmethod
    def take(cls, now: float, n: float, children: Sequence[Child]) -> Snapshot:
        return cls(now, n, sum(c.cpu_seconds() for c in children), Shared.now())


@dataclass
class Observation:
    spawned: float
    first: Snapshot  # the first poll that saw output (with every process taking part)
    end: Snapshot  # the first poll that saw at least END_SHARE of the events
    last: Snapshot  # the poll that saw every event (and the done marker)
    settled: bool = True  # False: `ready()` never held before `end`; `first` is without it


def watch(
    children: Sequence[Child],
    progress: Callable[[], float],
    expected: int,
    timeout: float,
    done: Callable[[], bool] | None = None,
    ready: Callable[[], bool] | None = None,
    exits_by_itself: bool = False,
) -> Observation:
    """Poll until `progress()` reaches `expected` (and `done()`); see the module docstring.

    `ready()` delays the first instant until every process takes part (several workers of
    one group: the steady window starts once the group has settled). If it never holds
    before the end of the window, the window starts at the first output all the same and
    the observation says it was not settled.
    """
    spawned = min(c.spawned for c in children)
    deadline = spawned + timeout
    first_any: Snapshot | None = None
    first: Snapshot | None = None
    end: Snapshot | None = None
    exited_at: float | None = None
    while True:
        now = time.monotonic()
        n = progress()
        snap: Snapshot | None = None
        if n > 0 and first_any is None:
            snap = first_any = Snapshot.take(now, n, children)
        if n > 0 and first is None and end is None and (ready is None or ready()):
            first = snap or Snapshot.take(now, n, children)
        if end is None and n >= END_SHARE * expected:
            end = snap or Snapshot.take(now, n, children)
        if n >= expected and (done is None or done()):
            last = Snapshot.take(now, n, children)
            assert first_any is not None and end is not None
            return Observation(spawned, first or first_any, end, last, settled=first is not None)
        for child in children:
            if child.poll() is None:
                continue
            if exits_by_itself and child.returncode == 0 and exited_at is None:
                exited_at = now  # look once more: its last lines may have just landed
                continue
            raise RunError(
                f"{Path(child.argv[0]).name} exited {child.returncode} after "
                f"{n:.0f}/{expected} events:\n{child.tail()}"
            )
        if now > deadline:
            raise RunError(
                f"timeout after {timeout:.0f} s at {n:.0f}/{expected} events:\n{children[0].tail()}"
            )
        time.sleep(POLL_SECONDS)


def result(obs: Observation, expected: int, children: Sequence[Child]) -> Run:
    """Rates from an observation; call after the children were stopped (for their RSS)."""
    first, end, last = obs.first, obs.end, obs.last
    window_events = end.n - first.n
    window = end.at - first.at
    steady = window_events >= 0.05 * expected and window > 0.05
    broker = busy = stolen = None
    if steady:
        rate = window_events / window
        cpu = (end.cpu - first.cpu) / window_events * 1e6
        if BROKER_PIDS:
            broker = (end.shared.broker_cpu - first.shared.broker_cpu) / window_events * 1e6
        busy = (end.shared.machine_busy - first.shared.machine_busy) / window
        stolen = (end.shared.stolen - first.shared.stolen) / window
    else:  # everything arrived in the first batch or two: only a whole-run figure
        rate = expected / max(last.at - obs.spawned, 1e-6)
        cpu = last.cpu / expected * 1e6
    rss = [c.peak_rss_mb for c in children if c.peak_rss_mb]
    to_all = last.at - first.at
    extra: dict[str, Any] = {
        "n_first": round(first.n),
        "n_end": round(end.n),
        "window_s": round(window, 4),
        # first output to every event durable: the rate with the end of the topic included
        "rate_to_all": round((last.n - first.n) / to_all) if to_all > 0 else None,
    }
    if not obs.settled:
        extra["settled"] = False
    return Run(
        events=expected,
        rate=rate,
        startup_s=first.at - obs.spawned,
        cpu_s_per_m=cpu,
        rss_mb=max(rss) if rss else None,
        steady=steady,
        broker_cpu_s_per_m=broker,
        machine_busy_cores=busy,
        stolen_cores=stolen,
        extra=extra,
    )


def stop_all(children: Sequence[Child], timeout: float = 60.0) -> None:
    for child in children:
        child.stop(timeout)


# -- progress readers ---------------------------------------------------------------------


def file_progress(path: Path, total_bytes: int, events: int) -> Callable[[], float]:
    """Events written to one file, from its size (every line is the event plus a newline)."""
    scale = events / total_bytes

    def progress() -> float:
        try:
            return os.stat(path).st_size * scale
        except FileNotFoundError:
            return 0.0

    return progress


class CommittedOffsets:
    """Events durable in a consumer group: the sum of its committed offsets on a fresh topic
    (every partition starts at 0, one offset per record), read with OffsetFetch.

    A json-engine worker commits its offsets in the same Kafka transaction as its file
    checkpoints (streams/worker/checkpoint.py), so a committed offset is exactly what is
    durable. The reader is not a member of the group (it never subscribes, never commits) and
    reads `read_uncommitted`: the broker then answers with the last committed offsets at once
    instead of waiting for a transaction that is still open.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            }
        )
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.last = 0.0

    def __call__(self) -> float:
        from confluent_kafka import KafkaException

        try:
            found = self.consumer.committed(self.partitions, timeout=5)
        except KafkaException:
            return self.last  # e.g. the coordinator moving: ask again at the next poll
        total = sum(tp.offset for tp in found if tp.error is None and tp.offset > 0)
        self.last = max(self.last, float(total))
        return self.last

    def close(self) -> None:
        self.consumer.close()


def count_lines(path: Path) -> int:
    """Newlines in a file, read in large chunks."""
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            count += chunk.count(b"\n")
    return count
