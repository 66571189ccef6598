"""GenAI spans as an instrumented application and the Collector would put them on Kafka.

For the demo (`json-engine demo` sends a share of its executions this way) and for anyone who
wants to try the OTLP input without a Collector: engine_execution-like dicts become GenAI spans
of one of the three dialects, in an ExportTraceServiceRequest built with opentelemetry-proto's
messages (the OpenTelemetry SDK is not needed at run time). Each request also holds one span
that is not GenAI (an HTTP server span), which the worker skips and counts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from streams.events import token_count

DIALECTS = ("gen_ai", "gen_ai_legacy", "openinference")
MS = 1_000_000


def request_of(
    rng: random.Random, executions: Sequence[dict[str, Any]], service: str = "demo-app"
) -> ExportTraceServiceRequest:
    """One request: per execution a GenAI span (dialects in turn), grouped by
    engine_instance_id as resource service.instance.id, and one HTTP span."""
    request = ExportTraceServiceRequest()
    by_instance: dict[str, Any] = {}
    first = None
    for n, execution in enumerate(executions):
        instance = execution["engine_instance_id"]
        scope = by_instance.get(instance)
        if scope is None:
            resource_spans = request.resource_spans.add()
            _set(resource_spans.resource.attributes, "service.name", service)
            _set(resource_spans.resource.attributes, "service.instance.id", instance)
            scope = resource_spans.scope_spans.add()
            scope.scope.name = "json-engine.demo"
            by_instance[instance] = scope
        span = scope.spans.add()
        genai_span(rng, span, execution, DIALECTS[n % len(DIALECTS)])
        if first is None:
            first = span
    if first is not None:
        http = request.resource_spans[0].scope_spans[0].spans.add()
        http.trace_id = first.trace_id
        http.span_id = rng.randbytes(8)
        http.name = "POST /answer"
        http.kind = Span.SPAN_KIND_SERVER
        http.start_time_unix_nano = first.start_time_unix_nano
        http.end_time_unix_nano = first.end_time_unix_nano + MS
        _set(http.attributes, "http.request.method", "POST")
        _set(http.attributes, "http.response.status_code", 200)
    return request


def genai_span(rng: random.Random, span: Span, execution: dict[str, Any], dialect: str) -> None:
    """Fill `span` with what the execution says, as instrumentations of `dialect` record it."""
    metrics = execution["metrics"]
    span.trace_id = rng.randbytes(16)
    span.span_id = rng.randbytes(8)
    span.kind = Span.SPAN_KIND_CLIENT
    start = execution["timestamp"] * MS
    span.start_time_unix_nano = start
    span.end_time_unix_nano = start + round(metrics["latency_ms"] * MS)
    model, prompt, answer = execution["engine_id"], execution["input"], execution["output"]
    tokens_in, tokens_out = token_count(prompt), token_count(answer)
    a = span.attributes
    if dialect == "gen_ai":
        span.name = f"chat {model}"
        for key, value in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", model),
            ("gen_ai.response.model", model),
            ("gen_ai.usage.input_tokens", tokens_in),
            ("gen_ai.usage.output_tokens", tokens_out),
            ("gen_ai.input.messages", _messages("user", prompt)),
        ):
            _set(a, key, value)
        if answer:
            _set(a, "gen_ai.output.messages", _messages("assistant", answer))
    elif dialect == "gen_ai_legacy":
        span.name = "openai.chat"
        for key, value in (
            ("gen_ai.system", "openai"),
            ("gen_ai.request.model", model),
            ("gen_ai.usage.prompt_tokens", tokens_in),
            ("gen_ai.usage.completion_tokens", tokens_out),
            ("gen_ai.prompt.0.role", "user"),
            ("gen_ai.prompt.0.content", prompt),
        ):
            _set(a, key, value)
        if answer:
            _set(a, "gen_ai.completion.0.role", "assistant")
            _set(a, "gen_ai.completion.0.content", answer)
    else:
        span.name = "ChatCompletion"
        for key, value in (
            ("openinference.span.kind", "LLM"),
            ("llm.model_name", model),
            ("llm.provider", "openai"),
            ("llm.token_count.prompt", tokens_in),
            ("llm.token_count.completion", tokens_out),
            ("input.value", prompt),
        ):
            _set(a, key, value)
        if answer:
            _set(a, "output.value", answer)
    if not metrics["success"]:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = execution["status"]
        if dialect != "openinference":
            _set(a, "error.type", execution["status"])


def _messages(role: str, text: str) -> str:
    return orjson.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}]).decode()


def _set(attributes: Any, key: str, value: str | int) -> None:
    kv = attributes.add()
    kv.key = key
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
