"""The Publisher: how applications put events on the pipeline's topics (confluent-kafka).

Idempotent, acks=all, compressed and batched; keyed by engine_id / comparison_id / sample_id so
that one engine's events stay in one partition. Validates on the client by default (raising
`ValidationError` before anything is sent).

Delivery failures are never dropped silently: each one is counted (`failed`), passed to
`on_error` and to the event's own `on_delivery`, and makes the next `flush()` / `close()` raise
`DeliveryError`. A broker that cannot be reached is a failure within `delivery_timeout_s` (each
event expires after that long), so nothing waits forever. `collect` raises only for the
caller's mistakes (invalid payload, unknown type, closed publisher); problems of the broker or
the producer arrive through the delivery path, so a loop over many events keeps counting.

Callbacks (`on_error`, `on_delivery`) run in the thread that serves the producer's reports:
the caller's during `collect()` and `flush()` while events flow (a report served by another
thread would take the GIL from the caller for each event, which costs more than the report),
else the publisher's poll thread. An exception they raise is logged, never lost in a thread.
`AsyncPublisher` gives each event an awaitable delivery instead.

`success_reports=False` has librdkafka report failures only (`delivery.report.only.error`),
for callers that need no per-event `on_delivery`: no callback per delivered event, about
0.5 µs less of the producing thread's CPU per event on the benchmark's machine.

Python work per event beyond a raw confluent-kafka loop (`bench/publisher_parts.py`): bytes
with `key=` and `validate=False` about 0.1 µs (with a broker, less CPU than the raw loop, which
polls after every event); bytes without a key about 1.2 µs, 1 of it the search for the key; a
dict validated about 1.4 µs, 1 of it the validator's fast path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from orjson import dumps

from streams.brokers import QuietLog
from streams.config import JsonEngineConfig, load_config
from streams.framing import publish_ids
from streams.readers.schema_ids import frame
from streams.topics import PARTITIONER, topic_name
from streams.validation import NOT_UTF8, ValidationError, Validator

log = logging.getLogger(__name__)

KEY_FIELD: Final = {
    "engine_execution": "engine_id",
    "comparison_result": "comparison_id",
    "training_sample": "sample_id",
}
DEFAULT_DELIVERY_TIMEOUT_S: Final = 30.0
_KEPT_ERRORS: Final = 100  # failure texts kept for the DeliveryError message
_PURGE_WAIT_S: Final = 2.0  # close(): time to serve the reports of purged events
# librdkafka checks for expired events about once a second: waiting this much longer than
# delivery_timeout_s lets flush() end with every event either delivered or reported failed.
_EXPIRY_SLACK_S: Final = 2.0
_POLL_S: Final = 0.02  # poll thread: wait per round (the delay of a report between bursts)
_ANY_PARTITION: Final = -1  # produce()'s default partition: the partitioner chooses
# collect() serves reports every this many events plus one: each poll() costs a call into
# librdkafka, and reports waiting for a few dozen events wait microseconds.
_POLL_MASK: Final = 31

Payload = bytes | bytearray | memoryview | str | dict[str, Any]
Key = bytes | str
OnDelivery = Callable[[KafkaError | None, Message], None]
OnError = Callable[[str, KafkaError], None]


class DeliveryError(Exception):
    """One or more events were not acknowledged by the broker (or not accepted by the producer).

    `kafka_error` is the KafkaError of a single event's failure (AsyncPublisher), else None.
    """

    def __init__(self, message: str, kafka_error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error


def producer_settings(
    config: JsonEngineConfig, delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S
) -> dict[str, Any]:
    """The librdkafka settings of the Publisher; the benchmark gives its raw producer the same.

    `message.timeout.ms` is the bound on how long an event may wait for its acknowledgement,
    which is what turns an unreachable broker into a failure rather than a hang.
    """
    timeout_ms = max(1, round(delivery_timeout_s * 1000))
    return {
        **config.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "partitioner": PARTITIONER,  # the same key hashing as every json-engine producer
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "message.max.bytes": max(1_048_576, config.validation.max_payload_bytes + 4096),
        "message.timeout.ms": timeout_ms,
        "socket.connection.setup.timeout.ms": max(1000, min(10_000, timeout_ms)),
    }


class Publisher:
    """Publishes (validated) events; a context manager that flushes and closes on exit.

    `delivered` and `failed` count the broker's answers so far. `producer_config` entries
    override the settings of `producer_settings()` (say `linger.ms`, or security settings).
    Safe to share between threads.
    """

    def __init__(
        self,
        config: JsonEngineConfig | None = None,
        *,
        validate: bool = True,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        on_error: OnError | None = None,
        producer_config: dict[str, Any] | None = None,
        success_reports: bool = True,
    ) -> None:
        if not delivery_timeout_s > 0:
            raise ValueError(f"delivery_timeout_s must be positive, not {delivery_timeout_s!r}")
        self.config = config or load_config()
        self.validator = Validator(self.config.validation.max_payload_bytes) if validate else None
        self.on_error = on_error
        self.delivery_timeout_s = delivery_timeout_s
        self.failed = 0
        self._delivered = 0  # success reports counted (success_reports), else derived
        self._sent = 0  # events handed to librdkafka (counted when success_reports is off)
        self._local_failures = 0  # refused by produce() itself: never sent
        self._collected = 0
        self._polled_at = 0.0  # when collect() last served reports (the poll thread's hint)
        self._lock = threading.Lock()  # reports can be served by two threads at once
        self._errors: list[str] = []  # failures not yet raised by flush()
        self._unraised = 0
        self._last_error: KafkaError | None = None  # of the client (broker down, fatal, ...)
        self._fatal: KafkaError | None = None
        self._topics = {kind: topic_name(self.config, kind) for kind in KEY_FIELD}
        self._reports = {kind: self._report(kind) for kind in KEY_FIELD}
        self._headers: dict[str, bytes] | None = None
        if self.config.kafka.schema_registry.publish:  # Confluent's wire format (framing.py)
            ids = publish_ids(self.config, tuple(KEY_FIELD))
            self._headers = {kind: frame(schema_id, b"") for kind, schema_id in ids.items()}
            self._prepare = self._prepare_framed  # type: ignore[method-assign]
        settings = producer_settings(self.config, delivery_timeout_s)
        if not success_reports:
            settings["delivery.report.only.error"] = True
        settings.update(producer_config or {})
        self.success_reports = str(settings.get("delivery.report.only.error")).lower() not in (
            "true",
            "1",
        )
        settings.setdefault("error_cb", self._on_client_error)
        settings.setdefault("logger", QuietLog())
        self._producer = Producer(settings)
        self._closed = False  # refuses events
        self._released = False  # the producer is closed too
        self._poller_stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, daemon=True, name="json-engine-publisher"
        )
        self._poller.start()
        # One function per kind does the common cases in a single frame (see `_collector`),
        # bound on the instance: `publisher.collect_engine_execution` is that function.
        self._collectors = {kind: self._collector(kind) for kind in KEY_FIELD}
        for kind, collector in self._collectors.items():
            name = f"collect_{kind}"
            if getattr(type(self), name) is getattr(Publisher, name):  # not a subclass's own
                setattr(self, name, collector)

    # -- the seed's API --------------------------------------------------------------------
    # Each instance binds these three names to its `_collector` functions (same arguments,
    # same results, fewer steps per event); the methods say what they do.

    def collect_engine_execution(self, payload: Payload, *, key: Key | None = None) -> None:
        """Publish one engine_execution, keyed by its engine_id (`key`: see `collect`)."""
        self._collect("engine_execution", payload, None, key)

    def collect_comparison_result(self, payload: Payload, *, key: Key | None = None) -> None:
        """Publish one comparison_result, keyed by its comparison_id (`key`: see `collect`)."""
        self._collect("comparison_result", payload, None, key)

    def collect_training_sample(self, payload: Payload, *, key: Key | None = None) -> None:
        """Publish one training_sample, keyed by its sample_id (`key`: see `collect`)."""
        self._collect("training_sample", payload, None, key)

    def collect(
        self,
        kind: str,
        payload: Payload,
        on_delivery: OnDelivery | None = None,
        *,
        key: Key | None = None,
    ) -> None:
        """Validate (unless disabled), key and enqueue one event; return without waiting.

        `on_delivery(error_or_None, message)` runs once the broker answered for this event.
        `key` (bytes or str) is the event's key field (engine_id, comparison_id, sample_id)
        when the caller has it at hand. Unvalidated, it is sent as given and the payload is not
        searched for one: the cheapest call (keys only order events; the worker never needs
        them to be right). Validated, the key is read from the checked event anyway, and a
        `key` that disagrees with it raises ValueError (nothing sent).
        Raises ValidationError (nothing sent), ValueError for an unknown type, TypeError for a
        payload that is not bytes, str or dict or a key that is not bytes(-like) or str,
        RuntimeError once closed. Waits only while the producer's local queue is full.
        """
        if on_delivery is None and kind in self._collectors:
            self._collectors[kind](payload, key=key)
        else:
            self._collect(kind, payload, on_delivery, key)

    def _collect(
        self, kind: str, payload: Payload, on_delivery: OnDelivery | None, key: Key | None
    ) -> None:
        """`collect`, every case (the collectors hand this whatever they do not do)."""
        topic, value, key = self._prepare(kind, payload, key)
        report = self._reports[kind] if on_delivery is None else self._report_to(kind, on_delivery)
        if not self._produce(topic, value, key, report):  # the local queue is full
            self._produce_when_room(topic, value, key, report)
            return
        # While events flow, their reports are served here (see the module docstring).
        self._collected += 1  # without a lock: `+=` on an int attribute is one step under the GIL
        if not self._collected & _POLL_MASK:
            self._producer.poll(0)
            self._polled_at = time.monotonic()

    def _collector(self, kind: str) -> Callable[..., None]:
        """`collect(kind, payload, key=key)` in one frame for the events of an application's
        hot path: a dict or bytes to validate, or bytes not to validate. Whatever else it is
        handed (framed values, str, a str key, a key that disagrees, errors) goes to `_collect`.

        What it saves per event is the generic path's frames, type dispatch and lookups; it
        sends the same bytes with the same key and counts the same (see `_collect`)."""
        slow = self._collect
        if self._headers is not None:  # Confluent-framed values: rare, the generic path

            def collect_framed(payload: Payload, *, key: Key | None = None) -> None:
                slow(kind, payload, None, key)

            return collect_framed
        topic = self._topics[kind]
        field = KEY_FIELD[kind]
        report = self._reports[kind]
        produce, poll = self._producer.produce, self._producer.poll
        count_sent = not self.success_reports
        validator = self.validator
        if validator is not None:
            validate = validator.validate
            proven = validator.proof(kind)
            limit = validator.max_payload_bytes
        collected = 0
        mask = _POLL_MASK

        def collect(payload: Payload, *, key: Key | None = None) -> None:
            nonlocal collected
            if self._closed:
                slow(kind, payload, None, key)  # raises
                return
            if validator is not None:
                if type(payload) is dict:
                    try:
                        value = dumps(payload)
                    except orjson.JSONEncodeError:
                        slow(kind, payload, None, key)  # raises the ValidationError saying why
                        return
                    # As Validator.validate_dumped: the proof, else the bytes decide.
                    if len(value) <= limit and proven(payload):
                        found = payload[field].encode()  # a str: the schema requires it
                    else:
                        found = _key(validate(kind, value), field)
                elif type(payload) is bytes:
                    value = payload
                    found = _key(validate(kind, value), field)
                else:
                    slow(kind, payload, None, key)
                    return
                if key is not None and key != found:
                    slow(kind, payload, None, key)  # a str key, or one that disagrees
                    return
                key = found
            else:
                if type(payload) is not bytes or (key is not None and type(key) is not bytes):
                    slow(kind, payload, None, key)
                    return
                value = payload
                if key is None:
                    key = _scan_key(kind, value)
                    if key is None:
                        key = _key(_peek(value), field)
            # The tail of `_collect`, inlined.
            try:
                produce(topic, value, key, _ANY_PARTITION, report)  # positional: cheaper
            except BufferError:  # the local queue is full
                self._produce_when_room(topic, value, key, report)
                return
            except KafkaException as exc:  # too large, fatal producer state, ...
                self._fail_locally(topic, value, key, report, exc.args[0])
                return
            if count_sent:
                self._sent += 1
            collected += 1
            if not collected & mask:
                poll(0)
                self._polled_at = time.monotonic()

        return collect

    def _produce_when_room(
        self, topic: str, value: bytes, key: bytes | None, report: OnDelivery
    ) -> None:
        """Wait for deliveries (or expiries, at most delivery_timeout_s away) to make room in
        the local queue; never drop the event."""
        deadline = time.monotonic() + self.delivery_timeout_s + 1.0
        while True:
            self._producer.poll(0.05)
            if self._produce(topic, value, key, report):
                return
            if time.monotonic() > deadline:
                self._fail_locally(topic, value, key, report, self._queue_full())
                return

    # -- encoding ---------------------------------------------------------------------------

    def _prepare(
        self, kind: str, payload: Payload, key: Key | None = None
    ) -> tuple[str, bytes, bytes | None]:
        """(topic, value, key) of one event; validates it first unless validation is off.

        Serializes only once: a dict is dumped with orjson and those bytes are what the
        validator checks (so it checks exactly what consumers will read) and what is sent.
        """
        if self._closed:
            raise RuntimeError("Publisher is closed")
        topic = self._topics.get(kind)
        if topic is None:
            raise ValueError(f"unknown event type {kind!r}; expected one of {', '.join(KEY_FIELD)}")
        given = None if key is None else _given_key(key)
        validator = self.validator
        field = KEY_FIELD[kind]
        if type(payload) is bytes or isinstance(payload, (bytearray, memoryview)):
            value = payload if type(payload) is bytes else bytes(payload)
            if validator is not None:
                obj = validator.validate(kind, value)
            elif given is not None:
                return topic, value, given
            else:
                found = _scan_key(kind, value)
                return topic, value, found if found is not None else _key(_peek(value), field)
        elif isinstance(payload, dict):
            try:
                value = orjson.dumps(payload)
            except orjson.JSONEncodeError:
                if validator is not None:
                    validator.validate(kind, payload)  # raises the ValidationError saying why
                raise
            obj = (
                validator.validate_dumped(kind, payload, value)
                if validator is not None
                else payload
            )
        elif isinstance(payload, str):
            # Validated before encoding: the size limit is checked before any copy is made.
            obj = validator.validate(kind, payload) if validator is not None else None
            try:
                value = payload.encode()
            except UnicodeEncodeError:
                raise ValidationError(
                    NOT_UTF8, "payload is not valid UTF-8 (lone surrogate)"
                ) from None
            if validator is None:
                obj = _peek(value) if given is None else None
        else:
            raise TypeError(f"payload must be bytes, str or dict, not {type(payload).__name__}")
        if given is None:
            return topic, value, _key(obj, field)
        if validator is not None and given != _key(obj, field):
            raise ValueError(
                f"key {given!r} disagrees with the event's {field} {obj.get(field)!r}; nothing sent"
            )
        return topic, value, given

    def _prepare_framed(
        self, kind: str, payload: Payload, key: Key | None = None
    ) -> tuple[str, bytes, bytes | None]:
        """`_prepare`, with the value framed by its type's schema id (validated unframed)."""
        topic, value, key = Publisher._prepare(self, kind, payload, key)
        return topic, self._headers[kind] + value, key  # type: ignore[index]

    # -- producing and delivery reports -----------------------------------------------------

    def _produce(self, topic: str, value: bytes, key: bytes | None, report: OnDelivery) -> bool:
        """Enqueue; False when the local queue is full. Other refusals become failed reports."""
        try:
            self._producer.produce(topic, value, key, on_delivery=report)
        except BufferError:
            return False
        except KafkaException as exc:  # too large, fatal producer state, ...
            self._fail_locally(topic, value, key, report, exc.args[0])
            return True
        if not self.success_reports:
            self._sent += 1
        return True

    def _fail_locally(
        self, topic: str, value: bytes, key: bytes | None, report: OnDelivery, err: KafkaError
    ) -> None:
        """An event produce() refused: reported like a failed delivery, so it is counted."""
        with self._lock:
            self._local_failures += 1
        report(err, Message(topic=topic, value=value, key=key, error=err))

    def _queue_full(self) -> KafkaError:
        return KafkaError(
            KafkaError._QUEUE_FULL, f"local queue stayed full for {self.delivery_timeout_s:g}s"
        )

    @property
    def delivered(self) -> int:
        """Events the broker acknowledged so far."""
        if self.success_reports:
            return self._delivered
        # Only failures are reported: whatever was sent, did not fail and is no longer pending.
        pending = 0 if self._released else len(self._producer)
        with self._lock:
            return self._sent - (self.failed - self._local_failures) - pending

    def _report_to(self, kind: str, on_delivery: OnDelivery) -> OnDelivery:
        if not self.success_reports:
            raise ValueError(
                "on_delivery needs a Publisher with success_reports=True: this one is told of"
                " failures only"
            )
        return self._report(kind, on_delivery)

    def _report(self, kind: str, then: OnDelivery | None = None) -> OnDelivery:
        topic = self._topics[kind]
        lock = self._lock

        def failed(err: KafkaError) -> None:
            with lock:
                self.failed += 1
                self._unraised += 1
                if len(self._errors) < _KEPT_ERRORS:
                    self._errors.append(f"{kind} to {topic}: {err.str()}")
            if self.on_error is not None:
                _call_safely(self.on_error, kind, err)

        if then is None:  # the report of nearly every event: as little as possible

            def report(err: KafkaError | None, msg: Message) -> None:
                if err is None:
                    self._delivered += 1  # one step under the GIL, like the other counters
                else:
                    failed(err)

            return report

        def report_then(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self._delivered += 1
            else:
                failed(err)
            _call_safely(then, err, msg)

        return report_then

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors: kept to explain failures; fatal ones stop us.

        "1/1 brokers are down" follows each failed connection and says less than the error
        that ended it (refused, TLS, "SASL authentication error: Authentication failed …"),
        so it never replaces one: the reason stays the one `DeliveryError` names."""
        if err.code() != KafkaError._ALL_BROKERS_DOWN or self._last_error is None:
            self._last_error = err
        if err.fatal():
            self._fatal = err
            log.error("Kafka producer failed fatally: %s", err.str())
        else:
            log.debug("Kafka client error: %s", err.str())

    def _poll_loop(self) -> None:
        """Serve reports whenever collect() does not: between bursts, after the last event,
        while events only trickle in. So no report waits much longer than _POLL_S."""
        while not self._poller_stop.is_set():
            if time.monotonic() - self._polled_at < _POLL_S:  # collect() serves them
                self._poller_stop.wait(_POLL_S)
                continue
            try:
                self._producer.poll(_POLL_S)
            except Exception:  # a callback of ours failed: keep serving the others
                log.exception("error while serving Kafka delivery reports")

    # -- flush and close --------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every delivery report; raise DeliveryError if any event was not delivered.

        Waits at most `timeout` seconds, by default until every event was delivered or has
        expired (`delivery_timeout_s`, plus librdkafka's expiry check). Each failure is raised
        once, by the first flush() that sees it.
        """
        if self._closed:  # close() flushed already
            self._raise_failures(0)
            return
        remaining = self._producer.flush(self._wait(timeout))
        self._raise_failures(remaining)

    def _wait(self, timeout: float | None) -> float:
        return self.delivery_timeout_s + _EXPIRY_SLACK_S if timeout is None else timeout

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the producer. Events still unacknowledged after the flush are
        purged, so each one is reported as failed (counted, on_error) instead of vanishing."""
        if self._closed:
            return
        self._closed = True  # no more events from here on
        remaining = 0
        try:
            remaining = self._producer.flush(self._wait(timeout))
        finally:  # also when interrupted: never leave events behind unreported
            if remaining or len(self._producer):
                self._producer.purge()
                remaining = self._producer.flush(_PURGE_WAIT_S)  # serves the purge reports
            self._poller_stop.set()
            self._poller.join()
            if not remaining:  # Producer.close() would wait for what is left
                self._producer.close()
                self._released = True
        self._raise_failures(remaining)

    def _raise_failures(self, remaining: int) -> None:
        with self._lock:
            failed, errors = self._unraised, self._errors
            self._unraised, self._errors = 0, []
        reason = ""
        if self._fatal is not None:
            reason = f"; the producer failed fatally: {self._fatal.str()}"
        elif self._last_error is not None:
            reason = f"; last client error: {self._last_error.str()}"
        if remaining:
            raise DeliveryError(
                f"{remaining} events still unacknowledged after the flush timeout"
                f"{f' and {failed} failed' if failed else ''}; is the broker at "
                f"{self.config.kafka.bootstrap_servers} reachable?{reason}"
            )
        if failed:
            shown = "; ".join(list(dict.fromkeys(errors))[:5])  # distinct, first seen first
            raise DeliveryError(f"{failed} events were not delivered: {shown}{reason}")

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The body failed: still deliver what it collected, but keep its exception the one
        # raised, with the delivery failure attached rather than replacing it.
        try:
            self.close()
        except DeliveryError as delivery:
            exc.add_note(f"and then, closing the Publisher: {delivery}")


_KEY_TOKENS: Final = {kind: f'"{field}"'.encode() for kind, field in KEY_FIELD.items()}


def _scan_key(kind: str, value: bytes) -> bytes | None:
    """The key of unvalidated JSON bytes found without parsing them (a parse of a typical
    event costs more than everything else the Publisher does), or None when the bytes do not
    make it certain and the caller parses them.

    Certain when there is no backslash at all and the key's name occurs once, followed by a
    colon and a string: without escapes every quote delimits a string, so that occurrence is
    a key; being the only one, it is the top-level key if the event has one (an event without
    it is invalid and the worker rejects it whatever its key); and its bytes are the UTF-8 of
    its value. (`find` rather than `in`: a byte search through `in` costs twice as much.)
    """
    token = _KEY_TOKENS[kind]
    start = value.find(token)
    if start < 0 or value.find(b"\\") >= 0:
        return None
    after = start + len(token)
    if value.startswith(b':"', after):
        after += 2
    elif value.startswith(b': "', after):  # json.dumps' default separators
        after += 3
    else:
        return None
    end = value.find(b'"', after)
    if end < 0 or value.find(token, end) >= 0:
        return None
    return value[after:end]


def _given_key(key: object) -> bytes:
    """A caller's `key=` as the bytes sent: bytes-like as they are, str as UTF-8."""
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    if isinstance(key, str):
        try:
            return key.encode()
        except UnicodeEncodeError:
            raise ValueError("key is not valid UTF-8 (lone surrogate)") from None
    raise TypeError(f"key must be bytes or str, not {type(key).__name__}")


def _key(obj: Any, field: str) -> bytes | None:
    """The Kafka key of a parsed event: its key field, if that is a string."""
    key = obj.get(field) if type(obj) is dict else None
    return key.encode() if type(key) is str else None


def _peek(value: bytes) -> Any:
    """The parsed payload (for its key), or None when an unvalidated payload is not JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _call_safely(callback: Callable[..., None], *args: Any) -> None:
    """Run a user callback; an exception there must not stop the reports of other events."""
    try:
        callback(*args)
    except Exception:
        log.exception("Publisher callback %r raised", callback)


class AsyncPublisher:
    """The asyncio variant: `await collect_*()` returns once the broker acknowledged the event.

    Many events in flight at once: `asyncio.gather` their `collect` calls (each one alone waits
    for its batch, `linger.ms` and a round trip). Never blocks the event loop on a full queue.
    """

    def __init__(self, config: JsonEngineConfig | None = None, **kwargs: Any) -> None:
        self._publisher = Publisher(config, **kwargs)
        if not self._publisher.success_reports:
            self._publisher.close()
            raise ValueError("AsyncPublisher needs success reports: each await waits for one")

    @property
    def publisher(self) -> Publisher:
        """The synchronous Publisher underneath (counters, settings)."""
        return self._publisher

    async def collect(self, kind: str, payload: Payload, *, key: Key | None = None) -> Message:
        """Return the delivered message; raise DeliveryError if the broker refused it.

        ValidationError (and the other caller errors of `Publisher.collect`, `key` as there)
        are raised before anything is sent.
        """
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[Message] = loop.create_future()

        def resolve(err: KafkaError | None, msg: Message) -> None:
            if delivered.done():
                return
            if err is None:
                delivered.set_result(msg)
            else:
                delivered.set_exception(DeliveryError(f"{kind}: {err.str()}", err))

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(resolve, err, msg)

        publisher = self._publisher
        topic, value, key = publisher._prepare(kind, payload, key)
        report = publisher._report_to(kind, on_delivery)
        deadline = loop.time() + publisher.delivery_timeout_s + 1.0
        while not publisher._produce(topic, value, key, report):
            if loop.time() > deadline:
                publisher._fail_locally(topic, value, key, report, publisher._queue_full())
                break
            await asyncio.sleep(0.01)  # the poll thread makes room
        return await delivered

    async def collect_engine_execution(
        self, payload: Payload, *, key: Key | None = None
    ) -> Message:
        return await self.collect("engine_execution", payload, key=key)

    async def collect_comparison_result(
        self, payload: Payload, *, key: Key | None = None
    ) -> Message:
        return await self.collect("comparison_result", payload, key=key)

    async def collect_training_sample(self, payload: Payload, *, key: Key | None = None) -> Message:
        return await self.collect("training_sample", payload, key=key)

    async def flush(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._publisher.flush, timeout)

    async def close(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._publisher.close, timeout)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except DeliveryError as delivery:
            exc.add_note(f"and then, closing the Publisher: {delivery}")


__all__ = [
    "KEY_FIELD",
    "AsyncPublisher",
    "DeliveryError",
    "KafkaException",
    "Publisher",
    "ValidationError",
    "producer_settings",
]
