"""Training samples: tiers at their boundaries, deterministic ids, exactly once end to end
(replays, external duplicates, SIGKILL), and the export formats."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pandas as pd
import pytest

from sinks.files.names import finished_name
from sinks.offline.export import dpo_rows
from streams import events
from streams.config import Thresholds
from streams.publisher import Publisher
from streams.topics import create_topics
from streams.training import derive_sample, sample_id, tier_of
from streams.validation import ValidationError, Validator
from tests.conftest import ConfigFactory
from tests.workers import READY, WorkerProcess, cli, lines_of, produce, records, wait_for_lines

T = Thresholds()


def comparison(score: float, cid: str = "c-1", ts: int | None = 1_764_000_000_000) -> dict:
    c = {
        "comparison_id": cid,
        "query": "What is 2+2?",
        "candidates": [
            {"engine_id": "a", "output": "four", "metrics": {}, "score": score},
            {"engine_id": "b", "output": "five", "metrics": {}, "score": score / 2},
        ],
        "winner": {"engine_id": "a", "score": score},
        "metrics": {},
    }
    if ts is not None:
        c["timestamp"] = ts
    return c


@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (1.0, "gold"),
        (0.9, "gold"),
        (0.8999, "silver"),
        (0.75, "silver"),
        (0.7499, "bronze"),
        (0.5, "bronze"),
        (0.4999, None),
        (0.0, None),
    ],
)
def test_tier_boundaries_are_inclusive(score: float, tier: str | None) -> None:
    assert tier_of(score, T) == tier
    sample = derive_sample(comparison(score), T)
    assert (sample["tier"] if sample else None) == tier


def test_sample_fields_and_deterministic_id() -> None:
    sample = derive_sample(comparison(0.95, cid="abc"), T)
    assert sample == {
        "sample_id": sample_id("abc"),
        "created_at": 1_764_000_000_000,
        "source_trace_id": "abc",
        "tier": "gold",
        "input": "What is 2+2?",
        "output": "four",
        "validation": {"quality_score": 0.95, "validated": True},
    }
    assert sample_id("abc") == derive_sample(comparison(0.6, cid="abc"), T)["sample_id"]
    assert sample_id("abc") != sample_id("abd")
    Validator().validate("training_sample", sample)
    without_ts = derive_sample(comparison(0.95, ts=None), T, record_timestamp=123)
    assert without_ts["created_at"] == 123


def test_winner_not_a_candidate_is_invalid() -> None:
    bad = comparison(0.95)
    bad["winner"]["engine_id"] = "zzz"
    with pytest.raises(ValidationError, match="not one of the candidates"):
        Validator().validate("comparison_result", bad)


def test_dpo_pairs_lower_scores_or_all_others_without_scores() -> None:
    scored = comparison(0.9)
    scored["candidates"].append(
        {"engine_id": "c", "output": "twenty-two", "metrics": {}, "score": 0.95}
    )
    assert [r["rejected"] for r in dpo_rows(iter([scored]), 0.5)] == ["five"]
    unscored = comparison(0.9)
    for c in unscored["candidates"]:
        del c["score"]
    unscored["candidates"].append({"engine_id": "c", "output": "twenty-two", "metrics": {}})
    assert [r["rejected"] for r in dpo_rows(iter([unscored]), 0.5)] == ["five", "twenty-two"]
    assert list(dpo_rows(iter([comparison(0.4)]), 0.5)) == []


def test_export_formats_on_known_input(make_config: ConfigFactory, tmp_path: Path) -> None:
    path, cfg = make_config()
    base = cfg.output.base_path
    samples = [derive_sample(comparison(s, cid=f"c{i}"), T) for i, s in enumerate([0.95, 0.8, 0.6])]
    (base / "training_samples").mkdir()
    (base / "training_samples" / finished_name(0, 0, 2)).write_bytes(
        b"".join(orjson.dumps(s) + b"\n" for s in samples)
    )
    (base / "comparisons").mkdir()
    (base / "comparisons" / finished_name(0, 0, 1)).write_bytes(
        orjson.dumps(comparison(0.95, cid="c0"))
        + b"\n"
        + orjson.dumps(comparison(0.6, cid="c2"))
        + b"\n"
    )

    def export(*args: str) -> pd.DataFrame:
        out = tmp_path / "export.jsonl"
        result = cli("export", str(base), "--config", str(path), "--out", str(out), *args)
        assert result.returncode == 0, result.stderr
        return pd.read_json(out, lines=True) if out.stat().st_size else pd.DataFrame()

    sft = export("--format", "sft")
    assert list(sft.columns) == ["prompt", "completion"] and len(sft) == 3
    assert sft.iloc[0].to_dict() == {"prompt": "What is 2+2?", "completion": "four"}
    assert len(export("--format", "sft", "--min-tier", "silver")) == 2
    assert len(export("--format", "sft", "--min-tier", "gold")) == 1
    chat = export("--format", "chat", "--min-tier", "gold")
    assert list(chat.columns) == ["messages"]
    assert chat.iloc[0]["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "four"},
    ]
    dpo = export("--format", "dpo", "--min-tier", "gold")
    assert list(dpo.columns) == ["prompt", "chosen", "rejected"]
    assert dpo.to_dict("records") == [
        {"prompt": "What is 2+2?", "chosen": "four", "rejected": "five"}
    ]
    assert len(export("--format", "dpo")) == 2
    bad = cli("export", str(base), "--format", "xml")
    assert bad.returncode == 2


def test_worker_derives_each_sample_once_despite_replays_and_duplicates(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config()
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    scores = [0.95, 0.9, 0.8, 0.75, 0.6, 0.5, 0.3]
    comparisons = [comparison(s, cid=f"cmp-{i}") for i, s in enumerate(scores)]
    invalid_winner = dict(comparison(0.99, cid="bad"), winner={"engine_id": "x", "score": 0.99})
    with Publisher(cfg) as publisher:
        for c in comparisons + comparisons:  # the same comparisons replayed
            publisher.collect_comparison_result(c)
        # An external producer publishing an already derived sample again.
        publisher.collect_training_sample(derive_sample(comparisons[0], T))
    produce(cfg, "comparison-result", [orjson.dumps(invalid_winner)])
    qualifying = [c for c in comparisons if c["winner"]["score"] >= T.bronze]
    samples = records(wait_for_lines(cfg, "training_sample", len(qualifying), timeout=60))
    rejected = records(wait_for_lines(cfg, "dead_letter", 1, timeout=60))
    time.sleep(3)  # any duplicate would have arrived by now
    samples = records(lines_of(cfg, "training_sample"))
    assert sorted(s["source_trace_id"] for s in samples) == sorted(
        c["comparison_id"] for c in qualifying
    )
    assert {s["source_trace_id"]: s["tier"] for s in samples} == {
        "cmp-0": "gold",
        "cmp-1": "gold",
        "cmp-2": "silver",
        "cmp-3": "silver",
        "cmp-4": "bronze",
        "cmp-5": "bronze",
    }
    assert rejected[0]["reason"] == "schema" and "not one of the candidates" in rejected[0]["error"]
    # A comparison sent twice is one comparison: its copy is no line either.
    assert len(lines_of(cfg, "comparison_result")) == len(comparisons)
    assert worker.terminate() == 0


@pytest.mark.slow
def test_sigkill_while_comparisons_flow_gives_each_sample_once(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "channels": {
                "comparison_result": {"buffer_size": 200, "auto_flush_seconds": 0.2},
                "training_sample": {"buffer_size": 200, "auto_flush_seconds": 0.2},
            }
        }
    )
    create_topics(cfg)
    rng = random.Random(11)
    comparisons = [
        events.comparison_result(rng, ["e1", "e2", "e3", "e4"], 1_764_000_000_000 + i)
        for i in range(6000)
    ]
    qualifying = {c["comparison_id"] for c in comparisons if c["winner"]["score"] >= T.bronze}
    worker = WorkerProcess(path, tmp_path).start()

    def publish() -> None:
        for start in range(0, len(comparisons), 500):
            produce(
                cfg,
                "comparison-result",
                [orjson.dumps(c) for c in comparisons[start : start + 500]],
            )
            time.sleep(0.2)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        for kill in range(4):
            time.sleep(rng.uniform(0.5, 2.0))
            worker.kill()
            worker.start(wait_ready=kill % 2 == 1)
        publisher.join()
        wait_for_lines(cfg, "training_sample", len(qualifying), timeout=180)
        worker.wait_for(READY)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    ids = [orjson.loads(line)["source_trace_id"] for line in lines_of(cfg, "training_sample")]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates"
    assert set(ids) == qualifying
