"""The schema ids the Publisher frames its values with (`kafka.schema_registry.publish`).

For teams whose consumers expect Confluent's wire format (a Java or Go JSON deserializer):
each value goes out as magic byte 0, its type's schema id, then the JSON. The id is
`publish_ids[type]` where given; else the bundled schema of the type is registered at `url`
under `<topic>-value` (the subject Confluent's serializers use by default; registering an
existing schema returns its id), once, when the Publisher starts.
"""

from __future__ import annotations

from streams.config import ConfigError, JsonEngineConfig
from streams.topics import topic_name


def publish_ids(config: JsonEngineConfig, kinds: tuple[str, ...]) -> dict[str, int]:
    """kind → schema id for each of `kinds`; ConfigError when one cannot be had."""
    settings = config.kafka.schema_registry
    ids = {kind: settings.publish_ids[kind] for kind in kinds if kind in settings.publish_ids}
    missing = [kind for kind in kinds if kind not in ids]
    if not missing:
        return ids
    if not settings.url:
        raise ConfigError(
            f"kafka.schema_registry.publish: no schema id for {', '.join(missing)}: give "
            "kafka.schema_registry.publish_ids or kafka.schema_registry.url"
        )
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from schemas import schema_file

    client = SchemaRegistryClient.new_client(settings.client_config())
    for kind in missing:
        subject = f"{topic_name(config, kind)}-value"
        schema = Schema(schema_file(kind).read_text(encoding="utf-8"), "JSON")
        try:
            ids[kind] = client.register_schema(subject, schema)
        except Exception as exc:
            raise ConfigError(
                f"kafka.schema_registry.publish: registering the {kind} schema as {subject} "
                f"at {settings.url.split('@')[-1]} failed: {type(exc).__name__}: {exc}"
            ) from exc
    return ids
