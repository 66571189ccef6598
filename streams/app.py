"""The Faust app of a worker: its topics, its sinks, and when they flush, roll and commit."""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from streams import batching
from streams.aggregator import Aggregator
from streams.config import CHANNELS, JsonEngineConfig, KafkaConfig
from streams.dead_letter import DeadLetterPolicy
from streams.derived import DerivingReader
from streams.observability import Health, Metrics
from streams.rekey import Rekeyer
from streams.route import Reader, TopicRoute
from streams.sink import ChannelSink
from streams.topics import rekey_topic, topic_name
from streams.training import TrainingDeriver
from streams.validation import Validator

log = logging.getLogger(__name__)
TICK_SECONDS = 0.1
LAG_EVERY_SECONDS = 5.0
DEDUPE_KEYS: dict[str, Callable[[dict[str, Any]], str]] = {
    "training_sample": lambda record: record["sample_id"],
    "aggregated_stats": lambda record: f"{record['engine_id']}|{record['window_start']}",
}


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"{batching.SCHEME}://{host.strip()}" for host in bootstrap_servers.split(",")]


def broker_credentials(kafka: KafkaConfig) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The same security settings as `KafkaConfig.client_config`, for Faust's aiokafka."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = None
    if kafka.security_protocol.endswith("SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                str(kafka.ssl_certificate_location), str(kafka.ssl_key_location or "") or None
            )
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(config: JsonEngineConfig) -> tuple[faust.App, Pipeline]:
    """A Faust app whose consumer group derives from the topic prefix (one group per config)."""
    app = faust.App(
        config.kafka.app_id,
        broker=broker_urls(config.kafka.bootstrap_servers),
        broker_credentials=broker_credentials(config.kafka),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="json-engine-faust-"),
        topic_partitions=config.kafka.partitions,
        topic_replication_factor=config.kafka.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=10_000,
        consumer_max_fetch_size=4 * 1024 * 1024,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=10_000,
        stream_wait_empty=False,
    )
    pipeline = Pipeline(app, config)
    pipeline.install()
    return app, pipeline


