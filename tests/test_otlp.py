"""OpenTelemetry GenAI spans in, engine executions out (issue 17).

Spans come from the real OpenTelemetry Python SDK (a TracerProvider with an in-memory
exporter) and are encoded by the OTLP exporter's own encoder into ExportTraceServiceRequests,
published raw to the OTLP topic as the Collector's kafka exporter would, in protobuf and in
OTLP/JSON: each dialect (current gen_ai.*, the older gen_ai.system one, OpenInference), error
spans, spans that are not GenAI, spans with and without captured messages. Real worker
processes turn them into engine_execution lines. Adversaries: bad records among good ones,
replays (the same record twice) with SIGKILLs in between, and the pandas twin for the
aggregates of OTLP-fed executions.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from sinks.offline.aggregate_batch import aggregate_dir
from streams.aggregates.windows import WindowState
from streams.config import JsonEngineConfig
from streams.otlp.decode import OtlpError, decode, encode_json
from streams.otlp.mapping import genai_spans, to_event
from streams.topics import create_topics, list_topics
from streams.validation import Validator
from tests.conftest import ConfigFactory
from tests.test_aggregator import AGG, FAST, T0, WIDTH, assert_matches, by_key, comparison
from tests.test_aggregator import execution as json_execution
from tests.workers import WorkerProcess, lines_of, records, wait_for_lines

MS = 1_000_000  # nanoseconds
TEXT_LIMIT = 1 << 17


class Recorder:
    """A real SDK TracerProvider of one service, its finished spans kept in memory."""

    def __init__(self, service: str | None = "chatbot", instance: str | None = "pod-1"):
        attrs = {}
        if service is not None:
            attrs["service.name"] = service
        if instance is not None:
            attrs["service.instance.id"] = instance
        # Resource.create adds the SDK's defaults, a random service.instance.id among them
        # (SDK 1.3x+); without an instance the resource is built bare, as other SDKs send it.
        resource = Resource.create(attrs) if instance is not None else Resource(attrs)
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.test_otlp", "1.0")

    def span(
        self,
        name: str,
        start_ns: int,
        duration_ns: int,
        attributes: dict[str, Any] | None = None,
        error: str | None = None,
        events: tuple[tuple[str, dict[str, Any]], ...] = (),
    ) -> None:
        span = self.tracer.start_span(name, start_time=start_ns, attributes=attributes)
        for event, attrs in events:
            span.add_event(event, attrs, timestamp=start_ns + 1)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=start_ns + duration_ns)

    def take(self) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


def request_of(*recorders: Recorder) -> ExportTraceServiceRequest:
    """The OTLP exporter's own encoding of every span the recorders finished."""
    return encode_spans([s for r in recorders for s in r.take()])


def encoded(request: ExportTraceServiceRequest, encoding: str) -> bytes:
    return request.SerializeToString() if encoding == "otlp_proto" else encode_json(request)


def messages(*items: tuple[str, str]) -> str:
    return orjson.dumps(
        [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in items]
    ).decode()


