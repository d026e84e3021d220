"""The chunk work: read a file's byte range, parse it into batches, write them to the route. Run by the
exactly-once harness (workers/harness.py), which claims, commits or dead-letters the chunk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsbatch.descriptor import ChunkDescriptor
from tsbatch.errors import SourceError
from tsbatch.ledger import RejectedLine
from tsbatch.sources import open_source
from workers import columnar, parquet
from workers.harness import Attempt, DescribedWork, Result
from workers.parsers import Batch, batches
from workers.writer import RejectedBatch, RouteWriter


@dataclass(slots=True)
class Written:
    """What one batch's writes put on the server: lines, bytes and the SHA-256 of each body sent (a
    bisected batch sends several), and the lines the server refused. Bodies are not kept."""

    points: int = 0
    size: int = 0
    digests: list[bytes] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)

    def then(self, other: Written) -> Written:
        return Written(
            self.points + other.points,
            self.size + other.size,
            self.digests + other.digests,
            self.rejected + other.rejected,
        )


def read_range(desc: ChunkDescriptor, roots: Sequence[Path]) -> bytes:
    """The chunk's bytes from the file opened once beneath the roots, checked against the plan."""
    with open_source(desc.path, roots) as src:
        return src.read_range(desc.start, desc.end, sha256=desc.chunk_sha256, first_line=desc.first_line)


def _timings(*, read: float, encode: float, write: float) -> dict[str, int]:
    """read: file range and its SHA-256 check; encode: the parse loop (parsing, and the loop's work on
    writes in flight between batches); write: waiting for the writes still in flight after the last batch."""
    return {"read_ms": round(read * 1000), "encode_ms": round(encode * 1000), "write_ms": round(write * 1000)}


class ChunkWork(DescribedWork[ChunkDescriptor]):
    """One chunk descriptor's work."""

    kind = "chunk"

    def label(self) -> str:
        return f"path={self.desc.path} line={self.desc.first_line}"

    def dlq_entry(self) -> dict[str, str]:
        d = self.desc
        return {
            "path": d.path,
            "line": str(d.first_line),
            "route": d.route,
            "descriptor": json.dumps(d.to_message()),
        }

    async def run(self, attempt: Attempt) -> Result:
        desc, settings = self.desc, self.rt.settings
        settings.route(desc.route)
        limit = settings.producer.max_chunk_bytes
        if desc.end - desc.start > limit:
            raise SourceError(
                f"{desc.path}:{desc.first_line}: chunk of {desc.end - desc.start} bytes exceeds "
                f"producer.max_chunk_bytes ({limit})",
                reason="chunk_too_large",
            )
        await self.rt.breaker_allows(desc.route)
        written, rejected, timings = await self._write_all(attempt)
        digest = hashlib.sha256(b"".join(d for w in written for d in w.digests)).hexdigest()
        points, size = sum(w.points for w in written), sum(w.size for w in written)
        rejected += [r for w in written for r in w.rejected]
        record: dict[str, str | int | float] = {
            "points": points,
            "bytes": size,
            "sha256": digest,  # over the SHA-256 digests of the bodies written, in order
            "path": desc.path,
            "first_line": desc.first_line,
            "batch_lines": self.rt.settings.worker.batch_lines,  # to recompute the bodies (audit verify)
            **timings,
        }
        return Result(points, record, rejected)

    async def _write_all(self, attempt: Attempt) -> tuple[list[Written], list[RejectedLine], dict[str, int]]:
        """Read the chunk, write its batches, and return what each write put on the server (in batch
        order), the lines the parser refused and where the time went. The chunk's bytes and bodies are
        released on return."""
        desc, w = self.desc, self.rt.settings.worker
        t_read = time.perf_counter()
        # On the loop, not in a thread: no write is in flight yet, and a 14 MB buffer allocated in the
        # thread pool's malloc arenas stayed resident after free (worker RSS +40 MB from a 1M- to a
        # 20M-line file; 0 MB when read here; issue #4).
        parsed = await self._read()
        t_encode = time.perf_counter()
        writer = self.rt.writer(desc.route)
        rejected: list[RejectedLine] = []
        sends = []
        async with asyncio.TaskGroup() as tg:
            for batch in parsed:
                attempt.check()
                rejected.extend(batch.rejected)
                if batch.numbers:
                    sends.append(tg.create_task(self._send(writer, batch)))
                await self._room(sends, w.writes_in_flight)
            t_write = time.perf_counter()
        timings = _timings(
            read=t_encode - t_read, encode=t_write - t_encode, write=time.perf_counter() - t_write
        )
        return [task.result() for task in sends], rejected, timings

    async def _read(self) -> Iterator[Batch]:
        """The chunk's bytes, read now, and the batches they parse into (lazily)."""
        desc, settings = self.desc, self.rt.settings
        w = settings.worker
        if desc.format == "parquet":
            chunk = await parquet.read_chunk_async(desc, settings.sources)
            return parquet.batches(chunk, desc, batch_lines=w.batch_lines, max_line_bytes=w.max_line_bytes)
        data = read_range(desc, settings.sources.roots)
        if w.columnar:
            whole = columnar.batches(data, desc, batch_lines=w.batch_lines, max_line_bytes=w.max_line_bytes)
            if whole is not None:
                return iter(whole)
        return batches(data, desc, batch_lines=w.batch_lines, max_line_bytes=w.max_line_bytes)

    @staticmethod
    async def _room(sends: list[asyncio.Task[Any]], writes_in_flight: int) -> None:
        """Parse the next batch only when a write slot is free: parsing holds the loop, and batches parsed
        ahead of the writes starve them and leave a long drain at the chunk's end (issue #4)."""
        pending = [t for t in sends[-writes_in_flight - 1 :] if not t.done()]
        if len(pending) > writes_in_flight:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(0)  # let writes and the heartbeat progress between batches

    async def _send(self, writer: RouteWriter, batch: Batch) -> Written:
        """Write a batch; where the server refuses lines, bisect to find exactly those."""
        try:
            await writer.write(batch.body, precision=self.desc.precision)
        except RejectedBatch as e:
            if len(batch.numbers) == 1:
                reason = f"refused by the server: {e}"
                return Written(rejected=[RejectedLine(batch.numbers[0], reason, batch.lines()[0])])
            first, second = batch.halves()
            return (await self._send(writer, first)).then(await self._send(writer, second))
        body = batch.body
        return Written(len(batch.numbers), len(body), [hashlib.sha256(body).digest()])
