"""A plain confluent-kafka consumer loop: the Python ceiling and the same-work reference.

- `--mode raw`: consume(10000) batches, append the values as lines, fsync once at the end;
  no parsing. What a Python process can move from Kafka to a file at best.
- `--mode parse`: the same batches, each value parsed and validated with json-engine's
  Validator (what the sink does per event), one write + fsync per batch, then an async offset
  commit: the least a durable, validating sink does, without any framework.
- `--mode fastjsonschema`: the loop of issue 25's outside test: each value parsed with orjson
  and validated by a fastjsonschema validator compiled from `schemas/v1/engine_execution.json`
  (the generic way a Python service validates JSON, without json-engine's fast path), one
  write per batch and one fsync at the end; no commit.

    python -m bench.loops.confluent_loop --bootstrap B --topic T --group G --events N --out F
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from confluent_kafka import Consumer

from bench.loops import loop_args

BATCH = 10_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("raw", "parse", "fastjsonschema"), default="raw")
    args = loop_args(__doc__, argv, parser)

    validate = None
    if args.mode == "parse":
        from streams.validation import ValidationError, Validator

        check = Validator().validate

        def validate(values: list[bytes]) -> list[bytes]:
            good = []
            for value in values:
                try:
                    check("engine_execution", value)
                except ValidationError:
                    continue
                good.append(value)
            return good

    if args.mode == "fastjsonschema":
        import fastjsonschema
        import orjson

        from streams.validation import load_schema

        schema_check = fastjsonschema.compile(load_schema("engine_execution"))

        def validate(values: list[bytes]) -> list[bytes]:
            good = []
            for value in values:
                try:
                    schema_check(orjson.loads(value))
                except (ValueError, fastjsonschema.JsonSchemaException):
                    continue
                good.append(value)
            return good

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seen = 0
    try:
        while seen < args.events:
            messages = consumer.consume(BATCH, 1.0)
            values = [m.value() for m in messages if m.error() is None]
            if not values:
                continue
            seen += len(values)
            if validate is not None:
                values = validate(values)
            os.write(fd, b"\n".join(values) + b"\n")
            if args.mode == "parse":
                os.fsync(fd)
                consumer.commit(asynchronous=True)
        os.fsync(fd)
        Path(f"{args.out}.done").write_text(str(seen))
    finally:
        os.close(fd)
        consumer.close()


if __name__ == "__main__":
    main()
