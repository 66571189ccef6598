"""What a reader hands to the checkpoint's transaction: records to publish with the offsets.

Dead letters, derived records (training samples, re-keyed comparisons) and the aggregator's
changelog and closed windows are all queued while records are read and published only inside
the transaction that commits the offsets they came from (streams/worker/checkpoint.py): they
become visible together with that progress, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol

# (topic, key, value, partition[, timestamp]): partition None lets the producer's partitioner
# choose; a timestamp (epoch ms) keeps a forwarded record's own time (else: now).
Outgoing = (
    tuple[str, bytes | None, bytes | None, int | None]
    | tuple[str, bytes | None, bytes | None, int | None, int | None]
)
# Kafka's default max.message.bytes of a topic (the broker's message.max.bytes).
DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_588
# What a record batch of one record adds to its key and value: the batch header (61 bytes),
# the record's own varints and attributes, with room to spare.
RECORD_OVERHEAD: Final = 256


class MessageLimits:
    """The largest record each topic takes: its `max.message.bytes`, read when the worker
    starts (streams/topics.py). A record over it would fail its whole transaction, and
    every retry of it: readers check what they queue against it instead."""

    def __init__(self, by_topic: dict[str, int] | None = None):
        self.by_topic: dict[str, int] = dict(by_topic or {})

    def room(self, topic: str) -> int:
        """Bytes of key and value a record of `topic` may hold."""
        return self.by_topic.get(topic, DEFAULT_MAX_MESSAGE_BYTES) - RECORD_OVERHEAD

    def fits(self, topic: str, key: bytes | None, value: bytes | None) -> bool:
        return len(key or b"") + len(value or b"") <= self.room(topic)


class Outbox(Protocol):
    def drain(self) -> Iterator[Outgoing]:
        """Every queued record, once: the queue is empty afterwards."""
        ...

    def reset(self) -> None:
        """Forget what is queued: a rolled-back checkpoint reads its sources again."""
        ...
