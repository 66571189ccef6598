"""Confluent's Schema Registry wire format (issue 27): values framed by confluent-kafka's own
JSONSerializer, with its in-memory registry client (`mock://`), reach the files as the JSON
alone; ids not allowed are dead letters (`unknown_schema_id`); a registry that does not
answer holds records back, never drops them; the Publisher writes the framing itself.

The worker is another process, so it cannot see the test's `mock://` client: it is given the
ids that client assigned (`allowed_ids`), or the client is served over real HTTP by
`RegistryServer` (the two requests a worker and a Publisher make), which can be taken down.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import schema_file
from streams import events
from streams.config import SchemaRegistryConfig
from streams.publisher import Publisher
from streams.readers.failures import RegistryUnavailable
from streams.readers.route import LocalRecord, Parsed, TopicRoute
from streams.readers.schema_ids import SchemaIds, frame
from streams.topics import create_topics
from streams.validation import ValidationError, Validator
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, lines_of, produce, wait_for_lines

UNREGISTERED = 424_242  # an id no registry of these tests ever assigned


class RegistryServer:
    """confluent-kafka's MockSchemaRegistryClient served over HTTP: `GET /schemas/ids/N` (a
    worker's lookup) and `POST /subjects/S/versions` (a Publisher's registration); while
    `down`, every request is answered 503, as by a registry that is failing."""

    def __init__(self) -> None:
        self.client = SchemaRegistryClient.new_client({"url": "mock://registry"})
        self.down = False
        self.lookups = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server.lookups += 1
                m = re.match(r"^/schemas/ids/(\d+)", self.path)
                if server.down or m is None:
                    self._reply(503, {"error_code": 50301, "message": "unavailable"})
                    return
                try:
                    schema = server.client.get_schema(int(m.group(1)))
                except Exception:
                    self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                self._reply(200, {"schema": schema.schema_str, "schemaType": schema.schema_type})

            def do_POST(self) -> None:
                m = re.match(r"^/subjects/([^/?]+)/versions", self.path)
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.down or m is None:
                    self._reply(503, {"error_code": 50301, "message": "unavailable"})
                    return
                schema = Schema(body["schema"], body.get("schemaType", "AVRO"))
                self._reply(200, {"id": server.client.register_schema(m.group(1), schema)})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    server = RegistryServer()
    yield server
    server.close()


def serializer(client: SchemaRegistryClient, kind: str = "engine_execution") -> JSONSerializer:
    """confluent-kafka's own JSON serializer, with the bundled schema of `kind`."""
    return JSONSerializer(schema_file(kind).read_text(), client)


