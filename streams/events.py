"""Realistic, valid, reproducible events for the demo, the tests and the benchmarks.

Every function takes a seeded `random.Random`, so the same seed gives the same events (the
benchmarks compare validators on identical inputs, tests can replay a failing seed).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

ENGINE_IDS: tuple[str, ...] = ("gpt-small", "gpt-large", "llama-7b", "mistral-7b", "claude-lite")
"""Default engine names of the demo."""

_TOPICS = (
    "the quarterly sales report",
    "a customer complaint about a late delivery",
    "the release notes of version 2.4",
    "an incident review of the payment outage",
    "the onboarding guide for new engineers",
    "a product description for wireless headphones",
    "the meeting notes from the planning session",
    "a bug report about the login page",
)
_TASKS = (
    "Summarise",
    "Translate to French",
    "Classify the sentiment of",
    "Extract the action items from",
)
_SENTENCES = (
    "The main points are listed below in order of importance.",
    "Overall the tone is neutral with a slight positive bias.",
    "Three issues need follow-up before the next milestone.",
    "Revenue grew by twelve percent compared to the previous quarter.",
    "The customer asks for a refund and an apology.",
    "No personal data was found in the provided text.",
    "The deadline was moved to the end of the month.",
    "Action items: update the runbook, add an alert, review the retry policy.",
)
_ERRORS = ("error", "timeout")


def _uuid(rng: random.Random) -> str:
    """A UUID4-shaped id drawn from `rng` (uuid.uuid4 would ignore the seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _prompt(rng: random.Random) -> str:
    return f"{rng.choice(_TASKS)} {rng.choice(_TOPICS)}. Keep it short and precise."


def _answer(rng: random.Random, sentences: int) -> str:
    return " ".join(rng.choice(_SENTENCES) for _ in range(sentences))


def token_count(text: str) -> int:
    """About what a tokenizer makes of English text: 1.3 tokens a word."""
    return round(len(text.split()) * 1.3)


def engine_execution(rng: random.Random, engine_id: str, ts: int) -> dict[str, Any]:
    """One successful (~95%) or failed run of `engine_id` at epoch-ms `ts`; ~500 bytes as JSON."""
    success = rng.random() < 0.95
    status = "ok" if success else rng.choice(_ERRORS)
    # Latencies are long-tailed: a lognormal around ~40 ms, timeouts far out.
    latency = round(rng.lognormvariate(3.7, 0.6), 3)
    if status == "timeout":
        latency = round(rng.uniform(5000.0, 30000.0), 3)
    return {
        "schema_version": 1,
        "trace_id": _uuid(rng),
        "task_id": f"task-{rng.randrange(1_000_000):06d}",
        "engine_id": engine_id,
        "engine_instance_id": f"{engine_id}-{rng.randrange(16):02x}",
        "timestamp": ts,
        "input": _prompt(rng),
        "output": _answer(rng, rng.randint(2, 4)) if success else "",
        "metrics": {
            "latency_ms": latency,
            "memory_mb": round(rng.uniform(128.0, 4096.0), 1),
            "cpu_percent": round(rng.uniform(5.0, 390.0), 1),
            "success": success,
        },
        "status": status,
    }


def comparison_result(
    rng: random.Random,
    engine_ids: Sequence[str],
    ts: int,
    strengths: Mapping[str, float] | None = None,
    categories: Sequence[str] = (),
    tie_share: float = 0.0,
) -> dict[str, Any]:
    """A comparison of 2 to 4 of `engine_ids` (all if fewer) at epoch-ms `ts`, with a winner:
    the best scored; `strengths` (engine → factor, default 1) scales an engine's scores, so
    that some engines win more often than others. With `categories`, one of them; with
    `tie_share`, that share of two-candidate comparisons is a tie (half "both_bad")."""
    count = min(len(engine_ids), rng.randint(2, 4))
    chosen = rng.sample(list(engine_ids), count)
    candidates: list[dict[str, Any]] = []
    for engine_id in chosen:
        candidate: dict[str, Any] = {
            "engine_id": engine_id,
            "output": _answer(rng, rng.randint(1, 3)),
            "metrics": {
                "latency_ms": round(rng.lognormvariate(3.7, 0.6), 3),
                "tokens": rng.randint(20, 400),
            },
        }
        if rng.random() < 0.7:  # judges do not always score every candidate
            factor = strengths.get(engine_id, 1.0) if strengths else 1.0
            candidate["score"] = round(min(1.0, rng.betavariate(5, 2) * factor), 4)
        candidates.append(candidate)
    best = max(candidates, key=lambda c: c.get("score", -1.0))
    winner_score = best.get("score", round(rng.betavariate(5, 2), 4))
    event: dict[str, Any] = {
        "comparison_id": f"cmp-{_uuid(rng)}",
        "query": _prompt(rng),
        "candidates": candidates,
        "winner": {"engine_id": best["engine_id"], "score": winner_score},
        "metrics": {"judge_latency_ms": round(rng.uniform(5.0, 200.0), 2)},
        "timestamp": ts,
    }
    if categories:
        event["category"] = rng.choice(list(categories))
    if tie_share and count == 2 and rng.random() < tie_share:
        del event["winner"]
        event["tie"] = rng.choice(("tie", "both_bad"))
    return event


def training_sample(rng: random.Random, ts: int) -> dict[str, Any]:
    """An externally produced training sample created at epoch-ms `ts`."""
    score = round(rng.uniform(0.5, 1.0), 4)
    tier = "gold" if score >= 0.9 else "silver" if score >= 0.75 else "bronze"
    return {
        "sample_id": f"ts-{_uuid(rng)}",
        "created_at": ts,
        "source_trace_id": _uuid(rng),
        "tier": tier,
        "input": _prompt(rng),
        "output": _answer(rng, rng.randint(1, 3)),
        "validation": {"quality_score": score, "validated": True},
    }
