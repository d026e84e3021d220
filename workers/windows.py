"""The window work: read a window's raw points from the job's source, aggregate (downsample) or pass
them through (copy), write the result to the target. Run by the exactly-once harness
(workers/harness.py), which claims, commits or dead-letters the window like any unit.

A downsample writes one point per tag set, stamped at the window's *start* with one field per input
field and aggregate (``usage_mean``): a re-run writes the same series and timestamps, so it overwrites
instead of adding points. The commit record carries the points read, their order-independent
fingerprint (``tsbatch windows verify`` compares it with the source later: late data), the points
written and the SHA-256 of the bodies written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator

from tsbatch.errors import PermanentWriteError
from tsbatch.windows import Definition, WindowDescriptor
from workers.aggregate import Aggregator, Fingerprint
from workers.harness import Attempt, DescribedWork, Result
from workers.lineprotocol import encode_point
from workers.readers import Block, read_victoria
from workers.runtime import Runtime
from workers.writer import RejectedBatch


def read_window(rt: Runtime, defn: Definition, start: int, end: int) -> AsyncIterator[Block]:
    """The raw points of ``[start, end)`` from the job's source route, as blocks."""
    route = rt.settings.route(defn.source)
    if route.kind == "victoriametrics":
        return read_victoria(rt.http(), defn.source, route, defn, start, end)
    from workers.influxread import read_influx  # only influxdb2 sources need the Flux stack

    return read_influx(rt, defn, start, end)


async def fingerprint_window(rt: Runtime, defn: Definition, start: int, end: int) -> Fingerprint:
    """The fingerprint of the window's raw points as the source holds them now (``windows verify``)."""
    fp = Fingerprint()
    async for block in read_window(rt, defn, start, end):
        fp.add(block)
    return fp


class _Sink:
    """Line protocol out to the target in batches, at most ``writes_in_flight`` batches pending."""

    def __init__(self, rt: Runtime, route: str, precision: str) -> None:
        self.writer = rt.writer(route)
        self.precision = precision
        self.batch_lines = rt.settings.worker.batch_lines
        self.in_flight = rt.settings.worker.writes_in_flight
        self.lines: list[str] = []
        self.pending: set[asyncio.Task[None]] = set()
        self.points = 0
        self.size = 0
        self.digests: list[bytes] = []

    async def add(self, line: str | None) -> None:
        if line is None:
            return
        self.lines.append(line)
        if len(self.lines) >= self.batch_lines:
            await self.flush()

    async def flush(self) -> None:
        if not self.lines:
            return
        body = ("\n".join(self.lines) + "\n").encode()
        self.points += len(self.lines)
        self.size += len(body)
        self.digests.append(hashlib.sha256(body).digest())
        self.lines = []
        self.pending.add(asyncio.ensure_future(self._write(body)))
        while len(self.pending) >= self.in_flight:
            done, self.pending = await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()

    async def close(self) -> None:
        """Send what is left and wait for every write; on a failure the others are cancelled."""
        try:
            await self.flush()
            for task in asyncio.as_completed(self.pending):
                await task
        finally:
            self.cancel()

    def cancel(self) -> None:
        for task in self.pending:
            task.cancel()

    async def _write(self, body: bytes) -> None:
        try:
            await self.writer.write(body, precision=self.precision)
        except RejectedBatch as e:
            # A window's output is ours, not a user's file: a refusal (a field type conflict, a point
            # outside the bucket's retention) will not mend by itself.
            raise PermanentWriteError(
                f"the target refused the window's output: {e}", status=e.status
            ) from None

    def sha256(self) -> str:
        return hashlib.sha256(b"".join(self.digests)).hexdigest()


class WindowWork(DescribedWork[WindowDescriptor]):
    """One window descriptor's work."""

    @property
    def kind(self) -> str:
        return "archive" if self.desc.definition.kind == "archive" else "window"

    def label(self) -> str:
        return f"job={self.desc.job} {self.desc.label()}"

    def dlq_entry(self) -> dict[str, str]:
        d = self.desc
        return {
            "kind": "window",
            "path": "",
            "line": "",
            "window": d.label(),
            "job_name": d.job,
            "route": d.definition.target or d.definition.source,
            "descriptor": json.dumps(d.to_message()),
        }

    async def run(self, attempt: Attempt) -> Result:
        d, defn = self.desc, self.desc.definition
        self.rt.settings.route(defn.source)
        extra: dict[str, str | int | float] = {}
        if defn.kind != "archive":
            self.rt.settings.route(defn.target)
            await self.rt.breaker_allows(defn.target)
        started = time.perf_counter()
        if defn.kind == "archive":
            from workers.archive import run_archive_window  # only archive jobs need pyarrow

            read, written, fp = await run_archive_window(self.rt, d, attempt)
            extra, sink = written.record(), written
        elif defn.mode == "server":
            from workers.influxread import run_server_window

            read, sink, fp = await run_server_window(self.rt, d, attempt)
        elif defn.kind == "downsample":
            read, sink, fp = await self._downsample(attempt)
        else:
            read, sink, fp = await self._copy(attempt)
        record: dict[str, str | int | float] = {
            "window_start": d.start,
            "window_end": d.end,
            "generation": d.generation,
            "job_name": d.job,
            "points_read": read,
            "fingerprint": fp.hexdigest(),
            "points": sink.points,
            "bytes": sink.size,
            "sha256": sink.sha256(),
            "window_ms": round((time.perf_counter() - started) * 1000),
            **extra,
        }
        return Result(sink.points, record)

    async def _downsample(self, attempt: Attempt) -> tuple[int, _Sink, Fingerprint]:
        d, defn = self.desc, self.desc.definition
        agg = Aggregator(defn.aggregates)
        async for block in read_window(self.rt, defn, d.start, d.end):
            attempt.check()
            agg.add(block)
        sink = _Sink(self.rt, defn.target, "s")
        try:
            for tags, fields in agg.rows():
                await sink.add(encode_point(defn.output_measurement, dict(tags), fields, d.start))
        finally:
            await sink.close()
        return agg.fingerprint.count, sink, agg.fingerprint

    async def _copy(self, attempt: Attempt) -> tuple[int, _Sink, Fingerprint]:
        d, defn = self.desc, self.desc.definition
        fp = Fingerprint()
        sink = _Sink(self.rt, defn.target, "ns")
        try:
            async for block in read_window(self.rt, defn, d.start, d.end):
                attempt.check()
                fp.add(block)
                tags = dict(block.tags)
                for t, value in zip(block.times_ns.tolist(), block.values.tolist(), strict=True):
                    await sink.add(encode_point(defn.output_measurement, tags, {block.field: value}, t))
        except BaseException:
            sink.cancel()
            raise
        await sink.close()
        return fp.count, sink, fp
