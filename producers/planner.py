"""Cut a file into line-aligned chunks without holding more than one read block in memory."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config.constants import READ_BLOCK_BYTES
from tsbatch.errors import SourceError
from tsbatch.newlines import nth_newline


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


def identity(path: Path) -> FileIdentity:
    st = os.stat(path)
    return FileIdentity(size=st.st_size, mtime_ns=st.st_mtime_ns)


def read_header(path: Path) -> tuple[tuple[str, ...], int]:
    """The CSV header's column names and the byte offset where the data starts."""
    with open(path, "rb") as f:
        first = f.readline(READ_BLOCK_BYTES)
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


def scan(
    path: Path, *, chunk_lines: int, offset: int = 0, first_line: int = 1, block_bytes: int = READ_BLOCK_BYTES
) -> Iterator[ChunkRange]:
    """Yield chunks of ``chunk_lines`` lines from ``offset``; a final line without newline is kept."""
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        start, pos, lines, line_no = offset, offset, 0, first_line
        digest, last = hashlib.sha256(), b"\n"
        while block := f.read(block_bytes):
            last = block[-1:]
            view, i = memoryview(block), 0
            while i < len(block):
                need = chunk_lines - lines
                have = block.count(b"\n", i)
                if have < need:
                    digest.update(view[i:])
                    lines += have
                    break
                cut = nth_newline(block, i, need) + 1
                digest.update(view[i:cut])
                end = pos + cut
                yield ChunkRange(start, end, line_no, chunk_lines, digest.hexdigest())
                line_no += chunk_lines
                start, lines, i, digest = end, 0, cut, hashlib.sha256()
            pos += len(block)
        if pos > start:
            unterminated = 0 if last == b"\n" else 1
            yield ChunkRange(start, pos, line_no, lines + unterminated, digest.hexdigest())
