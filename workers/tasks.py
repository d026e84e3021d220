"""The Celery tasks: one message in, one unit through the exactly-once harness, one outcome out.

Delivery is at-least-once (acks_late, reject_on_worker_lost, the sweeper, the visibility timeout).
What makes a unit commit once is the ledger, through the harness (workers/harness.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from typing import Any

import redis
from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown

from config import load_settings
from producers import schedule
from tsbatch.descriptor import DescriptorError, parse_descriptor
from tsbatch.envelope import TASK_NAME, TICK_TASK_NAME, send_unit, unit_reprs
from tsbatch.windows import is_window_message, parse_window
from workers import logcontext, metrics, metricsserver, sweeper  # noqa: F401 (logcontext: its signal receivers)
from workers.celeryapp import app
from workers.chunks import ChunkWork
from workers.harness import Outcome, backoff_s, execute
from workers.runtime import Runtime, get_runtime, shutdown_runtime
from workers.windows import WindowWork, fingerprint_window

log = logging.getLogger("tsbatch.worker")


async def run_message(rt: Runtime, message: object) -> Outcome:
    try:
        if is_window_message(message):
            window = parse_window(message)
            return await execute(rt, WindowWork(rt, window), json.dumps(window.to_message()))
        desc = parse_descriptor(message)
    except DescriptorError as e:
        job = message.get("job_id") if isinstance(message, dict) else None
        job_id = job if isinstance(job, str) and 0 < len(job) <= 64 else ""
        raw = json.dumps(message, default=str)
        entry = {"reason": "bad_descriptor", "message": str(e), "job": job_id, "raw": raw}
        await asyncio.to_thread(rt.ledger.dead_letter_message, entry)
        metrics.DEAD_LETTERS.labels("message", "bad_descriptor").inc()
        log.warning("dead-lettered a bad descriptor: %s", e)
        return Outcome("dead", error=str(e))
    return await execute(rt, ChunkWork(rt, desc), json.dumps(desc.to_message()))


@app.task(bind=True, name=TASK_NAME, max_retries=None)
def ingest_chunk(self: Task, message: dict[str, Any], ledger_errors: int = 0, **_: Any) -> dict[str, Any]:
    """Execute one chunk descriptor. Failures are counted in the ledger, not in the message; older
    messages' ``failures``/``history`` arguments are accepted and ignored."""
    rt = get_runtime()
    try:
        outcome = rt.run(run_message(rt, message))
    except redis.RedisError as e:
        # Nothing was committed, and a failed task would be acked and forgotten: come back later. A
        # refusal (OOM under noeviction, BUSY, a script error) is not an outage: say which, and back off
        # further each time so that nothing loops fast; the unit's durable attempt count bounds the work
        # redone once claims go through again.
        w = rt.settings.worker
        countdown = backoff_s(ledger_errors, base=w.retry_base_s, cap=w.retry_max_s, floor=1.0)
        if isinstance(e, redis.ResponseError):
            log.error("Redis refused a ledger operation (%s); retrying in %.1fs", e, countdown)
        else:
            log.warning("ledger unreachable, retrying in %.1fs: %s", countdown, e)
        kwargs = {"ledger_errors": ledger_errors + 1}
        reprs = unit_reprs(message, kwargs)
        raise self.retry(kwargs=kwargs, countdown=countdown, max_retries=None, **reprs) from None
    if outcome.status == "defer":
        raise self.retry(kwargs={}, countdown=outcome.countdown, max_retries=None, **unit_reprs(message))
    return asdict(outcome)


@app.task(name=TICK_TASK_NAME, ignore_result=True)
def tick() -> dict[str, Any]:
    """The scheduler's tick (sent by ``tsbatch beat``): plan every job's due windows. Idempotent: any
    number of ticks at once plan each window once (producers/schedule.py)."""
    rt = get_runtime()
    queue = rt.settings.producer.queue

    def publish(message: dict[str, Any]) -> None:
        send_unit(app, message, queue=queue)

    report = schedule.tick(rt.settings, rt.ledger, publish)
    for name, job in rt.settings.jobs.items():
        if job.recheck:
            windows = schedule.Windows(rt.ledger, name, job)

            async def fingerprint(start: int, end: int, w: schedule.Windows = windows) -> str:
                return (await fingerprint_window(rt, w.defn, start, end)).hexdigest()

            repairs = rt.run(schedule.recheck(windows, time.time(), fingerprint=fingerprint, publish=publish))
            report[name]["repaired"] = len(repairs)
        if job.delete_after_archive:
            report[name]["deleted"] = len(rt.run(_prune(rt, schedule.Windows(rt.ledger, name, job))))
    return report


async def _prune(rt: Runtime, windows: schedule.Windows) -> list[int]:
    from workers.prune import delete_window

    async def delete(start: int, end: int) -> None:
        await delete_window(rt, windows.defn, start, end)
        log.info(
            "deleted job=%s window [%d, %d) from route %s: archived",
            windows.name,
            start,
            end,
            windows.job.source,
        )

    return await schedule.prune(
        windows, delete=delete, max_windows=rt.settings.scheduler.max_windows_per_tick
    )


@worker_process_init.connect
def _start_runtime(**_: Any) -> None:
    get_runtime()


@worker_process_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    shutdown_runtime()


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The main process sweeps the outbox (never the pool children: one sweeper per node is enough)."""
    settings = load_settings()
    controller = getattr(sender, "controller", None)
    processes = int(getattr(controller, "concurrency", 1) or 1)
    sweeper.start(sender.app, settings, node=str(getattr(sender, "hostname", "")), processes=processes)
    metricsserver.start(settings)  # /metrics of the whole worker, from this process only


@worker_shutdown.connect
def _stop_main_process(**_: Any) -> None:
    sweeper.stop()
    metricsserver.stop()
    shutdown_runtime()  # --pool solo runs tasks in the main process
