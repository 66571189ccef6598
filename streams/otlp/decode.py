"""One Kafka record of the Collector's kafka exporter → an `ExportTraceServiceRequest`.

The Collector writes one request per record, encoded as `otlp_proto` (the protobuf bytes) or
`otlp_json` (OTLP/JSON). Both are decoded with the official messages of `opentelemetry-proto`:
protobuf by the message's own parser, JSON by `google.protobuf.json_format` after the one
place where OTLP/JSON departs from protobuf's JSON mapping: trace and span ids are hex strings,
not base64 (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding). The other OTLP
JSON rules are protobuf's own and json_format follows them: lowerCamelCase keys (the original
names accepted too), enums as integers (names accepted), 64-bit integers as decimal strings or
numbers, unknown fields ignored.

Anything that is not such a request raises `OtlpError` (a dead letter with reason
`invalid_otlp`). `encode_json` is the inverse of the JSON decoding, for producers and tests.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ENCODINGS = ("otlp_proto", "otlp_json")
INVALID_OTLP = "invalid_otlp"
_ROOTS = ("resourceSpans", "resource_spans")
_SCOPES = ("scopeSpans", "scope_spans")
_ID_FIELDS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


class OtlpError(ValueError):
    """A record that is not an ExportTraceServiceRequest in the configured encoding."""

    reason = INVALID_OTLP


def decode(value: bytes, encoding: str) -> ExportTraceServiceRequest:
    if encoding == "otlp_proto":
        return decode_proto(value)
    if encoding == "otlp_json":
        return decode_json(value)
    raise ValueError(f"unknown OTLP encoding {encoding!r}; expected one of {ENCODINGS}")


def decode_proto(value: bytes) -> ExportTraceServiceRequest:
    try:
        request = ExportTraceServiceRequest.FromString(value)
    except DecodeError as exc:
        raise OtlpError(f"not an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    # Bytes that happen to parse (a few random byte strings do) hold only unknown fields.
    if not request.resource_spans and len(UnknownFieldSet(request)):
        raise OtlpError("not an OTLP protobuf ExportTraceServiceRequest: only unknown fields")
    return request


def decode_json(value: bytes) -> ExportTraceServiceRequest:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(f"not OTLP/JSON: {exc}") from None
    if type(data) is not dict:
        raise OtlpError("not OTLP/JSON: the top level must be an object")
    if data and not any(root in data for root in _ROOTS):
        raise OtlpError("not an OTLP/JSON ExportTraceServiceRequest: no resourceSpans")
    try:
        _ids_to_base64(data)
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except OtlpError:
        raise
    except Exception as exc:  # json_format.ParseError mostly; whatever it is, not a request
        raise OtlpError(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None


def _ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP/JSON hex ids → protobuf JSON's base64, in place (spans and their links)."""
    for resource_spans in _items(data, _ROOTS):
        for scope_spans in _items(resource_spans, _SCOPES):
            for span in _items(scope_spans, ("spans",)):
                _convert_ids(span)
                for link in _items(span, ("links",)):
                    _convert_ids(link)


def _items(node: Any, names: tuple[str, ...]) -> list[Any]:
    if type(node) is not dict:
        raise OtlpError("not an OTLP/JSON ExportTraceServiceRequest: an object was expected")
    for name in names:
        value = node.get(name)
        if value is not None:
            if type(value) is not list:
                raise OtlpError(f"not an OTLP/JSON ExportTraceServiceRequest: {name} not a list")
            return value
    return []


def _convert_ids(node: Any) -> None:
    if type(node) is not dict:
        raise OtlpError("not an OTLP/JSON ExportTraceServiceRequest: a span must be an object")
    for names in _ID_FIELDS:
        for name in names:
            hex_id = node.get(name)
            if hex_id is None:
                continue
            if type(hex_id) is not str:
                raise OtlpError(f"OTLP/JSON {name} must be a hex string")
            try:
                raw = bytes.fromhex(hex_id)
            except ValueError:
                raise OtlpError(f"OTLP/JSON {name} is not hex: {hex_id[:40]!r}") from None
            node[name] = base64.b64encode(raw).decode()


def encode_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of a request, as the Collector's otlp_json encoding writes it (hex ids,
    integer enums, lowerCamelCase keys)."""
    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return orjson.dumps(data)


def _hex_ids(node: dict[str, Any]) -> None:
    for name, _ in _ID_FIELDS:
        if name in node:
            try:
                node[name] = base64.b64decode(node[name]).hex()
            except binascii.Error:  # cannot happen for MessageToDict's own output
                raise ValueError(f"bad base64 in {name}") from None
