"""Objects and requests per minute and partition of the S3 sink at its default settings.

Small objects cost money (per request, and for every reader that lists and opens them): this
drives the real S3 sink (streams/worker/sink.py with sinks/s3/part_objects.py) of one
partition against a local versitygw, as the worker does — a checkpoint when `buffer_size`
records wait or the oldest has waited `auto_flush_seconds`, files finished at `roll_bytes`
or `roll_seconds` — at a low and a high rate of ~550-byte events, and counts:
- visible objects (finished files) per minute: at defaults one per `roll_seconds` (300 s) or
  per `roll_bytes` (64 MiB), whichever comes first;
- hidden part PUTs per minute (packs, sinks/s3/packs.py): one per checkpoint that has new
  lines for the partition;
- all requests per minute (packs, publications, the deletes of packs no longer needed).
The Kafka side (one transaction per checkpoint) is left out: it is the filesystem sink's.
`roll_seconds` is divided by `--scale` at the low rate (so that files finish within the run)
and the counts of visible objects scaled back.

    python -m bench.s3_objects [--seconds 90] [--low 100] [--high 3000] [--scale 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from sinks.s3.location import S3Location
from sinks.s3.store import S3Options, store_of
from streams.config import ChannelConfig, JsonEngineConfig
from streams.local import s3 as local_s3
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.route import LocalRecord
from streams.worker.sink import ChannelSink

BUCKET = "json-engine-objects"


def checkpoint(sink: ChannelSink) -> None:
    """What the worker's checkpoint does with a sink, without Kafka: write, pack and upload
    (`checkpoints()`, `sync()`), then the commit's outcome."""
    sink.flush()
    sink.checkpoints()
    sink.sync()
    sink.committed()


def run(server: local_s3.LocalS3, rate: float, seconds: float, scale: float) -> dict[str, Any]:
    defaults = ChannelConfig(filename="events.jsonl")
    config = JsonEngineConfig()
    channel = config.channels.engine_execution.model_copy(
        update={"roll_seconds": defaults.roll_seconds / scale}
    )
    options = S3Options(endpoint_url=server.endpoint, region=local_s3.REGION)
    base = S3Location(BUCKET, f"rate-{int(rate)}-{time.time_ns()}", options)
    store = store_of(base)
    requests: Counter[str] = Counter()
    put_new, delete = store.put_new, store.delete

    def counted_put(where: S3Location, body: Any) -> bool:
        requests["part PUT" if "/.inprogress/" in where.key else "publish PUT"] += 1
        return put_new(where, body)

    def counted_delete(bucket: str, keys: Any) -> int:
        requests["DeleteObjects"] += 1
        return delete(bucket, keys)

    store.put_new, store.delete = counted_put, counted_delete  # type: ignore[method-assign]
    try:
        sink = ChannelSink("engine_execution", "bench.e", channel, base, DeadLetterPolicy(config))
        sink.assign(0, 1, [])
        requests.clear()  # the recovery's listing is not traffic
        event = {"timestamp": int(time.time() * 1000), "pad": "x" * 520}
        value = orjson.dumps(event)
        started, offset, due_at = time.monotonic(), 0, time.monotonic()
        while (now := time.monotonic()) - started < seconds:
            count = max(1, int(rate / 20))  # 0.05 s a tick
            items = [(LocalRecord(offset + i, value), event, None) for i in range(count)]
            offset += count
            sink.on_parsed(0, items)
            if sink.due(now):
                checkpoint(sink)
            sink.roll_due(now)
            due_at += 0.05
            time.sleep(max(0.0, due_at - time.monotonic()))
        elapsed = time.monotonic() - started
        checkpoint(sink)
        for writer in sink._writers.values():
            writer.sync()  # the publications under way
        visible = sum(1 for key, _ in store.list(base) if key.endswith(".jsonl"))
        sink.release([0])
    finally:
        store.put_new, store.delete = put_new, delete  # type: ignore[method-assign]
    minutes = elapsed / 60
    return {
        "rate_per_partition": rate,
        "bytes_per_second": round(rate * (len(value) + 1)),
        "seconds": round(elapsed, 1),
        "visible_objects_per_minute": round(visible / (minutes * scale), 3),
        "expected_visible_per_minute": round(
            max(60 / defaults.roll_seconds, rate * (len(value) + 1) * 60 / defaults.roll_bytes), 3
        ),
        "part_puts_per_minute": round(requests["part PUT"] / minutes, 1),
        "requests_per_minute": round(sum(requests.values()) / minutes, 1),
        "requests": dict(requests),
        "scale": scale,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--low", type=float, default=100.0, help="events/s, one partition")
    parser.add_argument("--high", type=float, default=3000.0, help="events/s, one partition")
    parser.add_argument("--scale", type=float, default=10.0, help="roll_seconds / scale (low)")
    parser.add_argument("--port", type=int, default=19734)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="je-s3-objects-") as scratch:
        server = local_s3.up(args.port, Path(scratch))
        try:
            server.create_bucket(BUCKET)
            for name, value in server.env().items():  # boto3's credentials
                os.environ.setdefault(name, value)
            for rate, scale in ((args.low, args.scale), (args.high, 1.0)):
                result = run(server, rate, args.seconds, scale)
                print(orjson.dumps(result).decode(), flush=True)
        finally:
            local_s3.down(server)


if __name__ == "__main__":
    main()
