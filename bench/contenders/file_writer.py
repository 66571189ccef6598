"""Running a contender that writes one output file (the loops of `bench.loops`, Connect)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from bench.contenders import Context
from bench.measure import Child, Run, RunError, count_lines, file_progress, result, watch

Command = Callable[[Path, str], list[str]]
"""(output file, consumer group) -> argv."""


def loop_command(module: str, ctx: Context, *extra: str, python: str = sys.executable) -> Command:
    """argv of a `bench.loops` program with the workload's common arguments."""
    w = ctx.workload

    def command(out: Path, group: str) -> list[str]:
        return [
            python,
            "-m",
            module,
            "--bootstrap",
            w.bootstrap,
            "--topic",
            w.topic,
            "--group",
            group,
            "--events",
            str(w.events),
            "--out",
            str(out),
            *extra,
        ]

    return command


def run_file_writer(
    ctx: Context,
    name: str,
    rep: int,
    command: Command,
    env: dict[str, str] | None = None,
    marker: bool = True,
    exits_by_itself: bool = False,
) -> Run:
    """Start the program, watch its file grow to N lines (and its `.done` marker), stop it,
    check the line count."""
    run_dir = ctx.run_dir(name, rep)
    out = run_dir / "out.jsonl"
    done_path = Path(f"{out}.done")
    w = ctx.workload
    child = Child(command(out, ctx.group(name, rep)), run_dir / "log.txt", env=env, cwd=run_dir)
    try:
        obs = watch(
            [child],
            file_progress(out, w.total_bytes, w.events),
            w.events,
            ctx.timeout_s,
            done=done_path.exists if marker else None,
            exits_by_itself=exits_by_itself,
        )
    finally:
        if exits_by_itself:
            child.wait(60)
        child.stop()
    lines = count_lines(out)
    if lines != w.events:
        raise RunError(f"{out} has {lines} lines, expected {w.events}")
    out.unlink()
    return result(obs, w.events, [child])
