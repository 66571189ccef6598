"""What every short-lived client of the brokers needs: retries within a deadline, and
librdkafka's log lines kept out of a person's terminal.

A broker that has just started (a newcomer's first `make demo`), a coordinator that moved or
is still loading its log, a partition whose leader is being elected: each of these answers
with an error that a retry a moment later cures. The commands that talk to Kafka (`topics`,
the demo, the worker's start-up check) call the broker through `retry`, so that such an error
costs a short wait, and one that persists past the deadline ends as `BrokerError` with a
message a person can read, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

T = TypeVar("T")
COMMAND_WAIT_S = 30.0  # how long a command waits for the brokers before it gives up
ATTEMPT_S = 10.0  # at most this long per call, so that a retriable answer is tried again
FIRST_PAUSE_S = 0.2
LONGEST_PAUSE_S = 2.0
# Retriable in Kafka's protocol, but not always flagged so by librdkafka.
RETRIABLE_CODES = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_CONTROLLER,
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # metadata not spread yet, right after creation
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._WAIT_COORD,
        KafkaError._RESOLVE,
    }
)


class BrokerError(Exception):
    """A broker call that failed for good: refused, or still failing at the deadline."""


def retriable(exc: BaseException) -> bool:
    """A KafkaException whose error a later attempt may not meet."""
    error = kafka_error(exc)
    if error is None or error.fatal():
        return False
    return error.retriable() or error.code() in RETRIABLE_CODES


def kafka_error(exc: BaseException) -> KafkaError | None:
    args = exc.args if isinstance(exc, KafkaException) else ()
    return args[0] if args and isinstance(args[0], KafkaError) else None


def describe(exc: BaseException) -> str:
    """librdkafka's own text of an error (its name and message), else the exception's."""
    error = kafka_error(exc)
    return f"{error.name()}: {error.str()}" if error is not None else str(exc)


def retry(call: Callable[[float], T], what: str, seconds: float = COMMAND_WAIT_S) -> T:
    """`call(timeout)` until it returns; retriable broker errors are tried again, with a
    growing pause, until `seconds` have passed. Raises BrokerError naming `what` (a refusal
    at once, a retriable error at the deadline)."""
    deadline = time.monotonic() + seconds
    pause = FIRST_PAUSE_S
    while True:
        left = deadline - time.monotonic()
        try:
            return call(max(0.1, min(ATTEMPT_S, left)))
        except KafkaException as exc:
            left = deadline - time.monotonic()
            if not retriable(exc):
                raise BrokerError(f"{what}: {describe(exc)}") from exc
            if left <= pause:
                raise BrokerError(
                    f"{what}: {describe(exc)} (still failing after {seconds:.0f}s)"
                ) from exc
        time.sleep(pause)
        pause = min(LONGEST_PAUSE_S, pause * 2)


def watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """(low, high) offsets of one partition, asked of its leader: a broker that has just
    made the topic, or one briefly fenced on a loaded machine, answers NOT_LEADER first."""
    return retry(
        lambda t: consumer.get_watermark_offsets(tp, timeout=t),
        f"the offsets of {tp.topic} [{tp.partition}]",
    )


class QuietLog:
    """librdkafka's log lines, one level down to DEBUG: a broker that is down makes it log
    every reconnection attempt, and what matters of that reaches the caller as an error
    (BrokerError, the Publisher's DeliveryError). Configure the `json_engine.librdkafka`
    logger at DEBUG to see them. Give it as the `logger` setting of a client."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("json_engine.librdkafka")

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._logger.debug(msg, *args)
