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
    """The loop validating with json-engine's Validator (`mode` parse: its fast path), or with a
    fastjsonschema validator compiled from the schema (`mode` fastjsonschema: the generic
    way), on the lz4 `keyed` workload or the uncompressed `plain` one."""

    smoke = True

    def __init__(self, mode: str = "parse", shape: str = "keyed"):
        self.mode, self.shape = mode, shape
        generic = mode == "fastjsonschema"
        self.name = "confluent-fjs" if generic else "confluent-parse"
        self.name += "" if shape == "keyed" else f"-{shape}"
        self.label = "confluent-kafka parse+" + ("fastjsonschema" if generic else "validate")
        self.label += " loop" + (", uncompressed" if shape == "plain" else "")
        self.what = (
            "consume(10000), orjson + a fastjsonschema validator per event, one write per "
            "batch, one fsync at the end"
            if generic
            else "consume(10000), Validator per event, one write + fsync + async commit per batch"
        )

    def run(self, ctx: Context, rep: int) -> Run:
        command = loop_command(MODULE, ctx, "--mode", self.mode)
        return run_file_writer(ctx, self.name, rep, command, exits_by_itself=True)
