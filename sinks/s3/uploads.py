"""Conditional PUTs through obstore: the bytes the sink uploads (packs, finished objects).

Every byte the S3 sink writes goes up twice (its checkpoint's pack, then the finished
object), so the client's cost per byte is the S3 sink's cost. Measured on the bench's machine
against the local versitygw (a 5 MB PUT): boto3 10.5 ms of CPU (its Python: the SigV4 payload
hash read in chunks, http.client sending 8 KiB blocks); obstore (Rust) 5.8 ms signed, 1.6 ms
with an unsigned payload. (How much of either holds the GIL was not measured apart: a thread
counting beside continuous uploads kept 0.78x of its rate with obstore, 0.75x with boto3, on
two cores shared with the server.) The other requests (lists,
GETs, deletes) are few and stay on boto3 (sinks/s3/store.py), whose endpoint, region,
addressing style and credential chain (profiles, web identity, instance metadata) this
client takes over, so both talk to the same store as the same principal.

The payload is signed over plain HTTP, where nothing else protects it, and sent unsigned over
HTTPS, where TLS does: what the AWS SDKs do.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sinks.s3.location import S3Location

if TYPE_CHECKING:
    import boto3
    from obstore.store import S3Store as ObjectStore

    from sinks.s3.store import ObjectStoreError, S3Options

_STATUS = re.compile(r"status code: (\d{3})")
# Bytes of files read into memory at once for their PUTs, per store: many files finishing
# together (an hour's buckets closing on every partition) wait for room instead of each
# holding up to `roll_bytes` (64 MiB by default) at the same time.
UPLOAD_MEMORY_BYTES = 256 * 1024 * 1024


class ByteBudget:
    """Room for `limit` bytes held at once; one larger request is let through alone."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        with self._room:
            self._room.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
        try:
            yield
        finally:
            with self._room:
                self.held -= size
                self._room.notify_all()


class Uploads:
    """One obstore client per bucket (obstore binds a store to its bucket), thread-safe."""

    def __init__(
        self,
        options: S3Options,
        session: boto3.session.Session,
        endpoint: str,
        region: str | None,
    ):
        self.options = options
        self.session = session
        self.endpoint = endpoint
        self.region = region
        self.memory = ByteBudget(UPLOAD_MEMORY_BYTES)
        self._stores: dict[str, ObjectStore] = {}
        self._lock = threading.Lock()

    def put_new(self, where: S3Location, body: bytes | bytearray | BinaryIO) -> bool:
        """Create the object unless its key exists: True if created, False if it existed.
        A file is read whole first (one PUT of at most `roll_bytes`), within `memory`."""
        if isinstance(body, bytes | bytearray):  # obstore reads the buffer without a copy
            return self._put(where, body)
        with self.memory.hold(os.fstat(body.fileno()).st_size):
            return self._put(where, body.read())

    def _put(self, where: S3Location, data: bytes | bytearray) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

        try:
            obstore.put(self._store(where.bucket), where.key, data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        except BaseError as exc:
            raise translate_upload_error(exc, f"writing {where}", self.endpoint) from exc
        return True

    def _store(self, bucket: str) -> ObjectStore:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = self._new_store(bucket)
            return store

    def _new_store(self, bucket: str) -> ObjectStore:
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.store import S3Store as ObjectStore

        options = self.options
        https = self.endpoint.startswith("https:")
        client: dict[str, Any] = {
            "allow_http": not https,
            "connect_timeout": timedelta(seconds=options.connect_timeout),
            "read_timeout": timedelta(seconds=options.read_timeout),
        }
        if not options.verify:
            client["allow_invalid_certificates"] = True
        if options.ca_bundle:
            client["root_certificate"] = Path(options.ca_bundle).read_bytes()
        config: dict[str, Any] = {"endpoint": self.endpoint, "unsigned_payload": https}
        if self.region:
            config["region"] = self.region
        if options.addressing_style != "auto":
            config["virtual_hosted_style_request"] = options.addressing_style == "virtual"
        return ObjectStore(
            bucket,
            config=config,  # type: ignore[arg-type]
            client_options=client,  # type: ignore[arg-type]
            # As boto3's standard mode: a few attempts, then the caller's own retry later.
            retry_config={
                "max_retries": max(0, options.max_attempts - 1),
                "retry_timeout": timedelta(seconds=options.connect_timeout + options.read_timeout),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
            credential_provider=Boto3CredentialProvider(self.session),  # type: ignore[arg-type]
        )


def translate_upload_error(exc: BaseException, what: str, endpoint: str) -> ObjectStoreError:
    """obstore's error as the sink's: transient (retry later) when the store did not answer,
    answered 5xx or throttled; else permanent (credentials, permissions, no such bucket)."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    from sinks.s3.store import ObjectStoreError

    text = str(exc).split("\n\nDebug source:")[0]
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return ObjectStoreError(f"{what}: {text}", False, "AccessDenied")
    if isinstance(exc, NotFoundError):
        return ObjectStoreError(f"{what}: {text}", False, "NoSuchBucket")
    status = _STATUS.search(text)
    if status is None:  # no answer at all: refused, reset, timed out
        return ObjectStoreError(f"{what}: cannot reach {endpoint}: {text}", True, "Unreachable")
    code = int(status.group(1))
    return ObjectStoreError(f"{what}: {text}", code >= 500 or code == 429, str(code))
