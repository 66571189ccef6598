"""Where the Publisher's CPU per event goes, beside a raw loop: no broker, no librdkafka.

`python -m bench.publisher` measures whole runs against a broker, where librdkafka's threads and
the machine's moods blur a difference of a fraction of a microsecond. Here produce() and poll()
are one no-op on both sides (the Publisher's producer is replaced by `NullProducer`; each call
still costs a Python call, about what a real poll(0) costs the raw loop, which polls after
every event where the Publisher polls after every 32nd), so what is left is the Python work
each side does per event; the variants run interleaved, best of
`--rounds`, which the noise of a shared machine cannot reach. The parts (key search, validator
proof, dump) are timed alone, and the Publisher's own steps are what its row adds beyond the
raw row and those parts: a frame, type checks, the poll counter.

    python -m bench.publisher_parts [--events 2000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable
from typing import Any
from unittest import mock

import orjson

from bench.publisher import payloads
from streams.config import JsonEngineConfig, KafkaConfig
from streams.publisher import Publisher, _scan_key
from streams.validation import Validator


class NullProducer:
    """A confluent-kafka Producer that sends nothing: produce() and poll() return at once."""

    def __init__(self, settings: dict[str, Any]) -> None:
        pass

    def produce(self, *args: Any, **kwargs: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        if timeout > 0:  # the Publisher's poll thread: wait as a real poll would
            time.sleep(timeout)
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def purge(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per round")
    parser.add_argument("--rounds", type=int, default=30, help="rounds, best kept")
    args = parser.parse_args(argv)

    values = payloads(args.events, 1)
    dicts = [orjson.loads(value) for value in values]
    keys = [obj["engine_id"].encode() for obj in dicts]
    cfg = JsonEngineConfig(kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    with mock.patch("streams.publisher.Producer", NullProducer):
        validated = Publisher(cfg)
        unvalidated = Publisher(cfg, validate=False)
    null = NullProducer({})
    produce, poll, dumps = null.produce, null.poll, orjson.dumps
    proof = Validator().proof("engine_execution")
    topic = "t"

    def report(err: Any, msg: Any) -> None:
        pass

    def raw_bytes() -> None:  # bench.publisher's raw loop, less the broker
        for value, key in zip(values, keys, strict=True):
            produce(topic, value, key, on_delivery=report)
            poll(0)

    def raw_dicts() -> None:
        for obj in dicts:
            produce(topic, dumps(obj), obj["engine_id"].encode(), on_delivery=report)
            poll(0)

    def each(function: Callable[..., Any], inputs: list[Any]) -> Callable[[], None]:
        def run() -> None:
            for item in inputs:
                function(item)

        return run

    def with_keys(collect: Callable[..., None]) -> Callable[[], None]:
        def run() -> None:
            for value, key in zip(values, keys, strict=True):
                collect(value, key=key)

        return run

    cases: dict[str, Callable[[], None]] = {
        "raw loop, bytes + keys": raw_bytes,
        "raw loop, dicts (dump + key)": raw_dicts,
        "Publisher validate=False, bytes + key=": with_keys(unvalidated.collect_engine_execution),
        "Publisher validate=False, bytes": each(unvalidated.collect_engine_execution, values),
        "Publisher validated, dicts": each(validated.collect_engine_execution, dicts),
        "part: key search in bytes (_scan_key)": each(
            lambda value: _scan_key("engine_execution", value), values
        ),
        "part: validator proof of a dict": each(proof, dicts),
        "part: orjson.dumps": each(dumps, dicts),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.rounds):
        for name, run in cases.items():
            best[name] = min(best[name], timeit.timeit(run, number=1) / args.events * 1e6)
    validated.close()
    unvalidated.close()

    def over(row: str, raw: str, *parts: str) -> str:
        added = best[row] - best[raw]
        own = added - sum(best[part] for part in parts)
        return f"{added:+.2f} us beyond the raw loop; its own steps (beyond the parts) {own:+.2f}"

    print(f"{args.events:,} engine_execution events per round, best of {args.rounds} rounds")
    for name in cases:
        print(f"  {name:<40} {best[name]:6.3f} us/event")
    raw_b, raw_d, keyed, keyless, valid = list(cases)[:5]
    print(f"{keyed}: {over(keyed, raw_b)}")
    print(f"{keyless}: {over(keyless, raw_b, 'part: key search in bytes (_scan_key)')}")
    print(f"{valid}: {over(valid, raw_d, 'part: validator proof of a dict')}")


if __name__ == "__main__":
    main()
