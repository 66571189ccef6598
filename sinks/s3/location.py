"""`s3://bucket/prefix` as a value that joins like a `Path`: `base / "events"`.

A command-line argument typed `Path` turns `s3://b/p` into `s3:/b/p` (pathlib folds the double
slash); `location()` reads that spelling too, so every reader accepts either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEME = "s3://"
# S3's rules for new buckets: 3-63 characters, lower-case letters, digits, dots and hyphens,
# a letter or digit at each end, not an IP address.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing `/`); `options` (sinks/s3/store.py
    S3Options) says how to reach it, None for the standard AWS sources alone."""

    bucket: str
    key: str = ""
    options: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, options: Any = None) -> S3Location:
        if not text.startswith(SCHEME):
            raise ValueError(f"not an s3:// URL: {text!r}")
        bucket, _, key = text[len(SCHEME) :].partition("/")
        if not BUCKET.match(bucket) or IP_ADDRESS.match(bucket) or ".." in bucket:
            raise ValueError(
                f"{bucket!r} is not a valid S3 bucket name (3-63 characters: lower-case "
                "letters, digits, dots and hyphens, beginning and ending with a letter or digit)"
            )
        key = key.strip("/")
        if any(part in ("", ".", "..") for part in key.split("/")) and key:
            raise ValueError(f"the prefix of {text!r} has an empty, '.' or '..' segment")
        return cls(bucket, key, options)

    def __truediv__(self, name: str | Path) -> S3Location:
        name = str(name).strip("/")
        return S3Location(self.bucket, f"{self.key}/{name}" if self.key else name, self.options)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> S3Location:
        return S3Location(self.bucket, self.key.rpartition("/")[0], self.options)

    @property
    def prefix(self) -> str:
        """The key prefix of everything below this location (`key/`, or `` for a bucket)."""
        return f"{self.key}/" if self.key else ""

    def with_options(self, options: Any) -> S3Location:
        return S3Location(self.bucket, self.key, options)


def is_s3(value: object) -> bool:
    if isinstance(value, S3Location):
        return True
    text = str(value) if isinstance(value, str | Path) else ""
    return text.startswith("s3:/")


def location(value: str | Path | S3Location) -> Path | S3Location:
    """A local directory or an S3 location, from a string, a Path or a location."""
    if isinstance(value, S3Location):
        return value
    text = str(value)
    if text.startswith(SCHEME):
        return S3Location.parse(text)
    if isinstance(value, Path) and text.startswith("s3:/"):  # `s3://b/p` through pathlib
        return S3Location.parse(SCHEME + text[len("s3:/") :])
    return Path(value)
