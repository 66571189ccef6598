"""OpenTelemetry GenAI spans → engine_execution events (README → OpenTelemetry input).

**Which spans.** Only inference calls become executions; every other span is skipped and
counted by its kind (`json_engine_otlp_spans_total{outcome="skipped", kind=...}`):
- OpenInference (`openinference.span.kind`): LLM and EMBEDDING spans are inferences; CHAIN,
  PROMPT, AGENT, TOOL, RETRIEVER, ... are not (a LangChain chain around a call gives one);
- `gen_ai.operation.name`: chat, text_completion, generate_content and embeddings are
  inferences; invoke_agent, create_agent, execute_tool, ... are not, even when they name a
  model (an agent span around a call would count it twice);
- OpenLLMetry's `llm.request.type` (chat, completion, embedding), when there is no operation
  name, and its `traceloop.span.kind` steps (workflow, task, agent, tool), which are not;
- a span with `gen_ai.provider.name` or `gen_ai.system` and none of the above (conventions
  before the operation name) is an inference; any other span is not GenAI.
Embeddings are executions: an embedding model is an engine whose latency, failures and
tokens a team watches like any other's (their output is empty).

**Which engine.** The model the call asked for, so that an engine's failures land where its
successes do: gen_ai.request.model, else `model` (or `model_name`) in the JSON of
OpenInference's llm.invocation_parameters (or embedding.invocation_parameters), else
gen_ai.response.model, llm.model_name, embedding.model_name, else `model` in the JSON of
input.value. A span that is an inference but names no model at all gets the engine id
`unknown_model` (otel.model_placeholder) and is never dropped. The model that answered,
when it differs, is otel.response_model.

Each inference span maps to one event; where several attributes may hold a value, the first
present wins, whatever the dialect (instrumentations mix them):
- trace_id / task_id: the trace id (32 hex) / the span id (16 hex);
- engine_instance_id: resource service.instance.id, service.name, else "unknown_service";
- timestamp: the start time in epoch ms (floored); metrics.latency_ms: end - start in ms;
- metrics.success: the status is not ERROR and there is no error.type; status: "ok", else
  error.type (`<class 'x.Y'>` read as x.Y), else the exception event's exception.type, else
  the status message's first line, else "error";
- input / output: the captured messages as text, else "" (below); a failed call's output is
  "" (what some instrumentations record there is the error's body);
- metrics token counts (integers from 0 to 10^12, the schema's range, else left out):
  input_tokens (gen_ai.usage.input_tokens, gen_ai.usage.prompt_tokens, llm.token_count.prompt),
  output_tokens (gen_ai.usage.output_tokens, gen_ai.usage.completion_tokens,
  llm.token_count.completion), cache_read_input_tokens (gen_ai.usage.cache_read.input_tokens,
  gen_ai.usage.cache_read_input_tokens, llm.token_count.prompt_details.cache_read),
  cache_write_input_tokens (gen_ai.usage.cache_write.input_tokens, the older
  gen_ai.usage.cache_creation.input_tokens, gen_ai.usage.cache_creation_input_tokens,
  llm.token_count.prompt_details.cache_write), reasoning_output_tokens
  (gen_ai.usage.reasoning.output_tokens, gen_ai.usage.reasoning_tokens,
  llm.token_count.completion_details.reasoning);
- metrics.time_to_first_chunk_ms: gen_ai.response.time_to_first_chunk (seconds), else the
  time after the start of OpenInference's first-token event, or of OpenLLMetry's first
  gen_ai.content.completion.chunk event;
- stream: gen_ai.request.stream, gen_ai.is_streaming, llm.is_streaming, else `stream` in the
  JSON of llm.invocation_parameters, else true when a first chunk is timed;
- finish_reasons: gen_ai.response.finish_reasons, else llm.finish_reason (OpenInference),
  else gen_ai.completion.N.finish_reason; conversation_id: gen_ai.conversation.id,
  session.id;
- evaluations: each gen_ai.evaluation.result event of the span (gen_ai.evaluation.name,
  score.value, score.label, explanation);
- metrics.memory_mb / cpu_percent: 0 (a span does not measure them);
- otel: the dialect, the span name, the operation and the provider (gen_ai.provider.name,
  gen_ai.system, llm.provider, llm.system).

Captured messages, the first source present: gen_ai.input.messages / gen_ai.output.messages
(with gen_ai.system_instructions before the input); OpenLLMetry's gen_ai.prompt.N.* /
gen_ai.completion.N.*; OpenInference's llm.input_messages.N.message.* /
llm.output_messages.N.message.*, else input.value / output.value; span events of older
versions (gen_ai.content.prompt / gen_ai.content.completion, gen_ai.{system,user,assistant,
tool}.message / gen_ai.choice). One message is its text; several are "role: text" lines. The
text parts of a message are its text; other parts (tool calls, ...) are kept as compact JSON.
Each of input and output is cut to `max_text_bytes` of UTF-8 (listed in otel.truncated).
Content that an instrumentation sends as log records, not on the span, is not read (the
README names the settings that put it on the span).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

STATUS_ERROR = Status.STATUS_CODE_ERROR
UNKNOWN_SERVICE = "unknown_service"  # the SDKs' own default service.name
UNKNOWN_MODEL = "unknown_model"  # the engine of an inference span that names no model
REQUESTED_MODEL_KEYS = ("gen_ai.request.model",)
ANSWERED_MODEL_KEYS = ("gen_ai.response.model", "llm.model_name", "embedding.model_name")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
MAX_TOKENS = 10**12  # engine_execution's metrics.*_tokens maximum
# metrics field ← the attributes that may hold it, the current convention's first
TOKEN_KEYS = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cache_read_input_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write_input_tokens": (
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning_output_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
}
INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
# Operations of other spans, counted by name (any other name counts as "other").
OTHER_OPERATIONS = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "retrieval"}
)
OPENINFERENCE_INFERENCES = {"LLM": "llm", "EMBEDDING": "embedding"}
OPENINFERENCE_OTHERS = frozenset(
    {"CHAIN", "PROMPT", "AGENT", "TOOL", "RETRIEVER", "RERANKER", "GUARDRAIL", "EVALUATOR"}
)
LLM_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
TRACELOOP_STEPS = frozenset({"workflow", "task", "agent", "tool"})
# Events whose first marks the first chunk of a streamed answer: OpenInference's, and
# OpenLLMetry's one event per chunk.
FIRST_CHUNK_EVENTS = frozenset({"First Token Stream Event", "gen_ai.content.completion.chunk"})
STREAM_KEYS = ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming")
MODEL_FIELDS = ("model", "model_name")
EVALUATION_EVENT = "gen_ai.evaluation.result"
MAX_EVALUATIONS = 64  # engine_execution's evaluations maxItems
MAX_FINISH_REASONS = 64
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
    """An inference span that cannot be an engine_execution (ids, times): dead-lettered."""


class Kind(NamedTuple):
    """What a span is: its dialect (None: not GenAI), its operation, whether an inference."""

    dialect: str | None
    operation: str | None
    inference: bool


NOT_GENAI = Kind(None, "not_genai", False)


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


def kind_of(attrs: Attributes) -> Kind:
    """The rules of the module's docstring, in their order."""
    oi_kind = attrs.get("openinference.span.kind")
    if oi_kind is not None:
        name = str(value_of(oi_kind)).upper()
        if name in OPENINFERENCE_INFERENCES:
            return Kind("openinference", OPENINFERENCE_INFERENCES[name], True)
        return Kind(
            "openinference", name.lower() if name in OPENINFERENCE_OTHERS else "other", False
        )
    if "gen_ai.provider.name" in attrs:
        dialect = "gen_ai"
    elif "gen_ai.system" in attrs or "llm.request.type" in attrs:
        dialect = "gen_ai_legacy"
    else:
        dialect = "gen_ai" if "gen_ai.operation.name" in attrs else None
    operation = _first_text(attrs, ("gen_ai.operation.name",))
    if operation is not None:
        if operation in INFERENCE_OPERATIONS:
            return Kind(dialect, operation, True)
        return Kind(dialect, operation if operation in OTHER_OPERATIONS else "other", False)
    request_type = _first_text(attrs, ("llm.request.type",))
    if request_type is not None:
        if request_type in LLM_REQUEST_TYPES:
            return Kind(dialect, LLM_REQUEST_TYPES[request_type], True)
        return Kind(dialect, "other", False)
    step = _first_text(attrs, ("traceloop.span.kind",))
    if step is not None:
        return Kind(dialect, step if step in TRACELOOP_STEPS else "other", False)
    if dialect is not None:
        return Kind(dialect, None, True)
    return NOT_GENAI


