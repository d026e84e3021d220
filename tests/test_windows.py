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

    rows = [
        json.loads(line)
        for line in cli(
            stack, "windows", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + 3 * EVERY), "--json"
        ).stdout.splitlines()
    ]
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
    hot = {
        (r["metric"]["__name__"], r["metric"]["host"]): r["values"]
        for r in vm_export_settled(stack.routes["hot"].url, expect_samples=copied)
    }
    warm = {
        (r["metric"]["__name__"], r["metric"]["host"]): r["values"]
        for r in vm_export_settled(stack.routes["warm"].url, expect_samples=copied)
    }
    assert warm == hot

    second = cli(stack, "backfill", "cpu_copy", "--from", frm, "--to", to, "--wait", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.splitlines()[-1])["skipped"] == 2
    time.sleep(1)
    assert vm_rows_inserted(stack.routes["warm"].url) == copied


def _window_rows(stack: Stack, job: str, start: int, end: int) -> list[dict[str, Any]]:
    r = cli(stack, "windows", job, "--from", iso(start), "--to", iso(end), "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_a_scheduler_down_for_three_hours_catches_up_every_window_once_with_two_beats(
    make_stack: Any,
) -> None:
    every = 300
    now = int(time.time())
    first = now - now % every - 36 * every  # the scheduler was down for three hours
    stack = make_stack(routes=("hot", "warm"))
    raw = write_raw(stack.routes["hot"].url, hosts=6, start=first, seconds=36 * every, step=30)
    add_job(
        stack,
        "cpu_5m",
        kind="downsample",
        aggregates=["mean", "count"],
        every="5m",
        offset="0s",
        start=iso(first),
    )
    stack.settings["scheduler"] = {"tick_s": 1, "max_windows_per_tick": 10}
    stack.write_config()
    stack.start_worker(concurrency=2)
    stack.start_beat()
    stack.start_beat()  # two beats at once: every tick twice, no lock

    book = ledger(stack)

    def caught_up() -> bool:
        marks = book.redis.hgetall("tsbatch:window:cpu_5m")
        due = int(time.time()) // every * every
        return bool(marks) and int(marks["watermark"]) >= due and marks["watermark"] == marks["planned_to"]

    wait_for(caught_up, timeout=240, what="the watermark to reach the last due window")
    for beat in stack.beats:
        beat.stop()
    marks = {k: int(v) for k, v in book.redis.hgetall("tsbatch:window:cpu_5m").items() if k != "def"}
    assert marks["first"] == first
    ticks = [b.log.read_text().count("Scheduler: Sending due task") for b in stack.beats]
    assert min(ticks) >= 2  # both beats ticked, several times each: 36 windows at 10 a tick

    rows = _window_rows(stack, "cpu_5m", first, marks["watermark"])
    n = len(rows)
    assert n >= 36
    assert all(r["state"] == "committed" and r["generation"] == 0 and r["attempts"] == 1 for r in rows)
    assert book.stats()["commits"] == n  # nothing else ran, and no window twice
    sched = book.job("sched-cpu_5m")
    assert (sched.units, sched.committed, sched.dead) == (n, n, 0)
    # Each window wrote one point per host with usage/system x mean/count; a window run twice would
    # have written its rows twice.
    written_rows = sum(r["points_written"] for r in rows)
    wait_for(lambda: vm_rows_inserted(stack.routes["warm"].url) >= written_rows * 4, timeout=30, what="rows")
    assert vm_rows_inserted(stack.routes["warm"].url) == written_rows * 4
    got, want = written(stack.routes["warm"].url), reference(raw, first, first + 36 * every, every)
    for key, fields in want.items():
        for name in ("usage_mean", "system_count"):
            assert got[key][name] == pytest.approx(fields[name], rel=1e-9), (key, name)


def test_a_worker_killed_in_the_middle_of_a_window_commits_it_once_with_correct_output(
    make_stack: Any, fault_proxy: Any
) -> None:
    stack = make_stack(
        routes=("hot", "warm"),
        worker={"lease_ttl_s": 3, "heartbeat_s": 0.5, "batch_lines": 100, "writes_in_flight": 1},
        ledger={"sweep_interval_s": 1},
    )
    write_raw(stack.routes["hot"].url, hosts=4, start=T0, seconds=EVERY, step=10)  # 480 points
    proxy = fault_proxy(stack.routes["warm"].url)
    proxy.set_faults([{"mode": "slow", "delay_s": 0.4}])
    stack.point_route("warm", proxy.url)
    add_job(stack, "cpu_copy", kind="copy", start=iso(T0))
    worker = stack.start_worker(concurrency=1, name="victim")
    r = cli(stack, "backfill", "cpu_copy", "--from", iso(T0), "--to", iso(T0 + EVERY))
    assert r.returncode == 0, r.stderr

    wait_for(lambda: len(proxy.requests()) >= 2, what="the first writes")
    from tsbatch.localstack import children

    [child] = children(worker.proc.pid)
    os_kill(child)

    book = ledger(stack)
    rows = wait_for(
        lambda: (rs := _window_rows(stack, "cpu_copy", T0, T0 + EVERY))[0]["state"] == "committed" and rs,
        timeout=180,
        what="the window's commit",
    )
    assert rows[0]["attempts"] >= 2  # claimed again after the kill
    assert book.stats()["commits"] == 1
    hot = {
        (r["metric"]["__name__"], r["metric"]["host"]): sorted(zip(r["timestamps"], r["values"], strict=True))
        for r in vm_export_settled(stack.routes["hot"].url, expect_samples=480)
    }
    warm = vm_export_settled(stack.routes["warm"].url, expect_samples=480)
    # VictoriaMetrics keeps rewritten samples (InfluxDB overwrites them): compare distinct ones.
    got: dict[tuple[str, str], set[tuple[int, float]]] = defaultdict(set)
    for row in warm:
        got[(row["metric"]["__name__"], row["metric"]["host"])] |= set(
            zip(row["timestamps"], row["values"], strict=True)
        )
    assert {k: sorted(v) for k, v in got.items()} == hot


