"""The Validator: valid records pass, every bad payload is a ValidationError with a reason.

Property-based tests (hypothesis) generate valid events and mutations of them; the `jsonschema`
package serves as the reference that the mutations really are invalid.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
import random
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from sinks.files.buckets import MAX_TIME_MS
from streams import events
from streams.validation import KINDS, ValidationError, Validator, _fast_path, load_schema

TS = 1_764_300_000_000
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALIDATOR = Validator()
REFERENCE = {kind: Draft7Validator(load_schema(kind)) for kind in KINDS}
FAST = {kind: _fast_path(load_schema(kind)) for kind in KINDS}
AUTHORITY = {kind: fastjsonschema.compile(load_schema(kind)) for kind in KINDS}


def authority_accepts(kind: str, value: Any) -> bool:
    try:
        AUTHORITY[kind](value)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def execution(**changes: Any) -> dict[str, Any]:
    event = events.engine_execution(random.Random(1), "e1", TS)
    event.update(changes)
    return event


def comparison(**changes: Any) -> dict[str, Any]:
    event = events.comparison_result(random.Random(2), ["a", "b", "c"], TS)
    event.update(changes)
    return event


def sample(**changes: Any) -> dict[str, Any]:
    event = events.training_sample(random.Random(3), TS)
    event.update(changes)
    return event


def rejects(kind: str, payload: Any, validator: Validator = VALIDATOR) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validator.validate(kind, payload)
    error = info.value
    assert error.reason
    assert str(error) == error.message
    assert len(str(error)) <= 1024  # dead letters store it
    return error


# --- accepted inputs ----------------------------------------------------------------------


def test_bytes_str_dict_and_buffers_are_accepted() -> None:
    event = execution()
    raw = orjson.dumps(event)
    for payload in (raw, raw.decode(), event, bytearray(raw), memoryview(raw)):
        assert VALIDATOR.validate("engine_execution", payload) == event


def test_unknown_top_level_and_metrics_fields_are_kept() -> None:
    event = execution(region="eu-west-1", tags=["a", "b"], extra={"nested": {"deep": [1, 2]}})
    event["metrics"]["tokens"] = 120
    assert VALIDATOR.validate("engine_execution", orjson.dumps(event)) == event


def test_fractional_latency_and_integral_float_timestamp() -> None:
    event = execution()
    event["metrics"]["latency_ms"] = 0.25
    VALIDATOR.validate("engine_execution", event)


@pytest.mark.parametrize(
    ("timestamp", "hint"),
    [
        (1_780_000_000_000_000, "(microseconds?)"),  # a clock that counts microseconds
        (1_780_000_000_000_000_000, "(nanoseconds?)"),
        (MAX_TIME_MS + 1, "(microseconds?)"),  # the first millisecond of the year 10000
        (0, ""),  # the epoch itself, and before it
        (-86_400_000, ""),
    ],
)
def test_times_that_cannot_be_placed_have_a_reason_of_their_own(timestamp: int, hint: str) -> None:
    """The edge of the schema's range: a time in microseconds, nanoseconds, past the year
    9999 or before 1970 is `timestamp_range`, in validate, the Publisher and the worker."""
    for kind, field, event in (
        ("engine_execution", "timestamp", execution(timestamp=timestamp)),
        ("comparison_result", "timestamp", comparison(timestamp=timestamp)),
        ("training_sample", "created_at", sample(created_at=timestamp)),
    ):
        error = rejects(kind, orjson.dumps(event))
        assert (error.reason, error.path) == ("timestamp_range", field), kind
        assert str(error).endswith(f"not {timestamp}{' ' + hint if hint else ''}")


def test_the_last_millisecond_of_9999_is_placeable() -> None:
    assert VALIDATOR.validate("engine_execution", orjson.dumps(execution(timestamp=MAX_TIME_MS)))


def test_integers_spelt_as_floats_become_ints() -> None:
    """`1780000000000.0` is an integer to JSON Schema: it comes out an int, whatever the path
    taken, so that window keys and sums never see a float."""
    event = execution(timestamp=1_780_000_000_000.0)
    event["metrics"] |= {"input_tokens": 12.0, "output_tokens": 3}
    for payload in (event, orjson.dumps(event), orjson.dumps(event).decode()):
        parsed = VALIDATOR.validate("engine_execution", payload)
        assert type(parsed["timestamp"]) is int and parsed["timestamp"] == 1_780_000_000_000
        assert type(parsed["metrics"]["input_tokens"]) is int
        assert type(parsed["schema_version"]) is int


def test_comparison_without_optional_fields() -> None:
    event = comparison()
    del event["timestamp"]
    for candidate in event["candidates"]:
        candidate.pop("score", None)
    assert VALIDATOR.validate("comparison_result", event) == event


# --- schema errors: field path and rule ----------------------------------------------------


def test_negative_latency_names_path_and_rule() -> None:
    event = execution()
    event["metrics"]["latency_ms"] = -3
    error = rejects("engine_execution", event)
    assert (error.reason, error.path, error.rule) == ("schema", "metrics.latency_ms", "minimum")
    assert str(error) == "metrics.latency_ms must be >= 0"


@pytest.mark.parametrize(
    ("kind", "event", "message", "path"),
    [
        (
            "engine_execution",
            {k: v for k, v in execution().items() if k != "trace_id"},
            "trace_id is required",
            "trace_id",
        ),
        (
            "engine_execution",
            execution(timestamp="yesterday"),
            "timestamp must be integer, not string",
            "timestamp",
        ),
        (
            "engine_execution",
            execution(engine_id="x" * 257),
            "engine_id must be at most 256 characters long",
            "engine_id",
        ),
        (
            "engine_execution",
            execution(engine_id=""),
            "engine_id must be at least 1 characters long",
            "engine_id",
        ),
        (
            "engine_execution",
            execution(metrics={"latency_ms": 1, "memory_mb": 1, "cpu_percent": 1}),
            "metrics.success is required",
            "metrics.success",
        ),
        (
            "engine_execution",
            execution(metrics={"latency_ms": 1, "memory_mb": 1, "cpu_percent": 1, "success": 1}),
            "metrics.success must be boolean, not integer",
            "metrics.success",
        ),
        (
            "comparison_result",
            comparison(winner={"engine_id": "a", "score": 1.5}),
            "winner.score must be <= 1",
            "winner.score",
        ),
        (
            "comparison_result",
            comparison(winner={"engine_id": "a", "score": 0.5, "scroe": 1}),
            "winner has unexpected field(s): scroe",
            "winner",
        ),
        (
            "comparison_result",
            comparison(candidates=[]),
            "candidates must have at least 1 items",
            "candidates",
        ),
        (
            "comparison_result",
            comparison(
                candidates=[
                    {"engine_id": "a", "output": "x", "metrics": {}},
                    {"engine_id": "b", "output": "y", "metrics": {}, "score": -0.1},
                ],
                winner={"engine_id": "a", "score": 0.9},
            ),
            "candidates[1].score must be >= 0",
            "candidates[1].score",
        ),
        (
            "comparison_result",
            comparison(
                candidates=[{"engine_id": f"e{i}", "output": "", "metrics": {}} for i in range(65)],
                winner={"engine_id": "e0", "score": 0.9},
            ),
            "candidates must have at most 64 items",
            "candidates",
        ),
        (
            "training_sample",
            sample(tier="platinum"),
            "tier must be one of gold, silver, bronze",
            "tier",
        ),
        (
            "training_sample",
            sample(validation={"quality_score": 0.9}),
            "validation.validated is required",
            "validation.validated",
        ),
    ],
)
def test_schema_errors_name_field_and_rule(
    kind: str, event: dict[str, Any], message: str, path: str
) -> None:
    for payload in (event, orjson.dumps(event)):
        error = rejects(kind, payload)
        assert (error.reason, str(error), error.path) == ("schema", message, path)
    assert not REFERENCE[kind].is_valid(event)


def test_several_missing_fields_are_all_named() -> None:
    error = rejects("training_sample", {"sample_id": "s"})
    assert str(error).startswith("created_at, source_trace_id, tier")
    assert str(error).endswith("are required")


def test_unexpected_field_names_are_clipped_in_messages() -> None:
    event = comparison(winner={"engine_id": "a", "score": 0.5, "k" * 10_000: 1})
    error = rejects("comparison_result", event)
    assert str(error).startswith("winner has unexpected field(s): kkk")
    assert len(str(error)) < 200


def test_winner_must_be_a_candidate() -> None:
    event = comparison(winner={"engine_id": "zzz", "score": 0.9})
    error = rejects("comparison_result", orjson.dumps(event))
    assert (error.reason, error.path) == ("schema", "winner.engine_id")
    assert "winner.engine_id 'zzz' is not one of the candidates" in str(error)


def test_nan_in_a_dict_is_validated_as_the_null_it_serializes_to() -> None:
    event = execution()
    event["metrics"]["latency_ms"] = float("nan")
    error = rejects("engine_execution", event)
    assert str(error) == "metrics.latency_ms must be number, not null"


# --- malformed payloads: each its own reason -----------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b'{"a":1', b"{'a': 1}", b"NaN", b'{"a":1}{"b":2}', b"\x00", "  ", b'{"a":01}'],
)
def test_malformed_json(payload: bytes | str) -> None:
    error = rejects("engine_execution", payload)
    assert error.reason == "invalid_json"
    assert str(error).startswith("payload is not valid JSON")


@pytest.mark.parametrize(
    "payload",
    [b'{"engine_id": "\xff\xfe"}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}', '{"a": "\ud800"}'],
)
def test_not_utf8(payload: bytes | str) -> None:
    assert rejects("engine_execution", payload).reason == "not_utf8"


def test_lone_surrogate_in_a_dict_is_not_utf8() -> None:
    assert rejects("engine_execution", execution(input="\udc80")).reason == "not_utf8"


@pytest.mark.parametrize("payload", [b"[]", b"[1, 2]", b"1", b'"text"', b"null", b"true", "3.5"])
def test_not_an_object(payload: bytes | str) -> None:
    error = rejects("engine_execution", payload)
    assert error.reason == "not_object"
    assert "must be a JSON object" in str(error)


@pytest.mark.parametrize("payload", [42, None, ["a"], object()])
def test_not_bytes_str_or_dict(payload: Any) -> None:
    assert rejects("engine_execution", payload).reason == "not_object"


def test_too_large_is_checked_before_parsing() -> None:
    small = Validator(max_payload_bytes=1000)
    garbage = b"{" * 1001  # would be invalid_json if it were parsed
    for payload in (garbage, garbage.decode(), bytearray(garbage), memoryview(garbage)):
        error = rejects("engine_execution", payload, small)
        assert error.reason == "too_large"
        assert "1000" in str(error)


def test_too_large_counts_utf8_bytes_not_characters() -> None:
    small = Validator(max_payload_bytes=1000)
    event = execution(input="€" * 300, output="")  # 900 bytes of text in 300 characters
    assert len(json.dumps(event, ensure_ascii=False)) < 1000
    for payload in (json.dumps(event, ensure_ascii=False), event):
        assert rejects("engine_execution", payload, small).reason == "too_large"
    assert small.validate("engine_execution", execution(input="€" * 50, output=""))


def test_default_limit_is_one_mebibyte() -> None:
    event = execution(input="x" * (1024 * 1024))
    assert rejects("engine_execution", orjson.dumps(event)).reason == "too_large"
    event = execution(input="x" * (1024 * 1024 - 1000), output="")
    assert VALIDATOR.validate("engine_execution", orjson.dumps(event))


def _nested(depth: int) -> Any:
    """A JSON value with `depth` levels of containers, alternating arrays and objects."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("field", ["extra", "metrics"])
