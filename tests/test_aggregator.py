"""Per-engine windows on real workers: equal to the pandas recomputation, emitted once and
only after the grace, late events dead-lettered, idle engines closed, SIGKILL-safe."""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Consumer

from sinks.offline.aggregate_batch import aggregate_frames
from streams.aggregates.local import execution_observations
from streams.aggregates.windows import MAX_EVALUATION_NAMES, WindowState
from streams.publisher import Publisher
from streams.readers.route import LocalRecord
from streams.topics import create_topics
from streams.validation import ValidationError, Validator
from tests.conftest import ConfigFactory
from tests.workers import READY, WorkerProcess, lines_of, records, wait_for_lines

T0 = 1_764_000_000_000  # a multiple of the window width
WIDTH = 3000  # window_minutes 0.05
AGG = {"window_minutes": 0.05, "grace_seconds": 1, "idle_seconds": 5, "checkpoint_seconds": 0.3}
FAST = {
    c: {"auto_flush_seconds": 0.2, "roll_seconds": 0.5}
    for c in ("aggregated_stats", "engine_execution", "comparison_result", "dead_letter")
}
# One partition: every engine shares its stream time, so the windows close predictably.
ONE_PARTITION = {
    "kafka": {"partitions": 1},
    "aggregation": AGG,
    "channels": FAST,
    "training": {"enabled": False},
}
EXACT = ("engine_id", "window_start", "window_end", "count", "success_count", "success_rate")


def execution(rng: random.Random, engine: str, ts: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "trace_id": f"t-{rng.getrandbits(64):016x}",
        "task_id": "task",
        "engine_id": engine,
        "engine_instance_id": f"{engine}-1",
        "timestamp": ts,
        "input": "q",
        "output": "a",
        "status": "ok",
        "metrics": {
            "latency_ms": round(rng.lognormvariate(3.5, 0.8), 3),
            "memory_mb": 10.0,
            "cpu_percent": 5.0,
            "success": rng.random() < 0.9,
        },
    }


def comparison(rng: random.Random, engines: list[str], ts: int) -> dict[str, Any]:
    chosen = rng.sample(engines, min(3, len(engines)))
    candidates = [{"engine_id": e, "output": f"out-{e}", "metrics": {}} for e in chosen]
    for c in candidates:
        if rng.random() < 0.5:
            c["score"] = round(rng.random(), 3)
    winner = rng.choice(chosen)
    return {
        "comparison_id": f"c-{rng.getrandbits(64):016x}",
        "query": "q",
        "candidates": candidates,
        "winner": {"engine_id": winner, "score": round(rng.random(), 3)},
        "metrics": {},
        "timestamp": ts,
    }


def workload(
    rng: random.Random, windows: range, engines: list[str], per_window: int = 30
) -> tuple[list[dict], list[dict]]:
    """Executions and comparisons, out of order by up to 400 ms (less than the grace)."""
    execs, cmps = [], []
    for w in windows:
        for engine in engines:
            execs += [
                execution(rng, engine, T0 + w * WIDTH + rng.randrange(WIDTH))
                for _ in range(per_window)
            ]
        cmps += [comparison(rng, engines, T0 + w * WIDTH + rng.randrange(WIDTH)) for _ in range(8)]
    for events in (execs, cmps):
        events.sort(key=lambda e: e["timestamp"] + rng.randrange(400))
    return execs, cmps


def publish(cfg: Any, execs: list[dict], cmps: list[dict]) -> None:
    with Publisher(cfg) as publisher:
        for e in execs:
            publisher.collect_engine_execution(e)
        for c in cmps:
            publisher.collect_comparison_result(c)


def in_time_order(
    execs: list[dict], cmps: list[dict], size: int
) -> list[tuple[list[dict], list[dict]]]:
    """Chunks of executions, each with the comparisons of its time, as a live feed sends them."""
    chunks = [execs[i : i + size] for i in range(0, len(execs), size)]
    cmp_chunks: list[list[dict]] = [[] for _ in chunks]
    for c in cmps:
        index = next(
            (i for i, chunk in enumerate(chunks) if chunk[-1]["timestamp"] >= c["timestamp"]),
            len(chunks) - 1,
        )
        cmp_chunks[index].append(c)
    return list(zip(chunks, cmp_chunks, strict=True))


