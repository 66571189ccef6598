"""Per-engine windowed aggregates, by event time, exactly once per (engine_id, window_start).

Two phases (Flink's local/global aggregation): each execution and comparison partition folds
its own records into mergeable partials by its own stream time (streams/aggregates/local.py);
the partials travel, keyed by engine_id, through `<prefix>worker-aggregates-partials` to a
merge per engine (streams/aggregates/merge.py), which emits a window once every input
partition has closed it. No record is re-produced: only one partial per (engine, window,
partition), and marks. All state is in `<prefix>worker-aggregates-state` (compacted) and is
written, with the partials and the emitted records, in the worker's checkpoint transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from streams.aggregates import changelog
from streams.aggregates.local import (
    LocalFold,
    comparison_observations,
    execution_columns,
    execution_observations,
)
from streams.aggregates.merge import Merge
from streams.aggregates.windows import WindowState
from streams.config import JsonEngineConfig
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.outbox import Outgoing
from streams.topics import aggregates_partials_topic, topic_name
from streams.validation import ValidationError

log = logging.getLogger(__name__)


class Aggregator:
    """The aggregation's three readers, their partitions, and what they hand to a checkpoint."""

    def __init__(self, config: JsonEngineConfig, dead_letters: DeadLetterPolicy):
        self.config = config
        self.dead_letters = dead_letters
        self.checkpoint_seconds = config.aggregation.checkpoint_seconds
        self.grace_ms = round(config.aggregation.grace_seconds * 1000)
        self.late_events = 0
        exec_topic = topic_name(config, "engine_execution")
        cmp_topic = topic_name(config, "comparison_result")
        self.executions = LocalFold(
            config,
            "executions",
            exec_topic,
            "engine_execution",
            execution_observations,
            WindowState.add_execution,
            WindowState.add_executions,
            self._reject,
            execution_columns,
        )
        self.comparisons = LocalFold(
            config,
            "comparisons",
            cmp_topic,
            "comparison_result",
            comparison_observations,
            WindowState.add_comparisons,
            None,
            self._reject,
        )
        self.partials_topic = aggregates_partials_topic(config)
        self.merge = Merge(config, self._reject_partial)
        self.readers: dict[str, Any] = {
            exec_topic: self.executions,
            cmp_topic: self.comparisons,
            self.partials_topic: self.merge,
        }
        self._checkpoint_at = time.monotonic()

    def set_unread_probe(self, unread: Callable[[str, int], bool]) -> None:
        self.executions.unread = self.comparisons.unread = unread

    @property
    def windows_emitted(self) -> int:
        return self.merge.windows_emitted

    def assign(self, tps: list[tuple[str, int]]) -> None:
        """After the partitions' committed offsets were fetched (which waits for any
        transaction still open on them): restore their state as committed."""
        ours = [(self.readers[t], p) for t, p in tps if t in self.readers]
        wanted = {reader.changelog_partition(p): (reader, p) for reader, p in ours}
        content = changelog.read_partitions(self.config, sorted(wanted))
        for cl, (reader, partition) in wanted.items():
            reader.assign(partition, content[cl])

    def release(self, topic: str, partition: int) -> None:
        reader = self.readers.get(topic)
        if reader is not None:
            reader.release(partition)

    def reset(self) -> None:
        """A rolled-back checkpoint: every partition is restored again before reading on."""
        for reader in self.readers.values():
            reader.states.clear()
        self.merge.version += 1

    def due(self, now: float) -> bool:
        return now - self._checkpoint_at >= self.checkpoint_seconds

    def drain(self) -> Iterator[tuple[str, Iterator[Outgoing]]]:
        """What each stage hands to the checkpoint, with the topic its state comes from (the
        checkpoint fences the groups of those topics)."""
        now = time.monotonic()
        self._checkpoint_at = now
        yield self.executions.topic, self.executions.drain(now)
        yield self.comparisons.topic, self.comparisons.drain(now)
        yield self.partials_topic, self.merge.drain()

    def _reject(
        self, channel: str, topic: str, partition: int, record: Any, error: ValidationError
    ) -> None:
        """A record the fold cannot count: late (its window closed) or failing it."""
        offset = record.offset()
        if error.reason == "late":
            self.late_events += 1
            log.warning("late event at %s[%d]@%d: %s", topic, partition, offset, error)
        self.dead_letters.reject(channel, topic, partition, offset, error, record.value())

    def _reject_partial(self, partition: int, record: Any, error: ValidationError) -> None:
        if error.reason == "late":
            self.late_events += 1
            offset = record.offset()
            log.warning("late partial at %s[%d]@%d", self.partials_topic, partition, offset)
        self.dead_letters.reject(
            "aggregated_stats",
            self.partials_topic,
            partition,
            record.offset(),
            error,
            record.value(),
        )
