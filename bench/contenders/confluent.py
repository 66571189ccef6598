"""confluent-kafka loops: the raw ceiling and the same parse + validate + write, no framework."""

from __future__ import annotations

from bench.contenders import Contender, Context
from bench.contenders.file_writer import loop_command, run_file_writer
from bench.measure import Run

MODULE = "bench.loops.confluent_loop"


class ConfluentRaw(Contender):
    name = "confluent-raw"
    label = "confluent-kafka raw loop (ceiling)"
    what = "consume(10000), append bytes, one fsync at the end; no parsing"
    smoke = True

    def run(self, ctx: Context, rep: int) -> Run:
        command = loop_command(MODULE, ctx, "--mode", "raw")
        return run_file_writer(ctx, self.name, rep, command, exits_by_itself=True)


class ConfluentParse(Contender):
    name = "confluent-parse"
    label = "confluent-kafka parse+validate loop"
    what = "consume(10000), Validator per event, one write + fsync + async commit per batch"
    smoke = True

    def run(self, ctx: Context, rep: int) -> Run:
        command = loop_command(MODULE, ctx, "--mode", "parse")
        return run_file_writer(ctx, self.name, rep, command, exits_by_itself=True)