def oracle(execs: list[dict], cmps: list[dict]) -> dict[tuple[str, int], dict]:
    frame = pd.json_normalize(execs) if execs else pd.DataFrame()
    got = aggregate_frames(frame, pd.json_normalize(cmps) if cmps else pd.DataFrame(), 0.05)
    return {(r["engine_id"], r["window_start"]): r for r in got}


def assert_matches(streamed: dict, expected: dict) -> None:
    for name in EXACT:
        assert streamed[name] == expected[name], name
    s_lat, e_lat = streamed["latency_ms"], expected["latency_ms"]
    assert (s_lat["min"], s_lat["max"]) == (e_lat["min"], e_lat["max"])
    assert math.isclose(s_lat["avg"], e_lat["avg"], rel_tol=1e-9)
    for q in ("p50", "p95", "p99"):
        assert abs(s_lat[q] - e_lat[q]) <= 0.01 * e_lat[q] + 1e-9, q
    assert streamed["comparisons"] == expected["comparisons"]
    assert streamed["quality"]["count"] == expected["quality"]["count"]
    if expected["quality"]["mean"] is None:
        assert streamed["quality"]["mean"] is None
    else:
        assert math.isclose(streamed["quality"]["mean"], expected["quality"]["mean"], rel_tol=1e-9)
    assert streamed.get("tokens") == expected.get("tokens")
    s_first, e_first = (
        streamed.get("time_to_first_chunk_ms"),
        expected.get("time_to_first_chunk_ms"),
    )
    assert (s_first is None) == (e_first is None)
    if e_first is not None:
        assert s_first["count"] == e_first["count"]
        assert math.isclose(s_first["avg"], e_first["avg"], rel_tol=1e-9)
        for q in ("p50", "p95", "p99"):
            assert abs(s_first[q] - e_first[q]) <= 0.01 * e_first[q] + 1e-9, q
    s_eval, e_eval = streamed.get("evaluations", {}), expected.get("evaluations", {})
    assert list(s_eval) == list(e_eval)
    for name, want in e_eval.items():
        got = s_eval[name]
        assert (got["count"], got["scored"]) == (want["count"], want["scored"]), name
        assert got["mean"] == want["mean"] or math.isclose(got["mean"], want["mean"], rel_tol=1e-9)


def by_key(lines: list[bytes]) -> dict[tuple[str, int], dict]:
    result: dict[tuple[str, int], dict] = {}
    for r in records(lines):
        key = (r["engine_id"], r["window_start"])
        assert key not in result, f"{key} written twice"
        result[key] = r
    return result