def test_max_depth_boundary(field: str) -> None:
    """The record is level 1: an extra field may hold max_depth - 1 levels, not more."""
    validator = Validator(max_depth=10)
    event = execution()
    holder = event if field == "extra" else event["metrics"]
    levels_left = 9 if field == "extra" else 8
    holder["x"] = _nested(levels_left)
    assert validator.validate("engine_execution", orjson.dumps(event))
    holder["x"] = _nested(levels_left + 1)
    for payload in (orjson.dumps(event), orjson.dumps(event).decode(), event):
        error = rejects("engine_execution", payload, validator)
        assert (error.reason, str(error)) == ("too_deep", "payload is nested deeper than 10 levels")


def test_deep_free_form_metrics_of_a_comparison() -> None:
    event = comparison()
    event["candidates"][0]["metrics"]["trace"] = _nested(70)
    assert rejects("comparison_result", orjson.dumps(event)).reason == "too_deep"


@pytest.mark.parametrize("depth", [65, 300, 1100, 100_000])
def test_deeply_nested(depth: int) -> None:
    event = execution()
    raw = orjson.dumps(event)[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
    assert rejects("engine_execution", raw).reason == "too_deep"


def test_deeply_nested_dict() -> None:
    assert rejects("engine_execution", execution(x=_nested(500))).reason == "too_deep"


def test_many_shallow_brackets_are_fine() -> None:
    event = execution(tags=[[i] for i in range(1000)], notes="{[" * 500)
    assert VALIDATOR.validate("engine_execution", orjson.dumps(event)) == event


def test_unknown_kind() -> None:
    assert rejects("engine_executions", orjson.dumps(execution())).reason == "unknown_kind"


def test_error_is_a_value_error_and_pickles() -> None:
    error = rejects("training_sample", orjson.dumps(sample(tier="x")))
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.reason, clone.message, clone.path, clone.rule) == (
        error.reason,
        error.message,
        error.path,
        error.rule,
    )


