"""Nothing stranded: an interrupted producer, a lost message or a dead node is repaired from the ledger
(the outbox), by running the same command again or by the workers' sweeper alone."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from config import load_settings
from config.constants import LEASE_GRACE_S
from tests.conftest import cli, expected, landed, ledger, wait_for
from tsbatch import datagen
from tsbatch.localstack import Stack, children

QUEUE = "tsbatch.chunks"
# 40 chunks of 100 lines; the producer checks the queue after 16 sends and then waits for room.
SMALL_CHUNKS = {"chunk_lines": 100, "taper": False, "max_queue_depth": 1}
FAST_SWEEP = {"republish_after_s": 1.0, "sweep_interval_s": 0.5}


def _write(data_dir: Path, series: int = 20, points: int = 100) -> Path:
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=series, points_per_series=points)
    return src


def _all_done(stack: Stack) -> None:
    """No unit left planned, nothing left in the outbox."""
    book = ledger(stack)
    states = {book.redis.hget(k, "state") for k in book.redis.scan_iter("tsbatch:unit:*")}
    assert states == {"committed"}
    assert book.redis.zcard(book.outbox_key) == 0


def test_produce_interrupted_by_ctrl_c_or_sigkill_anywhere_then_run_again_lands_every_point_once(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack(producer=SMALL_CHUNKS)
    src = _write(data_dir)  # 2,000 lines: 20 chunks
    interrupted = []
    for seed, sig in enumerate([signal.SIGINT, signal.SIGKILL, signal.SIGINT, signal.SIGKILL]):
        proc = subprocess.Popen(
            stack.tsbatch("produce", str(src), "--route", "default"),
            env=stack.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(random.Random(seed).uniform(0.2, 1.5))  # planning, publishing or waiting for room
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        if out.strip():
            interrupted.append((sig, out.split()[0]))

    sigint_jobs = [job for sig, job in interrupted if sig == signal.SIGINT]
    if sigint_jobs:
        status = cli(stack, "status", sigint_jobs[-1])
        assert "planning interrupted at file" in status.stderr, status.stderr
    stack.start_worker(name="a")
    again = cli(stack, "produce", str(src), "--route", "default", "--wait", "--timeout", "120")

    assert again.returncode == 0, again.stderr
    assert ledger(stack).stats()["commits"] == 20
    _all_done(stack)
    assert landed(stack.routes["default"].url) == expected(20, 100)


def test_the_sweeper_alone_publishes_units_whose_messages_were_lost(make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 500, "taper": False}, ledger=FAST_SWEEP)
    src = _write(data_dir)
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    book = ledger(stack)
    assert book.redis.delete(QUEUE) == 1  # every message lost; the ledger still knows the units

    stack.start_worker(name="a")

    status = wait_for(lambda: (s := book.job(job)).done and s, timeout=60, what="the sweeper's recovery")
    assert (status.committed, status.dead) == (4, 0)
    assert book.stats()["republished"] >= 4
    _all_done(stack)
    assert landed(stack.routes["default"].url) == expected(20, 100)


@pytest.mark.timeout(400)
def test_a_whole_worker_killed_mid_chunk_with_default_settings_is_recovered_within_a_lease_and_a_sweep(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    # Every delivery and ledger setting at its default: lease 60 s, sweep every 5 s, the broker's
    # visibility timeout an hour. Only the lease and the sweeper can bring the chunk back this soon.
    stack = make_stack(producer={"chunk_lines": 2_000}, worker={"batch_lines": 200, "writes_in_flight": 1})
    proxy = fault_proxy(stack.routes["default"].url)
    proxy.set_faults([{"mode": "slow", "delay_s": 0.4}])
    stack.point_route("default", proxy.url)
    victim = stack.start_worker(name="victim")
    src = _write(data_dir)  # one chunk of ten slow writes
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    wait_for(lambda: len(proxy.requests()) >= 2, what="the first writes")

    for pid in [*children(victim.proc.pid), victim.proc.pid]:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    stack.start_worker(name="rescuer")

    book = ledger(stack)
    status = wait_for(lambda: (s := book.job(job)).done and s, timeout=150, what="the recovery")
    recovered_s = time.monotonic() - killed
    settings = load_settings()
    bound = settings.worker.lease_ttl_s + LEASE_GRACE_S + settings.ledger.sweep_interval_s
    assert recovered_s < bound + 4 + 5  # + the chunk's own ten 0.4 s writes, + slack
    assert (status.committed, status.dead) == (1, 0) and book.stats()["commits"] == 1
    _all_done(stack)
    got = landed(stack.routes["default"].url)
    # VictoriaMetrics keeps rewritten samples (InfluxDB would overwrite them): compare distinct ones.
    assert {k: sorted(set(v)) for k, v in got.items()} == expected(20, 100)
    print(f"whole worker killed: committed {recovered_s:.1f} s after the kill (bound {bound:.0f} s + writes)")


def test_a_rerun_lists_dead_lettered_chunks_fails_and_retry_dead_does_them_once(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 1_000, "taper": False})
    proxy = fault_proxy(stack.routes["default"].url, token="the-right-token")  # the route's is wrong
    stack.point_route("default", proxy.url)
    stack.start_worker(name="a")
    src = _write(data_dir)

    first = cli(stack, "produce", str(src), "--route", "default", "--wait")
    proxy.set_token(None)  # the route is fixed ...
    assert cli(stack, "routes", "clear", "default").returncode == 0  # ... and its breaker cleared
    rerun = cli(stack, "produce", str(src), "--route", "default", "--wait")
    retried = cli(stack, "produce", str(src), "--route", "default", "--wait", "--retry-dead")
    after = cli(stack, "produce", str(src), "--route", "default", "--wait")

    assert first.returncode == 1
    assert rerun.returncode == 1 and "2 chunk(s) were dead-lettered by an earlier run" in rerun.stderr
    assert f"dead: {src}:1" in rerun.stderr and f"dead: {src}:1001" in rerun.stderr
    assert retried.returncode == 0, retried.stderr
    assert after.returncode == 0 and "skipped 2 already done" in after.stderr
    assert ledger(stack).stats()["commits"] == 2
    assert landed(stack.routes["default"].url) == expected(20, 100)


def test_wait_with_a_timeout_gives_up_with_its_own_exit_status(make_stack, data_dir: Path) -> None:
    stack = make_stack()
    src = _write(data_dir, series=1, points=10)

    waited = cli(stack, "produce", str(src), "--route", "default", "--wait", "--timeout", "1")

    assert (
        waited.returncode == 3 and "timed out" in waited.stderr and "1 chunks still pending" in waited.stderr
    )


def test_importing_the_producer_loads_none_of_the_workers_write_stack() -> None:
    code = (
        "import sys, producers, tsbatch.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'workers', 'influxdb_client', 'aiohttp', 'isal', 're2'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_redis_refusing_writes_is_reported_and_work_resumes_once_it_has_memory(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    worker = {"batch_lines": 100, "writes_in_flight": 1}
    stack = make_stack(producer={"chunk_lines": 500, "taper": False}, worker=worker, ledger=FAST_SWEEP)
    proxy = fault_proxy(stack.routes["default"].url)
    proxy.set_faults([{"mode": "slow", "delay_s": 0.3}])  # a chunk: five writes, 1.5 s
    stack.point_route("default", proxy.url)
    worker_a = stack.start_worker(name="a")
    src = _write(data_dir)
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    wait_for(lambda: proxy.requests(), what="the first chunk's writes")

    admin = redis.Redis.from_url(stack.redis_url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every write refused: OOM, as under noeviction at the limit
    rows_at_oom = sum(r["line_count"] for r in proxy.requests())
    wait_for(lambda: "Redis refused a ledger operation" in worker_a.log.read_text(), what="the refusal")
    time.sleep(4)
    rows_while_refused = sum(r["line_count"] for r in proxy.requests()) - rows_at_oom
    admin.config_set("maxmemory", 0)

    book = ledger(stack)
    status = wait_for(lambda: (s := book.job(job)).done and s, timeout=120, what="the job after OOM")
    # At most the chunk that was running finishes its writes; nothing is claimed, so nothing is
    # rewritten, while Redis refuses.
    assert rows_while_refused <= 500
    assert (status.committed, status.dead) == (4, 0) and book.stats()["commits"] == 4
    _all_done(stack)
    got = landed(stack.routes["default"].url)
    assert {k: sorted(set(v)) for k, v in got.items()} == expected(20, 100)
