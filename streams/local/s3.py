"""A real S3 API on 127.0.0.1 for the tests, the bench and the demo: Versity's S3 gateway.

`versitygw` (Apache-2.0) serves the S3 protocol over a local directory (its `posix` backend:
a bucket is a folder, an object a file) and honours conditional writes (`If-None-Match: *`),
which the S3 sink's fence relies on. It is built once with `go install` through the Go
module proxy into the project's cache, as the local Kafka's jars are resolved once
(streams/local/kafka.py); a start then only launches the binary, and a stop ends the PID it
recorded. `JSON_ENGINE_VERSITYGW` names a binary to use instead of building one.

    python -m streams.local.s3 up --port 19730 --data-dir DIR   # prints the endpoint
    python -m streams.local.s3 down --port 19730 --data-dir DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streams.local import processes

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"
ACCESS_KEY = "json-engine"
SECRET_KEY = "json-engine-local-secret"
REGION = "us-east-1"
DEFAULT_PORT = 7070
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
BUILD_TIMEOUT_S = 1200.0


class LocalS3Error(Exception):
    """A local S3 server that cannot be built, started or stopped; one paragraph."""


def cache_dir() -> Path:
    """One folder per versitygw version in the cache."""
    return processes.cache_dir(f"versitygw-{VERSITYGW_VERSION}")


def default_data_dir(port: int) -> Path:
    return processes.default_data_dir(f"s3-{port}")


def provision() -> Path:
    """The versitygw binary: `$JSON_ENGINE_VERSITYGW`, else the cached build, else built now
    (about two minutes) into a temporary folder that is moved into place only when done."""
    given = os.environ.get("JSON_ENGINE_VERSITYGW")
    if given:
        if not os.access(given, os.X_OK):
            raise LocalS3Error(f"JSON_ENGINE_VERSITYGW={given} is not an executable file")
        return Path(given)
    target = cache_dir() / "versitygw"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise LocalS3Error(
            "`go` is not on PATH: the local S3 server (versitygw) is built with `go install "
            f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}`. Install Go 1.22+ (Debian: apt-get "
            "install golang), or point json-engine at an S3 endpoint with AWS_ENDPOINT_URL."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        log = work / "go-install.log"
        print(
            f"local_s3: building versitygw {VERSITYGW_VERSION} with go install (once)…",
            file=sys.stderr,
        )
        with log.open("wb") as out:
            try:
                rc = subprocess.call(
                    [go, "install", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "GOBIN": str(work / "bin"), "CGO_ENABLED": "0"},
                    timeout=BUILD_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0 or not (work / "bin" / "versitygw").exists():
            raise LocalS3Error(
                f"could not build versitygw {VERSITYGW_VERSION} (go install exit {rc}); is "
                f"the Go module proxy reachable? Last lines of its log:\n{processes.tail(log)}"
            )
        os.replace(work / "bin" / "versitygw", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass(frozen=True)
class LocalS3:
    port: int
    data_dir: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        """The posix backend's top folder: one sub-folder per bucket."""
        return self.data_dir / "buckets"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "versitygw.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "versitygw.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if processes.alive(pid) else None

    def env(self) -> dict[str, str]:
        """The standard AWS variables for a client of this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise


def answers(server: LocalS3, timeout: float = 2.0) -> bool:
    """True when the server answers an S3 request (ListBuckets) with these credentials."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=REGION,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    return True


def up(port: int = DEFAULT_PORT, data_dir: Path | None = None) -> LocalS3:
    """Start the server unless it already runs there; return once it answers."""
    server = LocalS3(port, Path(data_dir or default_data_dir(port)).resolve())
    if server.pid() is not None and answers(server):
        return server
    if server.pid() is not None:
        down(server)
    if processes.port_taken(port):
        raise LocalS3Error(
            f"cannot start the local S3 server on 127.0.0.1:{port}: the port is taken by "
            "another process. Choose another port, or stop what listens there."
        )
    binary = provision()
    server.root.mkdir(parents=True, exist_ok=True)
    with server.log_file.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "--access",
                server.access_key,
                "--secret",
                server.secret_key,
                "--region",
                REGION,
                "--port",
                f"127.0.0.1:{port}",
                "--quiet",
                # Connections kept open between requests, as S3 keeps them: versitygw closes
                # each one after its response by default, which made every PUT of the sink
                # open a new TCP connection (bench: ~1 ms of the worker's CPU each)
                "--keep-alive",
                "posix",
                # ETags from a data-integrity checksum instead of an MD5 of every byte: the
                # server shares the tests' and the bench's cores
                "--data-integrity-etag",
                str(server.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(server, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            down(server)
            raise LocalS3Error(
                f"versitygw did not answer on {server.endpoint} within {START_TIMEOUT_S:.0f}s "
                f"(exit {proc.poll()}). Last lines of {server.log_file}:\n"
                f"{processes.tail(server.log_file)}"
            )
        time.sleep(0.1)
    return server


def down(server: LocalS3) -> int | None:
    """Stop the server by its recorded PID (SIGTERM, then SIGKILL); return the PID, if any."""
    pid = server.pid()
    if pid is None:
        server.pid_file.unlink(missing_ok=True)
        return None
    processes.stop([pid], STOP_TIMEOUT_S)
    server.pid_file.unlink(missing_ok=True)
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.local.s3", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "provision"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--bucket", action="append", default=[], help="create (with up)")
    args = parser.parse_args(argv)
    try:
        if args.action == "provision":
            print(provision())
            return 0
        server = LocalS3(args.port, Path(args.data_dir or default_data_dir(args.port)).resolve())
        if args.action == "up":
            server = up(args.port, args.data_dir)
            for bucket in args.bucket:
                server.create_bucket(bucket)
            print(server.endpoint)
        elif args.action == "down":
            pid = down(server)
            print(f"stopped PID {pid}" if pid else "not running")
        else:
            running = server.pid() is not None and answers(server)
            print(f"{server.endpoint} {'answers' if running else 'not running'}")
            return 0 if running else 1
    except LocalS3Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
