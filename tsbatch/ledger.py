"""The Redis ledger: the one place that knows what must be done, and turns at-least-once delivery
into exactly-once commits.

Keys (``P`` is the configured prefix):

- ``P:unit:<key>``   hash: ``state`` planned | committed | dead, the descriptor (``desc``, until commit),
  ``attempts`` (claims, durable: a unit over ``max_attempts`` is dead-lettered as poison), ``failures``
  and ``history`` (transient failures), and on commit what was written (points, bytes, SHA-256 of the
  payload, rejected lines, worker, timings). Committed and dead records expire after
  ``ledger.retention_days``; planned ones stay until they are done.
- ``P:unitjobs:<key>`` set of the jobs that planned the unit and wait for it.
- ``P:lease:<key>``  ``"<token>|<worker>"`` with a TTL renewed by the holder's heartbeat. The token comes
  from ``P:fence`` and only the holder of the current value may commit (fencing).
- ``P:outbox``       sorted set: every unit not yet done, scored by when the sweeper should look at it
  (``sweep.lua`` re-publishes a unit whose message is overdue). ``P:claimed_mark``: the planning time of
  the newest unit claimed so far.
- ``P:job:<job>``    hash of a job's counters; ``P:jobs`` sorted set of job ids by creation time. The
  same name is a pub/sub channel: every commit, dead letter and the end of planning publishes on it, so
  a waiting producer wakes at once.
- ``P:window:<job>`` hash of a scheduled job's marks: ``first`` (its first window), ``watermark``
  (every window before it is committed), ``planned_to`` (windows before it are planned), ``def`` (the
  definition last seen, JSON); ``P:wgen:<job>`` hash: window start -> its current generation.
- ``P:audit``        stream of audit records, one per commit (``commit.lua``), trimmed to
  ``ledger.retention_days``: ``tsbatch audit export|verify``.
- ``P:nodes``        hash: worker node -> its last heartbeat (pid, processes, time), for ``tsbatch status``.
- ``P:dlq``          capped stream of dead-letter entries; ``P:stats`` hash of counters.

Every state change is one Lua script, so a crash between two Redis calls cannot leave half a change.
Job counters change in the same script as the unit's state, once per unit and job, so they cannot
drift. The scripts compute job keys from the unit's job set, so the ledger runs on a single Redis (or
one behind Sentinel), not on Redis Cluster (docs/DEPLOY.md).
"""

from __future__ import annotations

import hashlib
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

from config import Settings, constants
from tsbatch.errors import RedisUnreachable

LEASE_GRACE_MS = int(constants.LEASE_GRACE_S * 1000)


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
    status: str  # claimed | poison | busy | committed | dead
    holder: str = ""  # "<token>|<worker>" when claimed (or poison)
    retry_in_s: float = 0.0  # when busy: the holder's remaining lease
    attempts: int = 0  # this claim included
    failures: int = 0  # transient failures recorded before this claim

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
    planned: bool  # planning finished: every unit of the job is known
    units: int  # units this job waits for (new ones, and ones another job had already planned)
    skipped: int  # committed before this job
    committed: int
    dead: int
    points: int
    bytes: int
    rejected: int
    created_ms: int
    last_ms: int
    first_enqueue_ms: int = 0  # when the producer handed the job's first unit to the broker
    dead_before: int = 0  # dead-lettered before this job and not retried (a rerun reports them)
    retried_dead: int = 0
    rejected_files: int = 0
    interrupted: str = ""  # why planning stopped early, and where
    planning_path: str = ""
    heartbeat_ms: int = 0  # the planning producer's last sign of life

    @property
    def pending(self) -> int:
        return max(self.units - self.committed - self.dead, 0)

    @property
    def done(self) -> bool:
        return self.planned and self.pending == 0

    @property
    def failed(self) -> bool:
        """Anything the job was asked to do that did not land (or a line that was refused)."""
        return bool(self.dead or self.dead_before or self.rejected or self.rejected_files)

    def planning_problem(self, *, now_ms_: int, stale_ms: int) -> str:
        """Why planning did not finish, if it did not: interrupted, or a producer gone silent."""
        if self.planned:
            return ""
        why = self.interrupted
        if not why and self.heartbeat_ms and now_ms_ - self.heartbeat_ms > stale_ms:
            why = "producer silent"
        if not why:
            return ""
        return f"planning interrupted at file {self.planning_path or '?'} ({why}): run the command again"

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


