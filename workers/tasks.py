"""The chunk task: claim, read, parse, write, commit — exactly once per idempotency key.

Delivery is at-least-once (acks_late, reject_on_worker_lost, the visibility timeout). What makes a chunk
commit once is the ledger: a delivery first claims the key with a lease and a fencing token; a key
already committed is acknowledged without writing; a key another worker holds is deferred until that
lease is gone; and the commit succeeds only while this worker's token still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from config import ConfigError
from tsbatch.descriptor import ChunkDescriptor, DescriptorError, parse_descriptor
from tsbatch.errors import (
    LeaseLost,
    PermanentWriteError,
    RouteUnavailable,
    SourceError,
    TransientWriteError,
    WriteError,
)
from tsbatch.ledger import RejectedLine
from tsbatch.sources import open_source
from workers.celeryapp import TASK_NAME, app
from workers.parsers import Batch, batches
from workers.runtime import Runtime, get_runtime, shutdown_runtime
from workers.writer import RejectedBatch, RouteWriter

log = logging.getLogger("tsbatch.worker")


@dataclass
class Outcome:
    status: str  # committed | duplicate | dead | defer
    countdown: float = 0.0
    failures: int = 0
    error: str = ""
    points: int = 0
    rejected: int = 0
    history: list[str] = field(default_factory=list)


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


def backoff_s(failures: int, *, base: float, cap: float, floor: float | None) -> float:
    """Exponential backoff with full jitter; the server's Retry-After is a floor, never shortened."""
    jittered = random.uniform(0, min(cap, base * 2**failures))
    return max(jittered, floor or 0.0)


def read_range(desc: ChunkDescriptor, roots: Sequence[Path]) -> bytes:
    """The chunk's bytes from the file opened once beneath the roots, checked against the plan."""
    with open_source(desc.path, roots) as src:
        return src.read_range(desc.start, desc.end, sha256=desc.chunk_sha256, first_line=desc.first_line)


def _most_severe(group: BaseExceptionGroup[BaseException]) -> BaseException:
    order = (PermanentWriteError, LeaseLost, TransientWriteError, WriteError)
    leaves = list(_leaves(group))
    for kind in order:
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0]


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _timings(*, read: float, encode: float, write: float) -> dict[str, int]:
    """read: file range and its SHA-256 check; encode: the parse loop (parsing, and the loop's work on
    writes in flight between batches); write: waiting for the writes still in flight after the last batch."""
    return {"read_ms": round(read * 1000), "encode_ms": round(encode * 1000), "write_ms": round(write * 1000)}