def test_validator_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Validator(max_payload_bytes=0)
    with pytest.raises(ValueError):
        Validator(max_depth=0)


# --- the fast path: only ever proves validity ----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_fast_path(kind: str) -> None:
    assert FAST[kind] is not None


def test_generated_events_take_the_fast_path() -> None:
    rng = random.Random(5)
    for i in range(200):
        assert FAST["engine_execution"](events.engine_execution(rng, "e1", TS + i))
        assert FAST["comparison_result"](events.comparison_result(rng, ["a", "b", "c"], TS + i))
        assert FAST["training_sample"](events.training_sample(rng, TS + i))


def test_fast_path_is_stricter_never_looser() -> None:
    """1.0 is an integer to JSON Schema: the fast path declines, fastjsonschema accepts."""
    event = execution(timestamp=float(TS))
    assert not FAST["engine_execution"](event)
    assert VALIDATOR.validate("engine_execution", event)["timestamp"] == TS


def test_fast_path_checks_optional_fields_whenever_present() -> None:
    """Adversary: a bad optional field beside exactly the required ones, or beside an unknown
    key: the fast path skips the optional fields only when an object has no key beyond the
    required ones."""
    good = execution()
    assert FAST["engine_execution"](good)
    for where, key, bad in (
        ("metrics", "input_tokens", -1),
        ("metrics", "time_to_first_chunk_ms", "slow"),
        (None, "stream", "yes"),
        (None, "conversation_id", ""),
    ):
        for extra in ({}, {"x-unknown": 1}):
            event = copy.deepcopy(good)
            target = event if where is None else event[where]
            target.update(extra)
            target[key] = bad
            assert not FAST["engine_execution"](event), (key, extra)
            with pytest.raises(ValidationError):
                VALIDATOR.validate("engine_execution", event)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a"},
        {"type": "object", "properties": {"a": {"type": "string", "format": "date-time"}}},
        {"maxLength": 3},
        {"type": "object", "additionalProperties": {"type": "string", "format": "email"}},
        {"type": "string", "enum": ["a", 1]},
        {"anyOf": [{"type": "string"}]},
        {"type": "array", "items": [{"type": "string"}]},
    ],
)
def test_fast_path_declines_keywords_it_does_not_know(schema: dict[str, Any]) -> None:
    assert _fast_path({"$schema": "http://json-schema.org/draft-07/schema#", **schema}) is None


