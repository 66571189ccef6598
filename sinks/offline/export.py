"""Export for fine-tuning, from a pipeline's output directory, in TRL's and OpenAI's formats.

- `sft`:  {"prompt", "completion"} — TRL's prompt-completion format, from training samples;
- `chat`: {"messages": [user, assistant]} — the conversational format of OpenAI and TRL;
- `dpo`:  {"prompt", "chosen", "rejected"} — TRL's preference format, from comparisons: the
  winner's output against each candidate that scored lower; when candidates carry no score,
  against every other candidate (the winner was preferred to all of them); a candidate whose
  output equals the winner's makes no pair.
`min_tier` keeps samples of that tier or better; for `dpo` it keeps comparisons whose
winner.score reaches that tier's threshold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from sinks.reader import channel_dir, iter_lines
from streams.config import JsonEngineConfig, Thresholds

Format = Literal["sft", "dpo", "chat"]
TIERS = ("gold", "silver", "bronze")


def _tiers_at_least(min_tier: str) -> set[str]:
    return set(TIERS[: TIERS.index(min_tier) + 1])


def _records(
    directory: Path, since: int | None = None, until: int | None = None
) -> Iterator[dict[str, Any]]:
    for line in iter_lines(directory, since, until):
        yield orjson.loads(line)


def sft_rows(samples: Iterator[dict[str, Any]], min_tier: str) -> Iterator[dict[str, Any]]:
    keep = _tiers_at_least(min_tier)
    for s in samples:
        if s["tier"] in keep:
            yield {"prompt": s["input"], "completion": s["output"]}


def chat_rows(samples: Iterator[dict[str, Any]], min_tier: str) -> Iterator[dict[str, Any]]:
    keep = _tiers_at_least(min_tier)
    for s in samples:
        if s["tier"] in keep:
            yield {
                "messages": [
                    {"role": "user", "content": s["input"]},
                    {"role": "assistant", "content": s["output"]},
                ]
            }


def dpo_rows(comparisons: Iterator[dict[str, Any]], min_score: float) -> Iterator[dict[str, Any]]:
    for c in comparisons:
        winner = c.get("winner")
        if winner is None or winner["score"] < min_score:  # a tie prefers no answer
            continue
        chosen = next((x for x in c["candidates"] if x["engine_id"] == winner["engine_id"]), None)
        if chosen is None:
            continue
        chosen_score = chosen.get("score", winner["score"])
        for other in c["candidates"]:
            if other is chosen or other["output"] == chosen["output"]:
                continue
            score = other.get("score")
            if score is None or score < chosen_score:
                yield {
                    "prompt": c["query"],
                    "chosen": chosen["output"],
                    "rejected": other["output"],
                }


def export_rows(
    config: JsonEngineConfig,
    output_dir: Path,
    fmt: Format,
    min_tier: str = "bronze",
    since: int | None = None,
    until: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of the samples (or comparisons, for dpo) whose time is in [since, until)."""
    if fmt == "dpo":
        directory = channel_dir(output_dir, config.channels.comparison_result.filename)
        threshold = _threshold(config.training.thresholds, min_tier)
        return dpo_rows(_records(directory, since, until), threshold)
    directory = channel_dir(output_dir, config.channels.training_sample.filename)
    rows = sft_rows if fmt == "sft" else chat_rows
    return rows(_records(directory, since, until), min_tier)


def _threshold(thresholds: Thresholds, tier: str) -> float:
    return float(getattr(thresholds, tier))


def write_jsonl(rows: Iterator[dict[str, Any]], out: Any) -> int:
    count = 0
    for row in rows:
        out.write(orjson.dumps(row) + b"\n")
        count += 1
    return count
