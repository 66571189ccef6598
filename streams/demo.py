"""`json-engine demo`: the whole pipeline on a local broker with generated events."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console

from sinks.atomic import atomic_write
from sinks.offline.report import render_html
from sinks.reader import channel_dir, iter_lines, read_records
from streams import events
from streams.brokers import QuietLog, retry
from streams.config import CHANNELS, JsonEngineConfig, load_config
from streams.local import kafka as local_kafka
from streams.otlp.produce import request_of
from streams.publisher import DeliveryError, Publisher
from streams.topics import consumer_group, create_topics, topic_name

ENGINES = [f"engine-{name}" for name in ("alpha", "beta", "gamma", "delta")]
# How much better each engine's answers score (comparisons' judges), and what it costs per
# million tokens (input, output): the report's frontier shows the trade-off.
STRENGTHS = {"engine-alpha": 0.8, "engine-beta": 1.0, "engine-gamma": 1.1, "engine-delta": 1.25}
CATEGORIES = ("coding", "writing", "math")  # the report rates each on its own
PRICES = {
    "engine-alpha": (0.15, 0.60),
    "engine-beta": (0.50, 1.50),
    "engine-gamma": (5.00, 15.00),
    "engine-delta": (2.50, 10.00),
}
INVALID_PAYLOADS = [
    b"{this is not json",
    b'{"schema_version": 1, "engine_id": "engine-alpha"}',
    orjson.dumps({"trace_id": 7, "metrics": {"latency_ms": -5}}),
    b"\xff\xfe not utf-8",
]


WINDOW_MINUTES = 0.1  # 6 s windows, so that a short demo closes several of them
GRACE_SECONDS = 1.0
WORKERS = 2
OTLP_SHARE = 4  # one execution in four arrives as an OpenTelemetry GenAI span
SPANS_PER_RECORD = 5  # GenAI spans per ExportTraceServiceRequest, as a Collector batches


def write_config(path: Path, bootstrap: str, prefix: str, output: Path, otlp_topic: str) -> None:
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": 6},
        "output": {"base_path": str(output)},
        "channels": {c: {"auto_flush_seconds": 0.5, "roll_seconds": 2.0} for c in CHANNELS},
        "aggregation": {
            "window_minutes": WINDOW_MINUTES,
            "grace_seconds": GRACE_SECONDS,
            "idle_seconds": 15,
            "checkpoint_seconds": 0.5,
        },
        "otlp": {"enabled": True, "topic": otlp_topic, "encoding": "otlp_proto"},
        "pricing": {
            "currency": "USD",
            "prices": [
                {"engine": engine, "valid_from": "2024-01-01", "input": i, "output": o}
                for engine, (i, o) in PRICES.items()
            ],
        },
    }
    path.write_text(yaml.safe_dump({"json_engine": config}))


def expected_windows(executions: list[dict]) -> int:
    """(engine, window) pairs whose window ends, plus grace, before the last event."""
    width = int(WINDOW_MINUTES * 60_000)
    last = max(e["timestamp"] for e in executions)
    starts = {(e["engine_id"], e["timestamp"] - e["timestamp"] % width) for e in executions}
    return sum(1 for _, start in starts if start + width + GRACE_SECONDS * 1000 <= last)


def publish_events(
    cfg: JsonEngineConfig, count: int, seed: int = 7
) -> tuple[dict[str, int], list[dict]]:
    """Valid events of all three types through the Publisher, invalid ones through a raw client;
    event times spread over 30 s of the recent past, so that aggregate windows close.

    The earliest quarter of the executions goes first, as GenAI spans on the OTLP topic (what
    the OpenTelemetry Collector's kafka exporter writes), with one record that is not OTLP;
    the rest is published once a worker has turned those into executions (committed its
    offsets), so that every partition sees its executions in time order (none late)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    step = max(1, 30_000 // count)
    sent = {"engine_execution": 0, "comparison_result": 0, "training_sample": 0}
    executions = [
        events.engine_execution(rng, ENGINES[i % len(ENGINES)], now - (count - i) * step)
        for i in range(count)
    ]
    spans = count // OTLP_SHARE
    publish_spans(cfg, rng, executions[:spans])
    sent["otlp_spans"] = spans
    wait_committed(cfg, cfg.otlp.topic)
    with Publisher(cfg) as publisher:
        for i, execution in enumerate(executions):
            ts = execution["timestamp"]
            if i >= spans:  # usage as an SDK reports it (the spans carry theirs)
                metrics = execution["metrics"]
                metrics["input_tokens"] = events.token_count(execution["input"])
                metrics["output_tokens"] = events.token_count(execution["output"])
                publisher.collect_engine_execution(execution)
                sent["engine_execution"] += 1
            if i % 5 == 0:
                comparison = events.comparison_result(
                    rng, ENGINES, ts, STRENGTHS, CATEGORIES, tie_share=0.2
                )
                publisher.collect_comparison_result(comparison)
                sent["comparison_result"] += 1
            if i % 10 == 0:
                publisher.collect_training_sample(events.training_sample(rng, ts))
                sent["training_sample"] += 1
    raw = Producer({**cfg.kafka.client_config(), "logger": QuietLog()})
    for payload in INVALID_PAYLOADS:  # any Kafka client may produce, so the worker validates
        raw.produce(topic_name(cfg, "engine_execution"), payload)
    flush(cfg, raw, "invalid payloads")
    sent["invalid"] = len(INVALID_PAYLOADS) + 1  # and the record on the OTLP topic
    return sent, executions


def publish_spans(cfg: JsonEngineConfig, rng: random.Random, executions: list[dict]) -> None:
    """Executions as GenAI spans, a few per record keyed by trace id (the Collector's
    `partition_traces_by_id`), and one record that is not OTLP (a dead letter)."""
    producer = Producer({**cfg.kafka.client_config(), "linger.ms": 5, "logger": QuietLog()})
    for start in range(0, len(executions), SPANS_PER_RECORD):
        request = request_of(rng, executions[start : start + SPANS_PER_RECORD])
        key = request.resource_spans[0].scope_spans[0].spans[0].trace_id
        producer.produce(cfg.otlp.topic, request.SerializeToString(), key)
    producer.produce(cfg.otlp.topic, b"not an ExportTraceServiceRequest")
    flush(cfg, producer, "OTLP spans")


def flush(cfg: JsonEngineConfig, producer: Producer, what: str, timeout: float = 30) -> None:
    """Wait for the broker's acknowledgements (librdkafka retries what it may meanwhile)."""
    left = producer.flush(timeout)
    if left:
        raise DeliveryError(
            f"{left} {what} not acknowledged within {timeout:.0f}s by {cfg.kafka.bootstrap_servers}"
        )


def wait_committed(cfg: JsonEngineConfig, topic: str, timeout: float = 60) -> None:
    """Until the workers' group has committed every record of `topic` (the executions derived
    from them are published in the same transactions). A broker that has just started may
    answer that its group coordinator is not there yet (NOT_COORDINATOR, load in progress):
    each call is retried (streams/brokers.py)."""
    group = consumer_group(cfg, topic)
    consumer = Consumer({**cfg.kafka.client_config(), "group.id": group, "logger": QuietLog()})
    what = f"the offsets of group {group}"
    try:
        metadata = retry(lambda t: consumer.list_topics(topic, timeout=t), f"metadata of {topic}")
        tps = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = retry(lambda t: consumer.committed(tps, timeout=t), what)
            ends = [
                retry(lambda t, tp=tp: consumer.get_watermark_offsets(tp, timeout=t)[1], what)
                for tp in tps
            ]
            if all(c.offset >= end for c, end in zip(committed, ends, strict=True)):
                return
            time.sleep(0.25)
    finally:
        consumer.close()


def count_lines(cfg: JsonEngineConfig) -> dict[str, int]:
    return {
        c: sum(
            1 for _ in iter_lines(channel_dir(cfg.output.base_path, cfg.channels.get(c).filename))
        )
        for c in CHANNELS
    }


def run_demo(
    port: int,
    events_count: int,
    output_root: Path,
    console: Console,
    data_dir: Path | None = None,
) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        console.print(f"starting a local Kafka on 127.0.0.1:{port} (first run downloads it)…")
        bootstrap = local_kafka.up(port, data_dir).bootstrap
    run_id = time.strftime("%Y%m%d-%H%M%S")
    prefix = f"demo-{run_id}."
    output = (output_root / f"demo-{run_id}").resolve()
    output.mkdir(parents=True, exist_ok=True)
    config_path = output / "json-engine.yaml"
    write_config(config_path, bootstrap, prefix, output, f"otlp_spans_demo-{run_id}")
    cfg = load_config(config_path)
    # One partition: a burst of spans read one partition after another would reach the
    # execution topic out of time order (late, past the 1 s grace); a live feed would not.
    create_topics(cfg, [cfg.otlp.topic], partitions=1)
    create_topics(cfg)
    console.print(f"broker {bootstrap}, topics {prefix}* and {cfg.otlp.topic}, output {output}")
    workers = []
    for n in range(WORKERS):  # one consumer group: they share the partitions
        with open(output / f"worker-{n}.log", "wb") as log:
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "streams.cli",
                        "worker",
                        "--config",
                        str(config_path),
                        "-l",
                        os.environ.get("JSON_ENGINE_DEMO_LOGLEVEL", "warn"),
                        "--log-format",
                        "text",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        sent, executions = publish_events(cfg, events_count)
        console.print(f"published {sent}")
        expected = {
            "engine_execution": sent["engine_execution"] + sent["otlp_spans"],
            "comparison_result": sent["comparison_result"],
            # one per qualifying comparison, plus the samples published directly
            "training_sample": sent["training_sample"],
            "dead_letter": sent["invalid"],
            "aggregated_stats": expected_windows(executions),
        }
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and all(w.poll() is None for w in workers):
            counts = count_lines(cfg)
            if all(counts[c] >= n for c, n in expected.items()):
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(60) for worker in workers]
    counts = count_lines(cfg)
    code = max(codes, key=abs)
    console.print(f"\nworkers exited with {codes}; lines per channel:")
    for channel in CHANNELS:
        where = channel_dir(cfg.output.base_path, cfg.channels.get(channel).filename)
        console.print(f"  {channel:<18} {counts[channel]:>7}  {where}/")
    missing = {c: n - counts[c] for c, n in expected.items() if counts[c] < n}
    if missing or code != 0:
        console.print(f"[red]demo incomplete: missing {missing}; see {output}/worker-*.log[/]")
        return 1
    report = output / "report.html"
    stats = read_records(channel_dir(output, cfg.channels.aggregated_stats.filename))
    from sinks.offline.leaderboard import load_comparisons  # scikit-learn: slow to import

    battles = load_comparisons(channel_dir(output, cfg.channels.comparison_result.filename))
    atomic_write(report, render_html(stats, "json-engine demo", battles).encode())
    console.print(f"report: {report}")
    console.print(f"try: json-engine cat dead_letter --config {config_path}")
    return 0
