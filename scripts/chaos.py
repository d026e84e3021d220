"""``make chaos``: the failure scenarios of issues #3 and #8, measured, and docs/RELIABILITY.md written
from them.

Each scenario runs on a fresh local stack in ``var/chaos/<scenario>/`` (redis-server, VictoriaMetrics
behind a fault-injection InfluxDB server, two single-process workers), ingests a generated file of
``--points`` points (two fields each, so twice as many samples), breaks something on the way, then reads
everything back and counts:

    lost         expected samples that neither landed nor sit in the dead-letter queue with a reason
    duplicated   landed samples that are not in the source (a wrong value, an unknown series or time)
    rewrites     rows the server accepted beyond the distinct samples it holds: a batch written again
                 after a crash, harmless since InfluxDB overwrites a point with the same series and time
    committed twice, redeliveries, failed writes, chunk retries, time to recover, stuck workers
    stranded     units left `planned` in the ledger or left in its outbox once the job is done

A worker is stuck unless, after the scenario, it is alive, answers a Celery ping and executes a chunk
of a probe job (sent on a second route, so that the probe never mixes with the figures).

    .venv/bin/python scripts/chaos.py [--points 200000] [--scenario NAME ...] [--quick]
                                      [--out docs/RELIABILITY.md] [--json FILE] [--workdir DIR]

Exit status: 0 when every scenario met its target, 1 otherwise.
"""

# ruff: noqa: E402  (the project root goes on sys.path before tests.faultserver is imported)
from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import itertools
import json
import os
import pickle
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.faultserver is not part of the installed package

from config import CONFIG_ENV, load_settings
from config.constants import (
    LEASE_TTL_S,
    REPUBLISH_AFTER_S,
    SCHEMA_VERSION,
    SWEEP_INTERVAL_S,
    VISIBILITY_TIMEOUT_S,
)
from producers import Producer
from producers.api import QUEUE_CHECK_EVERY
from tests.faultserver import FaultServer
from tsbatch import datagen
from tsbatch.descriptor import ChunkDescriptor
from tsbatch.envelope import TASK_NAME
from tsbatch.ledger import Ledger, connect, now_ms
from tsbatch.localstack import (
    Process,
    Stack,
    children,
    start_redis,
    start_stack,
    vm_export,
    vm_rows_inserted,
)
from workers.runtime import TEARDOWN_ERRORS