def topic_keys(cfg: Any) -> list[tuple[str, int]]:
    """Every record of the aggregated-stats topic, to check each window is emitted once."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"{cfg.kafka.topic_prefix}check",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([cfg.kafka.topic_prefix + "aggregated-stats"])
    keys, idle = [], 0
    while idle < 6:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            idle += 1
            continue
        idle = 0
        r = orjson.loads(msg.value())
        keys.append((r["engine_id"], r["window_start"]))
    consumer.close()
    return keys


def test_window_state_round_trip_and_bounded_size() -> None:
    rng = random.Random(3)
    state = WindowState()
    values = [rng.lognormvariate(3, 1.5) for _ in range(50_000)]
    for v in values:
        state.add_execution(v, True)
    state.add_comparison(0.5, True)
    state.add_comparison(None, False)
    restored = WindowState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored.record("e", 0, WIDTH) == state.record("e", 0, WIDTH)
    assert len(orjson.dumps(state.to_dict())) <= 64 * 1024
    record = restored.record("e", 0, WIDTH)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(values, q, method="lower"))
        assert abs(record["latency_ms"][f"p{round(q * 100)}"] - exact) <= 0.01 * exact
    assert record["quality"] == {"count": 1, "mean": 0.5}
    assert record["comparisons"] == {"count": 2, "wins": 1, "win_rate": 0.5}


def test_the_rarer_measurements_fold_merge_and_restore_as_the_twin_computes_them() -> None:
    """Cache and reasoning tokens, time to first chunk and evaluations (more names than a
    window keeps): two partials of each window, one restored from its changelog form, merged
    in either order, equal the pandas twin."""
    rng = random.Random(24)
    events, partials = [], {}
    for n in range(3000):
        event = execution(rng, f"e{rng.randrange(3)}", T0 + rng.randrange(4 * WIDTH))
        metrics = event["metrics"]
        for name, chance in (
            ("input_tokens", 0.5),
            ("cache_read_input_tokens", 0.3),
            ("cache_write_input_tokens", 0.1),
            ("reasoning_output_tokens", 0.2),
        ):
            if rng.random() < chance:
                metrics[name] = rng.randrange(1000)
        if rng.random() < 0.3:
            metrics["time_to_first_chunk_ms"] = round(rng.random() * 50, 3)
        if rng.random() < 0.2:
            event["evaluations"] = [
                {"name": f"n{rng.randrange(20):02d}", "score": rng.random()},
                {"name": f"n{rng.randrange(20):02d}", "label": "relevant"},
            ]
        events.append(event)
        ((engine, ts, args),) = execution_observations(None, event)
        states = partials.setdefault((engine, ts - ts % WIDTH), (WindowState(), WindowState()))
        states[n % 2].add_execution(*args)
    twin = by_key(
        [orjson.dumps(r) for r in aggregate_frames(pd.json_normalize(events), pd.DataFrame(), 0.05)]
    )
    for (engine, start), (first, second) in partials.items():
        restored = WindowState.from_dict(orjson.loads(orjson.dumps(first.to_dict())))
        second.merge(restored)
        assert_matches(second.record(engine, start, WIDTH), twin[(engine, start)])
    assert any(len(r.get("evaluations", {})) == MAX_EVALUATION_NAMES for r in twin.values())


def test_a_quiet_window_keeps_its_latencies_exactly_and_merges_into_a_sketch() -> None:
    """A window of a quiet engine (thousands of engines: most windows hold a few events)
    keeps its latencies as they are, a fraction of a sketch's memory; partials merge in any
    order, into a sketch once they are many."""
    rng = random.Random(4)
    parts = [WindowState() for _ in range(4)]
    values = []
    for n, part in enumerate(parts):
        for _ in range(10 + n):
            values.append(rng.lognormvariate(3, 1))
            part.add_execution(values[-1], True)
    assert all(type(p.latencies) is list for p in parts)
    exact = {q: float(np.quantile(values[:10], q, method="lower")) for q in (0.5, 0.95, 0.99)}
    assert [
        parts[0].record("e", 0, WIDTH)["latency_ms"][f"p{round(q * 100)}"] for q in exact
    ] == list(exact.values())
    merged = [WindowState.from_dict(orjson.loads(orjson.dumps(p.to_dict()))) for p in parts]
    backwards = [WindowState.from_dict(p.to_dict()) for p in reversed(parts)]
    for states in (merged, backwards):
        for other in states[1:]:
            states[0].merge(other)
    assert type(merged[0].latencies) is not list  # 46 values: a sketch
    assert merged[0].record("e", 0, WIDTH) == backwards[0].record("e", 0, WIDTH)
    for q in (0.5, 0.95, 0.99):
        exact_q = float(np.quantile(values, q, method="lower"))
        got = merged[0].record("e", 0, WIDTH)["latency_ms"][f"p{round(q * 100)}"]
        assert abs(got - exact_q) <= 0.01 * exact_q


def test_windows_equal_the_recomputation_once_after_grace_with_late_and_idle(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(ONE_PARTITION)
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    rng = random.Random(21)
    active = ["e0", "e1", "e2", "e3"]
    # e4 sends only in windows 0-1, then stops: its last window must still close.
    early_execs, early_cmps = workload(rng, range(2), [*active, "e4"])
    later_execs, later_cmps = workload(rng, range(2, 6), active)
    execs, cmps = early_execs + later_execs, early_cmps + later_cmps
    publish(cfg, execs, cmps)  # stream time now just under T0 + 18000: windows 0-4 close
    closed = {(e, w) for w in range(5) for e in (active if w >= 2 else [*active, "e4"])}
    lines = wait_for_lines(cfg, "aggregated_stats", len(closed), timeout=60)
    assert {(r["engine_id"], (r["window_start"] - T0) // WIDTH) for r in records(lines)} == closed

    # Late: window 1 closed long ago. One millisecond short of window 5's end + grace.
    late = [execution(rng, "e1", T0 + WIDTH + 10), execution(rng, "e4", T0 + WIDTH + 20)]
    edge = execution(rng, "e0", T0 + 6 * WIDTH + 999)
    publish(cfg, [*late, edge], [])
    rejected = records(wait_for_lines(cfg, "dead_letter", 2, timeout=30))
    assert sorted(orjson.loads(r["payload"])["trace_id"] for r in rejected) == sorted(
        e["trace_id"] for e in late
    )
    assert {r["reason"] for r in rejected} == {"late"}
    time.sleep(2)
    assert len(lines_of(cfg, "aggregated_stats")) == len(closed)  # window 5 still open

    last = [execution(rng, "e0", T0 + 6 * WIDTH + 1000)]
    publish(cfg, last, [comparison(rng, active, T0 + 6 * WIDTH + 1000)])
    expected_keys = closed | {(e, 5) for e in active}
    lines = wait_for_lines(cfg, "aggregated_stats", len(expected_keys), timeout=30)
    streamed = by_key(lines)
    assert {(e, (w - T0) // WIDTH) for e, w in streamed} == expected_keys
    expected = oracle(execs, cmps)  # the late events are in no window
    for key, record in streamed.items():
        assert_matches(record, expected[key])
    assert worker.terminate() == 0
    keys = topic_keys(cfg)
    assert len(keys) == len(set(keys)) == len(expected_keys)  # each window emitted once


@pytest.mark.slow
def test_sigkill_mid_window_gives_one_record_per_window_with_the_same_values(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(ONE_PARTITION)
    create_topics(cfg)
    rng = random.Random(8)
    engines = ["e0", "e1", "e2"]
    execs, cmps = workload(rng, range(12), engines, per_window=60)
    worker = WorkerProcess(path, tmp_path).start()

    def feed() -> None:
        for chunk, cmp_chunk in in_time_order(execs, cmps, 180):
            publish(cfg, chunk, cmp_chunk)
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        for kill in range(4):
            time.sleep(rng.uniform(1.0, 2.5))
            worker.kill()
            worker.start(wait_ready=kill % 2 == 1)
        feeder.join()
        publish(
            cfg,
            [execution(rng, "e0", T0 + 14 * WIDTH)],
            [comparison(rng, engines, T0 + 14 * WIDTH)],
        )
        wait_for_lines(cfg, "aggregated_stats", 12 * len(engines), timeout=120)
        worker.wait_for(READY)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    expected = oracle(execs, cmps)
    assert {k for k in streamed if (k[1] - T0) // WIDTH < 12} == {
        k for k in expected if (k[1] - T0) // WIDTH < 12
    }
    for key, record in streamed.items():
        if (key[1] - T0) // WIDTH < 12:
            assert_matches(record, expected[key])


def test_lateness_is_decided_by_the_partitions_own_stream_time_in_offset_order() -> None:
    from streams.aggregates.aggregator import Aggregator
    from streams.aggregates.local import LocalState
    from streams.config import JsonEngineConfig
    from streams.readers.dead_letter import DeadLetterPolicy

    cfg = JsonEngineConfig()
    cfg.aggregation.window_minutes = 0.05
    cfg.aggregation.grace_seconds = 1
    dead = DeadLetterPolicy(cfg)
    agg = Aggregator(cfg, dead)
    rng = random.Random(1)
    agg.executions.states[0] = LocalState()
    agg.executions.states[1] = LocalState()
    # Partition 0 has moved on to T0 + 9000: window 0 (end 3000, +1000 grace) is closed there.
    on_0 = [execution(rng, "e", T0 + 9000), execution(rng, "e", T0 + 10)]
    # Partition 1 is at T0 + 3999, one ms short of closing window 0: an old event still counts.
    on_1 = [execution(rng, "e", T0 + 3999), execution(rng, "e", T0 + 20)]
    for partition, events in ((0, on_0), (1, on_1)):
        items = [(LocalRecord(i, orjson.dumps(e)), e, None) for i, e in enumerate(events)]
        agg.executions.on_parsed(partition, items)
    assert agg.late_events == 1
    assert [orjson.loads(v)["offset"] for _t, _k, v, _p in dead.drain()] == [1]
    assert agg.executions.states[1].windows[("e", T0)].count == 1


def test_merge_waits_for_every_input_and_idle_inputs_stop_holding() -> None:
    from streams.aggregates.merge import Merge, MergeState
    from streams.config import JsonEngineConfig

    cfg = JsonEngineConfig()
    cfg.kafka.partitions = 2  # inputs E0, E1, C0, C1
    merge = Merge(cfg, lambda _p, _r: None)
    state = MergeState(marks={"E0": 100, "E1": 90, "C0": 120})
    assert merge.threshold(state) is None  # C1 has marked nothing yet: wait for it
    state.idle = ["C1"]
    assert merge.threshold(state) == 90  # idle C1 holds nothing: the smallest mark counts
    state.idle = ["E0", "E1", "C0", "C1"]
    assert merge.threshold(state) == 120  # all idle: the largest counts


def test_the_batched_sketch_has_the_bins_of_the_library_adding_one_by_one() -> None:
    """Adversary: values at every edge of the latency range (0, denormal-small, 10^12, which
    makes the store collapse its lowest bins), flushed at any point: the bins, counts, sum,
    extremes and quantiles are those of ddsketch's own add, value by value."""
    from ddsketch import LogCollapsingLowestDenseDDSketch

    from streams.aggregates.windows import RELATIVE_ACCURACY, SKETCH_BINS, Sketch, sketch_to_dict

    rng = random.Random(3)
    for _trial in range(10):
        values = [
            rng.choice(
                (rng.lognormvariate(5, 2), rng.uniform(0, 1e12), 0.0, 5e-324, rng.randrange(5000))
            )
            for _ in range(3000)
        ]
        library = LogCollapsingLowestDenseDDSketch(
            relative_accuracy=RELATIVE_ACCURACY, bin_limit=SKETCH_BINS
        )
        ours = Sketch()
        for value in values:
            library.add(value)
            if rng.random() < 0.01:
                ours.flush()
            ours.add(value)
        saved = sketch_to_dict(ours)
        store = library._store
        assert saved["bins"] == {str(i + store.offset): c for i, c in enumerate(store.bins) if c}
        assert (saved["zero"], saved["count"], saved["sum"]) == (
            library._zero_count,
            library._count,
            library._sum,
        )
        assert (saved["min"], saved["max"]) == (library._min, library._max)
        for q in (0.5, 0.95, 0.99):
            assert ours.get_quantile_value(q) == library.get_quantile_value(q)


