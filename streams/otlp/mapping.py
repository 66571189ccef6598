"""OpenTelemetry GenAI spans → engine_execution events (README → OpenTelemetry input).

A span is a GenAI span when it carries `gen_ai.operation.name` or `gen_ai.provider.name`
(current conventions), `gen_ai.system` (the older ones: OpenLLMetry and semantic conventions
before 1.37), or `openinference.span.kind` = LLM (OpenInference). Any other span is skipped.
Each GenAI span maps to one event; where two attributes may hold a value, the first present
wins, whatever the dialect (instrumentations mix them):

- engine_id: gen_ai.response.model, gen_ai.request.model, llm.model_name (none: skipped);
- trace_id / task_id: the trace id (32 hex) / the span id (16 hex);
- engine_instance_id: resource service.instance.id, service.name, else "unknown_service";
- timestamp: the start time in epoch ms (floored); metrics.latency_ms: end - start in ms;
- metrics.success: the status is not ERROR and there is no error.type; status: "ok", else
  error.type, else the status message, else "error";
- input / output: the captured messages as text, else "" (below);
- metrics.input_tokens: gen_ai.usage.input_tokens, gen_ai.usage.prompt_tokens,
  llm.token_count.prompt; metrics.output_tokens: gen_ai.usage.output_tokens,
  gen_ai.usage.completion_tokens, llm.token_count.completion (integers from 0 to 10^12, the
  schema's range, else left out);
- metrics.memory_mb / cpu_percent: 0 (a span does not measure them);
- otel: the dialect, the span name, gen_ai.operation.name and the provider
  (gen_ai.provider.name, gen_ai.system, llm.provider, llm.system).

Captured messages, the first source present: gen_ai.input.messages / gen_ai.output.messages
(with gen_ai.system_instructions before the input); OpenLLMetry's gen_ai.prompt.N.* /
gen_ai.completion.N.*; OpenInference's llm.input_messages.N.message.* /
llm.output_messages.N.message.*, else input.value / output.value; span events of older
versions (gen_ai.content.prompt / gen_ai.content.completion, gen_ai.{system,user,assistant,
tool}.message / gen_ai.choice). One message is its text; several are "role: text" lines. The
text parts of a message are its text; other parts (tool calls, ...) are kept as compact JSON.
Each of input and output is cut to `max_text_bytes` of UTF-8 (listed in otel.truncated).
"""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

STATUS_ERROR = Status.STATUS_CODE_ERROR
UNKNOWN_SERVICE = "unknown_service"  # the SDKs' own default service.name
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
MAX_TOKENS = 10**12  # engine_execution's metrics.*_tokens maximum
INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
INPUT_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
# Fields of a flattened message 0: a span with flattened messages has one of them.
_FIRST_FIELDS = ("role", "content", "message.role", "message.content")
Attributes = dict[str, AnyValue]
Message = tuple[str | None, str]  # (role, text)


class SpanError(ValueError):
    """A GenAI span that cannot be an engine_execution (ids, times): dead-lettered."""


class NoModel(Exception):
    """A GenAI span that names no model (a tool or agent step): skipped and counted."""