def framed_executions(
    client: SchemaRegistryClient, topic: str, n: int, seed: int
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """n executions and their values as JSONSerializer frames them (registering the schema)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    docs = [events.engine_execution(rng, f"e{i % 5}", now + i) for i in range(n)]
    to_value = serializer(client)
    context = SerializationContext(topic, MessageField.VALUE)
    return docs, [to_value(doc, context) for doc in docs]


def schema_id(value: bytes) -> int:
    return int.from_bytes(value[1:5], "big")


class Taken:
    """A reader that keeps what the route hands it."""

    def __init__(self) -> None:
        self.items: list[Parsed] = []

    def on_parsed(self, partition: int, items: list[Parsed]) -> None:
        self.items += items


def route(settings: SchemaRegistryConfig | None) -> tuple[TopicRoute, Taken]:
    ids = SchemaIds(settings) if settings is not None else None
    r = TopicRoute("t", "engine_execution", Validator(), None, ids)
    taken = Taken()
    r.readers.append(taken)
    return r, taken


def feed(r: TopicRoute, values: list[bytes]) -> None:
    r.on_records(0, [LocalRecord(n, v) for n, v in enumerate(values)])


# -- the record's edge, without a broker -----------------------------------------------------


def test_serializer_framing_is_removed_and_an_unknown_id_is_a_dead_letter() -> None:
    """Adversary: values in Confluent's wire format, some with an id nobody allowed, one
    framed but schema-invalid, one cut after the magic byte."""
    client = SchemaRegistryClient.new_client({"url": "mock://edge"})
    docs, values = framed_executions(client, "t", 3, seed=1)
    allowed = schema_id(values[0])
    bad = dict(docs[0], metrics={**docs[0]["metrics"], "latency_ms": -1})
    others = [
        frame(UNREGISTERED, orjson.dumps(docs[1])),
        frame(allowed, orjson.dumps(bad)),
        b"\x00\x00\x01",
    ]
    r, taken = route(SchemaRegistryConfig(allowed_ids=[allowed]))
    feed(r, [*values, *others])
    good, rest = taken.items[:3], taken.items[3:]
    for (record, parsed, error), doc, value in zip(good, docs, values, strict=True):
        assert error is None and parsed == doc
        assert record.value() == value[5:] and orjson.loads(record.value()) == doc
    reasons = [error.reason for _record, _parsed, error in rest]
    assert reasons == ["unknown_schema_id", "schema", "invalid_json"]
    assert [record.value() for record, _p, _e in rest] == others  # dead letters keep framing
    assert str(UNREGISTERED) in str(rest[0][2])


def test_framed_values_without_schema_registry_settings_are_refused_by_name() -> None:
    """Adversary: a producer switched to Confluent's serializer before anyone configured
    `kafka.schema_registry`: each record is a dead letter whose message names the keys."""
    client = SchemaRegistryClient.new_client({"url": "mock://unset"})
    _docs, values = framed_executions(client, "t", 2, seed=2)
    r, taken = route(None)
    feed(r, values)
    errors = [error for _r, _p, error in taken.items]
    assert all(e is not None and e.reason == "unknown_schema_id" for e in errors)
    assert "kafka.schema_registry.url" in str(errors[0])


def test_registry_lookups_are_cached_and_a_registry_down_raises_never_drops(
    registry: RegistryServer,
) -> None:
    """Adversary: the registry fails (503) for an id not seen yet: the batch raises
    RegistryUnavailable (the worker rolls back and reads it again), no record is judged.
    Ids asked once are not asked again, whatever the registry does then."""
    docs, values = framed_executions(registry.client, "t", 4, seed=3)
    unknown = frame(UNREGISTERED, orjson.dumps(docs[0]))
    r, taken = route(SchemaRegistryConfig(url=registry.url, timeout_seconds=5))
    registry.down = True
    with pytest.raises(RegistryUnavailable, match="did not answer"):
        feed(r, values)
    assert taken.items == []
    registry.down = False
    feed(r, [*values, unknown])
    assert [parsed for _r, parsed, _e in taken.items[:4]] == docs
    assert taken.items[4][2] is not None and taken.items[4][2].reason == "unknown_schema_id"
    asked = registry.lookups
    registry.down = True  # known and unknown ids alike come from the cache now
    feed(r, [*values, unknown])
    assert registry.lookups == asked and len(taken.items) == 10


def test_publisher_frames_with_publish_ids_and_refuses_a_type_without_one() -> None:
    """Adversary: `publish` on with ids for some types only and no registry to ask: the
    Publisher refuses to start, naming the keys; with every id given it frames each value
    with its type's id, after validating the JSON alone (an invalid one is never sent)."""
    from streams.config import ConfigError, JsonEngineConfig, KafkaConfig

    def config(ids: dict[str, int]) -> JsonEngineConfig:
        registry = SchemaRegistryConfig(publish=True, publish_ids=ids)
        return JsonEngineConfig(kafka=KafkaConfig(schema_registry=registry))

    with pytest.raises(ConfigError, match="no schema id for training_sample"):
        Publisher(config({"engine_execution": 7, "comparison_result": 8}))
    ids = {"engine_execution": 7, "comparison_result": 8, "training_sample": 9}
    publisher = Publisher(config(ids), delivery_timeout_s=1)
    try:
        doc = events.engine_execution(random.Random(6), "e1", 1_800_000_000_000)
        _topic, value, key = publisher._prepare("engine_execution", doc)
        assert value == frame(7, orjson.dumps(doc)) and key == b"e1"
        assert publisher._prepare("engine_execution", doc, "e1")[1:] == (value, b"e1")
        with pytest.raises(ValueError, match="disagrees"):  # key= as unframed
            publisher._prepare("engine_execution", doc, b"e2")
        with pytest.raises(ValidationError):
            publisher._prepare("engine_execution", {**doc, "metrics": {}})
    finally:
        publisher.close()


# -- through real workers ------------------------------------------------------------------


@pytest.mark.slow
def test_serializer_records_through_a_worker_killed_midway(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: records framed by confluent-kafka's JSONSerializer, mixed with framed
    records of an id not allowed, and a SIGKILL of the worker while it reads them. Every
    line is the serializer's JSON document, byte for byte, exactly once; every record of
    the unknown id is exactly one dead letter, with its framed payload."""
    client = SchemaRegistryClient.new_client({"url": "mock://worker"})
    path, cfg = make_config({"channels": {"engine_execution": {"auto_flush_seconds": 0.2}}})
    topic = cfg.kafka.topic_prefix + "engine-execution"
    docs, values = framed_executions(client, topic, 4000, seed=4)
    path, cfg = make_config(
        {
            "kafka": {"schema_registry": {"allowed_ids": [schema_id(values[0])]}},
            "channels": {"engine_execution": {"auto_flush_seconds": 0.2, "buffer_size": 300}},
        }
    )
    create_topics(cfg)
    unknown = [frame(UNREGISTERED, orjson.dumps({"n": i})) for i in range(40)]
    mixed = list(values)
    for i, value in enumerate(unknown):
        mixed.insert(i * 100, value)
    worker = WorkerProcess(path, tmp_path).start()
    try:
        produce(cfg, "engine-execution", mixed[:2000])
        wait_for_lines(cfg, "engine_execution", 300, timeout=60)
        worker.kill()
        produce(cfg, "engine-execution", mixed[2000:])
        worker.start()
        wait_for_lines(cfg, "engine_execution", len(docs), timeout=120)
        wait_for_lines(cfg, "dead_letter", len(unknown), timeout=60)
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    lines = lines_of(cfg, "engine_execution")
    by_trace = {orjson.loads(line)["trace_id"]: line for line in lines}
    assert len(lines) == len(by_trace) == len(docs), f"{len(lines)} lines of {len(docs)}"
    for doc, value in zip(docs, values, strict=True):
        assert by_trace[doc["trace_id"]] == value[5:]
    letters = [orjson.loads(line) for line in lines_of(cfg, "dead_letter")]
    assert len(letters) == len({(d["partition"], d["offset"]) for d in letters}) == len(unknown)
    assert {d["reason"] for d in letters} == {"unknown_schema_id"}
    assert sorted(d["payload"].encode() for d in letters) == sorted(unknown)


@pytest.mark.slow
def test_publisher_framing_and_a_registry_that_was_down(
    make_config: ConfigFactory, tmp_path: Path, registry: RegistryServer
) -> None:
    """Adversary: the registry is down (503) when the worker meets the framed records; it
    must hold them back (no line, no dead letter), then take them all once the registry
    answers. The records come from our own Publisher with `schema_registry.publish` (it
    registered the bundled schema at the registry), so confluent-kafka's JSONDeserializer
    reads them back too."""
    path, cfg = make_config(
        {
            "kafka": {
                "schema_registry": {"url": registry.url, "publish": True, "timeout_seconds": 2}
            },
            "channels": {"engine_execution": {"auto_flush_seconds": 0.2}},
        }
    )
    create_topics(cfg)
    rng = random.Random(5)
    now = int(time.time() * 1000)
    docs = [events.engine_execution(rng, f"e{i % 5}", now + i) for i in range(500)]
    with Publisher(cfg) as publisher:
        for doc in docs:
            publisher.collect_engine_execution(doc)
    unknown = [frame(UNREGISTERED, orjson.dumps(doc)) for doc in docs[:5]]
    produce(cfg, "engine-execution", unknown)
    registry.down = True
    worker = WorkerProcess(path, tmp_path).start()
    try:
        deadline = time.monotonic() + 30
        while b"schema registry unavailable" not in worker.log():
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        time.sleep(2)
        assert lines_of(cfg, "engine_execution") == [] and lines_of(cfg, "dead_letter") == []
        registry.down = False
        wait_for_lines(cfg, "engine_execution", len(docs), timeout=90)
        wait_for_lines(cfg, "dead_letter", len(unknown), timeout=60)
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    got = sorted(orjson.loads(line)["trace_id"] for line in lines_of(cfg, "engine_execution"))
    assert got == sorted(doc["trace_id"] for doc in docs)
    letters = [orjson.loads(line) for line in lines_of(cfg, "dead_letter")]
    assert [d["reason"] for d in letters] == ["unknown_schema_id"] * len(unknown)
    assert read_back(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, registry) == sorted(
        docs, key=lambda d: d["trace_id"]
    )


def read_back(bootstrap: str, prefix: str, registry: RegistryServer) -> list[dict[str, Any]]:
    """The topic's framed values as confluent-kafka's JSONDeserializer reads them (the ids
    the Publisher wrote, resolved by the registry it registered with)."""
    topic = prefix + "engine-execution"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{prefix}read-back"}
        | {"auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    to_dict = JSONDeserializer(None, schema_registry_client=registry.client)
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            messages = consumer.consume(1000, 1.0)
            for m in messages:
                if m.error() is None and schema_id(m.value()) != UNREGISTERED:
                    context = SerializationContext(topic, MessageField.VALUE)
                    found.append(to_dict(m.value(), context))
            if len(found) >= 500 and not messages:
                break
    finally:
        consumer.close()
    return sorted(found, key=lambda d: d["trace_id"])
