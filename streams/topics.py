"""The pipeline's topic names (Contract → Topics), their idempotent creation and the
worker's start-up check of what exists."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
    TopicDescription,
)

from streams.brokers import COMMAND_WAIT_S, QuietLog, describe, retriable, retry
from streams.config import CHANNELS, JsonEngineConfig

TOPIC_SUFFIX = {
    "engine_execution": "engine-execution",
    "comparison_result": "comparison-result",
    "training_sample": "training-sample",
    "aggregated_stats": "aggregated-stats",
    "dead_letter": "dead-letter",
    "alerts": "alerts",
}
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
    """The worker's own topics (they start with the prefix too) and their topic configs.

    Their records are few and small, so a segment's index needs little room: at 1 MiB
    rather than Kafka's 10 MiB, the broker's first writes to a new segment read ahead (and
    zero-fill) a tenth of the page cache (perf: 79% of the broker's samples in a bench run
    with aggregation on went to that zero-fill under OffsetIndex/TimeIndex.append)."""
    index = {"segment.index.bytes": str(1024 * 1024)}
    return {
        aggregates_partials_topic(config): index,
        aggregates_state_topic(config): {
            "cleanup.policy": "compact",
            "segment.ms": "600000",
            **index,
        },
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


class TopicsInvalid(Exception):
    """The worker's topics cannot serve the config, and no retry cures it: a partition count
    differs from what the config needs, or a topic is missing and the broker refuses to
    create it. The worker stops with exit 2 (streams/worker/process.py)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def admin_client(config: JsonEngineConfig) -> AdminClient:
    return AdminClient({**config.kafka.client_config(), "logger": QuietLog()})


def all_topics(config: JsonEngineConfig) -> list[str]:
    """Every topic the worker reads or produces to: the pipeline's, its internal ones and the
    OTLP input when enabled."""
    return [*pipeline_topics(config).values(), *internal_topics(config), *input_topics(config)]


def checked_partitions(config: JsonEngineConfig) -> dict[str, int]:
    """Topics whose partition count must be what the config says (P = kafka.partitions): the
    merge expects marks from exactly P execution and P comparison partitions, through a
    partials topic of P; the state topic holds one partition per input partition of each
    stage (3P); training samples, aggregated stats and alerts meet their copies in the home
    partition of their key, murmur2 modulo P (streams/readers/dedupe.py). With any other count the
    aggregates come out wrong without an error, or copies are forwarded to a partition that
    is not there. The others (dead letters, the OTLP input) may have any count."""
    channels = (
        "engine_execution",
        "comparison_result",
        "training_sample",
        "aggregated_stats",
        "alerts",
    )
    names = [*(topic_name(config, c) for c in channels), *internal_topics(config)]
    return {name: topic_partitions(config, name) for name in names}


def produced_topics(config: JsonEngineConfig) -> list[str]:
    """Topics the worker's transactional producer writes to."""
    channels = (
        "dead_letter",
        "training_sample",
        "aggregated_stats",
        "alerts",
        "engine_execution",
    )
    return [*(topic_name(config, c) for c in channels), *internal_topics(config)]


