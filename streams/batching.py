"""The one seam between json-engine and Faust's internals: a batch path in the consumer.

Faust hands every message to its conductor one by one (two asyncio tasks and an Event per
message, then a per-message ack); `../shared/spikes/faust-batch-drain` measured that as the
ceiling of a worker. Here the consumer's drain loop gives each fetched batch of a *batch topic*
straight to its handlers, as aiokafka records, with no Message, Event or ack; the handlers
own their offsets. Other topics (table changelogs, agents' topics) take Faust's normal path.

Registered as the transport `jsonengine://` (aiokafka underneath). Faust is pinned exactly in
pyproject.toml; `tests/test_batching.py` fails loudly when the internals used here move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, cast

from faust.transport import drivers
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from mode import Service

SCHEME = "jsonengine"
YIELD_EVERY = 100


class BatchHandler(Protocol):
    """Receives a partition's fetched records in offset order; must not block for long."""

    def on_records(self, partition: int, records: Sequence[Any]) -> None: ...


FETCH_MAX_WAIT_MS = 100


class BatchConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's aiokafka thread with a short broker-side fetch wait.

    Faust hard-codes `fetch_max_wait_ms=1500`, and aiokafka keeps one fetch in flight per
    broker: a fetch that covers only idle partitions (quiet channel topics) held the worker
    for up to 1.5 s while data waited elsewhere, ~40% of its wall time (bench/RESULTS.md).
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # handed to its Fetcher at start()
        return consumer


class BatchConsumer(aiokafka_driver.Consumer):
    """aiokafka consumer of Faust whose drain loop delivers batch topics in batches."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    batch_handlers: dict[str, list[BatchHandler]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers = {}

    def add_batch_handler(self, topic: str, handler: BatchHandler) -> None:
        """Route `topic` to `handler`; declare the topic with `acks=False` so that Faust
        neither tracks nor commits its messages (the handlers own the offsets)."""
        self.batch_handlers.setdefault(topic, []).append(handler)

    async def _drain_messages(self, fetcher: Service) -> None:  # type: ignore[override]
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(timeout=1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:  # a rebalance began after the fetch
                    await self._rewind(records)
                    continue
                generation = self.app.consumer_generation_id
                pending = list(records.items())
                while pending:
                    tp, batch = pending[0]
                    if generation != self.app.consumer_generation_id or not self.flow_active:
                        await self._rewind(dict(pending))
                        break
                    pending.pop(0)
                    if active is not None and tp not in active:
                        await self._rewind({tp: batch})
                        continue
                    handlers = self.batch_handlers.get(tp.topic)
                    if handlers is not None:
                        try:
                            for handler in handlers:
                                handler.on_records(tp.partition, batch)
                        except Exception as exc:
                            await self.app.crash(exc)  # the worker exits non-zero
                            return
                        await asyncio.sleep(0)
                    else:
                        await self._deliver_one_by_one(tp, batch)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _rewind(self, records: dict[TP, Sequence[Any]]) -> None:
        """Fetched but not handed over: seek back so they are read again, not skipped.

        (Faust's getmany seeks to the committed offsets instead, which leaves a partition
        without a committed offset past the records it dropped.) A partition that is no
        longer ours cannot be sought; its new owner reads from what is durable.
        """
        for tp, batch in records.items():
            if batch:
                try:
                    await self.seek(tp, batch[0].offset)
                except Exception as exc:
                    self.log.info("not rewinding %r: %r", tp, exc)

    async def _deliver_one_by_one(self, tp: TP, batch: Sequence[Any]) -> None:
        """Faust's own per-message path (read offsets, callback, flow suspension)."""
        callback = self.callback
        for n, record in enumerate(batch):
            offset = record.offset
            read_offset = self._read_offset[tp]
            if read_offset is None or offset >= read_offset:
                message = self._to_message(tp, record)
                await self.wait_first(callback(message), self.suspend_flow.wait())
                self._read_offset[tp] = offset
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)

    async def commit_offsets(self, offsets: dict[TP, int]) -> bool:
        """Commit offsets the batch handlers proved durable (next offset to read)."""
        return await self._commit(offsets)


class BatchTransport(aiokafka_driver.Transport):
    Consumer = BatchConsumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:BatchTransport"
