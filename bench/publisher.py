"""Publisher throughput beside a raw confluent-kafka Producer with the same settings.

Every run sends the same seeded engine_execution events to a fresh topic (a fresh prefix per
invocation, one topic per run, all deleted at the end) with the Publisher's producer settings
(`streams.publisher.producer_settings`: idempotent, acks=all, lz4, same linger and batch
size), and is timed from the first event until `flush()` returned, i.e. until the broker
acknowledged every event. Producers connect before the clock starts. The best of `--repeat`
runs is kept, the variants interleaved so that other load on a shared machine hits them alike;
CPU is this process's (all threads) per event, the least of the runs, and does not count the
broker's.

- raw Producer: produce() of pre-serialized bytes with precomputed keys and a callback that
  counts failures (never dropping one silently, as the Publisher does), poll(0) after each.
  By default librdkafka reports every delivery to the callback (the Publisher's default);
  "failures only" sets `delivery.report.only.error` (the Publisher's `success_reports=False`).
  "dicts", for scale: the raw Producer given the events as dicts, dumping and keying each.
- Publisher: `collect_engine_execution()` of the same bytes (validate=False: the key is found
  in the bytes), of the same bytes with their keys (`key=`, validate=False: the raw
  Producer's input exactly, bytes and key), of the same events as dicts (validated,
  serialized once), of the bytes (validated). Each row's ratio is to the raw row of the same
  input (the dicts' to the raw Producer of dicts, the others' to the raw bytes row) with the
  same kind of reports. The keyless bytes row is the raw Producer's input less its keys: the
  Publisher searches each event for its key (about 0.9 us), which the raw loop is handed.

Goals (issue 25): validated >= 0.8x, validate=False >= 0.95x. On a shared machine whose speed
moves by a quarter minute to minute, read the CPU column beside the ratios: the events/s of
two rows run a minute apart can differ by that much for the same work.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 python -m bench.publisher [--events 200000]
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from streams import events
from streams.config import JsonEngineConfig, KafkaConfig
from streams.publisher import Publisher, producer_settings
from streams.topics import admin_client, create_topics, topic_name

TS = 1_764_300_000_000
ENGINES = tuple(f"engine-{i:02d}" for i in range(24))

Run = Callable[[JsonEngineConfig], "Result"]
"""Sends every event to the engine-execution topic of the config."""


def payloads(count: int, seed: int) -> list[bytes]:
    """`count` valid engine_execution events as JSON bytes, the same for the same seed."""
    rng = random.Random(seed)
    return [
        orjson.dumps(events.engine_execution(rng, rng.choice(ENGINES), TS + i))
        for i in range(count)
    ]


def _warm_raw(producer: Producer, topic: str, value: bytes) -> None:
    """Connect and learn the topic's leaders before the clock starts (not counted)."""
    producer.produce(topic, value, b"warm-up")
    if producer.flush(30):
        raise SystemExit(f"warm-up event to {topic} not acknowledged: is the broker up?")


class Result:
    """One timed run: wall seconds, CPU seconds of this process (all threads), failures."""

    def __init__(self, elapsed: float, cpu: float, failed: int) -> None:
        self.elapsed, self.cpu, self.failed = elapsed, cpu, failed


def raw_run(
    values: list[bytes], keys: list[bytes], success_reports: bool, dicts: bool = False
) -> Run:
    """produce() of the bytes with their keys, a failure-counting callback on every event;
    with `dicts`, of the events as dicts, serialized (orjson) and keyed in the loop."""

    def run(cfg: JsonEngineConfig) -> Result:
        objects = [orjson.loads(value) for value in values] if dicts else []
        topic = topic_name(cfg, "engine_execution")
        settings = producer_settings(cfg)
        settings["delivery.report.only.error"] = not success_reports
        producer = Producer(settings)
        _warm_raw(producer, topic, values[0])
        failed = 0

        def report(err: KafkaError | None, msg: Message) -> None:
            nonlocal failed
            if err is not None:
                failed += 1

        produce, poll = producer.produce, producer.poll

        def send(value: bytes, key: bytes) -> None:  # only when the local queue is full
            while True:
                poll(0.05)
                try:
                    return produce(topic, value, key, on_delivery=report)
                except BufferError:
                    pass

        start, cpu = time.perf_counter(), time.process_time()
        if dicts:
            dumps = orjson.dumps
            for obj in objects:
                value, key = dumps(obj), obj["engine_id"].encode()
                try:
                    produce(topic, value, key, on_delivery=report)
                except BufferError:
                    send(value, key)
                poll(0)
        else:
            for value, key in zip(values, keys, strict=True):
                try:
                    produce(topic, value, key, on_delivery=report)
                except BufferError:
                    send(value, key)
                poll(0)  # serve delivery reports as they come, like any long-running producer
        remaining = producer.flush(120)
        return Result(time.perf_counter() - start, time.process_time() - cpu, failed + remaining)

    return run


def publisher_run(
    inputs: Callable[[], list[Any]],
    validate: bool,
    success_reports: bool,
    keys: list[bytes] | None = None,
) -> Run:
    """collect_engine_execution() of every input (with `keys`: each with its key=), then
    flush(): all acknowledged."""

    def run(cfg: JsonEngineConfig) -> Result:
        batch = inputs()
        with Publisher(
            cfg, validate=validate, delivery_timeout_s=120, success_reports=success_reports
        ) as publisher:
            publisher.collect_engine_execution(batch[0])  # warm-up, not counted
            publisher.flush()
            collect = publisher.collect_engine_execution
            start, cpu = time.perf_counter(), time.process_time()
            if keys is None:
                for payload in batch:
                    collect(payload)
            else:
                for payload, key in zip(batch, keys, strict=True):
                    collect(payload, key=key)
            publisher.flush()
            return Result(time.perf_counter() - start, time.process_time() - cpu, publisher.failed)

    return run


