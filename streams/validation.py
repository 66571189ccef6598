"""Validation of event payloads against the bundled JSON Schemas (schemas/v1).

The schemas are compiled once (fastjsonschema generates plain Python per schema), payloads are
parsed with orjson, and every way a payload can be bad ends in one exception type,
`ValidationError`, whose `reason` is a short code (for counters and dead letters) and whose
message names the field path and the rule (`metrics.latency_ms must be >= 0`).

Cheap checks come first and expensive ones only when needed, because this runs for every
consumed record: the size is checked before parsing (orjson itself stops at 1024 levels), the
schema next, then the nesting depth against `max_depth`. That last check is free for a record
holding only its schema's fields (the lengths of its objects prove the depth, see
`_shallow_plan`); otherwise it counts brackets and walks the parsed object only when there are
more than `max_depth` of them. A payload that is both too deep and schema-invalid is reported
as `schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import fastjsonschema
import orjson

from schemas import schema_file

KINDS: Final = (
    "engine_execution",
    "comparison_result",
    "training_sample",
    "aggregated_stats",
    "dead_letter",
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
        self._compiled: dict[str, tuple[Callable[[Any], Any], _Plan | None]] = {
            kind: (
                fastjsonschema.compile(schema, use_formats=False),
                _shallow_plan(schema, max_depth),
            )
            for kind, schema in self._schemas.items()
        }

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
        try:
            check, plan = self._compiled[kind]
        except KeyError:
            raise ValidationError(
                UNKNOWN_KIND, f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}"
            ) from None
        limit = self.max_payload_bytes
        raw: bytes | bytearray | str
        if type(payload) is not bytes and isinstance(payload, bytearray | memoryview):
            payload = _as_bytes(payload, limit)
        if type(payload) is bytes:
            if len(payload) > limit:
                raise ValidationError(
                    TOO_LARGE, f"payload is {len(payload)} bytes, more than the limit of {limit}"
                )
            raw = payload
            obj = _parse(raw, self.max_depth)
        elif isinstance(payload, str):
            _check_str_size(payload, limit)
            raw = payload
            obj = _parse(raw, self.max_depth)
        elif isinstance(payload, dict):
            # Validate what a consumer will see: NaN becomes null, tuples lists, and so on.
            raw = _dump(payload, self.max_depth)
            if len(raw) > limit:
                raise ValidationError(
                    TOO_LARGE, f"payload is {len(raw)} bytes, more than the limit of {limit}"
                )
            obj = _parse(raw, self.max_depth)
        else:
            raise ValidationError(
                NOT_OBJECT, f"payload must be bytes, str or dict, not {type(payload).__name__}"
            )
        try:
            check(obj)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_error(exc) from None
        if not (plan is not None and _proves_shallow(obj, plan)):
            self._check_depth(obj, raw)
        if kind == "comparison_result":
            _check_winner(obj)
        return obj

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


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _as_bytes(payload: bytearray | memoryview, limit: int) -> bytes:
    """A bytes copy of a buffer, refusing before copying one larger than `limit`."""
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    if size > limit:
        raise ValidationError(TOO_LARGE, f"payload is {size} bytes, more than the limit of {limit}")
    return bytes(payload)


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


def _parse(payload: bytes | bytearray | str, max_depth: int) -> dict:
    """orjson.loads, with every failure and every non-object turned into a ValidationError."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "not valid UTF-8" in text:
            raise ValidationError(NOT_UTF8, "payload is not valid UTF-8") from None
        if "depth limit" in text or "ecursion" in text:
            raise ValidationError(
                TOO_DEEP, f"payload is nested deeper than {max_depth} levels"
            ) from None
        raise ValidationError(INVALID_JSON, f"payload is not valid JSON: {text}") from None
    if type(obj) is not dict:
        raise ValidationError(NOT_OBJECT, f"payload must be a JSON object, not {_json_type(obj)}")
    return obj


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


_Plan = tuple[tuple[tuple[str, ...], int], ...]
_SCALARS: Final = frozenset({"string", "number", "integer", "boolean", "null"})


def _shallow_plan(schema: dict[str, Any], max_depth: int) -> _Plan | None:
    """Length checks that, on a schema-valid record, prove it has no nesting beyond the schema's.

    A schema-valid object whose length equals its number of required fields holds exactly those
    fields, whose types the schema has checked; a closed object holds only known fields. So
    `len(obj) == 10 and len(obj["metrics"]) == 4` proves an engine_execution is 2 levels deep,
    in constant time, where counting brackets costs time proportional to the payload. None when
    the schema has free-form containers (arrays, objects without properties): then the
    brackets are counted.
    """
    plan: list[tuple[tuple[str, ...], int]] = []

    def visit(node: dict[str, Any], path: tuple[str, ...]) -> bool:
        properties = node.get("properties")
        if not properties or len(path) + 1 > max_depth:
            return False
        required = node.get("required", [])
        closed = node.get("additionalProperties") is False
        if not closed:
            plan.append((path, len(required)))
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

    return tuple(plan) if visit(schema, ()) else None


def _proves_shallow(obj: dict, plan: _Plan) -> bool:
    for path, length in plan:
        node = obj
        for key in path:
            node = node[key]
        if len(node) != length:
            return False
    return True


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


def _schema_error(exc: fastjsonschema.JsonSchemaValueException) -> ValidationError:
    """Turn a fastjsonschema error into `<field path> <rule>`, naming missing fields directly."""
    path = _field_path(exc.name or "data")
    rule = exc.rule or "schema"
    spec = exc.rule_definition
    value = exc.value
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


def _check_winner(obj: dict) -> None:
    """The winner must be one of the candidates (a rule JSON Schema cannot express)."""
    winner = obj["winner"]["engine_id"]
    for candidate in obj["candidates"]:
        if candidate["engine_id"] == winner:
            return
    raise ValidationError(
        SCHEMA,
        f"winner.engine_id {_clip(winner)!r} is not one of the candidates",
        path="winner.engine_id",
        rule="winner_in_candidates",
    )