def test_a_batch_folds_into_the_state_of_one_by_one_and_a_bad_record_fails_alone() -> None:
    """Adversary: batches of any size, tokens reported by some executions only, the rarer
    measurements on a few, and (validation off) a latency that is not a number. The fold of
    each batch at once gives exactly the state of adding the records one by one, float sums
    included; the bad record is rejected as `internal`, alone."""
    from streams.aggregates.aggregator import Aggregator
    from streams.aggregates.local import LocalState
    from streams.config import JsonEngineConfig
    from streams.readers.dead_letter import DeadLetterPolicy

    cfg = JsonEngineConfig()
    dead = DeadLetterPolicy(cfg)
    agg = Aggregator(cfg, dead)
    agg.executions.states[0] = LocalState()
    rng = random.Random(9)
    events = []
    for i in range(3000):
        event = execution(rng, f"e{rng.randrange(3)}", T0 + i * 7)
        metrics = event["metrics"]
        if rng.random() < 0.6:
            metrics["input_tokens"] = rng.randrange(500)
        if rng.random() < 0.5:
            metrics["output_tokens"] = rng.randrange(500)
        if rng.random() < 0.02:
            metrics["time_to_first_chunk_ms"] = rng.random() * 30
        events.append(event)
    events[1234]["metrics"]["latency_ms"] = "slow"
    expected: dict[tuple[str, int], WindowState] = {}
    for event in events[:1234] + events[1235:]:
        ((engine, ts, args),) = execution_observations(None, event)
        expected.setdefault((engine, ts - ts % 60_000), WindowState()).add_execution(*args)
    items = [(LocalRecord(i, orjson.dumps(e)), e, None) for i, e in enumerate(events)]
    at = 0
    while at < len(items):
        size = rng.choice((1, 7, 100, 1000))
        agg.executions.on_parsed(0, items[at : at + size])
        at += size
    folded = agg.executions.states[0].windows
    assert folded.keys() == expected.keys()
    for key, window in folded.items():
        assert orjson.dumps(window.to_dict()) == orjson.dumps(expected[key].to_dict()), key
    [(_topic, _key, letter, _partition)] = list(dead.drain())
    assert orjson.loads(letter)["offset"] == 1234
    assert orjson.loads(letter)["reason"] == "internal"


