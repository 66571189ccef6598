"""The Faust seam (streams/batching.py): fails loudly when the internals it relies on move."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from faust.transport import consumer as faust_consumer
from faust.transport import drivers
from faust.transport.drivers import aiokafka as aiokafka_driver

from streams import batching
from streams.app import create_app
from streams.config import JsonEngineConfig


def test_faust_is_the_pinned_version() -> None:
    assert version("faust-streaming") == "0.15.3", "re-check streams/batching.py, then re-pin"


def test_internals_used_by_the_drain_loop_exist() -> None:
    base = faust_consumer.Consumer
    stock_drain = inspect.getsource(base._drain_messages)
    # The stock loop we replace: getmany → callback per message, read offsets, flow control.
    for name in ("getmany", "callback", "_read_offset", "suspend_flow"):
        assert name in stock_drain, name
    wait_next = inspect.signature(base._wait_next_records)
    assert list(wait_next.parameters) == ["self", "timeout"]
    for name in ("perform_seek", "_to_message", "flow_active", "wait_first", "_commit"):
        assert hasattr(aiokafka_driver.Consumer, name), name
    assert issubclass(batching.BatchConsumer, aiokafka_driver.Consumer)
    assert batching.BatchTransport.Consumer is batching.BatchConsumer


def test_short_fetch_wait_reaches_aiokafka() -> None:
    import aiokafka

    assert "fetch_max_wait_ms=1500" in inspect.getsource(
        aiokafka_driver.AIOKafkaConsumerThread._create_worker_consumer
    ), "Faust's hard-coded fetch wait moved: re-check BatchConsumerThread"
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start


def test_transport_is_registered_and_used(config: JsonEngineConfig) -> None:
    assert drivers.by_url(f"{batching.SCHEME}://127.0.0.1:9092") is batching.BatchTransport
    app, _ = create_app(config)
    assert isinstance(app.consumer, batching.BatchConsumer)
    thread = app.consumer._new_consumer_thread()
    assert isinstance(thread, batching.BatchConsumerThread)
    assert hasattr(app, "consumer_generation_id")
    for signal in ("on_partitions_assigned", "on_partitions_revoked", "on_before_shutdown"):
        assert hasattr(app, signal), signal
    topics = {config.kafka.topic_prefix + s for s in ("engine-execution", "dead-letter")}
    assert topics <= set(app.consumer.batch_handlers)
    # Faust must neither track nor commit the sinks' messages: they own their offsets.
    assert not any(app.topics.acks_enabled_for(t) for t in topics)