GenAISpan = tuple[Attributes, Span, Attributes, Kind]  # resource attrs, span, attrs, kind


def genai_spans(request: ExportTraceServiceRequest) -> tuple[list[GenAISpan], dict[str, int]]:
    """The inference spans of a request, in order, and how many others it holds, by kind."""
    found: list[GenAISpan] = []
    others: dict[str, int] = {}
    for resource_spans in request.resource_spans:
        resource: Attributes | None = None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = attributes(span)
                kind = kind_of(attrs)
                if not kind.inference:
                    others[kind.operation] = others.get(kind.operation, 0) + 1
                    continue
                if resource is None:
                    resource = attributes(resource_spans.resource)
                found.append((resource, span, attrs, kind))
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
    kind: Kind,
    max_text_bytes: int,
) -> dict[str, Any]:
    """The engine_execution of one inference span (not yet validated). Raises SpanError."""
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
    otel: dict[str, Any] = {"dialect": kind.dialect, "span_name": span.name[:1024]}
    answered = _first_text(attrs, ANSWERED_MODEL_KEYS)
    engine = (
        _first_text(attrs, REQUESTED_MODEL_KEYS)
        or _json_field(attrs, "llm.invocation_parameters", MODEL_FIELDS)
        or _json_field(attrs, "embedding.invocation_parameters", MODEL_FIELDS)
        or answered
        or _json_field(attrs, "input.value", MODEL_FIELDS)
    )
    if engine is None:
        engine = UNKNOWN_MODEL
        otel["model_placeholder"] = True
    elif answered is not None and answered != engine:
        otel["response_model"] = answered[:256]
    error_type = attrs.get("error.type")
    success = span.status.code != STATUS_ERROR and error_type is None
    if success:
        status = "ok"
    else:
        error_text = _class_name(_text(error_type)) if error_type is not None else ""
        message = span.status.message.partition("\n")[0]  # LangChain appends a traceback
        status = (error_text or _exception_type(span) or message or "error")[:1024]
    metrics: dict[str, Any] = {
        "latency_ms": (end - start) / 1_000_000,
        "memory_mb": 0.0,
        "cpu_percent": 0.0,
        "success": success,
    }
    for field, keys in TOKEN_KEYS.items():
        count = _first_count(attrs, keys)
        if count is not None:
            metrics[field] = count
    first_chunk = _time_to_first_chunk(span, attrs)
    if first_chunk is not None:
        metrics["time_to_first_chunk_ms"] = first_chunk
    if kind.operation is not None:
        otel["operation"] = kind.operation[:256]
    provider = _first_text(attrs, PROVIDER_KEYS)
    if provider is not None:
        otel["provider"] = provider[:256]
    input_text, input_cut = _cut(_render(input_messages(span, attrs)), max_text_bytes)
    # A failed call answered nothing (what some instrumentations record is the error's body).
    output_text, output_cut = (
        _cut(_render(output_messages(span, attrs)), max_text_bytes) if success else ("", False)
    )
    truncated = [name for name, cut in (("input", input_cut), ("output", output_cut)) if cut]
    if truncated:
        otel["truncated"] = truncated
    instance = _first_text(resource, ("service.instance.id", "service.name")) or UNKNOWN_SERVICE
    event = {
        "schema_version": 1,
        "trace_id": span.trace_id.hex(),
        "task_id": span.span_id.hex(),
        "engine_id": engine[:256],
        "engine_instance_id": instance[:256],
        "timestamp": start // 1_000_000,
        "input": input_text,
        "output": output_text,
        "metrics": metrics,
        "status": status,
        "otel": otel,
    }
    stream = _first_bool(attrs, STREAM_KEYS)
    if stream is None:
        stream = _json_field(attrs, "llm.invocation_parameters", ("stream",), bool)
    if stream is None and first_chunk is not None:
        stream = True
    if stream is not None:
        event["stream"] = stream
    reasons = _finish_reasons(attrs)
    if reasons:
        event["finish_reasons"] = reasons
    conversation = _first_text(attrs, ("gen_ai.conversation.id", "session.id"))
    if conversation:
        event["conversation_id"] = conversation[:256]
    evaluations = _evaluations(span)
    if evaluations:
        event["evaluations"] = evaluations
    return event


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


