"""A fixed script of `openai` calls made under one real instrumentation, its spans written as
the Collector's kafka exporter writes them (issue 24).

    python -m tests.instrumented_calls --library openai_v2 --base-url URL --out FILE

Run it in a process of its own: each library patches the `openai` module (and LangChain's
callback manager) for good. The calls go to `--base-url` (tests/fake_openai.py; without it the
script starts one). Each call is made inside an application span of the script's own, so that
the test knows which spans belong to which call and can check that the application span is
never taken for an inference.

FILE gets one `ExportTraceServiceRequest` per call (the OTLP exporter's own encoder over the
spans the call finished, as a batch span processor would send them), as length-prefixed
protobuf bytes (`read_requests`). FILE.json is the manifest (`manifest_path`): per call its
kind, the requested model, whether it failed, the messages sent, the reply and usage the
server gave, its wall-clock bounds, and the ids of every span it made, its inference span
marked. `--dump FILE.md` writes every span and log record in full, to see what a library emits
(README → OpenTelemetry input → Instrumentations tested).
"""

from __future__ import annotations

import argparse
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fake_openai import FakeOpenAI, prompt_text, reply_to, usage_of

# The four the tests run, then two to look at with --dump: openai-v2 with content as log
# records, and its successor package (opentelemetry-instrumentation-genai-openai, which needs
# another opentelemetry-util-genai than openai-v2: a venv of its own).
TESTED = ("openai_v2", "openllmetry", "openinference", "openinference_langchain")
LIBRARIES = (*TESTED, "openai_v2_events", "genai_openai")
_LATEST = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}
# Each library's switches that put prompts and completions on the span itself, set before it
# is instrumented. openai-v2 needs the opt-in to the latest conventions: without it the
# documented "true" is refused by util-genai ("not a valid option", no content at all).
CONTENT_ENV: dict[str, dict[str, str]] = {
    "openai_v2": {**_LATEST, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only"},
    "openai_v2_events": {
        **_LATEST,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "event_only",  # log records
    },
    "genai_openai": {
        **_LATEST,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    },
    "openllmetry": {"TRACELOOP_TRACE_CONTENT": "true"},  # the default, said anyway
    "openinference": {},  # on by default (OPENINFERENCE_HIDE_INPUTS / _OUTPUTS false)
    "openinference_langchain": {},
}
SYSTEM = "You are terse."
EMBEDDED = "An embedding of this text."
APP_SCOPE = "tests.instrumented_calls"
INSTANCE = "calls-1"  # the resource's service.instance.id: the executions' engine_instance_id


def messages_for(kind: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Say hello to {kind}."},
    ]


class Calls:
    """The SDK pipeline and the openai client of one library's run."""

    def __init__(self, library: str, base_url: str):
        os.environ.update(CONTENT_ENV[library])
        self.library = library
        self.base_url = base_url
        resource = Resource.create(
            {"service.name": f"calls-{library}", "service.instance.id": INSTANCE}
        )
        self.spans = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logs = InMemoryLogRecordExporter()  # content sent as log records (--dump only)
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        set_logger_provider(self.logger_provider)
        self.tracer = self.provider.get_tracer(APP_SCOPE)
        self._instrument()
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)
        self.manifest: list[dict[str, Any]] = []
        self.requests: list[bytes] = []
        self.dumped: list[str] = []

    def _instrument(self) -> None:
        kwargs: dict[str, Any] = {"tracer_provider": self.provider}
        if self.library in ("openai_v2", "openai_v2_events"):
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

            OpenAIInstrumentor().instrument(logger_provider=self.logger_provider, **kwargs)
        elif self.library == "genai_openai":
            from opentelemetry.instrumentation.genai.openai import (  # type: ignore
                OpenAIInstrumentor as GenAIOpenAIInstrumentor,
            )

            GenAIOpenAIInstrumentor().instrument(logger_provider=self.logger_provider, **kwargs)
        elif self.library == "openllmetry":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Traceloop

            Traceloop().instrument(**kwargs)
        elif self.library == "openinference":
            from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference

            OpenInference().instrument(**kwargs)
        else:
            from openinference.instrumentation.langchain import LangChainInstrumentor

            LangChainInstrumentor().instrument(**kwargs)

    def call(self, kind: str, model: str, run: Callable[[], Any], **expect: Any) -> None:
        """One call inside an application span; its spans become one request."""
        fails = "fail-" in model
        if fails:  # no answer: nothing the span could report of one
            expect.update(reply=None, usage=None)
        error = None
        started_ms = time.time() * 1000
        with self.tracer.start_as_current_span(f"app {kind}") as app:
            try:
                run()
            except Exception as exc:  # the failures are the point of some calls
                error = f"{type(exc).__name__}: {exc}"
        ended_ms = time.time() * 1000
        if (error is not None) != fails:
            raise AssertionError(f"{kind}: {error or 'no error'}")
        spans: list[ReadableSpan] = list(self.spans.get_finished_spans())
        self.spans.clear()
        logs = list(self.logs.get_finished_logs())
        self.logs.clear()
        trace_id = app.get_span_context().trace_id
        if any(s.context is None or s.context.trace_id != trace_id for s in spans):
            raise AssertionError(f"{kind}: a span of another trace, or one not yet ended")
        self.requests.append(encode_spans(spans).SerializeToString())
        inference = inference_span(spans, app.get_span_context().span_id)
        self.manifest.append(
            {
                "kind": kind,
                "model": model,
                "failed": fails,
                "error": error,
                **expect,
                "started_ms": started_ms,
                "ended_ms": ended_ms,
                "trace_id": f"{trace_id:032x}",
                "inference_span_id": None if inference is None else f"{inference:016x}",
                "spans": {f"{s.context.span_id:016x}": s.name for s in spans if s.context},
            }
        )
        self.dumped.append(dump(kind, model, spans, logs))

    # -- the script -----------------------------------------------------------------------

    def chat(self, kind: str, model: str, stream: bool = False) -> None:
        messages = messages_for(kind)

        def run() -> None:
            if stream:
                chunks = self.client.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                    stream_options={"include_usage": True},
                    temperature=0.5,
                )
                for _ in chunks:
                    pass
            else:
                self.client.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=0.5,
                    max_tokens=50,
                )

        self._chat_call(kind, model, run, messages, stream)

    def chain(self, kind: str, model: str) -> None:
        """LangChain's `prompt | ChatOpenAI`: a chain span and a prompt span around the LLM."""
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_openai import ChatOpenAI

        prompt = ChatPromptTemplate.from_messages(
            [("system", SYSTEM), ("user", "Say hello to {who}.")]
        )
        llm = ChatOpenAI(
            model=model,
            base_url=self.base_url,
            api_key="test-key",  # type: ignore[arg-type]
            max_retries=0,
            temperature=0.5,
        )

        def run() -> None:
            (prompt | llm).invoke({"who": kind})

        self._chat_call(kind, model, run, messages_for(kind), False)

    def _chat_call(
        self,
        kind: str,
        model: str,
        run: Callable[[], Any],
        messages: list[dict[str, str]],
        stream: bool,
    ) -> None:
        reply = reply_to(messages)
        usage = usage_of(prompt_text(messages), reply)
        self.call(
            kind,
            model,
            run,
            operation="chat",
            stream=stream,
            messages=messages,
            reply=reply,
            usage=usage,
        )

    def embeddings(self, kind: str, model: str) -> None:
        def run() -> None:
            self.client.embeddings.create(model=model, input=EMBEDDED)

        messages = [{"role": "user", "content": EMBEDDED}]
        usage = usage_of(EMBEDDED, None)
        self.call(
            kind,
            model,
            run,
            operation="embeddings",
            stream=False,
            messages=messages,
            reply=None,
            usage=usage,
        )

    def run_script(self) -> None:
        """The calls, each with a model of its own (the server fails `*fail-429*`, ...)."""
        if self.library == "openinference_langchain":
            self.chain("chain", "gpt-test-chain")
            self.chain("chain_429", "gpt-test-chain-fail-429")
            self.chain("chain_500", "gpt-test-chain-fail-500")
            return
        self.chat("chat", "gpt-test-chat")
        self.chat("stream", "gpt-test-stream", stream=True)
        self.chat("chat_429", "gpt-test-fail-429")
        self.chat("chat_500", "gpt-test-fail-500")
        self.chat("stream_500", "gpt-test-stream-fail-500", stream=True)
        self.embeddings("embeddings", "text-embedding-test")

    def write(self, out: Path, dump_to: Path | None = None) -> None:
        self.provider.shutdown()
        with open(out, "wb") as f:
            for request in self.requests:
                f.write(struct.pack(">I", len(request)) + request)
        manifest = {"library": self.library, "calls": self.manifest}
        manifest_path(out).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if dump_to is not None:
            dump_to.write_text(f"# {self.library}\n\n" + "\n".join(self.dumped))