def value_of(value: AnyValue) -> Any:
    """An attribute's value as plain Python (lists and dicts for arrays and key-value lists)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(span: Any) -> Attributes:
    return {kv.key: kv.value for kv in span.attributes}


def dialect_of(attrs: Attributes) -> str | None:
    """gen_ai, gen_ai_legacy, openinference, or None for a span that is not GenAI."""
    if "gen_ai.provider.name" in attrs:
        return "gen_ai"
    if "gen_ai.system" in attrs:
        return "gen_ai_legacy"
    if "gen_ai.operation.name" in attrs:
        return "gen_ai"
    kind = attrs.get("openinference.span.kind")
    if kind is not None and str(value_of(kind)).upper() == "LLM":
        return "openinference"
    return None


GenAISpan = tuple[Attributes, Span, Attributes, str]  # resource attrs, span, attrs, dialect


def genai_spans(request: ExportTraceServiceRequest) -> tuple[list[GenAISpan], int]:
    """The GenAI spans of a request, in order, and how many other spans it holds."""
    found: list[GenAISpan] = []
    others = 0
    for resource_spans in request.resource_spans:
        resource: Attributes | None = None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = attributes(span)
                dialect = dialect_of(attrs)
                if dialect is None:
                    others += 1
                    continue
                if resource is None:
                    resource = attributes(resource_spans.resource)
                found.append((resource, span, attrs, dialect))
    return found, others


def identity(span: Span) -> bytes | None:
    """(trace id, span id) as 24 bytes, None when either is not a valid OTLP id."""
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or len(span_id) != 8 or not any(trace_id) or not any(span_id):
        return None
    return trace_id + span_id


def to_event(
    resource: Attributes,
    span: Span,
    attrs: Attributes,
    dialect: str,
    max_text_bytes: int,
) -> dict[str, Any]:
    """The engine_execution of one GenAI span (not yet validated). Raises SpanError, NoModel."""
    if identity(span) is None:
        raise SpanError(
            f"invalid ids: trace_id {span.trace_id.hex()!r} (16 bytes, not all zero), "
            f"span_id {span.span_id.hex()!r} (8 bytes, not all zero)"
        )
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start <= 0:
        raise SpanError("span has no start time")
    if end < start:
        raise SpanError(f"span ends ({end}) before it starts ({start})")
    engine = _first_text(attrs, MODEL_KEYS)
    if engine is None:
        raise NoModel(span.name)
    error_type = attrs.get("error.type")
    success = span.status.code != STATUS_ERROR and error_type is None
    if success:
        status = "ok"
    else:
        error_text = _text(error_type) if error_type is not None else ""
        status = (error_text or span.status.message or "error")[:1024]
    metrics: dict[str, Any] = {
        "latency_ms": (end - start) / 1_000_000,
        "memory_mb": 0.0,
        "cpu_percent": 0.0,
        "success": success,
    }
    tokens_in = _first_count(attrs, INPUT_TOKEN_KEYS)
    if tokens_in is not None:
        metrics["input_tokens"] = tokens_in
    tokens_out = _first_count(attrs, OUTPUT_TOKEN_KEYS)
    if tokens_out is not None:
        metrics["output_tokens"] = tokens_out
    otel: dict[str, Any] = {"dialect": dialect, "span_name": span.name[:1024]}
    operation = _first_text(attrs, ("gen_ai.operation.name",))
    if operation is not None:
        otel["operation"] = operation[:256]
    provider = _first_text(attrs, PROVIDER_KEYS)
    if provider is not None:
        otel["provider"] = provider[:256]
    input_text, input_cut = _cut(_render(input_messages(span, attrs)), max_text_bytes)
    output_text, output_cut = _cut(_render(output_messages(span, attrs)), max_text_bytes)
    truncated = [name for name, cut in (("input", input_cut), ("output", output_cut)) if cut]
    if truncated:
        otel["truncated"] = truncated
    instance = _first_text(resource, ("service.instance.id", "service.name")) or UNKNOWN_SERVICE
    return {
        "schema_version": 1,
        "trace_id": span.trace_id.hex(),
        "task_id": span.span_id.hex(),
        "engine_id": engine,
        "engine_instance_id": instance,
        "timestamp": start // 1_000_000,
        "input": input_text,
        "output": output_text,
        "metrics": metrics,
        "status": status,
        "otel": otel,
    }


def span_json(span: Span) -> bytes:
    """A span as OTLP/JSON (hex ids): the payload of its dead letter."""
    data = json_format.MessageToDict(span, use_integers_for_enums=True)
    for name, raw in (
        ("traceId", span.trace_id),
        ("spanId", span.span_id),
        ("parentSpanId", span.parent_span_id),
    ):
        if raw:
            data[name] = raw.hex()
    return orjson.dumps(data)


# -- attribute values ----------------------------------------------------------------------


def _text(value: AnyValue) -> str:
    plain = value_of(value)
    if isinstance(plain, str):
        return plain
    if isinstance(plain, bytes):
        return plain.decode("utf-8", errors="replace")
    return orjson.dumps(plain).decode() if isinstance(plain, list | dict) else str(plain)


def _first_text(attrs: Attributes, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            text = _text(value)
            if text:
                return text
    return None


def _first_count(attrs: Attributes, keys: tuple[str, ...]) -> int | None:
    """A token count: an integer from 0 to MAX_TOKENS (an integral double too); anything else
    is ignored."""
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        plain = value_of(value)
        if isinstance(plain, bool):
            continue
        if isinstance(plain, float) and plain.is_integer():
            plain = int(plain)
        if isinstance(plain, int) and 0 <= plain <= MAX_TOKENS:
            return plain
    return None


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """`text` within `limit` bytes of UTF-8, cut at a character boundary."""
    if len(text) * 4 <= limit:
        return text, False
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", errors="ignore"), True


# -- captured messages ---------------------------------------------------------------------


def _render(messages: list[Message]) -> str:
    if not messages:
        return ""
    if len(messages) == 1:
        return messages[0][1]
    return "\n".join(f"{role}: {text}" if role else text for role, text in messages)


def input_messages(span: Span, attrs: Attributes) -> list[Message]:
    value = attrs.get("gen_ai.input.messages")
    if value is not None:
        system = attrs.get("gen_ai.system_instructions")
        instructions = _messages(system, "system") if system is not None else []
        return instructions + _messages(value, "user")
    return (
        _flattened(attrs, "gen_ai.prompt.")
        or _single(attrs, "gen_ai.prompt")
        or _flattened(attrs, "llm.input_messages.")
        or _single(attrs, "input.value")
        or _event_messages(span, input_side=True)
    )


def output_messages(span: Span, attrs: Attributes) -> list[Message]:
    value = attrs.get("gen_ai.output.messages")
    if value is not None:
        return _messages(value, "assistant")
    return (
        _flattened(attrs, "gen_ai.completion.")
        or _single(attrs, "gen_ai.completion")
        or _flattened(attrs, "llm.output_messages.")
        or _single(attrs, "output.value")
        or _event_messages(span, input_side=False)
    )


def _single(attrs: Attributes, key: str) -> list[Message]:
    value = attrs.get(key)
    return [] if value is None else _messages(value, None)


def _messages(value: AnyValue, role: str | None) -> list[Message]:
    """Messages of an attribute: JSON text (or a structured value) of a list of messages, of
    one message, or of parts; plain text as it is."""
    plain = value_of(value)
    if isinstance(plain, str):
        stripped = plain.lstrip()
        if stripped[:1] in ("[", "{"):
            try:
                plain = orjson.loads(plain)
            except orjson.JSONDecodeError:
                return [(role, plain)] if plain else []
        else:
            return [(role, plain)] if plain else []
    items = plain if isinstance(plain, list) else [plain]
    found: list[Message] = []
    for item in items:
        if isinstance(item, dict):
            text = _message_text(item)
            item_role = item.get("role")
            if item.get("type") is not None and "role" not in item:  # a bare part
                item_role = role
            found.append((item_role if isinstance(item_role, str) else role, text))
        elif item is not None:
            found.append((role, item if isinstance(item, str) else orjson.dumps(item).decode()))
    return [(r, t) for r, t in found if t]


def _message_text(message: dict[str, Any]) -> str:
    """The text of a message (parts, or content as text or as a list of parts) or a part."""
    parts = message.get("parts")
    if parts is None:
        content = message.get("content", message.get("text"))
        if isinstance(content, str):
            return content
        if content is None:
            if message.get("type") is not None:  # a part that holds no text
                return orjson.dumps(message).decode()
            inner = message.get("message")  # gen_ai.choice: {"index", "message": {...}}
            if isinstance(inner, dict) and not isinstance(inner.get("message"), dict):
                return _message_text(inner)  # one level only: no recursion on nested input
            return ""
        parts = content if isinstance(content, list) else [content]
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = part.get("content", part.get("text"))
            kind = part.get("type", "text")
            if isinstance(text, str) and kind in ("text", "reasoning", "input_text", "output_text"):
                texts.append(text)
            else:
                texts.append(orjson.dumps(part).decode())
    return "\n".join(t for t in texts if t)


def _flattened(attrs: Attributes, prefix: str) -> list[Message]:
    """Messages flattened into attributes: `<prefix>N.role` and `<prefix>N.content`
    (OpenLLMetry), or OpenInference's `<prefix>N.message.role`, `.message.content` and
    `.message.contents.M.message_content.text`."""
    first = prefix + "0."
    if not any(first + field in attrs for field in _FIRST_FIELDS):
        return []  # the usual case: not a single attribute to look at
    by_index: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, field = key[len(prefix) :].partition(".")
        if not index.isdigit():
            continue
        entry = by_index.setdefault(int(index), {})
        field = field.removeprefix("message.")
        if field == "role":
            entry["role"] = _text(value)
        elif field == "content":
            entry["content"] = _text(value)
        elif field.startswith("contents.") and field.endswith(".message_content.text"):
            number = field.split(".")[1]
            if number.isdigit():
                entry.setdefault("parts", {})[int(number)] = _text(value)
    messages: list[Message] = []
    for index in sorted(by_index):
        entry = by_index[index]
        text = entry.get("content")
        if text is None and "parts" in entry:
            text = "\n".join(entry["parts"][n] for n in sorted(entry["parts"]))
        if text:
            messages.append((entry.get("role"), text))
    return messages


def _event_messages(span: Span, input_side: bool) -> list[Message]:
    """Messages in span events, as older GenAI conventions recorded them."""
    messages: list[Message] = []
    for event in span.events:
        name = event.name
        attrs = attributes(event)
        if input_side:
            if name == "gen_ai.content.prompt" and "gen_ai.prompt" in attrs:
                messages += _messages(attrs["gen_ai.prompt"], "user")
            elif name in INPUT_EVENTS:
                messages += _event_message(attrs, INPUT_EVENTS[name])
        elif name == "gen_ai.content.completion" and "gen_ai.completion" in attrs:
            messages += _messages(attrs["gen_ai.completion"], "assistant")
        elif name == "gen_ai.choice":
            messages += _event_message(attrs, "assistant")
    return messages


def _event_message(attrs: Attributes, role: str) -> list[Message]:
    """One message of a gen_ai.*.message or gen_ai.choice event: `content`, `message`
    (JSON text or a map) or `message.content`."""
    event_role = _first_text(attrs, ("role", "message.role")) or role
    for key in ("content", "message.content", "message"):
        value = attrs.get(key)
        if value is not None:
            return [(event_role, text) for _, text in _messages(value, event_role)]
    return []
