"""Compressed JSONL: `channels.<name>.compression: none | gzip | zstd`.

Each checkpoint's append to a part file is one whole gzip member or zstd frame, never a piece
of one. Concatenated members (RFC 1952) and frames (RFC 8878) are a valid file, so everything
that counts bytes keeps working unchanged: a checkpoint names a file's size at a frame's end,
a roll forward copies the committed bytes, S3 packs carry them, and a finished file
`….jsonl.gz` / `….jsonl.zst` decompresses whole with gzip, zstd, pandas, DuckDB or pyarrow.
The readers (sinks/reader.py) decompress by the name's suffix, so a channel may switch codecs
between restarts: every file says its own.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO, Final

import zstandard

from sinks.files.names import suffix_of

__all__ = ["compressor", "decompress", "decompressed", "suffix", "suffix_of"]

SUFFIXES: Final[dict[str, str]] = {"none": "", "gzip": ".gz", "zstd": ".zst"}
# The codecs' own defaults: gzip's command line (6), zstd's (3).
DEFAULT_LEVELS: Final[dict[str, int]] = {"gzip": 6, "zstd": 3}
LEVELS: Final[dict[str, range]] = {"gzip": range(0, 10), "zstd": range(-7, 23)}
GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # a gzip member (header and trailer), mtime 0
CHUNK: Final = 1 << 20  # bytes read at a time


def suffix(codec: str) -> str:
    """The ending after `.jsonl` of a finished file in `codec` (`""` for none)."""
    return SUFFIXES[codec]


def compressor(codec: str, level: int | None = None) -> Callable[[bytes], bytes] | None:
    """A function from one append's lines to one whole member or frame; None for `none`."""
    if codec == "none":
        return None
    chosen = DEFAULT_LEVELS[codec] if level is None else level
    if chosen not in LEVELS[codec]:
        raise ValueError(f"{codec} level {chosen} is not in {LEVELS[codec]}")
    if codec == "gzip":

        def member(data: bytes) -> bytes:
            packer = zlib.compressobj(chosen, zlib.DEFLATED, GZIP_WBITS)
            return packer.compress(data) + packer.flush()

        return member
    return zstandard.ZstdCompressor(level=chosen, write_content_size=True).compress


def decompressed(raw: BinaryIO, ending: str) -> BinaryIO:
    """A stream of the lines in `raw`, the bytes of a file with compression `ending`; every
    member or frame is read, not only the first."""
    if ending == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if ending == ".zst":
        return io.BufferedReader(ZstdFrames(raw), CHUNK)  # type: ignore[return-value]
    return raw


class ZstdFrames(io.RawIOBase):
    """The decompressed bytes of zstd frames one after the other. zstandard's own readers
    stop quietly at a frame cut short (and `decompress` after the first frame): this raises
    EOFError there, as gzip does, so a file that is not whole frames never reads as fewer
    lines."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._inside = False  # the current frame has had bytes and has not ended
        self._out = b""
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._at == len(self._out):
            chunk = self._raw.read(CHUNK)
            if not chunk:
                if self._inside:
                    raise EOFError("zstd data ended inside a frame (a file cut short)")
                return 0
            self._out, self._at = self._feed(chunk), 0
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at : self._at + n]
        self._at += n
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._frame.eof:
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(self._frame.decompress(chunk))
            chunk = self._frame.unused_data if self._frame.eof else b""
            self._inside = not self._frame.eof
        return b"".join(out)

    def close(self) -> None:
        super().close()
        self._raw.close()


def decompress(data: bytes, ending: str) -> bytes:
    """All of a file's bytes, decompressed (every member or frame)."""
    if ending == ".gz":
        return gzip.decompress(data)
    if ending == ".zst":
        return decompressed(io.BytesIO(data), ending).read()
    return data
