"""The Publisher against the real broker: topics and keys, client-side validation, payload
forms, the asyncio variant, delivery failures within a bound, context-manager flushing."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams import events
from streams.brokers import watermarks
from streams.config import JsonEngineConfig
from streams.publisher import (
    AsyncPublisher,
    DeliveryError,
    Publisher,
    ValidationError,
    _scan_key,
)
from streams.topics import create_topics, topic_name
from tests.conftest import ConfigFactory

TS = 1_764_300_000_000
STOPPED = "127.0.0.1:1"  # nothing listens there: connections are refused at once
BOUND_S = 10.0  # a stopped broker must give an error within this (delivery_timeout_s=3)

KINDS = {
    "engine_execution": ("engine-execution", "engine_id"),
    "comparison_result": ("comparison-result", "comparison_id"),
    "training_sample": ("training-sample", "sample_id"),
}


def event(kind: str, rng: random.Random, i: int = 0) -> dict[str, Any]:
    if kind == "engine_execution":
        return events.engine_execution(rng, f"engine-{i % 3}", TS + i)
    if kind == "comparison_result":
        return events.comparison_result(rng, events.ENGINE_IDS, TS + i)
    return events.training_sample(rng, TS + i)


def invalid_execution(rng: random.Random) -> dict[str, Any]:
    bad = events.engine_execution(rng, "engine-bad", TS)
    bad["metrics"]["latency_ms"] = -1.0
    return bad


def read_topic(cfg: JsonEngineConfig, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record in the topic: the watermarks say how many there are, so no guessing."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": "test-publisher-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        assignment, expected = [], 0
        for partition in meta.partitions:
            low, high = watermarks(consumer, TopicPartition(topic, partition))
            expected += high - low
            assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(msg.error())
            if not msg.error():
                found.append(msg)
        assert len(found) == expected, f"read {len(found)} of {expected} records of {topic}"
        return found
    finally:
        consumer.close()


@pytest.fixture
def topics(config: JsonEngineConfig) -> JsonEngineConfig:
    create_topics(config)
    return config


@pytest.fixture
def stopped(make_config: ConfigFactory) -> JsonEngineConfig:
    return make_config({"kafka": {"bootstrap_servers": STOPPED}}, name="stopped.yaml")[1]


def test_each_type_arrives_in_its_topic_with_its_key(topics: JsonEngineConfig) -> None:
    rng = random.Random(1)
    sent = {kind: [event(kind, rng, i) for i in range(5)] for kind in KINDS}
    with Publisher(topics) as publisher:
        for payload in sent["engine_execution"]:
            publisher.collect_engine_execution(payload)
        for payload in sent["comparison_result"]:
            publisher.collect_comparison_result(payload)
        for payload in sent["training_sample"]:
            publisher.collect_training_sample(payload)
    assert publisher.delivered == 15 and publisher.failed == 0
    for kind, (suffix, field) in KINDS.items():
        topic = topics.kafka.topic_prefix + suffix
        assert topic == topic_name(topics, kind)
        received = read_topic(topics, topic)
        assert sorted((m.key(), m.value()) for m in received) == sorted(
            (e[field].encode(), orjson.dumps(e)) for e in sent[kind]
        ), kind
    # One engine's events share a partition (the key's job): per-engine order is kept.
    by_engine: dict[bytes, set[int]] = {}
    for m in read_topic(topics, topic_name(topics, "engine_execution")):
        by_engine.setdefault(m.key(), set()).add(m.partition())
    assert all(len(partitions) == 1 for partitions in by_engine.values())


def test_invalid_event_raises_and_nothing_is_sent(topics: JsonEngineConfig) -> None:
    rng = random.Random(2)
    valid = event("engine_execution", rng)
    with Publisher(topics) as publisher:
        with pytest.raises(ValidationError) as caught:
            publisher.collect_engine_execution(invalid_execution(rng))
        assert caught.value.reason == "schema"
        assert "metrics.latency_ms" in str(caught.value)
        for bad in (b'{"engine_id": "x"', "[1, 2]", b"\xff\xfe", {"engine_id": "x"}):
            with pytest.raises(ValidationError):
                publisher.collect_engine_execution(bad)
        with pytest.raises(ValidationError):  # NaN is null on the wire: what is validated
            publisher.collect_engine_execution(
                dict(valid, metrics={**valid["metrics"], "latency_ms": float("nan")})
            )
        with pytest.raises(ValidationError):  # not serializable at all
            publisher.collect_engine_execution(dict(valid, input={1, 2}))
        publisher.collect_engine_execution(valid)
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    assert [orjson.loads(m.value()) for m in received] == [valid]
    assert publisher.delivered == 1 and publisher.failed == 0


def test_validate_false_sends_invalid_events(topics: JsonEngineConfig) -> None:
    rng = random.Random(3)
    bad = invalid_execution(rng)
    with Publisher(topics, validate=False) as publisher:
        publisher.collect_engine_execution(bad)
        publisher.collect_engine_execution(b"not json at all")  # sent as it is, without a key
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    assert {m.value(): m.key() for m in received} == {
        orjson.dumps(bad): b"engine-bad",
        b"not json at all": None,
    }


@pytest.mark.parametrize("validate", [True, False])
def test_bytes_str_and_dict_payloads(topics: JsonEngineConfig, validate: bool) -> None:
    rng = random.Random(4)
    sent = [event("engine_execution", rng, i) for i in range(6)]
    sent[4]["output"] = 'Line one\nline "two" \u00e9\u4e2d'  # escapes: the key is parsed
    sent[5]["engine_id"] = "engine-\u00e9"  # a key that is not ASCII
    payloads: list[Any] = [
        sent[0],  # dict
        orjson.dumps(sent[1]),  # bytes
        json.dumps(sent[2]),  # str, with json.dumps' spaces
        bytearray(orjson.dumps(sent[3])),
        json.dumps(sent[4], ensure_ascii=False).encode(),
        memoryview(orjson.dumps(sent[5])),
    ]
    with Publisher(topics, validate=validate) as publisher:
        for payload in payloads:
            publisher.collect_engine_execution(payload)
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    assert sorted((m.key(), orjson.loads(m.value())["trace_id"]) for m in received) == sorted(
        (e["engine_id"].encode(), e["trace_id"]) for e in sent
    )
    assert {m.value() for m in received} >= {orjson.dumps(sent[0]), json.dumps(sent[2]).encode()}


def test_a_given_key_is_sent_as_given_without_validation(topics: JsonEngineConfig) -> None:
    """validate=False with key=: the payload is not searched for a key, whatever it holds.
    Adversaries: a key that disagrees with the payload's engine_id (sent as given: keys only
    order events), bytes that are not JSON, bytes whose escapes defeat the key search, a str
    key, and every payload form."""
    rng = random.Random(21)
    doc = event("engine_execution", rng)
    escaped = json.dumps({**doc, "output": 'say "hi"'}).encode()  # backslashes: a parse
    sent: list[tuple[Any, Any, bytes]] = [
        (orjson.dumps(doc), doc["engine_id"].encode(), doc["engine_id"].encode()),
        (orjson.dumps(doc), b"not-its-engine", b"not-its-engine"),
        (b"not json at all", b"k", b"k"),
        (escaped, "engine-\u00e9", "engine-\u00e9".encode()),
        (doc, b"from-a-dict", b"from-a-dict"),
        (json.dumps(doc), b"from-a-str", b"from-a-str"),
        (bytearray(orjson.dumps(doc)), b"from-a-bytearray", b"from-a-bytearray"),
    ]
    with Publisher(topics, validate=False) as publisher:
        for payload, key, _expected in sent:
            publisher.collect_engine_execution(payload, key=key)
        publisher.collect("engine_execution", b"{}", lambda err, msg: None, key=b"generic")
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    assert sorted(m.key() for m in received) == sorted([e for _p, _k, e in sent] + [b"generic"])
    assert {m.key(): m.value() for m in received}[b"not-its-engine"] == orjson.dumps(doc)


def test_a_given_key_must_agree_with_the_validated_event(topics: JsonEngineConfig) -> None:
    """Validated, key= is checked against the event's own engine_id: the key the validator
    reads is the one sent either way. Adversaries: a key that disagrees (dict, bytes and str
    payloads, the generic path, the asyncio variant), an empty key, a non-ASCII key given as
    str and as bytes, an invalid event with a wrong key (the validation error comes first),
    keys of the wrong type, a key that is not UTF-8, a closed publisher."""
    rng = random.Random(22)
    doc = event("engine_execution", rng)
    other = {**event("engine_execution", rng, 1), "engine_id": "engine-\u00e9"}
    good = doc["engine_id"].encode()
    with Publisher(topics) as publisher:
        for payload in (doc, orjson.dumps(doc), json.dumps(doc)):
            for wrong in (b"engine-x", "engine-x", b""):
                with pytest.raises(ValueError, match="disagrees") as caught:
                    publisher.collect_engine_execution(payload, key=wrong)
                assert not isinstance(caught.value, ValidationError)
        with pytest.raises(ValueError, match="disagrees"):
            publisher.collect("engine_execution", doc, lambda err, msg: None, key=b"engine-x")
        with pytest.raises(ValidationError):
            publisher.collect_engine_execution(invalid_execution(rng), key=b"engine-x")
        for wrong_type in (42, 4.2, [good], {"engine_id": good}):
            with pytest.raises(TypeError, match="key must be bytes or str"):
                publisher.collect_engine_execution(doc, key=wrong_type)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="UTF-8"):
            publisher.collect_engine_execution(doc, key="\ud800")
        assert publisher.delivered == 0 and len(publisher._producer) == 0  # nothing sent
        publisher.collect_engine_execution(doc, key=good)
        publisher.collect_engine_execution(orjson.dumps(doc), key=doc["engine_id"])
        publisher.collect_engine_execution(doc, key=bytearray(good))  # bytes-like: as bytes
        publisher.collect_engine_execution(other, key="engine-\u00e9")
        publisher.collect_engine_execution(json.dumps(other), key="engine-\u00e9".encode())

    async def wrong_key_async() -> None:
        async with AsyncPublisher(topics) as async_publisher:
            with pytest.raises(ValueError, match="disagrees"):
                await async_publisher.collect_engine_execution(doc, key=b"engine-x")
            message = await async_publisher.collect_engine_execution(doc, key=good)
            assert message.key() == good

    asyncio.run(wrong_key_async())
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    assert sorted(m.key() for m in received) == sorted(
        [good, good, good, good, "engine-\u00e9".encode(), "engine-\u00e9".encode()]
    )
    with pytest.raises(RuntimeError, match="closed"):
        publisher.collect_engine_execution(doc, key=good)


@pytest.mark.parametrize("validate", [True, False])
def test_the_hot_path_sends_what_the_generic_path_sends(
    topics: JsonEngineConfig, validate: bool
) -> None:
    """`collect_*` (one function per kind) against `collect` with an on_delivery (the generic
    path): the same records for the payloads each path decides differently. Adversaries: an
    event with optional fields (the proof fails, its bytes decide), a str subclass (not
    proven: validated as the bytes a consumer reads), escapes in unvalidated bytes."""

    class Name(str):
        pass

    rng = random.Random(23)
    plain = event("engine_execution", rng, 0)
    optional = {**event("engine_execution", rng, 1), "stream": True, "finish_reasons": ["stop"]}
    subclass = {**event("engine_execution", rng, 2), "engine_id": Name("engine-sub")}
    escaped = json.dumps({**event("engine_execution", rng, 3), "output": 'a "b"'}).encode()
    payloads = [plain, optional, subclass, orjson.dumps(plain), escaped]
    ignore = lambda err, msg: None  # noqa: E731
    with Publisher(topics, validate=validate) as publisher:
        for payload in payloads:
            publisher.collect_engine_execution(payload)
            publisher.collect("engine_execution", payload, ignore)
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    records = sorted((m.value(), m.key() or b"") for m in received)
    assert records[0::2] == records[1::2]  # each payload twice, the same record
    assert len(records) == 2 * len(payloads)
    # Unvalidated, a dict's key is read from the dict: a str subclass there gives none.
    assert sum(not key for _v, key in records) == (0 if validate else 2)


def test_caller_errors(config: JsonEngineConfig) -> None:
    publisher = Publisher(config, validate=False)
    with pytest.raises(ValueError, match="unknown event type"):
        publisher.collect("aggregated_stats", b"{}")
    with pytest.raises(TypeError):
        publisher.collect_engine_execution(42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        publisher.collect_engine_execution('{"engine_id": "\ud800"}')  # cannot be UTF-8
    publisher.close()
    with pytest.raises(RuntimeError, match="closed"):
        publisher.collect_engine_execution(b"{}")
    publisher.flush()  # after close: nothing to wait for, no failure to raise
    with pytest.raises(ValueError):
        Publisher(config, delivery_timeout_s=0)


def test_a_subclass_keeps_its_own_collect(config: JsonEngineConfig) -> None:
    """The per-kind functions bound on each instance never hide a subclass's override."""
    seen: list[Any] = []

    class Counting(Publisher):
        def collect_engine_execution(self, payload: Any, *, key: Any = None) -> None:
            seen.append(payload)

    publisher = Counting(config, validate=False)
    try:
        publisher.collect_engine_execution(b"{}")
        assert seen == [b"{}"] and publisher.collect_training_sample != publisher.collect
    finally:
        publisher.close()


