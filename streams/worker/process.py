"""Runs a worker process: the Faust app until SIGTERM/SIGINT or a fatal error."""

from __future__ import annotations

import faust

from streams.config import JsonEngineConfig
from streams.worker.app import create_app
from streams.worker.observability import logging_config, serve

EXIT_FATAL = 3


def run_worker(config: JsonEngineConfig, loglevel: str = "info", log_format: str = "json") -> int:
    """Return the process exit code: 0 after a graceful stop, EXIT_FATAL after a crash."""
    config.output.base_path.mkdir(parents=True, exist_ok=True)
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
    if worker.fatal is not None or app.crash_reason is not None:
        app.log.error("worker stopped by a fatal error: %s", worker.fatal or app.crash_reason)
        return EXIT_FATAL
    return code
