"""The broker the benchmark runs against: `KAFKA_BOOTSTRAP_SERVERS` if set, else its own.

Its own broker gets its own port and a temporary data directory, so it never touches a broker
somebody else started (the demo's on 9092, the tests' on 19092) and leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams import local_kafka

DEFAULT_PORT = 19392


@contextmanager
def broker(port: int = DEFAULT_PORT) -> Iterator[tuple[str, bool]]:
    """Yield (bootstrap, started_here); stop only what was started here."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external, False
        return
    data_dir = Path(tempfile.mkdtemp(prefix="json-engine-bench-kafka-"))
    try:
        cluster = local_kafka.up(port, data_dir)
        try:
            yield cluster.bootstrap, True
        finally:
            local_kafka.down(cluster)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
