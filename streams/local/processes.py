"""What the local servers (Kafka, the S3 gateway) share: where they are cached and keep their
state, and their processes, which are only ever found and stopped by the PID they recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Collection
from pathlib import Path


def cache_dir(name: str) -> Path:
    """`$JSON_ENGINE_CACHE`, else `~/.cache/json-engine`, then `name` (tool and version)."""
    base = os.environ.get("JSON_ENGINE_CACHE") or Path.home() / ".cache" / "json-engine"
    return Path(base) / name


def default_data_dir(name: str) -> Path:
    """Under `$XDG_STATE_HOME` (else `~/.local/state`): `json-engine/<name>`."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "json-engine" / name


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def stop(pids: Collection[int], timeout: float) -> None:
    """SIGTERM to each, then SIGKILL to those left after `timeout` seconds; returns once every
    one is gone. All are told at once, so the nodes of a cluster stop side by side."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _running(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while _running(pids):
        time.sleep(0.05)


def _running(pids: Collection[int]) -> list[int]:
    """The ones still alive, the others reaped."""
    left = []
    for pid in pids:
        reap(pid)
        if alive(pid):
            left.append(pid)
    return left


def reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (a test fixture)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
