"""A small OpenAI-compatible HTTP server on 127.0.0.1 for the instrumentation tests.

It answers `POST /v1/chat/completions` (plain, and streamed as server-sent events with a final
usage chunk when `stream_options.include_usage` is set) and `POST /v1/embeddings`. A request
whose model contains `fail-429` or `fail-500` is answered with that status and an OpenAI error
body, so that the instrumentations record a failed call. Usage is a function of the request
(`usage_of`), so that the calling script knows the token counts each span must carry, cached
and reasoning tokens included. Responses are a few milliseconds late on purpose: latency and
time to first chunk are then clearly above zero.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DELAY_S = 0.005  # before every answer, and before the first streamed content chunk
EMBEDDING = [0.25, -0.5, 0.125]
ERRORS = {
    "fail-429": (
        429,
        {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    ),
    "fail-500": (
        500,
        {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
}


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text of the request's messages, joined: what the prompt tokens are counted on."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        texts.append(str(content or ""))
    return "\n".join(texts)


def reply_to(messages: list[dict[str, Any]]) -> str:
    last = messages[-1].get("content") if messages else ""
    return f"Echo: {last}" if isinstance(last, str) else "Echo."


def usage_of(prompt: str, reply: str | None) -> dict[str, Any]:
    """The usage the server reports: one prompt token per character, one completion token per
    word; half the prompt tokens cached, one reasoning token."""
    prompt_tokens = len(prompt)
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens}
    if reply is None:  # embeddings
        usage["total_tokens"] = prompt_tokens
        return usage
    completion = len(reply.split())
    usage.update(
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
        prompt_tokens_details={"cached_tokens": prompt_tokens // 2, "audio_tokens": 0},
        completion_tokens_details={
            "reasoning_tokens": 1,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    )
    return usage


class Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        model = str(body.get("model", ""))
        time.sleep(DELAY_S)
        for marker, (status, error) in ERRORS.items():
            if marker in model:
                self._json(status, {"error": error})
                return
        response_model = model + self.server.response_suffix
        if self.path.endswith("/chat/completions"):
            messages = body.get("messages", [])
            reply = reply_to(messages)
            usage = usage_of(prompt_text(messages), reply)
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(response_model, reply, usage if include else None)
            else:
                self._json(200, self._completion(response_model, reply, usage))
        elif self.path.endswith("/embeddings"):
            inputs = body.get("input", "")
            text = inputs if isinstance(inputs, str) else " ".join(map(str, inputs))
            if body.get("encoding_format") == "base64":
                vector: Any = base64.b64encode(struct.pack(f"<{len(EMBEDDING)}f", *EMBEDDING))
                vector = vector.decode()
            else:
                vector = EMBEDDING
            data = {"object": "embedding", "index": 0, "embedding": vector}
            self._json(
                200,
                {
                    "object": "list",
                    "data": [data],
                    "model": response_model,
                    "usage": usage_of(text, None),
                },
            )
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid"}})

    def _completion(self, model: str, reply: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.server.next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    def _stream(self, model: str, reply: str, usage: dict[str, Any] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        base = {
            "id": f"chatcmpl-{self.server.next_id()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {**base, "choices": choices, **extra}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        send(choice({"role": "assistant", "content": ""}))
        time.sleep(DELAY_S)
        words = reply.split(" ")
        for i, word in enumerate(words):
            send(choice({"content": word if i == 0 else " " + word}))
        send(choice({}, "stop"))
        if usage is not None:
            send([], usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if status >= 400:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(raw)


class FakeOpenAI(ThreadingHTTPServer):
    """The server, serving from a daemon thread: `with FakeOpenAI() as server: server.url`."""

    daemon_threads = True

    def __init__(self, port: int = 0, response_suffix: str = ""):
        super().__init__(("127.0.0.1", port), Handler)
        self.response_suffix = response_suffix  # e.g. "-2025-04-14", as OpenAI dates models
        self._ids = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=19500)
    parser.add_argument("--response-suffix", default="")
    args = parser.parse_args()
    with FakeOpenAI(args.port, args.response_suffix) as fake:
        print(fake.url, flush=True)
        threading.Event().wait()
