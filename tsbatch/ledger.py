"""The Redis ledger that turns at-least-once delivery into exactly-once commits.

Keys (``P`` is the configured prefix):

- ``P:chunk:<key>``  hash: ``state`` queued | committed | dead, the job, attempts, and on commit what
  was written (points, bytes, SHA-256 of the payload, rejected lines, worker, timings).
- ``P:lease:<key>``  ``"<token>|<worker>"`` with a TTL renewed by the holder's heartbeat. The token comes
  from ``P:fence`` and only the holder of the current value may commit (fencing).
- ``P:job:<job>``    hash of a job's counters; ``P:jobs`` sorted set of job ids by creation time.
- ``P:dlq``          stream of dead-letter entries; ``P:stats`` hash of counters for operators and tests.

Every state change is one Lua script, so a crash between two Redis calls cannot leave half a change.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from tsbatch.errors import RedisUnreachable

DLQ_FIELDS = ("kind", "reason", "message", "job", "key", "path", "line", "raw", "route", "attempts", "ts_ms")


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(url: str) -> redis.Redis:
    """A client that rides out a Redis restart: reconnects with backoff instead of failing the task."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=8),
        # BusyLoadingError: a restarted Redis answers LOADING while it replays its AOF.
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
    )


# A person waits at the terminal: a Redis on the same network answers a PING in milliseconds, so two
# seconds without an answer means down (the patient client above spends ~11 s on its 8 retries).
REACHABLE_TIMEOUT_S = 2.0


def address(url: str) -> str:
    """``host:port`` (or the socket path) of a Redis URL, without the user or password it may hold."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def unreachable(url: str, error: Exception) -> RedisUnreachable:
    """One line for a person: where, why (the OS's reason, never the URL), and which setting to check."""
    cause: BaseException | None = error
    reason = ""
    while cause is not None and not reason:
        if isinstance(cause, redis.TimeoutError | TimeoutError):
            reason = "timed out"
        elif isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, redis.AuthenticationError):
        reason = "authentication failed"
    hint = "check the password" if reason == "authentication failed" else "is redis-server running?"
    return RedisUnreachable(
        f"redis: cannot connect to {address(url)} ({reason or type(error).__name__}): {hint} [redis.url]"
    )


