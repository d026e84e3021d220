"""The audit trail: one record per committed unit, exported as JSON Lines, and re-derived from the
sources by `audit verify` (real redis-server, VictoriaMetrics and workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli
from tests.test_archive import add_archive
from tests.test_windows import EVERY, T0, write_raw
from tsbatch import datagen
from tsbatch.windows import iso

pytestmark = pytest.mark.timeout(600)


def test_audit_records_every_commit_once_and_verify_finds_a_changed_source_and_a_lost_archive(
    make_stack: Any, data_dir: Path, tmp_path: Path
) -> None:
    stack = make_stack(routes=("hot",), producer={"chunk_lines": 1_000, "taper": False})
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=10, points_per_series=300)  # 3,000 lines: 3 chunks
    write_raw(stack.routes["hot"].url, hosts=3, start=T0, seconds=2 * EVERY, step=10)
    add_archive(stack, f"file://{tmp_path / 'archive'}")
    stack.start_worker(concurrency=2)
    loaded = cli(stack, "produce", str(src), "--route", "hot", "--wait", "--json")
    assert loaded.returncode == 0, loaded.stderr
    job = json.loads(loaded.stdout.splitlines()[-1])["job"]
    archived = cli(stack, "backfill", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 2 * EVERY), "--wait")
    assert archived.returncode == 0, archived.stderr
    # Produced again: nothing is written, so nothing new is audited.
    assert cli(stack, "produce", str(src), "--route", "hot", "--wait").returncode == 0

    exported = cli(stack, "audit", "export")
    assert exported.returncode == 0, exported.stderr
    entries = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(entries) == 3 + 2 and len({e["key"] for e in entries}) == 5
    chunks = [e for e in entries if e["descriptor"].get("unit") != "window"]
    assert sum(e["record"]["points"] for e in chunks) == 3_000
    assert all(
        e["record"]["sha256"] and e["record"]["worker"] and e["record"]["attempts"] == 1 for e in entries
    )
    assert [e["key"] for e in chunks] == [
        json.loads(x)["key"] for x in cli(stack, "audit", "export", "--job", job).stdout.splitlines()
    ]
    trail = tmp_path / "audit.jsonl"
    trail.write_text(exported.stdout)
    ok = cli(stack, "audit", "verify", str(trail))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 audit records checked, 0 no longer hold" in ok.stderr

    # A byte of the source changed in place (same size), and an archive file lost.
    data = bytearray(src.read_bytes())
    at = data.index(b"usage=") + len("usage=")
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    src.write_bytes(bytes(data))
    next((tmp_path / "archive").rglob("*.parquet")).unlink()
    bad = cli(stack, "audit", "verify", str(trail), "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    problems = [json.loads(line)["problem"] for line in bad.stdout.splitlines()]
    assert len(problems) == 2
    assert any(p.startswith("source changed") and str(src) in p for p in problems)
    assert any(p.startswith("missing:") for p in problems)
