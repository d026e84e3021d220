"""The producer's Python API: plan files into chunk descriptors, enqueue them, follow the job.

    producer = Producer(load_settings())
    job = producer.submit(["/srv/telemetry/a.lp"], route="hot")
    status = producer.wait(job.job_id)

The CLI (``tsbatch produce``) is a thin layer over this class.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError

from config import Settings
from config.constants import SCHEMA_VERSION
from producers import planner
from tsbatch.descriptor import ChunkDescriptor, Format, Mapping, Precision
from tsbatch.errors import SourceError
from tsbatch.ledger import DeadLetter, JobStatus, Ledger, connect, unreachable
from tsbatch.sources import confine
from workers.celeryapp import TASK_NAME, create_app
from workers.mapping import RecordEncoder

BACKPRESSURE_POLL_S = 0.2
QUEUE_CHECK_EVERY = 16  # descriptors between queue-length checks: one round trip per ~1M lines


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class Submission:
    job_id: str
    enqueued: int = 0
    skipped: int = 0
    lines: int = 0
    rejected_files: list[str] = field(default_factory=list)


class Producer:
    """Plans and enqueues chunk descriptors; queries and waits for jobs."""

    def __init__(self, settings: Settings, *, celery: Celery | None = None) -> None:
        self.settings = settings
        self.ledger = Ledger(connect(settings.redis.url), prefix=settings.redis.key_prefix)
        self.celery = celery or create_app(settings)
        self._sent = 0

    def close(self) -> None:
        self.ledger.redis.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        paths: Sequence[str | Path],
        *,
        route: str,
        format: Format = "lp",
        mapping: Mapping | None = None,
        precision: Precision = "ns",
        job_id: str | None = None,
        on_chunk: Callable[[Submission], None] | None = None,
    ) -> Submission:
        """Plan every file and enqueue the chunks not already queued or committed.

        A file that cannot be used (outside the roots, missing, bad header) is reported in
        ``rejected_files`` and dead-lettered; the other files go on.
        """
        self.settings.route(route)  # an unknown route is the user's mistake: stop before any work
        if format != "lp" and mapping is None:
            raise ValueError(f"format {format} needs a mapping (measurement, fields, time column)")
        if mapping is not None:
            RecordEncoder(mapping, precision)  # raises ValueError naming a name no server would read right
        sub = Submission(job_id or new_job_id())
        self.connect_broker()
        self.ledger.create_job(sub.job_id, route=route, paths=[str(p) for p in paths])
        try:
            for path in _expand(paths):
                try:
                    for desc in self.plan(
                        path,
                        job_id=sub.job_id,
                        route=route,
                        format=format,
                        mapping=mapping,
                        precision=precision,
                    ):
                        self._enqueue(desc, sub)
                        if on_chunk:
                            on_chunk(sub)
                except SourceError as e:
                    sub.rejected_files.append(f"{path}: {e}")
                    self.ledger.dead_letter_message(
                        {
                            "reason": e.reason,
                            "message": str(e),
                            "job": sub.job_id,
                            "path": str(path),
                            "route": route,
                        },
                        sub.job_id,
                    )
        finally:
            self.ledger.finish_planning(sub.job_id)
        return sub

    def plan(
        self,
        path: Path,
        *,
        job_id: str,
        route: str,
        format: Format = "lp",
        mapping: Mapping | None = None,
        precision: Precision = "ns",
    ) -> Iterator[ChunkDescriptor]:
        """The descriptors of one file, streamed; raises ``SourceError`` if the file cannot be used."""
        resolved = confine(path, self.settings.sources.roots)
        ident = planner.identity(resolved)
        offset, first_line = 0, 1
        if format == "csv":
            assert mapping is not None
            columns, offset = planner.read_header(resolved)
            mapping = _with_columns(mapping, columns, resolved)
            first_line = 2
        p = self.settings.producer
        for rng in planner.scan(
            resolved, chunk_lines=p.chunk_lines, offset=offset, first_line=first_line, taper=p.taper
        ):
            yield ChunkDescriptor(
                schema_version=SCHEMA_VERSION,
                job_id=job_id,
                path=str(resolved),
                file_size=ident.size,
                file_mtime_ns=ident.mtime_ns,
                chunk_sha256=rng.sha256,
                start=rng.start,
                end=rng.end,
                first_line=rng.first_line,
                line_count=rng.line_count,
                format=format,
                mapping=mapping,
                route=route,
                precision=precision,
            ).with_key()
        if planner.identity(resolved) != ident:
            raise SourceError(f"{path}: file changed while it was being planned", reason="source_changed")

    def connect_broker(self) -> None:
        """Connect to the broker and declare the queue before a job exists: an unreachable broker stops
        the producer before anything is recorded, and the first chunk is not held up by the connection
        (30 ms of a 2M-line job's start, issue #4). Retries for about 2 s, not kombu's default 12 s, and
        fails with ``RedisUnreachable`` naming host and port only (issue #8)."""
        with self.celery.producer_or_acquire() as producer:
            try:
                producer.connection.ensure_connection(max_retries=3, interval_start=0.2, interval_step=0.4)
            except OperationalError as e:
                raise unreachable(self.settings.redis.url, e) from None
            producer.maybe_declare(self.celery.amqp.queues[self.settings.producer.queue])

    def _enqueue(self, desc: ChunkDescriptor, sub: Submission) -> None:
        state = self.ledger.plan(desc.key, sub.job_id, inflight_ttl_s=self.settings.producer.inflight_ttl_s)
        if state != "new":
            sub.skipped += 1
            return
        self._send(desc, sub)

    def _send(self, desc: ChunkDescriptor, sub: Submission) -> None:
        self._wait_for_room()
        try:
            self.celery.send_task(TASK_NAME, args=[desc.to_message()], queue=self.settings.producer.queue)
        except BaseException:
            self.ledger.unplan(desc.key, sub.job_id)
            raise
        sub.enqueued += 1
        sub.lines += desc.line_count
        if sub.enqueued == 1:
            self.ledger.mark_first_enqueue(sub.job_id)

    def _wait_for_room(self) -> None:
        """Backpressure: hold while the queue is deeper than ``producer.max_queue_depth``."""
        self._sent += 1
        if self._sent % QUEUE_CHECK_EVERY:
            return
        while self.queue_depth() > self.settings.producer.max_queue_depth:
            time.sleep(BACKPRESSURE_POLL_S)

    def queue_depth(self) -> int:
        return int(self.ledger.redis.llen(self.settings.producer.queue))

    def status(self, job_id: str) -> JobStatus:
        return self.ledger.job(job_id)

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Block until every chunk of the job is committed or dead-lettered (or ``timeout_s`` passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if on_update:
                on_update(status)
            if status.done or not status.exists:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: {status.pending} chunks still pending after {timeout_s}s")
            time.sleep(poll_s)

    def dead_letters(self, job_id: str | None = None) -> Iterable[DeadLetter]:
        return self.ledger.dead_letters(job_id=job_id)

    def replay(self, entries: Sequence[DeadLetter], *, job_id: str | None = None) -> Submission:
        """Enqueue the dead-lettered chunks among ``entries`` again, under a new job.

        They go through the normal path, so a replay is exactly-once too: a chunk that meanwhile
        committed is not written again. Replayed entries leave the queue (a chunk that fails again is
        dead-lettered again). Rejected lines are not replayed here: they failed validation, so they are
        exported (``tsbatch dlq export``), fixed, and produced again.
        """
        chunks = [e for e in entries if e.get("kind") == "chunk" and e.get("descriptor")]
        sub = Submission(job_id or new_job_id())
        routes = sorted({e.get("route") for e in chunks})
        self.ledger.create_job(
            sub.job_id, route=",".join(routes), paths=sorted({e.get("path") for e in chunks})
        )
        try:
            for entry in chunks:
                desc = ChunkDescriptor.model_validate_json(entry.get("descriptor"))
                desc = desc.model_copy(update={"job_id": sub.job_id})
                state = self.ledger.replan(
                    desc.key, sub.job_id, inflight_ttl_s=self.settings.producer.inflight_ttl_s
                )
                if state == "new":
                    self._send(desc, sub)
                else:
                    sub.skipped += 1
                self.ledger.remove_dead_letters([entry.id])
        finally:
            self.ledger.finish_planning(sub.job_id)
        return sub


def _expand(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Files as given; a directory stands for the regular files below it, in name order."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield p


def _with_columns(mapping: Mapping, columns: tuple[str, ...], path: Path) -> Mapping:
    wanted = [*mapping.tag_columns, *(f.name for f in mapping.field_columns), mapping.time_column]
    if mapping.measurement_column:
        wanted.append(mapping.measurement_column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise SourceError(f"{path}:1: header lacks column(s) {', '.join(missing)}", reason="bad_header")
    return mapping.model_copy(update={"columns": columns})
