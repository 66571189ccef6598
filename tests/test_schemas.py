"""The bundled schemas: valid draft-07, self-documenting, and faithful to the Contract.

The `jsonschema` package is the reference implementation here: whatever our fastjsonschema-based
Validator accepts, jsonschema must accept too, so the schema files mean the same to any tool.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft7Validator

from schemas import schema_file
from streams import events
from streams.validation import KINDS, ValidationError, Validator, load_schema

BASE_ID = "https://json-engine.dev/schemas/v1/"
TS = 1_764_300_000_000

# Required fields, straight from DESIGN.md → Contract (Event types, Aggregates) and issue 3.
REQUIRED = {
    "engine_execution": {
        "schema_version",
        "trace_id",
        "task_id",
        "engine_id",
        "engine_instance_id",
        "timestamp",
        "input",
        "output",
        "metrics",
        "status",
    },
    # `winner` is required unless `tie` is given (issue 28): a rule of the validator, below
    "comparison_result": {"comparison_id", "query", "candidates", "metrics"},
    "training_sample": {
        "sample_id",
        "created_at",
        "source_trace_id",
        "tier",
        "input",
        "output",
        "validation",
    },
    "aggregated_stats": {
        "schema_version",
        "engine_id",
        "window_start",
        "window_end",
        "count",
        "success_count",
        "success_rate",
        "latency_ms",
        "quality",
        "comparisons",
    },
    "dead_letter": {
        "schema_version",
        "channel",
        "topic",
        "partition",
        "offset",
        "error",
        "payload",
        "payload_truncated",
        "received_at",
    },
    "alerts": {"schema_version", "alert_id", "engine_id", "window_start", "window_end", "findings"},
}

AGGREGATE_EXAMPLE = {  # the record of DESIGN.md → Aggregates, verbatim
    "schema_version": 1,
    "engine_id": "e1",
    "window_start": 1764300000000,
    "window_end": 1764300060000,
    "count": 812,
    "success_count": 790,
    "success_rate": 0.9729,
    "latency_ms": {"min": 3, "max": 930, "avg": 41.2, "p50": 30.1, "p95": 120.4, "p99": 410.0},
    "quality": {"count": 57, "mean": 0.81},
    "comparisons": {"count": 60, "wins": 21, "win_rate": 0.35},
}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.fixture(scope="module")
def reference() -> dict[str, Draft7Validator]:
    return {kind: Draft7Validator(load_schema(kind)) for kind in KINDS}


def _subschemas(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property schema, with its field path (array items as `[]`)."""
    for key, spec in node.get("properties", {}).items():
        yield f"{path}{key}", spec
        yield from _subschemas(spec, f"{path}{key}.")
    items = node.get("items")
    if isinstance(items, dict):
        yield f"{path[:-1]}[]", items
        yield from _subschemas(items, f"{path[:-1]}[].")


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft7(kind: str) -> None:
    schema = load_schema(kind)
    Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_file_is_plain_json_in_the_package(kind: str) -> None:
    text = schema_file(kind).read_text(encoding="utf-8")
    assert json.loads(text) == load_schema(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_documents_itself(kind: str) -> None:
    schema = load_schema(kind)
    assert schema["$id"] == f"{BASE_ID}{kind}.json"
    assert schema["title"].strip()
    assert len(schema["description"]) > 40
    undocumented = [path for path, spec in _subschemas(schema) if not spec.get("description")]
    assert not undocumented, f"fields without a description: {undocumented}"


@pytest.mark.parametrize("kind", KINDS)
def test_required_fields_are_the_contract(kind: str) -> None:
    schema = load_schema(kind)
    assert set(schema["required"]) == REQUIRED[kind]
    assert set(schema["properties"]) >= REQUIRED[kind]
    assert schema["type"] == "object"


@pytest.mark.parametrize("kind", KINDS)
def test_strings_and_arrays_are_bounded(kind: str) -> None:
    """Length limits stop absurd payloads: every string and array has a maximum."""
    for path, spec in _subschemas(load_schema(kind)):
        types = spec.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types and "enum" not in spec:
            assert "maxLength" in spec, f"{kind}: {path} has no maxLength"
        if "array" in types:
            assert "maxItems" in spec, f"{kind}: {path} has no maxItems"


def test_ids_are_limited_to_256_characters() -> None:
    ids = {
        "engine_execution": ["trace_id", "task_id", "engine_id", "engine_instance_id"],
        "comparison_result": ["comparison_id"],
        "training_sample": ["sample_id", "source_trace_id"],
        "aggregated_stats": ["engine_id"],
    }
    for kind, fields in ids.items():
        properties = load_schema(kind)["properties"]
        for name in fields:
            assert properties[name]["maxLength"] == 256
            assert properties[name]["minLength"] == 1


def test_obvious_ranges() -> None:
    execution = load_schema("engine_execution")["properties"]
    for name in ("latency_ms", "memory_mb", "cpu_percent"):
        assert execution["metrics"]["properties"][name]["minimum"] == 0
    assert execution["timestamp"]["type"] == "integer"
    assert execution["timestamp"]["minimum"] == 1
    comparison = load_schema("comparison_result")["properties"]
    for spec in (
        comparison["winner"]["properties"]["score"],
        comparison["candidates"]["items"]["properties"]["score"],
    ):
        assert (spec["minimum"], spec["maximum"]) == (0, 1)
    sample = load_schema("training_sample")["properties"]
    assert sample["tier"]["enum"] == ["gold", "silver", "bronze"]
    assert sample["created_at"]["minimum"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_examples_are_valid(
    kind: str, validator: Validator, reference: dict[str, Draft7Validator]
) -> None:
    examples = load_schema(kind)["examples"]
    assert examples
    for example in examples:
        reference[kind].validate(example)
        assert validator.validate(kind, example) == example


def test_design_aggregate_record_is_valid(
    validator: Validator, reference: dict[str, Draft7Validator]
) -> None:
    empty_quality = {**AGGREGATE_EXAMPLE, "quality": {"count": 0, "mean": None}}
    for record in (AGGREGATE_EXAMPLE, empty_quality):
        reference["aggregated_stats"].validate(record)
        validator.validate("aggregated_stats", record)
    with pytest.raises(ValidationError, match=r"latency_ms\.p99 must be number, not null"):
        bad = {**AGGREGATE_EXAMPLE, "latency_ms": {**AGGREGATE_EXAMPLE["latency_ms"], "p99": None}}
        validator.validate("aggregated_stats", bad)


def _generated(kind: str, rng: random.Random, i: int) -> dict[str, Any]:
    if kind == "engine_execution":
        return events.engine_execution(rng, rng.choice(events.ENGINE_IDS), TS + i)
    if kind == "comparison_result":
        return events.comparison_result(rng, events.ENGINE_IDS, TS + i)
    return events.training_sample(rng, TS + i)


@pytest.mark.parametrize("kind", ["engine_execution", "comparison_result", "training_sample"])
def test_generated_events_are_valid_under_both_validators(
    kind: str, validator: Validator, reference: dict[str, Draft7Validator]
) -> None:
    rng = random.Random(f"schemas-{kind}")
    for i in range(300):
        event = _generated(kind, rng, i)
        reference[kind].validate(event)
        raw = json.dumps(event).encode()
        assert validator.validate(kind, raw) == event


def test_generated_events_are_reproducible_and_realistic() -> None:
    first = [events.engine_execution(random.Random(7), "e1", TS) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(8)
    sizes = [len(json.dumps(events.engine_execution(rng, "e1", TS))) for _ in range(500)]
    assert 350 <= sum(sizes) / len(sizes) <= 700
    comparison = events.comparison_result(random.Random(9), ["a", "b"], TS)
    assert {c["engine_id"] for c in comparison["candidates"]} == {"a", "b"}
    assert comparison["winner"]["engine_id"] in {"a", "b"}