class Pipeline:
    """Wires the readers into the app: topic routes, a ticker, rebalance and stop hooks.

    Readers of a topic: its channel's sink and, for executions and comparisons, the
    aggregator, the re-keyer and the training deriver. Each reports per partition the next
    offset it has made durable (`done`); the offset committed to Kafka is the smallest of
    them, so no reader is ever skipped past.
    """

    def __init__(self, app: faust.App, config: JsonEngineConfig):
        self.app = app
        self.config = config
        self.metrics = Metrics()
        self.health = Health()
        self._lag_at = 0.0
        self.validator = Validator(max_payload_bytes=config.validation.max_payload_bytes)
        self.dead_letters = DeadLetterPolicy(config)
        self.sinks: list[ChannelSink] = []
        self.derivers: list[DerivingReader] = []
        self.aggregator: Aggregator | None = None
        self.routes: dict[str, TopicRoute] = {}
        self._committed: dict[TP, int] = {}

    def install(self) -> None:
        app = self.app
        config = self.config
        consumer: batching.BatchConsumer = app.consumer  # type: ignore[assignment]
        for channel in CHANNELS:
            channel_config = config.channels.get(channel)
            if channel_config.enabled:
                name = topic_name(config, channel)
                sink = ChannelSink(
                    channel,
                    name,
                    channel_config,
                    config.output.base_path,
                    self.dead_letters,
                    owns=self._owner_check(consumer, name),
                    dedupe_key=DEDUPE_KEYS.get(channel),
                )
                self.sinks.append(sink)
                self._route(consumer, name, channel, sink)
        comparisons = topic_name(config, "comparison_result")
        if config.training.enabled:
            deriver = TrainingDeriver(config, self.validator)
            self.derivers.append(deriver)
            self._route(consumer, comparisons, "comparison_result", deriver)
        if config.aggregation.enabled:
            rekeyer = Rekeyer(config)
            self.derivers.append(rekeyer)
            self._route(consumer, comparisons, "comparison_result", rekeyer)
            executions = topic_name(config, "engine_execution")
            self.aggregator = Aggregator(
                config, self.dead_letters, owns=self._owner_check(consumer, executions)
            )
            self._route(
                consumer,
                topic_name(config, "engine_execution"),
                "engine_execution",
                self.aggregator.executions,
            )
            self._route(consumer, rekey_topic(config), None, self.aggregator.comparisons)
        app.task(self.run_ticker)
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_before_shutdown.connect(self.on_shutdown)

    def _route(
        self, consumer: batching.BatchConsumer, topic: str, kind: str | None, reader: Reader
    ) -> None:
        if topic not in self.routes:
            self.app.topics.add(self.app.topic(topic, value_serializer="raw", acks=False))
            self.routes[topic] = TopicRoute(topic, kind, self.validator)
            consumer.add_batch_handler(topic, self.routes[topic])
        self.routes[topic].readers.append(reader)

    @staticmethod
    def _owner_check(consumer: batching.BatchConsumer, topic: str) -> Any:
        def owns(partition: int) -> bool:
            return TP(topic, partition) in consumer.assignment()

        return owns

    async def run_ticker(self) -> None:
        while not self.app.should_stop:
            await asyncio.sleep(TICK_SECONDS)
            await self.tick()

    async def tick(self) -> None:
        """Flush by age, roll files by age, confirm derived records, commit what is durable."""
        now = time.monotonic()
        try:
            for sink in self.sinks:
                if sink.due(now):
                    sink.flush()
                sink.roll_due(now)
            for deriver in self.derivers:
                deriver.flush()
            if self.aggregator is not None:
                self.aggregator.checkpoint()
        except Exception as exc:
            await self.app.crash(exc)  # the worker exits non-zero; nothing unwritten is done
            return
        await self.commit()
        self.health.tick()
        self.record_metrics(now)

    def record_metrics(self, now: float) -> None:
        m = self.metrics
        for sink in self.sinks:
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
        for channel, total in self.dead_letters.counts.items():
            m.add_total(m.dead_letters, channel, total)
        if self.aggregator is not None:
            m.add_total(m.windows_emitted, "", self.aggregator.windows_emitted)
            m.add_total(m.late_events, "", self.aggregator.late_events)
        if now - self._lag_at >= LAG_EVERY_SECONDS:
            self._lag_at = now
            consumer: batching.BatchConsumer = self.app.consumer  # type: ignore[assignment]
            for sink in self.sinks:
                for partition, offset in sink.done.items():
                    try:
                        high = consumer.highwater(TP(sink.topic, partition))
                    except Exception:
                        continue
                    if high is not None:
                        m.lag.labels(sink.topic, str(partition)).set(max(0, high - offset))

    def committable(self) -> dict[TP, int]:
        """Per partition, the smallest offset all of its topic's handlers have made durable."""
        offsets: dict[TP, int] = {}
        for topic, route in self.routes.items():
            dones = [reader.done for reader in route.readers]
            for partition in set.intersection(*(set(d) for d in dones)):
                tp = TP(topic, partition)
                offset = min(d[partition] for d in dones)
                if self._committed.get(tp) != offset:
                    offsets[tp] = offset
        return offsets

    async def commit(self) -> None:
        offsets = self.committable()
        if not offsets:
            return
        consumer: batching.BatchConsumer = self.app.consumer  # type: ignore[assignment]
        try:
            await consumer.commit_offsets(offsets)
            self._committed.update(offsets)
        except Exception as exc:  # a hint only: the files decide where sinks resume
            log.warning("offset commit failed (files stay authoritative): %r", exc)

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        for sink in self.sinks:
            sink.assign(tp.partition for tp in assigned if tp.topic == sink.topic)
        if self.aggregator is not None:
            executions = self.aggregator.exec_topic
            self.aggregator.assign([tp.partition for tp in assigned if tp.topic == executions])
        self.health.ready = bool(assigned)

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        self.health.ready = False
        for topic, route in self.routes.items():
            partitions = [tp.partition for tp in revoked if tp.topic == topic]
            if partitions:
                for reader in route.readers:
                    reader.release(partitions)
        await self.commit()
        for tp in revoked:
            self._committed.pop(tp, None)

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        if self.app.crashed:
            # The consumer has left the group with the crash: the partitions may be another
            # worker's already, so nothing more is written; the new owner reads it again.
            log.error("not flushing after a crash: %s", self.app.crash_reason)
            return
        closers = [*self.derivers, *([self.aggregator] if self.aggregator else []), *self.sinks]
        for reader in closers:
            try:
                reader.close()
            except Exception as exc:  # what was not made durable is read again at restart
                log.error("%s: could not flush at shutdown: %s", reader, exc)
        log.info("sinks closed: %s", {s.channel: s.counters.written for s in self.sinks})
