"""Finished objects of a channel on S3, in (partition, offset) order: the readers' side.

The layout is the filesystem's (sinks/files/names.py, buckets.py, listing.py), as keys:
`<channel prefix>/date=YYYY-MM-DD/hour=HH/pNNN-<first>-<last>.jsonl` (`.jsonl.gz`,
`.jsonl.zst` when compressed). A key with a segment
below the channel that starts with `.` is work in progress and never read. Time bounds list
only the days of the range (one delimited listing of the channel, then one per day).

Parquet objects made by `json-engine compact` stand in for the JSONL objects they cover, and
every listing is made twice, as on the filesystem (sinks/files/listing.py says why: a
paginated listing is no snapshot either).
"""

from __future__ import annotations

from collections.abc import Iterator

from sinks.files.buckets import bucket_of
from sinks.files.names import FINISHED, PARQUET, PartFile, uncovered
from sinks.formats.compression import decompressed
from sinks.s3.location import S3Location
from sinks.s3.store import S3Store, store_of


def finished_objects(
    directory: S3Location, since: int | None = None, until: int | None = None
) -> list[PartFile]:
    store = store_of(directory)
    first = bucket_of(since) if since is not None else None
    last = bucket_of(until - 1) if until is not None else None
    found = []
    if first is None and last is None:
        found = list(_finished(store, directory, ""))
    else:
        for day in store.folders(directory):
            if not day.startswith("date="):
                continue
            if (first is not None and day < first.split("/")[0]) or (
                last is not None and day > last.split("/")[0]
            ):
                continue
            for part in _finished(store, directory, f"{day}/"):
                bucket = f"{part.path.parent.parent.name}/{part.path.parent.name}"
                if (first is None or bucket >= first) and (last is None or bucket <= last):
                    found.append(part)
    return sorted(uncovered(found), key=lambda f: (f.partition, f.first))


def bucket_objects(directory: S3Location, bucket: str) -> list[PartFile]:
    """The finished objects of one time bucket (`date=…/hour=…`)."""
    return uncovered(list(_finished(store_of(directory), directory, f"{bucket}/")))


def bucketed_objects(directory: S3Location) -> list[PartFile]:
    """Every finished JSONL and Parquet object in the buckets, covered ones too (compaction)."""
    parts = _finished(store_of(directory), directory, "")
    return [p for p in parts if p.path.parent.name.startswith("hour=")]


def _finished(store: S3Store, directory: S3Location, prefix: str) -> Iterator[PartFile]:
    skip = len(directory.prefix)
    keys = {key for key, _size in store.list(directory, prefix)}
    keys |= {key for key, _size in store.list(directory, prefix)}  # the second listing
    for key in sorted(keys):
        segments = key[skip:].split("/")
        if any(s.startswith(".") for s in segments):
            continue
        flat = len(segments) == 1
        bucketed = (
            len(segments) == 3
            and segments[0].startswith("date=")
            and segments[1].startswith("hour=")
        )
        m = FINISHED.match(segments[-1]) or (bucketed and PARQUET.match(segments[-1]))
        if m and (flat or bucketed):
            yield PartFile(
                S3Location(directory.bucket, key, directory.options), *map(int, m.groups())
            )  # type: ignore[arg-type]


def open_lines(part: PartFile) -> Iterator[bytes]:
    """The lines of one finished object (without newlines); none if it is gone meanwhile
    (retention deleted it)."""
    where = part.path
    assert isinstance(where, S3Location)
    body = store_of(where).open(where)
    if body is None:
        return
    if part.suffix:  # compressed: read through the decompressor, line by line
        with body, decompressed(body, part.suffix) as lines:
            for raw in lines:
                yield raw.rstrip(b"\n")
        return
    pending = b""
    with body:
        for chunk in body.iter_chunks(1 << 20):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            yield from lines
    if pending:  # never in a finished object (its lines are whole); kept like the files do
        yield pending
