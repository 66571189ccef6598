"""A naive Faust agent (faust-streaming, the project's own dependency), event by event."""

from __future__ import annotations

from bench.contenders import Contender, Context
from bench.contenders.file_writer import loop_command, run_file_writer
from bench.measure import Run


class FaustNaive(Contender):
    name = "faust-naive"
    label = "Faust agent, naive (async for)"
    what = "`async for value in stream`: Validator, buffered write per event, fsync at the end"
    smoke = True

    def run(self, ctx: Context, rep: int) -> Run:
        command = loop_command("bench.loops.faust_agent", ctx)
        return run_file_writer(ctx, self.name, rep, command)