# -- the rarer fields ----------------------------------------------------------------------


def _json_field(attrs: Attributes, key: str, fields: tuple[str, ...], kind: type = str) -> Any:
    """The first of `fields` of a JSON object attribute (a request's parameters) that is a
    non-empty value of `kind`, else None."""
    value = attrs.get(key)
    if value is None:
        return None
    plain = value_of(value)
    if isinstance(plain, str):
        if not plain.lstrip().startswith("{"):
            return None
        try:
            plain = orjson.loads(plain)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(plain, dict):
        return None
    for name in fields:
        found = plain.get(name)
        if isinstance(found, kind) and found != "":
            return found
    return None


def _class_name(text: str) -> str:
    """`<class 'openai.RateLimitError'>` (str() of a class, as one instrumentation sends
    error.type) → `openai.RateLimitError`; anything else as it is."""
    if text.startswith("<class '") and text.endswith("'>"):
        return text[8:-2]
    return text


def _exception_type(span: Span) -> str | None:
    for event in span.events:
        if event.name == "exception":
            found = _first_text(attributes(event), ("exception.type",))
            if found:
                return found
    return None


def _time_to_first_chunk(span: Span, attrs: Attributes) -> float | None:
    """Milliseconds to the first chunk: the attribute (seconds), else OpenInference's event."""
    seconds = _finite(attrs.get("gen_ai.response.time_to_first_chunk"))
    if seconds is not None and 0 <= seconds <= MAX_TOKENS / 1000:
        return seconds * 1000.0
    for event in span.events:
        if event.name in FIRST_CHUNK_EVENTS and event.time_unix_nano >= span.start_time_unix_nano:
            return (event.time_unix_nano - span.start_time_unix_nano) / 1_000_000
    return None


