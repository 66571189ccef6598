"""`output.base_path: s3://bucket/prefix` and `output.s3`: errors name the key, and a worker
that cannot use its bucket says why at start-up (exit 2) instead of failing mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sinks.s3.location import S3Location, location
from streams.config import ConfigError, load_config
from tests.conftest import S3Service


def _load(tmp_path: Path, output: dict) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"json_engine": {"output": output}}))
    return load_config(path)


def test_base_path_takes_an_s3_url_and_carries_the_s3_keys(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        {
            "base_path": "s3://json-engine-out/team/prod/",
            "s3": {"endpoint_url": "http://127.0.0.1:9000", "addressing_style": "path"},
        },
    )
    base = cfg.output.base_path  # type: ignore[attr-defined]
    assert base == S3Location("json-engine-out", "team/prod")
    assert str(base / "events") == "s3://json-engine-out/team/prod/events"
    assert (base / "events").options.endpoint_url == "http://127.0.0.1:9000"
    assert (base / "events").options.addressing_style == "path"
    assert _load(tmp_path, {"base_path": "out"}).output.base_path == Path("out")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("output", "key", "words"),
    [
        ({"base_path": "s3://ab/x"}, "output.base_path", "not a valid S3 bucket name"),
        ({"base_path": "s3://Upper-Case/x"}, "output.base_path", "not a valid S3 bucket name"),
        ({"base_path": "s3://json-engine-out/a//b"}, "output.base_path", "empty"),
        ({"s3": {"addressing_style": "dns"}}, "output.s3.addressing_style", "'path'"),
        ({"s3": {"endpoint_url": "localhost:9000"}}, "output.s3.endpoint_url", "pattern"),
        ({"s3": {"max_attempts": 0}}, "output.s3.max_attempts", "greater than"),
        ({"s3": {"bucket": "x"}}, "output.s3.bucket", "unknown key"),
    ],
)
def test_bad_s3_settings_are_refused_naming_the_key(
    tmp_path: Path, output: dict, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, output)
    message = str(refused.value)
    assert f"json_engine.{key}:" in message and words in message, message


def test_readers_accept_every_spelling_of_a_location() -> None:
    assert location("s3://json-engine-out/p") == S3Location("json-engine-out", "p")
    assert location(Path("s3://json-engine-out/p")) == S3Location("json-engine-out", "p")
    assert location("output/events") == Path("output/events")


def _worker(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JSON_ENGINE_"))}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--config", str(config)],
        env={**clean, **env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_bucket_or_refused_credentials_stop_the_worker_at_start_up(
    tmp_path: Path, s3_service: S3Service
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"json_engine": {"output": {"base_path": "s3://nope-x1/p"}}}))
    missing = _worker(config, s3_service.env)
    assert missing.returncode == 2, missing.stderr
    assert "bucket 'nope-x1' does not exist" in missing.stderr
    config.write_text(
        yaml.safe_dump({"json_engine": {"output": {"base_path": f"s3://{s3_service.bucket}/p"}}})
    )
    refused = _worker(config, {**s3_service.env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert refused.returncode == 2, refused.stderr
    assert "check the credentials" in refused.stderr
    anonymous = _worker(
        config, {k: v for k, v in s3_service.env.items() if not k.startswith("AWS_SECRET")}
    )
    assert anonymous.returncode == 2 and "no S3 credentials" in anonymous.stderr
