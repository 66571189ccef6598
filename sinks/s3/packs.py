"""Packs: the bytes a checkpoint appended to a partition's open files, as one hidden object.

    D/.inprogress/p003-0000000007/000012.pack    epoch 7's 13th checkpoint with lines

A pack is a header line, a JSON list of `[file, offset, length]` pieces (the in-progress file
name, where its bytes start in that file, how many), then those bytes in that order. One PUT
per partition and checkpoint whatever the number of buckets it wrote: a backfill writes
hundreds of files at once, and a request per file and checkpoint would cost more than the
lines. The committed checkpoint says each file's size; the bytes that count are a file's
pieces in pack order, contiguous from its start, up to that size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from sinks.s3.location import S3Location
from sinks.s3.store import S3Store

PACK = re.compile(r"^(\d{6,})\.pack$")
FOLDER = re.compile(r"^p(\d+)-(\d+)$")  # partition, epoch
Piece = tuple[str, int, int]  # in-progress file name, offset in that file, length


def folder(partition: int, epoch: int) -> str:
    return f"p{partition:03d}-{epoch:010d}"


def pack_name(seq: int) -> str:
    return f"{seq:06d}.pack"


def encode(pieces: list[Piece], spool: Path) -> bytearray:
    """The pack of `pieces`, their bytes read back from the spool files, where they were
    written (the page cache, no disk read): the batches are not kept in memory until the
    checkpoint, and the pack is the one copy of them that is (peak RSS of the S3 sink)."""
    header = orjson.dumps([[name, offset, length] for name, offset, length in pieces]) + b"\n"
    pack = bytearray(len(header) + sum(length for _name, _offset, length in pieces))
    pack[: len(header)] = header
    view = memoryview(pack)
    at = len(header)
    fds: dict[str, int] = {}
    try:
        for name, offset, length in pieces:
            fd = fds.get(name)
            if fd is None:
                fd = fds[name] = os.open(spool / name, os.O_RDONLY | os.O_CLOEXEC)
            _read_exactly(fd, view[at : at + length], offset)
            at += length
    finally:
        for fd in fds.values():
            os.close(fd)
    return pack


def _read_exactly(fd: int, into: memoryview, offset: int) -> None:
    while into:
        got = os.preadv(fd, [into], offset)
        if got == 0:
            raise OSError(f"spool file ended {len(into)} bytes short of its pack piece")
        into, offset = into[got:], offset + got


def decode(data: bytes) -> Iterator[tuple[str, int, memoryview]]:
    """The pieces of a pack, their bytes as views into `data`."""
    end = data.index(b"\n")
    view = memoryview(data)
    at = end + 1
    for name, offset, length in orjson.loads(data[:end]):
        yield name, offset, view[at : at + length]
        at += length


def assemble(
    store: S3Store, packs: list[S3Location], sizes: dict[str, int], spool: Path
) -> dict[str, Path]:
    """Local copies of the files' committed bytes, from the packs (in order; one in memory at
    a time): `sizes` names each file and its committed size. A file whose packs do not hold
    all of it has no copy."""
    spool.mkdir(parents=True, exist_ok=True)
    got = dict.fromkeys(sizes, 0)
    for where in packs:
        data = store.get(where)
        if data is None:
            continue  # deleted meanwhile: its files were published
        for name, offset, piece in decode(data):
            size, have = sizes.get(name), got.get(name)
            if size is None or have is None or offset != have or have >= size:
                continue  # not wanted, a gap, or past the committed size (never committed)
            take = piece[: size - have]
            with open(spool / f"{name}.copy", "ab" if have else "wb") as copy:
                copy.write(take)
            got[name] = have + len(take)
    return {name: spool / f"{name}.copy" for name, size in sizes.items() if got[name] == size}
