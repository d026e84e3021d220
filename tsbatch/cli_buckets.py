"""``tsbatch buckets plan | apply``: retention as code, from the ``[buckets.NAME]`` settings.

tsbatch buckets plan            # what differs between the settings and each server; changes nothing
tsbatch buckets apply           # create or update what differs, re-read to confirm; idempotent
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import click

from producers.buckets import BucketPlan, Reconciler, describe_changes
from tsbatch.cli import _printable, _settings, main


@main.group()
def buckets() -> None:
    """Buckets declared as code ([buckets.NAME]: route, retention, shard_group, description).

    The route names the server, the org and the bucket, and gives the token (never printed). Needs no
    Redis: it talks to each InfluxDB's orgs and buckets API only."""


def _reconciler() -> Reconciler:
    settings = _settings()
    if not settings.buckets:
        click.echo("no buckets declared ([buckets.NAME] in the settings)", err=True)
        sys.exit(0)
    return Reconciler(settings)


def _line(plan: BucketPlan, *, applied: bool) -> str:
    where = f'bucket "{plan.bucket}" in org {plan.org} at {plan.url}'
    if plan.outcome == "failed":
        attempted = plan.action if plan.action != "error" else "lookup"
        return f"{plan.name}: {attempted} failed: {plan.message}"
    if plan.action == "skipped":
        return f"{plan.name}: skipped: {plan.message}"
    if plan.action == "same":
        return f"{plan.name}: {'unchanged' if applied else 'same'}: {where} is as declared"
    done = {"create": "created", "update": "updated"}[plan.action]
    verb = done if applied else f"would {plan.action}"
    return f"{plan.name}: {verb} {where}: {describe_changes(plan.changes)}"


def _report(plans: list[BucketPlan], *, applied: bool, as_json: bool) -> None:
    counts: Counter[str] = Counter()
    for plan in plans:
        counts[plan.outcome if applied or plan.outcome == "failed" else plan.action] += 1
        click.echo(json.dumps(plan.to_json()) if as_json else _printable(_line(plan, applied=applied)))
    if applied:
        changed = counts["created"] + counts["updated"]
        summary = (
            f"{counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged, "
            f"{counts['skipped']} skipped, {counts['failed']} failed"
        )
        if not changed and not counts["failed"]:
            summary = f"nothing to change: every bucket is as declared ({summary})"
    else:
        summary = (
            f"{counts['create']} to create, {counts['update']} to update, {counts['same']} as declared, "
            f"{counts['skipped']} skipped, {counts['failed']} failed"
        )
    click.echo(summary, err=True)
    if counts["failed"]:
        sys.exit(1)


@buckets.command("plan")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bucket.")
def buckets_plan(as_json: bool) -> None:
    """Show, per declared bucket, what apply would do: create, update (which fields), or nothing.

    Exit 1 when a server could not be asked (unreachable, token refused, no such org)."""
    reconciler = _reconciler()
    _report(reconciler.plan(), applied=False, as_json=as_json)


@buckets.command("apply")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bucket.")
def buckets_apply(as_json: bool) -> None:
    """Create missing buckets and update those that differ, then re-read each to confirm.

    Running it again changes nothing and says so. A bucket on a victoriametrics route is skipped
    (it has no buckets); a bucket that fails does not stop the others; exit 1 if any failed."""
    reconciler = _reconciler()
    _report(reconciler.apply(), applied=True, as_json=as_json)
