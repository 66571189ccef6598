"""Phase one of the aggregation: each input partition folds its own records into partials.

Stream time is per partition, as in Kafka Streams: the largest event time seen so far in
offset order. A record whose window ended `grace` or more before the stream time is late
(counted and dead-lettered with reason `late`); any other is added to the partial of its
(engine_id, window). Once stream time passes a window's end plus grace, no record of this
partition can change it any more: the partial is sent to the merge stage (streams/aggregates/
merge.py) through the partials topic, keyed by engine_id, followed by a mark of the
partition's stream time to every partials partition. Both are a function of the partition's
records in offset order only, whenever checkpoints fall and wherever a crash fell.

A partition read to its end and without records for `idle_seconds` of wall-clock time
sends every partial it holds and is marked idle, so that it no longer holds the merge back
(the one place where timing matters; see the README); it is active again as soon as the
broker holds records of it not read yet. Partials add up, so one sent early and another sent later
for the same window merge into the same record, unless the window was emitted in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import contains, itemgetter, mod, sub
from typing import Any, Final

import orjson

from streams.aggregates import changelog
from streams.aggregates.windows import WindowState, window_start
from streams.config import JsonEngineConfig
from streams.readers.failures import Fatal
from streams.readers.outbox import Outgoing
from streams.readers.route import Parsed, internal_error
from streams.topics import aggregates_partials_topic, aggregates_state_topic
from streams.validation import ValidationError, load_schema

# (engine_id, event time, arguments of the fold's WindowState method): one observation of an
# input record. Arguments rather than a closure: one is made per record.
Observation = tuple[str, int, tuple[Any, ...]]


@dataclass
class LocalState:
    """One input partition's fold; what its changelog partition restores."""

    stream_time: int | None = None
    marked: int | None = None  # the stream time last sent as a mark
    idle: bool = False
    next_offset: int | None = None
    windows: dict[tuple[str, int], WindowState] = field(default_factory=dict)
    dirty: set[tuple[str, int]] = field(default_factory=set)
    changed: bool = False
    seen_at: float = field(default_factory=time.monotonic)

    def meta(self) -> dict[str, Any]:
        return {
            "stream_time": self.stream_time,
            "marked": self.marked,
            "idle": self.idle,
            "next_offset": self.next_offset,
        }


NO_EXTRA: Final = (None, None, None, None, None)


def execution_observations(record: Any, event: dict[str, Any]) -> tuple[Observation, ...]:
    metrics = event["metrics"]
    get = metrics.get
    args = (metrics["latency_ms"], metrics["success"], get("input_tokens"), get("output_tokens"))
    if len(metrics) > 4 or "evaluations" in event:  # beyond the required: the rarer ones?
        extra = (
            get("cache_read_input_tokens"),
            get("cache_write_input_tokens"),
            get("reasoning_output_tokens"),
            get("time_to_first_chunk_ms"),
            event.get("evaluations"),
        )
        if extra != NO_EXTRA:
            args = (*args, extra)
    return ((event["engine_id"], event["timestamp"], args),)


def comparison_observations(record: Any, cmp: dict[str, Any]) -> tuple[Observation, ...]:
    """Per candidate a quality observation (own score, else winner.score if it won); the
    comparison counts once per engine, as a win for the winner's. A tie without a winner is
    a comparison nobody won, with the candidates' own scores only (issue 28). Its time is
    placed at the edge (its record's time when it has none: streams/readers/route.py)."""
    ts = cmp["timestamp"]
    winner = cmp.get("winner") or _NO_WINNER
    found: dict[str, list[float]] = {}
    for candidate in cmp["candidates"]:
        engine = candidate["engine_id"]
        quality = candidate.get("score")
        if quality is None and engine == winner["engine_id"]:
            quality = winner["score"]
        found.setdefault(engine, [])
        if quality is not None:
            found[engine].append(quality)
    return tuple((engine, ts, (engine == winner["engine_id"], qs)) for engine, qs in found.items())


_NO_WINNER: dict[str, Any] = {"engine_id": None, "score": None}  # a tie: no engine_id matches

