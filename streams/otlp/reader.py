"""The reader of the OTLP spans topic: GenAI spans → engine_execution, exactly once.

Each record (one ExportTraceServiceRequest, streams/otlp/decode.py) is decoded, each inference
span mapped (streams/otlp/mapping.py), validated against the engine_execution schema and
queued for the engine-execution topic. From there it is sunk, aggregated and reported like
any other execution.

- **Replays: exactly once by transaction** (streams/readers/derived.py). The events are
  published in the checkpoint transaction that commits the OTLP offsets they came from; a
  replay after a crash derives them again, and the earlier copies, in an aborted transaction,
  are never seen by the read-committed sink and aggregation.
- **Collector retries: copies meet where their identity sends them.** The Collector may write
  the same spans twice, in two records, and without `partition_traces_by_id` in two
  partitions of the OTLP topic, read by two workers. Each execution is keyed by its span's
  identity, `<trace id>/<span id>` in hex, so every copy lands in the same partition of the
  execution topic, where the first is kept and the others are dropped before any sink or
  aggregation sees them (streams/readers/dedupe.py, kind engine_execution: executions with
  `otel` only), within `output.dedupe_horizon_hours` of that partition's stream time.
- **Bad input.** A record that is not an ExportTraceServiceRequest in the configured encoding
  is rejected through the pipeline's dead-letter policy with reason `invalid_otlp`; an
  inference span that cannot be an execution (bad ids, no start, an end before its start)
  likewise, with the span as OTLP/JSON for payload, and one whose event fails the schema with
  its reason. Spans that are not inferences are skipped and counted by kind (`counts`).

A checkpoint is due `auto_flush_seconds` (of the engine_execution channel) after the first
record read since the last one, or once `buffer_size` events wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from streams.config import JsonEngineConfig
from streams.otlp.decode import INVALID_OTLP, OtlpError, decode
from streams.otlp.mapping import SpanError, genai_spans, span_json, to_event
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.derived import DerivingReader
from streams.readers.outbox import MessageLimits, Outgoing
from streams.readers.route import Parsed
from streams.topics import topic_name
from streams.validation import ValidationError, Validator

log = logging.getLogger(__name__)
CHANNEL = "otlp"  # the dead letters' channel: the config key of this input
# (outcome, kind) → spans: mapped (kind: the operation), placeholder (mapped, no model
# named), skipped (kind: what the span is), invalid
Counts = dict[tuple[str, str], int]


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
        self.validator = validator
        # input and output each within an eighth of the payload limit: with JSON escaping
        # and the other fields the event stays within it
        self.max_text_bytes = config.validation.max_payload_bytes // 8
        channel = config.channels.engine_execution
        self.flush_seconds = channel.auto_flush_seconds
        self.buffer_size = channel.buffer_size
        self.counts: Counts = {}
        self._read_at: float | None = None

    # -- reading -----------------------------------------------------------------------------

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        if not items:
            return
        super().on_parsed(partition, items)
        if self._read_at is None:
            self._read_at = time.monotonic()

    def derive(self, partition: int, record: Any, value: bytes | None) -> list[tuple[bytes, bytes]]:
        offset = record.offset()
        if value is None:
            self._reject(partition, offset, "record has no value", None, INVALID_OTLP)
            return []
        try:
            request = decode(value, self.encoding)
        except OtlpError as exc:
            self._reject(partition, offset, str(exc), value, INVALID_OTLP)
            return []
        spans, others = genai_spans(request)
        for kind, count in others.items():
            self._count("skipped", kind, count)
        derived = []
        for resource, span, attrs, kind in spans:
            try:
                event = to_event(resource, span, attrs, kind, self.max_text_bytes)
                raw = orjson.dumps(event)
                self.validator.validate("engine_execution", raw)
            except SpanError as exc:
                reason, payload = INVALID_OTLP, exc
            except ValidationError as exc:
                reason, payload = exc.reason, exc
            except orjson.JSONEncodeError as exc:  # a lone surrogate from OTLP/JSON
                reason, payload = INVALID_OTLP, exc
            except Exception as exc:  # a span no rule foresaw: a dead letter, not a crash loop
                log.exception("OTLP span at %s[%d]@%d not mapped", self.source, partition, offset)
                reason, payload = INVALID_OTLP, exc
            else:
                placeholder = event["otel"].get("model_placeholder", False)
                self._count(
                    "placeholder" if placeholder else "mapped", kind.operation or "inference"
                )
                key = f"{event['trace_id']}/{event['task_id']}".encode()
                derived.append((key, raw))
                continue
            self._count("invalid", kind.operation or "inference")
            self._reject(partition, offset, _about(span, payload), span_json(span), reason)
        return derived

    def _count(self, outcome: str, kind: str, count: int = 1) -> None:
        key = (outcome, kind)
        self.counts[key] = self.counts.get(key, 0) + count

    def _reject(
        self, partition: int, offset: int, message: str, payload: bytes | None, reason: str
    ) -> None:
        error = ValidationError(reason, message)
        self.dead_letters.reject(CHANNEL, self.source, partition, offset, error, payload)

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
        """A rolled-back checkpoint: the records are read again."""
        super().reset()
        self._read_at = None


def _about(span: Any, error: Exception) -> str:
    return (
        f"span {span.trace_id.hex()}/{span.span_id.hex()} ({span.name[:100]!r}): "
        f"{str(error)[:3000]}"
    )