def inference_span(spans: list[ReadableSpan], app_id: int) -> int | None:
    """The span that stands for the model call: the one leaf below the application span that
    names a model or its invocation parameters (a chain's prompt span names neither)."""
    parents = {s.parent.span_id for s in spans if s.parent is not None}
    keys = (
        "gen_ai.request.model",
        "llm.model_name",
        "llm.invocation_parameters",
        "embedding.model_name",
    )
    found = [
        s.context.span_id
        for s in spans
        if s.context is not None
        and s.context.span_id not in (app_id, *parents)
        and any(k in (s.attributes or {}) for k in keys)
    ]
    return found[0] if len(found) == 1 else None


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def read_requests(out: Path) -> list[bytes]:
    """The serialized ExportTraceServiceRequests of FILE, in order."""
    raw = out.read_bytes()
    found, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack(">I", raw[at : at + 4])
        found.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    return found


def dump(kind: str, model: str, spans: list[ReadableSpan], logs: list[Any]) -> str:
    """Every span of a call with all its attributes and events, and its log records."""
    names = {s.context.span_id: s.name for s in spans if s.context}
    lines = [f"## {kind} (model {model})", ""]
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        assert s.context is not None and s.start_time is not None and s.end_time is not None
        parent = s.parent.span_id if s.parent is not None else None
        status = s.status.description or ""
        lines.append(
            f"- span `{s.name}` kind={s.kind.name} status={s.status.status_code.name}"
            f"{' (' + status[:200] + ')' if status else ''}"
            f" id={s.context.span_id:016x} parent={names.get(parent, parent)}"  # type: ignore[arg-type]
            f" scope={s.instrumentation_scope.name if s.instrumentation_scope else None}"
            f" duration_ms={(s.end_time - s.start_time) / 1e6:.2f}"
        )
        for key, value in sorted((s.attributes or {}).items()):
            lines.append(f"  - `{key}` = `{value!r}`")
        for event in s.events:
            lines.append(
                f"  - event `{event.name}` at +{(event.timestamp - s.start_time) / 1e6:.2f} ms"
            )
            for key, value in sorted((event.attributes or {}).items()):
                lines.append(f"    - `{key}` = `{str(value)[:400]!r}`")
    for record in logs:
        log = getattr(record, "log_record", record)
        lines.append(
            f"- log record event_name={getattr(log, 'event_name', None)} span_id={log.span_id:016x}"
        )
        for key, value in sorted((log.attributes or {}).items()):
            lines.append(f"  - `{key}` = `{value!r}`")
        lines.append(f"  - body = `{str(log.body)[:600]!r}`")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--library", choices=LIBRARIES, required=True)
    parser.add_argument("--base-url", help="the fake server's /v1 URL (default: start one)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dump", type=Path, help="every span and log record, as Markdown")
    parser.add_argument(
        "--response-suffix", default="", help="a server started here answers MODEL+SUFFIX"
    )
    args = parser.parse_args()
    if args.base_url:
        calls = Calls(args.library, args.base_url)
        calls.run_script()
    else:
        with FakeOpenAI(response_suffix=args.response_suffix) as fake:
            calls = Calls(args.library, fake.url)
            calls.run_script()
    calls.write(args.out, args.dump)


if __name__ == "__main__":
    main()
