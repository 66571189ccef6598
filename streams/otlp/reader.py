"""The reader of the OTLP spans topic: GenAI spans → engine_execution, exactly once.

Each record (one ExportTraceServiceRequest, streams/otlp/decode.py) is decoded, each GenAI span
mapped (streams/otlp/mapping.py), validated against the engine_execution schema and queued,
keyed by engine_id, for the engine-execution topic. From there it is sunk, aggregated and
reported like any other execution.

- **Replays: exactly once by transaction** (streams/readers/derived.py). The events are
  published in the checkpoint transaction that commits the OTLP offsets they came from; a
  replay after a crash derives them again, and the earlier copies, in an aborted transaction,
  are never seen by the read-committed sink and aggregation.
- **Collector retries: a bounded window per partition.** The Collector's own retry may write
  the same spans twice, in two records. A span whose (trace id, span id) appeared in one of the
  previous `otlp.dedupe_window_records` records of its partition (offsets x - N .. x - 1, or
  earlier in the same record) is dropped and counted as a duplicate. The window is a function
  of the partition's records in offset order only: when a worker reads a partition from an
  offset its window does not end at (a start, a rebalance, a rolled-back checkpoint), it reads
  the N records before that offset again (or the ones it missed) to rebuild it, so a crash or
  a rebalance between the two copies changes nothing. Copies must land in the same
  partition: the Collector's `partition_traces_by_id: true` keys every record by trace id.
- **Bad input.** A record that is not an ExportTraceServiceRequest in the configured encoding
  is rejected through the pipeline's dead-letter policy with reason `invalid_otlp`; a GenAI
  span that cannot be an execution (bad ids, no start, an end before its start) likewise, with
  the span as OTLP/JSON for payload, and one whose event fails the schema with its reason.
  Spans that are not GenAI, or name no model, are skipped and counted (`counts`).

A checkpoint is due `auto_flush_seconds` (of the engine_execution channel) after the first
record read since the last one, or once `buffer_size` events wait.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.config import JsonEngineConfig
from streams.otlp.decode import INVALID_OTLP, OtlpError, decode
from streams.otlp.mapping import NoModel, SpanError, genai_spans, identity, span_json, to_event
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.derived import DerivingReader
from streams.readers.outbox import MessageLimits, Outgoing
from streams.readers.route import Parsed
from streams.topics import topic_name
from streams.validation import ValidationError, Validator

log = logging.getLogger(__name__)
CHANNEL = "otlp"  # the dead letters' channel: the config key of this input
OUTCOMES = ("mapped", "skipped", "no_model", "duplicate", "invalid")
REBUILD_TIMEOUT_S = 30.0


class RetryWindow:
    """Span identities of the last `size` offsets of one partition, and where it ends."""

    def __init__(self, size: int):
        self.size = size
        self.next_offset: int | None = None
        self._records: deque[tuple[int, list[bytes]]] = deque()
        self._last: dict[bytes, int] = {}  # identity → the last offset it appeared at

    def __len__(self) -> int:
        return len(self._last)

    def slide(self, offset: int) -> None:
        """Record `offset` comes next: forget what is more than `size` offsets before it."""
        low = offset - self.size
        records, last = self._records, self._last
        while records and records[0][0] < low:
            old, identities = records.popleft()
            for key in identities:
                if last.get(key) == old:
                    del last[key]
        self.next_offset = offset + 1

    def seen(self, offset: int, key: bytes) -> bool:
        """Whether `key` appeared in the window (or earlier in this record); note it."""
        if not self.size:
            return False
        found = key in self._last
        self._last[key] = offset
        records = self._records
        if records and records[-1][0] == offset:
            records[-1][1].append(key)
        else:
            records.append((offset, [key]))
        return found


class OtlpReader(DerivingReader):
    def __init__(
        self,
        config: JsonEngineConfig,
        validator: Validator,
        dead_letters: DeadLetterPolicy,
        limits: MessageLimits,
    ):
        super().__init__(
            topic_name(config, "engine_execution"), CHANNEL, config.otlp.topic, dead_letters, limits
        )
        self.config = config
        self.encoding = config.otlp.encoding
        self.window_records = config.otlp.dedupe_window_records
        self.validator = validator
        # input and output each within an eighth of the payload limit: with JSON escaping
        # and the other fields the event stays within it
        self.max_text_bytes = config.validation.max_payload_bytes // 8
        channel = config.channels.engine_execution
        self.flush_seconds = channel.auto_flush_seconds
        self.buffer_size = channel.buffer_size
        self.windows: dict[int, RetryWindow] = {}
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.rebuilds = 0
        self._read_at: float | None = None

    # -- reading -----------------------------------------------------------------------------

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        if not items:
            return
        self._window(partition, items[0][0].offset())
        super().on_parsed(partition, items)
        if self._read_at is None:
            self._read_at = time.monotonic()

    def derive(self, partition: int, record: Any, value: bytes | None) -> list[tuple[bytes, bytes]]:
        offset = record.offset()
        window = self.windows[partition]
        window.slide(offset)
        if value is None:
            self._reject(partition, offset, "record has no value", None, INVALID_OTLP)
            return []
        try:
            request = decode(value, self.encoding)
        except OtlpError as exc:
            self._reject(partition, offset, str(exc), value, INVALID_OTLP)
            return []
        spans, others = genai_spans(request)
        counts = self.counts
        counts["skipped"] += others
        derived = []
        for resource, span, attrs, dialect in spans:
            key = identity(span)
            if key is not None and window.seen(offset, key):
                counts["duplicate"] += 1
                continue
            try:
                event = to_event(resource, span, attrs, dialect, self.max_text_bytes)
                raw = orjson.dumps(event)
                self.validator.validate("engine_execution", raw)
            except NoModel:
                counts["no_model"] += 1
                continue
            except SpanError as exc:
                counts["invalid"] += 1
                self._reject(partition, offset, _about(span, exc), span_json(span), INVALID_OTLP)
                continue
            except ValidationError as exc:
                counts["invalid"] += 1
                self._reject(partition, offset, _about(span, exc), span_json(span), exc.reason)
                continue
            except orjson.JSONEncodeError as exc:  # a lone surrogate from OTLP/JSON
                counts["invalid"] += 1
                self._reject(partition, offset, _about(span, exc), span_json(span), INVALID_OTLP)
                continue
            except Exception as exc:  # a span no rule foresaw: a dead letter, not a crash loop
                log.exception("OTLP span at %s[%d]@%d not mapped", self.source, partition, offset)
                counts["invalid"] += 1
                self._reject(partition, offset, _about(span, exc), span_json(span), INVALID_OTLP)
                continue
            counts["mapped"] += 1
            derived.append((event["engine_id"].encode(), raw))
        return derived

    def _reject(
        self, partition: int, offset: int, message: str, payload: bytes | None, reason: str
    ) -> None:
        error = ValidationError(reason, message)
        self.dead_letters.reject(CHANNEL, self.source, partition, offset, error, payload)

    # -- the retry window --------------------------------------------------------------------

    def _window(self, partition: int, first: int) -> RetryWindow:
        """The partition's window, made to end right before `first`: rebuilt from the records
        before it when it ends elsewhere (a new one, or reading went back), caught up with the
        records in between when reading skipped ahead (another worker read them)."""
        window = self.windows.get(partition)
        if window is None or window.next_offset is None or first < window.next_offset:
            window = self.windows[partition] = RetryWindow(self.window_records)
            self._read_again(window, partition, first - self.window_records, first)
        elif first > window.next_offset:
            start = max(window.next_offset, first - self.window_records)
            self._read_again(window, partition, start, first)
        window.next_offset = first
        return window

    def _read_again(self, window: RetryWindow, partition: int, start: int, end: int) -> None:
        """Note the GenAI spans of the records [start, end) as `derive` would have. Best
        effort: past REBUILD_TIMEOUT_S (brokers down) it goes on with what it has, and says
        so."""
        if not self.window_records or end <= 0 or start >= end:
            return
        started = time.monotonic()
        consumer = Consumer(
            {
                **self.config.kafka.client_config(),
                "group.id": f"{self.config.kafka.app_id}-otlp-window",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        read = 0
        try:
            tp = TopicPartition(self.source, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=REBUILD_TIMEOUT_S)
            start, end = max(start, low), min(end, high)
            if start >= end:
                return
            consumer.assign([TopicPartition(self.source, partition, start)])
            done = False
            while not done and time.monotonic() - started < REBUILD_TIMEOUT_S:
                for message in consumer.consume(1000, 0.5):
                    error = message.error()
                    if error is not None:
                        done = done or error.code() == KafkaError._PARTITION_EOF
                        continue
                    offset = message.offset()
                    if offset >= end:
                        done = True
                        break
                    window.slide(offset)
                    self._note(window, offset, message.value())
                    read += 1
                    done = offset >= end - 1
            if not done:
                log.warning(
                    "OTLP retry window of %s[%d]: read %d records only (time-out)",
                    self.source,
                    partition,
                    read,
                )
        except KafkaException as exc:
            log.warning("OTLP retry window of %s[%d] not rebuilt: %s", self.source, partition, exc)
        finally:
            consumer.close()
        self.rebuilds += 1
        log.info(
            "OTLP retry window of %s[%d]: read offsets %d..%d again, %d records, %d spans, %.2fs",
            self.source,
            partition,
            start,
            end - 1,
            read,
            len(window),
            time.monotonic() - started,
        )

    def _note(self, window: RetryWindow, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        try:
            request = decode(value, self.encoding)
        except OtlpError:
            return
        for _resource, span, _attrs, _dialect in genai_spans(request)[0]:
            key = identity(span)
            if key is not None:
                window.seen(offset, key)

    # -- checkpoints -------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Records read since the last checkpoint for `auto_flush_seconds`, or a full buffer."""
        return self._read_at is not None and (
            now - self._read_at >= self.flush_seconds or len(self._pending) >= self.buffer_size
        )

    def drain(self) -> Iterator[Outgoing]:
        self._read_at = None
        yield from super().drain()

    def reset(self) -> None:
        """A rolled-back checkpoint: the records are read again, each window rebuilt."""
        super().reset()
        self.windows.clear()
        self._read_at = None


def _about(span: Any, error: Exception) -> str:
    return (
        f"span {span.trace_id.hex()}/{span.span_id.hex()} ({span.name[:100]!r}): "
        f"{str(error)[:3000]}"
    )
