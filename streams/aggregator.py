"""Per-engine windowed aggregates, by event time, exactly once per (engine_id, window_start).

Faust's windowed tables close windows on wall-clock time and do not hand the closed value to
`on_window_close`, so the state here is our own, per partition, folded batch by batch:

- inputs: the execution topic and the re-keyed comparison observations (streams/rekey.py),
  co-partitioned by engine_id. Each has a watermark, its largest event time; the re-keyed
  input merges the comparison topic's partitions, which progress at their own pace, so it
  keeps one watermark per source partition (as Flink does per source split);
- a window closes when `window_end + grace` is at or behind the smallest of these
  watermarks; one without records for `idle_seconds` stops holding windows open (when all
  are idle, the largest counts); an event for a window that already closed is late:
  counted and dead-lettered with reason `late`. A partition that receives nothing at all
  keeps its last windows open until records arrive again;
- every `checkpoint_seconds` a partition's changed windows, its watermarks, input offsets and
  the windows it closed are written to the compacted changelog topic
  `<prefix>worker-aggregates-changelog` in one Kafka transaction (transactional.id per
  partition, so a new owner fences a zombie); the closed windows' records are published to
  the aggregated-stats topic in the next transaction, from that committed state. A crash
  replays from the committed offsets onto the committed state, so a window's values never
  depend on where a crash fell; a record published twice has the same (engine_id,
  window_start) and the aggregated-stats sink writes it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.config import JsonEngineConfig
from streams.dead_letter import DeadLetterPolicy
from streams.route import Parsed
from streams.topics import PARTITIONER, changelog_topic, rekey_topic, topic_name
from streams.validation import ValidationError
from streams.windows import WindowState, window_start

log = logging.getLogger(__name__)
META_KEY = b"__meta__"
RECOVERY_TIMEOUT_S = 120.0


def window_key(engine_id: str, start: int) -> bytes:
    return f"{engine_id}|{start}".encode()


@dataclass
class PartitionState:
    """All the aggregator knows about one partition; what the changelog restores."""

    windows: dict[tuple[str, int], WindowState] = field(default_factory=dict)
    dirty: set[tuple[str, int]] = field(default_factory=set)
    exec_wm: int | None = None
    cmp_wm: dict[str, int] = field(default_factory=dict)  # source partition → watermark
    closed_wm: int | None = None  # windows ending (plus grace) at or before this are closed
    exec_next: int | None = None  # next offset of the execution topic partition
    rekey_next: int | None = None
    rekey_seen: dict[str, list[int]] = field(default_factory=dict)  # src partition → [off, i]
    closing: list[dict[str, Any]] = field(default_factory=list)  # closed, not yet published
    exec_seen_at: float = field(default_factory=time.monotonic)
    cmp_seen_at: float = field(default_factory=time.monotonic)  # for sources not seen yet
    cmp_src_seen_at: dict[str, float] = field(default_factory=dict)
    changed: bool = False

    def meta(self) -> dict[str, Any]:
        return {
            "exec_wm": self.exec_wm,
            "cmp_wm": self.cmp_wm,
            "closed_wm": self.closed_wm,
            "exec_next": self.exec_next,
            "rekey_next": self.rekey_next,
            "rekey_seen": self.rekey_seen,
            "closing": self.closing,
        }

    def apply_meta(self, meta: dict[str, Any]) -> None:
        for name in (
            "exec_wm",
            "cmp_wm",
            "closed_wm",
            "exec_next",
            "rekey_next",
            "rekey_seen",
            "closing",
        ):
            setattr(self, name, meta[name])
        # Restored sources count as seen now: idle only after idle_seconds without records.
        self.cmp_src_seen_at = dict.fromkeys(self.cmp_wm, time.monotonic())


class Aggregator:
    """Folds both inputs into per-partition state; checkpoints and emits by transaction."""

    def __init__(
        self,
        config: JsonEngineConfig,
        dead_letters: DeadLetterPolicy,
        owns: Callable[[int], bool] = lambda _p: True,
    ):
        agg = config.aggregation
        self.owns = owns
        self.config = config
        self.width_ms = int(agg.window_minutes * 60_000)
        self.grace_ms = int(agg.grace_seconds * 1000)
        self.idle_seconds = agg.idle_seconds
        self.checkpoint_seconds = agg.checkpoint_seconds
        self.dead_letters = dead_letters
        self.exec_topic = topic_name(config, "engine_execution")
        self.rekey_topic = rekey_topic(config)
        self.changelog = changelog_topic(config)
        self.output_topic = topic_name(config, "aggregated_stats")
        self.comparison_sources = [str(p) for p in range(config.kafka.partitions)]
        self.states: dict[int, PartitionState] = {}
        self._producers: dict[int, Producer] = {}
        self._checkpoint_at = time.monotonic()
        self.done_exec: dict[int, int] = {}
        self.done_rekey: dict[int, int] = {}
        self.late_events = 0
        self.windows_emitted = 0
        self.executions = _Input(self, "exec")
        self.comparisons = _Input(self, "rekey")

    # -- assignment and recovery -------------------------------------------------------------

    def assign(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            if partition not in self.states:
                self._recover(partition)

    def _recover(self, partition: int) -> None:
        """Fence any zombie owner, then rebuild the partition's state from its changelog."""
        producer = Producer(
            {
                **self.config.kafka.client_config(),
                "transactional.id": f"{self.changelog}-p{partition}",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "partitioner": PARTITIONER,
                "transaction.timeout.ms": 30_000,
            }
        )
        producer.init_transactions(60)  # aborts what a previous owner left open
        self._producers[partition] = producer
        state = PartitionState()
        consumer = Consumer(
            {
                **self.config.kafka.client_config(),
                "group.id": f"{self.changelog}-restore",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            tp = TopicPartition(self.changelog, partition, 0)
            _low, high = consumer.get_watermark_offsets(tp, timeout=30)
            consumer.assign([tp])
            deadline = time.monotonic() + RECOVERY_TIMEOUT_S
            while high > 0 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    if consumer.position([tp])[0].offset >= high:
                        break
                    continue
                if msg.error():
                    raise KafkaException(msg.error())
                self._restore(state, msg.key(), msg.value())
                if msg.offset() >= high - 1:
                    break
            else:
                if high > 0:
                    raise TimeoutError(f"changelog {self.changelog}[{partition}] not restored")
        finally:
            consumer.close()
        self.states[partition] = state
        if state.exec_next is not None:
            self.done_exec[partition] = state.exec_next
        if state.rekey_next is not None:
            self.done_rekey[partition] = state.rekey_next
        log.info(
            "aggregator: partition %d restored: %d open windows, %d to publish, "
            "executions from offset %s",
            partition,
            len(state.windows),
            len(state.closing),
            state.exec_next,
        )

    @staticmethod
    def _restore(state: PartitionState, key: bytes, value: bytes | None) -> None:
        if key == META_KEY:
            state.apply_meta(orjson.loads(value))
            return
        engine, _, start = key.decode().rpartition("|")
        if value is None:
            state.windows.pop((engine, int(start)), None)
        else:
            state.windows[(engine, int(start))] = WindowState.from_dict(orjson.loads(value))

    def release(self, partitions: Sequence[int]) -> None:
        """Before partitions move: checkpoint them, then forget them."""
        self.checkpoint(force=True)
        for partition in partitions:
            self.states.pop(partition, None)
            self.done_exec.pop(partition, None)
            self.done_rekey.pop(partition, None)
            producer = self._producers.pop(partition, None)
            if producer is not None:
                producer.flush(10)

    # -- folding -----------------------------------------------------------------------------

    def fold_executions(self, partition: int, items: Sequence[Parsed]) -> None:
        if not self.owns(partition):
            return  # never touch (nor fence) a partition another worker owns
        state = self._state(partition)
        start = state.exec_next
        for record, event, _error in items:
            if start is not None and record.offset < start:
                continue
            state.exec_next = record.offset + 1
            state.changed = True
            if event is None:
                continue  # invalid: the sink dead-letters it
            ts = event["timestamp"]
            window = self._window(
                state, partition, record, "engine_execution", event["engine_id"], ts
            )
            if window is None:
                continue
            metrics = event["metrics"]
            window.add_execution(metrics["latency_ms"], metrics["success"])
            if state.exec_wm is None or ts > state.exec_wm:
                state.exec_wm = ts
        state.exec_seen_at = time.monotonic()

    def fold_comparisons(self, partition: int, items: Sequence[Parsed]) -> None:
        if not self.owns(partition):
            return
        state = self._state(partition)
        start = state.rekey_next
        for record, obs, _error in items:
            if start is not None and record.offset < start:
                continue
            state.rekey_next = record.offset + 1
            state.changed = True
            if obs is None:
                continue
            src_partition, src_offset, index = obs["src"]
            seen = state.rekey_seen.get(str(src_partition))
            if seen is not None and [src_offset, index] <= seen:
                continue  # a replay of the re-keyer
            state.rekey_seen[str(src_partition)] = [src_offset, index]
            ts = obs["ts"]
            window = self._window(
                state, partition, record, "comparison_result", obs["engine_id"], ts
            )
            if window is None:
                continue
            window.add_comparison(obs["quality"], obs["win"], obs.get("counted", True))
            source = str(src_partition)
            if ts > state.cmp_wm.get(source, -1):
                state.cmp_wm[source] = ts
            state.cmp_src_seen_at[source] = time.monotonic()
        state.cmp_seen_at = time.monotonic()

    def _state(self, partition: int) -> PartitionState:
        if partition not in self.states:
            self._recover(partition)
        return self.states[partition]

    def _window(
        self,
        state: PartitionState,
        partition: int,
        record: Any,
        channel: str,
        engine_id: str,
        ts: int,
    ) -> WindowState | None:
        """The open window an event at `ts` belongs to; None (and a dead letter) if late."""
        ws = window_start(ts, self.width_ms)
        if state.closed_wm is not None and ws + self.width_ms + self.grace_ms <= state.closed_wm:
            topic = self.exec_topic if channel == "engine_execution" else self.rekey_topic
            self._reject_late(partition, record, channel, topic, ws)
            return None
        key = (engine_id, ws)
        state.dirty.add(key)
        window = state.windows.get(key)
        if window is None:
            window = state.windows[key] = WindowState()
        return window

    def _reject_late(self, partition: int, record: Any, channel: str, topic: str, ws: int) -> None:
        self.late_events += 1
        log.warning(
            "late event at %s[%d]@%d: window %d closed", topic, partition, record.offset, ws
        )
        error = ValidationError(
            "late", f"late: window starting {ws} closed (grace {self.grace_ms} ms)"
        )
        self.dead_letters.reject(channel, topic, partition, record.offset, error, record.value)

    # -- closing, checkpoints, emission -----------------------------------------------------

    def due(self, now: float) -> bool:
        return now - self._checkpoint_at >= self.checkpoint_seconds

    def _watermark(self, state: PartitionState, now: float) -> int | None:
        """The smallest watermark, leaving out those idle for idle_seconds; None: wait.

        Every partition of the comparison topic is a source, also before its first record:
        one that has sent nothing yet holds windows open until it has been idle that long.
        """
        marks: list[tuple[int | None, float]] = [(state.exec_wm, state.exec_seen_at)]
        seen_at = state.cmp_src_seen_at
        marks += [
            (state.cmp_wm.get(src), seen_at.get(src, state.cmp_seen_at))
            for src in {*state.cmp_wm, *self.comparison_sources}
        ]
        active = [wm for wm, seen in marks if now - seen < self.idle_seconds]
        if active:
            return None if None in active else min(active)  # type: ignore[type-var]
        known = [wm for wm, _ in marks if wm is not None]
        return max(known) if known else None

    def checkpoint(self, force: bool = False) -> None:
        """Close due windows and commit every changed partition in its own transaction."""
        now = time.monotonic()
        if not force and not self.due(now):
            return
        self._checkpoint_at = now
        self.dead_letters.flush()  # late events' dead letters before their offsets count
        for partition, state in self.states.items():
            wm = self._watermark(state, now)
            if wm is not None and (state.closed_wm is None or wm > state.closed_wm):
                state.closed_wm = wm
                state.changed = True
            to_close = [
                key
                for key in state.windows
                if state.closed_wm is not None
                and key[1] + self.width_ms + self.grace_ms <= state.closed_wm
            ]
            if state.changed or state.closing or to_close:
                self._commit(partition, state, to_close)

    def _commit(
        self, partition: int, state: PartitionState, to_close: list[tuple[str, int]]
    ) -> None:
        producer = self._producers[partition]
        producer.begin_transaction()
        for rec in state.closing:  # closed in the last committed checkpoint: publish now
            producer.produce(self.output_topic, orjson.dumps(rec), key=rec["engine_id"].encode())
        closing = []
        for key in to_close:
            window = state.windows.pop(key)
            state.dirty.discard(key)
            closing.append(window.record(key[0], key[1], self.width_ms))
            producer.produce(self.changelog, None, key=window_key(*key), partition=partition)
        for key in state.dirty:
            producer.produce(
                self.changelog,
                orjson.dumps(state.windows[key].to_dict()),
                key=window_key(*key),
                partition=partition,
            )
        emitted = len(state.closing)
        state.closing = closing
        producer.produce(
            self.changelog, orjson.dumps(state.meta()), key=META_KEY, partition=partition
        )
        producer.commit_transaction(60)
        self.windows_emitted += emitted
        state.dirty.clear()
        state.changed = False
        if state.exec_next is not None:
            self.done_exec[partition] = state.exec_next
        if state.rekey_next is not None:
            self.done_rekey[partition] = state.rekey_next

    def close(self) -> None:
        self.checkpoint(force=True)
        for producer in self._producers.values():
            producer.flush(10)


class _Input:
    """One of the aggregator's two inputs, as the reader of its topic."""

    def __init__(self, aggregator: Aggregator, which: str):
        self.aggregator = aggregator
        self.which = which

    @property
    def done(self) -> dict[int, int]:
        agg = self.aggregator
        return agg.done_exec if self.which == "exec" else agg.done_rekey

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        if self.which == "exec":
            self.aggregator.fold_executions(partition, items)
        else:
            self.aggregator.fold_comparisons(partition, items)

    def release(self, partitions: Sequence[int]) -> None:
        self.aggregator.release(partitions)

    def close(self) -> None:
        self.aggregator.close()
