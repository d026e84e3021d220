"""``tsbatch beat | jobs | windows | backfill``: scheduled window processing from the command line.

tsbatch beat                                   # the scheduler's tick (any number of beats is safe)
tsbatch jobs                                   # every job: watermark, lag, due, running, dead
tsbatch windows cpu_5m --from 2026-01-01T00:00:00Z --to 2026-01-02T00:00:00Z
tsbatch windows verify cpu_5m --from ... --to ...   # late data: re-run windows whose source changed
tsbatch backfill cpu_5m --from ... --to ... [--dry-run] [--rerun] [--wait]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from config import Settings
from producers.retention import check_window_retention
from producers.schedule import Windows
from tsbatch import logs
from tsbatch.cli import _producer, _settings, _user_errors, _wait_with_bar, main
from tsbatch.envelope import send_unit
from tsbatch.windows import floor_window, iso, parse_time


def _windows(settings: Settings, producer: Any, name: str) -> Windows:
    with _user_errors():
        job = settings.job(name)
    return Windows(producer.ledger, name, job)


def _range(windows: Windows, frm: str | None, to: str | None, *, default_back: int = 24) -> tuple[int, int]:
    """``--from``/``--to`` as epoch seconds (default: the last ``default_back`` windows to now)."""
    with _user_errors():
        end = parse_time(to) if to else floor_window(int(time.time()), windows.every)
        start = parse_time(frm) if frm else end - default_back * windows.every
    if end <= start:
        raise click.ClickException(f"--to ({iso(end)}) must be after --from ({iso(start)})")
    return start, end


def _publisher(producer: Any) -> Any:
    producer.connect_broker()
    queue = producer.settings.producer.queue

    def publish(message: dict[str, Any]) -> None:
        send_unit(producer.celery, message, queue=queue)

    return publish


@main.command()
@click.option("--loglevel", "-l", help="[logging.level]")
def beat(loglevel: str | None) -> None:
    """Send the scheduler's tick every [scheduler.tick_s]; a worker plans each job's due windows.

    Running two beats (or restarting one) never runs a window twice: planning goes through the ledger."""
    settings = _settings()
    level = (loglevel or settings.logging.level).upper()
    logs.configure(settings, level=level)
    from tsbatch.envelope import create_app

    app = create_app(settings)
    app.Beat(loglevel=level, quiet=True).run()


def _job_row(settings: Settings, producer: Any, name: str, now: float) -> dict[str, Any]:
    job = settings.jobs[name]
    windows = Windows(producer.ledger, name, job)
    marks = windows.marks()
    first, watermark = marks.get("first"), marks.get("watermark")
    due_to = floor_window(int(now) - job.offset, job.every)
    states: dict[str, int] = {"planned": 0, "dead": 0}
    last_error = ""
    if watermark is not None:
        for row in windows.rows(watermark, max(marks.get("planned_to", watermark), watermark)):
            if row.state in states:
                states[row.state] += 1
            if row.state == "dead" or (row.state == "planned" and row.record.get("history")):
                last_error = row.as_json()["error"] or last_error
    return {
        "job": name,
        "kind": job.kind,
        "mode": job.mode,
        "source": job.source,
        "target": job.target,
        "every_s": job.every,
        "offset_s": job.offset,
        "first": iso(first) if first is not None else None,
        "watermark": iso(watermark) if watermark is not None else None,
        "lag_s": max(int(now) - watermark, 0) if watermark is not None else None,
        "due": max((due_to - (watermark if watermark is not None else due_to)) // job.every, 0),
        "running": states["planned"],
        "dead": states["dead"],
        "last_error": last_error,
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
def jobs(as_json: bool) -> None:
    """Every scheduled job: kind, every/offset, watermark, lag, windows due, running, dead-lettered."""
    settings = _settings()
    with _producer(settings) as producer:
        now = time.time()
        rows = [_job_row(settings, producer, name, now) for name in sorted(settings.jobs)]
    for r in rows:
        if as_json:
            click.echo(json.dumps(r))
            continue
        seen = f"watermark {r['watermark']} (lag {r['lag_s']}s)" if r["watermark"] else "not started"
        click.echo(
            f"{r['job']}: {r['kind']} {r['source']} -> {r['target']} every {r['every_s']}s "
            f"offset {r['offset_s']}s; {seen}; {r['due']} due, {r['running']} running, {r['dead']} dead"
            + (f"; last error: {r['last_error']}" if r["last_error"] else "")
        )
    if not rows:
        click.echo("no jobs configured ([jobs.NAME] in the settings)", err=True)
    _warn_expiring(settings)


def _warn_expiring(settings: Settings) -> None:
    """Windows that a bucket's retention drops within its ``warn_before`` and no archive holds yet."""
    from tsbatch.cli_lifecycle import expiring

    with _producer(settings) as producer:
        now = int(time.time())
        for bname, bucket in settings.buckets.items():
            late = [
                r
                for r in expiring(settings, producer, bucket.warn_before / 86_400, now)
                if r["bucket"] == bname
            ]
            missing = [r for r in late if not r["archived"]]
            if missing:
                first = missing[0]
                click.echo(
                    f"warning: {len(missing)} window(s) of bucket {bname} expire within "
                    f"{bucket.warn_before}s and are not archived (first: job {first['job']} "
                    f"{first['window']}, expires {first['expires']}): see `tsbatch retention plan`",
                    err=True,
                )


