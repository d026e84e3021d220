"""Scheduled window processing end to end: real redis-server, two VictoriaMetrics (hot and warm),
real ``tsbatch worker`` and ``tsbatch beat`` processes. Each window must be committed once, and what it
wrote must equal a reference computed here from the raw points."""

from __future__ import annotations

import json
import math
import random
import signal
import statistics
import time
import urllib.request
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from tests.conftest import cli, ledger, wait_for
from tsbatch.localstack import Stack, http_get, vm_export_settled, vm_rows_inserted
from tsbatch.windows import iso

pytestmark = pytest.mark.timeout(600)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
EVERY = 600
AGGREGATES = ["mean", "min", "max", "count", "sum", "first", "last", "stddev", "p50", "p90", "p95", "p99"]
Raw = dict[tuple[str, str, str], list[tuple[int, float]]]  # (host, region, field) -> [(ms, value)]


def write_raw(vm_url: str, *, hosts: int, start: int, seconds: int, step: int, seed: int = 1) -> Raw:
    """Raw cpu points into VictoriaMetrics over the InfluxDB v2 write API; returns what was written.
    Each host reports on its own phase, so windows hold different numbers of points per series."""
    rng = random.Random(seed)
    raw: Raw = defaultdict(list)
    lines = []
    for h in range(hosts):
        host, region = f"h{h:03d}", f"r{h % 3}"
        for t in range(start + h % step, start + seconds, step):
            usage, system = round(rng.uniform(0, 100), 3), float(rng.randint(0, 50))
            lines.append(f"cpu,host={host},region={region} usage={usage},system={system} {t}")
            raw[(host, region, "usage")].append((t * 1000, usage))
            raw[(host, region, "system")].append((t * 1000, system))
    post_lines(vm_url, lines)
    return raw


def post_lines(vm_url: str, lines: list[str]) -> None:
    body = ("\n".join(lines) + "\n").encode()
    req = urllib.request.Request(f"{vm_url}/api/v2/write?bucket=hot&precision=s", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 204
    expected = len(lines) * 2
    wait_for(lambda: vm_rows_inserted(vm_url) >= expected, timeout=60, what="raw points accepted")
    http_get(f"{vm_url}/internal/force_flush")


def reference(raw: Raw, start: int, end: int, every: int) -> dict[tuple[str, str, int], dict[str, float]]:
    """The downsample computed independently: plain Python over the raw points of each window."""
    out: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
    for (host, region, fld), points in raw.items():
        by_window: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for ms, v in points:
            w = (ms // 1000) - (ms // 1000) % every
            if start <= w < end:
                by_window[w].append((ms, v))
        for w, pts in by_window.items():
            pts.sort()
            values = [v for _, v in pts]
            s = sorted(values)
            row = out[(host, region, w)]
            row[f"{fld}_mean"] = statistics.fmean(values)
            row[f"{fld}_min"], row[f"{fld}_max"] = min(values), max(values)
            row[f"{fld}_count"], row[f"{fld}_sum"] = len(values), math.fsum(values)
            row[f"{fld}_first"], row[f"{fld}_last"] = pts[0][1], pts[-1][1]
            if len(values) > 1:
                row[f"{fld}_stddev"] = statistics.stdev(values)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
                pos = q * (len(s) - 1)  # the mean of the two values nearest rank q(n-1)
                row[f"{fld}_{name}"] = (s[math.floor(pos)] + s[math.ceil(pos)]) / 2
    return out


def written(vm_url: str) -> dict[tuple[str, str, int], dict[str, float]]:
    out: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
    for row in vm_export_settled(vm_url, expect_samples=vm_rows_inserted(vm_url)):
        m = row["metric"]
        name = m["__name__"].removeprefix("cpu_")
        for ms, v in zip(row["timestamps"], row["values"], strict=True):
            key = (m["host"], m["region"], ms // 1000)
            assert name not in out[key], f"{key} {name} written twice"
            out[key][name] = v
    return out


def add_job(stack: Stack, name: str, **job: Any) -> None:
    stack.settings.setdefault("jobs", {})[name] = {
        "source": "hot",
        "target": "warm",
        "measurement": "cpu",
        "every": f"{EVERY}s",
        **job,
    }
    stack.write_config()


def test_downsample_equals_reference_for_every_aggregate(make_stack: Any) -> None:
    stack = make_stack(routes=("hot", "warm"))
    raw = write_raw(stack.routes["hot"].url, hosts=12, start=T0, seconds=3 * EVERY, step=7)
    add_job(stack, "cpu_10m", kind="downsample", aggregates=AGGREGATES, start=iso(T0))
    stack.start_worker(concurrency=2)
    r = cli(stack, "backfill", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + 3 * EVERY), "--wait", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["windows"] == summary["committed"] == 3 and summary["dead"] == 0

    got, want = written(stack.routes["warm"].url), reference(raw, T0, T0 + 3 * EVERY, EVERY)
    assert set(got) == set(want)
    for key, fields in want.items():
        assert set(got[key]) == set(fields), key
        for name, value in fields.items():
            assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name)

    rows = [json.loads(line) for line in cli(stack, "windows", "cpu_10m", "--from", iso(T0), "--to",
                                                  iso(T0 + 3 * EVERY), "--json").stdout.splitlines()]
    assert [r["state"] for r in rows] == ["committed"] * 3
    points = sum(len(v) for v in raw.values())
    assert sum(r["points_read"] for r in rows) == points
    assert sum(r["points_written"] for r in rows) == len(want)


def test_second_backfill_and_dry_run_write_nothing(make_stack: Any) -> None:
    stack = make_stack(routes=("hot", "warm"))
    write_raw(stack.routes["hot"].url, hosts=4, start=T0, seconds=2 * EVERY, step=10)
    add_job(stack, "cpu_copy", kind="copy", start=iso(T0))
    stack.start_worker(concurrency=1)
    frm, to = iso(T0), iso(T0 + 2 * EVERY)

    dry = cli(stack, "backfill", "cpu_copy", "--from", frm, "--to", to, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count(": run") == 2 and "api/v1/export" in dry.stdout
    time.sleep(1)
    assert vm_rows_inserted(stack.routes["warm"].url) == 0
    assert ledger(stack).stats().get("commits", 0) == 0

    first = cli(stack, "backfill", "cpu_copy", "--from", frm, "--to", to, "--wait", "--json")
    assert first.returncode == 0, first.stderr
    copied = 4 * (2 * EVERY // 10) * 2  # every raw point, both fields
    wait_for(lambda: vm_rows_inserted(stack.routes["warm"].url) >= copied, timeout=30, what="copied rows")
    assert vm_rows_inserted(stack.routes["warm"].url) == copied
    hot = {(r["metric"]["__name__"], r["metric"]["host"]): r["values"]
           for r in vm_export_settled(stack.routes["hot"].url)}
    warm = {(r["metric"]["__name__"], r["metric"]["host"]): r["values"]
            for r in vm_export_settled(stack.routes["warm"].url, expect_samples=copied)}
    assert warm == hot

    second = cli(stack, "backfill", "cpu_copy", "--from", frm, "--to", to, "--wait", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.splitlines()[-1])["skipped"] == 2
    time.sleep(1)
    assert vm_rows_inserted(stack.routes["warm"].url) == copied
