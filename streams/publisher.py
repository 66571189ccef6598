"""The Publisher: how applications put events on the pipeline's topics (confluent-kafka).

Idempotent, acks=all, compressed and batched; keyed by engine_id / comparison_id / sample_id so
that one engine's events stay in one partition. Validates on the client by default (raising
`ValidationError` before anything is sent), and never drops a delivery failure silently: each
failure is counted and passed to `on_error` (and to the event's own `on_delivery`, if given),
and `flush()` / `close()` raise `DeliveryError` if any event was not delivered.
`AsyncPublisher` gives each event an awaitable delivery instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.config import JsonEngineConfig, load_config
from streams.topics import topic_name
from streams.validation import ValidationError, Validator

KEY_FIELD = {
    "engine_execution": "engine_id",
    "comparison_result": "comparison_id",
    "training_sample": "sample_id",
}
DEFAULT_DELIVERY_TIMEOUT_S = 30.0

Payload = bytes | str | dict[str, Any]
OnDelivery = Callable[[KafkaError | None, Message], None]


class DeliveryError(Exception):
    """One or more events were not acknowledged by the broker."""


class Publisher:
    """Publishes validated events; a context manager that flushes and closes on exit."""

    def __init__(
        self,
        config: JsonEngineConfig | None = None,
        *,
        validate: bool = True,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        on_error: Callable[[str, KafkaError], None] | None = None,
        producer_config: dict[str, Any] | None = None,
    ):
        self.config = config or load_config()
        self.validator = Validator(self.config.validation.max_payload_bytes) if validate else None
        self.on_error = on_error
        self.delivery_timeout_s = delivery_timeout_s
        self.delivered = 0
        self.failed = 0
        self._errors: list[str] = []
        self._topics = {kind: topic_name(self.config, kind) for kind in KEY_FIELD}
        self._reports = {kind: self._report(kind) for kind in KEY_FIELD}
        self._producer = Producer(
            {
                "bootstrap.servers": self.config.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "message.max.bytes": max(
                    1_048_576, self.config.validation.max_payload_bytes + 4096
                ),
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                "socket.connection.setup.timeout.ms": min(10_000, int(delivery_timeout_s * 1000)),
                "log_level": 3,
                **(producer_config or {}),
            }
        )
        self._closed = False
        self._poller_stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, daemon=True, name="json-engine-publisher"
        )
        self._poller.start()

    # -- the seed's API --------------------------------------------------------------------

    def collect_engine_execution(self, payload: Payload) -> None:
        self.collect("engine_execution", payload)

    def collect_comparison_result(self, payload: Payload) -> None:
        self.collect("comparison_result", payload)

    def collect_training_sample(self, payload: Payload) -> None:
        self.collect("training_sample", payload)

    def collect(self, kind: str, payload: Payload, on_delivery: OnDelivery | None = None) -> None:
        """Validate (unless disabled), key and enqueue one event.

        `on_delivery(error_or_None, message)` runs once the broker answered for this event.
        """
        if self._closed:
            raise RuntimeError("Publisher is closed")
        if kind not in KEY_FIELD:
            raise ValueError(f"unknown event type {kind!r}; expected one of {', '.join(KEY_FIELD)}")
        value, key = self._encode(kind, payload)
        report = self._reports[kind] if on_delivery is None else self._report(kind, on_delivery)
        while True:
            try:
                self._producer.produce(self._topics[kind], value, key=key, on_delivery=report)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: wait for deliveries, never drop

    def _encode(self, kind: str, payload: Payload) -> tuple[bytes, bytes | None]:
        if self.validator is not None:
            obj = self.validator.validate(kind, payload)
        elif isinstance(payload, dict):
            obj = payload
        else:
            obj = None
        if isinstance(payload, dict):
            value = orjson.dumps(payload)
        elif isinstance(payload, str):
            value = payload.encode()
        else:
            value = bytes(payload)
        if obj is None:  # unvalidated text: key it if it parses, send it as it is otherwise
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError:
                obj = None
        key = obj.get(KEY_FIELD[kind]) if isinstance(obj, dict) else None
        return value, key.encode() if isinstance(key, str) else None

    def _report(self, kind: str, then: OnDelivery | None = None) -> OnDelivery:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1
                text = f"{kind} to {self._topics[kind]}: {err.str()}"
                if len(self._errors) < 100:
                    self._errors.append(text)
                if self.on_error is not None:
                    self.on_error(kind, err)
            if then is not None:
                then(err, msg)

        return report

    def _poll_loop(self) -> None:
        while not self._poller_stop.is_set():
            self._producer.poll(0.1)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every delivery report; raise DeliveryError if any event was not delivered."""
        remaining = self._producer.flush(self.delivery_timeout_s if timeout is None else timeout)
        if remaining:
            raise DeliveryError(
                f"{remaining} events still unacknowledged after the flush timeout; is the broker "
                f"at {self.config.kafka.bootstrap_servers} reachable?"
            )
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"{len(errors)} events failed: {'; '.join(errors[:3])}")

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._poller_stop.set()
            self._poller.join()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPublisher:
    """The asyncio variant: `await collect_*()` returns once the broker acknowledged the event."""

    def __init__(self, config: JsonEngineConfig | None = None, **kwargs: Any):
        self._publisher = Publisher(config, **kwargs)

    async def collect(self, kind: str, payload: Payload) -> Message:
        """Return the delivered message; raise DeliveryError if the broker refused it."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[Message] = loop.create_future()

        def resolve(err: KafkaError | None, msg: Message) -> None:
            if delivered.done():
                return
            if err is None:
                delivered.set_result(msg)
            else:
                delivered.set_exception(DeliveryError(f"{kind}: {err.str()}"))

        self._publisher.collect(
            kind, payload, lambda err, msg: loop.call_soon_threadsafe(resolve, err, msg)
        )
        return await delivered

    async def collect_engine_execution(self, payload: Payload) -> Message:
        return await self.collect("engine_execution", payload)

    async def collect_comparison_result(self, payload: Payload) -> Message:
        return await self.collect("comparison_result", payload)

    async def collect_training_sample(self, payload: Payload) -> Message:
        return await self.collect("training_sample", payload)

    async def flush(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._publisher.flush, timeout)

    async def close(self) -> None:
        await asyncio.to_thread(self._publisher.close)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["AsyncPublisher", "DeliveryError", "KafkaException", "Publisher", "ValidationError"]
