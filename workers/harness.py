"""The exactly-once harness: every kind of unit (a file chunk today; a window or an archive next) runs
through it, so the ledger's guarantees are written once.

    claim (lease + fencing token, durable attempt count)
      ├── done already (committed / dead) or held by a live lease ── ack: nothing to do
      ├── over ``worker.max_attempts`` ─────────────────────────── dead-letter as ``poison``
      └── claimed ── run the work under a heartbeat that renews the lease
            ├── result ─────────────── fenced commit (a lost lease: defer, someone else may hold it)
            ├── transient failure ──── release with the failure recorded, retry with backoff;
            │                          over ``worker.max_retries``: dead-letter ``retries_exhausted``
            ├── route unavailable ──── release, the attempt given back; retry when the breaker allows
            ├── permanent failure ──── dead-letter with the reason
            └── Redis unreachable ──── up to the task: the message comes back, the lease lapses

Every "not done" answer of the ledger is acted on: a fenced commit defers, a fenced dead letter leaves
the unit to the holder or the sweeper (it stays in the outbox), never acked as if it were done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import redis

from config import ConfigError
from tsbatch import logs
from tsbatch.errors import (
    LeaseLost,
    PermanentWriteError,
    RouteUnavailable,
    SourceError,
    TransientWriteError,
    WriteError,
)
from tsbatch.ledger import Claim, RejectedLine
from tsbatch.redaction import redact
from workers import metrics
from workers.runtime import Runtime

log = logging.getLogger("tsbatch.worker")


@dataclass
class Outcome:
    status: str  # committed | duplicate | busy | dead | fenced | defer
    countdown: float = 0.0
    error: str = ""
    points: int = 0
    rejected: int = 0


@dataclass
class Result:
    """What a unit's work produced, for its commit record and the DLQ entries of its rejected lines."""

    points: int
    record: dict[str, str | int | float]
    rejected: list[RejectedLine] = field(default_factory=list)


class Work(Protocol):
    """One kind of unit's work, run by the harness under a claimed lease."""

    @property
    def key(self) -> str: ...

    @property
    def job_id(self) -> str: ...

    @property
    def kind(self) -> str:
        """chunk | window | archive: the ``kind`` label of the unit's metrics."""
        ...

    def label(self) -> str:
        """Where the unit is, for log lines (``path:line``, a window)."""
        ...

    def dlq_entry(self) -> dict[str, str]:
        """The unit's own fields of a dead-letter entry (path, line, route, descriptor)."""
        ...

    async def run(self, attempt: Attempt) -> Result: ...


D = TypeVar("D", bound="Described")


