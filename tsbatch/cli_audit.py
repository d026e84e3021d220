"""``tsbatch audit export | verify``: the record of every committed unit, and a check that it still holds.

tsbatch audit export --job JOB > audit.jsonl     # one JSON object per committed unit
tsbatch audit verify audit.jsonl                 # re-derive each from its source; exit 1 on a mismatch
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tsbatch.cli import _producer, _settings, _user_errors, main
from tsbatch.windows import parse_time


@main.group()
def audit() -> None:
    """The audit trail: one record per committed unit (descriptor, what was written, by whom, when),
    kept for ledger.retention_days."""


@audit.command("export")
@click.option("--job", help="Only units of this job.")
@click.option("--from", "frm", help="Committed at or after (RFC 3339 UTC).")
@click.option("--to", help="Committed before (RFC 3339 UTC).")
def audit_export(job: str | None, frm: str | None, to: str | None) -> None:
    """Every audit record as one JSON object per line (redirect to a file: audit.jsonl)."""
    with _user_errors():
        start = parse_time(frm) * 1000 if frm else None
        end = parse_time(to) * 1000 - 1 if to else None
    with _producer() as producer:
        n = 0
        for entry in producer.ledger.audit(start_ms=start, end_ms=end):
            if job and job not in entry["jobs"]:
                continue
            click.echo(json.dumps(entry, sort_keys=True))
            n += 1
    click.echo(f"{n} audit records", err=True)


@audit.command("verify")
@click.argument("file", type=click.File("r"))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record that no longer holds.")
def audit_verify(file: Any, as_json: bool) -> None:
    """Re-read the sources of every record in FILE (from `audit export`) and recompute what was written:
    a source changed after it was written, a missing or altered archive file, a window whose source
    changed. Each mismatch is reported; exit 1 if any."""
    settings = _settings()
    from workers.audit import check
    from workers.runtime import Runtime

    rt = Runtime(settings)
    problems = checked = 0
    try:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as e:
                raise click.ClickException(f"{file.name}:{number}: not a JSON object: {e}") from None
            checked += 1
            why = rt.run(check(rt, entry))
            if not why:
                continue
            problems += 1
            if as_json:
                click.echo(json.dumps({"line": number, "key": entry.get("key"), "problem": why}))
            else:
                click.echo(f"{file.name}:{number}: unit {str(entry.get('key'))[:12]}: {why}")
    finally:
        rt.close()
    click.echo(f"{checked} audit records checked, {problems} no longer hold", err=True)
    if problems:
        sys.exit(1)
