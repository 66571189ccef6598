"""The real OpenTelemetry Collector between the SDK and the worker (issue 24).

Spans made with the real Python SDK (current `gen_ai.*` chat spans, some failed, under an
HTTP server span and an `invoke_agent` span that names a model too) go over OTLP/HTTP, by the
SDK's own exporter, into a real Collector (otelcol v0.165.0, its OTLP receiver, contrib's
kafka exporter v0.165.1: streams/local/otelcol.py), which writes them to a 3-partition topic
of the test broker in either encoding, keyed by trace id or not. Real workers turn them into
engine_execution lines. Adversaries: a SIGKILL of the worker in the middle (a new one
resumes), and batches exported twice, as a client retry that the Collector forwards twice
(unkeyed, the copy lands in another partition: the exporter's sticky partitioner never takes
the last batch's partition again).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from streams.brokers import watermarks
from streams.config import JsonEngineConfig
from streams.local import otelcol, processes
from streams.otlp.decode import decode
from streams.topics import create_topics, list_topics
from tests.conftest import ConfigFactory
from tests.test_aggregator import FAST
from tests.test_otlp import Recorder
from tests.workers import WorkerProcess, lines_of, records, wait_for_lines

FIRST_PORT = int(os.environ.get("JSON_ENGINE_TEST_OTELCOL_PORT", "19400"))
PORTS = range(FIRST_PORT, FIRST_PORT + 100)
PARTITIONS = 3
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")
Key = tuple[str, str]  # (trace id, span id) in hex


def collector_port() -> int:
    """A free port of the Collector tests' own range (another test run may use others)."""
    offset = random.randrange(len(PORTS))
    for i in range(len(PORTS)):
        port = PORTS[(offset + i) % len(PORTS)]
        if not processes.port_taken(port):
            return port
    raise AssertionError(f"no free port in {PORTS}")


StartCollector = Callable[[JsonEngineConfig, bool], otelcol.LocalCollector]


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[StartCollector]:
    """Starts a Collector for the worker config's OTLP topic and encoding; stops it by PID."""
    started: list[otelcol.LocalCollector] = []

    def start(cfg: JsonEngineConfig, by_trace_id: bool) -> otelcol.LocalCollector:
        port = collector_port()
        config = otelcol.kafka_config(
            port, cfg.kafka.bootstrap_servers, cfg.otlp.topic, cfg.otlp.encoding, by_trace_id
        )
        collector = otelcol.up(config, port, tmp_path / f"otelcol-{len(started)}")
        started.append(collector)
        return collector

    yield start
    for collector in started:
        otelcol.down(collector)


