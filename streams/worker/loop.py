"""The worker's read loop: one librdkafka consumer, in one thread, for every batch topic.

All of a worker's high-volume work happens here, in the thread that calls `consume()`:
parsing and validation, the sinks' writes, the aggregation's folds and the checkpoints. The
rebalance callbacks run in this thread too (librdkafka serves them inside `consume()`), so
they seal files and commit without waiting on anything else. Each topic has a consumer and a
group of its own, `<prefix>worker.<topic>` (streams/topics.py), with the cooperative-sticky
assignor, so that every topic spreads over the workers:

- assigned: the partitions are paused and recovered (streams/worker/checkpoint.py) before a
  record of theirs is read;
- revoked: one last checkpoint, then their files are finished;
- lost (the session expired, e.g. after a freeze): nothing is committed; the worker rolls
  back to its last committed checkpoint and recovers what it still holds.

Broker outages never stop it: it waits, not ready, logs every few seconds, and carries on.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.config import JsonEngineConfig
from streams.readers.failures import RegistryUnavailable, SinkUnavailable
from streams.topics import TopicsInvalid, check_topics, consumer_group, create_topics
from streams.worker.checkpoint import Checkpointer, CheckpointError, bounded
from streams.worker.faults import fault_fails, fault_skip
from streams.worker.observability import Health
from streams.worker.pipeline import TP, Pipeline
from streams.worker.retention import Retention

log = logging.getLogger(__name__)
BATCH = 10_000
IDLE_SECONDS = 0.01  # a pass over the consumers found nothing: wait this long for more
RETRY_SECONDS = 1.0
OUTAGE_LOG_SECONDS = 5.0
TOPICS_RETRY_SECONDS = 10.0
TOPICS_WAIT_SECONDS = 5.0
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000_000  # librdkafka's upper bound of message.max.bytes
LAG_EVERY_SECONDS = 5.0
CLOSE_SECONDS = 60.0
HELD_BUFFERS = 4  # lines a sink holds while a checkpoint is in flight: 4 x buffer_size


class BatchLoop(threading.Thread):
    def __init__(
        self,
        config: JsonEngineConfig,
        pipeline: Pipeline,
        health: Health,
        on_fatal: Callable[[BaseException], None],
    ):
        super().__init__(name="json-engine-batch", daemon=True)
        self.config = config
        self.pipeline = pipeline
        self.health = health
        self.on_fatal = on_fatal
        self.stopping = threading.Event()
        self.failed = False
        self.pending: set[TP] = set()
        self.assigned: set[TP] = set()
        self._down_since: float | None = None
        self._probed_at = 0.0
        self.ready = False  # joined, every partition recovered, a broker answers
        self.was_ready = False
        self._failing = False  # the last checkpoint failed: not ready until one succeeds
        self._errors_logged = 0.0
        self._lag_at = 0.0
        self.lag: dict[TP, int] = {}  # read by the metrics, from the event loop
        self._retry_at = 0.0
        self._topics_at: float | None = 0.0
        # One consumer (and group) per topic: each topic is spread over all workers.
        self.consumers = {topic: self._consumer(topic) for topic in pipeline.topics}
        self.joined: set[str] = set()
        self._busiest = next(iter(self.consumers.values()))
        self.checkpointer = Checkpointer(config, self.consumers, pipeline)
        self.retention = Retention(config, pipeline.sinks)
        self.checkpointer.on_error = self._on_error
        self.checkpointer.on_committed = self._on_committed
        if pipeline.aggregator is not None:
            pipeline.aggregator.set_unread_probe(self._unread)
        # A consumed batch never holds more than a sink may buffer before it must flush.
        sizes = [sink.config.buffer_size for sink in pipeline.sinks.values()]
        self.batch = min([BATCH, *sizes])

    def _consumer(self, topic: str) -> Consumer:
        return Consumer(
            {
                **self.config.kafka.client_config(),
                "group.id": consumer_group(self.config, topic),
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                # librdkafka's default: a fetch returns as soon as records (or a commit
                # marker) arrive, so this bounds only how often an idle partition is asked.
                # At 100, a worker's idle consumers cost the broker 5.5-6.2 s of CPU per
                # million events read, 3.8-4.3 at 500 (bench, one worker).
                "fetch.wait.max.ms": 500,
                # librdkafka prefetches up to 64 MiB per consumer by default, and backs a
                # full queue's partitions off for 1 s: a 16 MiB queue (well over a second of
                # records) refilled 10 ms after it has room keeps a worker under 300 MB.
                "queued.max.messages.kbytes": 16_384,
                "fetch.queue.backoff.ms": 10,
                "error_cb": self._on_error,
            }
        )

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        _spare_the_collector()
        try:
            self._run()
            self._settle()  # before the revocation's callback, which must not wait on it
        except BaseException as exc:
            self.failed = True
            log.error("worker stopping on a fatal error: %s", exc)
            self.on_fatal(exc)
        self._leave()

    def _run(self) -> None:
        for topic, consumer in self.consumers.items():
            consumer.subscribe(
                [topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        while not self.stopping.is_set():
            try:
                self._pass()
            except SinkUnavailable as exc:  # the S3 server, a schema registry is down: wait
                what = "schema registry" if isinstance(exc, RegistryUnavailable) else "output"
                log.error("%s unavailable, back to the last checkpoint (will retry): %s", what, exc)
                self._roll_back()
                self._failing = True
                self.ready = False

    def _pass(self) -> None:
        """One pass: recover what waits, read every consumer once, checkpoint when due."""
        pipeline = self.pipeline
        now = time.monotonic()
        self._ensure_topics(now)
        if self.checkpointer.settled:  # the checkpoint in flight has its outcome
            self._settle()
        # Nothing is recovered (so read or committed) before the topics are checked.
        if self.pending and self._topics_at is None and now >= self._retry_at:
            self._recover_pending()
        idle = True
        for consumer in self.consumers.values():  # none may wait while another has records
            messages = consumer.consume(self.batch, 0)
            if messages:
                idle = False
                self._busiest = consumer
                self._take(messages, now)
        if idle:  # wait on the consumer that had records last: it wakes as soon as they come
            messages = self._busiest.consume(self.batch, IDLE_SECONDS)
            if messages:
                self._take(messages, now)
        now = time.monotonic()
        if self._checkpoint_due(now):
            self._checkpoint()
        pipeline.roll_due(now)
        self.retention.check(now)
        self._measure_lag(now)
        self._watch_outage(now)
        self.health.tick()
        joined = len(self.joined) == len(self.consumers)
        ready = joined and not self.pending and self._down_since is None and not self._failing
        if ready and not self.ready:
            log.info("ready: reading %d partitions", len(self.pipeline.ready))
            self.was_ready = True
        self.ready = ready

    def _take(self, messages: list, now: float) -> None:
        """One consumer's batch to the pipeline, and a checkpoint as soon as one is due."""
        if any(m.error() is None for m in messages):
            self._broker_answered()
        self._log_errors(messages, now)
        rest = self.pipeline.on_messages(messages)
        while rest and not self.stopping.is_set() and self._checkpoint(wait=True):
            # a sink took part: room after a commit (or a publication done, on S3)
            rest = self.pipeline.on_messages(rest)
        if self.pipeline.seek_again:
            self._seek_again()
        if self._checkpoint_due(time.monotonic()):
            self._checkpoint()

    def stop(self) -> None:
        self.stopping.set()

    def _leave(self) -> None:
        """Leave the group: on a graceful stop the revocation checkpoints and finishes files;
        after a fatal error nothing more is committed (the next owner reads it again)."""
        if self.failed:
            self.checkpointer.abandon()  # its fsyncs must not outlive the files they sync
        for consumer in self.consumers.values():
            try:
                bounded(consumer.close, CLOSE_SECONDS)
            except (KafkaException, RuntimeError, TimeoutError) as exc:
                log.warning("consumer close: %s", exc)
        if not self.failed:
            self.checkpointer.close()

    # -- checkpoints and recovery ------------------------------------------------------------

    def _checkpoint_due(self, now: float) -> bool:
        """A checkpoint is due and can start without waiting: group commit. While one is in
        flight, a due checkpoint waits for it and the loop reads on, so the next one takes
        everything read meanwhile; commit latency (a transaction's round trips, an fsync, an
        S3 PUT) then costs larger checkpoints instead of a batch thread that waits. Only when
        a sink holds `HELD_BUFFERS` times its buffer_size does the loop wait."""
        pipeline = self.pipeline
        if not pipeline.due(now):
            return False
        return self.checkpointer.settled or pipeline.overfull(HELD_BUFFERS)

    def _checkpoint(self, wait: bool = False) -> bool:
        """A checkpoint, committed in the background unless `wait`; False when it (or the
        one in flight before it) failed, and the worker rolled back."""
        try:
            self.checkpointer.checkpoint(wait)
        except CheckpointError as exc:
            self._checkpoint_failed(exc)
            return False
        return True

    def _settle(self) -> bool:
        """Wait for the checkpoint in flight; False when it failed (and the worker rolled back)."""
        try:
            self.checkpointer.settle()
        except CheckpointError as exc:
            self._checkpoint_failed(exc)
            return False
        return True

    def _on_committed(self) -> None:
        """What a failed checkpoint held is read again, so a commit does come: ready again."""
        self._failing = False
        self._broker_answered()

    def _checkpoint_failed(self, exc: CheckpointError) -> None:
        log.warning("checkpoint failed, rolling back to the last committed one: %s", exc)
        self._roll_back()
        self._failing = True

    def _roll_back(self) -> None:
        self.checkpointer.abandon()
        self.pipeline.reset()
        held = self.assigned
        for topic, tps in _by_topic(held).items():
            self.consumers[topic].pause(tps)
        self.pending = set(held)
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _recover_pending(self) -> None:
        if not self._settle():  # the claims' transaction needs the producer
            return
        tps = sorted(self.pending)
        try:
            if self.was_ready and fault_fails("recover_while_reading"):
                raise CheckpointError("fault injected: the recovery failed")
            resume = self.checkpointer.recover(tps)
            for (topic, partition), offset in resume.items():
                offset += fault_skip("after_seek")  # the tests' stand-in for a fetch that skips
                self.consumers[topic].seek(TopicPartition(topic, partition, offset))
        except (CheckpointError, KafkaException, TimeoutError) as exc:  # a slow restore too
            log.warning("recovering %d partitions failed (will retry): %s", len(tps), exc)
            # Undo only these partitions' recovery: the partitions read meanwhile stay as they
            # are (a reset would leave them unready and unpaused, their records dropped).
            self.pipeline.release([tp for tp in tps if tp in self.pipeline.ready], finish=False)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        for topic, of_topic in _by_topic(set(tps)).items():
            self.consumers[topic].resume(of_topic)
        self.pending.clear()
        self._broker_answered()

    def _seek_again(self) -> None:
        """Partitions whose first fetch after a recovery started past their position."""
        tps, self.pipeline.seek_again = self.pipeline.seek_again, set()
        try:
            for topic, partition in sorted(tps):
                position = self.pipeline.positions[(topic, partition)]
                self.consumers[topic].seek(TopicPartition(topic, partition, position))
        except KafkaException as exc:
            log.warning("seeking again failed, rolling back: %s", exc)
            self._roll_back()

    # -- rebalance callbacks (inside consume(), in this thread) ------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined |= {t for t, c in self.consumers.items() if c is consumer}
        consumer.incremental_assign(partitions)
        if partitions:
            consumer.pause(partitions)
        tps = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned |= tps
        self.pending |= tps
        self._retry_at = 0.0
        log.info("assigned %d partitions", len(tps))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if not self.failed:
            ready = [tp for tp in tps if tp in self.pipeline.ready]
            finished = bool(ready) and self._checkpoint(wait=True)
            self.pipeline.release([tp for tp in ready if tp in self.pipeline.ready], finished)
        self._forget(tps)
        consumer.incremental_unassign(partitions)
        log.info("revoked %d partitions", len(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("lost %d partitions (session expired): nothing of them is committed", len(tps))
        self.checkpointer.abandon()  # the one in flight may still fsync their files
        self._forget(tps)
        self._roll_back()
        consumer.incremental_unassign(partitions)

    def _forget(self, tps: list[TP]) -> None:
        self.pipeline.release([tp for tp in tps if tp in self.pipeline.ready], finish=False)
        self.assigned -= set(tps)
        self.pending -= set(tps)

    def _unread(self, topic: str, partition: int) -> bool:
        """The broker holds records of the partition past what was read (cached watermark).

        What lies past the last record read may be transaction markers only (a transactional
        producer's commit, such as the OTLP reader's, is the partition's last offset): the
        consumer's own position passes them, the offsets of the records read do not, so a
        partition whose last writer was transactional would never count as read to its end
        (and never go idle)."""
        if self._behind(topic, partition) <= 0:
            return False
        tp = TopicPartition(topic, partition)
        try:
            (position,) = self.consumers[topic].position([tp])
            _low, high = self.consumers[topic].get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return True
        return position.offset < 0 or position.offset < high

    def _behind(self, topic: str, partition: int) -> int:
        """Records of the partition in the broker not read yet (cached watermark; 0 unknown)."""
        position = self.pipeline.positions.get((topic, partition))
        if position is None:
            return 0
        try:
            _low, high = self.consumers[topic].get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
        except KafkaException:
            return 0
        return max(0, high - position)

    def _measure_lag(self, now: float) -> None:
        if now - self._lag_at >= LAG_EVERY_SECONDS:
            self._lag_at = now
            self.lag = {tp: self._behind(*tp) for tp in self.pipeline.ready}
            self._recover_orphans()
            self.pipeline.seek_stalled(self._behind, now)
            if self.pipeline.seek_again:
                self._seek_again()

    def _recover_orphans(self) -> None:
        """Every assigned partition is read or being recovered; one that is neither would
        fall silent (its records dropped unread), so it is recovered again."""
        orphans = self.assigned - self.pending - self.pipeline.ready
        if orphans:
            log.error(
                "%d assigned partitions were neither read nor recovering: %s",
                len(orphans),
                sorted(orphans),
            )
            for topic, tps in _by_topic(orphans).items():
                self.consumers[topic].pause(tps)
            self.pending |= orphans

    def _log_errors(self, messages: list, now: float) -> None:
        """Errors the consumer hands over as messages (a topic not there yet…), once a while."""
        if now - self._errors_logged < OUTAGE_LOG_SECONDS:
            return
        errors = {str(m.error()) for m in messages if m.error() is not None}
        if errors:
            self._errors_logged = now
            log.warning("consumer: %s", "; ".join(sorted(errors)))

    # -- brokers -----------------------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        """Errors of the consumer and the producer (served in whichever thread polls them)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._down_since is None:
                self._down_since = time.monotonic()
                self.ready = False
                log.error("all brokers down (%s): waiting", self.config.kafka.bootstrap_servers)
        elif error.fatal():
            log.error("fatal Kafka error: %s", error)
        else:
            log.info("Kafka: %s", error)

    def _broker_answered(self) -> None:
        if self._down_since is not None:
            log.warning("brokers answer again after %.0fs", time.monotonic() - self._down_since)
            self._down_since = None

    @property
    def down_since(self) -> float | None:
        """Since when no broker answers (monotonic), or None."""
        return self._down_since

    def _watch_outage(self, now: float) -> None:
        """While no broker answers, ask one every few seconds (the log line comes from the
        app's watcher, which this thread cannot hold up)."""
        if self._down_since is None or now - self._probed_at < OUTAGE_LOG_SECONDS:
            return
        self._probed_at = now
        try:
            next(iter(self.consumers.values())).list_topics(timeout=1.0)
        except KafkaException:
            return
        self._broker_answered()

    def _ensure_topics(self, now: float) -> None:
        """Once, before any partition is recovered: create the missing topics, then check what
        exists. A topic whose partition count differs from the config's, or that is missing
        and cannot be created, stops the worker (TopicsInvalid: exit 2). While brokers are
        down (or too few for the replication factor), try again later rather than stop."""
        if self._topics_at is None or now < self._topics_at:
            return
        try:
            created = create_topics(self.config, seconds=TOPICS_WAIT_SECONDS)
            limits = check_topics(self.config, seconds=TOPICS_WAIT_SECONDS)
        except TopicsInvalid:
            raise
        except Exception as exc:  # broker down, too few brokers, a time-out: never fatal
            log.warning("cannot create or check the topics yet (will retry): %s", exc)
            self._topics_at = now + TOPICS_RETRY_SECONDS
            return
        if created:
            log.info("created topics: %s", ", ".join(created))
        self.pipeline.limits.by_topic.update(limits)  # what its readers check records against
        largest = max(limits.values())
        self.checkpointer.max_message_bytes = min(largest, PRODUCER_MAX_MESSAGE_BYTES)
        log.info(
            "topics checked; the transactional producer takes records up to %d bytes "
            "(max.message.bytes: %s)",
            self.checkpointer.max_message_bytes,
            ", ".join(f"{name} {size}" for name, size in limits.items()),
        )
        self._topics_at = None


def _spare_the_collector() -> None:
    """A batch holds thousands of parsed records at once; they outlive the collector's young
    generation, so collections came often and each walked every object of the process (Faust,
    its dependencies): a third of the batch thread's time went to orjson.loads, where they
    were triggered. What exists at start-up is frozen out of the collector's walks, and a
    young generation of a batch's size is collected less often."""
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(_young, BATCH * 5), older, oldest)


def _by_topic(tps: set[TP]) -> dict[str, list[TopicPartition]]:
    grouped: dict[str, list[TopicPartition]] = {}
    for topic, partition in sorted(tps):
        grouped.setdefault(topic, []).append(TopicPartition(topic, partition))
    return grouped
