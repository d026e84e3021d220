"""Cut a file into line-aligned chunks without holding more than one read block in memory."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from config.constants import READ_BLOCK_BYTES
from tsbatch.errors import SourceError
from tsbatch.newlines import nth_newline


def expand(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; a directory stands for the regular files below it, in name order."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield p


@dataclass(frozen=True, slots=True)
class ChunkRange:
    start: int
    end: int
    first_line: int  # 1-based
    line_count: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FileIdentity:
    size: int
    mtime_ns: int


def identity(fd: int) -> FileIdentity:
    st = os.fstat(fd)
    return FileIdentity(size=st.st_size, mtime_ns=st.st_mtime_ns)


def read_header(fd: int, path: str | Path) -> tuple[tuple[str, ...], int]:
    """The CSV header's column names and the byte offset where the data starts (``path`` names the
    open file ``fd`` in messages)."""
    block = os.pread(fd, READ_BLOCK_BYTES, 0)
    first = block[: block.find(b"\n") + 1 or len(block)]
    if not first.endswith(b"\n") and len(first) == READ_BLOCK_BYTES:
        raise SourceError(f"{path}:1: header line longer than {READ_BLOCK_BYTES} bytes", reason="bad_header")
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SourceError(f"{path}:1: header is not UTF-8", reason="bad_header") from None
    columns = tuple(c.strip() for c in next(csv.reader([text]), []))
    if not columns or any(not c for c in columns):
        raise SourceError(f"{path}:1: header has empty column names", reason="bad_header")
    return columns, len(first)


TAPER_FROM_CHUNKS = 2  # the last this-many chunks' worth of a file is cut into halves, quarters, ...
TAPER_SMALLEST = 8  # ... down to chunk_lines / 8


@dataclass(slots=True)
class _Sizes:
    """How many lines the next chunk gets.

    With ``taper``, the last two chunks' worth of a file longer than that is cut in halves, quarters
    and eighths (guided self-scheduling): the last chunks of a job are small, so the workers finish
    together instead of one finishing a whole chunk alone (issue #4: that tail was 2.9% of worker
    time at 100k lines). Files of one or two chunks are not cut smaller: a job of many small files
    would pay for the extra chunks on every file.

    The remaining line count is estimated from the file's size and its first block's line length,
    so the cut depends only on the file's bytes, and re-planning an unchanged file gives the same
    chunks (and idempotency keys) as before.
    """

    chunk_lines: int
    taper: bool
    file_start: int
    file_end: int
    bytes_per_line: float = 0.0

    def learn(self, block: bytes) -> None:
        self.bytes_per_line = len(block) / max(block.count(b"\n"), 1)
        if (self.file_end - self.file_start) / self.bytes_per_line <= TAPER_FROM_CHUNKS * self.chunk_lines:
            self.taper = False  # a short file: its one or two chunks stay whole (many small files)

    def next(self, start: int) -> int:
        if not self.taper or not self.bytes_per_line:
            return self.chunk_lines
        remaining = (self.file_end - start) / self.bytes_per_line
        smallest = max(self.chunk_lines // TAPER_SMALLEST, 1)
        if remaining > TAPER_FROM_CHUNKS * self.chunk_lines or remaining < 2 * smallest:
            return self.chunk_lines  # not near the end yet, or so near that the rest is one chunk
        return max(int(remaining / 2) + 1, smallest)


def scan(
    fd: int,
    *,
    chunk_lines: int,
    offset: int = 0,
    first_line: int = 1,
    block_bytes: int = READ_BLOCK_BYTES,
    taper: bool = False,
) -> Iterator[ChunkRange]:
    """Yield chunks of ``chunk_lines`` lines of the open file ``fd`` from ``offset`` (smaller ones at
    the end with ``taper``); a final line without newline is kept."""
    sizes = _Sizes(chunk_lines, taper, file_start=offset, file_end=os.fstat(fd).st_size)
    start, pos, lines, line_no = offset, offset, 0, first_line
    digest, last = hashlib.sha256(), b"\n"
    target = chunk_lines
    while block := os.pread(fd, block_bytes, pos):
        if not sizes.bytes_per_line:
            sizes.learn(block)
            target = sizes.next(start)
        last = block[-1:]
        view, i = memoryview(block), 0
        while i < len(block):
            need = target - lines
            have = block.count(b"\n", i)
            if have < need:
                digest.update(view[i:])
                lines += have
                break
            cut = nth_newline(block, i, need) + 1
            digest.update(view[i:cut])
            end = pos + cut
            yield ChunkRange(start, end, line_no, target, digest.hexdigest())
            line_no += target
            start, lines, i, digest = end, 0, cut, hashlib.sha256()
            target = sizes.next(start)
        pos += len(block)
    if pos > start:
        unterminated = 0 if last == b"\n" else 1
        yield ChunkRange(start, pos, line_no, lines + unterminated, digest.hexdigest())
