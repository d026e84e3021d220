"""A Parquet chunk's work before the writes: read its row groups' bytes (checked against the plan) and
decode them into batches of line protocol (``workers/arrowlines.py``).

The bytes are read first, whole, like every other format's range (at most ``producer.max_chunk_bytes``):
pyarrow then decodes from memory, so no store request runs on the event loop while it decodes, and an
object replaced between two reads cannot mix two versions into one chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.parquet as pq

from config.settings import SourceSettings
from tsbatch.descriptor import ChunkDescriptor
from tsbatch.errors import SourceError
from tsbatch.parquetfile import mapping_problem, open_parquet, read_metadata
from tsbatch.sources import is_url
from workers.arrowlines import ArrowEncoder
from workers.parsers import Batch


@dataclass(frozen=True, slots=True)
class ParquetChunk:
    """What a worker holds of a Parquet file: its footer and the chunk's row groups' bytes."""

    footer: bytes
    data: bytes  # the file's bytes start..end


def read_chunk(desc: ChunkDescriptor, sources: SourceSettings) -> ParquetChunk:
    """The chunk's bytes, refused (``source_changed``) unless the file is still the one planned."""
    with open_parquet(desc.path, roots=sources.roots, url_roots=sources.url_roots) as src:
        if (src.size, src.version) != (desc.file_size, desc.source_version):
            raise _changed(desc)
        footer = src.footer()
        data = src.read(desc.start, desc.end)
    digest = hashlib.sha256(footer)
    if src.local:
        digest.update(data)
    if digest.hexdigest() != desc.chunk_sha256:
        raise _changed(desc)
    return ParquetChunk(footer, data)


async def read_chunk_async(desc: ChunkDescriptor, sources: SourceSettings) -> ParquetChunk:
    """``read_chunk``; an object store's requests in a thread, so the loop (heartbeat) runs meanwhile.
    A local file is read on the loop, as every other format's range is (see ``workers/chunks.py``)."""
    if is_url(desc.path) and not desc.path.startswith("file://"):
        return await asyncio.to_thread(read_chunk, desc, sources)
    return read_chunk(desc, sources)


def _changed(desc: ChunkDescriptor) -> SourceError:
    return SourceError(
        f"{desc.path}:{desc.first_line}: row groups {desc.row_groups} changed since planning",
        reason="source_changed",
    )


class _HeldBytes(io.RawIOBase):
    """The file as pyarrow sees it, holding only the chunk's bytes at their offsets: a read anywhere
    else (the footer is handed over parsed) is a bug, and fails instead of reading zeros."""

    def __init__(self, chunk: ParquetChunk, *, start: int, size: int) -> None:
        self._data, self._start, self._size, self._pos = chunk.data, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        begin = self._pos - self._start
        end = min(begin + len(buffer), len(self._data))
        if begin < 0 or begin > len(self._data):
            raise OSError(f"read at byte {self._pos}, outside the chunk's bytes")
        buffer[: end - begin] = self._data[begin:end]
        self._pos += end - begin
        return end - begin


def batches(
    chunk: ParquetChunk, desc: ChunkDescriptor, *, batch_lines: int, max_line_bytes: int
) -> Iterator[Batch]:
    """The chunk's rows, ``batch_lines`` at a time, as batches of line protocol and rejected rows."""
    assert desc.mapping is not None and desc.row_groups is not None  # the descriptor's own check
    md = read_metadata(chunk.footer, desc.path)
    problem = mapping_problem(md.schema.to_arrow_schema(), desc.mapping)
    if problem is not None:
        raise SourceError(f"{desc.path}: {problem}", reason="bad_mapping")
    first, count = desc.row_groups
    if first + count > md.num_row_groups:
        raise _changed(desc)
    encoder = ArrowEncoder(desc.mapping, desc.precision, max_line_bytes=max_line_bytes)
    held = _HeldBytes(chunk, start=desc.start, size=desc.file_size)
    parquet = pq.ParquetFile(held, metadata=md)
    row = desc.first_line
    for record_batch in parquet.iter_batches(
        batch_size=batch_lines,
        row_groups=list(range(first, first + count)),
        columns=encoder.columns(),
        use_threads=False,  # one core per worker process: its siblings have theirs
    ):
        yield encoder.encode(record_batch, first_row=row)
        row += record_batch.num_rows