def catalogue(ts_ms: int, tag: str = "") -> tuple[list[Recorder], dict[str, dict[str, Any]]]:
    """Spans of every kind, named uniquely (suffix `tag`), and per GenAI span name the
    execution it must become (the fields the mapping decides)."""
    app, batch = Recorder(), Recorder("batch-job", None)
    t = ts_ms * MS
    expected: dict[str, dict[str, Any]] = {}

    def expect(name: str, **fields: Any) -> str:
        expected[name + tag] = fields
        return name + tag

    # Current OpenTelemetry GenAI: messages, system instructions, tokens, the newer fields
    # (cache and reasoning tokens, time to first chunk, stream, finish reasons, conversation,
    # an evaluation); the engine is the requested model, the answering one is kept aside.
    app.span(
        expect(
            "chat gpt-4o",
            engine_id="gpt-4o",
            engine_instance_id="pod-1",
            timestamp=ts_ms,
            latency_ms=41.7,
            success=True,
            status="ok",
            input="system: You are terse.\nuser: Summarise the notes.",
            output="Three fixes.",
            tokens=(12, 30),
            dialect="gen_ai",
            provider="openai",
            metrics={
                "cache_read_input_tokens": 8,
                "cache_write_input_tokens": 2,
                "reasoning_output_tokens": 10,
                "time_to_first_chunk_ms": 12.5,
            },
            fields={
                "stream": True,
                "finish_reasons": ["stop"],
                "conversation_id": "conv-7",
                "evaluations": [
                    {"name": "relevance", "score": 0.75, "label": "relevant"},
                    {"name": "toxicity", "label": "none"},
                ],
            },
            otel={"operation": "chat", "response_model": "gpt-4o-2024-08-06"},
        ),
        t,
        41_700_000,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.usage.cache_read.input_tokens": 8,
            "gen_ai.usage.cache_write.input_tokens": 2,
            "gen_ai.usage.reasoning.output_tokens": 10,
            "gen_ai.response.time_to_first_chunk": 0.0125,
            "gen_ai.request.stream": True,
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.conversation.id": "conv-7",
            "gen_ai.system_instructions": orjson.dumps(
                [{"type": "text", "content": "You are terse."}]
            ).decode(),
            "gen_ai.input.messages": messages(("user", "Summarise the notes.")),
            "gen_ai.output.messages": messages(("assistant", "Three fixes.")),
        },
        events=(
            (
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "relevance",
                    "gen_ai.evaluation.score.value": 0.75,
                    "gen_ai.evaluation.score.label": "relevant",
                },
            ),
            (
                "gen_ai.evaluation.result",
                {"gen_ai.evaluation.name": "toxicity", "gen_ai.evaluation.score.label": "none"},
            ),
            ("gen_ai.evaluation.result", {"gen_ai.evaluation.score.value": 1.0}),  # no name
        ),
    )
    # Current, an error without messages or a response model: error.type is the status.
    app.span(
        expect(
            "chat gpt-4o-mini",
            engine_id="gpt-4o-mini",
            engine_instance_id="pod-1",
            timestamp=ts_ms + 1,
            latency_ms=3.0,
            success=False,
            status="rate_limit_exceeded",
            input="",
            output="",
            tokens=(None, None),
            dialect="gen_ai",
            provider="openai",
        ),
        t + MS,
        3 * MS,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "error.type": "rate_limit_exceeded",
        },
        error="429 Too Many Requests",
    )
    # Current, error.type without an ERROR status is a failure too; only input tokens.
    app.span(
        expect(
            "embeddings",
            engine_id="text-embedding-3-small",
            engine_instance_id="pod-1",
            timestamp=ts_ms + 2,
            latency_ms=0.5,
            success=False,
            status="timeout",
            input="",
            output="",
            tokens=(8, None),
            dialect="gen_ai",
            provider="openai",
        ),
        t + 2 * MS,
        MS // 2,
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 8,
            "error.type": "timeout",
        },
    )
    # Agent and tool steps are not inferences, even when they name a model: skipped.
    app.span(
        "execute_tool get_weather" + tag,
        t + 3 * MS,
        MS,
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"},
    )
    app.span(
        "invoke_agent planner" + tag,
        t + 3 * MS,
        50 * MS,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
        },
    )
    # An inference that names no model at all: the placeholder engine, never dropped.
    app.span(
        expect(
            "chat",
            engine_id="unknown_model",
            engine_instance_id="pod-1",
            timestamp=ts_ms + 3,
            latency_ms=1.0,
            success=True,
            status="ok",
            input="",
            output="",
            tokens=(None, None),
            dialect="gen_ai",
            provider="openai",
            otel={"model_placeholder": True},
        ),
        t + 3 * MS,
        MS,
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"},
    )
    # The older dialect (OpenLLMetry): gen_ai.system, prompt/completion tokens, flattened.
    app.span(
        expect(
            "openai.chat",
            engine_id="gpt-3.5-turbo",
            engine_instance_id="pod-1",
            timestamp=ts_ms + 4,
            latency_ms=120.0,
            success=True,
            status="ok",
            input="system: Translate to French.\nuser: hello",
            output="bonjour",
            tokens=(5, 7),
            dialect="gen_ai_legacy",
            provider="openai",
        ),
        t + 4 * MS,
        120 * MS,
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-3.5-turbo",
            "gen_ai.response.model": "gpt-3.5-turbo-0125",
            "gen_ai.usage.prompt_tokens": 5,
            "gen_ai.usage.completion_tokens": 7,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Translate to French.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "hello",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "bonjour",
        },
    )
    # The older dialect with messages in span events; an ERROR status with its message.
    app.span(
        expect(
            "anthropic.chat",
            engine_id="claude-3-haiku",
            engine_instance_id="pod-1",
            timestamp=ts_ms + 5,
            latency_ms=7.25,
            success=False,
            status="overloaded",
            input="Hi",
            output="",  # a failed call's: whatever the span recorded
            tokens=(None, None),
            dialect="gen_ai_legacy",
            provider="anthropic",
        ),
        t + 5 * MS,
        7_250_000,
        {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-haiku"},
        error="overloaded",
        events=(
            ("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "Hi"}]'}),
            (
                "gen_ai.content.completion",
                {"gen_ai.completion": '[{"role": "assistant", "content": "Hello"}]'},
            ),
        ),
    )
    # Events of the later older versions: gen_ai.user.message and gen_ai.choice.
    batch.span(
        expect(
            "cohere.chat",
            engine_id="command-r",
            engine_instance_id="batch-job",
            timestamp=ts_ms + 6,
            latency_ms=2.0,
            success=True,
            status="ok",
            input="Ping",
            output="Pong",
            tokens=(3, 1),
            dialect="gen_ai_legacy",
            provider="cohere",
        ),
        t + 6 * MS,
        2 * MS,
        {
            "gen_ai.system": "cohere",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "command-r",
            "gen_ai.usage.input_tokens": 3,
            "gen_ai.usage.output_tokens": 1,
        },
        events=(
            ("gen_ai.user.message", {"content": "Ping"}),
            (
                "gen_ai.choice",
                {"index": 0, "finish_reason": "stop", "message": '{"content": "Pong"}'},
            ),
        ),
    )
    # OpenInference, messages flattened; token counts.
    batch.span(
        expect(
            "ChatCompletion",
            engine_id="mistral-7b",
            engine_instance_id="batch-job",
            timestamp=ts_ms + 7,
            latency_ms=15.0,
            success=True,
            status="ok",
            input="system: Be brief.\nuser: Why is the sky blue?",
            output="Rayleigh scattering.",
            tokens=(20, 4),
            dialect="openinference",
            provider="mistralai",
        ),
        t + 7 * MS,
        15 * MS,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "mistral-7b",
            "llm.provider": "mistralai",
            "llm.token_count.prompt": 20,
            "llm.token_count.completion": 4,
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "Be brief.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "Why is the sky blue?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Rayleigh scattering.",
        },
    )
    # OpenInference, a failed call: the model only in the invocation parameters' JSON, the
    # error's type only in the exception event.
    batch.span(
        expect(
            "ChatCompletion failed",
            engine_id="gpt-4o-mini",
            engine_instance_id="batch-job",
            timestamp=ts_ms + 8,
            latency_ms=4.0,
            success=False,
            status="openai.RateLimitError",
            input="Hello?",
            output="",
            tokens=(None, None),
            dialect="openinference",
            provider=None,
            otel={"operation": "llm"},
        ),
        t + 8 * MS,
        4 * MS,
        {
            "openinference.span.kind": "LLM",
            "llm.invocation_parameters": '{"model": "gpt-4o-mini", "temperature": 0}',
            "input.value": orjson.dumps(
                {"messages": [{"role": "user", "content": "Hello?"}], "model": "gpt-4o-mini"}
            ).decode(),
            "input.mime_type": "application/json",
        },
        error="",
        events=(
            ("exception", {"exception.type": "openai.RateLimitError", "exception.message": "429"}),
        ),
    )
    # OpenInference with input.value / output.value, an error.
    batch.span(
        expect(
            "llama generate",
            engine_id="llama-3-8b",
            engine_instance_id="batch-job",
            timestamp=ts_ms + 8,
            latency_ms=30000.0,
            success=False,
            status="deadline exceeded",
            input="Write a haiku.",
            output="",
            tokens=(None, None),
            dialect="openinference",
            provider=None,
        ),
        t + 8 * MS,
        30_000 * MS,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "llama-3-8b",
            "input.value": "Write a haiku.",
        },
        error="deadline exceeded",
    )
    # Not inferences: an OpenInference chain and prompt, and an HTTP client span.
    batch.span("ChatPromptTemplate" + tag, t + 9 * MS, MS, {"openinference.span.kind": "PROMPT"})
    batch.span("RetrievalChain" + tag, t + 9 * MS, 9 * MS, {"openinference.span.kind": "CHAIN"})
    app.span(
        "GET /v1/models" + tag,
        t + 10 * MS,
        MS,
        {"http.request.method": "GET", "server.address": "api.example"},
    )
    return [app, batch], expected


