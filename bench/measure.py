"""One yardstick for every contender: child processes watched from outside, output polled.

Every contender runs as its own process(es), so that CPU and peak memory are its own and not
the harness's. The harness polls what the contender has made durable (or written) every
`POLL_SECONDS` and reads its CPU from /proc at two instants:

- first: the first poll that sees output (the first batch is durable), with `n_first` events;
- last: the poll that sees all N events durable (and the contender's own "done" marker).

steady events/s = (N - n_first) / (t_last - t_first), CPU s per million events over the same
window; start-up = t_first - spawn. Counting from an observed instant to an observed instant
makes the polling delay cancel out instead of biasing the rate. Peak RSS is the kernel's
high-water mark of each process image (VmHWM, sampled), the largest of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_FINISHED = re.compile(rb"^p(\d+)-(\d+)-(\d+)\.jsonl$")
_IN_PROGRESS = re.compile(rb"^\.p(\d+)-(\d+)-(\d+)-(\d+)\.inprogress$")


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
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return self.rusage_cpu or 0.0
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

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


@dataclass
class Observation:
    spawned: float
    first_at: float
    n_first: float
    cpu_first: float
    last_at: float
    cpu_last: float


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
    one group: the steady window starts once the group has settled).
    """
    spawned = min(c.spawned for c in children)
    deadline = spawned + timeout
    first: tuple[float, float, float] | None = None
    exited_at: float | None = None
    while True:
        now = time.monotonic()
        n = progress()
        if first is None and n > 0 and (ready is None or ready()):
            first = (now, n, sum(c.cpu_seconds() for c in children))
        if n >= expected and (done is None or done()):
            cpu_last = sum(c.cpu_seconds() for c in children)
            if first is None:
                first = (now, n, cpu_last)
            return Observation(spawned, first[0], first[1], first[2], now, cpu_last)
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
    window_events = expected - obs.n_first
    window = obs.last_at - obs.first_at
    steady = window_events >= 0.05 * expected and window > 0.05
    if steady:
        rate = window_events / window
        cpu = (obs.cpu_last - obs.cpu_first) / window_events * 1e6
    else:  # everything arrived in the first batch or two: only a whole-run figure
        rate = expected / max(obs.last_at - obs.spawned, 1e-6)
        cpu = obs.cpu_last / expected * 1e6
    rss = [c.peak_rss_mb for c in children if c.peak_rss_mb]
    return Run(
        events=expected,
        rate=rate,
        startup_s=obs.first_at - obs.spawned,
        cpu_s_per_m=cpu,
        rss_mb=max(rss) if rss else None,
        steady=steady,
        extra={"n_first": round(obs.n_first), "window_s": round(window, 4)},
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


def part_file_progress(directory: Path) -> Callable[[], float]:
    """Events durable in json-engine part files: per partition, the last offset a finished
    or checkpointed in-progress name proves, plus one (a fresh topic starts at offset 0)."""
    raw = os.fsencode(directory)

    def progress() -> float:
        last: dict[int, int] = {}
        try:
            entries = os.scandir(raw)
        except FileNotFoundError:
            return 0.0
        with entries:
            for entry in entries:
                m = _FINISHED.match(entry.name) or _IN_PROGRESS.match(entry.name)
                if m:
                    partition, end = int(m.group(1)), int(m.group(3))
                    if end > last.get(partition, -1):
                        last[partition] = end
        return float(sum(end + 1 for end in last.values()))

    return progress


def finished_events(directory: Path) -> int:
    """Events in finished part files only (what readers see)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            m = _FINISHED.match(os.fsencode(entry.name))
            if m:
                total += int(m.group(3)) - int(m.group(2)) + 1
    return total


def count_lines(path: Path) -> int:
    """Newlines in a file, read in large chunks."""
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            count += chunk.count(b"\n")
    return count
