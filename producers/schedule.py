"""Scheduled window processing: plan every due window of every job, exactly once, through the ledger.

    tick (from ``tsbatch beat``, run by any worker)
      for each job: advance the watermark over contiguous committed windows,
                    plan the due windows after ``planned_to`` (oldest first, at most
                    ``scheduler.max_windows_per_tick``), publish the ones the ledger did not know

No lock anywhere. Two beats, a tick delivered twice or a restart all compute the same windows: planning a
window that exists is a no-op in the ledger (``plan.lua`` answers ``planned`` or ``committed``), and only
a ``new`` answer is published, so each window gets one message (the outbox sweeper re-publishes it if
that message is lost). The marks move only forward (``advance.lua``). The watermark never skips: a
dead-lettered window holds it until it is re-run (``tsbatch backfill --rerun``).

A window is re-run as a new *generation*: ``P:wgen:<job>`` records it, and its key differs, so the
ledger runs it once more. That is how late data is repaired (``windows verify``) and how ``--rerun``
works; a re-run writes the same series and timestamps, so the target's points are overwritten.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from config import Settings
from config.settings import JobSettings
from tsbatch.ledger import Ledger
from tsbatch.windows import (
    Definition,
    WindowDescriptor,
    due_end,
    floor_window,
    iso,
    window_key,
    window_starts,
)

log = logging.getLogger("tsbatch.scheduler")

Publish = Callable[[dict[str, Any]], None]
STATE_BATCH = 500  # window states read per round trip while advancing a watermark


def scheduled_job_id(name: str) -> str:
    """The ledger job that counts a job's scheduled windows (backfills have their own job ids)."""
    return f"sched-{name}"


@dataclass
class WindowRow:
    start: int
    end: int
    generation: int
    key: str
    state: str  # committed | planned | dead | unplanned
    record: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "generation": self.generation,
            "state": self.state,
            "key": self.key,
            "points_read": int(r.get("points_read", 0) or 0),
            "points_written": int(r.get("points", 0) or 0),
            "fingerprint": r.get("fingerprint", ""),
            "attempts": int(r.get("attempts", 0) or 0),
            "error": _last_error(r),
        }


def _last_error(unit: dict[str, str]) -> str:
    history = json.loads(unit["history"]) if unit.get("history") else []
    last = str(history[-1]) if history else ""
    if unit.get("state") == "dead":
        return f"dead-lettered (tsbatch dlq list --job {unit.get('job', '')}){': ' + last if last else ''}"
    return last


