"""Cut a file into line-aligned chunks without holding more than one read block in memory."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.constants import READ_BLOCK_BYTES
from tsbatch.annotated_csv import TableContext
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
    context: str = ""  # annotated CSV: the table context in effect at ``start``


@dataclass(frozen=True, slots=True)
class FileIdentity:
    size: int
    mtime_ns: int


def identity(fd: int) -> FileIdentity:
    st = os.fstat(fd)
    return FileIdentity(size=st.st_size, mtime_ns=st.st_mtime_ns)


UTF8_BOM = b"\xef\xbb\xbf"


def bom_length(fd: int) -> int:
    """The length of a UTF-8 byte order mark at the start of the open file ``fd`` (0 if none): the data
    starts after it, so that the first record does not begin with an invisible character."""
    return len(UTF8_BOM) if os.pread(fd, len(UTF8_BOM), 0) == UTF8_BOM else 0


def read_header(fd: int, path: str | Path, delimiter: str = ",") -> tuple[tuple[str, ...], int]:
    """The CSV header's column names and the byte offset where the data starts (``path`` names the
    open file ``fd`` in messages). A byte order mark is not part of the first name, but its bytes are
    counted in the offset."""
    block = os.pread(fd, READ_BLOCK_BYTES, 0)
    first = block[: block.find(b"\n") + 1 or len(block)]
    if not first.endswith(b"\n") and len(first) == READ_BLOCK_BYTES:
        raise SourceError(f"{path}:1: header line longer than {READ_BLOCK_BYTES} bytes", reason="bad_header")
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SourceError(f"{path}:1: header is not UTF-8", reason="bad_header") from None
    columns = header_names(text, delimiter)
    if not columns or any(not c for c in columns):
        raise SourceError(f"{path}:1: header has empty column names", reason="bad_header")
    return columns, len(first)


def header_names(line: str, delimiter: str = ",") -> tuple[str, ...]:
    """The column names of a CSV header line (without its line end or byte order mark)."""
    return tuple(c.strip() for c in next(csv.reader([line], delimiter=delimiter), []))


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
        # Never above chunk_lines: with exactly two chunks' worth left, half of it plus one was one more
        # (hypothesis: "\n\n\n" in chunks of 1 line gave a chunk of 2).
        return min(max(int(remaining / 2) + 1, smallest), self.chunk_lines)


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


@dataclass(slots=True)
class _AnnotatedCut:
    """``scan_annotated``'s state: the chunk being built and the record being read."""

    path: str
    max_record_bytes: int
    sizes: _Sizes
    target: int
    start: int = 0
    line_no: int = 1  # the chunk's first line
    lines: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    chunk_context: str = ""
    context: TableContext = field(default_factory=TableContext)
    odd: bool = False  # inside a quoted field
    special: list[bytes] | None = None  # the lines of an annotation row or header being read
    record_start: int = 0

    def chunk(self, end: int) -> ChunkRange:
        done = ChunkRange(
            self.start, end, self.line_no, self.lines, self.digest.hexdigest(), self.chunk_context
        )
        self.start, self.line_no, self.lines, self.digest = (
            end,
            self.line_no + self.lines,
            0,
            hashlib.sha256(),
        )
        self.chunk_context = self.context.text
        self.target = self.sizes.next(end)
        return done

    def plain(self, region: bytes) -> bool:
        """Whether every line of ``region`` is a whole data row: no quote, annotation or empty line."""
        return (
            not self.odd
            and self.context.header_seen
            and region.endswith(b"\n")
            and b'"' not in region
            and not region.startswith((b"#", b"\n", b"\r\n"))
            and b"\n#" not in region
            and b"\n\n" not in region
            and b"\n\r\n" not in region
        )

    def fast(self, region: bytes, base: int) -> Iterator[ChunkRange]:
        view, i = memoryview(region), 0
        while i < len(region):
            need = self.target - self.lines
            have = region.count(b"\n", i)
            if have < need:
                self.digest.update(view[i:])
                self.lines += have
                return
            cut = nth_newline(region, i, need) + 1
            self.digest.update(view[i:cut])
            self.lines += need
            yield self.chunk(base + cut)
            i = cut

    def slow(self, region: bytes, base: int) -> Iterator[ChunkRange]:
        view, i, offset = memoryview(region), 0, 0
        pieces = region.split(b"\n")
        if region.endswith(b"\n"):
            pieces.pop()
        for raw in pieces:
            end = min(offset + len(raw) + 1, len(region))
            self.lines += 1
            if not self.odd:
                self.record_start = base + offset
                if not self.context.header_seen or raw[:1] == b"#" or raw in (b"", b"\r"):
                    self.special = []
            if self.special is not None:
                self.special.append(raw)
            self.odd ^= raw.count(b'"') % 2 == 1
            offset = end
            if self.odd:
                if base + end - self.record_start > self.max_record_bytes:
                    raise SourceError(
                        f"{self.path}:{self.line_no + self.lines - 1}: a record longer than "
                        f"{self.max_record_bytes} bytes (a quoted field that never closes?)",
                        reason="bad_record",
                    )
                continue
            if self.special is not None:
                self._see(b"\n".join(self.special).removesuffix(b"\r"))
            if self.lines >= self.target:
                self.digest.update(view[i:end])
                yield self.chunk(base + end)
                i = end
        self.digest.update(view[i:])

    def _see(self, record: bytes) -> None:
        self.special = None
        try:
            self.context.see(record.decode("utf-8"))
        except UnicodeDecodeError:
            raise SourceError(
                f"{self.path}:{self.line_no + self.lines - 1}: annotation or header is not UTF-8",
                reason="bad_header",
            ) from None


def scan_annotated(
    fd: int,
    *,
    chunk_lines: int,
    max_record_bytes: int,
    path: str | Path = "",
    block_bytes: int = READ_BLOCK_BYTES,
    taper: bool = False,
) -> Iterator[ChunkRange]:
    """Chunks of annotated CSV, each carrying the table context in effect at its start, cut only
    where a record ends (never inside a quoted field) after ``chunk_lines`` lines or more.

    Blocks of plain data rows are cut as ``scan`` cuts, at memory speed; a block holding quotes,
    annotations or empty lines is followed line by line, as ``tsbatch.annotated_csv`` reads it."""
    size = os.fstat(fd).st_size
    sizes = _Sizes(chunk_lines, taper, file_start=0, file_end=size)
    cut = _AnnotatedCut(str(path), max_record_bytes, sizes, chunk_lines)
    pos, carry = 0, b""
    while True:
        block = os.pread(fd, block_bytes, pos + len(carry))
        if block and not sizes.bytes_per_line:
            sizes.learn(block)
            cut.target = sizes.next(0)
        data = carry + block
        end = data.rfind(b"\n") + 1 if block else len(data)
        region, carry = data[:end], data[end:]
        if len(carry) > max(max_record_bytes, block_bytes):
            raise SourceError(
                f"{path}:{cut.line_no + cut.lines}: a line longer than {max_record_bytes} bytes",
                reason="bad_record",
            )
        if region:
            yield from (cut.fast if cut.plain(region) else cut.slow)(region, pos)
        pos += end
        if not block:
            break
    if pos > cut.start:
        yield cut.chunk(pos)
