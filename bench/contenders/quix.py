"""Quix Streams (from PyPI) doing the same parse, validate and write, in its own virtualenv.

quixstreams pins confluent-kafka below the version the project uses, so installing it into
the project's environment would downgrade the client every other contender (and the
project) runs on; the benchmark keeps it in `<cache>/bench/quix-<version>/` instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.contenders import Contender, Context
from bench.contenders.file_writer import loop_command, run_file_writer
from bench.maven import cache_root
from bench.measure import Run

QUIX_VERSION = "3.28.1"
REPO = Path(__file__).resolve().parents[2]


def venv_dir() -> Path:
    return cache_root() / f"quix-{QUIX_VERSION}"


def installed_version() -> str | None:
    marker = venv_dir() / ".complete"
    return marker.read_text().strip() if marker.exists() else None


def ensure_venv() -> Path:
    """The virtualenv's python, created and filled on first use."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if installed_version():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    proc = subprocess.run(
        [*pip, f"quixstreams=={QUIX_VERSION}", "orjson", "fastjsonschema"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install quixstreams failed:\n{proc.stderr[-2000:]}")
    (venv / ".complete").write_text(QUIX_VERSION)
    return python


class QuixStreams(Contender):
    name = "quix"
    label = "Quix Streams parse+validate+write"
    what = (
        "StreamingDataFrame.filter(Validator) into a BatchingSink: one write + fsync per "
        "partition batch, checkpoint every 10000 records or 0.5 s"
    )

    def __init__(self) -> None:
        self.python: Path | None = None

    def prepare(self, downloads: bool) -> None:
        self.python = ensure_venv()

    def run(self, ctx: Context, rep: int) -> Run:
        assert self.python is not None, "prepare() first"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = loop_command("bench.loops.quix_app", ctx, python=str(self.python))
        return run_file_writer(ctx, self.name, rep, command, env=env)