def test_on_delivery_reports_each_event_and_survives_a_failing_callback(
    topics: JsonEngineConfig,
) -> None:
    rng = random.Random(5)
    reports: list[tuple[KafkaError | None, Message]] = []

    def broken(err: KafkaError | None, msg: Message) -> None:
        raise RuntimeError("a bug in the caller's callback")

    with Publisher(topics) as publisher:
        for i in range(3):
            publisher.collect(
                "comparison_result",
                event("comparison_result", rng, i),
                lambda err, msg: reports.append((err, msg)),
            )
        publisher.collect("training_sample", event("training_sample", rng), broken)
    assert len(reports) == 3 and all(err is None for err, _ in reports)
    assert {msg.topic() for _, msg in reports} == {topic_name(topics, "comparison_result")}
    assert publisher.delivered == 4 and publisher.failed == 0


def test_reports_arrive_without_flush(topics: JsonEngineConfig) -> None:
    """A lone event's report is served by the poll thread: nobody has to call flush()."""
    rng = random.Random(14)
    arrived = threading.Event()
    with Publisher(topics) as publisher:
        publisher.collect(
            "engine_execution", event("engine_execution", rng), lambda err, msg: arrived.set()
        )
        assert arrived.wait(10)
        assert publisher.delivered == 1


def test_success_reports_off_counts_deliveries(topics: JsonEngineConfig) -> None:
    rng = random.Random(6)
    with Publisher(topics, success_reports=False) as publisher:
        assert not publisher.success_reports
        for i in range(50):
            publisher.collect_engine_execution(event("engine_execution", rng, i))
        with pytest.raises(ValueError, match="success_reports"):
            publisher.collect("engine_execution", event("engine_execution", rng), print)
        publisher.flush()
        assert publisher.delivered == 50
    assert len(read_topic(topics, topic_name(topics, "engine_execution"))) == 50
    with pytest.raises(ValueError):
        AsyncPublisher(topics, success_reports=False)


