"""A fixed script of `openai` calls made under one real instrumentation, its spans written as
the Collector's kafka exporter writes them (issue 24).

    python -m tests.instrumented_calls --library openai_v2 --base-url URL --out FILE

Run it in a process of its own: each library patches the `openai` module (and LangChain's
callback manager) for good. The calls go to `--base-url` (tests/fake_openai.py); each is made
inside an application span of this script's own, so that the test can tell which spans belong
to which call, and check that the application span is never taken for an inference.

FILE gets one `ExportTraceServiceRequest` per call (the OTLP exporter's own encoder over the
spans the call finished), as length-prefixed protobuf bytes (`read_requests`); FILE.json gets
the manifest: per call its kind, the requested model, whether it failed, the usage the server
reported, and the ids of every span it made (its inference span marked). `--dump FILE.md`
writes every span and log record in full, to see what a library emits.
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

from tests.fake_openai import FakeOpenAI, prompt_text, reply_to, usage_of

LIBRARIES = (
    "openai_v2",
    "openai_v2_events",
    "genai_openai",
    "openllmetry",
    "openinference",
    "openinference_langchain",
)
# Content capture, set before the instrumentation is imported: each library's switch that puts
# prompts and completions on the span itself (openai_v2_events: the default "true" of the
# older conventions, which sends them as log records instead).
CONTENT_ENV: dict[str, dict[str, str]] = {
    "openai_v2": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    },
    "openai_v2_events": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "event_only",
    },
    "genai_openai": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    },
    "openllmetry": {"TRACELOOP_TRACE_CONTENT": "true"},
    "openinference": {},  # captures by default (OPENINFERENCE_HIDE_INPUTS / _OUTPUTS: false)
    "openinference_langchain": {},
}
SYSTEM = "You are terse."
APP_SCOPE = "tests.instrumented_calls"


class Calls:
    """The SDK pipeline and the openai client of one library's run."""

    def __init__(self, library: str, base_url: str):
        for name, value in CONTENT_ENV[library].items():
            os.environ[name] = value
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import (
            InMemoryLogRecordExporter,
            SimpleLogRecordProcessor,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.library = library
        self.base_url = base_url
        resource = Resource.create(
            {"service.name": f"calls-{library}", "service.instance.id": "i-1"}
        )
        self.spans = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        set_logger_provider(self.logger_provider)
        self.tracer = self.provider.get_tracer(APP_SCOPE)
        self._instrument()
        import openai

        self.openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)
        self.manifest: list[dict[str, Any]] = []
        self.requests: list[bytes] = []
        self.dumped: list[str] = []

    def _instrument(self) -> None:
        kwargs = {"tracer_provider": self.provider}
        if self.library in ("openai_v2", "openai_v2_events"):
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

            OpenAIInstrumentor().instrument(logger_provider=self.logger_provider, **kwargs)
        elif self.library == "genai_openai":  # the successor package, not in the dev extras
            from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

            OpenAIInstrumentor().instrument(logger_provider=self.logger_provider, **kwargs)
        elif self.library == "openllmetry":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor

            OpenAIInstrumentor().instrument(**kwargs)
        elif self.library == "openinference":
            from openinference.instrumentation.openai import OpenAIInstrumentor

            OpenAIInstrumentor().instrument(**kwargs)
        else:
            from openinference.instrumentation.langchain import LangChainInstrumentor

            LangChainInstrumentor().instrument(**kwargs)

    def call(
        self,
        kind: str,
        model: str,
        run: Callable[[], Any],
        prompt: str,
        reply: str | None,
        fails: bool,
    ) -> None:
        """One call inside an application span; its spans encoded as one request."""
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        error = None
        with self.tracer.start_as_current_span(f"app {kind}") as app:
            try:
                run()
            except Exception as exc:  # the failures are the point of some calls
                error = f"{type(exc).__name__}: {exc}"
        assert (error is not None) == fails, f"{kind}: {error or 'no error'}"
        time.sleep(0.05)  # a streamed span may end after the iterator is drained
        spans = list(self.spans.get_finished_spans())
        self.spans.clear()
        logs = list(self.logs.get_finished_logs())
        self.logs.clear()
        app_id = app.get_span_context().span_id
        trace_id = app.get_span_context().trace_id
        mine = [s for s in spans if s.context.trace_id == trace_id]
        assert len(mine) == len(spans), "a span of another trace"
        self.requests.append(encode_spans(spans).SerializeToString())
        inference = inference_span(mine, app_id)
        self.manifest.append(
            {
                "kind": kind,
                "model": model,
                "failed": fails,
                "error": error,
                "usage": None if fails else usage_of(prompt, reply),
                "input": prompt,
                "output": None if fails else reply,
                "trace_id": f"{trace_id:032x}",
                "inference_span_id": None if inference is None else f"{inference:016x}",
                "spans": [{"span_id": f"{s.context.span_id:016x}", "name": s.name} for s in mine],
            }
        )
        self.dumped.append(dump(kind, model, mine, logs))

    # -- the script -----------------------------------------------------------------------

    def chat(self, kind: str, model: str, stream: bool = False) -> None:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Say hello to {kind}."},
        ]
        fails = "fail-" in model

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

        self.call(kind, model, run, prompt_text(messages), reply_to(messages), fails)

    def embeddings(self, kind: str, model: str) -> None:
        text = "An embedding of this text."

        def run() -> None:
            self.client.embeddings.create(model=model, input=text)

        self.call(kind, model, run, text, None, False)

    def chain(self, kind: str, model: str) -> None:
        """LangChain's `prompt | ChatOpenAI`: a chain span and a prompt span around the LLM."""
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_openai import ChatOpenAI

        prompt = ChatPromptTemplate.from_messages(
            [("system", SYSTEM), ("user", "Say hello to {who}.")]
        )
        llm = ChatOpenAI(
            model=model, base_url=self.base_url, api_key="test-key", max_retries=0, temperature=0.5
        )
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Say hello to {kind}."},
        ]

        def run() -> None:
            (prompt | llm).invoke({"who": kind})

        fails = "fail-" in model
        self.call(kind, model, run, prompt_text(messages), reply_to(messages), fails)

    def run_script(self) -> None:
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

    def write(self, out: Path, dump_to: Path | None) -> None:
        self.provider.shutdown()
        with open(out, "wb") as f:
            for request in self.requests:
                f.write(struct.pack(">I", len(request)) + request)
        manifest_path(out).write_bytes(
            orjson.dumps(
                {"library": self.library, "calls": self.manifest}, option=orjson.OPT_INDENT_2
            )
        )
        if dump_to is not None:
            dump_to.write_text(f"# {self.library}\n\n" + "\n".join(self.dumped))