class Described(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def job_id(self) -> str: ...


class DescribedWork(Generic[D]):
    """What every kind of work shares: the runtime and a descriptor that carries the key and the job."""

    def __init__(self, rt: Runtime, desc: D) -> None:
        self.rt = rt
        self.desc = desc

    @property
    def key(self) -> str:
        return self.desc.key

    @property
    def job_id(self) -> str:
        return self.desc.job_id


def backoff_s(failures: int, *, base: float, cap: float, floor: float | None) -> float:
    """Exponential backoff with full jitter; the server's Retry-After is a floor, never shortened."""
    jittered = random.uniform(0, min(cap, base * 2**failures))
    return min(max(jittered, floor or 0.0), cap)


class Attempt:
    """One claimed delivery of one unit: the lease, renewed by a heartbeat while the work runs."""

    def __init__(self, rt: Runtime, work: Work, claim: Claim) -> None:
        self.rt = rt
        self.work = work
        self.holder = claim.holder
        self.attempts = claim.attempts
        self.failures = claim.failures  # transient failures before this attempt (durable, in the ledger)
        self.lost = asyncio.Event()
        self.started = time.time()

    def check(self) -> None:
        """Stop the work as soon as the lease is known to be lost."""
        if self.lost.is_set():
            raise LeaseLost(self.work.key)

    def confirm(self) -> None:
        """Check with the ledger, now, that this attempt still holds the lease (fencing before an effect
        that cannot be taken back, such as putting a file in place); may be called from a thread."""
        w = self.rt.settings.worker
        if self.lost.is_set() or not self.rt.ledger.renew(
            self.work.key, self.holder, lease_ttl_s=w.lease_ttl_s
        ):
            raise LeaseLost(self.work.key)

    async def run(self) -> Outcome:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            return await self._guarded()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self) -> None:
        w = self.rt.settings.worker
        while True:
            await asyncio.sleep(w.heartbeat_s)
            try:
                held = await asyncio.to_thread(
                    self.rt.ledger.renew, self.work.key, self.holder, lease_ttl_s=w.lease_ttl_s
                )
            except redis.RedisError:
                continue  # Redis restarting: the commit is fenced anyway
            if not held:
                metrics.EXPIRIES.inc()
                self.lost.set()
                return
            metrics.RENEWALS.inc()

    async def _guarded(self) -> Outcome:
        """Unexpected errors: Redis and shutdown go up (the message comes back); a bug dead-letters."""
        try:
            return await self._classified()
        except redis.RedisError:
            raise  # the ledger is unreachable or refusing: not the unit's fault (see the task)
        except Exception as e:
            if self.rt.closing:
                raise  # the process is going down under us: the unacked message will come back
            # A bug must not lose the unit: Celery would ack the failed task and forget it.
            log.exception("unexpected error on job=%s key=%s", self.work.job_id, self.work.key[:12])
            return await self.dead("internal_error", f"{type(e).__name__}: {e}")

    async def _classified(self) -> Outcome:
        """The outcomes tsbatch's own exceptions stand for."""
        try:
            try:
                result = await self.work.run(self)
            except BaseExceptionGroup as group:
                raise _most_severe(group) from None
            return self._commit(result)
        except SourceError as e:
            return await self.dead(e.reason, str(e))
        except ConfigError as e:
            return await self.dead("unknown_route", str(e))
        except PermanentWriteError as e:
            return await self.dead(e.reason, str(e))  # route_rejected; outside_retention
        except TransientWriteError as e:
            return await self._transient(e)
        except RouteUnavailable as e:
            # Not the unit's failure: give it back (and its attempt) and come again when a probe may go.
            countdown = e.wait_s + random.uniform(0, 1)
            await asyncio.to_thread(self.rt.ledger.release, self.work.key, self.holder, due_in_s=countdown)
            await asyncio.to_thread(self.rt.guard.count, "breaker_deferrals")
            metrics.UNIT_DEFERRALS.labels(self.work.kind).inc()
            return Outcome("defer", countdown=countdown)
        except LeaseLost:
            # Someone else may hold the unit now, or our lease lapsed: look again in a second.
            return Outcome("defer", countdown=1.0)

    def _commit(self, result: Result) -> Outcome:
        work = self.work
        record: dict[str, str | int | float] = {
            **result.record,
            "rejected": len(result.rejected),
            "worker": self.rt.worker_id,
            "started_ms": int(self.started * 1000),
            "duration_ms": int((time.time() - self.started) * 1000),
            "failures": self.failures,
            "attempts": self.attempts,
        }
        entry = work.dlq_entry()
        common = {"job": work.job_id, "key": work.key, "path": entry.get("path", ""), "route": entry["route"]}
        # On the loop, not in a thread: the work is done, only the (sleeping) heartbeat could run.
        committed = self.rt.ledger.commit(
            work.key,
            self.holder,
            record=record,
            rejected=sorted(result.rejected, key=lambda r: r.line),
            dlq_common=common,
        )
        if not committed:
            metrics.FENCED.labels("commit").inc()
            log.warning(
                "commit fenced job=%s key=%s: the lease was lost (another worker holds the unit now); "
                "not counted as done here",
                work.job_id,
                work.key[:12],
            )
            raise LeaseLost(work.key)
        size, rejected = int(record.get("bytes", 0)), len(result.rejected)
        metrics.committed(work.kind, entry["route"], points=result.points, size=size, rejected=rejected)
        log.info(
            "committed job=%s key=%s %s points=%d rejected=%d ms=%d",
            work.job_id,
            work.key[:12],
            work.label(),
            result.points,
            len(result.rejected),
            record["duration_ms"],
        )
        return Outcome("committed", points=result.points, rejected=len(result.rejected))

    async def dead(self, reason: str, message: str) -> Outcome:
        message = redact(message)  # kept in the DLQ and the task's result: any error's text, masked
        work = self.work
        history = await asyncio.to_thread(self.rt.ledger.history, work.key)
        entry = {
            "reason": reason,
            "message": message,
            "job": work.job_id,
            "key": work.key,
            **work.dlq_entry(),
            "attempts": str(self.attempts),
            "history": json.dumps(history),
        }
        done = await asyncio.to_thread(self.rt.ledger.dead_letter, work.key, self.holder, entry=entry)
        if not done:
            # Our lease lapsed and someone else may hold the unit: it stays planned and in the outbox,
            # so its holder or the sweeper finishes it. Acking this copy loses nothing.
            metrics.FENCED.labels("dead_letter").inc()
            log.warning(
                "dead letter fenced job=%s key=%s reason=%s: the unit stays in the outbox",
                work.job_id,
                work.key[:12],
                reason,
            )
            return Outcome("fenced", error=message)
        metrics.DEAD_LETTERS.labels(work.kind, reason).inc()
        log.warning("dead-lettered job=%s key=%s reason=%s: %s", work.job_id, work.key[:12], reason, message)
        return Outcome("dead", error=message)

    async def _transient(self, err: TransientWriteError) -> Outcome:
        w = self.rt.settings.worker
        failures = self.failures + 1
        await asyncio.to_thread(self.rt.guard.count, "task_retries")
        metrics.UNIT_RETRIES.labels(self.work.kind).inc()
        if failures > w.max_retries:
            return await self.dead("retries_exhausted", f"after {failures} attempts: {err}")
        countdown = backoff_s(failures - 1, base=w.retry_base_s, cap=w.retry_max_s, floor=err.retry_after)
        # Free the unit so that the retry (or any worker) can claim it at once when its time comes.
        await asyncio.to_thread(
            self.rt.ledger.release, self.work.key, self.holder, due_in_s=countdown, failure=str(err)
        )
        log.info("retry job=%s key=%s in %.1fs: %s", self.work.job_id, self.work.key[:12], countdown, err)
        return Outcome("defer", countdown=countdown, error=str(err))


