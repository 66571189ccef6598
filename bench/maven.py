"""Jars of extra JVM contenders (Kafka Connect), resolved from Maven Central with `mvn`, once,
by the same resolver as the broker's (`streams.local.kafka.resolve_jars`). The cache sits
beside the broker's (`JSON_ENGINE_CACHE` or ~/.cache/json-engine), so `mvn`'s local
repository serves what the broker already fetched.
"""

from __future__ import annotations

from pathlib import Path

from streams.local import kafka as local_kafka


def cache_root() -> Path:
    """Beside the broker's jars: `<cache>/bench/`."""
    return local_kafka.cache_dir().parent / "bench"


def resolve(name: str, artifacts: list[str]) -> Path:
    """Directory holding `artifacts` ("group:artifact:version") and their runtime dependencies."""
    return local_kafka.resolve_jars(cache_root() / name / "libs", artifacts)