def check_event(event: dict[str, Any], want: dict[str, Any]) -> None:
    metrics = event["metrics"]
    for name in ("engine_id", "engine_instance_id", "timestamp", "status", "input", "output"):
        assert event[name] == want[name], (event["otel"]["span_name"], name)
    assert metrics["success"] is want["success"], event["otel"]["span_name"]
    assert metrics["latency_ms"] == pytest.approx(want["latency_ms"])
    assert (metrics.get("input_tokens"), metrics.get("output_tokens")) == want["tokens"]
    assert (metrics["memory_mb"], metrics["cpu_percent"]) == (0.0, 0.0)
    assert event["otel"]["dialect"] == want["dialect"]
    assert event["otel"].get("provider") == want["provider"]
    assert len(event["trace_id"]) == 32 and len(event["task_id"]) == 16
    for name, value in want.get("metrics", {}).items():
        assert metrics[name] == pytest.approx(value), name
    for name, value in want.get("fields", {}).items():
        assert event[name] == value, name
    for name, value in want.get("otel", {}).items():
        assert event["otel"][name] == value, name


def mapped(request: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], dict[str, int]]:
    spans, others = genai_spans(request)
    return [to_event(*span, TEXT_LIMIT) for span in spans], others


# -- without a broker ----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_decode_what_the_exporter_encodes(encoding: str) -> None:
    recorders, _ = catalogue(T0)
    request = request_of(*recorders)
    raw = encoded(request, encoding)
    assert decode(raw, encoding) == request
    if encoding == "otlp_json":  # OTLP/JSON: hex ids, not protobuf JSON's base64
        span = orjson.loads(raw)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
        assert len(span["spanId"]) == 16 and int(span["spanId"], 16)


