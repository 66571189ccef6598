"""Runs a worker process: the Faust app until SIGTERM/SIGINT or a fatal error."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys

import faust

from sinks.s3.location import S3Location
from sinks.s3.store import ObjectStoreError, store_of
from streams.config import JsonEngineConfig
from streams.topics import TopicsInvalid
from streams.worker.app import create_app
from streams.worker.observability import logging_config, serve

EXIT_FATAL = 3
EXIT_SETUP = 2  # the output or the topics cannot be used: nothing was read
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
MALLOC_ARENAS = 2


def run_worker(config: JsonEngineConfig, loglevel: str = "info", log_format: str = "json") -> int:
    """Return the process exit code: 0 after a graceful stop, EXIT_FATAL after a crash,
    EXIT_SETUP when the output cannot be used (a missing bucket, refused credentials) or the
    topics do not fit the config (checked by the batch loop before it reads anything)."""
    _raise_descriptor_limit()
    _bound_malloc_arenas()
    base = config.output.base_path
    if isinstance(base, S3Location):
        try:
            store_of(base).check(base)
        except ObjectStoreError as exc:
            print(f"error: output.base_path {base}: {exc}", file=sys.stderr)
            return EXIT_SETUP
    else:
        base.mkdir(parents=True, exist_ok=True)
    app, worker = create_app(config)
    if config.metrics.port:
        serve(config.metrics.port, worker.metrics, worker.health)
    runner = faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config(log_format, loglevel),
    )
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    if isinstance(worker.fatal, TopicsInvalid):
        app.log.error("worker stopped: the topics do not fit the config: %s", worker.fatal)
        print(f"error: the topics do not fit the config: {worker.fatal}", file=sys.stderr)
        return EXIT_SETUP
    if worker.fatal is not None or app.crash_reason is not None:
        app.log.error("worker stopped by a fatal error: %s", worker.fatal or app.crash_reason)
        return EXIT_FATAL
    return code


def _raise_descriptor_limit() -> None:
    """Open part files hold descriptors, one per hour bucket and partition being written (a
    backfill writes hundreds): the soft limit goes up to the hard one (the sinks size their
    open files to it, streams/worker/sink.py open_files_cap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _bound_malloc_arenas() -> None:
    """glibc gives threads that allocate at once arenas of their own, up to 8 per core, and
    large buffers freed in one (S3 uploads, librdkafka's batches) stay mapped there: the S3
    sink's worker peaked 40-60 MB higher with them (bench, three pairs of runs against
    MALLOC_ARENA_MAX=2). Two arenas, set before the worker starts its threads, unless the
    environment chose (MALLOC_ARENA_MAX). Nothing on a libc without mallopt."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)
