"""The local S3 server of the tests: a real S3 API whose conditional writes fence keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from streams.local import s3 as local_s3
from tests.conftest import TEST_S3_PORT, S3Service


def test_a_key_written_with_if_none_match_is_never_replaced(s3_service: S3Service) -> None:
    client = s3_service.client()
    key = "fence/object.jsonl"
    client.put_object(Bucket=s3_service.bucket, Key=key, Body=b"first\n", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=s3_service.bucket, Key=key, Body=b"second\n", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    body = client.get_object(Bucket=s3_service.bucket, Key=key)["Body"].read()
    assert body == b"first\n"


def test_up_is_idempotent_and_down_stops_the_recorded_pid(tmp_path: Path) -> None:
    port = TEST_S3_PORT + 9
    server = local_s3.up(port, tmp_path / "s3")
    try:
        pid = server.pid()
        assert pid is not None and local_s3.answers(server)
        assert local_s3.up(port, tmp_path / "s3").pid() == pid  # already running: kept
        server.create_bucket("json-engine-up-test")
        assert (server.root / "json-engine-up-test").is_dir()  # the posix backend's folder
    finally:
        assert local_s3.down(server) == pid
    assert server.pid() is None and not local_s3.answers(server, timeout=0.5)