def test_each_dialect_maps_as_the_readme_says() -> None:
    recorders, expected = catalogue(T0)
    events, others = mapped(request_of(*recorders))
    assert others == {"execute_tool": 1, "invoke_agent": 1, "chain": 1, "prompt": 1, "not_genai": 1}
    by_name = {e["otel"]["span_name"]: e for e in events}
    assert set(by_name) == set(expected)
    validator = Validator()
    for name, want in expected.items():
        check_event(by_name[name], want)
        validator.validate("engine_execution", by_name[name])
    assert by_name["chat gpt-4o"]["otel"]["operation"] == "chat"


def test_texts_past_the_limit_are_cut_and_said_so() -> None:
    rec = Recorder()
    long = "é" * 100_000  # 200 kB of UTF-8
    rec.span(
        "chat",
        T0 * MS,
        MS,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.input.messages": messages(("user", long)),
        },
    )
    (event,), _ = mapped(request_of(rec))
    assert len(event["input"].encode()) <= TEXT_LIMIT and event["input"] == long[: TEXT_LIMIT // 2]
    assert event["otel"]["truncated"] == ["input"]


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("otlp_proto", b"\xff\xff\xff\xff"),
        ("otlp_proto", b'{"resourceSpans": []}'),
        ("otlp_proto", b"\x10\x05"),  # parses, but holds only an unknown field
        ("otlp_json", b"{not json"),
        ("otlp_json", b"[1, 2]"),
        ("otlp_json", b'{"schema_version": 1, "engine_id": "e"}'),
        ("otlp_json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}'),
        ("otlp_json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}'),
        ("otlp_json", b'{"resourceSpans": {"a": 1}}'),
    ],
)
def test_what_is_not_a_request_is_refused(encoding: str, payload: bytes) -> None:
    with pytest.raises(OtlpError) as info:
        decode(payload, encoding)
    assert info.value.reason == "invalid_otlp"


def test_a_truncated_request_is_refused() -> None:
    recorders, _ = catalogue(T0)
    raw = request_of(*recorders).SerializeToString()
    with pytest.raises(OtlpError):
        decode(raw[: len(raw) - 7], "otlp_proto")


def test_token_sums_of_a_window_survive_state_and_merge() -> None:
    one, other = WindowState(), WindowState()
    one.add_execution(1.0, True, 10, 2)
    one.add_execution(2.0, True)
    other.add_execution(3.0, False, None, 5)
    one.merge(WindowState.from_dict(orjson.loads(orjson.dumps(other.to_dict()))))
    assert one.record("e", 0, WIDTH)["tokens"] == {"input": 10, "output": 7, "count": 2}
    assert "tokens" not in WindowState().record("e", 0, WIDTH)
    legacy = WindowState().to_dict()  # state written before tokens existed
    assert "tokens" not in legacy and WindowState.from_dict(legacy).token_count == 0


# -- real workers --------------------------------------------------------------------------


def otlp_config(encoding: str = "otlp_proto", **otlp: Any) -> dict[str, Any]:
    topic = f"otlp_spans_{uuid.uuid4().hex[:10]}"  # literal, unprefixed: one per test
    return {"otlp": {"enabled": True, "topic": topic, "encoding": encoding, **otlp}}


class Spans:
    """Publishes raw records to the OTLP topic, as the Collector's kafka exporter does (with
    `partition_traces_by_id`: a record's key is its trace id)."""

    def __init__(self, cfg: JsonEngineConfig):
        self.topic = cfg.otlp.topic
        self.producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "linger.ms": 5})

    def send(
        self, value: bytes | None, key: bytes | None = None, partition: int | None = None
    ) -> None:
        args: dict[str, Any] = {"key": key}
        if partition is not None:
            args["partition"] = partition
        while True:
            try:
                self.producer.produce(self.topic, value, **args)
                return
            except BufferError:
                self.producer.poll(0.1)

    def flush(self) -> None:
        assert self.producer.flush(60) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_values(port: int, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """A labelled metric's samples by the values of `labels`, in that order."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            text_labels, value = line.rsplit(" ", 1)
            pairs = text_labels[len(name) + 1 : -1].split(",")
            values = dict(pair.split("=", 1) for pair in pairs)
            found[tuple(values[label].strip('"') for label in labels)] = float(value)
    return found


def bad_records(encoding: str, good: bytes) -> list[bytes | None]:
    if encoding == "otlp_proto":
        return [
            b"\xff\xff\xff\xff",
            good[: len(good) - 7],
            encode_json(decode(good, encoding)),
            None,
        ]
    return [
        b"{not json",
        b"[1, 2]",
        orjson.dumps(json_execution(random.Random(1), "e", T0)),
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
        None,
    ]


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_a_worker_turns_spans_into_executions_and_bad_records_into_dead_letters(
    make_config: ConfigFactory, tmp_path: Path, encoding: str
) -> None:
    port = free_port()
    path, cfg = make_config(
        {
            **otlp_config(encoding),
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
            "metrics": {"port": port},
            "channels": FAST,
        }
    )
    create_topics(cfg)
    deadline = time.monotonic() + 15  # a new topic reaches the metadata a moment later
    while cfg.otlp.topic not in {t.name for t in list_topics(cfg)}:
        assert time.monotonic() < deadline, f"{cfg.otlp.topic} not listed"
        time.sleep(0.2)
    first, want_first = catalogue(T0, tag=" #1")
    second, want_second = catalogue(T0 + 1000, tag=" #2")
    no_start = Recorder()
    no_start.span("chat without start", 0, 5, {"gen_ai.system": "x", "gen_ai.request.model": "m"})
    good = [
        encoded(request_of(*first), encoding),
        encoded(request_of(*second, no_start), encoding),
    ]
    bad = bad_records(encoding, good[0])
    worker = WorkerProcess(path, tmp_path).start()
    spans = Spans(cfg)
    try:
        spans.send(bad[0])
        spans.send(good[0])
        for value in bad[1:]:
            spans.send(value)
        spans.send(good[1])
        spans.flush()
        expected = {**want_first, **want_second}
        wait_for_lines(cfg, "engine_execution", len(expected), timeout=90)
        wait_for_lines(cfg, "dead_letter", len(bad) + 1, timeout=60)
        time.sleep(1.5)  # the metrics are read from the counters every 0.2 s
        counts = metric_values(port, "json_engine_otlp_spans_total", "outcome", "kind")
        assert worker.alive()
        assert worker.terminate() == 0
    finally:
        worker.kill()
    events = records(lines_of(cfg, "engine_execution"))
    assert len(events) == len(expected)
    assert len({(e["trace_id"], e["task_id"]) for e in events}) == len(events)
    by_name = {e["otel"]["span_name"]: e for e in events}
    assert set(by_name) == set(expected)
    for name, want in expected.items():
        check_event(by_name[name], want)
    letters = records(lines_of(cfg, "dead_letter"))
    assert len(letters) == len(bad) + 1
    assert {d["reason"] for d in letters} == {"invalid_otlp"}
    assert {(d["channel"], d["topic"]) for d in letters} == {("otlp", cfg.otlp.topic)}
    (span_letter,) = [d for d in letters if "no start time" in d["error"]]
    assert orjson.loads(span_letter["payload"])["name"] == "chat without start"
    mapped_kinds = Counter(by_name[name]["otel"].get("operation", "inference") for name in expected)
    placeholders = Counter(
        by_name[name]["otel"].get("operation", "inference")
        for name in expected
        if by_name[name]["engine_id"] == "unknown_model"
    )
    want_counts = {("mapped", kind): n for kind, n in (mapped_kinds - placeholders).items()}
    want_counts |= {("placeholder", kind): n for kind, n in placeholders.items()}
    for kind in ("execute_tool", "invoke_agent", "chain", "prompt", "not_genai"):
        want_counts["skipped", kind] = 2  # one per catalogue
    want_counts["invalid", "inference"] = 1
    assert counts == want_counts


def span_keys(request: ExportTraceServiceRequest) -> set[tuple[str, str]]:
    """(trace id, span id) of the GenAI spans of a request, in hex."""
    return {(s.trace_id.hex(), s.span_id.hex()) for _r, s, _a, _d in genai_spans(request)[0]}


def trace_key(request: ExportTraceServiceRequest) -> bytes:
    """The record key of the Collector's `partition_traces_by_id`: the trace id."""
    return request.resource_spans[0].scope_spans[0].spans[0].trace_id


def span_batch(rng: random.Random, ts_ms: int, engines: list[str], size: int) -> Recorder:
    """`size` GenAI spans (dialects mixed) under one root span that is not GenAI: one trace."""
    rec = Recorder("svc", f"pod-{rng.randrange(3)}")
    with rec.tracer.start_as_current_span(
        "POST /answer", start_time=ts_ms * MS, end_on_exit=False
    ) as root:
        for i in range(size):
            rec.span(*genai_span(rng, rng.choice(engines), ts_ms + i))
        root.end(end_time=(ts_ms + size + 5) * MS)
    return rec


def genai_span(rng: random.Random, engine: str, ts_ms: int) -> tuple[Any, ...]:
    """Arguments of `Recorder.span` for one GenAI span of a random dialect, tokens and all."""
    dialect = rng.choice(["gen_ai", "gen_ai_legacy", "openinference"])
    tokens = (rng.randrange(1, 500), rng.randrange(1, 500)) if rng.random() < 0.8 else None
    attrs: dict[str, Any]
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    if dialect == "gen_ai":
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "p"}
        attrs["gen_ai.response.model"] = engine
        if tokens:
            attrs["gen_ai.usage.input_tokens"] = tokens[0]
            attrs["gen_ai.usage.output_tokens"] = tokens[1]
            attrs["gen_ai.usage.cache_read.input_tokens"] = tokens[0] // 2
            attrs["gen_ai.usage.reasoning.output_tokens"] = tokens[1] // 3
        if rng.random() < 0.5:  # streamed
            attrs["gen_ai.response.time_to_first_chunk"] = round(rng.uniform(0.001, 0.02), 4)
        if rng.random() < 0.3:
            score = {"gen_ai.evaluation.score.value": round(rng.random(), 3)}
            name = {"gen_ai.evaluation.name": rng.choice(["relevance", "groundedness"])}
            events = (("gen_ai.evaluation.result", {**name, **score}),)
    elif dialect == "gen_ai_legacy":
        attrs = {"gen_ai.system": "p", "gen_ai.request.model": engine}
        if tokens:
            attrs["gen_ai.usage.prompt_tokens"] = tokens[0]  # the output is not reported
    else:
        attrs = {"openinference.span.kind": "LLM", "llm.model_name": engine}
        if tokens:
            attrs["llm.token_count.prompt"] = tokens[0]
            attrs["llm.token_count.completion"] = tokens[1]
    if rng.random() < 0.3:
        attrs["gen_ai.input.messages"] = messages(("user", f"q{rng.getrandbits(32)}"))
    duration = int(rng.lognormvariate(3.5, 0.8) * MS)
    error = "boom" if rng.random() < 0.1 else None
    return f"{dialect} {engine}", ts_ms * MS, duration, attrs, error, events


