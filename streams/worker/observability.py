"""Metrics (Prometheus), health endpoints and log format of a worker.

`/metrics` is Prometheus' text format; `/livez` answers 200 while the worker's event loop ticks;
`/readyz` answers 200 once partitions are assigned and every sink has resumed from its files.
Counters are updated from the sinks' own counters once per tick, never per event.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streams.worker.engine_series import EngineSeries

LIVE_AFTER_SECONDS = 30.0


class Metrics:
    """The worker's metrics, in one registry (a fresh one per worker, so tests can build many)."""

    def __init__(self, registry: CollectorRegistry | None = None, max_engines: int = 1000):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.engines = EngineSeries(r, max_engines)
        by_channel = ["channel"]
        self.received = Counter(
            "json_engine_events_received", "Records consumed", by_channel, registry=r
        )
        self.valid = Counter(
            "json_engine_events_valid", "Records that passed validation", by_channel, registry=r
        )
        self.invalid = Counter(
            "json_engine_events_invalid", "Records that failed validation", by_channel, registry=r
        )
        self.written = Counter(
            "json_engine_events_written", "Lines made durable", by_channel, registry=r
        )
        self.duplicates = Counter(
            "json_engine_duplicates_dropped",
            "Records already written (replays, repeated ids)",
            by_channel,
            registry=r,
        )
        self.batches = Counter(
            "json_engine_batches_flushed", "Batches flushed", by_channel, registry=r
        )
        self.bytes = Counter("json_engine_bytes_flushed", "Bytes flushed", by_channel, registry=r)
        self.flush_seconds = Histogram(
            "json_engine_flush_seconds", "Duration of one flush", by_channel, registry=r
        )
        self.dead_letters = Counter(
            "json_engine_dead_letters", "Dead letters published", by_channel, registry=r
        )
        self.lag = Gauge(
            "json_engine_consumer_lag",
            "High watermark minus durable offset",
            ["topic", "partition"],
            registry=r,
        )
        self.windows_emitted = Counter(
            "json_engine_windows_emitted", "Aggregate windows emitted", registry=r
        )
        self.ready = Gauge(
            "json_engine_worker_ready",
            "1 while the worker is ready (/readyz answers 200)",
            registry=r,
        )
        self.regression_alerts = Counter(
            "json_engine_regression_alerts",
            "Regression alerts emitted (windows worse than their engine's baseline)",
            registry=r,
        )
        self.late_events = Counter(
            "json_engine_late_events", "Events later than the grace", registry=r
        )
        self.otlp_spans = Counter(
            "json_engine_otlp_spans",
            "OTLP spans read, by outcome (mapped, placeholder: mapped without a model, "
            "skipped, invalid) and kind (the operation: chat, embeddings, invoke_agent, chain, "
            "not_genai, ...)",
            ["outcome", "kind"],
            registry=r,
        )
        self._last: dict[tuple[str, str | tuple[str, ...]], int] = {}

    def add_total(self, counter: Counter, labels: str | tuple[str, ...], total: int) -> None:
        """Advance a counter (labelled by channel, or by a tuple of label values; unlabelled
        when empty) to a running total kept elsewhere."""
        key = (counter._name, labels)
        delta = total - self._last.get(key, 0)
        if delta > 0:
            values = (labels,) if isinstance(labels, str) else labels
            (counter.labels(*values) if labels else counter).inc(delta)
            self._last[key] = total


class Health:
    """What /livez and /readyz answer."""

    def __init__(self) -> None:
        self.last_tick = time.monotonic()
        self.ready = False

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def live(self) -> bool:
        return time.monotonic() - self.last_tick < LIVE_AFTER_SECONDS


def serve(
    port: int, metrics: Metrics, health: Health, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve /metrics, /livez and /readyz from a daemon thread; port 0 picks a free one."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = generate_latest(metrics.registry)
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif self.path == "/livez":
                ok = health.live()
                self._send(200 if ok else 503, b"ok\n" if ok else b"event loop stalled\n")
            elif self.path == "/readyz":
                ok = health.ready
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # probes every few seconds: no access log
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="json-engine-http").start()
    return server


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """JSON lines by default (for log pipelines); `text` for people."""
    formatter = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
        if fmt == "json"
        else {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