def _finite(value: AnyValue | None) -> float | None:
    """A number within the schema's range (10^12 either way), else None."""
    plain = None if value is None else value_of(value)
    if isinstance(plain, bool) or not isinstance(plain, int | float):
        return None
    return float(plain) if math.isfinite(plain) and abs(plain) <= MAX_TOKENS else None


def _first_bool(attrs: Attributes, keys: tuple[str, ...]) -> bool | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            plain = value_of(value)
            if isinstance(plain, bool):
                return plain
            if isinstance(plain, str) and plain.lower() in ("true", "false"):
                return plain.lower() == "true"
    return None


def _finish_reasons(attrs: Attributes) -> list[str]:
    value = attrs.get("gen_ai.response.finish_reasons") or attrs.get("llm.finish_reason")
    if value is not None:
        plain = value_of(value)
        items = plain if isinstance(plain, list) else [plain]
    else:  # OpenLLMetry: one per choice
        items = []
        for n in range(MAX_FINISH_REASONS):
            found = attrs.get(f"gen_ai.completion.{n}.finish_reason")
            if found is None:
                break
            items.append(value_of(found))
    return [str(item)[:256] for item in items if item not in (None, "")][:MAX_FINISH_REASONS]


def _evaluations(span: Span) -> list[dict[str, Any]]:
    """gen_ai.evaluation.result events: those with a name, and a finite score or a label."""
    found = []
    for event in span.events:
        if event.name != EVALUATION_EVENT:
            continue
        attrs = attributes(event)
        name = _first_text(attrs, ("gen_ai.evaluation.name",))
        if not name:
            continue
        evaluation: dict[str, Any] = {"name": name[:256]}
        score = _finite(attrs.get("gen_ai.evaluation.score.value"))
        if score is not None:
            evaluation["score"] = score
        label = _first_text(attrs, ("gen_ai.evaluation.score.label",))
        if label:
            evaluation["label"] = label[:256]
        explanation = _first_text(attrs, ("gen_ai.evaluation.explanation",))
        if explanation:
            evaluation["explanation"] = explanation[:4096]
        if "score" in evaluation or "label" in evaluation:
            found.append(evaluation)
            if len(found) == MAX_EVALUATIONS:
                break
    return found


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
    if isinstance(plain, dict) and "model" in plain:  # a request's body (OpenInference)
        plain = plain.get("messages", plain.get("input", plain.get("prompt")))
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
