"""Redeliveries of every kind commit a chunk once: duplicates, killed workers, expired visibility."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from celery import Celery

from config import load_settings
from producers import Producer, new_job_id
from tests.conftest import cli, expected, landed, ledger, wait_for
from tsbatch import datagen
from tsbatch.descriptor import ChunkDescriptor
from tsbatch.envelope import TASK_NAME
from tsbatch.localstack import Process, Stack, children, vm_rows_inserted

# Slow writes stretch a chunk over seconds so that deliveries overlap and kills land mid-chunk.
SLOW = [{"mode": "slow", "delay_s": 0.4}]
FAST_LEASES = {"lease_ttl_s": 3, "heartbeat_s": 0.5, "batch_lines": 300, "writes_in_flight": 1}


def _producer(stack: Stack) -> Producer:
    os.environ["TSBATCH_CONFIG"] = str(stack.config)
    try:
        return Producer(load_settings())
    finally:
        del os.environ["TSBATCH_CONFIG"]


def _descriptors(stack: Stack, src: Path) -> list[ChunkDescriptor]:
    with _producer(stack) as producer:
        return list(producer.plan(src, job_id=new_job_id(), route="default"))


def _send(stack: Stack, desc: ChunkDescriptor, copies: int = 1) -> None:
    app = Celery(broker=stack.redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    for _ in range(copies):
        app.send_task(TASK_NAME, args=[desc.to_message()], queue="tsbatch.chunks")
    app.close()


def _slow_route(stack: Stack, fault_proxy) -> object:
    proxy = fault_proxy(stack.routes["default"].url)
    proxy.set_faults(SLOW)
    stack.point_route("default", proxy.url)
    return proxy


def test_the_same_descriptor_delivered_twice_at_once_is_committed_and_written_once(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 3_000}, worker=FAST_LEASES)
    proxy = _slow_route(stack, fault_proxy)
    stack.start_worker(name="a")
    stack.start_worker(name="b")
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=30, points_per_series=100)
    [desc] = _descriptors(stack, src)

    _send(stack, desc, copies=2)

    book = ledger(stack)
    wait_for(lambda: book.unit(desc.key).get("state") == "committed", what="the commit")
    # The copies overlapped: the second met the first one's live lease and was acked (had the holder
    # died, its lease would lapse and the sweeper would publish the chunk again).
    wait_for(lambda: book.stats().get("busy", 0) >= 1, what="the second copy to meet the lease")
    stats = book.stats()
    assert stats["commits"] == 1
    assert sum(r["line_count"] for r in proxy.requests()) == 3_000  # every line sent once
    assert vm_rows_inserted(stack.routes["default"].url) == 6_000
    assert landed(stack.routes["default"].url) == expected(30, 100)


def _busy_child(worker: Process) -> int:
    [child] = children(worker.proc.pid)
    return child


def test_a_worker_killed_in_the_middle_of_a_chunk_loses_nothing_and_commits_once(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 3_000}, worker=FAST_LEASES)
    proxy = _slow_route(stack, fault_proxy)
    worker = stack.start_worker(name="victim")
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=30, points_per_series=200)  # two chunks
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]

    wait_for(lambda: len(proxy.requests()) >= 3, what="the first writes")
    os.kill(_busy_child(worker), signal.SIGKILL)

    book = ledger(stack)
    status = wait_for(lambda: (s := book.job(job)).done and s, timeout=180, what="the job")
    assert (status.committed, status.dead, status.points) == (2, 0, 6_000)
    assert book.stats()["commits"] == 2
    attempts = [int(book.unit(d.key)["attempts"]) for d in _descriptors(stack, src)]
    assert max(attempts) >= 2  # the killed chunk was claimed again
    got = landed(stack.routes["default"].url)
    # VictoriaMetrics keeps rewritten samples (InfluxDB would overwrite them): compare distinct ones.
    assert {k: sorted(set(v)) for k, v in got.items()} == expected(30, 200)


def test_a_chunk_that_outlives_the_visibility_timeout_is_not_committed_twice(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    # retry_max_s, retry_after_max_s: a countdown may not outlast the visibility timeout (the settings
    # refuse it).
    settings = {
        **FAST_LEASES,
        "visibility_timeout_s": 2,
        "unacked_restore_interval_s": 1,
        "retry_max_s": 2,
        "retry_after_max_s": 1,
    }
    stack = make_stack(producer={"chunk_lines": 3_000}, worker=settings)
    proxy = _slow_route(stack, fault_proxy)
    stack.start_worker(name="a")
    stack.start_worker(name="b")
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=30, points_per_series=100)  # one chunk, ~4 s of slow writes

    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    assert done.returncode == 0, done.stderr
    book = ledger(stack)
    # The redelivered copy arrived while the first was still writing: it met the lease and was acked.
    wait_for(lambda: book.stats().get("busy", 0) >= 1, what="the redelivered copy to meet the lease")
    stats = book.stats()
    assert stats["commits"] == 1
    assert sum(r["line_count"] for r in proxy.requests()) == 3_000
    assert landed(stack.routes["default"].url) == expected(30, 100)


def test_descriptors_naming_bad_paths_routes_or_versions_are_dead_lettered_and_never_read(
    make_stack, data_dir: Path, tmp_path: Path
) -> None:
    stack = make_stack()
    stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=2, points_per_series=2)
    outside = tmp_path / "secret.lp"
    outside.write_text("cpu,host=leak usage=1.0 1704067200000000000\n")
    (data_dir / "link.lp").symlink_to(outside)
    [good] = _descriptors(stack, src)

    def variant(**changes: object) -> ChunkDescriptor:
        return good.model_copy(update=changes).with_key()

    bad = {
        "traversal": variant(path=str(data_dir / ".." / "secret.lp")),
        "absolute": variant(path=str(outside)),
        "symlink": variant(path=str(data_dir / "link.lp")),
        "route": variant(route="nowhere"),
        "version": good.model_copy(update={"schema_version": 99}),
        "tampered": good.model_copy(update={"start": 1}),
    }
    for desc in bad.values():
        _send(stack, desc)

    book = ledger(stack)
    entries = wait_for(
        lambda: len(got := list(book.dead_letters(job_id=good.job_id))) == 6 and got, what="DLQ"
    )
    reasons = sorted(e.get("reason") for e in entries)
    expected_reasons = ["outside_roots"] * 2 + ["symlink", "unknown_route"] + ["bad_descriptor"] * 2
    assert reasons == sorted(expected_reasons)
    messages = " | ".join(e.get("message") for e in entries)
    assert (
        "schema_version 99" in messages and "key does not match" in messages and "routes.nowhere" in messages
    )
    assert vm_rows_inserted(stack.routes["default"].url) == 0  # nothing was read or written


def test_celery_dash_a_workers_worker_runs_the_pipeline(make_stack, data_dir: Path) -> None:
    stack = make_stack()
    log = stack.workdir / "celery.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "-c",
                "1",
                "-l",
                "info",
                "-Q",
                "tsbatch.chunks",
            ],
            env=stack.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "ready." in log.read_text(), what="celery worker")
        src = data_dir / "p.lp"
        datagen.write(src, "lp", series=5, points_per_series=10)
        done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["points"] == 50
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