class Windows:
    """One job's windows in the ledger: marks, generations, states, planning."""

    def __init__(self, ledger: Ledger, name: str, job: JobSettings) -> None:
        self.ledger = ledger
        self.name = name
        self.job = job
        self.defn = Definition.of(job)
        self.every = job.every

    # -- marks ------------------------------------------------------------------------------------------
    def marks(self) -> dict[str, int]:
        h = cast(dict[str, str], self.ledger.redis.hgetall(self.ledger.window_key(self.name)))
        return {k: int(v) for k, v in h.items() if k != "def"}

    def ensure(self, now_s: float) -> dict[str, int]:
        """The job's marks, set up the first time the job is seen (its first window: ``start``, or the
        window holding that moment)."""
        marks = self.marks()
        if "first" in marks:
            return marks
        first = floor_window(int(self.job.start.timestamp()) if self.job.start else int(now_s), self.every)
        key = self.ledger.window_key(self.name)
        pipe = self.ledger.redis.pipeline()
        for mark in ("first", "watermark", "planned_to"):
            pipe.hsetnx(key, mark, first)
        pipe.execute()
        self.ledger.create_job(scheduled_job_id(self.name), route=self.defn.target, paths=[])
        self.ledger.finish_planning(scheduled_job_id(self.name))
        return self.marks()

    def generations(self, starts: list[int]) -> list[int]:
        if not starts:
            return []
        values = self.ledger.redis.hmget(self.ledger.generation_key(self.name), [str(s) for s in starts])
        return [int(v) if v else 0 for v in cast(list[str | None], values)]

    def descriptor(self, start: int, generation: int, job_id: str) -> WindowDescriptor:
        return WindowDescriptor(
            job=self.name,
            job_id=job_id,
            definition=self.defn,
            start=start,
            end=start + self.every,
            generation=generation,
        )

    # -- states -----------------------------------------------------------------------------------------
    def rows(self, start: int, end: int) -> Iterator[WindowRow]:
        """Every window of ``[start, end)`` with its current generation and ledger state."""
        starts = list(window_starts(start, end, self.every))
        for i in range(0, len(starts), STATE_BATCH):
            part = starts[i : i + STATE_BATCH]
            gens = self.generations(part)
            keys = [window_key(self.defn, s, s + self.every, g) for s, g in zip(part, gens, strict=True)]
            pipe = self.ledger.redis.pipeline()
            for key in keys:
                pipe.hgetall(self.ledger.unit_key(key))
            for s, g, key, h in zip(part, gens, keys, pipe.execute(), strict=True):
                yield WindowRow(s, s + self.every, g, key, h.get("state", "unplanned"), h)

    def advance_watermark(self, marks: dict[str, int]) -> int:
        """Move the watermark over the contiguous committed windows after it (up to ``planned_to``)."""
        watermark = marks["watermark"]
        for row in self.rows(watermark, marks["planned_to"]):
            if row.state != "committed":
                break
            watermark = row.end
        return self.ledger.advance(self.name, "watermark", watermark)

    # -- planning ---------------------------------------------------------------------------------------
    def plan(
        self, starts: list[int], *, job_id: str, publish: Publish, rerun: bool = False
    ) -> dict[str, int]:
        """Plan these windows under ``job_id``; publish what must run. ``rerun``: a committed window
        runs again as its next generation, a dead one is retried. Returns counts by outcome."""
        counts = {"new": 0, "planned": 0, "committed": 0, "dead": 0, "rerun": 0}
        for row in list(self._rows_of(starts)):
            generation = row.generation
            if rerun and row.state == "committed":
                bumped = self.ledger.next_generation(self.name, row.start, row.generation)
                if bumped is None:
                    continue  # another verify or backfill re-ran it just now: once is enough
                generation = bumped
                counts["rerun"] += 1
            desc = self.descriptor(row.start, generation, job_id)
            status = self.ledger.plan(
                desc.key, job_id, descriptor=json.dumps(desc.to_message()), retry_dead=rerun
            )
            counts[status] += 1
            if status == "new" or (status == "planned" and job_id != scheduled_job_id(self.name)):
                # A scheduled window already planned has its message (or the sweeper re-sends it);
                # a backfill run again by a person publishes what is still undone, as produce does.
                publish(desc.to_message())
        return counts

    def _rows_of(self, starts: list[int]) -> Iterator[WindowRow]:
        if not starts:
            return iter(())
        wanted = set(starts)  # once: a backfill of a year of 5-minute windows plans 105,120 of them
        return (r for r in self.rows(min(wanted), max(wanted) + self.every) if r.start in wanted)

    def follow_definition(self, marks: dict[str, int]) -> dict[str, int]:
        """A job whose definition changed (aggregates, filters, routes...) moves its watermark over the
        windows committed under the old one, then plans the rest again under the new one: their keys
        differ, so windows of the old definition would hold the watermark for ever. A window still running
        under the old definition finishes as planned (its descriptor carries it); the new one overwrites."""
        key = self.ledger.window_key(self.name)
        stored = cast(str | None, self.ledger.redis.hget(key, "def"))
        current = self.defn.model_dump_json()
        if stored == current:
            return marks
        if stored:
            previous = Windows(self.ledger, self.name, self.job)
            previous.defn = Definition.model_validate_json(stored)
            marks = {**marks, "watermark": previous.advance_watermark(marks)}
            log.warning(
                "job=%s: its definition changed; windows from %s on run with the new one",
                self.name,
                iso(marks["watermark"]),
            )
        self.ledger.redis.hset(key, mapping={"def": current, "planned_to": marks["watermark"]})
        return {**marks, "planned_to": marks["watermark"]}

    def tick(self, now_s: float, *, max_windows: int, publish: Publish) -> dict[str, int]:
        marks = self.follow_definition(self.ensure(now_s))
        watermark = self.advance_watermark(marks)
        due = due_end(now_s, every=self.every, offset=self.job.offset)
        start = max(marks["planned_to"], marks["first"])
        stop = min(due, start + max_windows * self.every)
        starts = list(range(start, stop, self.every))
        counts = self.plan(starts, job_id=scheduled_job_id(self.name), publish=publish) if starts else {}
        if starts:
            self.ledger.advance(self.name, "planned_to", stop)
        return {"watermark": watermark, "planned": len(starts), "new": counts.get("new", 0)}


