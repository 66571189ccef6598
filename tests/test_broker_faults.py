"""Broker faults on a three-node local cluster (issue 12): real brokers SIGKILLed by PID, real
worker processes, topics with replication factor 3 (min.insync.replicas 2).

Each test names its adversary. What must hold: the workers never exit because of the
brokers, and every record ends in exactly one finished line of its channel, every aggregate
window in one record.

The cluster is this module's own (client ports PORT..PORT+2, controllers PORT+3..PORT+5, its
own data directory), started once and stopped by PID after; `kafka_bootstrap` is overridden
here, so nothing in this module uses the session's broker.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sinks.reader import channel_dir
from streams import events
from streams.brokers import retry, watermarks
from streams.config import JsonEngineConfig
from streams.local import kafka as local_kafka
from streams.publisher import Publisher
from streams.topics import PARTITIONER, create_topics, topic_name
from streams.training import derive_sample
from tests.conftest import ConfigFactory
from tests.test_aggregator import (
    AGG,
    FAST,
    T0,
    WIDTH,
    assert_matches,
    by_key,
    comparison,
    execution,
    in_time_order,
    oracle,
    workload,
)
from tests.test_observability import free_port, get
from tests.workers import WorkerProcess, lines_of, wait_for_lines

PORT = int(os.environ.get("JSON_ENGINE_TEST_KAFKA3_PORT", "19500"))
NODES = 3
CHANNELS = {
    **FAST,
    "training_sample": {"auto_flush_seconds": 0.2, "roll_seconds": 0.5},
}
RF3 = {"kafka": {"replication_factor": 3, "partitions": 3}, "channels": CHANNELS}
DELIVERY_TIMEOUT_S = 120.0  # a producer rides out a leader's failover (~10 s) and more
WAITING_LINE = b"no broker answers for"
OUTAGE_S = 30.0
Sample = tuple[float, int, int]


# -- the cluster ---------------------------------------------------------------------------


def in_sync(bootstrap: str) -> bool:
    """Every node in the metadata, and every partition of every topic led and fully in sync."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=5)
    except Exception:
        return False
    if len(metadata.brokers) < NODES:
        return False
    for topic in metadata.topics.values():
        if topic.error is not None:
            return False
        for partition in topic.partitions.values():
            if partition.error is not None or partition.leader < 0:
                return False
            if len(partition.isrs) < len(partition.replicas):
                return False
    return True


def wait_in_sync(cluster: local_kafka.Cluster, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not in_sync(cluster.bootstrap):
        if time.monotonic() > deadline:
            raise AssertionError(f"{cluster.bootstrap} not in sync after {timeout:.0f} s")
        time.sleep(0.5)


def create_internal_topics(bootstrap: str) -> None:
    """__consumer_offsets and __transaction_state (replication 3) are made on first use, which
    needs all three nodes; on a cluster in service they exist long before a broker fails."""
    topic = "broker-faults-warm-up"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, NODES)]).values():
        future.result(60)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic})
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topic, b"warm-up")
    producer.commit_transaction(60)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    # the new __consumer_offsets answers "load in progress" or NOT_COORDINATOR for a moment
    retry(
        lambda _t: consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False),
        "the warm-up commit",
        60,
    )
    consumer.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.Cluster]:
    data_dir = tmp_path_factory.mktemp("kafka-3-nodes")
    started = local_kafka.up(PORT, data_dir, nodes=NODES)
    try:
        create_internal_topics(started.bootstrap)
        yield started
    finally:
        local_kafka.down(started)  # by the PIDs it recorded


@pytest.fixture(scope="module")
def kafka_bootstrap(cluster: local_kafka.Cluster) -> str:
    """The configs of this module (make_config) point at the three-node cluster."""
    return cluster.bootstrap


@pytest.fixture
def brokers(cluster: local_kafka.Cluster) -> local_kafka.Cluster:
    """Every node running and every partition in sync, whatever an earlier test left."""
    if len(cluster.pids()) < NODES - 1:  # no quorum to rejoin: start them all again
        local_kafka.down(cluster)
        local_kafka.up(cluster.port, cluster.data_dir, nodes=NODES)
    for i in range(NODES):
        if not cluster.running(i):
            local_kafka.start_node(cluster, i)
    wait_in_sync(cluster)
    return cluster


# -- events --------------------------------------------------------------------------------


