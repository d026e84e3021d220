"""Prometheus metrics from real workers: exact counts after a run, a real Prometheus summing two workers,
dead children reaped (gauges gone, counters kept, the multiprocess directory bounded), and the dashboard
and alert rules naming only metrics the workers export."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import cli, ledger, wait_for
from tests.promtools import api, names, query, scrape, start_prometheus, total
from tsbatch import datagen
from tsbatch.localstack import Stack, children, free_port

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "tsbatch.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _metrics_env(port: int, **more: Any) -> dict[str, str]:
    env = {"TSBATCH_METRICS__PORT": str(port)}
    env.update({f"TSBATCH_METRICS__{k.upper()}": str(v) for k, v in more.items()})
    return env


def _produce(stack: Stack, src: Path) -> dict[str, Any]:
    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")
    return {"rc": done.returncode, **json.loads(done.stdout.splitlines()[-1])}


def _small_stack(make_stack, **worker: Any) -> Stack:
    return make_stack(producer={"chunk_lines": 500, "taper": False}, worker={"batch_lines": 100, **worker})


def test_a_clean_run_exports_exactly_the_jobs_points_bytes_and_units(make_stack, data_dir: Path) -> None:
    stack = _small_stack(make_stack)
    port = free_port()
    stack.start_worker(concurrency=2, extra_env=_metrics_env(port))
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=200)  # 4,000 points: 8 chunks, 40 batches

    summary = _produce(stack, src)
    m = scrape(port)

    assert summary["rc"] == 0 and (summary["points"], summary["committed"]) == (4_000, 8)
    job = ledger(stack).job(summary["job"])
    assert total(m, "tsbatch_points_written_total", route="default", kind="chunk") == 4_000
    assert total(m, "tsbatch_bytes_written_total", route="default") == job.bytes
    assert total(m, "tsbatch_units_committed_total", kind="chunk") == 8
    assert total(m, "tsbatch_lease_claims_total", outcome="claimed") == 8
    assert total(m, "tsbatch_write_requests_total", outcome="ok") == 40
    assert total(m, "tsbatch_write_requests_total") == 40  # nothing failed, nothing retried
    assert total(m, "tsbatch_write_duration_seconds_count") == 40
    assert total(m, "tsbatch_batch_retries_total") == total(m, "tsbatch_unit_retries_total") == 0
    assert total(m, "tsbatch_writes_in_flight") == 0
    assert {"tsbatch_event_loop_lag_seconds_count", "tsbatch_event_loop_lag_max_seconds"} <= names(m)
    # The ledger's figures, read from Redis by the worker's main process at scrape time.
    assert total(m, "tsbatch_ledger_up") == 1
    assert total(m, "tsbatch_queue_depth", queue="tsbatch.chunks") == 0
    assert total(m, "tsbatch_outbox_units") == 0
    assert total(m, "tsbatch_breaker_state", route="default") == 0
    # Cardinality: no pid, task, job or unit label anywhere.
    labels = {name for _, ls in m for name, _ in ls}
    assert labels <= {"route", "kind", "outcome", "reason", "operation", "queue", "job_name", "le"}, labels


def test_retries_are_counted_exactly_as_the_fault_server_refused(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = _small_stack(make_stack)
    proxy = fault_proxy(stack.routes["default"].url, seed=7)
    stack.point_route("default", proxy.url)
    # Three refusals, one each for three requests: each is retried within its task (Retry-After 1 s).
    proxy.set_faults([{"status": 503, "retry_after": "1", "count": 3}])
    port = free_port()
    stack.start_worker(concurrency=1, extra_env=_metrics_env(port))
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=5, points_per_series=200)  # 1,000 points, 2 chunks, 10 batches

    summary = _produce(stack, src)
    m = scrape(port)

    refused = [r for r in proxy.requests() if r["status"] == 503]
    assert summary["rc"] == 0 and summary["points"] == 1_000 and len(refused) == 3
    retries = total(m, "tsbatch_batch_retries_total") + total(m, "tsbatch_unit_retries_total")
    assert retries == len(refused)
    assert total(m, "tsbatch_write_requests_total", outcome="unavailable") == len(refused)
    assert total(m, "tsbatch_write_requests_total") == len(proxy.requests())
    assert total(m, "tsbatch_route_pauses_total", route="default") == len(refused)
    assert total(m, "tsbatch_points_written_total") == 1_000  # a retried batch is one unit's points


def test_a_real_prometheus_scrapes_two_workers_and_sums_them(
    make_stack, data_dir: Path, tmp_path: Path
) -> None:
    stack = _small_stack(make_stack)
    ports = [free_port(), free_port()]
    for port in ports:
        stack.start_worker(concurrency=1, extra_env=_metrics_env(port))
    prom = start_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{p}" for p in ports], rule_files=[ALERTS])
    try:
        src = data_dir / "p.lp"
        datagen.write(src, "lp", series=40, points_per_series=300)  # 12,000 points, 24 chunks
        summary = _produce(stack, src)
        assert summary["rc"] == 0 and summary["points"] == 12_000
        each = [total(scrape(p), "tsbatch_points_written_total") for p in ports]

        def summed() -> float | None:
            got = query(prom, "sum(tsbatch_points_written_total)")
            return float(str(got[0]["value"][1])) if got else None  # type: ignore[index]

        wait_for(lambda: summed() == 12_000, timeout=30, what="Prometheus' sum to reach the job's points")
        up = query(prom, 'up{job="tsbatch"}')
        assert len(up) == 2 and all(r["value"][1] == "1" for r in up)  # type: ignore[index]
        assert sum(each) == 12_000
        # The alert rules loaded into a real Prometheus, and none fires after a clean run.
        groups = api(prom, "/api/v1/rules")["groups"]  # type: ignore[index]
        assert groups and all(r["health"] == "ok" for g in groups for r in g["rules"])
        assert not [a for a in api(prom, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]  # type: ignore[index]
    finally:
        prom.stop()


def test_the_loop_probe_measures_a_blocked_loop_and_not_the_idle_time_between_tasks() -> None:
    import asyncio

    from prometheus_client import REGISTRY

    from workers.loopprobe import LoopProbe

    def count() -> float:
        return REGISTRY.get_sample_value("tsbatch_event_loop_lag_seconds_count") or 0.0

    def lag_sum() -> float:
        return REGISTRY.get_sample_value("tsbatch_event_loop_lag_seconds_sum") or 0.0

    async def blocks(seconds: float) -> str:
        await asyncio.sleep(0.05)
        time.sleep(seconds)  # a callback that holds the loop
        await asyncio.sleep(0.3)
        return "done"

    probe, loop = LoopProbe(interval_s=0.1, window_s=60), asyncio.new_event_loop()
    try:
        n0, s0 = count(), lag_sum()
        assert loop.run_until_complete(probe.watch(blocks(0.4))) == "done"
        n1, s1 = count(), lag_sum()
        time.sleep(0.5)  # idle: the loop is not running, nothing may count this as lag
        loop.run_until_complete(probe.watch(asyncio.sleep(0.35)))
        n2, s2 = count(), lag_sum()
    finally:
        loop.close()

    assert n1 > n0 and 0.3 <= s1 - s0 <= 0.45  # the 0.4 s block, less the sleep it overlapped
    assert n2 > n1 and s2 - s1 < 0.05
    assert REGISTRY.get_sample_value("tsbatch_event_loop_lag_max_seconds") >= 0.3


def _child_with_write_in_flight(directory: Path) -> int | None:
    for f in directory.glob("gauge_livesum_*.db"):
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(f)):
            if "tsbatch_writes_in_flight" in key and value > 0:
                return int(f.stem.rsplit("_", 1)[1])
    return None


def test_a_sigkilled_childs_gauges_disappear_within_the_reaper_interval_and_its_counters_stay(
    make_stack, fault_proxy, data_dir: Path, tmp_path: Path
) -> None:
    stack = _small_stack(make_stack)
    proxy = fault_proxy(stack.routes["default"].url, seed=7)
    stack.point_route("default", proxy.url)
    proxy.set_faults([{"mode": "hang", "count": 1}])  # one write never answered: in flight until killed
    port, directory, interval = free_port(), tmp_path / "multiproc", 0.5
    worker = stack.start_worker(
        concurrency=2, extra_env=_metrics_env(port, dir=directory, reap_interval_s=interval)
    )
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=1, points_per_series=50)
    producer = subprocess.Popen(
        stack.tsbatch("produce", str(src), "--route", "default"), env=stack.env(), stdout=subprocess.DEVNULL
    )
    try:
        pid = wait_for(lambda: _child_with_write_in_flight(directory), timeout=60, what="a write in flight")
        before = scrape(port)
        assert total(before, "tsbatch_writes_in_flight", route="default") == 1
        claims = total(before, "tsbatch_lease_claims_total")
        assert claims >= 1 and pid in children(worker.proc.pid)

        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: total(scrape(port), "tsbatch_writes_in_flight") == 0, timeout=10, what="the gauge to go"
        )
        gone_after = time.monotonic() - killed
        after = scrape(port)
    finally:
        producer.wait(60)

    assert gone_after <= interval + 1.0, gone_after  # one reaper pass, plus scrape and process exit
    assert total(after, "tsbatch_lease_claims_total") >= claims  # the dead child's counts were kept
    assert not list(directory.glob(f"*_{pid}.db"))
    assert (directory / "counter_aggregate.db").exists()
    assert total(after, "tsbatch_metrics_reaped_processes_total") >= 1


def test_the_multiprocess_directory_stays_bounded_however_many_children_come_and_go(
    make_stack, data_dir: Path, tmp_path: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 100, "taper": False}, worker={"batch_lines": 50})
    port, directory = free_port(), tmp_path / "multiproc"
    stack.start_worker(
        concurrency=2,
        extra_env=_metrics_env(port, dir=directory, reap_interval_s=0.5),
        args=["--max-tasks-per-child", "1"],  # a fresh child for every chunk
    )
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=200)  # 4,000 points, 40 chunks, 40 children

    summary = _produce(stack, src)
    assert summary["rc"] == 0 and summary["committed"] == 40
    m = wait_for(
        lambda: (s := scrape(port)) and total(s, "tsbatch_metrics_reaped_processes_total") >= 38 and s,
        timeout=30,
        what="the reaper to fold the dead children",
    )
    started = time.perf_counter()
    scrape(port)
    scrape_s = time.perf_counter() - started

    # Every child's counts survive in the aggregates; the directory holds the live children's files,
    # the main process's and one aggregate per type: at most 2 + 1 processes x 4 types + 2 aggregates.
    assert total(m, "tsbatch_points_written_total") == 4_000
    assert total(m, "tsbatch_units_committed_total") == 40
    files = sorted(p.name for p in directory.glob("*.db"))
    pids = {re.sub(r"\D", "", n.rsplit("_", 1)[1]) for n in files} - {""}
    assert len(pids) <= 3 and len(files) <= 3 * 4 + 2, files
    assert total(m, "tsbatch_metrics_dir_files") == len(files)
    size = sum(p.stat().st_size for p in directory.glob("*.db"))
    print(f"after 40 children: {len(files)} files, {size} bytes, scrape {scrape_s * 1000:.1f} ms")
    assert scrape_s < 1.0


def _dashboard_exprs() -> list[str]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    return list(walk(json.loads(DASHBOARD.read_text())))


def _alert_exprs() -> list[str]:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    return [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _metric_names(exprs: list[str]) -> set[str]:
    return {n for e in exprs for n in re.findall(r"\btsbatch_[a-z_]+\b", e)}


def test_the_dashboard_and_alerts_name_only_metrics_the_workers_export(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    # A run that makes every kind of figure appear: throttled and retried writes, a refused line, a
    # scheduled job's windows, a dead-lettered unit.
    stack = _small_stack(make_stack, max_retries=0, max_attempts=1)
    stack.settings["jobs"] = {
        "cpu_1m": {
            "kind": "downsample",
            "source": "default",
            "target": "default",
            "measurement": "cpu_usage",
            "every": "1m",
            "aggregates": ["mean"],
        }
    }
    stack.settings["scheduler"] = {"tick_s": 1}
    stack.write_config()
    proxy = fault_proxy(stack.routes["default"].url, seed=7)
    stack.point_route("default", proxy.url)
    proxy.set_faults([{"status": 503, "retry_after": "1", "count": 1}, {"status": 500, "count": 20}])
    port = free_port()
    stack.start_worker(concurrency=1, extra_env=_metrics_env(port))
    stack.start_beat()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=2, points_per_series=100)
    _produce(stack, src)  # its batches exhaust their retries: dead-lettered (max_retries = 0)
    proxy.clear_faults()
    with src.open("a") as f:
        f.write("not line protocol\n")
    _produce(stack, src)  # now written, but for the refused line
    exported = wait_for(
        lambda: (s := scrape(port)) and "tsbatch_window_lag_seconds" in names(s) and names(s),
        timeout=60,
        what="a scheduled job's watermark",
    )

    dashboard, alerts = _metric_names(_dashboard_exprs()), _metric_names(_alert_exprs())
    assert dashboard and alerts
    assert dashboard <= exported, sorted(dashboard - exported)
    assert alerts <= exported, sorted(alerts - exported)
    # The panels the issue asks for are there.
    for wanted in (
        "tsbatch_points_written_total",
        "tsbatch_write_duration_seconds_bucket",
        "tsbatch_batch_retries_total",
        "tsbatch_dead_letters_total",
        "tsbatch_breaker_state",
        "tsbatch_event_loop_lag_max_seconds",
        "tsbatch_queue_depth",
        "tsbatch_window_lag_seconds",
    ):
        assert wanted in dashboard, wanted


def test_alert_rules_pass_promtool_and_never_average_a_counter() -> None:
    import shutil

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run `make setup` (it installs the Debian package prometheus)"
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exprs = _alert_exprs()
    assert exprs
    for expr in exprs:
        # Every counter inside rate() or increase(), so nothing averages a counter (or reads its raw value).
        for counter in re.findall(r"\b(tsbatch_[a-z_]+_total)\b", expr):
            assert re.search(rf"\b(rate|increase)\(\s*{counter}\b", expr), f"{counter} without rate(): {expr}"
        assert "avg_over_time" not in expr
