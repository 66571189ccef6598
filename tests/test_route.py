"""The route hands a consumed batch to its readers a chunk at a time (streams/readers/route.py
CHUNK): what the readers see and what the route reports taken must be those of the batch as a
whole, whatever the chunk boundaries, also when a reader's buffer fills part-way through."""

from __future__ import annotations

import random

import orjson

from streams import events
from streams.readers.route import CHUNK, LocalRecord, Parsed, TopicRoute
from streams.validation import Validator


class Bounded:
    """A reader with room for `room` records (a sink whose buffer fills): takes a prefix."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.offsets: list[int] = []
        self.full = False

    def on_parsed(self, partition: int, items: list[Parsed]) -> int:
        assert not self.full, "handed more records after it took only part of a chunk"
        took = items[: max(0, self.room - len(self.offsets))]
        self.offsets += [record.offset() for record, _parsed, _error in took]
        self.full = len(took) < len(items)
        return len(took)


class Everything:
    def __init__(self) -> None:
        self.offsets: list[int] = []

    def on_parsed(self, partition: int, items: list[Parsed]) -> None:
        self.offsets += [record.offset() for record, _parsed, _error in items]


def batch(count: int) -> list[LocalRecord]:
    """Valid executions, with a malformed record every 97th (a dead letter, still handed on)."""
    rng = random.Random(7)
    return [
        LocalRecord(
            n,
            b"{not json" if n % 97 == 0 else orjson.dumps(events.engine_execution(rng, "e", n)),
        )
        for n in range(count)
    ]


def test_a_reader_that_fills_part_way_through_a_later_chunk_stops_the_batch_there() -> None:
    """Adversary: a batch of two and a half chunks, and a first reader whose room ends inside
    the second chunk. The route reports exactly the prefix it took, the next reader sees that
    prefix and nothing past it, in offset order, without a gap or a repeat."""
    records = batch(CHUNK * 2 + CHUNK // 2)
    for room in (CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + 377, len(records), len(records) + 5):
        route = TopicRoute("t", "engine_execution", Validator())
        first, second = Bounded(room), Everything()
        route.readers += [first, second]
        taken = route.on_records(0, records)
        expected = min(room, len(records))
        assert taken == expected, room
        assert first.offsets == list(range(expected))
        assert second.offsets == list(range(expected)), "a reader saw past what was taken"


def test_chunks_give_the_readers_every_record_once_in_order() -> None:
    """Adversary: batch sizes around the chunk size (one under, equal, one over, several)."""
    for size in (1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 11):
        route = TopicRoute("t", "engine_execution", Validator())
        reader = Everything()
        route.readers.append(reader)
        assert route.on_records(0, batch(size)) == size
        assert reader.offsets == list(range(size))