def test_async_publisher_awaits_deliveries(topics: JsonEngineConfig) -> None:
    rng = random.Random(7)
    sent = [event("engine_execution", rng, i) for i in range(20)]

    async def main() -> list[Message]:
        async with AsyncPublisher(topics) as publisher:
            with pytest.raises(ValidationError):
                await publisher.collect_engine_execution(invalid_execution(rng))
            delivered = await asyncio.gather(
                *(publisher.collect_engine_execution(e) for e in sent),
                publisher.collect_comparison_result(event("comparison_result", rng)),
                publisher.collect_training_sample(event("training_sample", rng)),
            )
            assert publisher.publisher.delivered == 22
            return list(delivered)

    delivered = asyncio.run(main())
    assert all(m.error() is None and m.offset() >= 0 for m in delivered)
    assert [m.key() for m in delivered[:20]] == [e["engine_id"].encode() for e in sent]
    assert delivered[20].topic() == topic_name(topics, "comparison_result")
    assert len(read_topic(topics, topic_name(topics, "engine_execution"))) == 20


def test_stopped_broker_fails_flush_within_the_bound(stopped: JsonEngineConfig) -> None:
    rng = random.Random(8)
    errors: list[tuple[str, KafkaError]] = []
    started = time.monotonic()
    publisher = Publisher(
        stopped, delivery_timeout_s=3, on_error=lambda kind, err: errors.append((kind, err))
    )
    for i in range(5):
        publisher.collect_engine_execution(event("engine_execution", rng, i))
    publisher.collect_training_sample(event("training_sample", rng))
    with pytest.raises(DeliveryError) as caught:
        publisher.flush()
    assert time.monotonic() - started < BOUND_S
    assert "6 events were not delivered" in str(caught.value)
    assert STOPPED in str(caught.value)  # the client's own error says where it could not go
    assert sorted(kind for kind, _ in errors) == ["engine_execution"] * 5 + ["training_sample"]
    assert publisher.failed == 6 and publisher.delivered == 0
    publisher.close()  # each failure is raised once: nothing new to report


