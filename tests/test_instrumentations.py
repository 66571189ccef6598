"""Real instrumentations of the `openai` package in, one execution per call out (issue 24).

Each library (the official openai-v2, OpenLLMetry, OpenInference for openai, and OpenInference
for LangChain around `prompt | ChatOpenAI`) instruments the real `openai` client in a process
of its own (`tests/instrumented_calls.py`: they patch the module), which calls a fake
OpenAI-compatible server (`tests/fake_openai.py`): chat, streamed chat, a 429, a 500, a
streamed 500, embeddings; for LangChain the chain, succeeding and failing. Their spans, encoded
by the OTLP exporter's own encoder, are published as the Collector's kafka exporter writes
them, in protobuf to one OTLP topic and in OTLP/JSON to another, and one real worker per
encoding turns them into executions. Per call: exactly one execution, of the call's inference
span (never of the application, chain or prompt span around it), with the requested model as
engine, failures included, tokens, content, success, latency, and the newer optional fields
wherever the library's span reports them.

The four libraries run at once and share the two workers: the whole module takes about as
long as one worker's start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import clear_engine_env, write_config
from tests.fake_openai import FakeOpenAI
from tests.instrumented_calls import INSTANCE, TESTED, manifest_path, read_requests
from tests.test_aggregator import FAST
from tests.test_otlp import Spans, encoded, free_port, otlp_config, trace_key
from tests.workers import READY, WorkerProcess, lines_of, records, wait_for_lines

ROOT = Path(__file__).resolve().parent.parent
ENCODINGS = ("otlp_proto", "otlp_json")
DATED = "-2025-04-14"  # what the fake server appends to the requested model in its answers
DIALECT = {
    "openai_v2": "gen_ai",
    "openllmetry": "gen_ai",
    "openinference": "openinference",
    "openinference_langchain": "openinference",
}
CHATS = {"chat", "stream", "chain"}  # the calls that succeed with an answer
# What each library's inference span reports beyond model, tokens and content, by field: the
# calls (kinds) where it does (README → Instrumentations tested). The execution must carry it.
REPORTS: dict[str, dict[str, set[str]]] = {
    "openai_v2": {"finish_reasons": {"chat"}},  # 2.4b0: nothing for a stream
    "openllmetry": {
        "cache_read_input_tokens": {"chat", "stream", "embeddings"},
        "reasoning_output_tokens": {"chat"},  # gen_ai.usage.reasoning_tokens; none streamed
        "time_to_first_chunk_ms": {"stream"},  # a gen_ai.content.completion.chunk event each
        "stream": {"chat", "stream", "chat_429", "chat_500", "stream_500", "embeddings"},
        "finish_reasons": {"chat", "stream"},
    },
    "openinference": {
        "cache_read_input_tokens": {"chat", "stream"},
        "reasoning_output_tokens": {"chat", "stream"},
        "time_to_first_chunk_ms": {"stream"},  # the "First Token Stream Event"
        "stream": {"stream", "stream_500"},  # "stream": true in llm.invocation_parameters
        "finish_reasons": {"chat", "stream"},  # llm.finish_reason
    },
    "openinference_langchain": {
        "cache_read_input_tokens": {"chain"},
        "reasoning_output_tokens": {"chain"},
        "stream": {"chain", "chain_429", "chain_500"},  # "stream": false in the parameters
        "finish_reasons": {"chain"},
    },
}
# Content the library does not capture: openai-v2 records no text of an embeddings request.
NO_INPUT = {("openai_v2", "embeddings")}
# Outcomes of json_engine_otlp_spans_total that give no execution.
NOT_EXECUTIONS = {"skipped", "invalid", "duplicate", "no_model"}


@dataclass
class Run:
    manifests: dict[str, dict[str, Any]]  # library → its manifest
    executions: dict[str, list[dict[str, Any]]]  # encoding → every execution line
    outcomes: dict[str, dict[str, float]]  # encoding → OTLP spans by outcome
    spans: int  # how many spans were published (to each topic)


def start_calls(library: str, base_url: str, out: Path) -> subprocess.Popen[bytes]:
    """`python -m tests.instrumented_calls` for one library, without outside OTel settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "TRACELOOP_", "OPENINFERENCE_"))
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.instrumented_calls",
            "--library",
            library,
            "--base-url",
            base_url,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def otlp_outcomes(port: int) -> dict[str, float]:
    """json_engine_otlp_spans_total summed by outcome, whatever other labels it has."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("json_engine_otlp_spans_total{"):
            outcome = re.search(r'outcome="([^"]*)"', line)
            if outcome:
                key = outcome.group(1)
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The calls of every library, through one worker per encoding, once for the module."""
    tmp = tmp_path_factory.mktemp("instrumentations")
    # The server answers with a dated model, as OpenAI does: the engine is still the one asked for.
    with pytest.MonkeyPatch.context() as monkeypatch, FakeOpenAI(response_suffix=DATED) as fake:
        clear_engine_env(monkeypatch)
        calls = {lib: start_calls(lib, fake.url, tmp / f"{lib}.bin") for lib in TESTED}
        workers: dict[str, tuple[WorkerProcess, Any, int]] = {}
        for encoding in ENCODINGS:
            port = free_port()
            path, cfg = write_config(
                tmp / f"{encoding}.yaml",
                kafka_bootstrap,
                f"test-{uuid.uuid4().hex[:10]}.",
                tmp / encoding / "output",
                tmp / encoding,
                {
                    **otlp_config(encoding),
                    "aggregation": {"enabled": False},
                    "training": {"enabled": False},
                    "metrics": {"port": port},
                    "channels": FAST,
                },
            )
            worker = WorkerProcess(path, tmp, name=f"worker-{encoding}")
            workers[encoding] = (worker.start(wait_ready=False), cfg, port)
        try:
            for library, proc in calls.items():
                output, _ = proc.communicate(timeout=120)
                assert proc.returncode == 0, f"{library}:\n{output.decode(errors='replace')}"
            manifests = {
                lib: orjson.loads(manifest_path(tmp / f"{lib}.bin").read_bytes()) for lib in TESTED
            }
            requests = [
                ExportTraceServiceRequest.FromString(raw)
                for lib in TESTED
                for raw in read_requests(tmp / f"{lib}.bin")
            ]
            spans = sum(
                len(s.spans) for r in requests for rs in r.resource_spans for s in rs.scope_spans
            )
            for encoding, (worker, cfg, _port) in workers.items():
                worker.wait_for(READY, 120)
                topic = Spans(cfg)
                for request in requests:  # keyed by trace id: partition_traces_by_id
                    topic.send(encoded(request, encoding), key=trace_key(request))
                topic.flush()
            executions, outcomes = {}, {}
            for encoding, (worker, cfg, port) in workers.items():
                deadline = time.monotonic() + 90
                counts = otlp_outcomes(port)
                while sum(counts.values()) < spans and time.monotonic() < deadline:
                    time.sleep(0.3)
                    counts = otlp_outcomes(port)
                assert sum(counts.values()) == spans, (encoding, counts, worker.tail())
                made = sum(n for outcome, n in counts.items() if outcome not in NOT_EXECUTIONS)
                wait_for_lines(cfg, "engine_execution", int(made), timeout=60)
                executions[encoding] = records(lines_of(cfg, "engine_execution"))
                outcomes[encoding] = counts
            for worker, _cfg, _port in workers.values():
                assert worker.terminate() == 0, worker.tail()
        finally:
            for worker, _cfg, _port in workers.values():
                worker.thaw_and_kill()
            for proc in calls.values():
                if proc.poll() is None:
                    proc.kill()
    yield Run(manifests, executions, outcomes, spans)


