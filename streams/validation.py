"""Validation of event payloads against the bundled JSON Schemas (schemas/v1).

The schemas are compiled once (fastjsonschema generates plain Python per schema), payloads are
parsed with orjson, and every way a payload can be bad ends in one exception type,
`ValidationError`, whose `reason` is a short code (for counters and dead letters) and whose
message names the field path and the rule (`metrics.latency_ms must be >= 0`).

Cheap checks come first and expensive ones only when needed, because this runs for every
consumed record: the size is checked before parsing (orjson itself stops at 1024 levels), the
schema next, then the nesting depth against `max_depth`, then rules a schema cannot express
(a comparison's winner, unless it is a tie, must be one of its candidates).

- Schema: a predicate generated from the same schema (`_fast_path`) accepts the ordinary valid
  record in about a quarter of fastjsonschema's time; it can only say "certainly valid", and
  anything else goes to the fastjsonschema validator, which decides and words the error.
- Depth: free for a record holding only its schema's fields (the lengths of its objects prove
  it, see `_shallow_proof`); otherwise brackets are counted, and the parsed object is walked
  only when there are more than `max_depth` of them. A payload both too deep and
  schema-invalid is reported as `schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import fastjsonschema
import orjson
from orjson import loads as _loads

from schemas import schema_file
from sinks.files.buckets import MAX_TIME_MS, TIME_FIELD

KINDS: Final = (
    "engine_execution",
    "comparison_result",
    "training_sample",
    "aggregated_stats",
    "dead_letter",
    "alerts",
)
"""Every record kind with a bundled schema, in the order of the Contract."""

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
DEFAULT_MAX_DEPTH: Final = 64

# Reason codes, the machine-friendly part of a ValidationError.
INVALID_JSON: Final = "invalid_json"
NOT_UTF8: Final = "not_utf8"
TOO_LARGE: Final = "too_large"
TOO_DEEP: Final = "too_deep"
NOT_OBJECT: Final = "not_object"
SCHEMA: Final = "schema"
UNKNOWN_KIND: Final = "unknown_kind"
TIMESTAMP_RANGE: Final = "timestamp_range"

# Per kind: compiled schema, its fast path, constant-time shallowness proof, semantic check,
# and the paths of its integer fields.
_Kind = tuple[
    Callable[[Any], Any],
    Callable[[Any], bool] | None,
    Callable[[dict], bool],
    Callable[[dict], None] | None,
    tuple[tuple[str, ...], ...],
]

_JSON_TYPE_NAMES: Final = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


class ValidationError(ValueError):
    """A payload that is not a valid record of its kind.

    `reason` is a short code (invalid_json, not_utf8, too_large, too_deep, not_object, schema,
    unknown_kind); `path` and `rule` name the offending field and schema keyword for `schema`
    errors (None otherwise). `str(error)` is the human-readable message.
    """

    def __init__(
        self, reason: str, message: str, *, path: str | None = None, rule: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.path = path
        self.rule = rule

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are lost by the default pickling of exceptions.
        return (_rebuild_error, (self.reason, self.message, self.path, self.rule))


def _rebuild_error(
    reason: str, message: str, path: str | None, rule: str | None
) -> ValidationError:
    return ValidationError(reason, message, path=path, rule=rule)


def load_schema(kind: str) -> dict[str, Any]:
    """The bundled draft-07 schema of `kind`, as a dict."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    return orjson.loads(schema_file(kind).read_bytes())