def tick(
    settings: Settings, ledger: Ledger, publish: Publish, *, now_s: float | None = None
) -> dict[str, Any]:
    """One scheduler pass over every job; returns what each job did."""
    now = time.time() if now_s is None else now_s
    report: dict[str, Any] = {}
    for name, job in settings.jobs.items():
        windows = Windows(ledger, name, job)
        report[name] = windows.tick(now, max_windows=settings.scheduler.max_windows_per_tick, publish=publish)
        if report[name]["new"]:
            log.info(
                "planned %d windows of job=%s (watermark %s)",
                report[name]["new"],
                name,
                iso(report[name]["watermark"]),
            )
    return report


async def recheck(
    windows: Windows, now_s: float, *, fingerprint: Callable[[int, int], Awaitable[str]], publish: Publish
) -> list[Repair]:
    """``recheck = "6h"``: verify the committed windows that ended within that long, each at most once per
    ``recheck_interval`` (default: the window length; a check claims the window for that long, so
    concurrent ticks check it once)."""
    span = windows.job.recheck
    marks = windows.marks()
    if not span or "watermark" not in marks:
        return []
    start = max(marks["first"], floor_window(int(now_s) - span, windows.every))
    repairs: list[Repair] = []
    for s in window_starts(start, marks["watermark"], windows.every):
        claim = f"{windows.ledger.prefix}:wcheck:{windows.name}:{s}"
        interval = windows.job.recheck_interval or windows.every
        if not windows.ledger.redis.set(claim, int(now_s), nx=True, ex=interval):
            continue
        _, found = await verify(
            windows,
            s,
            s + windows.every,
            fingerprint=fingerprint,
            job_id=scheduled_job_id(windows.name),
            publish=publish,
        )
        repairs += found
    for r in repairs:
        log.warning(
            "late data in job=%s window=%s: re-running it as generation %d",
            windows.name,
            iso(r.start),
            r.generation,
        )
    return repairs


async def prune(
    windows: Windows, *, delete: Callable[[int, int], Awaitable[None]], max_windows: int
) -> list[int]:
    """``delete_after_archive``: delete from the source the windows whose archive is committed, in order,
    up to the watermark (every window before it is committed: archived and verified), at most
    ``max_windows`` a tick. The ``pruned`` mark only moves forward; a delete done twice deletes nothing."""
    marks = windows.marks()
    if not windows.job.delete_after_archive or "watermark" not in marks:
        return []
    start = marks.get("pruned", marks["first"])
    done = []
    for s in list(window_starts(start, marks["watermark"], windows.every))[:max_windows]:
        await delete(s, s + windows.every)
        windows.ledger.advance(windows.name, "pruned", s + windows.every)
        done.append(s)
    return done


@dataclass
class Repair:
    start: int
    end: int
    was: str
    now: str
    generation: int


async def verify(
    windows: Windows,
    start: int,
    end: int,
    *,
    fingerprint: Callable[[int, int], Awaitable[str]],
    job_id: str,
    publish: Publish,
) -> tuple[int, list[Repair]]:
    """Compare each committed window's source fingerprint with its commit record; run the changed ones
    again as a new generation. Returns (windows checked, repairs).

    A re-run moves the generation, then plans its unit: a verifier that died between the two left a
    generation nobody planned (state ``unplanned`` although the window ran before). It is planned here,
    so the repair it began is not stranded."""
    checked, repairs = 0, []
    for row in list(windows.rows(start, end)):
        if row.state == "unplanned" and row.generation > 0:
            windows.plan([row.start], job_id=job_id, publish=publish)
            repairs.append(Repair(row.start, row.end, "", "", row.generation))
            continue
        if row.state != "committed":
            continue
        checked += 1
        now = await fingerprint(row.start, row.end)
        was = row.record.get("fingerprint", "")
        if now == was:
            continue
        windows.plan([row.start], job_id=job_id, publish=publish, rerun=True)
        repairs.append(Repair(row.start, row.end, was, now, row.generation + 1))
    return checked, repairs