def test_stopped_broker_fails_close_within_the_bound(stopped: JsonEngineConfig) -> None:
    rng = random.Random(9)
    errors: list[KafkaError] = []
    started = time.monotonic()
    publisher = Publisher(
        stopped, delivery_timeout_s=3, on_error=lambda kind, err: errors.append(err)
    )
    publisher.collect_comparison_result(event("comparison_result", rng))
    with pytest.raises(DeliveryError):
        publisher.close()
    assert time.monotonic() - started < BOUND_S
    assert len(errors) == 1 and publisher.failed == 1


def test_stopped_broker_a_short_close_timeout_still_reports_each_event(
    stopped: JsonEngineConfig,
) -> None:
    """Events still queued when close() gives up are purged and reported, never dropped."""
    rng = random.Random(10)
    errors: list[KafkaError] = []
    publisher = Publisher(
        stopped, delivery_timeout_s=30, on_error=lambda kind, err: errors.append(err)
    )
    for i in range(4):
        publisher.collect_engine_execution(event("engine_execution", rng, i))
    started = time.monotonic()
    with pytest.raises(DeliveryError):
        publisher.close(timeout=0.5)
    assert time.monotonic() - started < BOUND_S
    assert len(errors) == 4 and publisher.failed == 4


def test_stopped_broker_async_publisher_raises_within_the_bound(
    stopped: JsonEngineConfig,
) -> None:
    rng = random.Random(11)

    async def main() -> None:
        publisher = AsyncPublisher(stopped, delivery_timeout_s=3)
        with pytest.raises(DeliveryError) as caught:
            await publisher.collect_engine_execution(event("engine_execution", rng))
        assert caught.value.kafka_error is not None
        with pytest.raises(DeliveryError):  # the failure is raised by close() too
            await publisher.close()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < BOUND_S