def clip(text: str, keep_bytes: int) -> str:
    """At most ``keep_bytes`` of ``text``'s UTF-8, cut on a character boundary."""
    data = text.encode()
    if len(data) <= keep_bytes:
        return text
    return data[:keep_bytes].decode("utf-8", "ignore")


SCRIPTS = ("plan", "claim", "renew", "release", "commit", "deadletter", "sweep", "advance", "generation")


class Ledger:
    """Units, claims, leases, commits, jobs, the outbox and the dead-letter queue, all in one Redis.

    ``retention_s``: how long committed and dead records are kept; ``dlq_maxlen``: the DLQ stream's
    approximate cap; ``republish_after_s``: how long a published unit may wait before the sweeper
    publishes it again; ``raw_keep_bytes``: how much of a rejected line's text is kept."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        retention_s: int = constants.LEDGER_RETENTION_DAYS * 86_400,
        dlq_maxlen: int = constants.DLQ_MAXLEN,
        republish_after_s: float = constants.REPUBLISH_AFTER_S,
        raw_keep_bytes: int = constants.RAW_KEEP_BYTES,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention_s = retention_s
        self.dlq_maxlen = dlq_maxlen
        self.republish_after_ms = int(republish_after_s * 1000)
        self.raw_keep_bytes = raw_keep_bytes
        self._scripts = {name: client.register_script(load_script(name)) for name in SCRIPTS}

    # -- keys ---------------------------------------------------------------------------------------
    def unit_key(self, key: str) -> str:
        return f"{self.prefix}:unit:{key}"

    def unit_jobs_key(self, key: str) -> str:
        return f"{self.prefix}:unitjobs:{key}"

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

    @property
    def audit_key(self) -> str:
        return f"{self.prefix}:audit"

    def audit(
        self, *, start_ms: int | None = None, end_ms: int | None = None, batch: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """The audit records committed in ``[start_ms, end_ms]``, oldest first: key, jobs, the unit's
        descriptor and commit record (decoded), holder, committed_ms."""
        low = f"{start_ms}-0" if start_ms is not None else "-"
        high = f"{end_ms}-9999999999" if end_ms is not None else "+"
        while True:
            rows = cast(
                list[tuple[str, dict[str, str]]], self.redis.xrange(self.audit_key, low, high, count=batch)
            )
            for entry_id, f in rows:
                yield {
                    "id": entry_id,
                    "key": f.get("key", ""),
                    "jobs": [j for j in f.get("jobs", "").split(",") if j],
                    "descriptor": json.loads(f["desc"]) if f.get("desc") else None,
                    "record": json.loads(f.get("record", "{}")),
                    "holder": f.get("holder", ""),
                    "committed_ms": int(f.get("committed_ms", 0)),
                }
            if len(rows) < batch:
                return
            low = "(" + rows[-1][0]

    def node_heartbeat(self, node: str, info: dict[str, Any]) -> None:
        """A worker node is alive (its main process's sweeper says so every sweep)."""
        self.redis.hset(f"{self.prefix}:nodes", node, json.dumps({**info, "seen_ms": now_ms()}))

    def nodes(self) -> dict[str, dict[str, Any]]:
        raw = cast(dict[str, str], self.redis.hgetall(f"{self.prefix}:nodes"))
        return {k: json.loads(v) for k, v in sorted(raw.items())}

    def forget_node(self, node: str) -> None:
        self.redis.hdel(f"{self.prefix}:nodes", node)

    def recent_jobs(self, limit: int = 50) -> list[str]:
        return cast(list[str], self.redis.zrevrange(f"{self.prefix}:jobs", 0, limit - 1))

    @property
    def outbox_key(self) -> str:
        return f"{self.prefix}:outbox"

    def window_key(self, job: str) -> str:
        return f"{self.prefix}:window:{job}"

    def generation_key(self, job: str) -> str:
        return f"{self.prefix}:wgen:{job}"

    def advance(self, job: str, mark: str, value: int) -> int:
        """Move a scheduled job's ``mark`` forward to ``value`` (never back); return the mark now."""
        return int(self._run("advance", [self.window_key(job)], [mark, value]))

    def next_generation(self, job: str, start: int, current: int) -> int | None:
        """A window's next generation if it is still at ``current`` (generation.lua); else None."""
        new = int(self._run("generation", [self.generation_key(job)], [start, current]))
        return None if new < 0 else new

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._scripts[name](keys=list(keys), args=list(args))

    # -- producer side --------------------------------------------------------------------------------
    def create_job(self, job_id: str, *, route: str, paths: Sequence[str]) -> None:
        created = now_ms()
        pipe = self.redis.pipeline()
        pipe.hset(
            self.job_key(job_id),
            mapping={
                "created_ms": created,
                "route": route,
                "planned": 0,
                "paths": json.dumps(list(paths)),
                "heartbeat_ms": created,
            },
        )
        pipe.zadd(f"{self.prefix}:jobs", {job_id: created})
        pipe.execute()

    def plan(self, key: str, job_id: str, *, descriptor: str, retry_dead: bool = False) -> str:
        """Record a unit before it is published: ``new`` or ``planned`` (publish it now), ``committed``
        (nothing to do) or ``dead`` (dead-lettered before; ``retry_dead`` puts it back in play)."""
        now = now_ms()
        keys = [self.unit_key(key), self.unit_jobs_key(key), self.job_key(job_id), self.outbox_key]
        args = [job_id, descriptor, now, now + self.republish_after_ms, "1" if retry_dead else "0", key]
        return cast(str, self._run("plan", keys, args))

    def planning(self, job_id: str, path: str | None = None) -> None:
        """The producer is alive (and now planning ``path``)."""
        self.redis.hset(self.job_key(job_id), "heartbeat_ms", now_ms())
        if path is not None:
            self.redis.hset(self.job_key(job_id), "planning_path", path)

    def mark_first_enqueue(self, job_id: str) -> None:
        self.redis.hsetnx(self.job_key(job_id), "first_enqueue_ms", now_ms())

    def count_rejected_file(self, job_id: str) -> None:
        self.redis.hincrby(self.job_key(job_id), "rejected_files", 1)

    def finish_planning(self, job_id: str, *, interrupted: str = "") -> None:
        """Planning is over: complete (every unit recorded), or ``interrupted`` with the reason."""
        if interrupted:
            self.redis.hset(self.job_key(job_id), "interrupted", interrupted)
        else:
            self.redis.hset(self.job_key(job_id), mapping={"planned": 1, "interrupted": ""})
        self.redis.publish(self.job_key(job_id), "planned")

    def job_events(self, job_id: str) -> Any:
        """A pub/sub subscription to the job's channel (commits, dead letters, end of planning)."""
        events = cast(Any, self.redis).pubsub(ignore_subscribe_messages=True)  # redis-py: untyped
        events.subscribe(self.job_key(job_id))
        return events

    def job(self, job_id: str) -> JobStatus:
        h = cast(dict[str, str], self.redis.hgetall(self.job_key(job_id)))

        def n(name: str) -> int:
            return int(h.get(name, 0))

        return JobStatus(
            job_id=job_id,
            exists=bool(h),
            planned=h.get("planned") == "1",
            units=n("units"),
            skipped=n("skipped"),
            committed=n("committed"),
            dead=n("dead"),
            points=n("points"),
            bytes=n("bytes"),
            rejected=n("rejected"),
            created_ms=n("created_ms"),
            last_ms=n("last_ms"),
            first_enqueue_ms=n("first_enqueue_ms"),
            dead_before=n("dead_before"),
            retried_dead=n("retried_dead"),
            rejected_files=n("rejected_files"),
            interrupted=h.get("interrupted", ""),
            planning_path=h.get("planning_path", ""),
            heartbeat_ms=n("heartbeat_ms"),
        )

    # -- worker side ----------------------------------------------------------------------------------
    def claim(
        self, key: str, *, worker: str, lease_ttl_s: float, max_attempts: int, descriptor: str
    ) -> Claim:
        lease_ms, now = int(lease_ttl_s * 1000), now_ms()
        status, value, attempts, failures = self._run(
            "claim",
            [
                self.unit_key(key),
                self.lease_key(key),
                f"{self.prefix}:fence",
                self.stats_key,
                self.outbox_key,
                f"{self.prefix}:claimed_mark",
            ],
            [worker, lease_ms, now, max_attempts, LEASE_GRACE_MS, descriptor, key, _iso(now)],
        )
        if status in ("claimed", "poison"):
            return Claim(str(status), f"{value}|{worker}", 0.0, int(attempts), int(failures))
        if status == "busy":
            return Claim("busy", retry_in_s=max(int(value), 0) / 1000)
        return Claim(str(status))

    def renew(self, key: str, holder: str, *, lease_ttl_s: float) -> bool:
        return bool(self._run("renew", [self.lease_key(key)], [holder, int(lease_ttl_s * 1000)]))

    def release(self, key: str, holder: str, *, due_in_s: float, failure: str = "") -> bool:
        """Give the lease up; the unit is due for the sweeper in ``due_in_s`` unless claimed by then.
        ``failure`` records a transient failure (its attempt counts); without one the attempt is given
        back (a deferral that is not the unit's fault, such as an open breaker)."""
        now = now_ms()
        keys = [self.lease_key(key), self.unit_key(key), self.outbox_key]
        args = [holder, now + int(due_in_s * 1000) + self.republish_after_ms, key, failure[:300], _iso(now)]
        return bool(self._run("release", keys, args))

    def commit(
        self,
        key: str,
        holder: str,
        *,
        record: dict[str, str | int | float],
        rejected: Sequence[RejectedLine],
        dlq_common: dict[str, str],
    ) -> bool:
        """Record the unit as committed and dead-letter its rejected lines; False if fenced out."""
        lines = [self._line(r) for r in rejected]
        return bool(
            self._run(
                "commit",
                [
                    self.unit_key(key),
                    self.lease_key(key),
                    self.unit_jobs_key(key),
                    self.stats_key,
                    self.dlq_key,
                    self.outbox_key,
                    self.audit_key,
                ],
                [
                    holder,
                    json.dumps(record),
                    json.dumps(lines),
                    now_ms(),
                    json.dumps(dlq_common),
                    self.retention_s,
                    self.dlq_maxlen,
                    f"{self.prefix}:job:",
                    key,
                ],
            )
        )

    def _line(self, r: RejectedLine) -> dict[str, str | int]:
        """A rejected line as the DLQ keeps it: at most ``raw_keep_bytes`` of its text, with the whole
        line's length and SHA-256 (a CSV produced as line protocol must not copy itself into Redis)."""
        data = r.raw.encode()
        return {
            "line": r.line,
            "reason": r.reason,
            "raw": clip(r.raw, self.raw_keep_bytes),
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def dead_letter(self, key: str, holder: str, *, entry: dict[str, str]) -> bool:
        """Dead-letter a whole unit; False if it was done already or another worker holds it."""
        flat: list[str] = []
        for name, value in {"kind": "chunk", "ts_ms": str(now_ms()), **entry}.items():
            flat += [name, value]
        keys = [
            self.unit_key(key),
            self.lease_key(key),
            self.unit_jobs_key(key),
            self.dlq_key,
            self.outbox_key,
            self.stats_key,
        ]
        args = [holder, now_ms(), self.retention_s, self.dlq_maxlen, f"{self.prefix}:job:", key, *flat]
        return bool(self._run("deadletter", keys, args))

    def dead_letter_message(self, entry: dict[str, str]) -> None:
        """Dead-letter a message that is not a valid descriptor (so it has no trustworthy key) or a
        file that could not be planned. Neither is a unit, so no job counts it as one."""
        fields: dict[Any, Any] = {"kind": "message", "ts_ms": str(now_ms()), **entry}
        if "raw" in fields:
            fields["raw"] = clip(str(fields["raw"]), self.raw_keep_bytes)
        self.redis.xadd(self.dlq_key, fields, maxlen=self.dlq_maxlen, approximate=True)

    def sweep(self, *, queue: str, limit: int = 500) -> list[tuple[str, str]]:
        """Overdue units, as (key, descriptor JSON), each now scheduled for a later look (sweep.lua)."""
        flat = self._run(
            "sweep",
            [self.outbox_key, queue, f"{self.prefix}:claimed_mark", self.stats_key],
            [
                now_ms(),
                limit,
                self.republish_after_ms,
                f"{self.prefix}:unit:",
                f"{self.prefix}:lease:",
                self.republish_after_ms,
                LEASE_GRACE_MS,
            ],
        )
        return [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]

    def unit(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(self.unit_key(key)))

    def history(self, key: str) -> list[str]:
        text = self.redis.hget(self.unit_key(key), "history")
        return cast(list[str], json.loads(str(text))) if text else []

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


def open_ledger(settings: Settings) -> Ledger:
    """The ledger the settings describe, on a client that rides out a Redis restart."""
    led = settings.ledger
    return Ledger(
        connect(settings.redis.url.get_secret_value()),
        prefix=settings.redis.key_prefix,
        retention_s=int(led.retention_days * 86_400),
        dlq_maxlen=led.dlq_maxlen,
        republish_after_s=led.republish_after_s,
        raw_keep_bytes=led.raw_keep_bytes,
    )


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
