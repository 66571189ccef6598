"""Retention on S3: the finished objects of buckets older than `output.retention_days` go,
unless a hidden in-progress file is still headed for the bucket (as sinks/files/retention.py).
Each object is deleted whole: a reader sees an object or none."""

from __future__ import annotations

from sinks.files.buckets import HOUR_MS, bucket_start
from sinks.files.names import FINISHED, IN_PROGRESS, IN_PROGRESS_DIR, code_bucket
from sinks.s3.location import S3Location
from sinks.s3.store import store_of


def headed_for(directory: S3Location) -> set[str]:
    """Buckets some hidden in-progress file (of any owner) will be finished into."""
    found = set()
    for folder in store_of(directory).folders(directory, f"{IN_PROGRESS_DIR}/"):
        m = IN_PROGRESS.match(folder.rsplit("/", 1)[-1] + ".part")
        if m:
            found.add(code_bucket(m.group(4)))
    return found


def delete_before(directory: S3Location, cutoff_ms: int) -> int:
    store = store_of(directory)
    busy = headed_for(directory)
    doomed = []
    for day in store.folders(directory):
        if not day.startswith("date="):
            continue
        for hour in store.folders(directory, f"{day}/"):
            name = hour
            if not name.split("/")[-1].startswith("hour="):
                continue
            if bucket_start(name) + HOUR_MS > cutoff_ms or name in busy:
                continue
            for key, _size in store.list(directory, f"{name}/"):
                if FINISHED.match(key.rsplit("/", 1)[-1]):
                    doomed.append(key)
    return store.delete(directory.bucket, doomed)
