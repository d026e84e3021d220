"""``tsbatch archive verify | retention plan``: the data lifecycle from the command line.

tsbatch archive verify cpu_archive --from 2026-01-01T00:00:00Z   # every archived window's file, checked
tsbatch retention plan --days 7                                   # what expires soon, and is it archived
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from config import Settings
from producers.schedule import WindowRow, Windows
from tsbatch.cli import _producer, _settings, _user_errors, main
from tsbatch.cli_windows import _range
from tsbatch.windows import floor_window, iso


@main.group()
def archive() -> None:
    """Archived windows (jobs of kind = "archive"): one verified Parquet file per window."""


def check_file(row: WindowRow) -> str:
    """Why an archived window's file no longer matches its commit record ("" if it does)."""
    return check_archive(row.record)


def check_archive(rec: dict[str, Any]) -> str:
    """Why an archive file no longer matches the commit record ``rec`` ("" if it does)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tsbatch.archives import file_sha256, table_digest

    path = rec.get("archive_path", "")
    if not path:
        return "no archive file in its commit record"
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return f"missing: {path}"
    size = int(rec.get("archive_size", 0))
    if len(data) != size:
        what = "truncated" if len(data) < size else "altered"
        return f"{what}: {path} has {len(data)} bytes, {size} were written"
    if file_sha256(data) != rec.get("archive_sha256"):
        return f"altered: {path} (SHA-256 differs from the one committed)"
    try:
        digest = table_digest(pq.read_table(pa.BufferReader(data)))
    except (OSError, ValueError) as e:
        return f"unreadable: {path}: {e}"
    if digest != rec.get("archive_digest"):
        return f"altered: {path} (rows differ from the ones committed)"
    return ""


@archive.command("verify")
@click.argument("job")
@click.option("--from", "frm", help="RFC 3339 UTC [the job's first window]")
@click.option("--to", help="RFC 3339 UTC [now]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per window with a problem.")
def archive_verify(job: str, frm: str | None, to: str | None, as_json: bool) -> None:
    """Re-read every archived window's file and check it against the ledger: a missing, truncated or
    altered file is reported with its window (exit 1)."""
    settings = _settings()
    with _producer(settings) as producer:
        with _user_errors():
            spec = settings.job(job)
        if spec.kind != "archive":
            raise click.ClickException(f"job {job} is a {spec.kind}, not an archive")
        w = Windows(producer.ledger, job, spec)
        first = w.marks().get("first")
        start, end = _range(w, frm or (iso(first) if first is not None else None), to)
        rows = [r for r in w.rows(start, end) if r.state == "committed"]
    problems = 0
    for row in rows:
        why = check_file(row)
        if not why:
            continue
        problems += 1
        if as_json:
            click.echo(json.dumps({"window": iso(row.start), "end": iso(row.end), "problem": why}))
        else:
            click.echo(f"[{iso(row.start)}, {iso(row.end)}) {why}")
    click.echo(f"{len(rows)} archived windows checked, {problems} with a problem", err=True)
    if problems:
        sys.exit(1)


@main.group()
def retention() -> None:
    """What the buckets' retention will drop, and whether it is archived."""


def expiring(settings: Settings, producer: Any, days: float, now: int) -> list[dict[str, Any]]:
    out = []
    for bname, bucket in sorted(settings.buckets.items()):
        if not bucket.retention:
            continue
        horizon = now - bucket.retention + int(days * 86_400)  # data older than this is gone by then
        for name, job in sorted(settings.jobs.items()):
            if job.kind != "archive" or job.source != bucket.route:
                continue
            w = Windows(producer.ledger, name, job)
            start = floor_window(now - bucket.retention, job.every)
            for row in w.rows(start, floor_window(horizon, job.every)):
                expires = row.end + bucket.retention
                out.append(
                    {
                        "bucket": bname,
                        "job": name,
                        "window": iso(row.start),
                        "end": iso(row.end),
                        "expires": iso(expires),
                        "archived": row.state == "committed",
                        "state": row.state,
                    }
                )
    return out


@retention.command("plan")
@click.option("--days", type=float, default=7, show_default=True, help="Look this many days ahead.")
@click.option("--json", "as_json", is_flag=True)
def retention_plan(days: float, as_json: bool) -> None:
    """For each bucket with a retention whose route an archive job reads: the windows retention drops in
    the next DAYS, and whether each is archived and verified (exit 1 if any is not)."""
    settings = _settings()
    with _producer(settings) as producer:
        rows = expiring(settings, producer, days, int(time.time()))
    for r in rows:
        if as_json:
            click.echo(json.dumps(r))
        else:
            mark = "archived" if r["archived"] else f"NOT ARCHIVED ({r['state']})"
            click.echo(f"{r['bucket']} {r['job']} [{r['window']}, {r['end']}) expires {r['expires']}: {mark}")
    missing = sum(not r["archived"] for r in rows)
    click.echo(f"{len(rows)} windows expire within {days:g} days, {missing} not archived", err=True)
    if missing:
        sys.exit(1)
