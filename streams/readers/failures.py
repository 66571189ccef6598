"""What stops or pauses a worker, as opposed to what fails one record.

A record can fail only itself: anything wrong with it becomes its dead letter
(streams/readers/dead_letter.py). These are the exceptions that are *not* one record's fault,
which the readers' last line of defence (`internal` dead letters) lets through: the output
(a disk, an object store) and the `fail` policy.
"""

from __future__ import annotations


class Fatal(Exception):
    """Not one record's fault: never made a dead letter."""


class SinkWriteError(Fatal):
    """The output could not be written or read (full disk, unwritable directory): stop
    committing."""


class SinkUnavailable(SinkWriteError):
    """The output cannot be reached for now (an S3 server down or failing): nothing past the
    last checkpoint counts; roll back and try again later."""


def write_error(message: str, exc: BaseException) -> SinkWriteError:
    """SinkUnavailable for a failure that a retry later may get past, else SinkWriteError."""
    transient = getattr(exc, "transient", False)
    return (SinkUnavailable if transient else SinkWriteError)(f"{message}: {exc}")


class RegistryUnavailable(SinkUnavailable):
    """The schema registry cannot say whether a record's schema id is known (down, failing,
    refusing our credentials): like an output that is down, nothing past the last checkpoint
    counts, and the records are read again later. A record is never dropped for it."""
