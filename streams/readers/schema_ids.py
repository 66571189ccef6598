"""Confluent's wire format at the record's edge: magic byte 0, a 4-byte schema id, the JSON.

Producers that serialize with Confluent's JSONSerializer (Python, Java, Go) frame every value
this way. No JSON text starts with byte 0, so a value that does is framed, without doubt.
The id must be allowed (`kafka.schema_registry.allowed_ids`) or known to the registry at
`kafka.schema_registry.url` as a JSON schema; else the record is a dead letter
(`unknown_schema_id`). The registry's answers are cached for the life of the worker (an id
never changes its schema); a registry that does not answer raises RegistryUnavailable, which
rolls the worker back to its last checkpoint to read the records again later: never a drop.
What the readers get is the JSON alone (streams/readers/route.py), validated as any record.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from streams.config import SchemaRegistryConfig
from streams.readers.failures import RegistryUnavailable
from streams.validation import INVALID_JSON, ValidationError

log = logging.getLogger(__name__)
MAGIC: Final = b"\x00"
HEADER: Final = 5  # the magic byte and the id (big-endian)
UNKNOWN_SCHEMA_ID: Final = "unknown_schema_id"
CACHED_IDS: Final = 10_000  # verdicts kept; past it they are asked again


def framed(value: bytes) -> bool:
    """The value is in Confluent's wire format (it cannot be JSON)."""
    return value[:1] == MAGIC


def frame(schema_id: int, value: bytes) -> bytes:
    """`value` in Confluent's wire format with `schema_id`."""
    return MAGIC + schema_id.to_bytes(4, "big") + value


class Unframed:
    """A consumed record seen without its framing: `value()` is the JSON alone, the rest is
    the record's (what the readers use of a confluent-kafka Message)."""

    __slots__ = ("_record", "_value")

    def __init__(self, record: Any, value: bytes):
        self._record, self._value = record, value

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._record.offset()

    def timestamp(self) -> tuple[int, int]:
        return self._record.timestamp()

    def key(self) -> bytes | None:
        return self._record.key()

    def partition(self) -> int:
        return self._record.partition()

    def topic(self) -> str:
        return self._record.topic()

    def headers(self) -> Any:
        return self._record.headers()

    def error(self) -> Any:
        return self._record.error()


class SchemaIds:
    """Decides whether a framed value's schema id is allowed (one instance per worker)."""

    def __init__(self, config: SchemaRegistryConfig):
        self.config = config
        self.allowed = frozenset(config.allowed_ids)
        self._known: dict[int, str | None] = {}  # id → None (a JSON schema) or why not
        self._client: Any = None

    def check(self, value: bytes) -> tuple[bytes | None, ValidationError | None]:
        """(the JSON alone, None) for a framed value whose id is allowed, else (None, why).
        Raises RegistryUnavailable when only the registry could tell and does not answer."""
        if len(value) < HEADER:
            return None, ValidationError(
                INVALID_JSON,
                f"a value starting with byte 0 is Confluent's wire format, which needs a "
                f"4-byte schema id after it; this one has {len(value)} bytes",
            )
        schema_id = int.from_bytes(value[1:HEADER], "big")
        if schema_id in self.allowed:
            return value[HEADER:], None
        why = self._ask(schema_id) if self.config.url else self._not_configured(schema_id)
        if why is not None:
            return None, ValidationError(UNKNOWN_SCHEMA_ID, why)
        return value[HEADER:], None

    def _not_configured(self, schema_id: int) -> str:
        listed = sorted(self.allowed)
        return (
            f"schema id {schema_id} of Confluent's wire format is not allowed: not in "
            f"kafka.schema_registry.allowed_ids {listed}, and no kafka.schema_registry.url"
        )

    def _ask(self, schema_id: int) -> str | None:
        """The registry's verdict on an id, cached: None if it holds a JSON schema by it."""
        if schema_id in self._known:
            return self._known[schema_id]
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._registry().get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise RegistryUnavailable(self._failed(schema_id, exc)) from exc
            why: str | None = (
                f"schema id {schema_id} is not in the registry at {self._where()} "
                f"(nor in kafka.schema_registry.allowed_ids)"
            )
        except Exception as exc:  # connection refused, timeout, TLS: the registry is down
            raise RegistryUnavailable(self._failed(schema_id, exc)) from exc
        else:
            kind = (schema.schema_type or "AVRO").upper()
            why = None if kind == "JSON" else f"schema id {schema_id} is a {kind} schema, not JSON"
        if len(self._known) >= CACHED_IDS:
            self._known.clear()
        self._known[schema_id] = why
        return why

    def _registry(self) -> Any:
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._client = SchemaRegistryClient.new_client(self.config.client_config())
        return self._client

    def _where(self) -> str:
        return (self.config.url or "").split("@")[-1]  # no credentials in messages

    def _failed(self, schema_id: int, exc: BaseException) -> str:
        return (
            f"the schema registry at {self._where()} did not answer for schema id "
            f"{schema_id} ({type(exc).__name__}: {exc}); the records are read again later"
        )
