"""What a reader hands to the checkpoint's transaction: records to publish with the offsets.

Dead letters, derived records (training samples, re-keyed comparisons) and the aggregator's
changelog and closed windows are all queued while records are read and published only inside
the transaction that commits the offsets they came from (streams/worker/checkpoint.py): they
become visible together with that progress, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

# (topic, key, value, partition): partition None lets the producer's partitioner choose.
Outgoing = tuple[str, bytes | None, bytes | None, int | None]


class Outbox(Protocol):
    def drain(self) -> Iterator[Outgoing]:
        """Every queued record, once: the queue is empty afterwards."""
        ...

    def reset(self) -> None:
        """Forget what is queued: a rolled-back checkpoint reads its sources again."""
        ...