class ChunkRun:
    """One delivery of one claimed chunk."""

    def __init__(
        self, rt: Runtime, desc: ChunkDescriptor, holder: str, failures: int, history: list[str]
    ) -> None:
        self.rt = rt
        self.desc = desc
        self.holder = holder
        self.failures = failures
        self.history = history  # the failed attempts before this one, for the dead-letter entry
        self.lost = asyncio.Event()
        self.started = time.time()
        # Where the chunk's wall time went, for the commit record (scripts/bench.py's overhead figure).
        self.timings: dict[str, int] = {}

    async def run(self) -> Outcome:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            return await self._guarded()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _guarded(self) -> Outcome:
        """Unexpected errors: Redis and shutdown go up (the message comes back); a bug dead-letters."""
        try:
            return await self._classified()
        except redis.RedisError:
            raise  # the ledger is unreachable: not the chunk's fault (see ingest_chunk)
        except Exception as e:
            if self.rt.closing:
                raise  # the process is going down under us: the unacked message will come back
            # A bug must not lose the chunk: Celery would ack the failed task and forget it.
            log.exception("unexpected error on job=%s key=%s", self.desc.job_id, self.desc.key[:12])
            return await self._dead("internal_error", f"{type(e).__name__}: {e}")

    async def _classified(self) -> Outcome:
        """The outcomes tsbatch's own exceptions stand for."""
        try:
            try:
                return await self._work()
            except BaseExceptionGroup as group:
                raise _most_severe(group) from None
        except SourceError as e:
            return await self._dead(e.reason, str(e))
        except ConfigError as e:
            return await self._dead("unknown_route", str(e))
        except PermanentWriteError as e:
            return await self._dead("route_rejected", str(e))
        except TransientWriteError as e:
            return await self._transient(e)
        except RouteUnavailable as e:
            # Not the chunk's failure: give it back and come again when the breaker lets a probe through.
            await asyncio.to_thread(self.rt.ledger.release, self.desc.key, self.holder)
            await asyncio.to_thread(self.rt.guard.count, "breaker_deferrals")
            countdown = e.wait_s + random.uniform(0, 1)
            return Outcome("defer", countdown=countdown, failures=self.failures, history=self.history)
        except LeaseLost:
            # Someone else may hold the chunk now, or our lease lapsed: look again in a second.
            return Outcome("defer", countdown=1.0, failures=self.failures, history=self.history)

    async def _heartbeat(self) -> None:
        w = self.rt.settings.worker
        while True:
            await asyncio.sleep(w.heartbeat_s)
            try:
                held = await asyncio.to_thread(
                    self.rt.ledger.renew, self.desc.key, self.holder, lease_ttl_s=w.lease_ttl_s
                )
            except redis.RedisError:
                continue  # Redis restarting: the commit is fenced anyway
            if not held:
                self.lost.set()
                return

    async def _work(self) -> Outcome:
        desc, settings = self.desc, self.rt.settings
        settings.route(desc.route)
        await self._breaker_allows()
        written, rejected = await self._write_all()
        digest = hashlib.sha256(b"".join(d for w in written for d in w.digests)).hexdigest()
        points, size = sum(w.points for w in written), sum(w.size for w in written)
        rejected += [r for w in written for r in w.rejected]
        return await self._commit(points, size, digest, sorted(rejected, key=lambda r: r.line))

    async def _write_all(self) -> tuple[list[Written], list[RejectedLine]]:
        """Read the chunk, write its batches, and return what each write put on the server (in batch
        order) and the lines the parser refused. The chunk's bytes and bodies are released on return."""
        desc, w = self.desc, self.rt.settings.worker
        t_read = time.perf_counter()
        # On the loop, not in a thread: no write is in flight yet, and a 14 MB buffer allocated in the
        # thread pool's malloc arenas stayed resident after free (worker RSS +40 MB from a 1M- to a
        # 20M-line file; 0 MB when read here; issue #4).
        data = read_range(desc, self.rt.settings.sources.roots)
        t_encode = time.perf_counter()
        writer = self.rt.writer(desc.route)
        rejected: list[RejectedLine] = []
        sends = []
        async with asyncio.TaskGroup() as tg:
            for batch in batches(data, desc, batch_lines=w.batch_lines, max_line_bytes=w.max_line_bytes):
                if self.lost.is_set():
                    raise LeaseLost(desc.key)
                rejected.extend(batch.rejected)
                if batch.numbers:
                    sends.append(tg.create_task(self._send(writer, batch)))
                await self._room(sends, w.writes_in_flight)
            t_write = time.perf_counter()
        self.timings = _timings(
            read=t_encode - t_read, encode=t_write - t_encode, write=time.perf_counter() - t_write
        )
        return [task.result() for task in sends], rejected

    async def _breaker_allows(self) -> None:
        route = self.desc.route
        verdict = await asyncio.to_thread(self.rt.guard.allow, route)
        if verdict.allowed:
            if verdict.failures:
                self.rt.writer(route).breaker_dirty = True  # our first success resets the count
            return
        if verdict.kind == "permanent":
            # A refused token or a missing bucket does not mend itself: dead-letter without a request.
            raise PermanentWriteError(f"route {route}: circuit open after: {verdict.reason}")
        raise RouteUnavailable(f"route {route}: circuit open after: {verdict.reason}", wait_s=verdict.wait_s)

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

    async def _commit(self, points: int, size: int, sha256: str, rejected: list[RejectedLine]) -> Outcome:
        desc = self.desc
        record: dict[str, str | int | float] = {
            "points": points,
            "bytes": size,
            "sha256": sha256,  # over the SHA-256 digests of the bodies written, in order
            "rejected": len(rejected),
            "worker": self.rt.worker_id,
            "started_ms": int(self.started * 1000),
            "duration_ms": int((time.time() - self.started) * 1000),
            "failures": self.failures,
            "path": desc.path,
            "first_line": desc.first_line,
            **self.timings,
        }
        common = {"job": desc.job_id, "key": desc.key, "path": desc.path, "route": desc.route}
        # On the loop, not in a thread: every write is done, only the (sleeping) heartbeat could run.
        committed = self.rt.ledger.commit(
            desc.key,
            self.holder,
            job_id=desc.job_id,
            record=record,
            rejected=rejected,
            dlq_common=common,
        )
        if not committed:
            raise LeaseLost(desc.key)
        log.info(
            "committed job=%s key=%s path=%s line=%d points=%d rejected=%d ms=%d",
            desc.job_id,
            desc.key[:12],
            desc.path,
            desc.first_line,
            points,
            len(rejected),
            record["duration_ms"],
        )
        return Outcome("committed", points=points, rejected=len(rejected))

    async def _dead(self, reason: str, message: str) -> Outcome:
        desc = self.desc
        entry = {
            "reason": reason,
            "message": message,
            "job": desc.job_id,
            "key": desc.key,
            "path": desc.path,
            "line": str(desc.first_line),
            "route": desc.route,
            "attempts": str(self.failures + 1),
            "history": json.dumps(self.history),
            "descriptor": json.dumps(desc.to_message()),
        }
        await asyncio.to_thread(
            self.rt.ledger.dead_letter, desc.key, self.holder, job_id=desc.job_id, entry=entry
        )
        log.warning("dead-lettered job=%s key=%s reason=%s: %s", desc.job_id, desc.key[:12], reason, message)
        return Outcome("dead", error=message)

    async def _transient(self, err: TransientWriteError) -> Outcome:
        w = self.rt.settings.worker
        failures = self.failures + 1
        self.history = [*self.history, f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {err}"][-20:]
        await asyncio.to_thread(self.rt.guard.count, "task_retries")
        if failures > w.max_retries:
            return await self._dead("retries_exhausted", f"after {failures} attempts: {err}")
        # Free the chunk so that the retry (or any worker) can claim it at once when its time comes.
        await asyncio.to_thread(self.rt.ledger.release, self.desc.key, self.holder)
        countdown = backoff_s(failures - 1, base=w.retry_base_s, cap=w.retry_max_s, floor=err.retry_after)
        log.info("retry job=%s key=%s in %.1fs: %s", self.desc.job_id, self.desc.key[:12], countdown, err)
        return Outcome("defer", countdown=countdown, failures=failures, error=str(err), history=self.history)


async def execute(rt: Runtime, message: object, *, failures: int, history: list[str]) -> Outcome:
    try:
        desc = parse_descriptor(message)
    except DescriptorError as e:
        job = message.get("job_id") if isinstance(message, dict) else None
        job_id = job if isinstance(job, str) and 0 < len(job) <= 64 else None
        raw = json.dumps(message, default=str)[:65_536]
        await asyncio.to_thread(
            rt.ledger.dead_letter_message,
            {"reason": "bad_descriptor", "message": str(e), "job": job_id or "", "raw": raw},
            job_id,
        )
        log.warning("dead-lettered a bad descriptor: %s", e)
        return Outcome("dead", error=str(e))
    w = rt.settings.worker
    # Called on the loop, not in a thread: nothing else runs yet, and a thread hop per chunk was ~1 ms of
    # the time between chunks (issue #4).
    claim = rt.ledger.claim(desc.key, worker=rt.worker_id, job_id=desc.job_id, lease_ttl_s=w.lease_ttl_s)
    if claim.status in ("committed", "dead"):
        return Outcome("duplicate")
    if claim.status == "busy":
        return Outcome("defer", countdown=max(claim.retry_in_s, 1.0), failures=failures, history=history)
    return await ChunkRun(rt, desc, claim.holder, failures, history).run()


@app.task(bind=True, name=TASK_NAME, max_retries=None)
def ingest_chunk(
    self: Task, message: dict[str, Any], failures: int = 0, history: list[str] | None = None
) -> dict[str, Any]:
    """Execute one chunk descriptor. ``failures`` and ``history`` travel with Celery's retries."""
    rt = get_runtime()
    try:
        outcome = rt.run(execute(rt, message, failures=failures, history=list(history or [])))
    except redis.RedisError as e:
        # Redis restarting or unreachable: nothing was committed, and a failed task would be acked and
        # forgotten. Come back once it is up; the lease (if one was taken) lapses by itself.
        w = rt.settings.worker
        countdown = backoff_s(0, base=w.retry_base_s, cap=w.retry_base_s * 8, floor=1.0)
        log.warning("ledger unreachable, retrying in %.1fs: %s", countdown, e)
        raise self.retry(countdown=countdown, max_retries=None) from None
    if outcome.status == "defer":
        kwargs = {"failures": outcome.failures, "history": outcome.history}
        raise self.retry(kwargs=kwargs, countdown=outcome.countdown, max_retries=None)
    return asdict(outcome)


@worker_process_init.connect
def _start_runtime(**_: Any) -> None:
    get_runtime()


@worker_process_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    shutdown_runtime()


@worker_shutdown.connect
def _stop_solo_runtime(**_: Any) -> None:
    shutdown_runtime()  # --pool solo runs tasks in the main process