@pytest.mark.parametrize("seed", range(4))
def test_batches_folded_as_columns_give_the_state_of_one_record_at_a_time(seed: int) -> None:
    """Adversary: the columns fast path (streams/aggregates/local.py) on batches that span
    several windows and engines, carry invalid records (parsed as None), late records, integer
    latencies, tokens on some, and a latency that is a bool or a string, or an engine id that
    is not a string, which validation (as the route does it, whatever the channel's
    `validate`) hands the fold as None: the columns path checks no types. Whatever the batch
    sizes, the state, stream time and dead letters equal those of a fold given one record at
    a time (dead letters of a batch are in the order its checks found them: late ones while
    reading, failing ones while adding)."""
    from streams.aggregates.aggregator import Aggregator
    from streams.aggregates.local import LocalState
    from streams.config import JsonEngineConfig
    from streams.readers.dead_letter import DeadLetterPolicy

    cfg = JsonEngineConfig()
    cfg.aggregation.window_minutes = 0.05
    cfg.aggregation.grace_seconds = 1
    rng = random.Random(seed)
    validator = Validator()
    refused = 0
    items = []
    ts = T0
    for i in range(4000):
        ts += rng.choice((0, 1, 5, 40))
        late = i < 1500 and rng.random() < 0.02  # late ones in the first stretch only
        event = execution(rng, f"e{rng.randrange(5)}", ts - (9000 if late else 0))
        metrics = event["metrics"]
        if rng.random() < 0.3:
            metrics["latency_ms"] = rng.randrange(1000)
        if rng.random() < 0.5:
            metrics["input_tokens"] = rng.randrange(500)
        if rng.random() < 0.003:
            metrics["latency_ms"] = rng.choice((True, "slow"))
        if rng.random() < 0.003:
            event["engine_id"] = 7
        try:
            value = validator.validate("engine_execution", orjson.dumps(event))
        except ValidationError:
            value = None
            refused += 1
        if rng.random() < 0.02:
            value = None
        items.append((LocalRecord(i, orjson.dumps(event)), value, None))

    folded_as_columns = 0

    def fold(sizes: list[int], columns: bool) -> tuple[Any, ...]:
        dead = DeadLetterPolicy(cfg)
        agg = Aggregator(cfg, dead)
        fold_columns = agg.executions._fold_columns

        def counted(*args: Any) -> int | None:
            nonlocal folded_as_columns
            st = fold_columns(*args)
            folded_as_columns += st is not None
            return st

        agg.executions._fold_columns = counted  # type: ignore[method-assign]
        if not columns:
            agg.executions.columns = None
        agg.executions.states[0] = LocalState()
        at = 0
        for size in sizes:
            agg.executions.on_parsed(0, items[at : at + size])
            at += size
        state = agg.executions.states[0]
        windows = {k: orjson.dumps(w.to_dict()) for k, w in state.windows.items()}
        letters = sorted(orjson.loads(v)["offset"] for _t, _k, v, _p in dead.drain())
        return windows, state.stream_time, state.next_offset, letters

    sizes = []
    while sum(sizes) < len(items):
        sizes.append(rng.choice((1, 3, 20, 50, 120, 1000)))
    expected = fold([1] * len(items), columns=False)
    assert expected[3], "the adversary made no late record"
    assert refused, "the adversary made no record that validation refuses"
    assert not folded_as_columns
    assert fold(sizes, columns=True) == expected
    assert folded_as_columns >= 3, "the columns path was not taken"