def test_fast_path_checks_the_values_of_other_keys_against_additional_properties() -> None:
    fast = _fast_path(
        {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "additionalProperties": {"type": "object", "required": ["count"]},
        }
    )
    assert fast is not None
    assert fast({"n": 1, "a": {"count": 1}, "b": {"count": 2}})
    assert not fast({"n": 1, "a": {"count": 1}, "b": {}})
    assert not fast({"n": 1, "a": 3})
    assert fast({"n": 1})


def test_fast_path_of_type_lists() -> None:
    fast = _fast_path({"type": ["number", "null"], "minimum": 0, "maximum": 1})
    assert fast is not None
    assert [fast(x) for x in (None, 0, 0.5, 1, 1.5, -1, "0", True)] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


# --- property-based ------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=256)
texts = st.text(max_size=300)
non_negative = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.floats(min_value=0, max_value=1e12, allow_nan=False),
)
scores = st.floats(min_value=0, max_value=1, allow_nan=False)
epoch_ms = st.integers(min_value=1, max_value=MAX_TIME_MS)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=20).map(lambda k: f"x_{k}"), json_values, max_size=3
)

executions = st.builds(
    lambda extra, metrics_extra, **fields: {
        **extra,
        **fields,
        "metrics": {**metrics_extra, **fields["metrics"]},
    },
    extra=extra_fields,
    metrics_extra=extra_fields,
    schema_version=st.integers(1, 5),
    trace_id=ids,
    task_id=ids,
    engine_id=ids,
    engine_instance_id=ids,
    timestamp=epoch_ms,
    input=texts,
    output=texts,
    metrics=st.fixed_dictionaries(
        {
            "latency_ms": non_negative,
            "memory_mb": non_negative,
            "cpu_percent": non_negative,
            "success": st.booleans(),
        }
    ),
    status=st.text(max_size=30),
)