class _ShowByDefault(click.Group):
    """``tsbatch windows JOB ...`` shows the windows; ``tsbatch windows verify JOB ...`` verifies them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_ShowByDefault)
def windows() -> None:
    """Per-window state of a job (tsbatch windows JOB [--from] [--to] [--json]), and late-data repair
    (tsbatch windows verify JOB --from --to)."""


@windows.command("show", hidden=True)
@click.argument("job")
@click.option("--from", "frm", help="RFC 3339 UTC, e.g. 2026-01-01T00:00:00Z [24 windows ago]")
@click.option("--to", help="RFC 3339 UTC [now]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per window.")
def windows_show(job: str, frm: str | None, to: str | None, as_json: bool) -> None:
    """Per-window state of JOB: generation, state, points read and written, fingerprint, attempts."""
    settings = _settings()
    with _producer(settings) as producer:
        w = _windows(settings, producer, job)
        start, end = _range(w, frm, to)
        rows = [row.as_json() for row in w.rows(start, end)]
    for r in rows:
        if as_json:
            click.echo(json.dumps(r))
        else:
            gen = f" gen {r['generation']}" if r["generation"] else ""
            click.echo(
                f"{r['start']} {r['state']:<10}{gen} read {r['points_read']} wrote {r['points_written']} "
                f"attempts {r['attempts']} {r['fingerprint']}" + (f" {r['error']}" if r["error"] else "")
            )


@windows.command("verify")
@click.argument("job")
@click.option("--from", "frm", required=True, help="RFC 3339 UTC")
@click.option("--to", required=True, help="RFC 3339 UTC")
@click.option("--json", "as_json", is_flag=True)
def windows_verify(job: str, frm: str, to: str, as_json: bool) -> None:
    """Re-read each committed window's source; run again (a new generation) every window whose points
    changed since its commit (late data), and say which. Exit 1 when any was repaired."""
    settings = _settings()
    from producers.api import new_job_id
    from producers.schedule import verify
    from workers.runtime import Runtime
    from workers.windows import fingerprint_window

    with _producer(settings) as producer:
        w = _windows(settings, producer, job)
        start, end = _range(w, frm, to)
        job_id = new_job_id()
        producer.ledger.create_job(job_id, route=w.defn.target, paths=[f"verify {job} {iso(start)}"])
        rt = Runtime(settings)
        try:

            async def fingerprint(s: int, e: int) -> str:
                return (await fingerprint_window(rt, w.defn, s, e)).hexdigest()

            checked, repairs = rt.run(
                verify(w, start, end, fingerprint=fingerprint, job_id=job_id, publish=_publisher(producer))
            )
        finally:
            rt.close()
        producer.ledger.finish_planning(job_id)
    for r in repairs:
        line = {
            "window": iso(r.start),
            "end": iso(r.end),
            "committed": r.was,
            "source_now": r.now,
            "generation": r.generation,
            "job": job_id,
        }
        click.echo(
            json.dumps(line)
            if as_json
            else f"changed since commit: [{iso(r.start)}, {iso(r.end)}) {r.was} -> {r.now}: "
            f"re-running as generation {r.generation} (job {job_id})"
            if r.was
            else f"an interrupted repair: [{iso(r.start)}, {iso(r.end)}) generation {r.generation} was never "
            f"planned: planning it now (job {job_id})"
        )
    click.echo(f"{checked} committed windows checked, {len(repairs)} changed and re-run", err=True)
    if repairs:
        sys.exit(1)


@main.command()
@click.argument("job")
@click.option("--from", "frm", required=True, help="RFC 3339 UTC, e.g. 2026-01-01T00:00:00Z")
@click.option("--to", required=True, help="RFC 3339 UTC (exclusive)")
@click.option("--dry-run", is_flag=True, help="List the windows and what each would read; write nothing.")
@click.option(
    "--rerun", is_flag=True, help="Run committed windows again (a new generation), retry dead ones."
)
@click.option("--wait", is_flag=True, help="Wait until every window is committed or dead-lettered.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 3).")
@click.option("--json", "as_json", is_flag=True)
def backfill(
    job: str, frm: str, to: str, dry_run: bool, rerun: bool, wait: bool, timeout: float | None, as_json: bool
) -> None:
    """Plan every window of JOB in [--from, --to): committed ones are skipped unless --rerun.

    Refused, before anything is planned, when a window is older than the retention of the target's
    declared bucket ([buckets.NAME] on the job's target route): InfluxDB would drop its points."""
    settings = _settings()
    with _user_errors():
        check_window_retention(settings, job, parse_time(frm), parse_time(to), now=time.time())
    from producers.api import new_job_id

    with _producer(settings) as producer:
        w = _windows(settings, producer, job)
        start, end = _range(w, frm, to)
        starts = [r.start for r in w.rows(start, end)]
        if dry_run:
            _dry_run(settings, w, start, end, rerun, as_json)
            return
        job_id = new_job_id()
        producer.ledger.create_job(job_id, route=w.defn.target, paths=[f"backfill {job} {iso(start)}"])
        counts = w.plan(starts, job_id=job_id, publish=_publisher(producer), rerun=rerun)
        producer.ledger.finish_planning(job_id)
        click.echo(
            f"job {job_id}: {len(starts)} windows of {job}: {counts['new'] + counts['planned']} to run"
            f" ({counts['rerun']} re-run), {counts['committed']} already committed, "
            f"{counts['dead']} dead-lettered before" + ("" if rerun else " (--rerun retries them)"),
            err=True,
        )
        if not wait:
            return
        status = _wait_with_bar(producer, job_id, counts["new"] + counts["planned"], timeout)
    summary = {
        "job": job_id,
        "windows": status.units,
        "committed": status.committed,
        "dead": status.dead,
        "skipped": status.skipped,
        "points_written": status.points,
    }
    click.echo(
        json.dumps(summary)
        if as_json
        else f"job {job_id}: {status.committed}/{status.units} windows committed, "
        f"{status.dead} dead-lettered, {status.skipped} skipped; {status.points} points written"
    )
    if status.failed:
        sys.exit(1)


def _dry_run(settings: Settings, w: Windows, start: int, end: int, rerun: bool, as_json: bool) -> None:
    """Each window, whether it would run, and the read it would send; nothing is planned or written."""
    from tsbatch.reads import describe_read

    route = settings.route(w.defn.source)
    for row in w.rows(start, end):
        runs = row.state != "committed" or rerun
        action = ("rerun" if row.state == "committed" else "run") if runs else "skip (committed)"
        read = describe_read(route, w.defn, row.start, row.end)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "start": iso(row.start),
                        "end": iso(row.end),
                        "state": row.state,
                        "action": action,
                        "read": read,
                    }
                )
            )
        else:
            click.echo(f"[{iso(row.start)}, {iso(row.end)}) {row.state}: {action}\n    {read}")