WORKDIR = ROOT / "var" / "chaos"
DOC = ROOT / "docs" / "RELIABILITY.md"
ROUTE = "default"
PROBE_ROUTE = "probe"
PREFIX = "tsbatch"
QUEUE = "tsbatch.chunks"
SERIES = 200  # hosts in the generated data; --points / SERIES steps each
WORKERS = 2  # worker nodes, one process each: a kill takes out a whole node's capacity
CPU = '{__name__=~"cpu_(usage|count)"}'
FIELDS = ("usage", "count")
JOB_TIMEOUT_S = 900.0
STALL_S = 90.0  # no chunk finished for this long: stop waiting (the longest retry countdown here is ~33 s)
PROBE_TIMEOUT_S = 60.0  # the bound for "a worker still consumes"
PROBE_DELAY_S = 1.0  # each probe write answered this late, so that every worker must take a probe chunk
# A short lease so that a killed worker's chunk is taken over in seconds, not in the default minute.
COMMON_WORKER = {"lease_ttl_s": 10.0, "heartbeat_s": 2.0, "retry_max_s": 30.0}
# What a worker must never log is workers.runtime.TEARDOWN_ERRORS; this marks an error line.
LOOP_HYGIENE = TEARDOWN_ERRORS
LOG_ERROR = re.compile(r"^\[[^\]]*: (ERROR|CRITICAL)/[^\]]*\] (.*)$")


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# -- sizes and scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each run is; ``--quick`` shortens the faults, never the checks."""

    points: int
    quick: bool

    @property
    def steps(self) -> int:
        return max(self.points // SERIES, 1)

    @property
    def lines(self) -> int:
        return SERIES * self.steps

    @property
    def chunk_lines(self) -> int:
        return max(self.lines // 40, 1_000)  # about 40 chunks: enough to kill mid-run many times

    @property
    def batch_lines(self) -> int:
        return max(self.chunk_lines // 5, 1)  # five writes a chunk, so faults land in the middle of one

    @property
    def chunks(self) -> int:
        """Full chunks' worth (the tapered end adds a few smaller ones)."""
        return -(-self.lines // self.chunk_lines)

    @property
    def kills(self) -> int:
        return 3 if self.quick else 10

    @property
    def slow_s(self) -> float:
        """Delay of every write in the kill and restart scenarios: a chunk then lasts ~2 of these."""
        return 0.5 if self.quick else 1.0

    @property
    def outage_s(self) -> float:
        return 2.0 if self.quick else 5.0


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Fault:
    """One injected fault: ``end_ms`` is when it was over (worker back, Redis up)."""

    what: str
    at_ms: int
    end_ms: int
    interrupted: list[str] = field(default_factory=list)  # chunk keys leased when it struck
    next_commit_s: float | None = None  # from end_ms to the next commit of the job
    recovered_s: float | None = None  # from end_ms to the commit of the last interrupted chunk


@dataclass
class Scenario:
    name: str
    title: str
    summary: str  # what is done, for the report
    drive: Callable[[Run], None]
    checks: Callable[[Run, Figures], list[Check]]
    prepare: Callable[[Run], None] = lambda _: None  # before the job is submitted
    worker: dict[str, Any] = field(default_factory=dict)
    rules: Callable[[Sizes], list[dict[str, Any]]] = lambda _: []
    token: str | None = None  # the fault server wants this token (the stack sends another)
    appendonly: bool = False
    route_timeout_s: float | None = None
    expected_log: tuple[str, ...] = ()  # ERROR lines the fault itself causes
    lands: bool = True  # every chunk must commit (else: every chunk must be dead-lettered with a reason)
    recovery: str = ""  # what "time to recover" measures here; "" when there is no end of a fault
    ledger: dict[str, Any] = field(default_factory=dict)  # the [ledger] settings that differ
    producer: dict[str, Any] = field(default_factory=dict)  # the [producer] settings that differ
    # How the job is submitted once the workers run: by default through the producer API; a scenario
    # may instead lose messages on purpose, or kill `tsbatch produce` (then ``workers_first`` is False
    # and it starts the workers itself). Returns the job id the figures are about.
    submit: Callable[[Run, Producer], str] | None = None
    workers_first: bool = True


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: Scenario
    sizes: Sizes
    workdir: Path
    stack: Stack
    proxy: FaultServer
    probe_proxy: FaultServer
    data: Path
    src: Path
    job_id: str = ""
    keys: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)  # workers stopped on purpose
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific measurements
    seconds: float = 0.0
    cleanup: list[Callable[[], None]] = field(default_factory=list)  # threads to stop at the end
    _ledger: Ledger | None = None

    @property
    def vm_url(self) -> str:
        return self.stack.routes[ROUTE].url

    def ledger(self) -> Ledger:
        """One client for the run; it reconnects by itself after a Redis restart."""
        if self._ledger is None:
            self._ledger = Ledger(connect(self.stack.redis_url), prefix=PREFIX)
        return self._ledger

    def worker(self, name: str) -> Process:
        return next(w for w in self.stack.workers if w.name == name)

    def live_workers(self) -> list[Process]:
        return [w for w in self.stack.workers if w.name not in self.gone]


@contextmanager
def stack_env(stack: Stack) -> Iterator[None]:
    """Settings in this process as the workers see them: only the stack's settings file."""
    saved = dict(os.environ)
    for name in [k for k in os.environ if k.startswith("TSBATCH_")]:
        del os.environ[name]
    os.environ[CONFIG_ENV] = str(stack.config)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def producer(stack: Stack) -> Producer:
    with stack_env(stack):
        return Producer(load_settings())


def wait_until(check: Callable[[], Any], *, timeout: float, poll: float = 0.2) -> Any:
    """``check()``'s first true result, or None after ``timeout``; Redis errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except redis.RedisError:
            result = None
        if result:
            return result
        time.sleep(poll)
    return None


def leases(run: Run) -> dict[str, int]:
    """Chunk key -> pid of the worker process holding its lease."""
    client = run.ledger().redis
    out = {}
    for name in client.scan_iter(f"{PREFIX}:lease:*"):
        holder = cast(str | None, client.get(name))
        if holder:
            out[str(name).rsplit(":", 1)[1]] = int(holder.rsplit(":", 1)[1])
    return out


def committed(run: Run) -> int:
    return run.ledger().job(run.job_id).committed


def start(scenario: Scenario, sizes: Sizes, root: Path) -> Run:
    workdir = root / scenario.name
    shutil.rmtree(workdir, ignore_errors=True)
    data = workdir / "data"
    data.mkdir(parents=True)
    stack = start_stack(
        workdir / "stack",
        roots=[data],
        worker={**COMMON_WORKER, "batch_lines": sizes.batch_lines, **scenario.worker},
        producer={"chunk_lines": sizes.chunk_lines, **scenario.producer},
        redis_appendonly=scenario.appendonly,
    )
    stack.settings["ledger"] = dict(scenario.ledger)
    proxies: list[FaultServer] = []
    try:
        vm = stack.routes[ROUTE].url
        proxies.append(FaultServer.start(vm, token=scenario.token, seed=3))
        proxies.append(FaultServer.start(vm))
        configure_routes(stack, scenario, proxies[0].url, proxies[1].url)
    except BaseException:
        for p in proxies:
            p.stop()
        stack.stop()
        raise
    src = data / "cpu.lp"
    datagen.write(src, "lp", series=SERIES, points_per_series=sizes.steps)
    return Run(scenario, sizes, workdir, stack, proxies[0], proxies[1], data, src)


def configure_routes(stack: Stack, scenario: Scenario, url: str, probe_url: str) -> None:
    """The scenario's route through its fault server; the probe route through a slow one."""
    routes = stack.settings["routes"]
    routes[ROUTE]["url"] = url
    if scenario.route_timeout_s is not None:
        routes[ROUTE]["timeout_s"] = scenario.route_timeout_s
    routes[PROBE_ROUTE] = {**routes[ROUTE], "url": probe_url, "bucket": PROBE_ROUTE}
    routes[PROBE_ROUTE].pop("timeout_s", None)
    stack.write_config()


def stop(run: Run) -> None:
    for hook in run.cleanup:
        hook()
    for proxy in (run.proxy, run.probe_proxy):
        proxy.stop()
    run.stack.stop()
    if run._ledger is not None:
        run._ledger.redis.close()


def execute(run: Run) -> None:
    """Start the workers, submit the file, inject the faults, wait for the job to be done."""
    sc = run.scenario
    if sc.workers_first:
        start_workers(run)
    run.proxy.set_faults(sc.rules(run.sizes))
    sc.prepare(run)
    with producer(run.stack) as prod:
        run.keys = [d.key for d in prod.plan(run.src, job_id="plan", route=ROUTE)]
        t0 = time.monotonic()
        if sc.submit is not None:
            run.job_id = sc.submit(run, prod)
        else:
            run.job_id = prod.submit([run.src, *run.extra.get("files", [])], route=ROUTE).job_id
        sc.drive(run)
        done = wait_done(prod, run.job_id)
        run.seconds = time.monotonic() - t0
    if not done:
        run.notes.append(f"the job was not done: no chunk finished in its last {STALL_S:.0f} s")
        run.notes += stranded(run)
    run.proxy.clear_faults()


def start_workers(run: Run) -> None:
    for n in range(WORKERS):
        run.stack.start_worker(concurrency=1, name=f"w{n + 1}")


def wait_done(prod: Producer, job_id: str) -> bool:
    """Wait for the job; give up after ``STALL_S`` without a chunk finishing, or ``JOB_TIMEOUT_S``."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    last, since = -1, time.monotonic()
    while time.monotonic() < min(deadline, since + STALL_S):
        try:
            status = prod.status(job_id)
        except redis.RedisError:
            status = None
        if status is not None and status.done:
            return True
        if status is not None and status.committed + status.dead != last:
            last, since = status.committed + status.dead, time.monotonic()
        time.sleep(0.5)
    return False


def stranded(run: Run) -> list[str]:
    """Where the unfinished chunks' messages are (a message held in the broker's unacked hash comes
    back only after the visibility timeout)."""
    ledger = run.ledger()
    pending = [k for k in run.keys if ledger.unit(k).get("state") not in ("committed", "dead")]
    unacked = cast(dict[str, str], ledger.redis.hgetall("unacked"))
    since = dict(cast(list[tuple[str, float]], ledger.redis.zrange("unacked_index", 0, -1, withscores=True)))
    where = {message_key(raw): tag for tag, raw in unacked.items()}
    vis = run.stack.settings["worker"].get("visibility_timeout_s", VISIBILITY_TIMEOUT_S)
    out = [f"{len(pending)} chunk(s) unfinished, {ledger.redis.llen(QUEUE)} message(s) in the queue"]
    for key in pending:
        attempts = ledger.unit(key).get("attempts", "0")
        tag = where.get(key)
        if tag is None:
            out.append(f"chunk {key[:12]} (claimed {attempts}x): no message for it in the queue or `unacked`")
            continue
        age = time.time() - since.get(tag, time.time())
        out.append(
            f"chunk {key[:12]} (claimed {attempts}x): its message has sat in the broker's `unacked` hash "
            f"for {age:.0f} s; Redis hands it out again only after visibility_timeout_s ({vis} s)"
        )
    return out


def message_key(raw: str) -> str:
    """The chunk key of a Celery message as kombu's Redis transport keeps it while unacknowledged."""
    try:
        message = json.loads(raw)[0]
        args = json.loads(base64.b64decode(message["body"]))[0]
        return str(args[0]["key"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


# -- measuring ----------------------------------------------------------------------------------------


@dataclass
class Figures:
    points: int = 0
    samples: int = 0  # expected
    landed: int = 0  # distinct expected samples found with their value
    missing: int = 0  # expected samples not landed
    dead_samples: int = 0  # of the missing, those in dead-lettered chunks (replayable)
    lost: int = 0  # missing and not dead-lettered
    duplicated: int = 0
    rewrites: int = 0
    chunks: int = 0
    committed_once: int = 0
    committed_twice: int = 0
    dead: int = 0
    unfinished: int = 0
    stranded: int = 0  # units left `planned` in the ledger, or left in its outbox, once the job is done
    redeliveries: int = 0
    reclaims: int = 0
    failed_writes: int = 0
    write_retries: int = 0  # a batch sent again inside the task (the ledger's ``retries`` counter)
    chunk_retries: int = 0  # the chunk handed back to Celery for a later retry (worker logs)
    requests: int = 0
    next_commit_s: float | None = None
    recovered_s: float | None = None
    stuck: int = 0
    seconds: float = 0.0
    log_errors: dict[str, int] = field(default_factory=dict)


def landed_samples(run: Run) -> tuple[set[tuple[int, int, int]], int, int]:
    """Distinct expected samples (field, host, step) landed right; wrong or unknown ones; all distinct."""
    good: set[tuple[int, int, int]] = set()
    bad: set[tuple[str, str, int, float]] = set()
    distinct = 0
    for row in stable_export(run.vm_url):
        name, host = row["metric"]["__name__"], row["metric"].get("host", "")
        pairs = set(zip(row["timestamps"], row["values"], strict=True))
        distinct += len(pairs)
        if name not in ("cpu_usage", "cpu_count"):
            continue
        f = FIELDS.index(name.removeprefix("cpu_"))
        for ms, v in pairs:
            sample = expected_sample(host, ms, f, run.sizes.steps)
            if sample is not None and v == sample[3]:
                good.add(sample[:3])
            else:
                bad.add((name, host, ms, v))
    return good, len(bad), distinct


def expected_sample(host: str, ms: int, f: int, steps: int) -> tuple[int, int, int, float] | None:
    """(field, host, step, value) that the source holds at this series and time, or None."""
    if not re.fullmatch(r"h\d{5}", host) or (ms - datagen.BASE_MS) % 1000:
        return None
    i, k = int(host[1:]), (ms - datagen.BASE_MS) // 1000
    if not (0 <= i < SERIES and 0 <= k < steps):
        return None
    return f, i, k, float(datagen.value(i, k)[f])


def dead_chunk_lines(ledger: Ledger, job_id: str) -> set[int]:
    """0-based line numbers of the main file that are in dead-lettered chunks of the job."""
    out: set[int] = set()
    for entry in ledger.dead_letters(job_id=job_id):
        if entry.get("kind") == "chunk" and entry.get("descriptor"):
            desc = json.loads(entry.get("descriptor"))
            out.update(range(desc["first_line"] - 1, desc["first_line"] - 1 + desc["line_count"]))
    return out


def samples_in(rows: list[dict[str, Any]]) -> int:
    return sum(len(row["timestamps"]) for row in rows)


def stable_export(url: str, *, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Everything VictoriaMetrics holds, read until two reads a second apart agree (and are not empty
    while rows were accepted): once, right after a job, an export came back empty, a later one full."""
    rows = list(vm_export(url))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = list(vm_export(url))
        settled = samples_in(again) == samples_in(rows)
        if settled and (samples_in(again) or not vm_rows_inserted(url)):
            return again
        rows = again
    return rows


def measure_data(run: Run, fig: Figures) -> None:
    s = run.sizes
    fig.points, fig.samples = s.lines, 2 * s.lines
    good, fig.duplicated, distinct = landed_samples(run)
    fig.landed = len(good)
    dead_lines = dead_chunk_lines(run.ledger(), run.job_id)
    missing = [
        (f, i, k) for k in range(s.steps) for i in range(SERIES) for f in (0, 1) if (f, i, k) not in good
    ]
    fig.missing = len(missing)
    fig.lost = sum(1 for _, i, k in missing if k * SERIES + i not in dead_lines)
    fig.dead_samples = fig.missing - fig.lost
    fig.rewrites = vm_rows_inserted(run.vm_url) - distinct


def measure_ledger(run: Run, fig: Figures) -> None:
    ledger = run.ledger()
    stats = ledger.stats()
    states = Counter(ledger.unit(k).get("state", "missing") for k in run.keys)
    all_committed = sum(
        1
        for name in ledger.redis.scan_iter(f"{PREFIX}:unit:*")
        if ledger.redis.hget(name, "state") == "committed"
    )
    fig.chunks = len(run.keys)
    fig.committed_once = states["committed"]
    fig.committed_twice = max(stats.get("commits", 0) - all_committed, 0)
    fig.dead = states["dead"]
    fig.unfinished = fig.chunks - fig.committed_once - fig.dead
    left = stranded_units(ledger)
    fig.stranded = len(left)
    for key in sorted(left)[:5]:
        unit = ledger.unit(key)
        score = ledger.redis.zscore(ledger.outbox_key, key)
        run.notes.append(
            f"stranded unit {key[:12]}: state {unit.get('state', 'none')}, attempts "
            f"{unit.get('attempts', 0)}, republished {unit.get('republished', 0)}, outbox score {score}"
        )
    fig.redeliveries = stats.get("redelivered_done", 0) + stats.get("busy", 0)
    fig.reclaims = sum(int(ledger.unit(k).get("attempts", 0)) for k in run.keys) - fig.chunks
    fig.write_retries = stats.get("retries", 0)
    fig.chunk_retries = sum(log_count(w, "retry job=") for w in run.stack.workers)
    if fig.dead:
        entries = [e for e in ledger.dead_letters(job_id=run.job_id) if e.get("kind") == "chunk"]
        run.extra["dead_letters"] = dict(
            Counter(f"{e.get('reason')}: {e.get('message')[:120]}" for e in entries)
        )
    job = ledger.job(run.job_id)
    # Units committed before the job started (by messages of an interrupted run) count as skipped.
    if job.committed + job.skipped != fig.committed_once + run.extra.get("extra_chunks", 0):
        run.notes.append(f"job counter says {job.committed} chunks committed, the chunk hashes {states}")


def stranded_units(ledger: Ledger) -> set[str]:
    """Keys of the units that nothing will finish by itself any more: still `planned` in the ledger, or
    still in its outbox, once the job is done (the probe job has not started yet)."""
    client = ledger.redis
    planned = {
        str(name).rsplit(":", 1)[1]
        for name in client.scan_iter(f"{PREFIX}:unit:*")
        if client.hget(name, "state") == "planned"
    }
    return planned | set(cast(list[str], client.zrange(ledger.outbox_key, 0, -1)))


def failed(record: dict[str, Any]) -> bool:
    """A write the client had to try again: answered with an error, reset, or never answered."""
    status = record.get("status")
    return record.get("outcome") in ("reset", "hang") or not (status and 200 <= status < 300)


def measure_requests(run: Run, fig: Figures) -> None:
    records = run.proxy.requests()
    fig.requests = len(records)
    fig.failed_writes = sum(1 for r in records if failed(r))


def measure_recovery(run: Run, fig: Figures) -> None:
    """Per fault: from its end to the next commit, and to the commit of the chunks it interrupted."""
    if not run.faults:
        return
    ledger = run.ledger()
    commits = {k: int(ledger.unit(k).get("committed_ms", 0)) for k in run.keys}
    times = sorted(t for t in commits.values() if t)
    for fault in run.faults:
        after = [t for t in times if t >= fault.end_ms]
        fault.next_commit_s = (after[0] - fault.end_ms) / 1000 if after else None
        done = [commits.get(k, 0) for k in fault.interrupted]
        fault.recovered_s = (max(done) - fault.end_ms) / 1000 if done and all(done) else None
    fig.next_commit_s = worst(f.next_commit_s for f in run.faults)
    fig.recovered_s = worst(f.recovered_s for f in run.faults if f.interrupted)


def worst(values: Iterable[float | None]) -> float | None:
    """The largest, or None if any is missing (a fault that was never recovered from)."""
    got = list(values)
    return None if not got or None in got else max(v for v in got if v is not None)


def log_count(worker: Process, needle: str) -> int:
    return worker.log.read_text(errors="replace").count(needle)


def error_lines(worker: Process, needle: str) -> int:
    """ERROR lines of the worker's log that contain ``needle``."""
    lines = worker.log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if needle in line and LOG_ERROR.match(line))


def normalized(message: str) -> str:
    """A log message without its ids, pids and numbers, so that the same error counts as one."""
    message = re.sub(r"\[[0-9a-f-]{36}\]", "[id]", message)
    message = re.sub(r"(ForkPoolWorker-|pid:|Job: )\d+", r"\1N", message)
    return message[:100]


def log_errors(run: Run) -> dict[str, int]:
    """ERROR/CRITICAL lines and loop-hygiene messages in the worker logs, by their first 100 characters."""
    found: Counter[str] = Counter()
    for worker in run.stack.workers:
        text = worker.log.read_text(errors="replace")
        for line in text.splitlines():
            m = LOG_ERROR.match(line)
            if m:
                found[normalized(m.group(2))] += 1
        for marker in LOOP_HYGIENE:
            if marker in text:
                found[marker] += text.count(marker)
    return dict(found)


def measure(run: Run) -> Figures:
    fig = Figures(seconds=run.seconds)
    measure_data(run, fig)
    measure_ledger(run, fig)
    measure_requests(run, fig)
    measure_recovery(run, fig)
    return fig


# -- stuck workers ------------------------------------------------------------------------------------


def ping(stack: Stack) -> set[str]:
    app = Celery(broker=stack.redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_timeout=5)
    try:
        replies = app.control.ping(timeout=1.0) or []
    finally:
        app.close()
    return {node.split("@", 1)[0] for reply in replies for node in reply}


def probe_files(run: Run, count: int) -> list[Path]:
    files = []
    for n in range(count):
        path = run.data / "probe" / f"probe-{n}.lp"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"chaos_probe,file={n} v={n}i {datagen.BASE_MS * 1_000_000}\n")
        files.append(path)
    return files


def takers(run: Run, job_id: str, keys: list[str]) -> set[str]:
    """The workers that executed chunks of the job: named by a commit record, or by their own log."""
    ledger = run.ledger()
    pids = {int(ledger.unit(k).get("worker", ":0").rsplit(":", 1)[1]) for k in keys}
    return {
        w.name
        for w in run.live_workers()
        if pids & set(children(w.proc.pid)) or log_count(w, f"job={job_id} ")
    }


def probe(run: Run) -> int:
    """Stuck workers: dead, not answering a ping, or not executing any of a few probe chunks in 60 s."""
    alive = run.live_workers()
    dead = {w.name for w in alive if w.proc.poll() is not None}
    expected = {w.name for w in alive} - dead
    answered: set[str] = wait_until(lambda: expected <= (got := ping(run.stack)) and got, timeout=30) or set()
    run.probe_proxy.set_faults([{"mode": "slow", "delay_s": PROBE_DELAY_S}])
    files = probe_files(run, 2 * len(alive))
    with producer(run.stack) as prod:
        keys = [d.key for f in files for d in prod.plan(f, job_id="plan", route=PROBE_ROUTE)]
        job = prod.submit(files, route=PROBE_ROUTE).job_id
        done = wait_until(lambda: prod.status(job).done, timeout=PROBE_TIMEOUT_S)
    stuck = expected - (answered & takers(run, job, keys))
    if not done:
        run.notes.append(f"the probe job was not done within {PROBE_TIMEOUT_S:.0f} s")
    for name in sorted(dead | stuck):
        why = "dead" if name in dead else "no ping answer" if name not in answered else "took no probe chunk"
        run.notes.append(f"worker {name} is stuck: {why}")
    return len(dead | stuck) or (0 if done else 1)


# -- scenario 1, 2: kills -----------------------------------------------------------------------------


def slow_rules(sizes: Sizes) -> list[dict[str, Any]]:
    return [{"mode": "slow", "delay_s": sizes.slow_s}]


def busy_children(run: Run) -> list[tuple[Process, int, str]]:
    """Live workers' child processes holding a chunk's lease, with that chunk's key."""
    held = {pid: key for key, pid in leases(run).items()}
    return [
        (worker, pid, held[pid])
        for worker in run.live_workers()
        for pid in children(worker.proc.pid)
        if pid in held
    ]


def respawned(worker: Process, pid: int) -> bool:
    """The pool replaced the killed child."""
    return children(worker.proc.pid) not in ([], [pid])


def kill_children(run: Run) -> None:
    """SIGKILL a busy worker child ``kills`` times, each a moment after it started a chunk."""
    rng = random.Random(1)
    while len(run.faults) < run.sizes.kills:
        busy = wait_until(lambda: busy_children(run), timeout=60)
        if not busy:
            run.notes.append(f"only {len(run.faults)} kills: no worker child was busy any more")
            break
        worker, pid, key = rng.choice(busy)
        time.sleep(rng.uniform(0.2, 1.5) * run.sizes.slow_s)  # somewhere in its first writes
        if leases(run).get(key) != pid:
            continue  # finished meanwhile: a kill after its commit would prove nothing
        at = now_ms()
        os.kill(pid, signal.SIGKILL)
        run.faults.append(Fault(f"SIGKILL child {pid} of {worker.name}", at, at, [key]))
        wait_until(partial(respawned, worker, pid), timeout=30)
        time.sleep(0.5)
    run.extra["kills"] = len(run.faults)


def kill_worker(run: Run) -> None:
    """SIGKILL a whole worker (main process and child) mid-chunk, then start a new one. The message it
    had reserved stays in the broker's `unacked` hash for the default visibility timeout (an hour): the
    chunk must come back through its lapsed lease and the outbox sweeper. Late in the job, so that few
    messages are queued ahead of the re-published one (it goes to the back of the queue)."""
    wait_until(lambda: committed(run) >= run.sizes.chunks * 3 // 4, timeout=JOB_TIMEOUT_S)
    wait_until(lambda: [b for b in busy_children(run) if b[0].name == "w2"], timeout=60)
    time.sleep(random.Random(2).uniform(0.2, 1.0) * run.sizes.slow_s)  # in its first writes
    victim = run.worker("w2")
    held = leases(run)
    pids = set(children(victim.proc.pid))
    interrupted = [k for k, p in held.items() if p in pids]
    at = now_ms()
    victim.kill()
    run.gone.add(victim.name)
    time.sleep(1.0)
    run.stack.start_worker(concurrency=1, name="w3")
    run.faults.append(
        Fault("SIGKILL worker w2 (main process and child); w3 started", at, now_ms(), interrupted)
    )
    run.extra["killed_ms"] = at
    run.extra["republished_ms"] = wait_republished(run, interrupted)


def wait_republished(run: Run, keys: list[str], timeout: float = 120.0) -> dict[str, int]:
    """When each of ``keys`` was first seen re-published by a sweeper (polled every 0.1 s)."""
    client = run.ledger().redis
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < len(keys):
        for key in set(keys) - set(seen):
            try:
                if int(client.hget(f"{PREFIX}:unit:{key}", "republished") or 0):
                    seen[key] = now_ms()
            except redis.RedisError:
                pass
        time.sleep(0.1)
    return seen


RECOVERY_SLACK_S = 5.0  # a sweep publishes, a worker takes the message, the chunk's own writes


def lease_bound_s(run: Run) -> float:
    """The longest a unit whose holder died may wait: its lease lapses, the next sweep publishes it."""
    settings = run.stack.settings
    lease = float(settings["worker"].get("lease_ttl_s", LEASE_TTL_S))
    sweep = float(settings["ledger"].get("sweep_interval_s", SWEEP_INTERVAL_S))
    return lease + sweep + RECOVERY_SLACK_S


KILL_LOG = ("exited with 'signal 9 (SIGKILL)'", "WorkerLostError('Worker exited prematurely: signal 9")


def kill_checks(run: Run, fig: Figures) -> list[Check]:
    kills = run.extra.get("kills", 0)
    return [Check(f"{run.sizes.kills} kills done", kills >= run.sizes.kills, f"{kills} kills")]


def worker_kill_checks(run: Run, fig: Figures) -> list[Check]:
    fault = run.faults[0] if run.faults else None
    done = fault is not None and bool(fault.interrupted) and fig.recovered_s is not None
    detail = f"{len(fault.interrupted)} chunk(s) were running on w2" if fault else "no kill"
    checks = [Check("the killed worker's chunks committed afterwards", done, detail)]
    if fault is None or not fault.interrupted:
        return checks
    ledger = run.ledger()
    commits = [int(ledger.unit(k).get("committed_ms", 0)) for k in fault.interrupted]
    took = (max(commits) - fault.at_ms) / 1000 if all(commits) else None
    again: dict[str, int] = run.extra.get("republished_ms", {})
    republished = (max(again.values()) - fault.at_ms) / 1000 if len(again) == len(fault.interrupted) else None
    bound = lease_bound_s(run)
    run.extra.update(kill_to_republish_s=republished, kill_to_commit_s=took, kill_to_commit_bound_s=bound)
    return [
        *checks,
        Check(
            f"re-published by a sweeper within lease_ttl_s + sweep_interval_s + {RECOVERY_SLACK_S:g} s of "
            "the kill (the visibility timeout left at its default)",
            republished is not None and republished <= bound,
            f"{seconds(republished)} after the kill (bound {bound:g} s)",
        ),
        Check(
            f"committed once within lease_ttl_s + sweep_interval_s + {RECOVERY_SLACK_S:g} s of the kill "
            "(the re-published message waits behind those queued before it)",
            took is not None and took <= bound,
            f"{seconds(took)} after the kill (bound {bound:g} s)",
        ),
    ]


# -- scenario 3: Redis restart ------------------------------------------------------------------------


def restart_redis(run: Run) -> None:
    """SIGKILL Redis mid-run (the last second of its AOF may be lost: appendfsync everysec), keep it down a
    few seconds, start it again on the same port and data directory."""
    stack = run.stack
    wait_until(lambda: committed(run) >= run.sizes.chunks // 4, timeout=JOB_TIMEOUT_S)
    wait_until(lambda: busy_children(run), timeout=60)
    interrupted = list(leases(run))
    before = committed(run)
    ledger = run.ledger()
    recent = sum(1 for k in run.keys if int(ledger.unit(k).get("committed_ms", 0)) > now_ms() - AOF_LOSS_MS)
    at = now_ms()
    stack.redis.kill()
    time.sleep(run.sizes.outage_s)
    stack.redis = start_redis(stack.workdir, port=stack.redis.port, appendonly=True)
    run.faults.append(Fault(f"Redis SIGKILLed, down {run.sizes.outage_s:.0f} s", at, now_ms(), interrupted))
    run.extra["committed_before"] = before
    run.extra["committed_in_last_2s_before"] = recent
    run.extra["committed_after_restart"] = committed(run)


AOF_LOSS_MS = 2_000  # appendfsync everysec: a SIGKILL loses up to about the last second of writes


def redis_checks(run: Run, fig: Figures) -> list[Check]:
    before, after = run.extra.get("committed_before", -1), run.extra.get("committed_after_restart", -2)
    recent = run.extra.get("committed_in_last_2s_before", 0)
    return [
        Check(
            "the ledger survived the kill (AOF): at most the commits of its last seconds lost",
            after >= before - recent,
            f"{before} commits before ({recent} in its last {AOF_LOSS_MS // 1000} s), {after} after",
        ),
        Check(
            "work resumed after the restart", fig.next_commit_s is not None, "a commit after Redis came back"
        ),
    ]


# -- scenario 4: 429 / 503 with Retry-After ------------------------------------------------------------


def throttle_rules(sizes: Sizes) -> list[dict[str, Any]]:
    """15% 429, then 15% of all 503 (0.85 x 0.1765); every write waits out a Retry-After cluster-wide,
    so --quick asks for shorter ones."""
    short, long = ("1", "2") if sizes.quick else ("2", "3")
    return [
        {"status": 429, "retry_after": short, "probability": 0.15},
        {"status": 503, "retry_after": long, "probability": 0.1765},
    ]


def retry_after_margins(records: list[dict[str, Any]], rules: list[dict[str, Any]]) -> list[float]:
    """For each 429/503 with Retry-After R answered at t: next arrival of the same body minus (t + R)."""
    by_body: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        digest = hashlib.sha256("\n".join(r.get("lines") or []).encode()).hexdigest()
        by_body.setdefault(digest, []).append(r)
    margins = []
    for sends in by_body.values():
        sends.sort(key=lambda r: r["arrival_monotonic"])
        for asked, nxt in itertools.pairwise(sends):
            rule = asked.get("fault_rule")
            if asked.get("status") in (429, 503) and rule is not None:
                answered = asked.get("responded_monotonic") or asked["arrival_monotonic"]
                floor = float(rules[rule]["retry_after"])
                margins.append(nxt["arrival_monotonic"] - (answered + floor))
    return margins


def throttle_checks(run: Run, fig: Figures) -> list[Check]:
    margins = retry_after_margins(run.proxy.requests(lines=True), run.scenario.rules(run.sizes))
    early = [m for m in margins if m < 0]
    run.extra["retry_after"] = {
        "retried": len(margins),
        "early": len(early),
        "min_margin_s": min(margins, default=None),
    }
    shown = f"{min(margins):+.2f} s" if margins else "n/a"
    share = fig.failed_writes / fig.requests if fig.requests else 0.0
    return [
        Check(
            "about 30% of writes refused",
            0.2 <= share <= 0.4,
            f"{fig.failed_writes} of {fig.requests} ({share:.0%})",
        ),
        Check(
            "no retry sooner than Retry-After",
            not early and bool(margins),
            f"{len(margins)} refused bodies sent again, {len(early)} too early, smallest margin {shown}",
        ),
    ]


# -- scenario 5: ambiguous writes ---------------------------------------------------------------------

AMBIGUOUS_RULES = [
    {"mode": "reset", "forward": True, "probability": 0.07},  # written, then the connection reset
    {"mode": "hang", "forward": True, "probability": 0.03},  # written, never answered: client timeout
]


def ambiguous_checks(run: Run, fig: Figures) -> list[Check]:
    outcomes = Counter(r.get("outcome") for r in run.proxy.requests())
    n = outcomes["reset"] + outcomes["hang"]
    run.extra["ambiguous"] = {"reset": outcomes["reset"], "hang": outcomes["hang"]}
    return [
        Check(
            "writes accepted without an answer", n > 0, f"{outcomes['reset']} reset, {outcomes['hang']} hung"
        ),
        Check("one commit per chunk", fig.committed_once == fig.chunks and not fig.committed_twice, ""),
    ]


# -- scenario 6: a route answering 401 ----------------------------------------------------------------


def breaker_state(run: Run) -> dict[str, str]:
    """The route's shared breaker as tsbatch/breaker.py keeps it (empty if there is none)."""
    raw = cast(dict[str, str], run.ledger().redis.hgetall(f"{PREFIX}:breaker:{ROUTE}"))
    return {k: v for k, v in raw.items() if k in ("state", "failures", "opened", "kind")}


def unauthorized_checks(run: Run, fig: Figures) -> list[Check]:
    entries = [e for e in run.ledger().dead_letters(job_id=run.job_id) if e.get("kind") == "chunk"]
    reasons = Counter(e.get("reason") for e in entries)
    clear = sum(1 for e in entries if e.get("reason") == "route_rejected" and "401" in e.get("message"))
    run.extra["dlq_reasons"] = dict(reasons)
    run.extra["dlq_example"] = entries[0].get("message") if entries else ""
    breaker = run.extra["breaker"] = breaker_state(run)
    return [
        Check(
            "every chunk dead-lettered, reason route_rejected (401)", clear == fig.chunks, f"{dict(reasons)}"
        ),
        Check("the route's breaker open", breaker.get("state") == "open", f"{breaker or 'no breaker state'}"),
        Check(
            "no request storm: fewer write requests than chunks",
            fig.requests < fig.chunks,
            f"{fig.requests} requests for {fig.chunks} chunks",
        ),
    ]


# -- scenario 7: poison input -------------------------------------------------------------------------

POISON_OK = "chaos_poison_ok"
CANARY = "chaos_canary_outside"
MALFORMED = [
    "chaos_poison_ok,src=bad usage= 1704067200000000000",  # field without a value
    "chaos_poison_ok,src=bad usage=1.0",  # no timestamp: a rewrite would make a second point
    "chaos_poison_ok,src=bad usage=1.0 notatime",
    "not line protocol at all",
    "chaos_poison_ok,src=bad usage=1.0,usage 1704067200000000000",
]


def poison_file(path: Path, good: int) -> int:
    """Good lines with the malformed ones and one line over 1 MiB among them; returns the bad count."""
    ts = datagen.BASE_MS * 1_000_000
    lines = [f"{POISON_OK},src=good v={i}i {ts + i * 1_000_000_000}" for i in range(good)]
    bad = [*MALFORMED, f'{POISON_OK},src=big v="{"x" * (1 << 20)}" {ts}']
    for n, line in enumerate(bad):
        lines.insert(1 + n * (good // len(bad)), line)
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"chaos_poison_ok,src=\xff\xfe v=1i 1\n")
    return len(bad) + 1


def outside_descriptors(run: Run, job_id: str) -> dict[str, ChunkDescriptor]:
    """Descriptors naming files outside the roots, each complete enough that a read would land points."""
    secret = run.workdir / "outside" / "secret.lp"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(f"{CANARY},src=secret v=1i {datagen.BASE_MS * 1_000_000}\n")
    (run.data / "link.lp").symlink_to(secret)
    body = secret.read_bytes()
    st = secret.stat()

    def desc(path: str) -> ChunkDescriptor:
        return ChunkDescriptor(
            schema_version=SCHEMA_VERSION, job_id=job_id, path=path, file_size=st.st_size,
            file_mtime_ns=st.st_mtime_ns, chunk_sha256=hashlib.sha256(body).hexdigest(), start=0,
            end=len(body), first_line=1, line_count=1, format="lp", route=ROUTE,
        ).with_key()  # fmt: skip

    return {
        "descriptor naming ../../etc/passwd": desc("../../etc/passwd"),
        "traversal from a root to /etc/passwd": desc(f"{run.data}/../../../../../../../../etc/passwd"),
        "traversal from a root to a file outside": desc(f"{run.data}/../outside/secret.lp"),
        "absolute path outside the roots": desc(str(secret)),
        "symlink in a root pointing outside": desc(str(run.data / "link.lp")),
    }


def send_descriptors(stack: Stack, descs: Sequence[ChunkDescriptor]) -> None:
    app = Celery(broker=stack.redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        for d in descs:
            app.send_task(TASK_NAME, args=[d.to_message()], queue=QUEUE)
    finally:
        app.close()


class _Touch:
    """Unpickling this creates a file: proof that a worker deserialized pickle (it must not)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.marker,)


def send_pickle(stack: Stack, marker: Path) -> None:
    """A task message in pickle, straight through kombu (the workers declared the queue's exchange)."""
    app = Celery(broker=stack.redis_url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            producer.publish(
                pickle.dumps(_Touch(marker)),
                exchange=QUEUE,
                routing_key=QUEUE,
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers={"task": TASK_NAME, "id": str(uuid.uuid4()), "lang": "py"},
            )
    finally:
        app.close()


def prepare_poison(run: Run) -> None:
    poison = run.data / "poison.lp"
    run.extra["poison_bad"] = poison_file(poison, good=run.sizes.chunk_lines // 2)
    run.extra["poison_good"] = run.sizes.chunk_lines // 2
    run.extra["files"] = [poison]
    run.extra["extra_chunks"] = 1


def inject_poison(run: Run) -> None:
    job = f"{run.job_id}-poison"
    run.ledger().create_job(job, route=ROUTE, paths=[])
    descs = outside_descriptors(run, job)
    run.extra["poison_job"] = job
    run.extra["poison_descs"] = {name: d.key for name, d in descs.items()}
    send_descriptors(run.stack, list(descs.values()))
    send_pickle(run.stack, run.workdir / "pickle-was-loaded")
    wait_until(lambda: len(list(run.ledger().dead_letters(job_id=job))) >= len(descs), timeout=60)


def poison_checks(run: Run, fig: Figures) -> list[Check]:
    ledger = run.ledger()
    return [
        *line_checks(run, ledger),
        *descriptor_checks(run, ledger),
        *pickle_checks(run),
    ]


def line_checks(run: Run, ledger: Ledger) -> list[Check]:
    lines = [e for e in ledger.dead_letters(job_id=run.job_id) if e.get("kind") == "line"]
    run.extra["line_reasons"] = [(e.get("line"), e.get("message")[:90]) for e in lines]
    good = sum(
        len(set(zip(row["timestamps"], row["values"], strict=True)))
        for row in vm_export(run.vm_url, f'{{__name__="{POISON_OK}_v",src="good"}}')
    )
    want_bad, want_good = run.extra["poison_bad"], run.extra["poison_good"]
    return [
        Check(
            "every malformed, oversize or non-UTF-8 line dead-lettered with a reason",
            len(lines) == want_bad and all(e.get("message") for e in lines),
            f"{len(lines)} of {want_bad}",
        ),
        Check("the good lines around them landed", good == want_good, f"{good} of {want_good}"),
    ]


def descriptor_checks(run: Run, ledger: Ledger) -> list[Check]:
    entries = {e.get("key"): e for e in ledger.dead_letters(job_id=run.extra["poison_job"])}
    found = {name: entries.get(key) for name, key in run.extra["poison_descs"].items()}
    run.extra["descriptor_reasons"] = {n: (e.get("reason") if e else "none") for n, e in found.items()}
    refusals = ("outside_roots", "relative_path", "symlink")
    refused = all(e is not None and e.get("reason") in refusals for e in found.values())
    canary = list(vm_export(run.vm_url, f'{{__name__=~"{CANARY}.*"}}'))
    return [
        Check(
            "descriptors outside the roots dead-lettered, never read",
            refused,
            f"{run.extra['descriptor_reasons']}",
        ),
        Check("nothing from outside the roots landed", not canary, f"{len(canary)} canary series"),
    ]


def pickle_checks(run: Run) -> list[Check]:
    logged = sum(error_lines(w, "Refusing to deserialize untrusted content") for w in run.stack.workers)
    kept = [
        e.get("reason")
        for e in run.ledger().dead_letters()
        if e.get("kind") == "message" and "pickle" in (e.get("message") + e.get("content_type"))
    ]
    loaded = (run.workdir / "pickle-was-loaded").exists()
    run.extra["pickle"] = {"refusals_logged": logged, "dead_letter_reasons": kept, "unpickled": loaded}
    return [
        Check(
            "the pickle message refused with a reason, never deserialized",
            (logged >= 1 or bool(kept)) and not loaded,
            f"{logged} refusal(s) logged, dead-letter entries: {kept or 'none'}",
        ),
    ]


# -- scenario 8: a chunk longer than the visibility timeout ---------------------------------------------


def overlapping_copies(records: list[dict[str, Any]]) -> tuple[int, int]:
    """(batches sent again, batches in flight twice at the same time) from the fault server's record."""
    by_body: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        digest = hashlib.sha256("\n".join(r.get("lines") or []).encode()).hexdigest()
        end = r.get("responded_monotonic") or float("inf")
        by_body.setdefault(digest, []).append((r["arrival_monotonic"], end))
    again = sum(len(v) - 1 for v in by_body.values())
    overlaps = 0
    for spans in by_body.values():
        spans.sort()
        overlaps += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    return again, overlaps


def long_chunk_checks(run: Run, fig: Figures) -> list[Check]:
    again, overlaps = overlapping_copies(run.proxy.requests(lines=True))
    busy = run.ledger().stats().get("busy", 0)
    run.extra["copies"] = {"sent_again": again, "overlapping": overlaps, "busy": busy}
    vis = run.scenario.worker["visibility_timeout_s"]
    return [
        Check(
            f"the visibility timeout ({vis} s) fired while chunks ran",
            busy > 0,
            f"{busy} copies found the lease held",
        ),
        Check(
            "no chunk ran twice at the same time",
            overlaps == 0,
            f"{overlaps} batches in flight twice at once",
        ),
    ]


def no_drive(run: Run) -> None:
    return None


def long_prepare(run: Run) -> None:
    """Two long chunks and a third, idle worker: a copy Redis hands out again while its chunk still runs
    is taken at once (with every worker busy, copies were only taken after their chunk had committed)."""
    run.stack.settings["producer"].update(chunk_lines=run.sizes.lines // 2 + 1, taper=False)
    run.stack.write_config()
    run.stack.start_worker(concurrency=1, name="idle")


def long_rules(sizes: Sizes) -> list[dict[str, Any]]:
    return [{"mode": "slow", "delay_s": LONG_WRITE_S}]


LONG_VISIBILITY_S = 3
LONG_WRITE_S = 0.5  # two chunks of many batches, four in flight: each chunk runs for many timeouts


# -- scenario 9: an interrupted producer ----------------------------------------------------------------

PRODUCE_POINTS = ("from start", "planning", "waiting for room")
PRODUCE_SIGNALS = (signal.SIGINT, signal.SIGKILL)


def produce_argv(run: Run, *extra: str) -> list[str]:
    return run.stack.tsbatch("produce", str(run.src), "--route", ROUTE, *extra)


def job_ids(run: Run) -> list[str]:
    return cast(list[str], run.ledger().redis.zrange(f"{PREFIX}:jobs", 0, -1))


def new_job(run: Run, seen: set[str]) -> str:
    return next((j for j in job_ids(run) if j not in seen), "")


def default_sigint() -> None:
    """In the child: SIGINT as at a terminal. A command started in the background by a shell inherits
    SIGINT ignored, and Python then never raises KeyboardInterrupt: Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_produce(run: Run, name: str, *extra: str) -> subprocess.Popen[bytes]:
    with open(run.workdir / f"{name}.log", "wb") as out:
        return subprocess.Popen(
            produce_argv(run, *extra),
            env=run.stack.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_sigint,  # before exec: no other thread runs in this scenario
        )


def interrupt_produce(
    run: Run, n: int, sig: signal.Signals, point: str, rng: random.Random
) -> dict[str, Any]:
    """One `tsbatch produce` of the file, sent ``sig`` at ``point``: while Python starts (the job may not
    exist yet), after a random number of units was recorded, or while it waits for room in the queue."""
    seen = set(job_ids(run))
    proc = spawn_produce(run, f"produce-{n}")
    try:
        if point == "from start":
            time.sleep(rng.uniform(0.1, 1.5))
        else:
            job = wait_until(lambda: new_job(run, seen), timeout=60, poll=0.005)
            if point == "planning":
                target = rng.randint(1, QUEUE_CHECK_EVERY - 2)
                wait_until(lambda: run.ledger().job(job).units >= target, timeout=30, poll=0.001)
            else:  # blocked before its 16th unit: the queue is deeper than max_queue_depth
                wait_until(lambda: run.ledger().job(job).units >= QUEUE_CHECK_EVERY - 1, timeout=30)
                time.sleep(rng.uniform(0.1, 1.0))
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    job = new_job(run, seen)
    status = run.ledger().job(job) if job else None
    return {
        "run": n,
        "signal": sig.name,
        "point": point,
        "exit": code,
        "job": job or "(not created yet)",
        "units_recorded": status.units if status else 0,
        "planning_finished": bool(status and status.planned),
        "marked_interrupted": status.interrupted if status else "",
    }


def interrupted_submit(run: Run, prod: Producer) -> str:
    """Kill `tsbatch produce` at seeded random points with no worker running, then start the workers and
    run the very same command again with --wait."""
    rng = random.Random(9)
    plan = [(sig, point) for point in PRODUCE_POINTS for sig in PRODUCE_SIGNALS]
    runs = [interrupt_produce(run, n + 1, sig, point, rng) for n, (sig, point) in enumerate(plan)]
    ledger = run.ledger()
    left = [k for k in run.keys if ledger.unit(k).get("state") == "planned"]
    run.extra["interrupted_runs"] = runs
    queued = {queued_key(raw) for raw in cast(list[str], ledger.redis.lrange(QUEUE, 0, -1))}
    run.extra["before_rerun"] = {
        "units_planned": len(left),
        "planned_without_message": len(set(left) - queued),  # a kill between record and publish
        "messages_queued": int(ledger.redis.llen(QUEUE)),
        "outbox": int(ledger.redis.zcard(ledger.outbox_key)),
    }
    at = now_ms()
    start_workers(run)
    seen = set(job_ids(run))
    run.faults.append(
        Fault(f"{len(runs)} interrupted runs; workers started, the command run again", at, at, left)
    )
    proc = spawn_produce(run, "produce-rerun", "--wait", "--timeout", f"{JOB_TIMEOUT_S:g}")
    try:
        code = proc.wait(JOB_TIMEOUT_S + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = (run.workdir / "produce-rerun.log").read_text(errors="replace")
    again = re.search(r"enqueued (\d+) chunks .*?(?:\((\d+) planned by an earlier run)?", out)
    run.extra["rerun"] = {
        "exit": code,
        "seconds": round((now_ms() - at) / 1000, 1),
        "enqueued": int(again.group(1)) if again else None,
        "republished": int(again.group(2) or 0) if again else None,
    }
    return new_job(run, seen)


def produce_checks(run: Run, fig: Figures) -> list[Check]:
    runs = run.extra.get("interrupted_runs", [])
    rerun = run.extra.get("rerun", {})
    before = run.extra.get("before_rerun", {})
    unfinished = [r for r in runs if r["exit"] != 0 and not r["planning_finished"]]
    points = Counter((r["signal"], r["point"]) for r in runs)
    return [
        Check(
            f"{len(PRODUCE_POINTS) * len(PRODUCE_SIGNALS)} runs interrupted (SIGINT and SIGKILL, each at "
            "a random time from start, in planning and while waiting for room)",
            len(unfinished) == len(runs) == len(PRODUCE_POINTS) * len(PRODUCE_SIGNALS)
            and len(points) == len(runs),
            f"{len(unfinished)} of {len(runs)} ended without finishing planning",
        ),
        Check(
            "the interrupted runs left units planned and not done",
            before.get("units_planned", 0) > 0,
            f"{before}",
        ),
        Check("the same command run again with --wait exited 0", rerun.get("exit") == 0, f"{rerun}"),
    ]


# -- scenario 10: lost messages, the sweeper alone -------------------------------------------------------


def queued_key(raw: str) -> str:
    """The unit key of a Celery message as it waits in the broker's list."""
    try:
        args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
        return str(args[0]["key"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def lossy_submit(run: Run, prod: Producer) -> str:
    """Record every unit as the producer does, but publish only two in three: the third is lost between
    its record and its message (what a crash or a lost reply does)."""
    ledger = prod.ledger
    job = f"lossy-{uuid.uuid4().hex[:6]}"
    ledger.create_job(job, route=ROUTE, paths=[str(run.src)])
    unpublished = []
    for n, desc in enumerate(prod.plan(run.src, job_id=job, route=ROUTE)):
        message = desc.to_message()
        ledger.plan(desc.key, job, descriptor=json.dumps(message))
        if n % 3 == 1:
            unpublished.append(desc.key)
        else:
            prod.celery.send_task(TASK_NAME, args=[message], queue=QUEUE)
    ledger.finish_planning(job)
    at = now_ms()
    run.faults.append(Fault(f"{len(unpublished)} units recorded, never published", at, at, unpublished))
    return job


def drop_queue(run: Run) -> None:
    """Once a quarter is committed, delete the broker's queue (its messages lost); then follow every lost
    unit until the sweeper has published it again."""
    client = run.ledger().redis
    lost = set(run.faults[0].interrupted)
    seen: dict[str, int] = {}
    dropped = False
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline and not (dropped and lost <= set(seen)):
        if not dropped and committed(run) >= run.sizes.chunks // 4:
            pipe = client.pipeline(transaction=True)
            pipe.lrange(QUEUE, 0, -1)
            pipe.delete(QUEUE)
            raw, _ = pipe.execute()
            keys = [k for k in map(queued_key, raw) if k]
            at = now_ms()
            run.faults.append(Fault(f"broker queue deleted: {len(keys)} messages lost", at, at, keys))
            lost |= set(keys)
            dropped = True
        for key in lost - set(seen):
            if int(client.hget(f"{PREFIX}:unit:{key}", "republished") or 0):
                seen[key] = now_ms()
        time.sleep(0.1)
    run.extra["republished_seen_ms"] = seen


def lost_checks(run: Run, fig: Figures) -> list[Check]:
    ledger = run.ledger()
    seen: dict[str, int] = run.extra.get("republished_seen_ms", {})
    stats = ledger.stats()
    out = []
    delays = {}
    for fault in run.faults:
        again = [seen.get(k) for k in fault.interrupted]
        waits = [(t - fault.end_ms) / 1000 for t in again if t is not None]
        delays[fault.what] = max(waits, default=None)
        out.append(
            Check(
                f"{fault.what}: every one published again by the sweeper",
                bool(fault.interrupted) and len(waits) == len(again),
                f"{len(waits)} of {len(again)} re-published, the last {seconds(max(waits, default=None))} "
                "after the loss",
            )
        )
    lost = {k for f in run.faults for k in f.interrupted}
    run.extra["republish_delay_s"] = delays
    run.extra["republished_stat"] = stats.get("republished", 0)
    bound = lost_bound_s(run)
    dropped = run.faults[-1] if len(run.faults) > 1 else None
    took = delays.get(dropped.what) if dropped else None
    return [
        *out,
        Check(
            "stats: republished counts every lost unit",
            stats.get("republished", 0) >= len(lost),
            f"{stats.get('republished', 0)} re-published, {len(lost)} lost",
        ),
        Check(
            "the messages lost with the queue re-published within republish_after_s + sweep_interval_s + "
            f"{RECOVERY_SLACK_S:g} s",
            took is not None and took <= bound,
            f"{seconds(took)} (bound {bound:g} s)",
        ),
    ]


def lost_bound_s(run: Run) -> float:
    led = run.stack.settings["ledger"]
    return (
        float(led.get("republish_after_s", REPUBLISH_AFTER_S))
        + float(led.get("sweep_interval_s", SWEEP_INTERVAL_S))
        + RECOVERY_SLACK_S
    )


# -- scenario 11: Redis out of memory --------------------------------------------------------------------

# maxmemory at half of used_memory: every write is refused at once. (32 KiB above used_memory relied on the
# run's own growth to reach it, and a short run could finish first, never refused.)
REFUSED = "Redis refused a ledger operation"


def oom_errors(client: redis.Redis) -> int:
    """Commands Redis refused with OOM since it started (INFO errorstats)."""
    stat = client.info("errorstats").get("errorstat_OOM", {})
    return int(stat.get("count", 0)) if isinstance(stat, dict) else 0


def refused_lines(run: Run) -> int:
    return sum(error_lines(w, REFUSED) for w in run.stack.workers)


def starve_redis(run: Run) -> None:
    """Once a quarter is committed, set maxmemory below what Redis uses (noeviction): ledger writes are
    refused. Keep it so a while, then lift the limit."""
    client = run.ledger().redis
    wait_until(lambda: committed(run) >= run.sizes.chunks // 4, timeout=JOB_TIMEOUT_S)
    wait_until(lambda: busy_children(run), timeout=60)
    interrupted = list(leases(run))
    used = int(client.info("memory")["used_memory"])
    rows, oom = vm_rows_inserted(run.vm_url), oom_errors(client)
    at = now_ms()
    client.config_set("maxmemory-policy", "noeviction")
    limit = used // 2
    client.config_set("maxmemory", limit)
    first = wait_until(lambda: refused_lines(run), timeout=60)
    time.sleep(run.sizes.outage_s * 2)
    rows_refused = vm_rows_inserted(run.vm_url) - rows
    client.config_set("maxmemory", 0)
    end = now_ms()
    run.faults.append(Fault(f"maxmemory {limit:,} B for {(end - at) / 1000:.0f} s", at, end, interrupted))
    run.extra["oom"] = {
        "used_memory": used,
        "refused_logged": refused_lines(run),
        "refused_logged_before_lift": first or 0,
        "oom_refusals_by_redis": oom_errors(client) - oom,
        "rows_written_while_refused": rows_refused,
        "rows_bound": oom_rows_bound(run),
    }


def oom_rows_bound(run: Run) -> int:
    """What may be written while the ledger refuses: each worker's chunk in flight, and one more each."""
    return 2 * WORKERS * run.sizes.chunk_lines * len(FIELDS)


def oom_checks(run: Run, fig: Figures) -> list[Check]:
    oom = run.extra.get("oom", {})
    return [
        Check(
            "Redis refused ledger writes (OOM) and the workers said so",
            oom.get("oom_refusals_by_redis", 0) > 0 and oom.get("refused_logged", 0) > 0,
            f"{oom.get('oom_refusals_by_redis')} OOM refusals by Redis, {oom.get('refused_logged')} "
            f"`{REFUSED}` lines",
        ),
        Check(
            "no rewrite loop: rows written while refused bounded by two chunks a worker",
            0 <= oom.get("rows_written_while_refused", -1) <= oom_rows_bound(run),
            f"{oom.get('rows_written_while_refused')} rows (bound {oom_rows_bound(run):,})",
        ),
        Check("work resumed after the limit was lifted", fig.next_commit_s is not None, ""),
    ]


# -- scenario 12: a unit that kills its process ------------------------------------------------------------


def worker_children(run: Run) -> set[int]:
    return {pid for w in run.live_workers() for pid in children(w.proc.pid)}


def poison_killer(run: Run, key: str, stop: threading.Event) -> None:
    """SIGKILL whichever worker child holds ``key``'s lease, a moment after it claimed it, as long as the
    claim is within max_attempts (the claim after that only dead-letters the unit: it runs nothing)."""
    rng = random.Random(12)
    client = run.ledger().redis
    max_attempts = int(run.stack.settings["worker"]["max_attempts"])
    claims: list[dict[str, Any]] = run.extra.setdefault("poison_claims", [])
    seen: set[str] = set()
    while not stop.wait(0.01):
        try:
            holder = cast(str | None, client.get(f"{PREFIX}:lease:{key}"))
            if not holder or holder in seen:
                continue
            seen.add(holder)
            attempts = int(client.hget(f"{PREFIX}:unit:{key}", "attempts") or 0)
            pid = int(holder.rsplit(":", 1)[1])
            claim: dict[str, Any] = {"attempt": attempts, "pid": pid, "killed": False}
            claims.append(claim)
            if attempts > max_attempts or pid not in worker_children(run):
                continue
            time.sleep(rng.uniform(0.05, 0.5) * run.sizes.slow_s)  # in its first writes
            if client.get(f"{PREFIX}:lease:{key}") == holder:
                os.kill(pid, signal.SIGKILL)
                claim.update(killed=True, at_ms=now_ms())
        except (redis.RedisError, ProcessLookupError):
            continue


def start_poison_killer(run: Run) -> None:
    key = run.keys[len(run.keys) // 2]
    run.extra["poison_key"] = key
    run.extra["expected_dead"] = 1
    stop = threading.Event()
    thread = threading.Thread(target=poison_killer, args=(run, key, stop), name="poison-killer", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(5)

    run.cleanup.append(halt)


def poison_kill_checks(run: Run, fig: Figures) -> list[Check]:
    for hook in run.cleanup:
        hook()
    run.cleanup.clear()
    ledger = run.ledger()
    key = run.extra.get("poison_key", "")
    max_attempts = int(run.stack.settings["worker"]["max_attempts"])
    kills = [c for c in run.extra.get("poison_claims", []) if c["killed"]]
    entries = [e for e in ledger.dead_letters(job_id=run.job_id) if e.get("key") == key]
    entry = entries[0] if entries else None
    unit = ledger.unit(key)
    if entry is not None and kills:
        run.extra["first_kill_to_dead_letter_s"] = (int(entry.get("ts_ms")) - kills[0]["at_ms"]) / 1000
    got = {k: entry.get(k) for k in ("reason", "attempts", "history")} if entry else {}
    run.extra["poison_entry"] = got
    return [
        Check(
            f"the chosen unit's holder killed {max_attempts} times",
            len(kills) == max_attempts,
            f"{len(kills)}",
        ),
        Check(
            f"the chosen unit dead-lettered as poison at claim {max_attempts + 1}, with its descriptor and "
            "history (transient failures only: a killed claim records none)",
            unit.get("state") == "dead"
            and len(entries) == 1
            and got.get("reason") == "poison"
            and got.get("attempts") == str(max_attempts + 1)
            and entry is not None
            and "history" in entry.fields
            and bool(entry.get("descriptor")),
            f"state {unit.get('state')}, {len(entries)} entry: {got}",
        ),
    ]


# -- the scenarios ------------------------------------------------------------------------------------

SCENARIOS = [
    Scenario(
        "child-kill",
        "1. SIGKILL a worker child process {kills} times",
        "Every write answered {slow_s:g} s late (forwarded at once), so a chunk lasts about two of those. "
        "{kills} times, a worker child holding a chunk's lease was sent SIGKILL a moment after it started "
        "the chunk; the pool started a new child each time.",
        drive=kill_children,
        checks=kill_checks,
        expected_log=KILL_LOG,
        rules=slow_rules,
        recovery="from each kill to the next commit / to the commit of the chunk it interrupted. The killed "
        "chunk's message goes back to the far end of the queue (kombu requeues a rejected message with "
        "LPUSH, where new ones go), so the second figure includes its wait behind the chunks still queued",
    ),
    Scenario(
        "worker-kill",
        "2. SIGKILL a whole worker, start a new one",
        "Writes answered {slow_s:g} s late. Once three quarters of the chunks were committed (so that few "
        "messages wait ahead of a re-published one), worker w2's main "
        "process and child were sent SIGKILL together in the first writes of a chunk, and a new worker w3 "
        "was started a second later. The visibility timeout is the default (3,600 s): the message the "
        "dead worker had reserved stays in the broker's `unacked` hash, so the chunk can only come back "
        "through its lease lapsing and the outbox sweeper re-publishing it.",
        drive=kill_worker,
        checks=worker_kill_checks,
        expected_log=KILL_LOG,
        rules=slow_rules,
        recovery="from w3 ready to the commit of the chunk w2 was running (kill_to_commit_s below: from "
        "the kill itself)",
    ),
    Scenario(
        "redis-restart",
        "3. SIGKILL Redis mid-run, restart it (AOF everysec)",
        "Redis with appendonly yes, appendfsync everysec. Writes answered {slow_s:g} s late. Once a quarter "
        "of the chunks were committed, redis-server was sent SIGKILL while chunks were running (no clean "
        "shutdown: up to the last second of writes, ledger and broker alike, may be lost), kept down "
        "{outage_s:g} s and started again on the same port and data directory. Nothing restarted the "
        "workers.",
        drive=restart_redis,
        checks=redis_checks,
        rules=slow_rules,
        appendonly=True,
        expected_log=("consumer: Cannot connect to ", "Error on restarting Gossip"),
        recovery="from Redis back up to the next commit / to the commit of the chunks running at the stop",
    ),
    Scenario(
        "throttled",
        "4. 30% of writes answered 429 or 503 with Retry-After",
        "The fault server answered 15% of writes 429 with Retry-After: {ra_429} and 15% 503 with "
        "Retry-After: {ra_503} (seeded), without writing them. Every request was recorded with its lines: "
        "a refused body sent again is found by its SHA-256, and its arrival must be at least Retry-After "
        "after the refusal.",
        drive=no_drive,
        checks=throttle_checks,
        rules=throttle_rules,
    ),
    Scenario(
        "ambiguous",
        "5. Ambiguous writes: accepted, never answered",
        "The fault server wrote 7% of the requests to VictoriaMetrics and then reset the connection, and "
        "wrote 3% and never answered (the route's timeout_s set to 5 s): the client cannot know whether "
        "those batches landed.",
        drive=no_drive,
        checks=ambiguous_checks,
        rules=lambda _: AMBIGUOUS_RULES,
        route_timeout_s=5.0,
    ),
    Scenario(
        "unauthorized",
        "6. A route that answers 401",
        "The fault server wanted another token than the route's and answered every write 401. The "
        "requests it received are counted next to the number of chunks.",
        drive=no_drive,
        checks=unauthorized_checks,
        token="the-right-token",
        lands=False,
    ),
    Scenario(
        "poison",
        "7. Poison input",
        "Besides the clean file, the job had a file mixing good lines with malformed ones, one line over "
        "1 MiB and one that is not UTF-8. Then descriptors were put on the queue (as anyone who can write "
        "to Redis could) naming `../../etc/passwd`, a traversal from a root to `/etc/passwd`, a traversal "
        "and an absolute path to a file outside the roots, and a symlink in a root pointing there; each "
        "carried the outside file's true size, mtime and SHA-256, so a read would have landed its "
        "unique measurement. Last, a message with content type `application/x-python-serialize` whose "
        "unpickling would create a marker file.",
        prepare=prepare_poison,
        drive=inject_poison,
        checks=poison_checks,
        expected_log=("Received invalid task message: Refusing to deserialize untrusted content",),
    ),
    Scenario(
        "long-chunk",
        "8. A chunk longer than the visibility timeout",
        "visibility_timeout_s {long_vis} s, unacked_restore_interval_s 1 s; the file in two chunks, "
        "every write answered {long_write:g} s late, so each chunk runs for many visibility timeouts, and "
        "a third worker, idle, takes every copy Redis hands out again while the first still runs it.",
        drive=no_drive,
        prepare=long_prepare,
        checks=long_chunk_checks,
        rules=long_rules,
        worker={
            "visibility_timeout_s": LONG_VISIBILITY_S,
            "retry_max_s": LONG_VISIBILITY_S,  # the settings refuse a countdown above the visibility timeout
            "retry_after_max_s": LONG_VISIBILITY_S - 1,  # and a Retry-After cap that is not below it
            "unacked_restore_interval_s": 1,
            "writes_in_flight": 1,
        },
    ),
    Scenario(
        "produce-interrupt",
        "9. `tsbatch produce` interrupted, then run again",
        "No worker running and producer max_queue_depth 1, so that `tsbatch produce` of the file "
        "({chunks} chunks) records and publishes 15 units and then waits for room. Six runs of the "
        "same command, each sent SIGINT (Ctrl-C) or SIGKILL: 0.1 to 1.5 s after its start, after a "
        "random number of units was recorded (planning and publishing), or while it waited for room "
        "(seeded delays and counts). Then the workers were started and the same command run again with "
        "--wait; the messages the killed runs had published were still queued.",
        drive=no_drive,
        submit=interrupted_submit,
        workers_first=False,
        checks=produce_checks,
        producer={"max_queue_depth": 1},
        recovery="from the workers' start (then the rerun) to the commit of the last unit the interrupted "
        "runs had left planned",
    ),
    Scenario(
        "lost-message",
        "10. Lost messages: the sweeper alone",
        "Every unit recorded in the ledger as the producer does, but one in three never published (lost "
        "between its record and its message); writes answered {slow_s:g} s late; once a quarter of the "
        "chunks were committed, the broker's queue `tsbatch.chunks` was deleted with the messages in it. "
        "Nothing was run again: only the workers' outbox sweepers could publish those units again.",
        drive=drop_queue,
        submit=lossy_submit,
        checks=lost_checks,
        rules=slow_rules,
        ledger={"republish_after_s": 2.0, "sweep_interval_s": 1.0},
        recovery="from each loss to the commit of the last unit it lost (units never published wait for "
        "the queue to drain: the sweep rule publishes a never-claimed unit when the queue is empty or "
        "later units were claimed)",
    ),
    Scenario(
        "redis-oom",
        "11. Redis out of memory (maxmemory, noeviction)",
        "Writes answered {slow_s:g} s late. Once a quarter of the chunks were committed, Redis's maxmemory "
        "was set to half its used_memory, policy noeviction, so that ledger writes (and the broker's) "
        "were refused with OOM; {outage_s:g} x 2 s after the first refusal the workers logged, maxmemory "
        "was set back to 0. Rows VictoriaMetrics accepted meanwhile were counted.",
        drive=starve_redis,
        checks=oom_checks,
        rules=slow_rules,
        ledger={"republish_after_s": 5.0, "sweep_interval_s": 1.0},
        # The consumer's own refusals: it reconnects (broker_channel_error_retry), throttled by Celery,
        # and Celery's gossip fails to restart on the way, as after a Redis restart (scenario 3).
        expected_log=(
            REFUSED,
            "consumer: Cannot connect to ",
            "Frequent restarts detected",
            "Error on restarting Gossip",
        ),
        recovery="from maxmemory 0 to the next commit / to the commit of the chunks running when it was set",
    ),
    Scenario(
        "poison-kill",
        "12. A unit that kills its process every time",
        "Writes answered {slow_s:g} s late. A thread of the scenario sent SIGKILL to whichever worker child "
        "held the lease of one chosen unit, a moment after each claim, while the claim was within "
        "worker.max_attempts (3): the unit's work never finished, as with an input that crashes the "
        "parser.",
        drive=start_poison_killer,
        checks=poison_kill_checks,
        rules=slow_rules,
        worker={"lease_ttl_s": 3.0, "heartbeat_s": 1.0, "max_attempts": 3, "max_retries": 2},
        ledger={"republish_after_s": 3.0, "sweep_interval_s": 1.0},
        expected_log=KILL_LOG,
    ),
]


# -- one scenario -------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    title: str
    summary: str
    recovery: str
    figures: Figures
    checks: list[Check]
    faults: list[Fault]
    notes: list[str]
    extra: dict[str, Any]
    expected_log: tuple[str, ...] = ()
    settings: str = ""

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)


def target_checks(sc: Scenario, fig: Figures, extra: dict[str, Any]) -> list[Check]:
    dead = int(extra.get("expected_dead", 0))  # units the scenario dead-letters on purpose
    every = (
        Check(
            "every chunk committed" + (f" but the {dead} meant to be dead-lettered" if dead else ""),
            fig.committed_once == fig.chunks - dead and fig.dead == dead,
            f"{fig.committed_once} of {fig.chunks}, {fig.dead} dead-lettered",
        )
        if sc.lands
        else Check("every chunk dead-lettered", fig.dead == fig.chunks, f"{fig.dead} of {fig.chunks}")
    )
    return [
        Check("0 lost", fig.lost == 0, f"{fig.lost} samples"),
        Check("0 duplicated", fig.duplicated == 0, f"{fig.duplicated} samples"),
        Check("0 committed twice", fig.committed_twice == 0, f"{fig.committed_twice}"),
        Check("0 stuck workers", fig.stuck == 0, f"{fig.stuck}"),
        Check("0 stranded (no unit left planned or in the outbox)", fig.stranded == 0, f"{fig.stranded}"),
        every,
    ]


def unexpected(sc: Scenario, errors: dict[str, int]) -> list[str]:
    return [m for m in errors if not any(e in m for e in sc.expected_log)]


def log_check(sc: Scenario, fig: Figures) -> Check:
    odd = unexpected(sc, fig.log_errors)
    return Check("no unexpected ERROR in the worker logs", not odd, "; ".join(f"`{m}`" for m in odd[:3]))


def settings_text(sc: Scenario, sizes: Sizes) -> str:
    """What differs from the common setup, as the run used it."""
    parts = [f"worker {k} = {v}" for k, v in sc.worker.items()]
    parts += [f"ledger {k} = {v}" for k, v in sc.ledger.items()]
    parts += [f"producer {k} = {v}" for k, v in sc.producer.items()]
    if sc.route_timeout_s is not None:
        parts.append(f"route timeout_s = {sc.route_timeout_s:g}")
    if sc.token is not None:
        parts.append("the fault server requires another token than the route's")
    if sc.appendonly:
        parts.append("redis-server --appendonly yes --appendfsync everysec")
    rules = sc.rules(sizes)
    parts.append(f"fault rules `{json.dumps(rules)}`" if rules else "no fault rules")
    return "; ".join(parts) + "."


def texts(sc: Scenario, sizes: Sizes) -> tuple[str, str]:
    values = {**asdict(sizes), "kills": sizes.kills, "slow_s": sizes.slow_s, "outage_s": sizes.outage_s}
    values["chunks"] = sizes.chunks
    ra = [r["retry_after"] for r in throttle_rules(sizes)]
    values.update(long_vis=LONG_VISIBILITY_S, long_write=LONG_WRITE_S, ra_429=ra[0], ra_503=ra[1])
    return sc.title.format(**values), sc.summary.format(**values)


def run_scenario(sc: Scenario, sizes: Sizes, root: Path) -> Result:
    title, summary = texts(sc, sizes)
    say(title)
    r = Result(sc.name, title, summary, sc.recovery, Figures(), [], [], [], {}, sc.expected_log)
    r.settings = settings_text(sc, sizes)
    try:
        run = start(sc, sizes, root)
    except Exception as e:  # report it with the rest, and go on with the next scenario
        r.checks.append(Check("the stack started", False, f"{type(e).__name__}: {e}"))
        return r
    r.faults, r.notes, r.extra = run.faults, run.notes, run.extra
    try:
        execute(run)
        r.figures = measure(run)
        r.checks += sc.checks(run, r.figures)
        r.figures.stuck = probe(run)
    except Exception as e:
        r.checks.append(Check("the scenario ran to its end", False, f"{type(e).__name__}: {e}"))
    finally:
        stop(run)
    r.figures.log_errors = log_errors(run)
    r.checks = [*target_checks(sc, r.figures, r.extra), *r.checks, log_check(sc, r.figures)]
    unmet = ", ".join(f"{c.what}: {c.detail}" for c in r.checks if not c.ok)
    say(f"{sc.name}: {verdict(r)} in {r.figures.seconds:.0f} s;", unmet or "all targets met")
    return r


# -- the report ---------------------------------------------------------------------------------------


def _deb_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": _deb_version("redis-server"),
        "victoria-metrics": _deb_version("victoria-metrics"),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def recovery(r: Result) -> str:
    f = r.figures
    if not r.faults:
        return "-"
    return f"{seconds(f.next_commit_s)} / {seconds(f.recovered_s)}"


def verdict(r: Result) -> str:
    return "PASS" if r.passed else "FAIL"


def data_table(results: list[Result]) -> list[str]:
    rows = [
        "| scenario | points | samples expected | landed | missing | of which dead-lettered | lost "
        "| duplicated | rewrites | run | verdict |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        f = r.figures
        rows.append(
            f"| {r.title} | {f.points:,} | {f.samples:,} | {f.landed:,} | {f.missing:,} | {f.dead_samples:,} "
            f"| {f.lost:,} | {f.duplicated:,} | {f.rewrites:,} | {f.seconds:.0f} s | **{verdict(r)}** |"
        )
    return rows


def delivery_table(results: list[Result]) -> list[str]:
    rows = [
        "| scenario | chunks | committed once | committed twice | dead-lettered | stranded | redeliveries "
        "| re-claims | write requests | failed writes | write retries | chunk retries "
        "| time to recover (next commit / interrupted done) | stuck workers |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        f = r.figures
        rows.append(
            f"| {r.title.split('.')[0]} {r.name} | {f.chunks} | {f.committed_once} | {f.committed_twice} "
            f"| {f.dead} | {f.stranded} | {f.redeliveries} | {f.reclaims} | {f.requests:,} "
            f"| {f.failed_writes:,} "
            f"| {f.write_retries} | {f.chunk_retries} "
            f"| {recovery(r)} | {f.stuck} |"
        )
    return rows


def scenario_section(r: Result) -> list[str]:
    f = r.figures
    out = [f"### {r.title}", "", f"**Done.** {r.summary}", ""]
    observed = (
        f"**Observed.** {f.landed:,} of {f.samples:,} samples landed with their source value "
        f"({f.missing:,} missing, {f.dead_samples:,} of them in the dead-letter queue, {f.lost:,} lost; "
        f"{f.duplicated} duplicated; {f.rewrites:,} rows rewritten); {f.committed_once} of "
        f"{f.chunks} chunks committed, {f.dead} dead-lettered, {f.committed_twice} committed twice, "
        f"{f.stranded} stranded; "
        f"{f.redeliveries} redelivered copies found the chunk done or leased, {f.reclaims} re-claimed; "
        f"{f.requests:,} write requests, {f.failed_writes:,} failed; {f.write_retries} batch(es) retried "
        f"in the task, {f.chunk_retries} chunk(s) handed back to Celery for a later retry; "
        f"{f.seconds:.0f} s from submit to done."
    )
    out += [observed, "", f"**Settings.** {r.settings}", ""]
    if r.faults:
        out += [f"Time to recover: {r.recovery}.", ""]
        out += [fault_line(fault) for fault in r.faults]
        out.append("")
    out += extra_lines(r)
    out += ["Targets:", ""]
    out += [
        f"- {'PASS' if c.ok else '**FAIL**'} {c.what}{': ' + c.detail if c.detail else ''}" for c in r.checks
    ]
    out.append("")
    out += log_lines(r)
    return out


def fault_line(fault: Fault) -> str:
    nxt = f"next commit {seconds(fault.next_commit_s)} after"
    if not fault.interrupted:
        return f"- {fault.what}: {nxt}; no chunk was running"
    if fault.recovered_s is None:
        return f"- {fault.what}: {nxt}; **an interrupted chunk never committed**"
    n = len(fault.interrupted)
    return f"- {fault.what}: {nxt}; the {n} chunk(s) it interrupted {fault.recovered_s:.1f} s after"


def extra_lines(r: Result) -> list[str]:
    skip = {"files", "commit_ms", "poison_descs", "poison_job", "extra_chunks", "expected_dead"}
    skip |= {"republished_seen_ms", "killed_ms", "republished_ms"}
    shown = {k: v for k, v in r.extra.items() if k not in skip}
    out = [f"- {k}: `{json.dumps(v, default=str)[:400]}`" for k, v in shown.items()]
    out += [f"- note: {n}" for n in r.notes]
    return [*out, ""] if out else []


def log_lines(r: Result) -> list[str]:
    errors = r.figures.log_errors
    if not errors:
        return ["Worker logs: no ERROR lines, no event-loop or session teardown errors.", ""]
    out = ["Worker logs (ERROR lines and teardown errors, by message; expected: caused by the fault):", ""]
    for msg, n in sorted(errors.items(), key=lambda kv: -kv[1])[:10]:
        tag = "expected" if any(e in msg for e in r.expected_log) else "**unexpected**"
        out.append(f"- {n} x `{msg}` ({tag})")
    return [*out, ""]


def render(results: list[Result], sizes: Sizes, meta: dict[str, str]) -> str:
    passed = sum(r.passed for r in results)
    failed = [
        f"{r.title.split('.')[0]} ({'; '.join(c.what + ': ' + c.detail for c in r.checks if not c.ok)})"
        for r in results
        if not r.passed
    ]
    out = [
        "# Reliability under faults",
        "",
        "<!-- Generated by scripts/chaos.py (make chaos). Do not edit: run it again. -->",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}, in {meta['took']}; never edited by hand.",
        f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['os']}, Python {meta['python']}, "
        f"redis-server {meta['redis']}, VictoriaMetrics {meta['victoria-metrics']}; load average "
        f"{meta['load_before']} before, {meta['load_after']} after.",
        "",
        f"**{passed} of {len(results)} scenarios met every target** (0 lost, 0 duplicated, 0 committed "
        "twice, 0 stranded, 0 stuck workers, and each scenario's own)."
        + (f" Not met: {', '.join(failed)}." if failed else ""),
        "",
        "## Setup",
        "",
        f"Each scenario runs on a fresh stack: redis-server, VictoriaMetrics (InfluxDB v2 write API) behind "
        f"the fault-injection server of `tests/faultserver.py`, and {WORKERS} workers of one process each. "
        f"The data: {sizes.lines:,} points ({SERIES} series x {sizes.steps:,} steps, fields `usage` and "
        f"`count`: {2 * sizes.lines:,} samples) in one line-protocol file, planned into chunks "
        f"of {sizes.chunk_lines:,} lines (the file's last few smaller: `producer.taper`), written in "
        f"batches of {sizes.batch_lines:,} lines (five writes a chunk, four in flight). "
        "Settings: the defaults, except "
        + ", ".join(f"{k} = {v:g}" for k, v in COMMON_WORKER.items())
        + " everywhere, and what a scenario's Settings say.",
        "",
        "## Data",
        "",
        *data_table(results),
        "",
        "## Delivery",
        "",
        *delivery_table(results),
        "",
        "## Scenarios",
        "",
    ]
    for r in results:
        out += scenario_section(r)
    out += DEFINITIONS
    return "\n".join(out).rstrip() + "\n"


DEFINITIONS = [
    "## What the columns mean",
    "",
    "- **landed**: distinct (series, time) samples read back from VictoriaMetrics "
    "(`/api/v1/export`) whose value is the source's. **missing**: expected samples that did not land; "
    "**of which dead-lettered**: those in a chunk the dead-letter queue holds with its reason (they can be "
    "replayed with `tsbatch dlq replay`); **lost**: missing and not in the dead-letter queue. "
    "**duplicated**: landed samples the source does not have (another value at the same series and time, "
    "an unknown series or time): real corruption.",
    "- **rewrites**: rows VictoriaMetrics accepted (`vm_rows_inserted_total`) beyond the distinct samples "
    "it holds, i.e. batches written again after a crash or an unanswered write. InfluxDB overwrites a point "
    "with the same series, field and time, so these are harmless.",
    "- **committed once / twice**: chunks of the job whose ledger hash is `committed`; the ledger's "
    "`commits` counter minus every committed chunk hash (a second commit of a chunk would show here).",
    "- **stranded**: units that nothing will finish by itself: still `planned` in the ledger, or still in "
    "its outbox (`P:outbox`), once the job is done.",
    "- **redeliveries**: deliveries that found the chunk already done (`redelivered_done`) or leased by "
    "another process (`busy`). **re-claims**: claims beyond the first, per chunk (`attempts` - 1).",
    "- **failed writes**: requests the fault server answered with an error, reset, or never answered. "
    "**write retries**: a batch sent again inside the task (the ledger's `retries` counter). "
    "**chunk retries**: a chunk handed back to Celery with a countdown (`retry job=` in the worker logs).",
    "- **time to recover**: from the end of a fault (kill, new worker ready, Redis back up) to the next "
    "commit in the ledger, and to the commit of the chunks that were leased when the fault struck "
    "(`committed_ms`); the worst fault of the scenario.",
    "- **stuck workers**: workers that, after the scenario, are dead, do not answer a Celery ping within "
    f"30 s, or execute none of a probe job's chunks (two a worker, on a second route whose writes take "
    f"{PROBE_DELAY_S:g} s, so every live worker must take one) within {PROBE_TIMEOUT_S:.0f} s.",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=200_000, help="points per scenario (default 200,000)")
    parser.add_argument(
        "--scenario", action="append", choices=[s.name for s in SCENARIOS], help="run only these (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="3 kills instead of 10, shorter faults")
    parser.add_argument("--out", type=Path, default=DOC, help=f"the report (default {DOC.relative_to(ROOT)})")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="stacks and logs (default var/chaos)")
    return parser.parse_args(argv)


def to_json(results: list[Result]) -> list[dict[str, Any]]:
    return [{**asdict(r), "passed": r.passed} for r in results]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes(args.points, args.quick)
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    meta = {
        **machine(),
        "load_before": load(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    meta["command"] = shlex.join(["scripts/chaos.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.monotonic()
    results = [run_scenario(s, sizes, args.workdir) for s in chosen]
    meta.update(load_after=load(), took=f"{(time.monotonic() - t0) / 60:.1f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, sizes, meta))
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=1, default=str))
    say(f"wrote {args.out}: {sum(r.passed for r in results)} of {len(results)} scenarios met every target")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
