"""The metrics that pool children record (prometheus_client, multiprocess mode).

Each child writes its own ``<type>_<pid>.db`` files in the worker's multiprocess directory
(tsbatch/metricsdir.py); the main process merges them at scrape time (workers/metricsserver.py) and folds
a dead child's counters into one aggregate file (workers/reaper.py). Gauges use ``live*`` modes, so a
dead child's gauges disappear with it. Labels are bounded sets only: route and job names come from the
settings, ``kind``, ``outcome`` and ``reason`` from this code; never a pid, task id, job id or unit key.

When metrics are off (``metrics.port = 0``) the same objects keep plain in-memory values: recording
costs a lock and an addition.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from tsbatch.errors import OutsideRetention, PermanentWriteError, WriteError

# One write of 5,000 lines takes milliseconds on a healthy server; the top buckets see timeouts (30 s).
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The loop probe sleeps 0.1 s: lag under a millisecond is scheduling noise, over a second starves leases.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

POINTS = Counter(
    "tsbatch_points_written",
    "Points of committed units (counted once per unit, however often its writes were retried).",
    ["route", "kind"],
)
BYTES = Counter(
    "tsbatch_bytes_written",
    "Line-protocol bytes of committed units, before gzip.",
    ["route", "kind"],
)
UNITS = Counter("tsbatch_units_committed", "Units committed, by kind (chunk, window, archive).", ["kind"])
REJECTED = Counter(
    "tsbatch_rejected_lines", "Lines refused (by the parser or the server) and dead-lettered.", ["kind"]
)
WRITE_REQUESTS = Counter(
    "tsbatch_write_requests",
    "HTTP write requests by outcome: ok, rejected, too_large, outside_retention, refused, throttled, "
    "unavailable, server_error, network_error, cancelled, error.",
    ["route", "outcome"],
)
REQUEST_BYTES = Counter(
    "tsbatch_write_request_bytes", "Bytes sent in write requests (after gzip, retries included).", ["route"]
)
WRITE_SECONDS = Histogram(
    "tsbatch_write_duration_seconds", "Latency of one write request.", ["route"], buckets=WRITE_BUCKETS
)
WRITES_IN_FLIGHT = Gauge(
    "tsbatch_writes_in_flight", "Write requests awaiting an answer.", ["route"], multiprocess_mode="livesum"
)
BATCH_RETRIES = Counter(
    "tsbatch_batch_retries", "Batches sent again within a task after a transient failure.", ["route"]
)
UNIT_RETRIES = Counter(
    "tsbatch_unit_retries", "Units handed back to Celery to retry later after a transient failure.", ["kind"]
)
UNIT_DEFERRALS = Counter(
    "tsbatch_unit_deferrals",
    "Units deferred, their attempt given back, while their route's breaker was open.",
    ["kind"],
)
DEAD_LETTERS = Counter("tsbatch_dead_letters", "Units and messages dead-lettered.", ["kind", "reason"])
ROUTE_PAUSES = Counter(
    "tsbatch_route_pauses",
    "429/503 answers with Retry-After that paused a route for every worker.",
    ["route"],
)
BREAKER_OPENS = Counter("tsbatch_breaker_opens", "Failed writes that opened a route's breaker.", ["route"])
CLAIMS = Counter(
    "tsbatch_lease_claims",
    "Claims by outcome: claimed, committed and dead (done already: acked), busy (another holder), poison.",
    ["outcome"],
)
RENEWALS = Counter("tsbatch_lease_renewals", "Lease renewals by the heartbeat that still held the lease.")
EXPIRIES = Counter(
    "tsbatch_lease_expiries", "Leases found lost by their holder's heartbeat (lapsed or taken over)."
)
FENCED = Counter(
    "tsbatch_lease_fenced", "Commits and dead letters refused because the lease was lost.", ["operation"]
)
LOOP_LAG = Histogram(
    "tsbatch_event_loop_lag_seconds",
    "How late the loop probe's sleep woke up, while a task ran (workers/loopprobe.py).",
    buckets=LAG_BUCKETS,
)
LOOP_LAG_MAX = Gauge(
    "tsbatch_event_loop_lag_max_seconds",
    "Largest event-loop lag of any live child over the last one to two minutes of work.",
    multiprocess_mode="livemax",
)

# Known label values start at 0, so a series exists before its first event: increase() over a series
# that appears at 1 sees no increase, and an alert on it would miss the first occurrence.
for _kind in ("chunk", "window", "archive"):
    for _counter in (UNITS, REJECTED, UNIT_RETRIES, UNIT_DEFERRALS):
        _counter.labels(_kind)
for _outcome in ("claimed", "committed", "dead", "busy", "poison"):
    CLAIMS.labels(_outcome)
for _operation in ("commit", "dead_letter"):
    FENCED.labels(_operation)

_STATUS_OUTCOMES = {400: "rejected", 422: "rejected", 413: "too_large", 429: "throttled", 503: "unavailable"}


def write_outcome(err: WriteError) -> str:
    """The ``outcome`` label of a failed write request (workers/writer.py's classification)."""
    if isinstance(err, OutsideRetention):
        return "outside_retention"
    if isinstance(err, PermanentWriteError):
        return "refused"
    if err.status is None:
        return "network_error"  # timeouts, resets, refused connections: no answer
    return _STATUS_OUTCOMES.get(err.status, "server_error")


class _Writer(Protocol):
    name: str


W = TypeVar("W", bound=_Writer)
Post = Callable[[W, bytes, str, str], Awaitable[None]]


def observed_write(post: Post[W]) -> Post[W]:
    """Wrap ``RouteWriter._post`` (one HTTP request): latency, outcome, bytes sent and writes in flight."""

    @functools.wraps(post)
    async def observed(writer: W, body: bytes, precision: str, encoding: str) -> None:
        route = writer.name
        in_flight = WRITES_IN_FLIGHT.labels(route)
        in_flight.inc()
        outcome = "error"  # anything but our own exceptions: a bug
        started = time.perf_counter()
        try:
            await post(writer, body, precision, encoding)
            outcome = "ok"
        except WriteError as e:
            outcome = write_outcome(e)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            in_flight.dec()
            WRITE_SECONDS.labels(route).observe(time.perf_counter() - started)
            WRITE_REQUESTS.labels(route, outcome).inc()
            REQUEST_BYTES.labels(route).inc(len(body))

    return observed


def committed(kind: str, route: str, *, points: int, size: int, rejected: int) -> None:
    """A unit committed: count it once, with what it wrote."""
    UNITS.labels(kind).inc()
    POINTS.labels(route, kind).inc(points)
    BYTES.labels(route, kind).inc(size)
    if rejected:
        REJECTED.labels(kind).inc(rejected)