def publish_all(cfg: JsonEngineConfig, execs: list[dict], cmps: list[dict]) -> None:
    with Publisher(cfg, delivery_timeout_s=DELIVERY_TIMEOUT_S) as publisher:
        for e in execs:
            publisher.collect_engine_execution(e)
        for c in cmps:
            publisher.collect_comparison_result(c)


def fresh_events(rng: random.Random, executions: int, comparisons: int) -> tuple[list, list]:
    now = int(time.time() * 1000)
    engines = [f"e{i}" for i in range(6)]
    execs = [events.engine_execution(rng, engines[i % 6], now + i) for i in range(executions)]
    cmps = [events.comparison_result(rng, engines, now + i) for i in range(comparisons)]
    return execs, cmps


def qualifying(cfg: JsonEngineConfig, cmps: list[dict]) -> set[str]:
    return {
        c["comparison_id"] for c in cmps if derive_sample(c, cfg.training.thresholds) is not None
    }


def wait_for_all(cfg: JsonEngineConfig, execs: list, cmps: list, timeout: float = 120) -> None:
    """Until every channel holds at least as many lines as it should (one deadline for all)."""
    deadline = time.monotonic() + timeout
    for channel, count in (
        ("engine_execution", len(execs)),
        ("comparison_result", len(cmps)),
        ("training_sample", len(qualifying(cfg, cmps))),
    ):
        wait_for_lines(cfg, channel, count, max(0.0, deadline - time.monotonic()))


def committed_sources(cfg: JsonEngineConfig, channel: str) -> set[str]:
    """The source_trace_id of every committed record of the channel's topic (read to its end)."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"{cfg.kafka.topic_prefix}diagnosis",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    topic = topic_name(cfg, channel)
    ends = {
        p: watermarks(consumer, TopicPartition(topic, p))[1] for p in range(cfg.kafka.partitions)
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in range(cfg.kafka.partitions)])
    found: set[str] = set()
    deadline = time.monotonic() + 60
    positions = dict.fromkeys(ends, 0)
    while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                positions[message.partition()] = message.offset() + 1
                found.add(orjson.loads(message.value())["source_trace_id"])
        for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
            positions[tp.partition] = max(positions[tp.partition], tp.offset)
    consumer.close()
    return found


def assert_exactly_once(cfg: JsonEngineConfig, execs: list[dict], cmps: list[dict]) -> None:
    """Every execution, comparison and derived training sample in exactly one line."""
    ids = [orjson.loads(x)["trace_id"] for x in lines_of(cfg, "engine_execution")]
    assert len(ids) - len(set(ids)) == 0, f"{len(ids) - len(set(ids))} executions twice"
    assert set(ids) == {e["trace_id"] for e in execs}, (
        f"{len({e['trace_id'] for e in execs} - set(ids))} executions missing, "
        f"{len(set(ids) - {e['trace_id'] for e in execs})} unknown"
    )
    cids = [orjson.loads(x)["comparison_id"] for x in lines_of(cfg, "comparison_result")]
    assert len(cids) - len(set(cids)) == 0, f"{len(cids) - len(set(cids))} comparisons twice"
    assert set(cids) == {c["comparison_id"] for c in cmps}
    samples = [orjson.loads(x)["source_trace_id"] for x in lines_of(cfg, "training_sample")]
    assert len(samples) - len(set(samples)) == 0, f"{len(samples) - len(set(samples))} twice"
    missing = qualifying(cfg, cmps) - set(samples)
    if missing:  # where they went: never published, or published and not written
        published = committed_sources(cfg, "training_sample") & missing
        spool = channel_dir(cfg.output.base_path, cfg.channels.training_sample.filename)
        spool = spool / ".inprogress"
        unfinished = {
            orjson.loads(line)["source_trace_id"]
            for part in spool.glob("*.part")
            for line in part.read_bytes().splitlines()
        } & missing
        pytest.fail(
            f"{len(missing)} training samples missing, {len(published)} of them committed in "
            f"the topic, {len(unfinished)} in unfinished part files: {sorted(missing)[:5]}"
        )
    assert set(samples) == qualifying(cfg, cmps)
    assert lines_of(cfg, "dead_letter") == []


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_starts_and_works_while_one_broker_of_three_is_down(
    brokers: local_kafka.Cluster, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: node 0 (the first bootstrap address, leader of a third of the partitions)
    SIGKILLed after the topics were made and before the worker starts; back at the end."""
    path, cfg = make_config(RF3)
    create_topics(cfg)
    assert local_kafka.stop_node(brokers, 0) is not None
    worker = WorkerProcess(path, tmp_path)
    try:
        worker.start()
        execs, cmps = fresh_events(random.Random(12), 3000, 200)
        publish_all(cfg, execs, cmps)
        wait_for_all(cfg, execs, cmps)
        assert worker.alive(), worker.tail()
        local_kafka.start_node(brokers, 0)
        wait_in_sync(brokers)
        assert worker.alive(), worker.tail()
        assert worker.terminate() == 0, worker.tail()
    finally:
        if worker.proc is not None:
            worker.kill()
    assert_exactly_once(cfg, execs, cmps)