async def execute(rt: Runtime, work: Work, descriptor: str) -> Outcome:
    """Run one delivery of ``work`` through the harness; every line logged meanwhile names the unit."""
    where = work.dlq_entry()
    unit = {"job": work.job_id, "unit": work.key, "route": where.get("route"), "window": where.get("window")}
    with logs.bound(**unit, attempt=None):
        return await _execute(rt, work, descriptor)


async def _execute(rt: Runtime, work: Work, descriptor: str) -> Outcome:
    w = rt.settings.worker
    # Called on the loop, not in a thread: nothing else runs yet, and a thread hop per chunk was ~1 ms of
    # the time between chunks (issue #4).
    claim = rt.ledger.claim(
        work.key,
        worker=rt.worker_id,
        lease_ttl_s=w.lease_ttl_s,
        max_attempts=w.max_attempts,
        descriptor=descriptor,
    )
    metrics.CLAIMS.labels(claim.status).inc()
    logs.bind(attempt=claim.attempts)
    if claim.status in ("committed", "dead"):
        return Outcome("duplicate")
    if claim.status == "busy":
        # A live holder has it; if it dies, its lease lapses and the sweeper publishes the unit again.
        return Outcome("busy")
    attempt = Attempt(rt, work, claim)
    if claim.status == "poison":
        return await attempt.dead(
            "poison",
            f"claimed {claim.attempts} times without finishing (worker.max_attempts = {w.max_attempts}): "
            "the unit may kill its process",
        )
    return await attempt.run()


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