class Traffic:
    """Traces as an instrumented chat service makes them: an HTTP server span, an agent span
    under it that names its model, and one or two chat calls under that, some failing.
    Remembers what each chat span must become."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.recorder = Recorder("chatbot", "pod-1")
        self.calls: dict[Key, dict[str, Any]] = {}  # chat spans: the execution they give
        self.others: dict[Key, str] = {}  # agent and HTTP spans: their names

    def batch(self, traces: int) -> list[ReadableSpan]:
        for _ in range(traces):
            self.trace()
        return self.recorder.take()

    def trace(self) -> None:
        tracer, rng = self.recorder.tracer, self.rng
        model = rng.choice(MODELS)
        http_attrs = {"http.request.method": "POST", "http.route": "/chat", "url.scheme": "http"}
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as server:
            server.set_attributes({**http_attrs, "http.response.status_code": 200})
            agent_attrs = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "openai",
                "gen_ai.agent.name": "helper",
                "gen_ai.request.model": model,
            }
            with tracer.start_as_current_span("invoke_agent helper", attributes=agent_attrs) as a:
                for _ in range(rng.randrange(1, 3)):
                    self.chat(model)
            self.others[self.key(a)] = a.name
        self.others[self.key(server)] = server.name

    def chat(self, model: str) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "server.address": "api.example",
        }
        failed = self.rng.random() < 0.25
        want: dict[str, Any] = {"engine_id": model, "success": not failed}
        if failed:
            attrs["error.type"] = "429"
        else:
            tokens = (self.rng.randrange(1, 900), self.rng.randrange(1, 900))
            want["response_model"] = f"{model}-2025-01-01"  # the engine is the model asked for
            want["tokens"] = tokens
            attrs["gen_ai.response.model"] = want["response_model"]
            attrs["gen_ai.usage.input_tokens"] = tokens[0]
            attrs["gen_ai.usage.output_tokens"] = tokens[1]
        tracer = self.recorder.tracer
        with tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs, record_exception=False
        ) as span:
            if failed:
                span.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
        self.calls[self.key(span)] = want

    @staticmethod
    def key(span: Any) -> Key:
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def export(exporter: OTLPSpanExporter, spans: list[ReadableSpan], times: int = 1) -> None:
    """The SDK exporter's own export(), `times` times: a second one is a client's retry of
    the same batch, which the Collector takes as new spans and forwards again."""
    for i in range(times):
        if i:
            time.sleep(0.1)  # the first copy's produce batch is sent: the copy starts another
        assert exporter.export(spans) is SpanExportResult.SUCCESS


def topic_spans(cfg: JsonEngineConfig) -> dict[Key, list[int]]:
    """Per span on the OTLP topic, the partition of each of its copies."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"otelcol-check-{random.getrandbits(32)}",
            "enable.auto.commit": False,
        }
    )
    ends = {
        p: watermarks(consumer, TopicPartition(cfg.otlp.topic, p))[1] for p in range(PARTITIONS)
    }
    consumer.assign([TopicPartition(cfg.otlp.topic, p, 0) for p in range(PARTITIONS)])
    found: dict[Key, list[int]] = defaultdict(list)
    read = Counter[int]()
    deadline = time.monotonic() + 30
    while any(read[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        read[msg.partition()] = msg.offset() + 1
        request = decode(msg.value(), cfg.otlp.encoding)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found[(span.trace_id.hex(), span.span_id.hex())].append(msg.partition())
    consumer.close()
    return found


def problems(events: list[dict[str, Any]], traffic: Traffic) -> list[str]:
    """What differs from one execution per chat span and none for any other span."""
    found: list[str] = []
    keys = Counter((e["trace_id"], e["task_id"]) for e in events)
    twice = [k for k in traffic.calls if keys[k] > 1]
    if twice:
        found.append(f"{len(twice)} of {len(traffic.calls)} chat spans gave more than one line")
    missing = set(traffic.calls) - set(keys)
    if missing:
        found.append(f"{len(missing)} of {len(traffic.calls)} chat spans gave no line")
    others = Counter(traffic.others[k] for k in keys if k in traffic.others)
    if others:
        found.append(f"spans that are no inference gave lines: {dict(others)}")
    unknown = set(keys) - set(traffic.calls) - set(traffic.others)
    if unknown:
        found.append(f"{len(unknown)} lines of spans never sent")
    for event in events:
        want = traffic.calls.get((event["trace_id"], event["task_id"]))
        if want is None:
            continue
        metrics = event["metrics"]
        got = {"engine_id": event["engine_id"], "success": metrics["success"]}
        if "tokens" in want:
            got["tokens"] = (metrics.get("input_tokens"), metrics.get("output_tokens"))
            got["response_model"] = event.get("otel", {}).get("response_model")
        if got != want or event["engine_instance_id"] != "pod-1":
            found.append(f"span {event['task_id']}: {got} instead of {want}")
    return found


def run_through_collector(
    make_config: ConfigFactory,
    start_collector: StartCollector,
    tmp_path: Path,
    topic_prefix: str,
    encoding: str,
    by_trace_id: bool,
    sigkill: bool,
) -> tuple[Traffic, list[dict[str, Any]], dict[Key, list[int]]]:
    """SDK → Collector → topic → worker, some batches exported twice, and (`sigkill`) the
    worker killed in the middle and started again; returns the traffic, the execution lines
    and the topic's copies."""
    path, cfg = make_config(
        {
            "otlp": {"enabled": True, "topic": f"{topic_prefix}otlp-spans", "encoding": encoding},
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
            "channels": FAST,
        }
    )
    create_topics(cfg)  # the OTLP topic too, with kafka.partitions before the Collector writes
    topics = {t.name: t.partitions for t in list_topics(cfg)}
    assert topics[cfg.otlp.topic] == PARTITIONS
    collector = start_collector(cfg, by_trace_id)
    exporter = OTLPSpanExporter(endpoint=collector.traces_endpoint, timeout=10)
    traffic = Traffic(seed=24 + by_trace_id)
    worker = WorkerProcess(path, tmp_path).start()
    try:
        export(exporter, traffic.batch(3))
        export(exporter, traffic.batch(3), times=2)
        assert wait_for_lines(cfg, "engine_execution", 1, timeout=60), worker.tail()
        # In the middle: more batches, one of them twice, and the worker killed as they flow.
        export(exporter, traffic.batch(3))
        export(exporter, traffic.batch(2), times=2)
        if sigkill:
            worker.kill()
        export(exporter, traffic.batch(3), times=2)  # while no worker runs
        if sigkill:
            worker.start()
        export(exporter, traffic.batch(3))
        export(exporter, traffic.batch(2), times=2)
        wait_for_lines(cfg, "engine_execution", len(traffic.calls), timeout=60)
        time.sleep(1.5)  # time for a second line of a span to show, were there one
        assert worker.terminate() == 0
    finally:
        worker.kill()
        exporter.shutdown()
    assert b"Everything is ready" in collector.log()
    return traffic, records(lines_of(cfg, "engine_execution")), topic_spans(cfg)


# Both encodings for each partitioning; the SIGKILL costs about 20 s (the killed worker's
# open transaction blocks the next one's offsets until the broker aborts it), so each
# partitioning gets it in one encoding, and each encoding in one partitioning.
@pytest.mark.parametrize(
    ("encoding", "sigkill"), [("otlp_proto", True), ("otlp_json", False)], ids=["proto", "json"]
)
def test_collector_keyed_by_trace_id_gives_each_call_once(
    make_config: ConfigFactory,
    start_collector: StartCollector,
    tmp_path: Path,
    topic_prefix: str,
    encoding: str,
    sigkill: bool,
) -> None:
    traffic, events, copies = run_through_collector(
        make_config, start_collector, tmp_path, topic_prefix, encoding, True, sigkill
    )
    assert set(traffic.calls) <= set(copies)
    assert any(len(parts) > 1 for parts in copies.values()), "no span was sent twice"
    # Keyed by trace id, a span's copies all land in its trace's partition.
    assert all(len(set(parts)) == 1 for parts in copies.values())
    assert not problems(events, traffic), "\n".join(problems(events, traffic))


@pytest.mark.parametrize(
    ("encoding", "sigkill"), [("otlp_proto", False), ("otlp_json", True)], ids=["proto", "json"]
)
def test_collector_unkeyed_gives_each_call_once(
    make_config: ConfigFactory,
    start_collector: StartCollector,
    tmp_path: Path,
    topic_prefix: str,
    encoding: str,
    sigkill: bool,
) -> None:
    traffic, events, copies = run_through_collector(
        make_config, start_collector, tmp_path, topic_prefix, encoding, False, sigkill
    )
    assert set(traffic.calls) <= set(copies)
    # Unkeyed (the exporter's default), the copies of a retried batch are in other partitions.
    assert any(len(set(parts)) > 1 for parts in copies.values()), "no copy changed partition"
    assert not problems(events, traffic), "\n".join(problems(events, traffic))
