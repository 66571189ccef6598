"""The names of part files and objects, and what a committed checkpoint says of one.

Shared by the filesystem (sinks/files/) and S3 (sinks/s3/) sides and by the worker's
checkpoints, so that none of them imports another's writer or listing. For partition 3:

    .inprogress/p003-0000000007-000000000100-2026120108.part    hidden: epoch 7's open file
    date=2026-12-01/hour=08/p003-000000000100-000000000599.jsonl  finished, never rewritten

A compressed channel (sinks/formats/compression.py) names its codec in both: `….gz.part`
in progress, `….jsonl.gz` finished (`.zst` for zstd), so a file is finished in the codec it
was written in whatever the configuration says by then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sinks.s3.location import S3Location

COMPRESSED = (".gz", ".zst")  # the endings of compressed files (sinks/formats/compression.py)
FINISHED = re.compile(r"^p(\d+)-(\d+)-(\d+)\.jsonl(?:\.gz|\.zst)?$")
IN_PROGRESS_DIR = ".inprogress"
# partition, epoch, first offset, bucket code, compression suffix ("" for none), kind
IN_PROGRESS = re.compile(r"^p(\d+)-(\d+)-(\d+)-(\d{10})((?:\.gz|\.zst)?)\.(part|copy)$")
# A hidden list of open files, named by a checkpoint instead of them when they are too many
# for the offset metadata (sinks/files/manifest.py): partition, owner epoch, content digest.
MANIFEST = re.compile(r"^p(\d+)-(\d+)-([0-9a-f]{16})\.files$")
# A Parquet file made by `json-engine compact` (sinks/compaction/) from the finished JSONL files
# of one bucket and partition whose offsets lie in first..last; it stands in for them.
PARQUET = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")


def finished_name(partition: int, first: int, last: int, suffix: str = "") -> str:
    """`suffix`: the compression's (`.gz`, `.zst`), after `.jsonl`."""
    return f"p{partition:03d}-{first:012d}-{last:012d}.jsonl{suffix}"


def parquet_name(partition: int, first: int, last: int) -> str:
    return f"p{partition:03d}-{first:012d}-{last:012d}.parquet"


def bucket_code(bucket: str) -> str:
    """`date=2026-12-01/hour=08` → `2026120108` (for in-progress names)."""
    date, hour = (part.split("=", 1)[1] for part in bucket.split("/"))
    return date.replace("-", "") + hour


def code_bucket(code: str) -> str:
    return f"date={code[0:4]}-{code[4:6]}-{code[6:8]}/hour={code[8:10]}"


def in_progress_name(
    partition: int, epoch: int, first: int, bucket: str, kind: str = "part", suffix: str = ""
) -> str:
    code = bucket_code(bucket)
    return f"p{partition:03d}-{epoch:010d}-{first:012d}-{code}{suffix}.{kind}"


def in_progress_suffix(name: str) -> str:
    """The compression suffix an in-progress name carries (`""` for none)."""
    match = IN_PROGRESS.match(name)
    if match is None:
        raise ValueError(f"not an in-progress file name: {name!r}")
    return match.group(5)


def suffix_of(name: str) -> str:
    """The compression suffix a finished file or object name ends with (`""` when none)."""
    for ending in COMPRESSED:
        if name.endswith(ending):
            return ending
    return ""


def manifest_name(partition: int, epoch: int, digest: str) -> str:
    return f"p{partition:03d}-{epoch:010d}-{digest[:16]}.files"


@dataclass(frozen=True)
class PartFile:
    """A finished part file (or S3 object) and the offsets its lines came from."""

    path: Path | S3Location
    partition: int
    first: int
    last: int

    @property
    def suffix(self) -> str:
        """Its compression suffix (`.gz`, `.zst`; `""` for plain JSONL)."""
        return suffix_of(self.path.name)

    @property
    def is_parquet(self) -> bool:
        return self.path.name.endswith(".parquet")

    def covers(self, other: PartFile) -> bool:
        """A Parquet file stands in for the JSONL files of its partition inside its offsets
        (the files of one bucket and partition follow each other in offset order, so a file
        finished after compaction always starts past `last`)."""
        return (
            self.is_parquet
            and not other.is_parquet
            and other.partition == self.partition
            and self.first <= other.first
            and other.last <= self.last
        )


def uncovered(parts: list[PartFile]) -> list[PartFile]:
    """The files a reader reads: every Parquet file, and the JSONL files that no Parquet file
    of the same bucket folder covers."""
    parquet = [p for p in parts if p.is_parquet]
    if not parquet:
        return parts
    return [
        p for p in parts if not any(q.path.parent == p.path.parent and q.covers(p) for q in parquet)
    ]


@dataclass(frozen=True)
class Checkpoint:
    """What a committed checkpoint says of one open file of a partition (or of a manifest
    listing them: `is_manifest`)."""

    file: str
    size: int
    last: int

    @property
    def is_manifest(self) -> bool:
        return MANIFEST.match(self.file) is not None

    def _match(self) -> re.Match[str]:
        match = IN_PROGRESS.match(self.file)
        if match is None:
            raise ValueError(f"not an in-progress file name: {self.file!r}")
        return match

    @property
    def partition(self) -> int:
        return int(self._match().group(1))

    @property
    def first(self) -> int:
        return int(self._match().group(3))

    @property
    def bucket(self) -> str:
        return code_bucket(self._match().group(4))

    @property
    def suffix(self) -> str:
        """The compression the file was written in (`""` for none)."""
        return self._match().group(5)

    @property
    def finished(self) -> str:
        """`<bucket>/<finished name>`: where the file is (or will be) published, below the
        channel directory."""
        name = finished_name(self.partition, self.first, self.last, self.suffix)
        return f"{self.bucket}/{name}"
