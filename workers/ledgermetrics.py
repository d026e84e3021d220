"""Figures that live in the ledger, read from Redis at scrape time by each worker's main process.

``tsbatch produce`` and ``tsbatch beat`` are short-lived or idle and push nothing: the queue, the
outbox, the dead-letter stream, breakers, jobs and windows are in Redis, so any worker can export them.
Every worker exports the same cluster-wide values: aggregate them with ``max``, never ``sum``.

A scrape reads a bounded amount: a few keys, one hash per configured route and scheduled job, and the
``METRICS_RECENT_JOBS`` newest jobs. Redis that does not answer within a short timeout gives
``tsbatch_ledger_up 0`` and nothing else, never a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from config import Settings, constants
from tsbatch.breaker import RouteGuard
from tsbatch.ledger import Ledger
from tsbatch.windows import due_end

log = logging.getLogger("tsbatch.metrics")

SCRAPE_REDIS_TIMEOUT_S = 2.0  # Prometheus' scrape timeout is 10 s by default: answer well within it
BREAKER_STATES = {"closed": 0, "probing": 1, "open": 2}


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class LedgerCollector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        client = redis.Redis.from_url(
            settings.redis.url.get_secret_value(),
            decode_responses=True,
            socket_timeout=SCRAPE_REDIS_TIMEOUT_S,
            socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_S,
        )
        self.ledger = Ledger(client, prefix=settings.redis.key_prefix)
        w = settings.worker
        self.guard = RouteGuard(
            client,
            prefix=settings.redis.key_prefix,
            threshold=w.breaker_threshold,
            cooldown_s=w.breaker_cooldown_s,
            max_pause_s=w.retry_after_max_s,
        )

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("tsbatch_ledger_up", "1 if this scrape could read the ledger in Redis.")
        try:
            families = [*self._queues(), *self._routes(), *self._jobs(), *self._windows()]
        except redis.RedisError as e:
            log.warning("metrics: the ledger did not answer: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def close(self) -> None:
        self.ledger.redis.close()

    def _queues(self) -> list[Metric]:
        queue = self.settings.producer.queue
        pipe = self.ledger.redis.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.zcard(self.ledger.outbox_key)
        pipe.zcount(self.ledger.outbox_key, "-inf", int(time.time() * 1000))
        pipe.xlen(self.ledger.dlq_key)
        pipe.hget(self.ledger.stats_key, "republished")
        depth, outbox, overdue, dlq, republished = pipe.execute()
        queued = GaugeMetricFamily(
            "tsbatch_queue_depth", "Messages waiting in the broker queue.", labels=["queue"]
        )
        queued.add_metric([queue], int(depth))
        return [
            queued,
            _gauge("tsbatch_outbox_units", "Units recorded in the ledger and not done yet.", int(outbox)),
            _gauge(
                "tsbatch_outbox_overdue_units",
                "Units due for the sweeper's look (their message may be lost; it publishes them again).",
                int(overdue),
            ),
            _gauge(
                "tsbatch_dlq_entries",
                "Entries in the dead-letter stream (capped at ledger.dlq_maxlen).",
                int(dlq),
            ),
            CounterMetricFamily(
                "tsbatch_ledger_republished",
                "Units the outbox sweepers published again (lost messages, dead holders), cluster-wide.",
                value=int(republished or 0),
            ),
        ]

    def _routes(self) -> list[Metric]:
        state = GaugeMetricFamily(
            "tsbatch_breaker_state", "Route breaker: 0 closed, 1 probing, 2 open.", labels=["route"]
        )
        failures = GaugeMetricFamily(
            "tsbatch_breaker_failures",
            "Consecutive failed writes counted by the route's breaker.",
            labels=["route"],
        )
        paused = GaugeMetricFamily(
            "tsbatch_route_paused_seconds", "Time left on the route's Retry-After pause.", labels=["route"]
        )
        for route in self.guard.states(sorted(self.settings.routes)):
            state.add_metric([route.route], BREAKER_STATES.get(route.breaker, 2))
            failures.add_metric([route.route], route.failures)
            paused.add_metric([route.route], min(route.paused_for_s, self.guard.max_pause_s))
        return [state, failures, paused]

    def _jobs(self) -> list[Metric]:
        """Unfinished jobs among the newest, and how long the most stalled one has made no progress."""
        now_ms = int(time.time() * 1000)
        ids = cast(
            list[str],
            self.ledger.redis.zrevrange(f"{self.ledger.prefix}:jobs", 0, constants.METRICS_RECENT_JOBS - 1),
        )
        unfinished, lag = 0, 0.0
        for job_id in ids:
            job = self.ledger.job(job_id)
            if not job.exists or job.done:
                continue
            unfinished += 1
            progress = max(job.last_ms, job.first_enqueue_ms, job.heartbeat_ms, job.created_ms)
            lag = max(lag, (now_ms - progress) / 1000)
        return [
            _gauge("tsbatch_jobs_unfinished", "Jobs (of the newest) with units not yet done.", unfinished),
            _gauge(
                "tsbatch_job_lag_seconds",
                "Seconds since the most stalled unfinished job last made progress (a commit, a dead "
                "letter, planning).",
                lag,
            ),
        ]

    def _windows(self) -> list[Metric]:
        now = time.time()
        labels = ["job_name"]  # not "job": Prometheus' own target label would rename it exported_job
        lag = GaugeMetricFamily(
            "tsbatch_window_lag_seconds",
            "Seconds from the job's watermark to now (`tsbatch jobs`' lag).",
            labels=labels,
        )
        due = GaugeMetricFamily(
            "tsbatch_windows_due", "Windows due (end + offset passed) and not yet committed.", labels=labels
        )
        mark = GaugeMetricFamily(
            "tsbatch_window_watermark_timestamp_seconds",
            "The job's watermark: every window before it is committed.",
            labels=labels,
        )
        for name, job in sorted(self.settings.jobs.items()):
            watermark = self.ledger.redis.hget(self.ledger.window_key(name), "watermark")
            if watermark is None:
                continue  # not ticked yet: no marks
            w = int(str(watermark))
            lag.add_metric([name], max(now - w, 0.0))
            due.add_metric(
                [name], max((due_end(now, every=job.every, offset=job.offset) - w) // job.every, 0)
            )
            mark.add_metric([name], w)
        return [lag, due, mark]
