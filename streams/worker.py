"""Runs a worker process: the Faust app of `streams.app` until SIGTERM/SIGINT or a fatal error."""

from __future__ import annotations

import faust

from streams.app import create_app
from streams.config import JsonEngineConfig

EXIT_FATAL = 3


def run_worker(config: JsonEngineConfig, loglevel: str = "info") -> int:
    """Return the process exit code: 0 after a graceful stop, EXIT_FATAL after a crash."""
    config.output.base_path.mkdir(parents=True, exist_ok=True)
    app = create_app(config)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    if app.crash_reason is not None:
        app.log.error("worker stopped by a fatal error: %s", app.crash_reason)
        return EXIT_FATAL
    return code