@dataclass(frozen=True)
class Variant:
    name: str
    run: Run
    baseline: str  # name of the raw variant its ratio is to


RAW_ALL = "raw Producer, bytes"
RAW_FAILURES = "raw Producer, bytes, failures only"
RAW_DICTS = "raw Producer, dicts (orjson.dumps + key)"
RAW_DICTS_FAILURES = "raw Producer, dicts, failures only"


def variants(values: list[bytes]) -> list[Variant]:
    keys = [orjson.loads(value)["engine_id"].encode() for value in values]

    def dicts() -> list[Any]:
        return [orjson.loads(value) for value in values]

    def same() -> list[Any]:
        return values

    return [
        Variant(RAW_ALL, raw_run(values, keys, success_reports=True), RAW_ALL),
        Variant(RAW_DICTS, raw_run(values, keys, success_reports=True, dicts=True), RAW_ALL),
        Variant("Publisher validate=False, bytes", publisher_run(same, False, True), RAW_ALL),
        Variant(
            "Publisher validate=False, bytes + key=",
            publisher_run(same, False, True, keys),
            RAW_ALL,
        ),
        Variant("Publisher validated, dicts", publisher_run(dicts, True, True), RAW_DICTS),
        Variant("Publisher validated, bytes", publisher_run(same, True, True), RAW_ALL),
        Variant(RAW_FAILURES, raw_run(values, keys, success_reports=False), RAW_FAILURES),
        Variant(
            RAW_DICTS_FAILURES,
            raw_run(values, keys, success_reports=False, dicts=True),
            RAW_FAILURES,
        ),
        Variant(
            "Publisher validate=False, bytes, f. only",
            publisher_run(same, False, False),
            RAW_FAILURES,
        ),
        Variant(
            "Publisher validate=False, bytes + key=, f. only",
            publisher_run(same, False, False, keys),
            RAW_FAILURES,
        ),
        Variant(
            "Publisher validated, dicts, failures only",
            publisher_run(dicts, True, False),
            RAW_DICTS_FAILURES,
        ),
        Variant(
            "Publisher validated, bytes, failures only",
            publisher_run(same, True, False),
            RAW_FAILURES,
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant, best kept")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
        help="default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:19092",
    )
    args = parser.parse_args(argv)

    values = payloads(args.events, args.seed)
    runs = variants(values)
    prefix = f"bench-publisher-{uuid.uuid4().hex[:8]}."
    configs = {
        (number, r): JsonEngineConfig(
            kafka=KafkaConfig(
                bootstrap_servers=args.bootstrap,
                topic_prefix=f"{prefix}v{number}r{r}.",
                partitions=args.partitions,
            )
        )
        for number in range(len(runs))
        for r in range(args.repeat)
    }
    topics = [topic_name(cfg, "engine_execution") for cfg in configs.values()]
    any_cfg = next(iter(configs.values()))
    create_topics(any_cfg, topics)

    size = sum(map(len, values)) / len(values)
    print(
        f"Publisher throughput: {args.events:,} seeded engine_execution events (~{size:.0f} B),"
        f" {args.partitions} partitions, broker {args.bootstrap}, best of {args.repeat}"
    )
    rate: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        for r in range(args.repeat):
            for number, variant in enumerate(runs):
                result = variant.run(configs[number, r])
                if result.failed:
                    raise SystemExit(f"{variant.name}: {result.failed} events not delivered")
                events_per_s = args.events / result.elapsed
                rate[variant.name] = max(rate.get(variant.name, 0.0), events_per_s)
                cpu[variant.name] = min(cpu.get(variant.name, 1e9), result.cpu / args.events)
                print(
                    f"  run {r + 1}: {variant.name:<47} {events_per_s:>10,.0f} ev/s"
                    f" {1e6 * result.cpu / args.events:>6.2f} us CPU/ev",
                    flush=True,
                )
    finally:
        admin = admin_client(any_cfg)  # kept alive until every deletion answered
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception as exc:  # a leftover topic is no reason to hide the numbers
                print(f"  (could not delete a bench topic: {exc})")

    header = f"{'variant':<47} {'events/s':>10} {'MB/s':>7} {'CPU us/ev':>10} {'x raw':>7}"
    print()
    print(header)
    print("-" * len(header))
    for variant in runs:
        best = rate[variant.name]
        print(
            f"{variant.name:<47} {best:>10,.0f} {best * size / 1e6:>7.1f}"
            f" {1e6 * cpu[variant.name]:>10.2f} {best / rate[variant.baseline]:>6.2f}x"
        )
    print(
        "x raw: events/s over those of the raw Producer of the same input (dicts: the raw"
        " Producer of dicts; else of bytes) with the same kind of reports (goal: validated"
        " >= 0.8x, validate=False >= 0.95x).\nfailures only: librdkafka reports failed"
        " deliveries only (Publisher: success_reports=False); other rows: every delivery.\n"
        "CPU: of this process (all threads, not the broker's), least of the runs."
    )


if __name__ == "__main__":
    main()
