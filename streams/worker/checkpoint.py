"""The one place that decides what is done: fenced Kafka transactions (KIP-447).

A checkpoint is one transaction of the worker's transactional producer that holds:
- the records queued since the last one (dead letters, training samples, the aggregation's
  partials, state and closed windows; streams/readers/outbox.py);
- the consumer offsets of every partition that moved, each with metadata naming the owner
  epoch and the partition's open part files, their sizes and last offsets
  (sinks/files/part_files.py), sent with the group metadata of the topic's consumer (one
  group per topic: streams/topics.py consumer_group).
Before it, every waiting line is written. The fsyncs and then the transaction run in a thread
of their own while the loop reads and parses the next batch (one checkpoint in flight at
most, and nothing is written while it is: the next checkpoint, a recovery, a revocation or a
roll-back first waits for it, and its files finish only once it has committed). The group
coordinator refuses the offsets of a member whose generation is stale: a zombie worker
(frozen while its partitions moved) can never commit, so nothing it wrote or produced ever
counts. Sinks and derivers read with `isolation.level=read_committed`, so aborted records
are never seen.

A partition is taken over (assigned, or after a failed checkpoint) by **recovery**: fetch its
committed offset and metadata (a read-committed consumer asks for stable offsets, so this
waits for a transaction still open on it), claim the next owner epoch in a fenced commit, and
only then let the readers roll files forward and restore state. Any failure rolls the worker
back to its last committed checkpoint: every partition is recovered again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from sinks.files.names import Checkpoint
from streams.config import JsonEngineConfig
from streams.readers.failures import SinkUnavailable, SinkWriteError
from streams.readers.outbox import Outgoing
from streams.topics import PARTITIONER
from streams.worker.faults import fault_fails, fault_point
from streams.worker.pipeline import TP, Pipeline, Progress, Recovery

log = logging.getLogger(__name__)
T = TypeVar("T")
# For bench/ only: the same path with plain (unfenced) commits, to measure what fencing costs.
# Its consumer commit, made in the commit thread, cannot complete while a rebalance callback
# waits for it: fine for the bench's single worker, which settles before it leaves.
UNFENCED = os.environ.get("JSON_ENGINE_UNFENCED") == "1"
TRANSACTION_TIMEOUT_MS = 15_000  # a killed worker's open transaction blocks readers this long
OPERATION_TIMEOUT_S = 10.0
STUCK_AFTER_S = OPERATION_TIMEOUT_S + 5  # a call that has not returned by then never will


def encode(epoch: int, files: Iterable[Checkpoint], stream_time: int | None = None) -> str:
    meta: dict[str, object] = {"v": 2, "e": epoch}
    open_files = [[f.file, f.size, f.last] for f in files]
    if open_files:
        meta["o"] = open_files
    if stream_time is not None:  # of a topic whose records have ids (streams/readers/dedupe.py)
        meta["t"] = stream_time
    return orjson.dumps(meta).decode()


def decode(metadata: str | None) -> tuple[int, list[Checkpoint], int | None] | None:
    """(epoch, open files, stream time) of a committed checkpoint; None if the offset was not
    ours."""
    if not metadata:
        return None
    try:
        meta = orjson.loads(metadata)
        epoch = int(meta["e"])
        files = [Checkpoint(str(f), int(s), int(last)) for f, s, last in meta.get("o", [])]
        stream_time = meta.get("t")
        stream_time = None if stream_time is None else int(stream_time)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return epoch, files, stream_time


class CheckpointError(Exception):
    """A checkpoint or a claim was not committed: roll back to the last committed one."""


@dataclass
class _InFlight:
    """A checkpoint whose transaction commits in its own thread."""

    progress: dict[TP, Progress]
    lines: bool  # it wrote lines (the after_commit fault point counts only those)
    thread: threading.Thread | None = None
    failure: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.thread is None or not self.thread.is_alive()


class Checkpointer:
    def __init__(
        self, config: JsonEngineConfig, consumers: dict[str, Consumer], pipeline: Pipeline
    ):
        self.config = config
        self.consumers = consumers  # topic → the consumer of its group
        self.pipeline = pipeline
        self._producer: Producer | None = None
        # The largest max.message.bytes of the topics it produces to, once the batch loop has
        # checked them (librdkafka's default, 1,000,000, is below Kafka's topic default).
        self.max_message_bytes: int | None = None
        self._generation = 0  # bumped when a producer is given up on
        self._in_flight: _InFlight | None = None
        self.on_error: Callable[[KafkaError], None] = lambda _error: None
        self.on_committed: Callable[[], None] = lambda: None

    # -- the transactional producer ------------------------------------------------------

    def producer(self) -> Producer:
        """Created and initialized on first use; raises KafkaException while brokers are down."""
        if self._producer is None:
            generation = self._generation
            settings = {
                **self.config.kafka.client_config(),
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "partitioner": PARTITIONER,
                "error_cb": self.on_error,
            }
            if self.max_message_bytes is not None:
                settings["message.max.bytes"] = self.max_message_bytes
            if UNFENCED:
                producer = Producer({**settings, "enable.idempotence": True})
            else:
                transactional_id = f"{self.config.kafka.app_id}-{uuid.uuid4().hex[:12]}"
                producer = Producer(
                    {
                        **settings,
                        "transactional.id": transactional_id,
                        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                    }
                )
                bounded(lambda: producer.init_transactions(OPERATION_TIMEOUT_S), STUCK_AFTER_S)
            if generation != self._generation:  # given up on while it initialized
                raise CheckpointError("transactional producer replaced meanwhile")
            self._producer = producer
        return self._producer

    def close(self) -> None:
        """After the loop left the group (it settles the checkpoint in flight first)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            bounded(lambda: producer.flush(OPERATION_TIMEOUT_S), STUCK_AFTER_S)

    def _groups(self, offsets: list[TopicPartition]) -> dict[str, object]:
        """Each topic's group metadata, as of now (one group per topic: each fences its own)."""
        topics = {tp.topic for tp in offsets}
        return {t: self.consumers[t].consumer_group_metadata() for t in topics}

    def _transact(
        self, outgoing: Iterable[Outgoing], offsets: list[TopicPartition], groups: dict[str, object]
    ) -> None:
        """One transaction. Each blocking librdkafka call is bounded in time: one that does
        not come back (seen after every broker was down) gives up on the producer, and the
        next transaction has a new one."""
        records = list(outgoing)
        run = self._commit_unfenced if UNFENCED else self._commit_transaction
        try:
            run(records, offsets, groups)
        except TimeoutError:
            log.error("a transactional call did not return in %ss: new producer", STUCK_AFTER_S)
            self._generation += 1
            self._producer = None
            raise CheckpointError("transaction did not complete in time") from None

    def _commit_transaction(
        self, records: list[Outgoing], offsets: list[TopicPartition], groups: dict[str, object]
    ) -> None:
        try:
            producer = self.producer()
            producer.begin_transaction()
            for record in records:
                _produce(producer, *record)
            for topic, of_topic in _by_topic(offsets).items():
                group = groups[topic]
                bounded(
                    lambda of_topic=of_topic, group=group: producer.send_offsets_to_transaction(
                        of_topic, group, OPERATION_TIMEOUT_S
                    ),
                    STUCK_AFTER_S,
                )
            bounded(lambda: producer.commit_transaction(OPERATION_TIMEOUT_S), STUCK_AFTER_S)
        except KafkaException as exc:
            self._abort(exc)
            raise CheckpointError(f"transaction not committed: {exc}") from exc

    def _commit_unfenced(
        self, records: list[Outgoing], offsets: list[TopicPartition], _groups: dict[str, object]
    ) -> None:
        try:
            producer = self.producer()
            for record in records:
                _produce(producer, *record)
            if bounded(lambda: producer.flush(OPERATION_TIMEOUT_S), STUCK_AFTER_S):
                raise CheckpointError("records not acknowledged")
            for topic, of_topic in _by_topic(offsets).items():
                self.consumers[topic].commit(offsets=of_topic, asynchronous=False)
        except KafkaException as exc:
            raise CheckpointError(f"not committed: {exc}") from exc

    def _abort(self, exc: KafkaException) -> None:
        """Abort the open transaction; a producer that cannot is replaced by a new one."""
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        producer = self._producer
        if producer is not None and error is not None and not error.fatal():
            try:
                bounded(lambda: producer.abort_transaction(OPERATION_TIMEOUT_S), STUCK_AFTER_S)
                return
            except (KafkaException, TimeoutError) as abort_exc:
                log.warning("abort failed, replacing the transactional producer: %s", abort_exc)
        if producer is not None and self._producer is producer:
            self._producer = None
            producer.purge()

    # -- checkpoints and recovery --------------------------------------------------------

    def checkpoint(self, wait: bool = False) -> bool:
        """Wait for the checkpoint in flight, write waiting lines, then fsync them and commit
        everything in one transaction, in its own thread unless `wait`; True when there was
        something to commit."""
        self.settle()
        pipeline = self.pipeline
        lines_waiting = pipeline.waiting > 0
        if lines_waiting:
            fault_point("before_write")
        try:
            pipeline.flush()
        except SinkUnavailable as exc:  # nothing of it is committed: roll back, retry later
            raise CheckpointError(str(exc)) from exc
        outgoing = list(pipeline.drain())
        progress = pipeline.progress()
        if not outgoing and not progress:
            return False
        offsets = [
            TopicPartition(t, p, offset, metadata=encode(pipeline.epochs[(t, p)], *rest))
            for (t, p), (offset, *rest) in progress.items()
        ]
        if outgoing:  # fenced even when no offset moved (an idle hand-over): see fencing()
            offsets += self._unmoved(progress)
        groups = self._groups(offsets)  # a revocation in between waits for this commit
        in_flight = self._in_flight = _InFlight(progress, lines_waiting)

        def commit() -> None:
            try:
                pipeline.sync()
                if lines_waiting:
                    fault_point("after_write")
                if not progress:  # records, and no offset moved: an idle input's hand-over
                    fault_point("idle_handover")
                if not wait and fault_fails("commit_in_flight"):
                    time.sleep(0.5)  # the loop reads the next records meanwhile
                    raise CheckpointError("fault injected: the transaction in flight failed")
                self._transact(outgoing, offsets, groups)
            except BaseException as exc:
                in_flight.failure = exc

        # With `wait`, in this thread: a rebalance callback waits here, and librdkafka serves
        # the unfenced path's offset commit only once the callback returns.
        if wait:
            commit()
            self.settle()
            return True
        in_flight.thread = threading.Thread(target=commit, name="json-engine-commit", daemon=True)
        in_flight.thread.start()
        return True

    def _unmoved(self, progress: dict[TP, Progress]) -> list[TopicPartition]:
        """The committed offsets, sent again unchanged, of the partitions held of each topic
        whose readers made records for this transaction but none of whose partitions moved:
        with them that topic's group coordinator fences the transaction (KIP-447). Without
        them it would not be: a zombie thawed after `idle_seconds` would hand over its
        partials and marks again, beside the new owner's. Only those topics: each group in a
        transaction costs a round trip to its coordinator (about 17 ms here), and sending
        every group's took 100 ms per checkpoint with the aggregation on."""
        pipeline = self.pipeline
        moved = {t for t, _p in progress}
        fenced = pipeline.sources - moved
        return [
            TopicPartition(t, p, offset, metadata=encode(pipeline.epochs[(t, p)], *rest))
            for (t, p), (offset, *rest) in pipeline.committed_progress().items()
            if t in fenced
        ]

    @property
    def settled(self) -> bool:
        """No checkpoint is in flight, or the one in flight has its outcome."""
        return self._in_flight is None or self._in_flight.done

    def settle(self) -> None:
        """Wait for the checkpoint in flight (each of its calls is bounded in time); once it
        has committed, its files may finish."""
        in_flight = self._join_in_flight()
        if in_flight is None:
            return
        failure = in_flight.failure
        if failure is not None:
            if isinstance(failure, SinkUnavailable):  # its lines are not durable: retry later
                raise CheckpointError(str(failure)) from failure
            if isinstance(failure, (CheckpointError, SinkWriteError)):
                raise failure
            raise CheckpointError(f"transaction not committed: {failure}") from failure
        if in_flight.lines:
            fault_point("after_commit")
        try:
            self.pipeline.committed(in_flight.progress)
        except SinkUnavailable as exc:  # committed, not published: the recovery publishes it
            raise CheckpointError(str(exc)) from exc
        self.on_committed()

    def abandon(self) -> None:
        """Rolling back: wait for the checkpoint in flight and forget its outcome (the
        recovery after reads what was committed either way)."""
        self._join_in_flight()

    def _join_in_flight(self) -> _InFlight | None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and in_flight.thread is not None:
            in_flight.thread.join()
        return in_flight

    def recover(self, tps: list[TP]) -> dict[TP, int]:
        """Take partitions over; returns where to resume reading each."""
        assert self._in_flight is None, "settle() the checkpoint in flight first"
        found = []
        for topic in sorted({t for t, _p in tps}):
            found += self.consumers[topic].committed(
                [TopicPartition(t, p) for t, p in tps if t == topic], timeout=OPERATION_TIMEOUT_S
            )
        claims = []
        plan: list[Recovery] = []
        for tp in found:
            if tp.error is not None:
                raise CheckpointError(f"committed offset of {tp.topic}[{tp.partition}]: {tp.error}")
            key = (tp.topic, tp.partition)
            decoded = decode(tp.metadata)
            legacy = decoded is None
            epoch, files, stream_time = decoded if decoded is not None else (0, [], None)
            offset = tp.offset if tp.offset >= 0 else self._beginning(key)
            if legacy:
                offset = max(offset, self._legacy_proven(key) or 0)
            plan.append((key, offset, epoch + 1, files, stream_time))
            claim = encode(epoch + 1, files, stream_time)
            claims.append(TopicPartition(*key, offset, metadata=claim))
        self._transact([], claims, self._groups(claims))  # fenced: these epochs are ours
        fault_point("after_claim")
        try:
            self.pipeline.recover(plan)
        except SinkUnavailable as exc:
            raise CheckpointError(str(exc)) from exc
        resume = {key: offset for key, offset, *_rest in plan}
        log.info("recovered %d partitions: %s", len(resume), sorted(resume.items()))
        return resume

    def _beginning(self, tp: TP) -> int:
        low, _high = self.consumers[tp[0]].get_watermark_offsets(
            TopicPartition(*tp), timeout=OPERATION_TIMEOUT_S
        )
        return low

    def _legacy_proven(self, tp: TP) -> int | None:
        """Upgrade from part files written before fenced checkpoints: what they prove."""
        sink = self.pipeline.sinks.get(tp[0])
        return None if sink is None else sink.legacy_recover(tp[1])


def _by_topic(offsets: list[TopicPartition]) -> dict[str, list[TopicPartition]]:
    grouped: dict[str, list[TopicPartition]] = {}
    for tp in offsets:
        grouped.setdefault(tp.topic, []).append(tp)
    return grouped


def bounded(call: Callable[[], T], seconds: float) -> T:
    """Run `call` in a thread of its own and wait at most `seconds` (TimeoutError): a call
    into librdkafka that never returns must not hold the worker."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="json-engine-transaction", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimeoutError(f"no return in {seconds}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None,
    timestamp: int | None = None,
) -> None:
    options: dict[str, Any] = {} if partition is None else {"partition": partition}
    if timestamp is not None:
        options["timestamp"] = timestamp
    while True:
        try:
            producer.produce(topic, value, key, **options)
            return
        except BufferError:
            producer.poll(0.1)  # local queue full: wait, never drop
