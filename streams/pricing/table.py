"""A dated price table, and the cost of an aggregated_stats window priced by it.

Cost is a function of a window's record alone (its engine, start, execution count and token
sums), so the stream, the pandas twin and a backfill with a new table (`aggregate
--from-files --prices FILE`) compute it the same way. A window is priced at the price valid
at its start.

Which price: among the entries whose `engine` is the engine_id itself, the one with the
latest `valid_from` not after the window's start; if there is none, the same among the
entries whose glob matches (`fnmatchcase`); entries equal on both keep the first listed.

Tokens count once: `input` includes the cached tokens (read and write) and `output` includes
the reasoning tokens, as the GenAI conventions define them, so each part is priced at its own
price and the rest at the plain price (a part without its own price costs the plain one).
Executions that report no tokens are `unpriced`: their cost is unknown, not zero, and a
window with none priced has no `total`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from streams.config import Price, PricingConfig

PER = 1_000_000  # prices are per million tokens


@dataclass(frozen=True)
class PriceTable:
    currency: str
    exact: dict[str, list[tuple[int, Price]]]  # engine_id → (valid_from ms, price), latest first
    globs: list[tuple[int, int, Price]]  # (valid_from ms, -position, price), latest first

    @classmethod
    def of(cls, config: PricingConfig) -> PriceTable:
        exact: dict[str, list[tuple[int, Price]]] = {}
        globs: list[tuple[int, int, Price]] = []
        for position, price in enumerate(config.prices):
            if any(c in price.engine for c in "*?["):
                globs.append((price.valid_from_ms, -position, price))
            else:
                exact.setdefault(price.engine, []).append((price.valid_from_ms, price))
        for entries in exact.values():
            entries.sort(key=lambda entry: entry[0], reverse=True)  # stable: first listed wins
        globs.sort(key=lambda entry: entry[:2], reverse=True)
        return cls(config.currency.upper(), exact, globs)

    def price(self, engine_id: str, at_ms: int) -> Price | None:
        """The price of `engine_id` valid at `at_ms`, or None."""
        for valid_from, price in self.exact.get(engine_id, ()):
            if valid_from <= at_ms:
                return price
        for valid_from, _position, price in self.globs:
            if valid_from <= at_ms and fnmatchcase(engine_id, price.engine):
                return price
        return None

    def cost(self, record: dict[str, Any]) -> dict[str, Any]:
        """The `cost` of an aggregated_stats record (Contract → Aggregates)."""
        count = record["count"]
        tokens = record.get("tokens") or {}
        reported = tokens.get("count", 0)
        price = self.price(record["engine_id"], record["window_start"])
        if price is None or not reported:
            return {"currency": self.currency, "priced": 0, "unpriced": count}
        cache_read = tokens.get("cache_read_input", 0)
        cache_write = tokens.get("cache_write_input", 0)
        reasoning = tokens.get("reasoning_output", 0)
        plain_input = max(0, tokens["input"] - cache_read - cache_write)
        plain_output = tokens["output"]
        parts = {
            "cache_read_input": _part(cache_read, price.cached_input, price.input),
            "cache_write_input": _part(cache_write, price.cache_write_input, price.input),
            "reasoning_output": 0.0,
        }
        if price.reasoning_output is not None:
            plain_output = max(0, plain_output - reasoning)
            parts["reasoning_output"] = reasoning * price.reasoning_output / PER
        parts = {
            "input": plain_input * price.input / PER,
            "output": plain_output * price.output / PER,
            **parts,
        }
        return {
            "total": sum(parts.values()),
            "currency": self.currency,
            "priced": reported,
            "unpriced": count - reported,
            **parts,
        }


def _part(tokens: int, own: float | None, plain: float) -> float:
    return tokens * (plain if own is None else own) / PER


def price_table(config: PricingConfig | None) -> PriceTable | None:
    return None if config is None else PriceTable.of(config)