def produce_to_every_partition(cfg: JsonEngineConfig, execs: list, cmps: list) -> None:
    """One execution and one comparison into each partition, whatever their keys hash to, so
    that every input's stream time moves past the workload's windows."""
    producer = Producer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": PARTITIONER,
        }
    )
    for p in range(cfg.kafka.partitions):
        e, c = execs[p], cmps[p]
        producer.produce(
            topic_name(cfg, "engine_execution"), orjson.dumps(e), e["engine_id"], partition=p
        )
        producer.produce(
            topic_name(cfg, "comparison_result"), orjson.dumps(c), c["comparison_id"], partition=p
        )
    assert producer.flush(60) == 0


@pytest.mark.slow
def test_brokers_killed_and_restarted_one_at_a_time_under_two_workers(
    brokers: local_kafka.Cluster, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: SIGKILL of node 0, 8 s down, restart, rejoin (every partition in sync), then
    node 1, then node 2, while two workers run and a publisher sends 20k executions and 400
    comparisons in time order."""
    # Idle inputs stop holding windows after idle_seconds: more than a leader's failover, so
    # a partition stalled by a dead broker never makes its own records late.
    path, cfg = make_config({**RF3, "aggregation": {**AGG, "idle_seconds": 40}})
    create_topics(cfg)
    rng = random.Random(1212)
    engines = [f"e{i}" for i in range(8)]
    windows = 50
    execs, cmps = workload(rng, range(windows), engines, per_window=50)
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            with Publisher(cfg, delivery_timeout_s=DELIVERY_TIMEOUT_S) as publisher:
                for chunk, cmp_chunk in in_time_order(execs, cmps, 400):
                    for e in chunk:
                        publisher.collect_engine_execution(e)
                    for c in cmp_chunk:
                        publisher.collect_comparison_result(c)
                    publisher.flush()
                    time.sleep(1.0)
        except BaseException as exc:  # reported by the test's own thread
            failures.append(exc)

    workers = [WorkerProcess(path, tmp_path, f"w{n}") for n in (1, 2)]
    feeder = threading.Thread(target=feed)
    timings: dict[str, float] = {}
    try:
        for worker in workers:
            worker.start()
        feeder.start()
        time.sleep(5)
        for i in range(NODES):
            began = time.monotonic()
            assert local_kafka.stop_node(brokers, i) is not None
            time.sleep(8)
            local_kafka.start_node(brokers, i)
            wait_in_sync(brokers)
            timings[f"node {i} down to in sync"] = round(time.monotonic() - began, 1)
            for worker in workers:
                assert worker.alive(), f"{worker.name} exited:\n{worker.tail()}"
        feeder.join(180)
        assert not feeder.is_alive(), "publisher still running"
        assert failures == []
        ahead = T0 + (windows + 2) * WIDTH
        last_execs = [execution(rng, engines[p], ahead) for p in range(3)]
        last_cmps = [comparison(rng, engines, ahead) for _ in range(3)]
        produce_to_every_partition(cfg, last_execs, last_cmps)
        all_execs, all_cmps = execs + last_execs, cmps + last_cmps
        expected = {k: v for k, v in oracle(execs, cmps).items() if k[1] < T0 + windows * WIDTH}
        wait_for_all(cfg, all_execs, all_cmps, timeout=120)
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=120)
        for worker in workers:
            assert worker.alive(), f"{worker.name} exited:\n{worker.tail()}"
        for worker in workers:
            assert worker.terminate() == 0, worker.tail()
    finally:
        for worker in workers:
            if worker.proc is not None:
                worker.kill()
    print("timings:", timings)
    assert_exactly_once(cfg, all_execs, all_cmps)
    streamed = by_key(lines_of(cfg, "aggregated_stats"))  # each (engine_id, window_start) once
    closed = {k: v for k, v in streamed.items() if k[1] < T0 + windows * WIDTH}
    assert set(closed) == set(expected), (
        f"missing {sorted(set(expected) - set(closed))[:10]}, "
        f"unexpected {sorted(set(closed) - set(expected))[:10]}"
    )
    for key, record in closed.items():
        assert_matches(record, expected[key])


def poll_health(port: int, seconds: float, until_ready: bool = False) -> list[Sample]:
    """(seconds since the start, /livez status, /readyz status) about once a second, for
    `seconds` (or until /readyz answers 200, with `until_ready`)."""
    samples: list[Sample] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        samples.append(
            (round(time.monotonic() - began, 1), get(port, "/livez")[0], get(port, "/readyz")[0])
        )
        if until_ready and samples[-1][2] == 200:
            break
        time.sleep(1.0)
    return samples


def wait_ready(port: int, timeout: float) -> None:
    samples = poll_health(port, timeout, until_ready=True)
    assert samples and samples[-1][2] == 200, f"/readyz not 200 within {timeout:.0f} s: {samples}"


def waiting_lines(log: bytes) -> list[tuple[float, str]]:
    """(time, message) of the worker's "no broker answers" lines (JSON logs)."""
    found = []
    for line in log.splitlines():
        if WAITING_LINE not in line or not line.startswith(b"{"):
            continue
        record = orjson.loads(line)
        at = datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        found.append((at, record["message"]))
    return found


def stop(worker: WorkerProcess, timeout: float = 60) -> int | None:
    """SIGTERM; the exit code, or None when the worker has not exited within `timeout`."""
    try:
        return worker.terminate(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.slow
def test_every_broker_down_for_30s_then_back(
    brokers: local_kafka.Cluster, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: all three nodes SIGKILLed at once, 30 s without any broker, then started
    again; the worker must wait (alive, not ready, saying so every few seconds) and carry on:
    ready again, every record once, a graceful stop."""
    port = free_port()
    path, cfg = make_config({**RF3, "metrics": {"port": port}})
    create_topics(cfg)
    rng = random.Random(1230)
    worker = WorkerProcess(path, tmp_path)
    try:
        worker.start()
        before = fresh_events(rng, 2000, 100)
        publish_all(cfg, *before)
        wait_for_all(cfg, *before)
        wait_ready(port, 30)
        down_at = time.time()
        for i in range(NODES):
            assert local_kafka.stop_node(brokers, i) is not None
        outage = poll_health(port, OUTAGE_S)
        alive_in_outage = worker.alive()
        waiting = [(at - down_at, m) for at, m in waiting_lines(worker.log()) if at >= down_at]
        local_kafka.up(brokers.port, brokers.data_dir, nodes=NODES)
        wait_in_sync(brokers)
        back_at = time.monotonic()
        after = fresh_events(rng, 2000, 100)
        publish_all(cfg, *after)
        execs, cmps = before[0] + after[0], before[1] + after[1]
        wait_for_all(cfg, execs, cmps, timeout=60)
        returned = poll_health(port, max(10.0, 75 - (time.monotonic() - back_at)), True)
        alive_after = worker.alive()
        code = stop(worker, 30)
    finally:
        if worker.proc is not None:
            worker.kill()
    print("outage:", outage, "\nwaiting lines:", waiting, "\nafter the return:", returned)
    assert alive_in_outage, worker.tail()
    assert all(live == 200 for _t, live, _r in outage), f"/livez in the outage: {outage}"
    # Not ready within a few seconds of the outage, and not ready until the brokers return.
    first = next((n for n, (_t, _l, ready) in enumerate(outage) if ready == 503), None)
    assert first is not None and outage[first][0] < 10, f"/readyz in the outage: {outage}"
    assert all(ready == 503 for _t, _l, ready in outage[first:]), f"/readyz in the outage: {outage}"
    # "every few seconds", each saying for how long no broker has answered
    times = [0.0, *(t for t, _m in waiting), OUTAGE_S]
    assert len(waiting) >= 3 and max(b - a for a, b in itertools.pairwise(times)) <= 12, waiting
    said = [float(m.split("for ", 1)[1].split("s", 1)[0]) for _t, m in waiting]
    assert max(said) >= OUTAGE_S - 12, f"the waiting lines understate the outage: {waiting}"
    assert alive_after, worker.tail()
    assert all(live == 200 for _t, live, _r in returned), (
        f"/livez after the brokers returned: {returned}\n{worker.tail()}"
    )
    assert returned[-1][2] == 200, f"/readyz after the brokers returned: {returned}"
    assert_exactly_once(cfg, execs, cmps)
    assert code == 0, f"SIGTERM: exit {code} (None: still running 30 s after it)\n{worker.tail()}"
