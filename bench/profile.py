"""py-spy attached to a json-engine worker during its run (`python -m bench --profile DIR`).

Attaching by PID leaves the worker's own command, CPU and memory figures as they are;
`--nonblocking` samples without pausing it, so the profiled run stays close to the others
(still: run the profile apart from the measured run). It records every thread, waiting
included (`--idle`: the time the batch thread spends blocked in `consume()`, a transaction
commit or an fsync is what holds its throughput back), as collapsed stacks (`<out>.txt`, the
input of flamegraph.pl or inferno), and writes beside it `<out>.top.txt`: per thread, the
functions with the most samples (a share of the thread's wall time), by self time and
including callees. `python -m bench.profile FILE.txt` prints that summary again.

Needs py-spy (`pip install py-spy`) and ptrace rights over the worker (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

RATE = 100
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
_LINE = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*):(?P<line>\d+)\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record --pid` into `<out>.txt` (collapsed stacks per thread, idle included)."""

    def __init__(self, pid: int, out: Path, rate: int = RATE):
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        self.out = out.with_suffix(".txt")
        self.rate = rate
        self.started = time.monotonic()
        self.stopped = False
        argv = [exe, "record", "--pid", str(pid), "--nonblocking", "--idle", "--threads"]
        self.proc = subprocess.Popen(
            [*argv, "--format", "raw", "--rate", str(rate), "--output", str(self.out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop sampling, let py-spy write its file (before the worker exits), summarize it;
        once."""
        if self.stopped:
            return
        self.stopped = True
        seconds = time.monotonic() - self.started
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.out.exists():
            summary = summarize(self.out, seconds * self.rate)
            self.out.with_suffix(".top.txt").write_text(summary)


def _function(frame: str) -> str:
    """`name (path/file.py:123)` → `name (file.py)`: one entry per function, not per line."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    return f"{m['func']} ({Path(m['file']).name})"


def _line(frame: str) -> str:
    """`name (path/file.py:123)` → `name (file.py:123)`: where in the function."""
    m = _LINE.match(frame.strip())
    if m is None:
        return frame.strip()
    return f"{m['func']} ({Path(m['file']).name}:{m['line']})"


def summarize(path: Path, possible_samples: float | None = None, top: int = 25) -> str:
    """Per thread: its samples (and their share of the run, if `possible_samples` is known),
    then the functions with most samples by self time (and the lines), and including their
    callees (without the frames every sample of the thread is in)."""
    threads: dict[str, Counter[str]] = {}
    lines: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    busy: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        if frames[0].startswith("thread ("):  # `thread (TID): NAME`, then the frames
            thread = frames.pop(0).split(": ", 1)[-1]
        n = int(count)
        funcs = [_function(f) for f in frames]
        busy[thread] += n
        if funcs:
            threads.setdefault(thread, Counter())[funcs[-1]] += n
            lines.setdefault(thread, Counter())[_line(frames[-1])] += n
        for func in set(funcs):
            inclusive.setdefault(thread, Counter())[func] += n
    total = sum(busy.values())
    out = [f"{path.name}: {total} samples"]
    for thread, n in busy.most_common():
        share = f", {n / possible_samples:.0%} of the run's samples" if possible_samples else ""
        out += ["", f"thread {thread}: {n} samples{share}"]
        out.append("  self time:")
        for func, c in threads.get(thread, Counter()).most_common(top):
            out.append(f"    {c / n:6.1%}  {func}")
        out.append("  self time by line:")
        for line, c in lines.get(thread, Counter()).most_common(top):
            out.append(f"    {c / n:6.1%}  {line}")
        out.append("  including callees:")
        callers = [(f, c) for f, c in inclusive.get(thread, Counter()).most_common() if c < n]
        for func, c in callers[:top]:
            out.append(f"    {c / n:6.1%}  {func}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(summarize(Path(name)))