# Measurements that make an execution take the record-by-record path (Extras).
_RARE_METRICS: Final = frozenset(
    (
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "reasoning_output_tokens",
        "time_to_first_chunk_ms",
    )
)
_SCHEMA: Final = load_schema("engine_execution")
# An execution or its metrics with no more keys than the required ones has none of the others.
_REQUIRED: Final = len(_SCHEMA["required"])
_REQUIRED_METRICS: Final = len(_SCHEMA["properties"]["metrics"]["required"])
_METRICS, _ENGINE_ID, _TIMESTAMP = (
    itemgetter("metrics"),
    itemgetter("engine_id"),
    itemgetter("timestamp"),
)
_LATENCY, _SUCCESS = itemgetter("latency_ms"), itemgetter("success")
_VALUE = itemgetter(1)

# A batch of executions as columns: engine ids, event times, and the arguments of
# WindowState.add_columns (latencies, successes, input tokens, output tokens; the tokens None
# when no execution of the batch reports any).
Columns = tuple[Sequence[str], Sequence[int], tuple[Sequence[Any], Sequence[Any], Any, Any]]


def execution_columns(values: list[dict[str, Any]]) -> Columns | None:
    """A batch of executions as columns, or None when one of them carries a rarer measurement
    or evaluations, and the batch is folded record by record. The values are schema-valid
    (streams/readers/route.py validates every record of the executions topic before any reader
    sees it), so their types are the schema's and are not checked again.

    Each column is a pass of a C getter over the batch, a fraction of a Python call per
    record (py-spy: the fold was a fifth of the batch thread, a seventh as columns). What is
    left is memory: each pass over a chunk of parsed records costs ~30-50 ns per record, most
    of it fetching the dicts, so the optional fields are looked up only when a record has
    more keys than the required ones. (One pass of a getter of several keys, transposed with zip,
    allocates a tuple per record: slower, as the collector then runs more often.)"""
    if max(map(len, values)) > _REQUIRED and any(map(contains, values, repeat("evaluations"))):
        return None
    metrics = list(map(_METRICS, values))
    engines = list(map(_ENGINE_ID, values))
    times = list(map(_TIMESTAMP, values))
    latencies = list(map(_LATENCY, metrics))
    successes = list(map(_SUCCESS, metrics))
    if max(map(len, metrics)) <= _REQUIRED_METRICS:  # no tokens, no rarer measurement
        return engines, times, (latencies, successes, None, None)
    if any(not _RARE_METRICS.isdisjoint(m) for m in metrics if len(m) > _REQUIRED_METRICS):
        return None
    inputs = list(map(dict.get, metrics, repeat("input_tokens")))
    outputs = list(map(dict.get, metrics, repeat("output_tokens")))
    return engines, times, (latencies, successes, inputs, outputs)