def rendered(messages: list[dict[str, str]]) -> str:
    """Messages as an execution's input holds them: one is its text, several `role: text`."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def problems_of(library: str, call: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """What the execution of one call gets wrong (all of it, not the first)."""
    kind, usage, metrics = call["kind"], call["usage"], event["metrics"]
    want: dict[str, Any] = {
        "engine_id": call["model"],
        "engine_instance_id": INSTANCE,
        "success": not call["failed"],
        "input": "" if (library, kind) in NO_INPUT else rendered(call["messages"]),
        "output": call["reply"] or "",
        "input_tokens": usage["prompt_tokens"] if usage else None,
        "output_tokens": usage.get("completion_tokens") if usage else None,
        "dialect": DIALECT[library],
        "provider": "openai",
        "span_name": call["spans"][call["inference_span_id"]],
    }
    reports = {field for field, kinds in REPORTS[library].items() if kind in kinds}
    if "cache_read_input_tokens" in reports:
        want["cache_read_input_tokens"] = usage.get("prompt_tokens_details", {}).get(
            "cached_tokens", 0
        )
    if "reasoning_output_tokens" in reports:
        want["reasoning_output_tokens"] = usage["completion_tokens_details"]["reasoning_tokens"]
    if "stream" in reports:
        want["stream"] = call["stream"]
    if "finish_reasons" in reports:
        want["finish_reasons"] = ["stop"]
    got = {
        "engine_id": event["engine_id"],
        "engine_instance_id": event["engine_instance_id"],
        "success": metrics["success"],
        "input": event["input"],
        "output": event["output"],
        "dialect": event.get("otel", {}).get("dialect"),
        "provider": event.get("otel", {}).get("provider"),
        "span_name": event.get("otel", {}).get("span_name"),
        "stream": event.get("stream"),
        "finish_reasons": event.get("finish_reasons"),
        **{k: metrics.get(k) for k in want if k.endswith("_tokens")},
    }
    found = [
        f"{name}: {got.get(name)!r}, want {value!r}"
        for name, value in want.items()
        if got.get(name) != value
    ]
    for name in ("stream", "finish_reasons", "conversation_id"):  # nothing not reported
        if name not in want and event.get(name) is not None:
            found.append(f"{name}: {event[name]!r}, reported by no attribute")
    for name in ("cache_read_input_tokens", "reasoning_output_tokens", "time_to_first_chunk_ms"):
        if name not in want and name not in reports and metrics.get(name) is not None:
            found.append(f"{name}: {metrics[name]!r}, reported by no attribute")
    latency = metrics["latency_ms"]
    took = call["ended_ms"] - call["started_ms"]
    if not 0 < latency <= took + 1:
        found.append(f"latency_ms {latency} outside the call's {took:.1f} ms")
    if not call["started_ms"] - 1 <= event["timestamp"] <= call["ended_ms"]:
        found.append(f"timestamp {event['timestamp']} outside the call")
    if "time_to_first_chunk_ms" in reports:
        first = metrics.get("time_to_first_chunk_ms")
        if first is None or not 0 < first <= latency:
            found.append(f"time_to_first_chunk_ms: {first!r}, want within (0, {latency}]")
    status = event["status"]
    if not call["failed"]:
        if status != "ok":
            found.append(f"status {status!r}, want 'ok'")
    elif "429" in kind and "RateLimitError" not in status:
        found.append(f"status {status[:120]!r} does not name the rate limit")
    elif "500" in kind and not any(s in status for s in ("InternalServerError", "APIError")):
        found.append(f"status {status[:120]!r} does not name the server error")
    return found


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("library", TESTED)
def test_each_call_is_one_execution(run: Run, library: str, encoding: str) -> None:
    manifest = run.manifests[library]
    traces = {call["trace_id"] for call in manifest["calls"]}
    executions = [e for e in run.executions[encoding] if e["trace_id"] in traces]
    assert len({(e["trace_id"], e["task_id"]) for e in executions}) == len(executions)
    problems = []
    for call in manifest["calls"]:
        assert call["inference_span_id"] in call["spans"], call  # the script found it
        mine = [e for e in executions if e["trace_id"] == call["trace_id"]]
        others = [
            call["spans"].get(e["task_id"], e["task_id"])
            for e in mine
            if e["task_id"] != call["inference_span_id"]
        ]
        if others:  # an application, chain or prompt span taken for an inference
            problems.append(f"{call['kind']}: spans {others} became executions")
        ours = [e for e in mine if e["task_id"] == call["inference_span_id"]]
        if len(ours) != 1:
            problems.append(f"{call['kind']}: {len(ours)} executions of its inference span")
            continue
        problems += [f"{call['kind']}: {p}" for p in problems_of(library, call, ours[0])]
    assert not problems, "\n".join(problems)


def test_both_encodings_give_the_same_executions(run: Run) -> None:
    proto, json = (
        {(e["trace_id"], e["task_id"]): e for e in run.executions[encoding]}
        for encoding in ENCODINGS
    )
    assert proto == json
    calls = sum(len(m["calls"]) for m in run.manifests.values())
    assert len(proto) == calls  # one per call, embeddings included
    for counts in run.outcomes.values():
        assert counts.get("invalid", 0) == counts.get("duplicate", 0) == 0, counts
        assert sum(counts.values()) == run.spans
