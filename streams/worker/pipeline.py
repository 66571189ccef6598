"""The readers of one worker and the partitions they hold: what a checkpoint covers.

Per topic: a route (parse and validate once) and its readers (the channel's sink; for
executions and comparisons also the aggregation and the training deriver; the merge of the
aggregation's partials). A partition is *ready* once recovered from its committed checkpoint
(streams/worker/checkpoint.py); records of a partition that is not ready are not read (they
are read again from the committed offset), so no offset ever moves past an unread record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from sinks.files.names import Checkpoint
from streams.aggregates.aggregator import Aggregator
from streams.config import CHANNELS, JsonEngineConfig
from streams.otlp.reader import OtlpReader
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.dedupe import IDENTITIES, RecordIds
from streams.readers.outbox import MessageLimits, Outgoing
from streams.readers.route import RAW, Reader, TopicRoute
from streams.readers.schema_ids import SchemaIds
from streams.topics import topic_name
from streams.training.deriver import TrainingDeriver
from streams.validation import Validator
from streams.worker.sink import ChannelSink, open_files_cap

log = logging.getLogger(__name__)
# How long a recovered partition whose fetches start past its position is sought again: the
# seek is asynchronous, and batches fetched before it can still arrive for a moment.
GAP_CHECK_SECONDS = 1.0
TP = tuple[str, int]
Progress = tuple[int, tuple[Checkpoint, ...], int | None]  # next offset, open files, stream time
# A partition taken over: where to read on, its new owner epoch, its open files, stream time.
Recovery = tuple[TP, int, int, list[Checkpoint], int | None]


class Pipeline:
    def __init__(self, config: JsonEngineConfig):
        self.config = config
        self.validator = Validator(max_payload_bytes=config.validation.max_payload_bytes)
        # What each topic the worker produces to takes (read at start-up: streams/topics.py).
        self.limits = MessageLimits()
        self.dead_letters = DeadLetterPolicy(config, self.limits)
        self.schema_ids = SchemaIds(config.kafka.schema_registry)  # framed values' ids
        self.routes: dict[str, TopicRoute] = {}
        self.sinks: dict[str, ChannelSink] = {}
        self.derivers: list[TrainingDeriver] = []
        self.aggregator: Aggregator | None = None
        self.otlp: OtlpReader | None = None
        self.ready: set[TP] = set()
        self.positions: dict[TP, int] = {}  # next offset to read, of what was read
        self.epochs: dict[TP, int] = {}  # this worker's owner epoch of each ready partition
        # Recovered partitions whose first fetch is not checked yet, and those sought again.
        # librdkafka can resume a partition's fetch past the offset it was sought to (its
        # issues #2190, #4686: a pause, a seek and a leader change in flight): the first batch
        # after a recovery must start at the position, else the loop seeks it again (for up to
        # GAP_CHECK_SECONDS: until when, per partition, in _sought_again). A fetch that resumed
        # at the partition's end shows no batch at all: see seek_stalled.
        self.unchecked: dict[TP, float] = {}  # since when (monotonic)
        self.seek_again: set[TP] = set()
        self._sought_again: dict[TP, float] = {}
        self._committed: dict[TP, Progress] = {}
        self.sources: set[str] = set()  # of the records the last drain() gave (see drain)
        enabled = [c for c in CHANNELS if config.channels.get(c).enabled]
        max_open_files = open_files_cap(config.kafka.partitions * len(enabled))
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
                    retention_days=config.output.retention_days,
                    max_open_files=max_open_files,
                )
                self.sinks[name] = sink
                self._route(name, channel, sink)
                # copies meet at home and count once (executions: from spans, with OTLP on)
                if channel in IDENTITIES and (channel != "engine_execution" or config.otlp.enabled):
                    self.routes[name].ids = RecordIds(
                        channel,
                        name,
                        config.kafka.partitions,
                        sink.directory,
                        config.output.dedupe_horizon_hours,
                        config.output.dedupe_max_ids,
                        sink.busy_buckets,
                        channel_config.auto_flush_seconds,
                    )
        comparisons = topic_name(config, "comparison_result")
        if config.training.enabled:
            deriver = TrainingDeriver(config, self.validator, self.dead_letters, self.limits)
            self.derivers.append(deriver)
            self._route(comparisons, "comparison_result", deriver)
        if config.aggregation.enabled:
            self.aggregator = Aggregator(config, self.dead_letters)
            for topic, reader in self.aggregator.readers.items():
                kind = {
                    topic_name(config, "engine_execution"): "engine_execution",
                    comparisons: "comparison_result",
                }.get(topic)
                self._route(topic, kind, reader)
        if config.otlp.enabled:  # GenAI spans → engine executions (streams/otlp/reader.py)
            self.otlp = OtlpReader(config, self.validator, self.dead_letters, self.limits)
            self.derivers.append(self.otlp)  # type: ignore[arg-type]
            self._route(config.otlp.topic, RAW, self.otlp)

    def _route(self, topic: str, kind: str | None, reader: Reader) -> None:
        if topic not in self.routes:
            future = self.config.aggregation.max_future_seconds
            self.routes[topic] = TopicRoute(topic, kind, self.validator, future, self.schema_ids)
        self.routes[topic].readers.append(reader)

    @property
    def topics(self) -> list[str]:
        return list(self.routes)

    # -- reading -----------------------------------------------------------------------------

    def on_messages(self, messages: list[Any]) -> list[Any]:
        """One consumed batch: per partition, in offset order, to the topic's route. Returns
        what was not taken yet (to hand over again after a checkpoint)."""
        batches: dict[TP, list[Any]] = {}
        for message in messages:
            if message.error() is None:
                batches.setdefault((message.topic(), message.partition()), []).append(message)
        ready, positions = self.ready, self.positions
        rest: list[Any] = []
        for tp, batch in batches.items():
            if tp not in ready:
                continue
            if batch[0].offset() != positions[tp]:
                batch = self._from_position(tp, batch)
            elif tp in self.unchecked:
                self._checked(tp)
            if not batch:
                continue
            taken = self.routes[tp[0]].on_records(tp[1], batch)
            if taken:
                positions[tp] = batch[taken - 1].offset() + 1
            rest += batch[taken:]
        return rest

    def _from_position(self, tp: TP, batch: list[Any]) -> list[Any]:
        """A batch that does not start at the partition's position: records before it were
        read already (a fetch replayed); a first batch after a recovery that starts past it
        is sought again for GAP_CHECK_SECONDS (past that the gap is real: transaction markers,
        retention)."""
        position = self.positions[tp]
        if batch[0].offset() < position:
            log.warning(
                "%s[%d]: fetched again from %d, position %d: dropping what was read",
                *tp,
                batch[0].offset(),
                position,
            )
            batch = [m for m in batch if m.offset() >= position]
        if not batch or tp not in self.unchecked:
            return batch
        if batch[0].offset() == position:
            self._checked(tp)
            return batch
        now = time.monotonic()
        until = self._sought_again.get(tp)
        if until is None:
            log.info(
                "%s[%d]: fetch resumed at %d, not at %d: seeking again",
                *tp,
                batch[0].offset(),
                position,
            )
            until = self._sought_again[tp] = now + GAP_CHECK_SECONDS
        if now < until:  # what was fetched before the seek may still come: seek again
            self.seek_again.add(tp)
            return []
        self._unchecked_forget(tp)  # fresh fetches start past it too: nothing is there
        return batch

    def seek_stalled(self, behind: Callable[[str, int], int], now: float) -> None:
        """Recovered partitions that fetched nothing for GAP_CHECK_SECONDS while the broker
        holds records past their position: a fetch resumed past them, at the partition's end,
        shows no batch whose gap would tell. Each is sought again, once per recovery."""
        for tp, since in self.unchecked.items():
            if tp in self._sought_again or now - since < GAP_CHECK_SECONDS or behind(*tp) <= 0:
                continue
            log.debug(  # markers alone (an idle transactional topic) look the same
                "%s[%d]: nothing fetched since the recovery at %d: seeking again",
                *tp,
                self.positions[tp],
            )
            self._sought_again[tp] = now + GAP_CHECK_SECONDS
            self.seek_again.add(tp)

    def _checked(self, tp: TP) -> None:
        """The first batch since the recovery starts at the position."""
        if tp in self._sought_again:  # and the first fetch had not: librdkafka skipped those
            log.warning(
                "%s[%d]: read from %d after a second seek (the first fetch had skipped records)",
                *tp,
                self.positions[tp],
            )
        self._unchecked_forget(tp)

    # -- partitions --------------------------------------------------------------------------

    def recover(self, plan: list[Recovery]) -> None:
        """Readers take partitions over from their committed checkpoints: per partition the
        offset reading resumes at, its (new) owner epoch, its open files and stream time."""
        for (topic, partition), _offset, epoch, files, stream_time in plan:
            sink = self.sinks.get(topic)
            if sink is not None:
                sink.assign(partition, epoch, files)
            ids = self.routes[topic].ids
            if ids is not None:
                ids.assign(partition, stream_time)
        if self.aggregator is not None:
            self.aggregator.assign([tp for tp, *_ in plan])
        for tp, offset, epoch, files, stream_time in plan:
            self.ready.add(tp)
            self.unchecked[tp] = time.monotonic()
            self._sought_again.pop(tp, None)
            self.positions[tp] = offset
            self.epochs[tp] = epoch
            self._committed[tp] = (offset, tuple(files), stream_time)

    def release(self, tps: list[TP], finish: bool) -> None:
        """Partitions that left: after a checkpoint their files finish, else they are dropped."""
        for topic, partition in tps:
            sink = self.sinks.get(topic)
            if sink is not None:
                (sink.release if finish else sink.lose)([partition])
            if self.aggregator is not None:
                self.aggregator.release(topic, partition)
            ids = self.routes[topic].ids if topic in self.routes else None
            if ids is not None:
                ids.release(partition)
            self.ready.discard((topic, partition))
            self._unchecked_forget((topic, partition))
            self.positions.pop((topic, partition), None)
            self.epochs.pop((topic, partition), None)
            self._committed.pop((topic, partition), None)

    def reset(self) -> None:
        """Back to the last committed checkpoint: everything read since is forgotten, and every
        partition must be recovered again (in a new epoch) before it is read."""
        for sink in self.sinks.values():
            sink.lose(sink.partitions)
        for outbox in self._outboxes():
            outbox.reset()
        if self.aggregator is not None:
            self.aggregator.reset()
        self.ready.clear()
        self.unchecked.clear()
        self.seek_again.clear()
        self._sought_again.clear()
        self.positions.clear()
        self.epochs.clear()
        self._committed.clear()

    def _unchecked_forget(self, tp: TP) -> None:
        self.unchecked.pop(tp, None)
        self.seek_again.discard(tp)
        self._sought_again.pop(tp, None)

    # -- checkpoints -------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        if any(sink.due(now) for sink in self.sinks.values()):
            return True
        if any(ids.due(now) for ids in self._record_ids()):
            return True
        if self.otlp is not None and self.otlp.due(now):
            return True
        return self.aggregator is not None and self.aggregator.due(now)

    def overfull(self, buffers: int) -> bool:
        """A sink holds `buffers` times its buffer_size lines or more."""
        return any(s.waiting >= buffers * s.config.buffer_size for s in self.sinks.values())

    @property
    def waiting(self) -> int:
        """Records read and not yet written by the sinks."""
        return sum(sink.waiting for sink in self.sinks.values())

    def flush(self) -> None:
        for sink in self.sinks.values():
            sink.flush()

    def sync(self) -> None:
        """What flush() wrote, made durable (in the commit thread)."""
        for sink in self.sinks.values():
            sink.sync()

    def drain(self) -> Iterator[Outgoing]:
        """Every record queued for the checkpoint's transaction (dead letters last: the
        aggregation may add late events while it drains). `sources` names the topics whose
        readers made them (a dead letter's topic moved: its record was read)."""
        self.sources: set[str] = set()
        for deriver in self.derivers:
            yield from self._made_from(deriver.source, deriver.drain())
        for ids in self._record_ids():
            yield from self._made_from(ids.topic, ids.drain())
        if self.aggregator is not None:
            for topic, records in self.aggregator.drain():
                yield from self._made_from(topic, records)
        yield from self.dead_letters.drain()

    def _made_from(self, topic: str, records: Iterator[Outgoing]) -> Iterator[Outgoing]:
        for record in records:
            self.sources.add(topic)
            yield record

    def _outboxes(self) -> list[Any]:
        return [*self.derivers, *self._record_ids(), self.dead_letters]

    def _record_ids(self) -> list[RecordIds]:
        return [route.ids for route in self.routes.values() if route.ids is not None]

    def progress(self) -> dict[TP, Progress]:
        """Per ready partition that moved since the last commit: next offset and open files."""
        files = {
            (t, p): tuple(c)
            for t, sink in self.sinks.items()
            for p, c in sink.checkpoints().items()
        }
        stream_times = {
            (topic, p): st
            for topic, route in self.routes.items()
            if route.ids is not None
            for p, st in route.ids.stream_times.items()
        }
        moved = {}
        for tp, offset in self.positions.items():
            now = (offset, files.get(tp, ()), stream_times.get(tp))
            if self._committed.get(tp) != now:
                moved[tp] = now
        return moved

    def committed_progress(self) -> dict[TP, Progress]:
        """What the last commit said of each ready partition."""
        return {tp: self._committed[tp] for tp in self.ready if tp in self._committed}

    def committed(self, progress: dict[TP, Progress]) -> None:
        self._committed.update(progress)
        for sink in self.sinks.values():
            sink.committed()

    def roll_due(self, now: float) -> None:
        for sink in self.sinks.values():
            sink.roll_due(now)
