"""The S3 client of the sinks and readers (boto3), its errors, and the start-up check.

Endpoint, region and credentials come from the standard AWS sources (`AWS_ENDPOINT_URL`,
`AWS_REGION`, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, shared files,
web identity / IRSA, instance metadata), which `output.s3` overrides key by key.

Every object this project writes is created with `If-None-Match: *`: S3 refuses it with
`PreconditionFailed` when the key exists, so a key is written once and never replaced.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from sinks.s3.location import S3Location
from sinks.s3.uploads import Uploads

# Errors of the server that a retry later may get past (it is down, overloaded, or failing).
TRANSIENT_STATUS = range(500, 600)
TRANSIENT_CODES = {
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "InternalError",
}
DELETE_BATCH = 1000  # S3's limit for one DeleteObjects


@dataclass(frozen=True)
class S3Options:
    """What `output.s3` may set; None leaves a setting to the standard AWS sources."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"  # auto | path | virtual
    ca_bundle: str | None = None
    verify: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    concurrency: int = 16  # uploads in flight at once (per worker)
    spool_dir: str | None = None  # local in-progress bytes; default: the system's temp dir


class ObjectStoreError(OSError):
    """An S3 request failed; `transient` when a retry later may succeed (server down, 5xx)."""

    def __init__(self, message: str, transient: bool, code: str = ""):
        super().__init__(message)
        self.transient = transient
        self.code = code


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def translate(exc: BaseException, what: str, endpoint: str | None = None) -> ObjectStoreError:
    """One readable error from a botocore exception, with whether to retry later."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code", status))
        message = error.get("Message") or ""
        transient = status in TRANSIENT_STATUS or code in TRANSIENT_CODES
        return ObjectStoreError(f"{what}: {code} {message}".rstrip(), transient, code)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ObjectStoreError(
            f"{what}: no S3 credentials ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE, output.s3.profile) or a web "
            "identity (IRSA)",
            False,
            "NoCredentials",
        )
    if isinstance(exc, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        return ObjectStoreError(
            f"{what}: cannot reach {endpoint or 'the S3 endpoint'}: {exc}", True, "Unreachable"
        )
    return ObjectStoreError(f"{what}: {exc}", False, type(exc).__name__)


class S3Store:
    """One client (thread-safe) and a pool for uploads in parallel, per set of options."""

    def __init__(self, options: S3Options):
        import boto3
        from botocore.config import Config

        self.options = options
        session = boto3.session.Session(profile_name=options.profile)
        s3: dict[str, Any] = {}
        if options.addressing_style != "auto":
            s3["addressing_style"] = options.addressing_style
        self.client = session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region,
            verify=(options.ca_bundle or options.verify),
            config=Config(
                s3=s3 or None,
                connect_timeout=options.connect_timeout,
                read_timeout=options.read_timeout,
                retries={"mode": "standard", "max_attempts": options.max_attempts},
                max_pool_connections=max(10, options.concurrency),
                # No CRC32 of every body beside the SigV4 payload hash (which the server checks
                # over HTTP; TLS protects it over HTTPS): each byte was hashed twice, and sent
                # aws-chunked with a trailer the server hashes again.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.endpoint = self.client.meta.endpoint_url
        self.uploads = Uploads(options, session, self.endpoint, self.client.meta.region_name)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.options.concurrency, thread_name_prefix="json-engine-s3"
                )
            return self._pool

    def _fail(self, exc: BaseException, what: str) -> ObjectStoreError:
        return translate(exc, what, self.endpoint)

    # -- objects -------------------------------------------------------------------------

    def put_new(self, where: S3Location, body: bytes | bytearray | BinaryIO) -> bool:
        """Create the object unless its key exists: True if created, False if it existed
        (obstore: sinks/s3/uploads.py)."""
        return self.uploads.put_new(where, body)

    def size(self, where: S3Location) -> int | None:
        """The object's size, or None when there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=where.bucket, Key=where.key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(exc, f"looking up {where}") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"looking up {where}") from exc
        return int(head["ContentLength"])

    def get(self, where: S3Location) -> bytes | None:
        """The object's bytes, or None when there is none."""
        from botocore.exceptions import BotoCoreError

        body = self.open(where)
        if body is None:
            return None
        try:
            with body:
                return body.read()
        except BotoCoreError as exc:
            raise self._fail(exc, f"reading {where}") from exc

    def open(self, where: S3Location) -> Any:
        """A streaming body of the object (botocore StreamingBody), or None when there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=where.bucket, Key=where.key)["Body"]
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(exc, f"reading {where}") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"reading {where}") from exc

    def list(self, where: S3Location, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object whose key starts with `where.prefix + prefix`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=where.bucket, Prefix=where.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"], int(item["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"listing {where}/{prefix}") from exc

    def folders(self, where: S3Location, prefix: str = "") -> list[str]:
        """The names of the "folders" right below `where` (common prefixes, without `/`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        found = []
        base = where.prefix + prefix
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=where.bucket, Prefix=base, Delimiter="/"
            )
            for page in pages:
                for item in page.get("CommonPrefixes", ()):
                    found.append(item["Prefix"][len(where.prefix) :].rstrip("/"))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"listing {where}/{prefix}") from exc
        return found

    def delete(self, bucket: str, keys: Iterable[str]) -> int:
        """Delete the keys (a missing one is no error); return how many were asked for."""
        from botocore.exceptions import BotoCoreError, ClientError

        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
            try:
                result = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, f"deleting {len(batch)} objects in s3://{bucket}") from exc
            errors = [e for e in result.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise ObjectStoreError(
                    f"deleting s3://{bucket}/{first.get('Key')}: {first.get('Code')} "
                    f"{first.get('Message', '')}",
                    False,
                    str(first.get("Code")),
                )
        return len(keys)

    def abort_uploads(self, where: S3Location, prefix: str = "") -> int:
        """Abort every unfinished multipart upload below `where.prefix + prefix`."""
        from botocore.exceptions import BotoCoreError, ClientError

        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=where.bucket, Prefix=where.prefix + prefix
            )
            for page in pages:
                for upload in page.get("Uploads", ()):
                    self.client.abort_multipart_upload(
                        Bucket=where.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"aborting multipart uploads below {where}/{prefix}") from exc
        return aborted

    # -- start-up ------------------------------------------------------------------------

    def check(self, where: S3Location) -> None:
        """Fail now, with a clear message, unless the bucket exists, the credentials may list
        and write below `where`, and the server refuses a second create of one key (the
        fence of every object). A probe object is written and deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        endpoint = self.endpoint
        try:
            self.client.list_objects_v2(Bucket=where.bucket, Prefix=where.prefix, MaxKeys=1)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchBucket", "404"):
                raise ObjectStoreError(
                    f"bucket {where.bucket!r} does not exist at {endpoint}: create it first",
                    False,
                    code,
                ) from exc
            raise self._fail(exc, f"listing it at {endpoint} (check the credentials)") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "listing it") from exc
        probe = where / f".json-engine-probe-{uuid.uuid4().hex}"
        try:
            if not self.put_new(probe, b""):
                raise ObjectStoreError(f"{probe} existed before it was written", False)
            if self.put_new(probe, b"again"):
                raise ObjectStoreError(
                    f"the S3 server at {endpoint} replaced {probe} although it was written "
                    "with If-None-Match: *; the exactly-once publishing needs conditional "
                    "writes (AWS S3 and versitygw have them)",
                    False,
                    "NoConditionalWrites",
                )
        finally:
            with contextlib.suppress(ObjectStoreError):
                self.delete(probe.bucket, [probe.key])


# The standard AWS variables a client reads when it is made: a store made before one of them
# changed (tests, a process that re-points its environment) is not the one to use after.
AWS_ENVIRONMENT = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)


def store_for(options: S3Options | None) -> S3Store:
    """One store per set of options and AWS environment in a process (boto3 clients are
    thread-safe)."""
    return _store(options, tuple(os.environ.get(name) for name in AWS_ENVIRONMENT))


@functools.lru_cache(maxsize=8)
def _store(options: S3Options | None, _environment: tuple[str | None, ...]) -> S3Store:
    return S3Store(options or S3Options())


def store_of(where: S3Location) -> S3Store:
    from botocore.exceptions import BotoCoreError

    try:
        return store_for(where.options)
    except BotoCoreError as exc:  # credentials or settings that cannot make a client
        raise translate(exc, f"connecting to {where}") from exc
