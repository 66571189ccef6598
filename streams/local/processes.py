"""What the local servers (Kafka, the S3 gateway) share: where they are cached and keep their
state, and their processes, which are only ever found and stopped by the PID they recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
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


def stop(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; returns once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            reap(pid)
            time.sleep(0.05)
    reap(pid)


def reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (a test fixture)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