@st.composite
def comparisons(draw: st.DrawFn) -> dict[str, Any]:
    engine_ids = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    candidates = []
    for engine_id in engine_ids:
        candidate = {
            "engine_id": engine_id,
            "output": draw(texts),
            "metrics": draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3)),
        }
        if draw(st.booleans()):
            candidate["score"] = draw(scores)
        candidates.append(candidate)
    event = {
        **draw(extra_fields),
        "comparison_id": draw(ids),
        "query": draw(texts),
        "candidates": candidates,
        "winner": {"engine_id": draw(st.sampled_from(engine_ids)), "score": draw(scores)},
        "metrics": draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3)),
    }
    if draw(st.booleans()):
        event["timestamp"] = draw(epoch_ms)
    return event


samples = st.fixed_dictionaries(
    {
        "sample_id": ids,
        "created_at": epoch_ms,
        "source_trace_id": ids,
        "tier": st.sampled_from(["gold", "silver", "bronze"]),
        "input": texts,
        "output": texts,
        "validation": st.fixed_dictionaries({"quality_score": scores, "validated": st.booleans()}),
    }
)

seeded = st.builds(
    lambda kind, seed: (kind, _seeded_event(kind, seed)),
    st.sampled_from(["engine_execution", "comparison_result", "training_sample"]),
    st.integers(0, 2**32),
)


