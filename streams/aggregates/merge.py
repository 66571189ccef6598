"""Phase two of the aggregation: partials merged per engine, emitted once every input closed.

Each partials partition receives, for the engines that hash to it, the partials of every input
partition (streams/aggregates/local.py), and from every input partition a mark of its stream
time. A window is emitted to the aggregated-stats topic when every input partition has marked
a stream time at or past its end plus grace: by then each one has sent its partial of it (a
partial travels before its mark, in one transaction), so the record holds them all. Inputs
marked idle do not hold windows back; when every input is idle the largest mark counts.

That is Flink's local/global aggregation with Kafka Streams' per-partition stream time: the
values depend only on the records of each input partition in offset order, never on the
producers' partitioner (an engine's executions may sit in every partition).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.aggregates import changelog
from streams.aggregates.windows import WindowState
from streams.alerts.regression import check, forget_ms, forgotten
from streams.config import JsonEngineConfig
from streams.pricing.table import price_table
from streams.readers.failures import Fatal
from streams.readers.outbox import Outgoing
from streams.readers.route import Parsed, internal_error
from streams.topics import aggregates_state_topic, topic_name
from streams.validation import ValidationError

log = logging.getLogger(__name__)


@dataclass
class MergeState:
    """One partials partition's merge; what its changelog partition restores."""

    marks: dict[str, int | None] = field(default_factory=dict)
    idle: list[str] = field(default_factory=list)
    closed: int | None = None  # windows ending (plus grace) at or before this were emitted
    next_offset: int | None = None
    windows: dict[tuple[str, int], WindowState] = field(default_factory=dict)
    # engine → {"last": its last emitted record, "baseline": regression baseline}
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: set[tuple[str, int]] = field(default_factory=set)
    changed: bool = False

    def meta(self) -> dict[str, Any]:
        return {
            "marks": self.marks,
            "idle": self.idle,
            "closed": self.closed,
            "next_offset": self.next_offset,
        }