@pytest.mark.slow
def test_replays_and_sigkills_give_each_span_once(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            **otlp_config("otlp_proto"),
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
            "channels": {"engine_execution": {"auto_flush_seconds": 0.2, "roll_seconds": 0.5}},
        }
    )
    create_topics(cfg)
    rng = random.Random(17)
    engines = ["gpt-4o", "claude", "llama"]
    batches = []
    for i in range(240):
        request = request_of(span_batch(rng, T0 + 10 * i, engines, rng.randrange(1, 6)))
        batches.append((request.SerializeToString(), trace_key(request), span_keys(request)))
    expected = set().union(*(keys for _raw, _key, keys in batches))
    # Every record is published twice, its copy up to a dozen records later (a Collector
    # retry), in another partition (the exporter's default: no key), so that two workers may
    # read the copies; the executions' own keys make them meet.
    plan: list[int] = []
    pending: list[tuple[int, int]] = []
    for i in range(len(batches)):
        plan.append(i)
        pending.append((i, len(plan) + rng.randrange(0, 12)))
        for item in [p for p in pending if p[1] <= len(plan)]:
            plan.append(item[0])
            pending.remove(item)
    plan += [i for i, _ in pending]
    assert len(plan) == 2 * len(batches)
    spans = Spans(cfg)
    worker = WorkerProcess(path, tmp_path).start()

    sent: Counter[int] = Counter()
    partitions = cfg.kafka.partitions

    def send(i: int) -> None:
        """Each copy of record i in the next partition."""
        spans.send(batches[i][0], partition=(i + sent[i]) % partitions)
        sent[i] += 1

    def feed() -> None:
        for start in range(0, len(plan), 20):  # ~6 s: the kills fall while it flows
            for i in plan[start : start + 20]:
                send(i)
            spans.flush()
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 2.5))
            worker.kill()
            worker.start(wait_ready=False)
        feeder.join()
        wait_for_lines(cfg, "engine_execution", len(expected), timeout=120)
        # Killed once all is committed, then the last records replayed: the next owner
        # reads the ids of their hours from the finished files and drops them.
        worker.kill()
        for i in plan[-40:]:
            send(i)
        for partition in range(cfg.kafka.partitions):  # read up to here: the copies were read
            request = request_of(span_batch(rng, T0 + 100_000 + partition, engines, 1))
            expected |= span_keys(request)
            spans.send(request.SerializeToString(), partition=partition)
        spans.flush()
        worker.start()
        wait_for_lines(cfg, "engine_execution", len(expected), timeout=120)
        time.sleep(2)  # time for a duplicate to show, were there one
        assert worker.terminate() == 0
    finally:
        worker.kill()
    got = [(e["trace_id"], e["task_id"]) for e in records(lines_of(cfg, "engine_execution"))]
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
    assert set(got) == expected


