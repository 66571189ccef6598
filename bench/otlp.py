"""OTLP input rate per core: GenAI spans decoded and mapped, beside the JSON validation path.

Spans come from the real OpenTelemetry SDK (seeded dialects, tokens, captured messages in a
share of them) and are encoded by the OTLP exporter's own encoder, `--per-record` spans per
ExportTraceServiceRequest as a Collector batches them, in otlp_proto and otlp_json. Columns:

- decode: `streams.otlp.decode` alone (protobuf parse, or orjson + hex ids + json_format);
- reader: the worker's whole path per record, `OtlpReader.derive` (decode, classify, retry
  window, map, orjson, Validator on the event), what a worker spends per span;
- JSON path: `Validator.validate("engine_execution", raw)` on the same executions as JSON
  bytes, what the worker spends per event published directly.

Rates are spans per second of CPU time of this (single-threaded) process, best of `--repeat`.

    python -m bench.otlp [--spans 20000] [--per-record 10] [--repeat 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from streams import events
from streams.config import JsonEngineConfig, OtlpConfig
from streams.otlp.decode import decode, encode_json
from streams.otlp.mapping import genai_spans, to_event
from streams.otlp.reader import OtlpReader
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.outbox import MessageLimits
from streams.readers.route import LocalRecord
from streams.validation import Validator

TS = 1_764_300_000_000
MS = 1_000_000
DIALECTS = ("gen_ai", "gen_ai_legacy", "openinference")


def sdk_requests(count: int, per_record: int, seed: int) -> list[Any]:
    """`count` GenAI spans from the SDK, `per_record` to an ExportTraceServiceRequest."""
    rng = random.Random(seed)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "bench", "service.instance.id": "pod-1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench.otlp")
    requests = []
    for i in range(count):
        execution = events.engine_execution(rng, rng.choice(events.ENGINE_IDS), TS + i)
        span = tracer.start_span(
            "chat", start_time=(TS + i) * MS, attributes=_attrs(rng, i, execution)
        )
        if not execution["metrics"]["success"]:
            span.set_status(Status(StatusCode.ERROR, execution["status"]))
        span.end(end_time=(TS + i) * MS + round(execution["metrics"]["latency_ms"] * MS))
        if (i + 1) % per_record == 0 or i == count - 1:
            requests.append(encode_spans(exporter.get_finished_spans()))
            exporter.clear()
    return requests


def _attrs(rng: random.Random, i: int, execution: dict[str, Any]) -> dict[str, Any]:
    model, prompt, answer = execution["engine_id"], execution["input"], execution["output"]
    tokens = (len(prompt.split()) * 4 // 3, len(answer.split()) * 4 // 3)
    captured = rng.random() < 0.5
    dialect = DIALECTS[i % len(DIALECTS)]
    if dialect == "gen_ai":
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
        }
        if captured:
            for key, role, text in (
                ("gen_ai.input.messages", "user", prompt),
                ("gen_ai.output.messages", "assistant", answer),
            ):
                parts = [{"type": "text", "content": text}]
                attrs[key] = orjson.dumps([{"role": role, "parts": parts}]).decode()
    elif dialect == "gen_ai_legacy":
        attrs = {
            "gen_ai.system": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.prompt_tokens": tokens[0],
            "gen_ai.usage.completion_tokens": tokens[1],
        }
        if captured:
            attrs |= {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": prompt}
            attrs |= {
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": answer,
            }
    else:
        attrs = {
            "openinference.span.kind": "LLM",
            "llm.model_name": model,
            "llm.token_count.prompt": tokens[0],
            "llm.token_count.completion": tokens[1],
        }
        if captured:
            attrs |= {"input.value": prompt, "output.value": answer}
    return attrs


def rate(run: Callable[[], None], count: int, repeat: int) -> float:
    """Best spans/s of CPU time over `repeat` runs of `run` (which handles `count` spans)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return count / max(best, 1e-9)


def measure(spans: int, per_record: int, repeat: int, seed: int) -> dict[str, Any]:
    requests = sdk_requests(spans, per_record, seed)
    validator = Validator()
    result: dict[str, Any] = {"records": len(requests)}
    executions = []
    for request in requests:
        for resource, span, attrs, dialect in genai_spans(request)[0]:
            executions.append(orjson.dumps(to_event(resource, span, attrs, dialect, 1 << 17)))
    assert len(executions) == spans

    def json_path() -> None:
        for raw in executions:
            validator.validate("engine_execution", raw)

    result["json_bytes"] = sum(map(len, executions)) / spans
    result["json_path"] = rate(json_path, spans, repeat)
    for encoding in ("otlp_proto", "otlp_json"):
        raws = [
            r.SerializeToString() if encoding == "otlp_proto" else encode_json(r) for r in requests
        ]
        records = [LocalRecord(offset, raw) for offset, raw in enumerate(raws)]
        config = JsonEngineConfig(otlp=OtlpConfig(enabled=True, encoding=encoding))

        def decode_only(raws: list[bytes] = raws, encoding: str = encoding) -> None:
            for raw in raws:
                decode(raw, encoding)

        def reader_path(
            records: list[LocalRecord] = records, config: JsonEngineConfig = config
        ) -> None:
            limits = MessageLimits()
            reader = OtlpReader(config, validator, DeadLetterPolicy(config, limits), limits)
            for record in records:
                reader._pending.extend(reader.derive(0, record, record.value()))
            mapped = sum(n for (outcome, _), n in reader.counts.items() if outcome == "mapped")
            assert mapped == spans, reader.counts

        result[encoding] = {
            "bytes": sum(map(len, raws)) / spans,
            "decode": rate(decode_only, spans, repeat),
            "reader": rate(reader_path, spans, repeat),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--per-record", type=int, default=10, help="spans per request")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = measure(args.spans, args.per_record, args.repeat, args.seed)
    print(
        f"OTLP input per core: {args.spans} SDK spans, {args.per_record} per record"
        f" ({result['records']} records), best of {args.repeat} (CPU time)"
    )
    header = f"{'path':<38} {'bytes/span':>10} {'spans/s':>12} {'vs JSON':>8}"
    print(header)
    print("-" * len(header))
    json_rate = result["json_path"]
    for encoding in ("otlp_proto", "otlp_json"):
        r = result[encoding]
        for column, label in (("decode", "decode only"), ("reader", "decode + map + validate")):
            print(
                f"{encoding + ' ' + label:<38} {r['bytes']:>10.0f} {r[column]:>12,.0f}"
                f" {r[column] / json_rate:>7.2f}x"
            )
    print(
        f"{'JSON engine_execution, Validator':<38} {result['json_bytes']:>10.0f}"
        f" {json_rate:>12,.0f} {1:>7.2f}x"
    )
    print(
        "spans (or events) per second of one core. reader: OtlpReader.derive per record"
        " (decode, span kind,\nmapping, orjson, Validator); JSON: the"
        " validation every directly published execution gets"
    )


if __name__ == "__main__":
    main()