class LocalFold(changelog.Stage):
    """The first phase for one input topic (executions or comparisons), all its partitions."""

    def __init__(
        self,
        config: JsonEngineConfig,
        stage: str,
        topic: str,
        channel: str,
        observe: Callable[[Any, dict[str, Any]], tuple[Observation, ...]],
        add: Callable[..., None],
        add_many: Callable[[WindowState, list[tuple[Any, ...]]], bool] | None,
        reject: Callable[[str, str, int, Any, ValidationError], None],
        columns: Callable[[list[dict[str, Any]]], Columns | None] | None = None,
    ):
        super().__init__(config, stage, LocalState)
        agg = config.aggregation
        self.source_prefix = "E" if stage == "executions" else "C"
        self.topic = topic
        self.channel = channel
        self.observe = observe
        self.add = add
        self.add_many = add_many
        self.reject = reject
        self.columns = columns
        self.width_ms = round(agg.window_minutes * 60_000)
        self.grace_ms = round(agg.grace_seconds * 1000)
        self.idle_seconds = agg.idle_seconds
        self.max_windows = agg.max_windows_per_partition
        self.partials_topic = aggregates_partials_topic(config)
        self.state_topic = aggregates_state_topic(config)
        self.merge_partitions = config.kafka.partitions
        # Whether the broker holds records of a partition not read yet (set by the worker):
        # a partition is idle only when it is read to its end and quiet.
        self.unread: Callable[[str, int], bool] = lambda _topic, _partition: False

    # -- folding -----------------------------------------------------------------------------

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        state = self.states.get(partition)
        if state is None:
            return  # not assigned here (a record fetched before a revocation)
        first = 0  # records before the state's next offset were folded already (a replay)
        if state.next_offset is not None:
            while first < len(items) and items[first][0].offset() < state.next_offset:
                first += 1
        if first < len(items):
            st = self._fold_columns(state, items, first)
            if st is None:
                st = self._fold_records(partition, state, items, first)
            state.stream_time = st
            state.next_offset = items[-1][0].offset() + 1
            state.changed = True
        state.seen_at = time.monotonic()
        if state.idle:
            state.idle = False
            state.marked = None  # a fresh mark tells the merge it is back

    def _fold_columns(self, state: LocalState, items: Sequence[Parsed], first: int) -> int | None:
        """The batch at once, as columns (see execution_columns), when none of its records
        can be late: its stream time after it, or None, with nothing changed, for the
        record-by-record path. The same state either way: each window's values are added
        in offset order."""
        if self.columns is None:
            return None
        try:
            values = list(map(_VALUE, items[first:] if first else items))
            if None in values:  # records that failed validation
                values = [value for value in values if value is not None]
            found = self.columns(values) if values else None
            if found is None:
                return None
            engines, times, columns = found
            width = self.width_ms
            oldest, newest = min(times), max(times)
            first_start, last_start = oldest - oldest % width, newest - newest % width
            st = state.stream_time
            if st is not None and st > newest:
                newest = st
            if first_start + width + self.grace_ms <= newest:
                return None  # a record may be late: decided one by one, in offset order
        except Exception:  # what is not plain is for the record-by-record path to judge
            return None
        # Grouped by engine id alone when the batch is one window's (hashing a str is cached,
        # a tuple's is not), else by (engine id, window start); each group in offset order.
        one_window = first_start == last_start
        keys: Sequence[Any] = (
            engines
            if one_window
            else list(zip(engines, map(sub, times, map(mod, times, repeat(width))), strict=True))
        )
        groups: dict[Any, list[int]] = {}
        if len(set(keys)) > 1:
            for n, key in enumerate(keys):
                found_indices = groups.get(key)
                if found_indices is None:
                    groups[key] = [n]
                else:
                    found_indices.append(n)
        windows, dirty = state.windows, state.dirty
        for key in groups or (keys[0],):
            window_key = (key, first_start) if one_window else key
            window = windows.get(window_key)
            if window is None:
                window = windows[window_key] = WindowState()
            indices = groups.get(key)
            if indices is None:  # the whole batch is one window's
                window.add_columns(*columns)
            else:  # schema-valid values: adding cannot fail half-way through the windows
                pick = itemgetter(*indices)
                window.add_columns(*(_picked(pick, c, len(indices)) for c in columns))
            dirty.add(window_key)
        return newest

    def _fold_records(
        self, partition: int, state: LocalState, items: Sequence[Parsed], first: int
    ) -> int | None:
        """Record by record: a late record or one that fails the fold is rejected alone.
        Returns the stream time after the batch."""
        width, grace, observe = self.width_ms, self.grace_ms, self.observe
        st = state.stream_time  # per record, in offset order: what makes a record late
        # A batch's observations per window, added at the end (add_many: one pass over them),
        # with the index of each one's record (to reject the one that fails).
        touched: dict[tuple[str, int], tuple[list[tuple[Any, ...]], list[int]]] = {}
        last_engine: str | None = None
        last_start: int | None = None
        rows: list[tuple[Any, ...]] = []
        indices: list[int] = []
        for n in range(first, len(items)):
            record, value, _error = items[n]
            if value is None:
                continue  # invalid: its sink dead-letters it
            try:
                observations = observe(record, value)
                if not observations:
                    continue
                ts = observations[0][1]
                start = window_start(ts, width)
                if st is not None and start + width + grace <= st:
                    error = late_error(start, grace)
                    self.reject(self.channel, self.topic, partition, record, error)
                    continue
                for engine, _ts, args in observations:
                    if engine != last_engine or start != last_start:
                        found = touched.get((engine, start))
                        if found is None:
                            found = touched[engine, start] = ([], [])
                        rows, indices = found
                        last_engine, last_start = engine, start
                    rows.append(args)
                    indices.append(n)
            except Fatal:
                raise
            except Exception as exc:  # one record fails, never the worker
                error = internal_error(exc, f"aggregating {self.topic}")
                self.reject(self.channel, self.topic, partition, record, error)
                last_engine = last_start = None
                continue
            if st is None or ts > st:
                st = ts
        windows, dirty = state.windows, state.dirty
        for key, (rows, indices) in touched.items():
            window = windows.get(key)
            if window is None:
                window = windows[key] = WindowState()
            dirty.add(key)
            self._add(partition, window, rows, indices, items)
        return st

    def _add(
        self,
        partition: int,
        window: WindowState,
        rows: list[tuple[Any, ...]],
        indices: list[int],
        items: Sequence[Parsed],
    ) -> None:
        """A window's observations of one batch, all at once where add_many takes them, else
        one by one: a record whose observation fails is rejected, and only it."""
        if self.add_many is not None:
            try:
                if self.add_many(window, rows):
                    return
            except Fatal:
                raise
            except Exception:  # nothing was added: find the record that fails, one by one
                pass
        add = self.add
        for args, n in zip(rows, indices, strict=True):
            try:
                add(window, *args)
            except Fatal:
                raise
            except Exception as exc:
                error = internal_error(exc, f"aggregating {self.topic}")
                self.reject(self.channel, self.topic, partition, items[n][0], error)

    # -- checkpoint --------------------------------------------------------------------------

    def drain(self, now: float) -> Iterator[Outgoing]:
        """Partials of windows this partition closed, marks, and changed state."""
        for partition, state in self.states.items():
            source = f"{self.source_prefix}{partition}"
            unread = self.unread(self.topic, partition)
            if state.idle and unread:  # records wait: hold the merge back again, from now
                state.idle = False
                state.marked = None
                state.seen_at = now
            going_idle = not state.idle and not unread and now - state.seen_at >= self.idle_seconds
            if going_idle:
                state.idle = True
                state.changed = True
            st = state.stream_time
            if state.idle:  # an idle input hands over everything it holds, then steps aside
                closable = list(state.windows)
            elif st is not None:
                closable = [k for k in state.windows if k[1] + self.width_ms + self.grace_ms <= st]
            else:
                closable = []
            closable += self._over_the_cap(state, closable)
            for key in closable:
                window = state.windows.pop(key)
                state.dirty.discard(key)
                partial = {"kind": "partial", "src": source, "engine_id": key[0]}
                partial |= {"window_start": key[1], "state": window.to_dict()}
                yield (self.partials_topic, key[0].encode(), orjson.dumps(partial), None)
                yield self._state_record(partition, changelog.window_key(*key), None)
            if going_idle:
                yield from self._marks(source, state)
            elif not state.idle and st is not None and self._mark_due(state):
                state.marked = st
                state.changed = True
                yield from self._marks(source, state)
            for key in state.dirty:
                value = orjson.dumps(state.windows[key].to_dict())
                yield self._state_record(partition, changelog.window_key(*key), value)
            state.dirty.clear()
            if state.changed:
                yield self._state_record(partition, changelog.META_KEY, orjson.dumps(state.meta()))
                state.changed = False

    def _over_the_cap(self, state: LocalState, closing: list[tuple[str, int]]) -> list:
        """Past `max_windows_per_partition` open windows (thousands of engines), the oldest
        are handed over early: partials add up at the merge, which has not emitted them (the
        partition's mark is still before their end), so the values are the same and the
        memory is bounded."""
        excess = len(state.windows) - len(closing) - self.max_windows
        if excess <= 0:
            return []
        closing_set = set(closing)
        return [k for k in state.windows if k not in closing_set][:excess]

    def _mark_due(self, state: LocalState) -> bool:
        """A mark only when it can close another window: once per window, not per record."""
        st = state.stream_time
        assert st is not None
        if state.marked is None:
            return True
        step = self.width_ms
        return (st - self.grace_ms) // step > (state.marked - self.grace_ms) // step

    def _marks(self, source: str, state: LocalState) -> Iterator[Outgoing]:
        mark = orjson.dumps(
            {"kind": "mark", "src": source, "stream_time": state.marked, "idle": state.idle}
        )
        for merge_partition in range(self.merge_partitions):
            yield (self.partials_topic, None, mark, merge_partition)

    def _state_record(self, partition: int, key: bytes, value: bytes | None) -> Outgoing:
        cl = self.changelog_partition(partition)
        return (self.state_topic, key, value, cl)


def _picked(pick: itemgetter, column: Sequence[Any] | None, count: int) -> Sequence[Any] | None:
    """itemgetter's values as a sequence (it gives a single value, not a tuple, for one); a
    column that is None (no tokens in the batch) stays None."""
    if column is None:
        return None
    return pick(column) if count > 1 else (pick(column),)


def late_error(start: int, grace_ms: int) -> ValidationError:
    return ValidationError("late", f"late: window starting {start} closed (grace {grace_ms} ms)")
