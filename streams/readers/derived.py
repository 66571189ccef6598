"""Readers that publish derived records (training samples, OTLP executions).

Exactly once by transaction: the derived records are queued while their sources are read and
published in the checkpoint's transaction, together with the source offsets
(streams/readers/outbox.py). A replay after a crash re-derives records whose earlier copies
were aborted and are never seen by the read-committed sinks.

A source can fail only itself: a derived record its topic cannot take (`too_large`), or an
unforeseen error while deriving (`internal`), makes the source's dead letter instead of a
transaction that fails on every retry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from streams.readers.dead_letter import DeadLetterPolicy, too_large
from streams.readers.failures import Fatal
from streams.readers.outbox import MessageLimits, Outgoing
from streams.readers.route import Parsed, internal_error
from streams.validation import ValidationError


class DerivingReader:
    """Base of a topic reader that publishes what it derives; subclasses implement `derive`.

    `topic` is where the derived records go; `channel` and `source` name, in dead letters,
    the channel and topic the sources come from."""

    def __init__(
        self,
        topic: str,
        channel: str,
        source: str,
        dead_letters: DeadLetterPolicy,
        limits: MessageLimits,
    ):
        self.topic = topic
        self.channel = channel
        self.source = source
        self.dead_letters = dead_letters
        self.limits = limits
        self._pending: list[tuple[bytes, bytes]] = []

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        """(key, value) records derived from one consumed record (`value` None: invalid)."""
        raise NotImplementedError

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        pending, limits, topic = self._pending, self.limits, self.topic
        for record, value, _error in items:
            try:
                derived = self.derive(partition, record, value)
            except Fatal:
                raise
            except Exception as exc:  # one record fails, never the worker
                self.reject(partition, record, internal_error(exc, f"deriving {topic}"))
                continue
            for key, out in derived:
                if limits.fits(topic, key, out):
                    pending.append((key, out))
                else:
                    size, room = len(key) + len(out), limits.room(topic)
                    error = too_large(f"the record derived for {topic}", size, topic, room)
                    self.reject(partition, record, error, out)

    def reject(
        self, partition: int, record: Any, error: ValidationError, payload: bytes | None = None
    ) -> None:
        """The source's dead letter; its payload is the source, or what was derived of it."""
        self.dead_letters.reject(
            self.channel,
            self.source,
            partition,
            record.offset(),
            error,
            record.value() if payload is None else payload,
        )

    def drain(self) -> Iterator[Outgoing]:
        pending, self._pending = self._pending, []
        for key, value in pending:
            yield (self.topic, key, value, None)

    def reset(self) -> None:
        self._pending.clear()
