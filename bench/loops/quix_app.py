"""Quix Streams doing json-engine's work: parse + validate each event, write the batch, fsync.

The idiomatic shape: a StreamingDataFrame that filters out invalid values (json-engine's
Validator) into a BatchingSink whose `write()` appends the partition's batch with one write
and one fsync; Quix commits after its sinks flushed (at-least-once). Checkpoints every 10000
records or 0.5 s, like the json-engine worker's buffer_size and auto_flush_seconds.
Runs in its own virtualenv (Quix pins its own confluent-kafka), with the project's source
on PYTHONPATH for the Validator.

    python -m bench.loops.quix_app --bootstrap B --topic T --group G --events N --out F
"""

from __future__ import annotations

import os
from pathlib import Path

from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.loops import loop_args
from streams.validation import ValidationError, Validator


class LinesSink(BatchingSink):
    """Appends each flushed batch as lines with one write + fsync; marks the end."""

    def __init__(self, out: Path, events: int):
        super().__init__()
        self.out = out
        self.events = events
        self.written = 0
        self.fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, batch: SinkBatch) -> None:
        values = [item.value for item in batch]
        os.write(self.fd, b"\n".join(values) + b"\n")
        os.fsync(self.fd)
        self.written += len(values)
        if self.written >= self.events:
            Path(f"{self.out}.done").write_text(str(self.written))


def main(argv: list[str] | None = None) -> None:
    args = loop_args(__doc__, argv)

    check = Validator().validate

    def valid(value: bytes) -> bool:
        try:
            check("engine_execution", value)
        except ValidationError:
            return False
        return True

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_every=10_000,
        commit_interval=0.5,
        loglevel="WARNING",
        use_changelog_topics=False,
        auto_create_topics=False,
    )
    topic = app.topic(args.topic, value_deserializer="bytes", key_deserializer="bytes")
    sdf = app.dataframe(topic)
    sdf = sdf.filter(valid)
    sdf.sink(LinesSink(args.out, args.events))
    app.run()


if __name__ == "__main__":
    main()
