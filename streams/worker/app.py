"""The worker's Faust app, and the one seam between json-engine and Faust.

Faust is the worker's framework: the app, its lifecycle (start, signals, graceful stop,
crash), logging and timers. Its own Kafka machinery (aiokafka consumer and producer, leader
assignor, topic declaration) is switched off by the boot strategy below: the batch topics are
read by librdkafka in `streams/worker/loop.py` instead (twice the speed of aiokafka's
per-record Python layer, and no broker call at start-up that could stop the worker while a
broker is down). This module is the only one that knows Faust; an upgrade touches it alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import faust
from faust.app.base import BootStrategy

from streams.config import JsonEngineConfig
from streams.worker.loop import BatchLoop
from streams.worker.observability import Health, Metrics
from streams.worker.pipeline import Pipeline

log = logging.getLogger(__name__)
WATCH_SECONDS = 0.2
STALLED_SECONDS = 5.0  # the batch loop has not come round for this long: not ready
OUTAGE_LOG_SECONDS = 5.0
STOP_SECONDS = 90.0


class WorkerBoot(BootStrategy):
    """No Kafka client, web server or table of Faust's own: the batch loop reads the topics."""

    enable_kafka = False
    enable_web = False


class WorkerApp(faust.App):
    BootStrategy = WorkerBoot


def faust_datadir() -> Path:
    """One directory per user for every worker: Faust makes empty folders there (the memory
    store writes nothing), and a directory per start was left behind by each SIGKILL."""
    return Path(tempfile.gettempdir()) / f"json-engine-faust-{os.getuid()}"


def create_app(config: JsonEngineConfig) -> tuple[faust.App, Worker]:
    app = WorkerApp(
        config.kafka.app_id,
        broker="kafka://" + config.kafka.bootstrap_servers.split(",")[0].strip(),
        store="memory://",
        web_enabled=False,
        datadir=faust_datadir(),
    )
    worker = Worker(app, config)
    worker.install()
    return app, worker


class Worker:
    """Runs the batch loop inside the app: started with it, stopped before it, its fatal
    errors crash the app (exit non-zero), and its counters reach the metrics."""

    def __init__(self, app: faust.App, config: JsonEngineConfig):
        self.app = app
        self.config = config
        self.metrics = Metrics(max_engines=config.metrics.max_engines)
        self._engines_version = -1
        self.health = Health()
        self.pipeline = Pipeline(config)
        self.loop = BatchLoop(config, self.pipeline, self.health, self._fatal)
        self.fatal: BaseException | None = None
        self._outage_logged = 0.0

    def install(self) -> None:
        self.app.task(self.run)
        self.app.on_before_shutdown.connect(self.on_shutdown)

    def _fatal(self, exc: BaseException) -> None:
        self.fatal = exc  # read by `run` in the event loop

    async def run(self) -> None:
        self.loop.start()
        while not self.app.should_stop:
            await asyncio.sleep(WATCH_SECONDS)
            self.record_metrics()
            self.watch(time.monotonic())
            if self.fatal is not None:
                await self.app.crash(self.fatal)
                return

    def watch(self, now: float) -> None:
        """Readiness, and a log line every few seconds while no broker answers: from here,
        which a blocked call in the batch loop cannot hold up."""
        stalled = now - self.health.last_tick > STALLED_SECONDS
        self.health.ready = self.loop.ready and not stalled
        down_since = self.loop.down_since
        if down_since is not None and now - self._outage_logged >= OUTAGE_LOG_SECONDS:
            self._outage_logged = now
            log.error(
                "no broker answers for %.0fs (%s): waiting, not ready",
                now - down_since,
                self.config.kafka.bootstrap_servers,
            )

    async def on_shutdown(self, sender: object, **_: object) -> None:
        self.loop.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.loop.join, STOP_SECONDS)
        if self.loop.is_alive():
            log.error("the batch loop did not stop in %ss: leaving it", STOP_SECONDS)
        counts = {s.channel: s.counters.written for s in self.pipeline.sinks.values()}
        log.info("sinks closed: %s", counts)

    def record_metrics(self) -> None:
        m, pipeline = self.metrics, self.pipeline
        m.ready.set(1 if self.health.ready else 0)
        for sink in pipeline.sinks.values():
            c, ch = sink.counters, sink.channel
            for counter, total in (
                (m.received, c.received),
                (m.valid, c.valid),
                (m.invalid, c.invalid),
                (m.written, c.written),
                (m.duplicates, c.duplicates_dropped),
                (m.batches, c.batches),
                (m.bytes, c.bytes),
            ):
                m.add_total(counter, ch, total)
            for seconds in sink.flush_durations:
                m.flush_seconds.labels(ch).observe(seconds)
            sink.flush_durations.clear()
        for channel, total in pipeline.dead_letters.counts.items():
            m.add_total(m.dead_letters, channel, total)
        if pipeline.aggregator is not None:
            m.add_total(m.windows_emitted, "", pipeline.aggregator.windows_emitted)
            m.add_total(m.late_events, "", pipeline.aggregator.late_events)
            merge = pipeline.aggregator.merge
            m.add_total(m.regression_alerts, "", merge.alerts_emitted)
            if merge.version != self._engines_version:
                self._engines_version = merge.version
                m.engines.update(merge.last_records())
        if pipeline.otlp is not None:
            for labels, total in dict(pipeline.otlp.counts).items():
                m.add_total(m.otlp_spans, labels, total)
        for (topic, partition), behind in dict(self.loop.lag).items():
            m.lag.labels(topic, str(partition)).set(behind)
