"""The pipeline's topic names (Contract → Topics) and their idempotent creation."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import CHANNELS, JsonEngineConfig

TOPIC_SUFFIX = {
    "engine_execution": "engine-execution",
    "comparison_result": "comparison-result",
    "training_sample": "training-sample",
    "aggregated_stats": "aggregated-stats",
    "dead_letter": "dead-letter",
}
ADMIN_TIMEOUT_S = 30.0
# Every producer of json-engine hashes keys like Kafka's Java clients (and aiokafka): the
# same key lands in the same partition whoever publishes it, which the per-partition
# idempotence of the sinks relies on (the aggregates do not depend on it).
PARTITIONER = "murmur2_random"


def topic_name(config: JsonEngineConfig, channel: str) -> str:
    return config.kafka.topic_prefix + TOPIC_SUFFIX[channel]


def pipeline_topics(config: JsonEngineConfig) -> dict[str, str]:
    """channel → topic, in Contract order."""
    return {channel: topic_name(config, channel) for channel in CHANNELS}


def input_topics(config: JsonEngineConfig) -> list[str]:
    """Inputs json-engine reads but does not name: the OTLP spans topic, when enabled (its
    literal name, no prefix: the OpenTelemetry Collector's kafka exporter writes it)."""
    return [config.otlp.topic] if config.otlp.enabled else []


def consumer_group(config: JsonEngineConfig, topic: str) -> str:
    """The workers' consumer group of one topic: `<prefix>worker.<topic without prefix>`.

    One group per topic, so that the assignor spreads every topic over the workers (with one
    group for all topics, cooperative-sticky balances the count of partitions only, and a
    second worker could get none of the executions)."""
    return f"{config.kafka.app_id}.{topic.removeprefix(config.kafka.topic_prefix)}"


def aggregates_partials_topic(config: JsonEngineConfig) -> str:
    """Per-partition partials and stream-time marks, keyed by engine_id (the merge's input)."""
    return f"{config.kafka.app_id}-aggregates-partials"


def aggregates_state_topic(config: JsonEngineConfig) -> str:
    """The aggregation's state (streams/aggregates/changelog.py), compacted: one partition per
    input partition of each stage, so three times the configured partitions."""
    return f"{config.kafka.app_id}-aggregates-state"


def internal_topics(config: JsonEngineConfig) -> dict[str, dict[str, str]]:
    """The worker's own topics (they start with the prefix too) and their topic configs."""
    return {
        aggregates_partials_topic(config): {},
        aggregates_state_topic(config): {"cleanup.policy": "compact", "segment.ms": "600000"},
    }


def topic_partitions(config: JsonEngineConfig, name: str) -> int:
    if name == aggregates_state_topic(config):
        return 3 * config.kafka.partitions
    return config.kafka.partitions


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication: int


def admin_client(config: JsonEngineConfig) -> AdminClient:
    return AdminClient(config.kafka.client_config())


def create_topics(
    config: JsonEngineConfig, names: list[str] | None = None, timeout: float = ADMIN_TIMEOUT_S
) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as they are.

    Without `names`: the pipeline's topics, the worker's internal ones and the OTLP input
    when enabled, all with the configured partitions, so that internal topics are
    co-partitioned with the inputs.
    """
    admin = admin_client(config)
    internal = internal_topics(config)
    wanted = names or [*pipeline_topics(config).values(), *internal, *input_topics(config)]
    new = [
        NewTopic(
            name,
            num_partitions=topic_partitions(config, name),
            replication_factor=config.kafka.replication_factor,
            config=internal.get(name, {}),
        )
        for name in wanted
    ]
    created = []
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def list_topics(config: JsonEngineConfig) -> list[TopicInfo]:
    """Every topic that starts with the prefix (the pipeline's and the app's internal ones),
    and the OTLP input when enabled."""
    meta = admin_client(config).list_topics(timeout=ADMIN_TIMEOUT_S)
    prefix = config.kafka.topic_prefix
    inputs = set(input_topics(config))
    return sorted(
        (
            TopicInfo(
                name,
                len(t.partitions),
                len(next(iter(t.partitions.values())).replicas) if t.partitions else 0,
            )
            for name, t in meta.topics.items()
            if name.startswith(prefix) or name in inputs
        ),
        key=lambda t: t.name,
    )