def test_context_manager_flushes(topics: JsonEngineConfig) -> None:
    rng = random.Random(12)
    sent = [event("engine_execution", rng, i) for i in range(200)]
    with Publisher(topics) as publisher:
        for payload in sent:
            publisher.collect_engine_execution(payload)
    assert publisher.delivered == 200  # acknowledged before the with block ended
    received = read_topic(topics, topic_name(topics, "engine_execution"))
    assert sorted(m.value() for m in received) == sorted(orjson.dumps(e) for e in sent)


def test_context_manager_keeps_the_body_exception(stopped: JsonEngineConfig) -> None:
    rng = random.Random(13)
    publisher = Publisher(stopped, delivery_timeout_s=2)
    with pytest.raises(KeyError) as caught, publisher:
        publisher.collect_engine_execution(event("engine_execution", rng))
        raise KeyError("the body's own error")
    assert any("closing the Publisher" in note for note in caught.value.__notes__)
    assert publisher.failed == 1


@pytest.mark.parametrize(
    "payload",
    [
        b'{"engine_id":"e1","x":1}',
        b'{"engine_id": "e1"}',
        b'{"engine_id" : "e1"}',
        b'{"a":{"engine_id":"x"},"engine_id":"y"}',
        b'{"engine\\u005fid":"a","m":{"engine_id":"b"}}',
        b'{"engine_id":"a\\"b"}',
        b'{"k":"\\"engine_id\\":\\"x\\"","engine_id":"y"}',
        b'{"\\"engine_id":"a"}',
        b'{"engine_id":5}',
        b'{"other":"engine_id"}',
        b'{"engine_id":"\xc3\xa9"}',
        b"[]",
        b"",
    ],
)
def test_key_scan_never_disagrees_with_a_parse(payload: bytes) -> None:
    """The key found without parsing is the parsed top-level key, or there is none found."""
    found = _scan_key("engine_execution", payload)
    if found is None:
        return
    parsed = orjson.loads(payload)
    assert found == parsed["engine_id"].encode()
