"""The broker the benchmark runs against: `KAFKA_BOOTSTRAP_SERVERS` if set, else its own.

Its own broker gets its own ports (clients on 19620, its controller on 19621: clear of the
tests' brokers on 19092-19099, 19392-19394 and 19500-19510 and of the demo's 9092) and a
temporary data directory, so it never touches a broker somebody else started, and it is
stopped by the PID it recorded, leaving nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streams.local import kafka as local_kafka

DEFAULT_PORT = 19620


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    own: bool  # started for this run (and stopped after it)
    pids: list[int] = field(default_factory=list)  # its JVM's PID, when own


@contextmanager
def broker(port: int = DEFAULT_PORT) -> Iterator[Broker]:
    """Yield the broker; stop only what was started here."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(external, False)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="json-engine-bench-kafka-"))
    try:
        cluster = local_kafka.up(port, data_dir)
        try:
            yield Broker(cluster.bootstrap, True, cluster.pids())
        finally:
            local_kafka.down(cluster)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