def test_aggregates_over_otlp_fed_executions_with_copies_equal_the_twin(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            **otlp_config("otlp_json"),
            "aggregation": {**AGG, "idle_seconds": 300},  # windows close by stream time alone
            "channels": FAST,
            "training": {"enabled": False},
        }
    )
    create_topics(cfg)
    rng = random.Random(23)
    engines = [f"model-{i}" for i in range(4)]
    windows = 5
    spans = Spans(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    sent = 0
    try:
        for w in range(windows):
            # A window's records, a few spans each as a Collector batches them; the next
            # window only once these are executions, so that every partition of the
            # execution topic sees them in time order (none late).
            start = T0 + w * WIDTH
            for r in range(12):
                rec = Recorder("svc", f"pod-{r % 3}")
                size = rng.randrange(1, 5)
                for _ in range(size):
                    ts = start + r * 200 + rng.randrange(200)
                    rec.span(*genai_span(rng, rng.choice(engines), ts))
                sent += size
                request = request_of(rec)
                spans.send(encode_json(request), key=trace_key(request))
                if r % 3 == 0:  # a Collector retry's copy, in any partition: counted once
                    copy = rng.randrange(cfg.kafka.partitions)
                    spans.send(encode_json(request), partition=copy)
            spans.flush()
            assert len(wait_for_lines(cfg, "engine_execution", sent, timeout=60)) == sent
        # Close every window: one far-ahead execution and comparison per partition.
        ahead = T0 + (windows + 3) * WIDTH
        closer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        prefix = cfg.kafka.topic_prefix
        for p in range(cfg.kafka.partitions):
            execution = json_execution(rng, engines[0], ahead)
            closer.produce(prefix + "engine-execution", orjson.dumps(execution), partition=p)
            cmp = comparison(rng, engines, ahead)
            closer.produce(prefix + "comparison-result", orjson.dumps(cmp), partition=p)
        assert closer.flush(30) == 0
        wait_for_lines(cfg, "engine_execution", sent + cfg.kafka.partitions, timeout=60)
        expected = aggregate_dir(cfg.output.base_path, config=cfg, grace_seconds=1)
        expected = [r for r in expected if r["window_start"] < T0 + windows * WIDTH]
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=90)
        time.sleep(1)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    streamed = {k: r for k, r in streamed.items() if k[1] < T0 + windows * WIDTH}
    assert set(streamed) == {(r["engine_id"], r["window_start"]) for r in expected}
    assert sum(r["count"] for r in expected) == sent  # nothing was late
    with_tokens = 0
    for record in expected:
        got = streamed[(record["engine_id"], record["window_start"])]
        assert_matches(got, record)
        assert got.get("tokens") == record.get("tokens")
        with_tokens += "tokens" in record
    assert with_tokens > 0