def check_reachable(url: str, *, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
    """One PING without retries, so that a command fails in seconds when Redis is down."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise unreachable(url, e) from None
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class Claim:
    status: str  # claimed | busy | committed | dead
    holder: str = ""  # "<token>|<worker>" when claimed
    retry_in_s: float = 0.0  # when busy: the holder's remaining lease

    @property
    def token(self) -> int:
        return int(self.holder.split("|", 1)[0]) if self.holder else 0


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    reason: str
    raw: str


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    exists: bool
    planned: bool
    enqueued: int
    skipped: int
    committed: int
    dead: int
    points: int
    bytes: int
    rejected: int
    created_ms: int
    last_ms: int
    first_enqueue_ms: int = 0  # when the producer handed the job's first chunk to the broker

    @property
    def pending(self) -> int:
        return max(self.enqueued - self.committed - self.dead, 0)

    @property
    def done(self) -> bool:
        return self.planned and self.pending == 0

    @property
    def seconds(self) -> float:
        end = self.last_ms if self.last_ms else self.created_ms
        return max(end - self.created_ms, 0) / 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    fields: dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name, "")


def load_script(name: str) -> str:
    """The source of ``tsbatch/lua/<name>.lua``."""
    return resources.files("tsbatch").joinpath("lua", f"{name}.lua").read_text()


class Ledger:
    """Claims, leases, commits, jobs and the dead-letter queue, all in one Redis."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._scripts = {
            name: client.register_script(load_script(name))
            for name in ("plan", "unplan", "claim", "renew", "release", "commit", "deadletter", "replay")
        }

    # -- keys ---------------------------------------------------------------------------------------
    def chunk_key(self, key: str) -> str:
        return f"{self.prefix}:chunk:{key}"

    def lease_key(self, key: str) -> str:
        return f"{self.prefix}:lease:{key}"

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def dlq_key(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._scripts[name](keys=list(keys), args=list(args))

    # -- producer side --------------------------------------------------------------------------------
    def create_job(self, job_id: str, *, route: str, paths: Sequence[str]) -> None:
        created = now_ms()
        pipe = self.redis.pipeline()
        pipe.hset(
            self.job_key(job_id),
            mapping={"created_ms": created, "route": route, "planned": 0, "paths": json.dumps(list(paths))},
        )
        pipe.zadd(f"{self.prefix}:jobs", {job_id: created})
        pipe.execute()

    def plan(self, key: str, job_id: str, *, inflight_ttl_s: int) -> str:
        """``new`` if the chunk must be enqueued now, else its state (queued/committed/dead)."""
        return cast(
            str, self._run("plan", [self.chunk_key(key), self.job_key(job_id)], [job_id, inflight_ttl_s])
        )

    def replan(self, key: str, job_id: str, *, inflight_ttl_s: int) -> str:
        """``new`` if a dead-lettered chunk was put back in play under ``job_id``, else its state."""
        keys = [self.chunk_key(key), self.job_key(job_id)]
        return cast(str, self._run("replay", keys, [job_id, inflight_ttl_s]))

    def unplan(self, key: str, job_id: str) -> None:
        self._run("unplan", [self.chunk_key(key), self.job_key(job_id)], [job_id])

    def mark_first_enqueue(self, job_id: str) -> None:
        self.redis.hsetnx(self.job_key(job_id), "first_enqueue_ms", now_ms())

    def finish_planning(self, job_id: str) -> None:
        self.redis.hset(self.job_key(job_id), "planned", 1)

    def job(self, job_id: str) -> JobStatus:
        h = cast(dict[str, str], self.redis.hgetall(self.job_key(job_id)))

        def n(name: str) -> int:
            return int(h.get(name, 0))

        return JobStatus(
            job_id=job_id,
            exists=bool(h),
            planned=h.get("planned") == "1",
            enqueued=n("enqueued"),
            skipped=n("skipped"),
            committed=n("committed"),
            dead=n("dead"),
            points=n("points"),
            bytes=n("bytes"),
            rejected=n("rejected"),
            created_ms=n("created_ms"),
            last_ms=n("last_ms"),
            first_enqueue_ms=n("first_enqueue_ms"),
        )

    # -- worker side ----------------------------------------------------------------------------------
    def claim(self, key: str, *, worker: str, job_id: str, lease_ttl_s: float) -> Claim:
        status, value = self._run(
            "claim",
            [self.chunk_key(key), self.lease_key(key), f"{self.prefix}:fence", self.stats_key],
            [worker, int(lease_ttl_s * 1000), job_id],
        )
        if status == "claimed":
            return Claim("claimed", holder=f"{value}|{worker}")
        if status == "busy":
            return Claim("busy", retry_in_s=max(int(value), 0) / 1000)
        return Claim(str(status))

    def renew(self, key: str, holder: str, *, lease_ttl_s: float) -> bool:
        return bool(self._run("renew", [self.lease_key(key)], [holder, int(lease_ttl_s * 1000)]))

    def release(self, key: str, holder: str) -> bool:
        return bool(self._run("release", [self.lease_key(key)], [holder]))

    def commit(
        self,
        key: str,
        holder: str,
        *,
        job_id: str,
        record: dict[str, str | int | float],
        rejected: Sequence[RejectedLine],
        dlq_common: dict[str, str],
    ) -> bool:
        """Record the chunk as committed and dead-letter its rejected lines; False if fenced out."""
        lines = [{"line": r.line, "reason": r.reason, "raw": r.raw} for r in rejected]
        return bool(
            self._run(
                "commit",
                [
                    self.chunk_key(key),
                    self.lease_key(key),
                    self.job_key(job_id),
                    self.stats_key,
                    self.dlq_key,
                ],
                [holder, json.dumps(record), json.dumps(lines), now_ms(), json.dumps(dlq_common)],
            )
        )

    def dead_letter(self, key: str, holder: str, *, job_id: str, entry: dict[str, str]) -> bool:
        """Dead-letter a whole chunk; False if it was committed or another worker holds it."""
        flat: list[str] = []
        for name, value in {"kind": "chunk", "ts_ms": str(now_ms()), **entry}.items():
            flat += [name, value]
        return bool(
            self._run(
                "deadletter",
                [self.chunk_key(key), self.lease_key(key), self.job_key(job_id), self.dlq_key],
                [holder, now_ms(), *flat],
            )
        )

    def dead_letter_message(self, entry: dict[str, str], job_id: str | None) -> None:
        """Dead-letter a message that is not a valid descriptor (so it has no trustworthy key)."""
        fields: dict[Any, Any] = {"kind": "message", "ts_ms": str(now_ms()), **entry}
        pipe = self.redis.pipeline()
        pipe.xadd(self.dlq_key, fields)
        if job_id:
            pipe.hincrby(self.job_key(job_id), "dead", 1)
        pipe.execute()

    def chunk(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(self.chunk_key(key)))

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in cast(dict[str, str], self.redis.hgetall(self.stats_key)).items()}

    def count(self, name: str, by: int = 1) -> None:
        self.redis.hincrby(self.stats_key, name, by)

    # -- dead-letter queue ----------------------------------------------------------------------------
    def dead_letter_entry(self, entry_id: str) -> DeadLetter | None:
        rows = cast(
            list[tuple[str, dict[str, str]]], self.redis.xrange(self.dlq_key, min=entry_id, max=entry_id)
        )
        return DeadLetter(*rows[0]) if rows else None

    def remove_dead_letters(self, entry_ids: Sequence[str]) -> int:
        return int(self.redis.xdel(self.dlq_key, *entry_ids)) if entry_ids else 0

    def dead_letters(self, *, job_id: str | None = None, batch: int = 1000) -> Iterator[DeadLetter]:
        start = "-"
        while True:
            rows = cast(
                list[tuple[str, dict[str, str]]],
                self.redis.xrange(self.dlq_key, min=start, max="+", count=batch),
            )
            for entry_id, fields in rows:
                if job_id is None or fields.get("job") == job_id:
                    yield DeadLetter(entry_id, fields)
            if len(rows) < batch:
                return
            start = "(" + rows[-1][0]