def os_kill(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


def test_late_points_in_a_committed_window_are_found_by_verify_and_repaired(make_stack: Any) -> None:
    stack = make_stack(routes=("hot", "warm"))
    hot = stack.routes["hot"].url
    raw = write_raw(hot, hosts=3, start=T0, seconds=2 * EVERY, step=20)
    add_job(stack, "cpu_10m", kind="downsample", aggregates=["mean", "count", "max"], start=iso(T0))
    stack.start_worker(concurrency=1)
    frm, to = iso(T0), iso(T0 + 2 * EVERY)
    assert cli(stack, "backfill", "cpu_10m", "--from", frm, "--to", to, "--wait").returncode == 0
    clean = cli(stack, "windows", "verify", "cpu_10m", "--from", frm, "--to", to)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 committed windows checked, 0 changed" in clean.stderr

    # Late points arrive in the second window after its commit (after the offset had passed).
    late_t = T0 + EVERY + 301
    post_lines(hot, [f"cpu,host=h000,region=r0 usage=1000,system=1 {late_t}"])
    wait_for(lambda: vm_rows_inserted(hot) >= sum(len(v) for v in raw.values()) + 2, what="late point")
    raw[("h000", "r0", "usage")].append((late_t * 1000, 1000.0))
    raw[("h000", "r0", "system")].append((late_t * 1000, 1.0))

    found = cli(stack, "windows", "verify", "cpu_10m", "--from", frm, "--to", to, "--json")
    assert found.returncode == 1, found.stdout + found.stderr
    [repair] = [json.loads(line) for line in found.stdout.splitlines()]
    assert repair["window"] == iso(T0 + EVERY) and repair["generation"] == 1

    rows = wait_for(
        lambda: (rs := _window_rows(stack, "cpu_10m", T0, T0 + 2 * EVERY))[1]["state"] == "committed" and rs,
        timeout=120,
        what="the repaired window",
    )
    assert [r["generation"] for r in rows] == [0, 1]
    want = reference(raw, T0, T0 + 2 * EVERY, EVERY)[("h000", "r0", T0 + EVERY)]
    assert want["usage_max"] == 1000.0
    values = defaultdict(set)
    for row in vm_export_settled(
        stack.routes["warm"].url, expect_samples=vm_rows_inserted(stack.routes["warm"].url)
    ):
        if row["metric"]["host"] == "h000":
            for ms, v in zip(row["timestamps"], row["values"], strict=True):
                if ms == (T0 + EVERY) * 1000:
                    values[row["metric"]["__name__"]].add(v)
    assert want["usage_max"] in values["cpu_usage_max"] and want["usage_count"] in values["cpu_usage_count"]
    again = cli(stack, "windows", "verify", "cpu_10m", "--from", frm, "--to", to)
    assert again.returncode == 0, again.stdout + again.stderr


def test_recheck_repairs_late_data_on_its_own_once(make_stack: Any) -> None:
    every = 300
    now = int(time.time())
    first = now - now % every - 4 * every
    stack = make_stack(routes=("hot", "warm"))
    hot = stack.routes["hot"].url
    raw = write_raw(hot, hosts=2, start=first, seconds=4 * every, step=30)
    add_job(
        stack,
        "cpu_5m",
        kind="downsample",
        aggregates=["count"],
        every="5m",
        offset="0s",
        start=iso(first),
        recheck="6h",
        recheck_interval="2s",
    )
    stack.settings["scheduler"] = {"tick_s": 1}
    stack.write_config()
    stack.start_worker(concurrency=2)
    stack.start_beat()
    stack.start_beat()
    wait_for(
        lambda: all(
            r["state"] == "committed" for r in _window_rows(stack, "cpu_5m", first, first + 4 * every)
        ),
        timeout=120,
        what="the first four windows",
    )

    late = first + every + 7
    post_lines(hot, [f"cpu,host=h000,region=r0 usage=1,system=1 {late}"])
    assert vm_rows_inserted(hot) == sum(len(v) for v in raw.values()) + 2

    def repaired() -> list[dict[str, Any]] | None:
        rows = _window_rows(stack, "cpu_5m", first, first + 4 * every)
        return rows if rows[1]["generation"] == 1 and rows[1]["state"] == "committed" else None

    rows = wait_for(repaired, timeout=120, what="the late window re-run by the recheck")
    time.sleep(5)  # more ticks and rechecks (two beats): the repaired window is not re-run again
    again = _window_rows(stack, "cpu_5m", first, first + 4 * every)
    assert [r["generation"] for r in again] == [0, 1, 0, 0]
    # Both windows held the same points (20 per host and field) until the late point (2 fields) came.
    assert again[1]["points_read"] == rows[1]["points_read"] == again[0]["points_read"] + 2