def _seeded_event(kind: str, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    if kind == "engine_execution":
        return events.engine_execution(rng, rng.choice(events.ENGINE_IDS), TS + seed)
    if kind == "comparison_result":
        return events.comparison_result(rng, events.ENGINE_IDS, TS + seed)
    return events.training_sample(rng, TS + seed)


any_event = st.one_of(
    executions.map(lambda e: ("engine_execution", e)),
    comparisons().map(lambda e: ("comparison_result", e)),
    samples.map(lambda e: ("training_sample", e)),
    seeded,
)


@EXAMPLES
@given(any_event)
def test_valid_events_are_accepted(kind_event: tuple[str, dict[str, Any]]) -> None:
    kind, event = kind_event
    REFERENCE[kind].validate(event)
    expected = orjson.loads(orjson.dumps(event))
    assert VALIDATOR.validate(kind, orjson.dumps(event)) == expected
    assert VALIDATOR.validate(kind, json.dumps(event)) == expected
    assert VALIDATOR.validate(kind, event) == expected


WRONG_TYPES: dict[str, list[Any]] = {
    "string": [1, None, True, [], {}],
    "integer": ["1", 1.5, None, True, []],
    "number": ["1", None, True, {}],
    "boolean": [1, "true", None, 0],
    "object": [[], "x", 1, None],
    "array": [{}, "x", None],
}


def _field_specs(
    schema: dict[str, Any], path: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(path, spec) of every field with a declared schema, array items at index 0."""
    found = []
    for key, spec in schema.get("properties", {}).items():
        found.append(((*path, key), spec))
        found.extend(_field_specs(spec, (*path, key)))
    if isinstance(schema.get("items"), dict):
        found.extend(_field_specs(schema["items"], (*path, 0)))
    return found


def _locate(event: Any, path: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """(container, key) of `path` in `event`, None when absent."""
    node = event
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    if (isinstance(node, dict) and path[-1] in node) or (
        isinstance(node, list) and len(node) > path[-1]
    ):
        return node, path[-1]
    return None


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """A valid event with one thing made invalid, the kind, and the field path it touches."""
    kind, event = draw(any_event)
    event = copy.deepcopy(event)
    schema = load_schema(kind)
    how = draw(st.sampled_from(["drop", "wrong_type", "special"]))
    if how == "drop":
        required = [
            (path, spec)
            for path, spec in _field_specs(schema)
            if _locate(event, path) is not None and _is_required(schema, path)
        ]
        path, _ = draw(st.sampled_from(required))
        container, key = _locate(event, path)
        del container[key]
        return kind, event, str(key)
    if how == "wrong_type":
        present = [(p, s) for p, s in _field_specs(schema) if _locate(event, p) is not None]
        path, spec = draw(st.sampled_from(present))
        container, key = _locate(event, path)
        if "enum" in spec:
            container[key] = draw(st.sampled_from(["platinum", "", 1, None]))
        else:
            container[key] = draw(st.sampled_from(WRONG_TYPES[spec["type"]]))
        return kind, event, str(path[0])
    # Domain-specific mutations of the issue: negative latency, score > 1, bad tier.
    if kind == "engine_execution":
        field = draw(st.sampled_from(["latency_ms", "memory_mb", "cpu_percent"]))
        event["metrics"][field] = draw(
            st.floats(max_value=-1e-9, allow_infinity=False)
            | st.integers(min_value=-(2**63), max_value=-1)  # JSON numbers orjson can write
        )
        return kind, event, f"metrics.{field}"
    if kind == "comparison_result":
        bad = draw(st.floats(min_value=1.0000001, allow_nan=False, allow_infinity=False))
        if draw(st.booleans()):
            event["winner"]["score"] = bad
            return kind, event, "winner.score"
        event["candidates"][0]["score"] = bad
        return kind, event, "candidates[0].score"
    event["tier"] = draw(
        st.text(max_size=10).filter(lambda t: t not in ("gold", "silver", "bronze"))
    )
    return kind, event, "tier"


def _is_required(schema: dict[str, Any], path: tuple[Any, ...]) -> bool:
    node = schema
    for key in path[:-1]:
        node = node["items"] if isinstance(key, int) else node["properties"][key]
    return isinstance(path[-1], str) and path[-1] in node.get("required", [])


@EXAMPLES
@given(mutations())
def test_mutations_are_rejected_with_a_reason(mutation: tuple[str, dict[str, Any], str]) -> None:
    kind, event, touched = mutation
    assert not REFERENCE[kind].is_valid(event), "the mutation should break the schema"
    for payload in (orjson.dumps(event), event):
        error = rejects(kind, payload)
        assert error.reason == "schema"
        assert error.path is not None and error.rule is not None
        head = touched.split(".")[0].split("[")[0]
        assert head in str(error), (touched, str(error))


@EXAMPLES
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_else(payload: bytes) -> None:
    for kind in KINDS:
        try:
            VALIDATOR.validate(kind, payload)
        except ValidationError as error:
            assert error.reason in {"invalid_json", "not_utf8", "not_object", "schema", "too_deep"}


@EXAMPLES
@given(st.text(max_size=500) | json_values.map(json.dumps))
def test_arbitrary_text_never_raises_anything_else(payload: str) -> None:
    for kind in KINDS:
        with contextlib.suppress(ValidationError):
            VALIDATOR.validate(kind, payload)


@EXAMPLES
@given(seeded, st.data())
def test_corrupted_valid_bytes_never_raise_anything_else(
    kind_event: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    kind, event = kind_event
    raw = bytearray(orjson.dumps(event))
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del raw[at]
        else:
            raw.insert(at, data.draw(st.sampled_from(b'{}[]",:\\0e-\xff\xc3')))
    with contextlib.suppress(ValidationError):
        VALIDATOR.validate(kind, bytes(raw))


schema_examples = st.sampled_from(
    [(kind, example) for kind in KINDS for example in load_schema(kind)["examples"]]
)


@st.composite
def perturbations(draw: st.DrawFn) -> tuple[str, Any]:
    """A valid record with any one field (known or not) replaced by an arbitrary JSON value."""
    kind, event = draw(any_event | schema_examples)
    event = copy.deepcopy(event)
    paths = [p for p, _ in _field_specs(load_schema(kind)) if _locate(event, p) is not None]
    value = draw(
        json_values
        | st.integers()
        | st.floats(allow_nan=False)
        | st.sampled_from([1.0, -0.0, 2**64, True])
    )
    if paths and draw(st.booleans()):
        container, key = _locate(event, draw(st.sampled_from(paths)))
        container[key] = value
    elif draw(st.booleans()):
        del event[draw(st.sampled_from(sorted(event)))]
    else:
        event = value
    return kind, event


@EXAMPLES
@given(st.one_of(perturbations(), mutations().map(lambda m: m[:2]), any_event))
def test_fast_path_never_accepts_what_the_schema_rejects(kind_value: tuple[str, Any]) -> None:
    kind, value = kind_value
    if FAST[kind](value):
        assert authority_accepts(kind, value)
        assert REFERENCE[kind].is_valid(value)


class Text(str):
    """A str subclass: orjson dumps it as a string, the fast path does not take it."""


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"engine_id": Text("e1")},  # a subclass: decided on the bytes
        {"timestamp": float(TS)},  # an integer spelt as a float: made an int, from the bytes
        {"timestamp": True},  # a bool is no integer
        {"metrics": {"latency_ms": float("nan"), "memory_mb": 1.0, "cpu_percent": 1.0,
                     "success": True}},  # NaN is dumped as null
        {"metrics": {"latency_ms": float("inf"), "memory_mb": 1.0, "cpu_percent": 1.0,
                     "success": True}},
        {"input": "x" * (1 << 20)},  # over the payload limit once dumped
        {"extra": (1, 2)},  # an unknown field: kept, a tuple dumped as a list
        {"finish_reasons": ("stop",)},  # a tuple where the schema wants an array
    ],
)  # fmt: skip
def test_a_dict_with_its_dump_is_judged_as_its_bytes_are(changes: dict[str, Any]) -> None:
    """The adversary: dict values that orjson dumps as something else (NaN, subclasses, floats
    for integers, tuples). The Publisher validates the dict itself only when the fast path
    proves it, else the bytes: the verdict is always the one the bytes get."""
    event = execution(**changes)
    raw = orjson.dumps(event)

    def verdict(run: Any) -> Any:
        try:
            return orjson.dumps(run())
        except ValidationError as exc:
            return exc.reason

    by_bytes = verdict(lambda: VALIDATOR.validate("engine_execution", raw))
    assert verdict(lambda: VALIDATOR.validate_dumped("engine_execution", event, raw)) == by_bytes
