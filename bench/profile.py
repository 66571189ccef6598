"""py-spy attached to a json-engine worker during its run (`python -m bench --profile DIR`).

Attaching by PID leaves the worker's own command, CPU and memory figures as they are;
`--nonblocking` samples without pausing it, so the profiled run stays close to the others.
Needs py-spy (`pip install py-spy`) and ptrace rights over the worker (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record --pid` into an SVG flame graph (idle time included: waiting shows)."""

    def __init__(self, pid: int, out: Path, rate: int = 100):
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        self.out = out
        argv = [exe, "record", "--pid", str(pid), "--idle", "--nonblocking"]
        self.proc = subprocess.Popen(
            [*argv, "--rate", str(rate), "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop sampling and let py-spy write the graph (before the worker exits)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
