"""A backfill must not write windows that the target bucket's retention would drop at once.

InfluxDB drops every point older than its bucket's retention at write time (a 422 "partial write: dropped
N points outside retention policy", dead-lettered as ``outside_retention``), so a backfill of windows that
old would only fill the dead-letter queue. A window's output is stamped at its start (a downsample) or
spans it (a copy): its start is the oldest point it writes. Checked against the ``[buckets.NAME]``
declared for the job's target route, from the settings alone; a bucket not declared there is not
checked (``tsbatch buckets plan`` shows what the server holds).

Windows planned by the scheduler's tick are recent by construction (due at their end plus the offset),
so only ``tsbatch backfill`` checks.
"""

from __future__ import annotations

from config import Settings
from config.settings import format_duration
from tsbatch.windows import ceil_window, floor_window, iso


class RetentionConflict(ValueError):
    """A window to write is older than the target bucket's retention; the message names both."""


def check_window_retention(settings: Settings, job_name: str, start: int, end: int, *, now: float) -> None:
    """Raise ``RetentionConflict`` if a window of ``job_name`` in ``[start, end)`` starts before what the
    target bucket keeps (``now`` minus its retention)."""
    job = settings.job(job_name)
    if job.kind not in ("copy", "downsample"):
        return
    first = floor_window(start, job.every)
    for name, bucket in sorted(settings.buckets.items()):
        if bucket.route != job.target or not bucket.retention:
            continue
        kept_from = int(now) - bucket.retention
        if first >= kept_from:
            continue
        keep = ceil_window(kept_from, job.every)
        advice = f"; the first window it would keep starts at {iso(keep)}" if keep < end else ""
        raise RetentionConflict(
            f"window {iso(first)} is older than the retention of bucket {name} "
            f"({format_duration(bucket.retention)}): InfluxDB would drop its points{advice}"
        )
