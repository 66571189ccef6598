"""Documents generated from the schemas themselves (hypothesis-jsonschema: valid by
construction, the extremes of every range included), through a real worker with every reader
on. Nothing crashes, nothing is lost, nothing is doubled: each document is one line of its
channel, or its dead letters with their reasons, never an `internal` one."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from streams.topics import create_topics
from streams.validation import load_schema
from tests.conftest import ConfigFactory
from tests.test_aggregator import by_key
from tests.workers import WorkerProcess, lines_of, records

COUNT = 150  # documents of each kind
ID_FIELD = {
    "engine_execution": "trace_id",
    "comparison_result": "comparison_id",
    "training_sample": "sample_id",
}
SUFFIX = {
    "engine_execution": "engine-execution",
    "comparison_result": "comparison-result",
    "training_sample": "training-sample",
}


def generated(kind: str, count: int) -> list[dict[str, Any]]:
    """`count` documents of `kind` from its schema, the same ones on every run, each given
    an id of its own (copies are the dedupe's business, tested elsewhere)."""
    found: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(from_schema(load_schema(kind)))
    def collect(document: dict[str, Any]) -> None:
        found.append(document)

    collect()
    for n, document in enumerate(found):
        document[ID_FIELD[kind]] = f"gen-{kind[0]}-{n:05d}"
        if kind == "comparison_result":  # the outcome rules a schema cannot express
            _outcome(document)
    return found


def _outcome(document: dict[str, Any]) -> None:
    """Make a generated comparison's outcome valid: a winner that is a candidate, or a tie;
    a tie beside a winner only with two other engines among the candidates."""
    if "winner" not in document:
        document.setdefault("tie", "tie")
        return
    document["winner"]["engine_id"] = document["candidates"][0]["engine_id"]
    others = {c["engine_id"] for c in document["candidates"]} - {document["winner"]["engine_id"]}
    if len(others) < 2:
        document.pop("tie", None)


def as_json(document: dict[str, Any]) -> bytes:
    """Integers past 64 bits too (the schemas bound few numbers): the standard library's
    JSON, compact."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def mentions(letter: dict[str, Any], kind: str, document_id: str) -> bool:
    return f'"{ID_FIELD[kind]}":"{document_id}"' in letter["payload"]


@pytest.mark.slow
def test_documents_generated_from_the_schemas_are_each_sunk_or_dead_lettered_once(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "aggregation": {"window_minutes": 1, "grace_seconds": 1, "idle_seconds": 2},
            "channels": {c: {"auto_flush_seconds": 0.2} for c in SUFFIX},
        }
    )
    create_topics(cfg)
    documents = {kind: generated(kind, COUNT) for kind in SUFFIX}
    worker = WorkerProcess(path, tmp_path).start()
    try:
        # librdkafka's default partitioner (consistent_random), keyed by the ids: samples
        # are forwarded to their murmur2 home on the way.
        producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "linger.ms": 5})
        for kind, docs in documents.items():
            for document in docs:
                key = document[ID_FIELD[kind]].encode()
                producer.produce(cfg.kafka.topic_prefix + SUFFIX[kind], as_json(document), key)
        assert producer.flush(60) == 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(_settled(cfg, kind, docs) for kind, docs in documents.items()):
                break
            time.sleep(1)
        time.sleep(4)  # idle inputs hand their windows over; anything doubled comes too
        assert worker.alive(), worker.tail()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    letters = records(lines_of(cfg, "dead_letter"))
    assert not [d for d in letters if d["reason"] == "internal"], "an internal error"
    for kind, docs in documents.items():
        ids = Counter(r[ID_FIELD[kind]] for r in records(lines_of(cfg, kind)))
        for document in docs:
            document_id = document[ID_FIELD[kind]]
            reasons = [d["reason"] for d in letters if mentions(d, kind, document_id)]
            assert ids[document_id] + len(reasons) >= 1, f"{document_id} lost"
            assert ids[document_id] <= 1, f"{document_id} written {ids[document_id]} times"
            assert len(reasons) == len(set(reasons)), f"{document_id}: {reasons}"
            if ids[document_id] == 0:  # rejected: for a reason of the record's own
                assert set(reasons) & {"future", "timestamp_range", "too_large", "invalid_json"}
    by_key(lines_of(cfg, "aggregated_stats"))  # each window once


def _settled(cfg: Any, kind: str, docs: list[dict[str, Any]]) -> bool:
    """Every document of `kind` is a line or a dead letter by now."""
    ids = {r[ID_FIELD[kind]] for r in records(lines_of(cfg, kind))}
    letters = records(lines_of(cfg, "dead_letter"))
    return all(
        d[ID_FIELD[kind]] in ids or any(mentions(x, kind, d[ID_FIELD[kind]]) for x in letters)
        for d in docs
    )
