"""Retention in the worker: every `output.retention_check_seconds`, the buckets of every
channel older than `output.retention_days` go (sinks/files/retention.py, sinks/s3/retention.py),
in a thread of its own, and nothing about it ever stops or holds up the worker.

- What a committed checkpoint still names is spared: the offset metadata of every partition
  of the channel's topic, committed by whichever worker owns it, read from the topic's group
  (streams/worker/checkpoint.py `decode`), asked with an admin client of its own (the
  consumers' connections to the coordinator wait while a rebalance is under way). A file its
  writer finished after a commit is named there until the next commit; a new owner's
  recovery would expect it.
- Any failure (brokers that do not answer, an object store that refuses, throttles or is
  down, a disk error) is logged and the next check tries again. Several workers running it at
  once on one directory or bucket is fine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from sinks.files import part_files
from sinks.files import retention as files_retention
from sinks.files.names import Checkpoint
from sinks.files.retention import Named, cutoff
from sinks.s3 import part_objects
from sinks.s3 import retention as s3_retention
from sinks.s3.location import S3Location
from streams.config import JsonEngineConfig
from streams.topics import admin_client, consumer_group
from streams.worker.checkpoint import OPERATION_TIMEOUT_S, decode
from streams.worker.sink import ChannelSink

log = logging.getLogger(__name__)
UNSTABLE_RETRY_SECONDS = 0.1
MANIFEST_ATTEMPTS = 3


class Retention:
    """Rounds of retention over every sink's channel, each in a thread of its own: listing,
    deleting and asking Kafka may take seconds (a store that is slow or down, a group whose
    coordinator is busy with a rebalance), and the worker's loop waits for none of it."""

    def __init__(self, config: JsonEngineConfig, sinks: dict[str, ChannelSink]):
        self.config = config
        self.sinks = sinks  # topic → its channel's sink
        self._at = 0.0
        self._round: threading.Thread | None = None
        self._admin: AdminClient | None = None

    def check(self, now: float) -> None:
        """From the loop: start a round when one is due and the last one is over."""
        output = self.config.output
        if output.retention_days is None or now < self._at:
            return
        if self._round is not None and self._round.is_alive():
            return
        self._at = now + output.retention_check_seconds
        self._round = threading.Thread(target=self.run, name="json-engine-retention", daemon=True)
        self._round.start()

    def run(self) -> None:
        """One round; a channel that fails waits for the next round, the others go on."""
        output = self.config.output
        cut = cutoff(output.retention_days)
        if cut is None:
            return
        started = time.perf_counter()
        deleted = 0
        for topic, sink in self.sinks.items():
            try:
                deleted += delete_before(sink.directory, cut, lambda t=topic: self.named(t))
            except Exception as exc:  # housekeeping: whatever fails is tried again next round
                log.warning(
                    "retention of %s failed (next try in %ss): %s",
                    sink.directory,
                    output.retention_check_seconds,
                    exc,
                )
                if getattr(exc, "transient", False):  # the object store is down: so for all
                    break
        if deleted:
            log.info(
                "retention: deleted %d part files older than %s days in %.3fs",
                deleted,
                output.retention_days,
                time.perf_counter() - started,
            )

    def named(self, topic: str) -> set[str]:
        """`<bucket>/<finished name>` of every file a committed checkpoint of the topic names,
        whoever owns its partitions. A manifest superseded (and deleted) while it was read is
        read again from the newer commit; KafkaException or OSError when it cannot tell."""
        for _ in range(MANIFEST_ATTEMPTS - 1):
            with contextlib.suppress(OSError):
                return self._named(topic)
        return self._named(topic)

    def _named(self, topic: str) -> set[str]:
        if self._admin is None:
            self._admin = admin_client(self.config)
        admin = self._admin
        metadata = admin.list_topics(topic, timeout=OPERATION_TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        group = consumer_group(self.config, topic)
        request = [
            ConsumerGroupTopicPartitions(
                group, [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
            )
        ]
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        while True:
            # Stable offsets only: an offset a transaction still holds is not the committed one.
            futures = admin.list_consumer_group_offsets(
                request, require_stable=True, request_timeout=OPERATION_TIMEOUT_S
            )
            found = futures[group].result().topic_partitions
            errors = [tp.error for tp in found if tp.error is not None]
            unstable = all(e.code() == KafkaError.UNSTABLE_OFFSET_COMMIT for e in errors)
            if not errors or not unstable or time.monotonic() > deadline:
                break
            time.sleep(UNSTABLE_RETRY_SECONDS)  # the transaction ends within milliseconds
        if errors:
            raise KafkaException(errors[0])
        directory = self.sinks[topic].directory
        named = set()
        for tp in found:
            decoded = decode(tp.metadata)
            if decoded is not None:
                named.update(c.finished for c in expand(directory, decoded[1]))
        return named


def expand(directory: Path | S3Location, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The files the checkpoints name, through their manifests where they name one."""
    if isinstance(directory, S3Location):
        return part_objects.expand(directory, checkpoints)
    return part_files.expand(directory, checkpoints)


def delete_before(directory: Path | S3Location, cutoff_ms: int, named: Named) -> int:
    """Files or objects, by where the channel lives."""
    if isinstance(directory, S3Location):
        return s3_retention.delete_before(directory, cutoff_ms, named)
    return files_retention.delete_before(directory, cutoff_ms, named)
