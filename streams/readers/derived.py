"""Readers that publish derived records (training samples, re-keyed comparisons).

Exactly once by transaction: the derived records are queued while their sources are read and
published in the checkpoint's transaction, together with the source offsets
(streams/readers/outbox.py). A replay after a crash re-derives records whose earlier copies
were aborted and are never seen by the read-committed sinks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from streams.readers.outbox import Outgoing
from streams.readers.route import Parsed


class DerivingReader:
    """Base of a topic reader that publishes what it derives; subclasses implement `derive`."""

    def __init__(self, topic: str):
        self.topic = topic
        self._pending: list[tuple[bytes, bytes]] = []

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        """(key, value) records derived from one consumed record (`value` None: invalid)."""
        raise NotImplementedError

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        for record, value, _error in items:
            self._pending.extend(self.derive(partition, record, value))

    def drain(self) -> Iterator[Outgoing]:
        pending, self._pending = self._pending, []
        for key, value in pending:
            yield (self.topic, key, value, None)

    def reset(self) -> None:
        self._pending.clear()