def inference_span(spans: list[Any], app_id: int) -> int | None:
    """The span that stands for the model call: the one leaf below the application span that
    names a model or its invocation parameters (a chain's prompt span names none)."""
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
        if s.context.span_id != app_id
        and s.context.span_id not in parents
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


def dump(kind: str, model: str, spans: list[Any], logs: list[Any]) -> str:
    """Every span of a call, all attributes and events; and its log records."""
    names = {s.context.span_id: s.name for s in spans}
    lines = [f"## {kind} (model {model})", ""]
    for s in sorted(spans, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None else None
        lines.append(
            f"- span `{s.name}` kind={s.kind.name} status={s.status.status_code.name}"
            f"{' (' + s.status.description[:200] + ')' if s.status.description else ''}"
            f" id={s.context.span_id:016x} parent={names.get(parent, parent)}"
            f" scope={s.instrumentation_scope.name if s.instrumentation_scope else None}"
            f" duration_ms={(s.end_time - s.start_time) / 1e6:.2f}"
        )
        for key, value in sorted((s.attributes or {}).items()):
            lines.append(f"  - `{key}` = `{value!r}`")
        for event in s.events:
            offset = (event.timestamp - s.start_time) / 1e6
            lines.append(f"  - event `{event.name}` at +{offset:.2f} ms")
            for key, value in sorted((event.attributes or {}).items()):
                lines.append(f"    - `{key}` = `{str(value)[:400]!r}`")
    for record in logs:
        lr = getattr(record, "log_record", record)
        name = getattr(lr, "event_name", None)
        lines.append(f"- log record event_name={name} span_id={lr.span_id:016x}")
        for key, value in sorted((lr.attributes or {}).items()):
            lines.append(f"  - `{key}` = `{value!r}`")
        lines.append(f"  - body = `{str(lr.body)[:600]!r}`")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", choices=LIBRARIES, required=True)
    parser.add_argument("--base-url", help="the fake server's /v1 URL (default: start one)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--response-suffix", default="", help="for a server started here")
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