def create_topics(
    config: JsonEngineConfig,
    names: list[str] | None = None,
    seconds: float = COMMAND_WAIT_S,
    partitions: int | None = None,
) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as they are
    (and never asked for again: a cluster whose ACLs let the worker describe but not create
    topics that exist is fine).

    Without `names`: every topic of `all_topics`, with the configured partitions (unless
    `partitions` is given), so that internal topics are co-partitioned with the inputs.
    Raises TopicsInvalid when the broker refuses to create one (a policy, ACLs, a name that
    collides with another), BrokerError when the brokers do not answer within `seconds` or
    refuse otherwise (a replication factor above the brokers there are). Returns once the
    topics created are in the metadata the brokers answer with.
    """
    admin = admin_client(config)
    wanted = names or all_topics(config)
    created: list[str] = []
    where = config.kafka.bootstrap_servers
    retry(
        lambda timeout: _create_missing(config, admin, wanted, partitions, created, timeout),
        f"creating topics on {where}",
        seconds,
    )
    if created:  # seen in the metadata before returning: a listing right after has them
        retry(lambda t: _existing(admin, created, t), f"describing topics on {where}", seconds)
    return created


def _create_missing(
    config: JsonEngineConfig,
    admin: AdminClient,
    wanted: list[str],
    partitions: int | None,
    created: list[str],
    timeout: float,
) -> None:
    missing = [name for name, found in _described(admin, wanted, timeout).items() if found is None]
    if not missing:
        return
    internal = internal_topics(config)
    new = [
        NewTopic(
            name,
            num_partitions=partitions or topic_partitions(config, name),
            replication_factor=config.kafka.replication_factor,
            config=internal.get(name, {}),
        )
        for name in missing
    ]
    refused = []
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if retriable(exc) or code == KafkaError.INVALID_REPLICATION_FACTOR:
                raise  # brokers down, or fewer up than the replication factor: not for good
            refused.append(f"topic {name} does not exist and cannot be created: {describe(exc)}")
    if refused:
        raise TopicsInvalid(refused)


def check_topics(config: JsonEngineConfig, seconds: float = COMMAND_WAIT_S) -> dict[str, int]:
    """Check the topics the worker uses; return `max.message.bytes` of each one it produces
    to (`produced_topics`), what its producer and its dead letters must fit in.

    Raises TopicsInvalid naming each topic whose partition count differs from what the
    config needs (`checked_partitions`), with both counts; BrokerError when the brokers do
    not answer within `seconds`, or a topic is still missing then (call `create_topics`
    first: a topic it has just made may take a moment to be seen).
    """
    admin = admin_client(config)
    needed = checked_partitions(config)
    produced = produced_topics(config)
    wanted = list(dict.fromkeys([*needed, *produced]))
    where = config.kafka.bootstrap_servers
    found = retry(lambda t: _existing(admin, wanted, t), f"describing topics on {where}", seconds)
    problems = [
        f"topic {name} has {len(found[name].partitions)} partitions, the config needs "
        f"{count} ({'3 x ' if count != config.kafka.partitions else ''}kafka.partitions "
        f"= {config.kafka.partitions})"
        for name, count in needed.items()
        if len(found[name].partitions) != count
    ]
    if problems:
        raise TopicsInvalid(problems)
    return retry(
        lambda t: _max_message_bytes(admin, produced, t), f"topic configs on {where}", seconds
    )


def _described(
    admin: AdminClient, names: list[str], timeout: float
) -> dict[str, TopicDescription | None]:
    """Each topic's description, None for one that does not exist."""
    found: dict[str, TopicDescription | None] = {}
    futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout)
    for name, future in futures.items():
        try:
            found[name] = future.result()
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise TopicsInvalid([f"topic {name}: {describe(exc)}"]) from exc
            if code != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            found[name] = None
    return found


def _existing(admin: AdminClient, names: list[str], timeout: float) -> dict[str, TopicDescription]:
    """Every topic's description; a missing one is a retriable error (just created, its
    metadata has not reached every broker yet)."""
    found = _described(admin, names, timeout)
    missing = [name for name, description in found.items() if description is None]
    if missing:
        error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"missing: {', '.join(missing)}")
        raise KafkaException(error)
    return {name: description for name, description in found.items() if description is not None}


def _max_message_bytes(admin: AdminClient, names: list[str], timeout: float) -> dict[str, int]:
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    return {
        resource.name: int(future.result()["max.message.bytes"].value)
        for resource, future in futures.items()
    }


def list_topics(config: JsonEngineConfig, seconds: float = COMMAND_WAIT_S) -> list[TopicInfo]:
    """Every topic that starts with the prefix (the pipeline's and the app's internal ones),
    and the OTLP input when enabled."""
    admin = admin_client(config)
    where = f"listing topics on {config.kafka.bootstrap_servers}"
    meta = retry(lambda timeout: admin.list_topics(timeout=timeout), where, seconds)
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
