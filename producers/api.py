"""The producer's Python API: plan files into chunk descriptors, enqueue them, follow the job.

    producer = Producer(load_settings())
    job = producer.submit(["/srv/telemetry/a.lp"], route="hot")
    status = producer.wait(job.job_id)

The CLI (``tsbatch produce``) is a thin layer over this class.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from celery import Celery
from kombu.exceptions import OperationalError

from config import Settings
from config.constants import PLANNING_STALE_S, SCHEMA_VERSION
from producers import planner
from producers.preflight import Finding, check_paths
from tsbatch.descriptor import MAPPED, ChunkDescriptor, Format, Mapping, Precision
from tsbatch.envelope import create_app, send_unit
from tsbatch.errors import SourceError
from tsbatch.ledger import DeadLetter, JobStatus, now_ms, open_ledger, unreachable
from tsbatch.sources import Source, open_source
from tsbatch.windows import WindowDescriptor

if TYPE_CHECKING:
    from producers.parquet import ParquetColumns

BACKPRESSURE_POLL_S = 0.2
WAIT_POLL_S = 1.0  # a backstop only: commits wake ``wait`` through the job's pub/sub channel
QUEUE_CHECK_EVERY = 16  # descriptors between queue-length checks: one round trip per ~1M lines


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class Submission:
    job_id: str
    enqueued: int = 0  # units published by this run (new ones and ones planned before but not done)
    republished: int = 0  # of those, units an earlier run had planned and not finished
    skipped: int = 0  # committed before
    lines: int = 0
    rejected_files: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)  # "path:line" of units dead-lettered before, not retried


class Producer:
    """Plans units into the ledger, publishes them; queries and waits for jobs."""

    def __init__(self, settings: Settings, *, celery: Celery | None = None) -> None:
        self.settings = settings
        self.ledger = open_ledger(settings)
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
        columns: ParquetColumns | None = None,
        job_id: str | None = None,
        retry_dead: bool = False,
        on_chunk: Callable[[Submission], None] | None = None,
    ) -> Submission:
        """Plan every file and publish its chunks that are not done yet.

        Each chunk is recorded in the ledger with its descriptor before its message is published (the
        outbox): a run interrupted anywhere leaves nothing stranded, because running the same command
        again publishes every chunk that is planned but not committed, and the workers' sweeper
        publishes overdue ones by itself. Chunks dead-lettered by an earlier run are listed in
        ``Submission.dead`` and not retried, unless ``retry_dead``.

        A file that cannot be used (outside the roots, missing, bad header) is reported in
        ``rejected_files`` and dead-lettered; the other files go on.

        A CSV mapping with ``columns`` is for files without a header row: their first line is data.

        Parquet (``format="parquet"``) takes no ``mapping``: each file's schema gives it, adjusted by
        ``columns``. Its sources may be URLs under ``sources.url_roots`` as well as paths.
        """
        self.settings.route(route)  # an unknown route is the user's mistake: stop before any work
        if format in MAPPED and mapping is None:
            raise ValueError(f"format {format} needs a mapping (measurement, fields, time column)")
        if format not in MAPPED and mapping is not None:
            raise ValueError(f"format {format} takes no mapping")
        if format != "parquet" and columns is not None:
            raise ValueError(f"format {format} takes no parquet columns")
        sub = Submission(job_id or new_job_id())
        self.connect_broker()
        self.ledger.create_job(sub.job_id, route=route, paths=[str(p) for p in paths])
        try:
            for path in self._expand(paths, format):
                self.ledger.planning(sub.job_id, str(path))
                try:
                    for desc in self.plan(
                        path,
                        job_id=sub.job_id,
                        route=route,
                        format=format,
                        mapping=mapping,
                        precision=precision,
                        columns=columns,
                    ):
                        self._enqueue(desc, sub, retry_dead=retry_dead)
                        if on_chunk:
                            on_chunk(sub)
                except SourceError as e:
                    self._reject_file(sub, path, route, e)
        except BaseException as e:
            # Ctrl-C, a crash, Redis gone: say so in the job (a SIGKILL is seen by the silence instead).
            with contextlib.suppress(Exception):
                self.ledger.finish_planning(sub.job_id, interrupted=type(e).__name__)
            raise
        self.ledger.finish_planning(sub.job_id)
        return sub

    def preflight(
        self,
        paths: Sequence[str | Path],
        *,
        format: Format = "lp",
        mapping: Mapping | None = None,
        precision: Precision = "ns",
    ) -> list[Finding]:
        """What the first ``producer.preflight_rows`` records of each file are worth a word for (see
        ``producers/preflight.py``); call it before ``submit`` and submit nothing if a finding ``stop``s."""
        return list(
            check_paths(
                paths,
                roots=self.settings.sources.roots,
                format=format,
                precision=precision,
                mapping=mapping,
                rows=self.settings.producer.preflight_rows,
            )
        )

    def _expand(self, paths: Sequence[str | Path], format: Format) -> Iterable[str | Path]:
        if format != "parquet":
            return planner.expand(paths)
        from producers import parquet

        return parquet.expand(paths, self.settings.sources.url_roots)

    def _reject_file(self, sub: Submission, path: str | Path, route: str, err: SourceError) -> None:
        sub.rejected_files.append(f"{path}: {err}")
        entry = {
            "reason": err.reason,
            "message": str(err),
            "job": sub.job_id,
            "path": str(path),
            "route": route,
        }
        self.ledger.dead_letter_message(entry)
        self.ledger.count_rejected_file(sub.job_id)

    def plan(
        self,
        path: str | Path,
        *,
        job_id: str,
        route: str,
        format: Format = "lp",
        mapping: Mapping | None = None,
        precision: Precision = "ns",
        columns: ParquetColumns | None = None,
    ) -> Iterator[ChunkDescriptor]:
        """The descriptors of one file, streamed; raises ``SourceError`` if the file cannot be used.

        The file is opened once and read through that descriptor, never by name again (issue #8)."""
        if format == "parquet":
            from producers import parquet

            yield from parquet.descriptors(
                path,
                settings=self.settings,
                job_id=job_id,
                route=route,
                precision=precision,
                columns=columns or parquet.ParquetColumns(),
            )
            return
        with open_source(path, self.settings.sources.roots) as src:
            yield from self._descriptors(
                src, job_id=job_id, route=route, format=format, mapping=mapping, precision=precision
            )

    def _descriptors(
        self,
        src: Source,
        *,
        job_id: str,
        route: str,
        format: Format,
        mapping: Mapping | None,
        precision: Precision,
    ) -> Iterator[ChunkDescriptor]:
        resolved = src.path
        ident = planner.identity(src.fd)
        offset, first_line = planner.bom_length(src.fd), 1
        if format == "csv" and mapping is not None:
            if mapping.columns:  # a file without a header: the names were given (--columns)
                mapping = _with_columns(mapping, mapping.columns, "--columns")
            else:
                columns, offset = planner.read_header(src.fd, resolved, mapping.delimiter)
                mapping = _with_columns(mapping, columns, f"{resolved}:1: header")
                first_line = 2
        p = self.settings.producer
        if format == "annotated-csv":
            ranges = planner.scan_annotated(
                src.fd,
                chunk_lines=p.chunk_lines,
                max_record_bytes=self.settings.worker.max_line_bytes,
                path=resolved,
                taper=p.taper,
            )
        else:
            ranges = planner.scan(
                src.fd, chunk_lines=p.chunk_lines, offset=offset, first_line=first_line, taper=p.taper
            )
        for rng in ranges:
            if rng.end - rng.start > p.max_chunk_bytes:
                raise SourceError(
                    f"{resolved}:{rng.first_line}: {rng.line_count} lines make a chunk of "
                    f"{rng.end - rng.start} bytes, over producer.max_chunk_bytes ({p.max_chunk_bytes}): "
                    "lower producer.chunk_lines",
                    reason="chunk_too_large",
                )
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
                table_context=rng.context,
            ).with_key()
        if planner.identity(src.fd) != ident:
            raise SourceError(f"{resolved}: file changed while it was being planned", reason="source_changed")

    def connect_broker(self) -> None:
        """Connect to the broker and declare the queue before a job exists: an unreachable broker stops
        the producer before anything is recorded, and the first chunk is not held up by the connection
        (30 ms of a 2M-line job's start, issue #4). Retries for about 2 s, not kombu's default 12 s, and
        fails with ``RedisUnreachable`` naming host and port only (issue #8)."""
        with self.celery.producer_or_acquire() as producer:
            try:
                producer.connection.ensure_connection(max_retries=3, interval_start=0.2, interval_step=0.4)
            except OperationalError as e:
                raise unreachable(self.settings.redis.url.get_secret_value(), e) from None
            producer.maybe_declare(self.celery.amqp.queues[self.settings.producer.queue])

    def _enqueue(self, desc: ChunkDescriptor, sub: Submission, *, retry_dead: bool = False) -> None:
        # Room first, then record, then publish at once: the sweeper's "planned but never claimed while
        # later units were" rule assumes a unit is published right after it is recorded.
        self._wait_for_room(sub.job_id)
        message = desc.to_message()
        state = self.ledger.plan(desc.key, sub.job_id, descriptor=json.dumps(message), retry_dead=retry_dead)
        if state == "committed":
            sub.skipped += 1
            return
        if state == "dead":
            sub.dead.append(f"{desc.path}:{desc.first_line}")
            return
        # new, or planned by an earlier run and not done: publish (a duplicate meets the claim).
        send_unit(self.celery, message, queue=self.settings.producer.queue)
        sub.enqueued += 1
        sub.republished += state == "planned"
        sub.lines += desc.line_count
        if sub.enqueued == 1:
            self.ledger.mark_first_enqueue(sub.job_id)

    def _wait_for_room(self, job_id: str) -> None:
        """Backpressure: hold while the queue is deeper than ``producer.max_queue_depth``."""
        self._sent += 1
        if self._sent % QUEUE_CHECK_EVERY:
            return
        self.ledger.planning(job_id)  # a sign of life for `tsbatch status`
        while self.queue_depth() > self.settings.producer.max_queue_depth:
            time.sleep(BACKPRESSURE_POLL_S)
            self.ledger.planning(job_id)

    def queue_depth(self) -> int:
        return int(self.ledger.redis.llen(self.settings.producer.queue))

    def status(self, job_id: str) -> JobStatus:
        return self.ledger.job(job_id)

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = WAIT_POLL_S,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Block until every unit of the job is committed or dead-lettered, or until what is left can
        never finish because planning was interrupted; ``TimeoutError`` after ``timeout_s``.

        The ledger publishes on the job's channel at every commit and dead letter, so this wakes within
        a round trip of the last one; ``poll_s`` only bounds how long a missed message (a Redis restart)
        or an interrupted planning can go unseen."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        events = self.ledger.job_events(job_id)  # subscribed before the first look: nothing is missed
        try:
            while True:
                status = self.status(job_id)
                if on_update:
                    on_update(status)
                if status.done or not status.exists:
                    return status
                if status.pending == 0 and self.planning_problem(status):
                    return status
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"job {job_id}: {status.pending} chunks still pending after {timeout_s}s"
                    )
                wait = poll_s if deadline is None else max(min(poll_s, deadline - time.monotonic()), 0.0)
                if events.get_message(timeout=wait) is not None:
                    while events.get_message(timeout=0) is not None:  # a burst of commits: look once
                        pass
        finally:
            events.close()

    def planning_problem(self, status: JobStatus) -> str:
        return status.planning_problem(now_ms_=now_ms(), stale_ms=int(PLANNING_STALE_S * 1000))

    def dead_letters(self, job_id: str | None = None) -> Iterable[DeadLetter]:
        return self.ledger.dead_letters(job_id=job_id)

    def replay(self, entries: Sequence[DeadLetter], *, job_id: str | None = None) -> Submission:
        """Publish the dead-lettered chunks among ``entries`` again, under a new job.

        They go through the outbox like any chunk, so a replay is exactly-once too: a chunk that
        meanwhile committed is not written again. An entry leaves the queue only once its chunk is
        recorded and published again (a chunk that fails again is dead-lettered again). Rejected lines
        are not replayed here: they failed validation, so they are exported (``tsbatch dlq export``),
        fixed, and produced again.
        """
        chunks = [e for e in entries if e.get("kind") == "chunk" and e.get("descriptor")]
        windows = [e for e in entries if e.get("kind") == "window" and e.get("descriptor")]
        sub = Submission(job_id or new_job_id())
        routes = sorted({e.get("route") for e in chunks + windows})
        self.connect_broker()
        self.ledger.create_job(
            sub.job_id, route=",".join(routes), paths=sorted({e.get("path") for e in chunks})
        )
        try:
            for entry in chunks:
                desc = ChunkDescriptor.model_validate_json(entry.get("descriptor"))
                self._enqueue(desc.model_copy(update={"job_id": sub.job_id}), sub, retry_dead=True)
                self.ledger.remove_dead_letters([entry.id])
            for entry in windows:
                window = WindowDescriptor.model_validate_json(entry.get("descriptor"))
                message = window.model_copy(update={"job_id": sub.job_id}).to_message()
                status = self.ledger.plan(
                    window.key, sub.job_id, descriptor=json.dumps(message), retry_dead=True
                )
                if status in ("new", "planned"):
                    send_unit(self.celery, message, queue=self.settings.producer.queue)
                    sub.enqueued += 1
                self.ledger.remove_dead_letters([entry.id])
        except BaseException as e:
            with contextlib.suppress(Exception):
                self.ledger.finish_planning(sub.job_id, interrupted=type(e).__name__)
            raise
        self.ledger.finish_planning(sub.job_id)
        return sub


def _with_columns(mapping: Mapping, columns: tuple[str, ...], where: str) -> Mapping:
    wanted = [*mapping.tag_columns, *(f.name for f in mapping.field_columns), mapping.time_column]
    if mapping.measurement_column:
        wanted.append(mapping.measurement_column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise SourceError(f"{where} lacks column(s) {', '.join(missing)}", reason="bad_header")
    return mapping.model_copy(update={"columns": columns})