class Validator:
    """Validates payloads of every kind; build one at start-up and share it (it is stateless).

    `max_payload_bytes` bounds the UTF-8 size of a payload (checked before parsing; for dicts
    the size of their orjson serialization); `max_depth` bounds the nesting of objects and
    arrays (the record object itself is depth 1).
    """

    def __init__(
        self,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if max_payload_bytes < 1 or max_depth < 1:
            raise ValueError("max_payload_bytes and max_depth must be positive")
        self.max_payload_bytes = max_payload_bytes
        self.max_depth = max_depth
        self._schemas: dict[str, dict[str, Any]] = {kind: load_schema(kind) for kind in KINDS}
        self._kinds: dict[str, _Kind] = {}
        self._proofs: dict[str, Callable[[dict], bool]] = {}
        for kind, schema in self._schemas.items():
            shallow = _shallow_proof(schema, max_depth)
            semantic = _check_outcome if kind == "comparison_result" else None
            self._kinds[kind] = (
                fastjsonschema.compile(schema, use_formats=False),
                _fast_path(schema),
                eval(f"lambda v0: {shallow}"),
                semantic,
                _integer_paths(schema),
            )
            self._proofs[kind] = _proof(_fast_path(schema, shallow), semantic)

    def schema(self, kind: str) -> dict[str, Any]:
        """The schema `kind` is validated against (do not mutate it)."""
        return self._schemas[kind]

    def validate(self, kind: str, payload: bytes | bytearray | memoryview | str | dict) -> dict:
        """Parse and validate `payload` as a record of `kind`; return the parsed object.

        A dict is serialized with orjson and the result parsed back, so what is validated and
        returned is what a consumer of its JSON will see (NaN would become null, for one); a
        caller that needs the bytes too can serialize first and pass them instead. Raises
        ValidationError, and nothing else, whatever the payload.
        """
        entry = self._kinds.get(kind)
        if entry is None:
            raise ValidationError(
                UNKNOWN_KIND, f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        check, fast, shallow, semantic, integers = entry
        # The hot path (bytes from Kafka) is inlined; everything else goes through _load.
        if type(payload) is bytes and len(payload) <= self.max_payload_bytes:
            raw: bytes | str = payload
            try:
                obj = _loads(payload)
            except orjson.JSONDecodeError as exc:
                raise _decode_error(exc, self.max_depth) from None
        else:
            raw, obj = self._load(payload)
        if type(obj) is not dict:
            raise ValidationError(
                NOT_OBJECT, f"payload must be a JSON object, not {_json_type(obj)}"
            )
        if fast is None or not fast(obj):  # the fast path only ever proves validity
            try:
                check(obj)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise _schema_error(exc, TIME_FIELD.get(kind)) from None
            _as_integers(obj, integers)  # the fast path proved they are ints already
        if not shallow(obj):
            self._check_depth(obj, raw)
        if semantic is not None:
            semantic(obj)
        return obj

    def validate_dumped(self, kind: str, obj: dict, raw: bytes) -> dict:
        """Validate a dict and `raw`, its orjson dump (the Publisher sends those bytes).

        When the fast path proves the dict valid (`proof`), the dict is what `raw` decodes to:
        the fast path accepts exact types only (a str, not a subclass; an int, not a bool or
        1.0; a finite float within its bounds), so no parse is needed. Anything else is decided
        on the bytes by `validate`, as a consumer will read them. Raises ValidationError."""
        proven = self._proofs.get(kind)
        if proven is not None and len(raw) <= self.max_payload_bytes and proven(obj):
            return obj
        return self.validate(kind, raw)

    def proof(self, kind: str) -> Callable[[dict], bool]:
        """The test `validate_dumped` starts with, for a caller that validates many dicts of
        one kind: True proves a dict valid (its schema, depth and the rules beyond the schema)
        when its orjson dump is within `max_payload_bytes`; False decides nothing (validate
        the dump then). Raises ValidationError for a dict that breaks a rule beyond the
        schema. KeyError for an unknown kind."""
        return self._proofs[kind]

    def _load(self, payload: object) -> tuple[bytes | str, Any]:
        """Size check and parse of every payload but bytes within the limit."""
        limit = self.max_payload_bytes
        if isinstance(payload, bytes | bytearray | memoryview):
            size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
            if size > limit:
                raise ValidationError(
                    TOO_LARGE, f"payload is {size} bytes, more than the limit of {limit}"
                )
            raw: bytes | str = bytes(payload)
        elif isinstance(payload, str):
            _check_str_size(payload, limit)
            raw = payload
        elif isinstance(payload, dict):
            # Validate what a consumer will see: NaN becomes null, tuples lists, and so on.
            raw = _dump(payload, self.max_depth)
            if len(raw) > limit:
                raise ValidationError(
                    TOO_LARGE, f"payload is {len(raw)} bytes, more than the limit of {limit}"
                )
        else:
            raise ValidationError(
                NOT_OBJECT, f"payload must be bytes, str or dict, not {type(payload).__name__}"
            )
        try:
            return raw, _loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _decode_error(exc, self.max_depth) from None

    def _check_depth(self, obj: dict, raw: bytes | bytearray | str) -> None:
        """Raise too_deep if obj nests deeper than max_depth; cheap when few brackets."""
        if isinstance(raw, str):
            brackets = raw.count("{") + raw.count("[")
        else:
            brackets = raw.count(b"{") + raw.count(b"[")
        # Each level needs its own opening bracket, so few brackets prove shallowness.
        if brackets > self.max_depth and _depth_exceeds(obj, self.max_depth):
            raise ValidationError(
                TOO_DEEP, f"payload is nested deeper than {self.max_depth} levels"
            )


def _proof(
    fast_and_shallow: Callable[[Any], bool] | None, semantic: Callable[[dict], None] | None
) -> Callable[[dict], bool]:
    """`Validator.proof` of one kind: the fast path and the shallowness test in one function
    (one call per event), then the rules beyond the schema if the kind has any."""
    if fast_and_shallow is None:
        return lambda obj: False
    if semantic is None:
        return fast_and_shallow

    def proven(obj: dict) -> bool:
        if fast_and_shallow(obj):
            semantic(obj)  # raises when invalid
            return True
        return False

    return proven


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _check_str_size(payload: str, limit: int) -> None:
    """Raise unless `payload` fits in `limit` bytes of UTF-8, encoding only when in doubt."""
    # n characters are between n and 4n bytes of UTF-8.
    if len(payload) <= limit // 4:
        return
    if len(payload) > limit:
        raise ValidationError(
            TOO_LARGE, f"payload is at least {len(payload)} bytes, more than the limit of {limit}"
        )
    try:
        size = len(payload.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(NOT_UTF8, "payload is not valid UTF-8 (lone surrogate)") from None
    if size > limit:
        raise ValidationError(TOO_LARGE, f"payload is {size} bytes, more than the limit of {limit}")


def _decode_error(exc: orjson.JSONDecodeError, max_depth: int) -> ValidationError:
    """The ValidationError for an orjson parse failure (its message tells the cause)."""
    text = str(exc)
    if "not valid UTF-8" in text:
        return ValidationError(NOT_UTF8, "payload is not valid UTF-8")
    if "depth limit" in text or "ecursion" in text:
        return ValidationError(TOO_DEEP, f"payload is nested deeper than {max_depth} levels")
    return ValidationError(INVALID_JSON, f"payload is not valid JSON: {text}")


def _dump(payload: dict, max_depth: int) -> bytes:
    """orjson.dumps of a dict payload, every failure turned into a ValidationError."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        if "not valid UTF-8" in str(exc):
            raise ValidationError(NOT_UTF8, "payload is not valid UTF-8 (lone surrogate)") from None
        if "ecursion" in str(exc):
            raise ValidationError(
                TOO_DEEP, f"payload is nested deeper than {max_depth} levels"
            ) from None
        raise ValidationError(INVALID_JSON, f"payload is not JSON-serializable: {exc}") from None


_SCALARS: Final = frozenset({"string", "number", "integer", "boolean", "null"})


def _shallow_proof(schema: dict[str, Any], max_depth: int) -> str:
    """A constant-time test that proves a schema-valid record is not nested beyond its schema:
    a Python expression over the record `v0` (compiled alone, and into the fast path).

    A schema-valid object whose length equals its number of required fields holds exactly those
    fields, whose types the schema has checked; a closed object holds only known fields. So
    `len(obj) == 10 and len(obj["metrics"]) == 4` proves an engine_execution is 2 levels deep,
    where counting brackets would cost time proportional to the payload. The test is always
    false (brackets are counted) when the schema has free-form containers (arrays, objects
    without properties), or nesting beyond the root and its direct children.
    """
    checks: list[tuple[tuple[str, ...], int]] = []

    def visit(node: dict[str, Any], path: tuple[str, ...]) -> bool:
        properties = node.get("properties")
        if not properties or len(path) >= min(max_depth, 2):
            return False
        required = node.get("required", [])
        closed = node.get("additionalProperties") is False
        if not closed:
            checks.append((path, len(required)))
        # Fields that may be present: all known ones if closed, else only the required ones.
        for key in properties if closed else required:
            spec = properties.get(key, {})
            types = spec.get("type")
            types = set(types) if isinstance(types, list) else {types}
            if types <= _SCALARS:
                continue
            if types != {"object"} or key not in required or not visit(spec, (*path, key)):
                return False
        return True

    if not visit(schema, ()):
        return "False"
    tests = (
        f"len(v0{''.join(f'[{key!r}]' for key in path)}) == {length}" for path, length in checks
    )
    return " and ".join(tests) or "True"  # every object closed: nothing to count


def _depth_exceeds(obj: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than max_depth (iterative: no recursion limit to hit)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return True
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return False


def _field_path(name: str) -> str:
    """fastjsonschema's `data.metrics.latency_ms` → `metrics.latency_ms` (root: `(root)`)."""
    if name == "data":
        return "(root)"
    return name[5:] if name.startswith("data.") else name.removeprefix("data")


def _join(path: str, key: str) -> str:
    return key if path == "(root)" else f"{path}.{key}"


def _schema_error(
    exc: fastjsonschema.JsonSchemaValueException, time_field: str | None = None
) -> ValidationError:
    """Turn a fastjsonschema error into `<field path> <rule>`, naming missing fields directly;
    an event time out of range has a reason of its own."""
    path = _field_path(exc.name or "data")
    rule = exc.rule or "schema"
    spec = exc.rule_definition
    value = exc.value
    if path == time_field and rule in ("minimum", "maximum"):
        return _time_range_error(path, value, rule)
    if rule == "required" and isinstance(value, dict) and isinstance(spec, list):
        missing = [key for key in spec if key not in value]
        if missing:
            fields = ", ".join(_join(path, key) for key in missing)
            verb = "is" if len(missing) == 1 else "are"
            return ValidationError(
                SCHEMA, f"{fields} {verb} required", path=_join(path, missing[0]), rule=rule
            )
    if rule == "additionalProperties" and isinstance(value, dict):
        known = (exc.definition or {}).get("properties", {})
        extra = sorted(_clip(str(key)) for key in value if key not in known)
        shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
        return ValidationError(
            SCHEMA, f"{path} has unexpected field(s): {shown}", path=path, rule=rule
        )
    text = _RULE_TEXT.get(rule)
    if text is not None:
        message = f"{path} {text(spec, value)}"
    else:
        message = (exc.message or "is invalid").replace("data", path, 1)
    return ValidationError(SCHEMA, message, path=path, rule=rule)


def _time_range_error(path: str, value: Any, rule: str) -> ValidationError:
    """The event time cannot be placed in a bucket or a window: say what it probably is."""
    hint = ""
    if isinstance(value, int | float) and value > MAX_TIME_MS:
        hint = " (microseconds?)" if value < MAX_TIME_MS * 1000 else " (nanoseconds?)"
    return ValidationError(
        TIMESTAMP_RANGE,
        f"{path} must be epoch milliseconds from 1 to {MAX_TIME_MS} (year 9999), "
        f"not {_clip(str(value))}{hint}",
        path=path,
        rule=rule,
    )


def _integer_paths(schema: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """Paths of the integer fields of a record and of its objects (`metrics.input_tokens`)."""
    found: list[tuple[str, ...]] = []
    for key, spec in schema.get("properties", {}).items():
        if spec.get("type") == "integer":
            found.append((key,))
        elif spec.get("type") == "object":
            found += [(key, *path) for path in _integer_paths(spec)]
    return tuple(found)


def _as_integers(obj: dict, paths: tuple[tuple[str, ...], ...]) -> None:
    """An integer spelt as a float (`1780000000000.0`, an integer to JSON Schema) becomes an
    int, so that it is one everywhere after: in window keys, bucket names, sums."""
    for path in paths:
        parent: Any = obj
        for key in path[:-1]:
            parent = parent.get(key)
            if type(parent) is not dict:
                break
        else:
            value = parent.get(path[-1])
            if type(value) is float:
                parent[path[-1]] = int(value)


def _type_text(spec: Any, value: Any) -> str:
    wanted = " or ".join(spec) if isinstance(spec, list) else str(spec)
    return f"must be {wanted}, not {_json_type(value)}"


def _enum_text(spec: Any, value: Any) -> str:
    return "must be one of " + ", ".join(str(choice) for choice in spec)


_RULE_TEXT: Final[dict[str, Callable[[Any, Any], str]]] = {
    "type": _type_text,
    "enum": _enum_text,
    "const": lambda spec, value: f"must be {spec!r}",
    "minimum": lambda spec, value: f"must be >= {spec}",
    "maximum": lambda spec, value: f"must be <= {spec}",
    "exclusiveMinimum": lambda spec, value: f"must be > {spec}",
    "exclusiveMaximum": lambda spec, value: f"must be < {spec}",
    "minLength": lambda spec, value: f"must be at least {spec} characters long",
    "maxLength": lambda spec, value: f"must be at most {spec} characters long",
    "minItems": lambda spec, value: f"must have at least {spec} items",
    "maxItems": lambda spec, value: f"must have at most {spec} items",
    "maxProperties": lambda spec, value: f"must have at most {spec} fields",
    "minProperties": lambda spec, value: f"must have at least {spec} fields",
}


def _clip(text: str, limit: int = 64) -> str:
    """Keep messages short whatever the payload: dead letters store them."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_outcome(obj: dict) -> None:
    """A comparison's outcome, the rules JSON Schema cannot express: a winner unless it is a
    tie, a winner that is one of the candidates, and a tie with a winner only where it reads
    one way (the winner beat the others, who tied among themselves: two engines at least)."""
    winner = obj.get("winner")
    tie = obj.get("tie")
    if winner is None:
        if tie is None:
            raise ValidationError(
                SCHEMA,
                "winner is required unless the comparison is a tie (tie: tie or both_bad)",
                path="winner",
                rule="winner_required",
            )
        return
    name = winner["engine_id"]
    if not any(candidate["engine_id"] == name for candidate in obj["candidates"]):
        raise ValidationError(
            SCHEMA,
            f"winner.engine_id {_clip(name)!r} is not one of the candidates",
            path="winner.engine_id",
            rule="winner_in_candidates",
        )
    if tie is not None:
        others = {c["engine_id"] for c in obj["candidates"]} - {name}
        if len(others) < 2:
            raise ValidationError(
                SCHEMA,
                f"tie {tie!r} with a winner is ambiguous: a winner and a tie need at least two "
                "other engines among the candidates (the others tie among themselves); "
                "leave winner out for a tie",
                path="tie",
                rule="tie_with_winner",
            )


# --- Fast path -------------------------------------------------------------------------------
#
# fastjsonschema's generated code is general (isinstance checks against Decimal, a set of the
# keys of every object, ...) and costs ~4-5 µs for an engine_execution, three times the parse.
# `_fast_path` generates, from the same schema, a conservative predicate for the schema subset
# our files use: exact types (`type(v) is int`, where JSON Schema would also take 1.0), no
# bookkeeping, False at the first doubt. It never decides that a record is invalid: when it
# says False, the fastjsonschema validator decides and produces the error message. So it can be
# stricter than the schema, never looser, and the tests check that property on generated data.

_ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default"}
)
_SUPPORTED: Final = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "items",
    "minProperties",
    "maxProperties",
    "enum",
}
_TYPE_TESTS: Final = {
    "string": "type({v}) is str",
    "integer": "type({v}) is int",
    "number": "type({v}) in _NUMBER",
    "boolean": "({v} is True or {v} is False)",
    "null": "{v} is None",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
}
_SCALAR_TYPES: Final = frozenset({"string", "integer", "number", "boolean", "null"})


class _Unsupported(Exception):
    """A schema keyword the fast path does not generate code for: that kind goes without one."""


class _FastPathWriter:
    """Writes the source of `def fast(v0) -> bool` for one schema.

    Each scalar is one positive test (`type(v) is str and 1 <= len(v) <= 256`), so a NaN or
    anything unforeseen fails it; a required field is read by subscript, and the KeyError of a
    missing one returns False (the body is one `try`)."""

    def __init__(self) -> None:
        self.lines = ["def fast(v0):", "    try:"]
        self.constants: dict[str, Any] = {"_MISSING": object(), "_NUMBER": (float, int)}
        self.names = 0

    def finish(self, then: str = "True") -> str:
        self.emit(2, f"return {then}")
        self.emit(1, "except KeyError:")
        self.emit(2, "return False")
        return "\n".join(self.lines)

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        self.names += 1
        return f"v{self.names}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def require(self, indent: int, tests: list[str]) -> None:
        self.emit(indent, f"if not ({' and '.join(tests)}):")
        self.emit(indent + 1, "return False")

    def node(self, schema: Any, v: str, indent: int) -> None:
        """Code that returns False unless value `v` certainly satisfies `schema`."""
        if not isinstance(schema, dict) or not set(schema) <= _SUPPORTED:
            raise _Unsupported(schema)
        types = schema.get("type")
        if types is None:
            if set(schema) - _ANNOTATIONS:  # constraints without a type: keep it simple
                raise _Unsupported(schema)
            return
        types = types if isinstance(types, list) else [types]
        if not types or not set(types) <= set(_TYPE_TESTS):
            raise _Unsupported(schema)
        if "enum" in schema:
            values = schema["enum"]
            if types != ["string"] or not all(isinstance(x, str) for x in values):
                raise _Unsupported(schema)
            known = self.constant(frozenset(values))
            self.require(indent, [f"type({v}) is str", f"{v} in {known}"])
            return
        if len(types) == 1:
            kind = types[0]
            tests = [_TYPE_TESTS[kind].format(v=v)]
            if kind in _SCALAR_TYPES:
                self.require(indent, tests + self.scalar(schema, kind, v))
                return
            self.require(indent, tests)
            self.container(schema, kind, v, indent)
            return
        # One branch per allowed type, holding the keywords that apply to that type.
        for number, kind in enumerate(types):
            keyword = "if" if number == 0 else "elif"
            self.emit(indent, f"{keyword} {_TYPE_TESTS[kind].format(v=v)}:")
            if kind in _SCALAR_TYPES:
                tests = self.scalar(schema, kind, v)
                if tests:
                    self.require(indent + 1, tests)
                else:
                    self.emit(indent + 1, "pass")
            else:
                self.emit(indent + 1, "pass")
                self.container(schema, kind, v, indent + 1)
        self.emit(indent, "else:")
        self.emit(indent + 1, "return False")

    def scalar(self, schema: dict[str, Any], kind: str, v: str) -> list[str]:
        """The positive tests of a scalar's bounds (its type tested already)."""
        if kind == "string":
            return self.bounds(f"len({v})", schema.get("minLength"), schema.get("maxLength"))
        if kind in ("number", "integer"):
            tests = self.bounds(v, schema.get("minimum"), schema.get("maximum"))
            for key, op in (("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
                if key in schema:
                    tests.append(f"{v} {op} {self.number(schema[key])}")
            return tests
        return []

    def container(self, schema: dict[str, Any], kind: str, v: str, indent: int) -> None:
        if kind == "array":
            tests = self.bounds(f"len({v})", schema.get("minItems"), schema.get("maxItems"))
            if tests:
                self.require(indent, tests)
            if "items" in schema:
                item = self.variable()
                self.emit(indent, f"for {item} in {v}:")
                self.node(schema["items"], item, indent + 1)
        else:
            tests = self.bounds(
                f"len({v})", schema.get("minProperties"), schema.get("maxProperties")
            )
            if tests:
                self.require(indent, tests)
            self.object(schema, v, indent)

    def bounds(self, value: str, low: Any, high: Any) -> list[str]:
        if low is not None and high is not None:
            return [f"{self.number(low)} <= {value} <= {self.number(high)}"]
        if low is not None:
            return [f"{value} >= {self.number(low)}"]
        if high is not None:
            return [f"{value} <= {self.number(high)}"]
        return []

    @staticmethod
    def number(bound: Any) -> str:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise _Unsupported(bound)
        return repr(bound)

    def object(self, schema: dict[str, Any], v: str, indent: int) -> None:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        additional = schema.get("additionalProperties", True)
        if not isinstance(properties, dict) or not isinstance(additional, bool | dict):
            raise _Unsupported(schema)
        if additional is False:
            known = self.constant(frozenset(properties))
            self.require(indent, [f"{v}.keys() <= {known}"])
        elif additional is not True:  # a schema for the values of the other keys
            known = self.constant(frozenset(properties))
            name, value = self.variable(), self.variable()
            self.emit(indent, f"for {name}, {value} in {v}.items():")
            self.emit(indent + 1, f"if {name} in {known}:")
            self.emit(indent + 2, "continue")
            self.node(additional, value, indent + 1)
        needed = set(required)
        for key in required:
            if key not in properties:
                self.require(indent, [f"{key!r} in {v}"])
        for key, spec in properties.items():
            if key in needed:  # a missing one raises KeyError: False
                child = self.variable()
                self.emit(indent, f"{child} = {v}[{key!r}]")
                self.node(spec, child, indent)
        optional = [(key, spec) for key, spec in properties.items() if key not in needed]
        if not optional:
            return
        # Every required key is there by now: an object with no more keys than those has
        # none of the optional ones (the common event), and their lookups are skipped.
        self.emit(indent, f"if len({v}) > {len(needed)}:")
        self.emit(indent + 1, "pass")
        for key, spec in optional:
            child = self.variable()
            self.emit(indent + 1, f"{child} = {v}.get({key!r}, _MISSING)")
            self.emit(indent + 1, f"if {child} is not _MISSING:")
            self.emit(indent + 2, "pass")
            self.node(spec, child, indent + 2)


def _fast_path(schema: dict[str, Any], then: str = "True") -> Callable[[Any], bool] | None:
    """The conservative predicate of `schema` (see above), None if it uses other keywords.
    `then` is what it returns once the schema is satisfied: a further test of `v0`, the
    record (the shallowness proof, so that both take one call)."""
    writer = _FastPathWriter()
    try:
        writer.node(schema, "v0", 2)
    except _Unsupported:
        return None
    namespace = dict(writer.constants)
    exec(compile(writer.finish(then), "<json-engine fast path>", "exec"), namespace)
    return namespace["fast"]