class Merge(changelog.Stage):
    """The second phase, for every partials partition assigned here."""

    def __init__(
        self, config: JsonEngineConfig, reject: Callable[[int, Any, ValidationError], None]
    ):
        super().__init__(config, "merge", MergeState)
        agg = config.aggregation
        self.width_ms = round(agg.window_minutes * 60_000)
        self.grace_ms = round(agg.grace_seconds * 1000)
        partitions = config.kafka.partitions
        self.sources = [f"{k}{p}" for k in ("E", "C") for p in range(partitions)]
        self.output_topic = topic_name(config, "aggregated_stats")
        self.state_topic = aggregates_state_topic(config)
        self.reject = reject
        self.prices = price_table(config.pricing)
        self.regression = config.regression if config.regression.enabled else None
        self.alerts_topic = topic_name(config, "alerts")
        self.forget_ms = forget_ms(config)
        self.windows_emitted = 0
        self.alerts_emitted = 0
        self.version = 0  # moves whenever the engines' last records may have changed

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        state = self.states.get(partition)
        if state is None:
            return
        for record, value, _error in items:
            offset = record.offset()
            if state.next_offset is not None and offset < state.next_offset:
                continue
            state.next_offset = offset + 1
            state.changed = True
            if value is None:
                continue
            try:
                if value["kind"] == "mark":
                    self._mark(state, value)
                else:
                    self._partial(partition, state, record, value)
            except Fatal:
                raise
            except Exception as exc:  # one record fails, never the worker
                self.reject(partition, record, internal_error(exc, "merging partials"))

    def _mark(self, state: MergeState, mark: dict[str, Any]) -> None:
        source = mark["src"]
        if mark["idle"]:
            if source not in state.idle:
                state.idle.append(source)
            return
        if source in state.idle:
            state.idle.remove(source)
        st = mark["stream_time"]
        if st is not None and (state.marks.get(source) is None or st > state.marks[source]):
            state.marks[source] = st

    def _partial(
        self, partition: int, state: MergeState, record: Any, partial: dict[str, Any]
    ) -> None:
        key = (partial["engine_id"], partial["window_start"])
        if state.closed is not None and key[1] + self.width_ms + self.grace_ms <= state.closed:
            # Only after an idle input came back with old records: the window is out.
            error = ValidationError("late", "late: partial of an emitted window (idle input)")
            self.reject(partition, record, error)
            return
        window = state.windows.get(key)
        part = WindowState.from_dict(partial["state"])
        if window is None:
            state.windows[key] = part
        else:
            window.merge(part)
        state.dirty.add(key)

    def threshold(self, state: MergeState) -> int | None:
        """The smallest mark of the inputs that are not idle; None while one has none."""
        active = [s for s in self.sources if s not in state.idle]
        if not active:
            known = [m for m in state.marks.values() if m is not None]
            return max(known) if known else None
        marks = [state.marks.get(s) for s in active]
        if any(m is None for m in marks):
            return None
        return min(marks)  # type: ignore[type-var]

    def drain(self) -> Iterator[Outgoing]:
        for partition, state in self.states.items():
            cl = self.changelog_partition(partition)
            wm = self.threshold(state)
            advanced = wm is not None and (state.closed is None or wm > state.closed)
            if advanced:
                state.closed = wm
                state.changed = True
            closed = state.closed
            due = (
                sorted(k for k in state.windows if k[1] + self.width_ms + self.grace_ms <= closed)
                if closed is not None
                else []
            )
            for key in due:
                window = state.windows.pop(key)
                state.dirty.discard(key)
                record = window.record(key[0], key[1], self.width_ms)
                if self.prices is not None:
                    record["cost"] = self.prices.cost(record)
                yield (self.output_topic, key[0].encode(), orjson.dumps(record), None)
                yield (self.state_topic, changelog.window_key(*key), None, cl)
                self.windows_emitted += 1
                yield from self._engine_emitted(state, record, cl)
            if advanced:  # after the windows due: an engine emitted now is not forgotten
                yield from self._forget_engines(state, closed, cl)
            for key in state.dirty:
                value = orjson.dumps(state.windows[key].to_dict())
                yield (self.state_topic, changelog.window_key(*key), value, cl)
            state.dirty.clear()
            if state.changed:
                yield (self.state_topic, changelog.META_KEY, orjson.dumps(state.meta()), cl)
                state.changed = False

    def _engine_emitted(
        self, state: MergeState, record: dict[str, Any], cl: int
    ) -> Iterator[Outgoing]:
        """The engine's last record (its live series) and its regression test, both kept in
        the changelog with the window they follow, so a new owner takes them over."""
        engine_id = record["engine_id"]
        engine = state.engines.setdefault(engine_id, {"last": None, "baseline": []})
        if forgotten(engine["last"], record, self.forget_ms):  # as if it had been forgotten
            engine["baseline"] = []
        engine["last"] = record
        if self.regression is not None:
            alert = check(record, engine["baseline"], self.regression)
            if alert is not None:
                yield (self.alerts_topic, engine_id.encode(), orjson.dumps(alert), None)
                self.alerts_emitted += 1
        yield (self.state_topic, changelog.engine_key(engine_id), orjson.dumps(engine), cl)
        self.version += 1

    def _forget_engines(self, state: MergeState, closed: int, cl: int) -> Iterator[Outgoing]:
        """Engines without a window for `forget_ms` are dropped (state bounded by the
        engines of the last week, not of all time). Only once no window of theirs within
        `forget_ms` can still come: every window ending (plus grace) by `closed` is out, so
        the next one starts `forget_ms` or more after the last, and the twin, which resets
        the baseline on such a gap, agrees."""
        horizon = closed - self.forget_ms - self.width_ms - self.grace_ms
        gone = [e for e, engine in state.engines.items() if engine["last"]["window_end"] <= horizon]
        for engine_id in gone:
            del state.engines[engine_id]
            yield (self.state_topic, changelog.engine_key(engine_id), None, cl)
        if gone:
            self.version += 1

    def assign(self, partition: int, content: dict[bytes, Any]) -> None:
        super().assign(partition, content)
        self.version += 1

    def release(self, partition: int) -> None:
        super().release(partition)
        self.version += 1

    def last_records(self) -> dict[str, dict[str, Any]]:
        """Each engine's last emitted record, of the partitions held here (read from the
        metrics thread: copies, never iterating what the batch loop changes)."""
        found: dict[str, dict[str, Any]] = {}
        for state in list(self.states.values()):
            for engine_id, engine in dict(state.engines).items():
                if engine.get("last") is not None:
                    found[engine_id] = engine["last"]
        return found
