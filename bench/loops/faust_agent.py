"""A naive Faust agent: what a Faust user writes first, event by event.

`async for value in stream`: parse and validate with json-engine's Validator, write the line
to a buffered file; fsync once all `--events` are written (more lenient than a durable sink,
which would fsync before acknowledging). Faust's defaults otherwise (per-message acks,
its own commit interval).

    python -m bench.loops.faust_agent --bootstrap B --topic T --group G --events N --out F
"""

from __future__ import annotations

import os
from pathlib import Path

import faust

from bench.loops import loop_args
from streams.validation import ValidationError, Validator
from streams.worker.app import faust_datadir


def main(argv: list[str] | None = None) -> None:
    args = loop_args(__doc__, argv)

    app = faust.App(
        args.group,
        broker=[f"kafka://{host.strip()}" for host in args.bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        datadir=faust_datadir(),
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
    )
    topic = app.topic(args.topic, value_serializer="raw", key_serializer="raw")
    validate = Validator().validate
    out = open(args.out, "ab")  # noqa: SIM115 - open for the life of the agent
    seen = 0

    @app.agent(topic)
    async def sink(stream: faust.StreamT[bytes]) -> None:
        nonlocal seen
        async for value in stream:
            seen += 1
            try:
                validate("engine_execution", value)
            except ValidationError:
                continue
            out.write(value + b"\n")
            if seen == args.events:
                out.flush()
                os.fsync(out.fileno())
                Path(f"{args.out}.done").write_text(str(seen))

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
