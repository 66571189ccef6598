"""The contenders: each reads the whole workload topic from a fresh consumer group.

A contender prepares once (downloads, installs: not timed) and then runs one repetition at
a time, never two at once. `REGISTRY` lists them in table order; `SMOKE` are those that need
nothing beyond the project's own dependencies and the Kafka jars the broker already uses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.measure import Run
from bench.workload import Workload


@dataclass
class Context:
    """What every repetition gets: the workload, a scratch directory, limits."""

    workload: Workload  # the one of the contender's shape (`for_shape`)
    work_dir: Path
    timeout_s: float
    profile_dir: Path | None = None  # --profile: py-spy profiles of json-engine workers
    workloads: dict[str, Workload] = field(default_factory=dict)  # shape → workload
    quiet_start: bool = True  # each json-engine run waits for a quiet machine (wait_quiet)

    def for_shape(self, shape: str) -> Context:
        return replace(self, workload=self.workloads.get(shape, self.workload))

    def run_dir(self, name: str, rep: int) -> Path:
        path = self.work_dir / f"{name}-r{rep}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def group(self, name: str, rep: int) -> str:
        """A consumer group nobody has used: every repetition reads from the start."""
        return f"{self.workload.prefix}{name}-r{rep}-{uuid.uuid4().hex[:6]}"


class Contender:
    """One line of the table; subclasses set the class attributes and implement `run`."""

    name: str  # for --only
    label: str  # for the table
    what: str  # one sentence for the report: what it does per event
    smoke: bool = False  # runs in --smoke (needs no download beyond the broker's jars)
    shape: str = "keyed"  # the workload it reads (bench.workload.SHAPES)

    def prepare(self, downloads: bool) -> None:
        """Fetch or install what the contender needs (not timed); raise to skip it.
        `downloads` is False in --smoke: use only what is there."""

    def run(self, ctx: Context, rep: int) -> Run:
        raise NotImplementedError


def registry() -> list[Contender]:
    """Every contender in table order (imports are deferred: Quix or Connect may be absent)."""
    from bench.contenders.confluent import ConfluentParse, ConfluentRaw
    from bench.contenders.consumer_perf import ConsumerPerf
    from bench.contenders.faust_naive import FaustNaive
    from bench.contenders.json_engine import JsonEngineSink
    from bench.contenders.kafka_connect import KafkaConnectFile
    from bench.contenders.quix import QuixStreams

    return [
        ConsumerPerf(),
        ConfluentRaw(),
        ConfluentParse(),
        ConfluentParse("fastjsonschema"),
        JsonEngineSink(workers=1),
        # compressed files beside plain ones: throughput and ratio (issue 27)
        JsonEngineSink(workers=1, compression="zstd"),
        JsonEngineSink(workers=1, compression="gzip"),
        # the same on the uncompressed workload (issue 25)
        ConfluentParse(shape="plain"),
        ConfluentParse("fastjsonschema", shape="plain"),
        JsonEngineSink(workers=1, shape="plain"),
        JsonEngineSink(workers=1, output="s3"),  # the S3 sink beside the files (issue 15)
        JsonEngineSink(workers=1, fenced=False),  # what fencing costs (issue 12)
        JsonEngineSink(workers=1, aggregation=True),  # what the aggregation costs (issue 13)
        JsonEngineSink(workers=1, shape="spread"),  # two workers against one (issue 12)
        JsonEngineSink(workers=2, shape="spread"),
        # Diagnostic: the same with only the executions channel's topic subscribed.
        JsonEngineSink(workers=1, shape="spread", only_executions=True),
        JsonEngineSink(workers=2, shape="spread", only_executions=True),
        JsonEngineSink(workers=1, shape="hot", aggregation=True),  # a hot engine (issue 13)
        JsonEngineSink(workers=2, shape="hot", aggregation=True),
        # The aggregation's fold rate beside the naive way: python -m bench.aggregation
        FaustNaive(),
        KafkaConnectFile(),
        QuixStreams(),
    ]
