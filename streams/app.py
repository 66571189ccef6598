"""The Faust app of a worker: its topics, its sinks, and when they flush, roll and commit."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from typing import Any

import faust
from faust.types import TP

from streams import batching
from streams.config import CHANNELS, JsonEngineConfig
from streams.dead_letter import DeadLetterPolicy
from streams.sink import ChannelSink
from streams.topics import topic_name
from streams.validation import Validator

log = logging.getLogger(__name__)
TICK_SECONDS = 0.1


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"{batching.SCHEME}://{host.strip()}" for host in bootstrap_servers.split(",")]


def create_app(config: JsonEngineConfig) -> faust.App:
    """A Faust app whose consumer group derives from the topic prefix (one group per config)."""
    app = faust.App(
        config.kafka.app_id,
        broker=broker_urls(config.kafka.bootstrap_servers),
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
        broker_session_timeout=30,
        broker_heartbeat_interval=3,
        broker_commit_every=10_000,
        stream_wait_empty=False,
    )
    Pipeline(app, config).install()
    return app


class Pipeline:
    """Wires the sinks into the app: batch handlers, a ticker, and rebalance/stop hooks."""

    def __init__(self, app: faust.App, config: JsonEngineConfig):
        self.app = app
        self.config = config
        self.validator = Validator(max_payload_bytes=config.validation.max_payload_bytes)
        self.dead_letters = DeadLetterPolicy(config)
        self.sinks: list[ChannelSink] = []

    def install(self) -> None:
        app = self.app
        consumer: batching.BatchConsumer = app.consumer  # type: ignore[assignment]
        for channel in CHANNELS:
            channel_config = self.config.channels.get(channel)
            if not channel_config.enabled:
                continue
            name = topic_name(self.config, channel)
            app.topics.add(app.topic(name, value_serializer="raw", acks=False))
            sink = ChannelSink(
                channel,
                name,
                channel_config,
                self.config.output.base_path,
                self.validator,
                self.dead_letters,
                owns=self._owner_check(consumer, name),
            )
            consumer.add_batch_handler(name, sink)
            self.sinks.append(sink)
        app.task(self.run_ticker)
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_before_shutdown.connect(self.on_shutdown)

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
        """Flush by age, roll files by age, and commit what the files now prove."""
        now = time.monotonic()
        try:
            for sink in self.sinks:
                if sink.due(now):
                    sink.flush()
                sink.roll_due(now)
        except Exception as exc:
            await self.app.crash(exc)  # the worker exits non-zero; nothing unwritten is done
            return
        await self.commit()

    async def commit(self) -> None:
        offsets = {
            TP(sink.topic, partition): offset
            for sink in self.sinks
            for partition, offset in sink.take_committable().items()
        }
        if not offsets:
            return
        consumer: batching.BatchConsumer = self.app.consumer  # type: ignore[assignment]
        try:
            await consumer.commit_offsets(offsets)
        except Exception as exc:  # a hint only: the files decide where to resume
            log.warning("offset commit failed (files stay authoritative): %r", exc)

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        for sink in self.sinks:
            sink.assign(tp.partition for tp in assigned if tp.topic == sink.topic)

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        for sink in self.sinks:
            partitions = [tp.partition for tp in revoked if tp.topic == sink.topic]
            if partitions:
                sink.release(partitions)
        await self.commit()

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # what was not written stays unproven and is read again
                log.error("%s: could not flush at shutdown: %s", sink.channel, exc)
        log.info("sinks closed: %s", {s.channel: s.counters.written for s in self.sinks})
