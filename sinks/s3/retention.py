"""Retention on S3: the finished objects of buckets older than `output.retention_days` go,
unless a hidden in-progress file of a version before packs is still headed for the bucket or
a committed checkpoint names a file of it (the rules of sinks/files/retention.py, with its one
decision, `expired`). Each object is deleted whole: a reader sees an object or none. A listing or a
delete the server refuses raises ObjectStoreError; the caller tries again later."""

from __future__ import annotations

from sinks.files.names import FINISHED, IN_PROGRESS, IN_PROGRESS_DIR, PARQUET, code_bucket
from sinks.files.retention import Named, expired, named_buckets
from sinks.s3.location import S3Location
from sinks.s3.store import store_of


def headed_for(directory: S3Location) -> set[str]:
    """Buckets some hidden in-progress file of a version before packs (its own folder of part
    objects) will be finished into; packs do not say (the committed checkpoints do)."""
    found = set()
    for folder in store_of(directory).folders(directory, f"{IN_PROGRESS_DIR}/"):
        m = IN_PROGRESS.match(folder.rsplit("/", 1)[-1] + ".part")
        if m:
            found.add(code_bucket(m.group(4)))
    return found


def delete_before(directory: S3Location, cutoff_ms: int, named: Named = frozenset) -> int:
    """Delete the finished objects of every bucket that ended at or before `cutoff_ms`, but
    the buckets of the files `named()` names (asked after the listing); return how many were
    deleted."""
    store = store_of(directory)
    busy = headed_for(directory)
    doomed = []
    skip = len(directory.prefix)
    for day in store.folders(directory):
        if not day.startswith("date=") or not expired(f"{day}/hour=00", cutoff_ms):
            continue
        for hour in store.folders(directory, f"{day}/"):
            if not hour.split("/")[-1].startswith("hour="):
                continue
            if not expired(hour, cutoff_ms) or hour in busy:
                continue
            for key, _size in store.list(directory, f"{hour}/"):
                name = key.rsplit("/", 1)[-1]
                if FINISHED.match(name) or PARQUET.match(name):
                    doomed.append(key)
    spared = named_buckets(named) if doomed else set()
    return store.delete(
        directory.bucket, [k for k in doomed if k[skip:].rsplit("/", 1)[0] not in spared]
    )
