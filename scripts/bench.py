"""``make bench``: the whole pipeline against the server's own ingest limit (issue #4).

One run, one generated data set, one local VictoriaMetrics (InfluxDB v2 write API), so the ratios hold
on a noisy shared machine:

    L  the limit: the same points pre-serialized, pre-compressed (gzip 1, 5,000-line bodies) and posted
       straight to /api/v2/write with aiohttp, 4 requests in flight;
    B  the baseline script: one process, InfluxDBClientAsync(enable_gzip=True), line-protocol strings in
       5,000-line batches, asyncio.Semaphore(4);
    P  tsbatch: files -> tsbatch produce -> Redis -> 2 worker processes -> the server, first enqueue to
       last commit.

Also: worker and producer peak RSS for a small and a large file, the queue and ledger overhead, and a
sweep of chunk size x writes in flight. Writes docs/BENCHMARKS.md and docs/bench-sweep.png.

And windows (issue #9), on a stack of their own (a hot and a warm VictoriaMetrics):

    W  a worker-mode downsample of 2,000,000 raw points, hot -> warm: wall time of
       `tsbatch backfill JOB --from --to --wait`, 2 worker processes already running;
    E  the read limit: the same /api/v1/export over the whole range, read to its end by urllib;
       and the workers' peak RSS with 10- and 60-minute windows over the same points.

And archives (issue 10), on a stack of their own, over the same raw points:

    A  archive jobs (every 10m, then 1h) into a local folder: wall time of
       `tsbatch backfill JOB --from --to --wait`, 2 worker processes already running, against the
       same E; and the Parquet files' size per million points, read from the files.

    .venv/bin/python scripts/bench.py [--quick] [--skip-memory] [--skip-sweep] [--skip-windows]
        [--skip-archive] [--keep]
    .venv/bin/python scripts/bench.py --windows-only [--quick]   # replaces only the window section
    .venv/bin/python scripts/bench.py --archive-only [--quick]   # replaces only the archive section
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import gzip
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs in the bench extra
import redis

from config.settings import JobSettings
from producers.schedule import Windows
from tsbatch import datagen
from tsbatch.archives import archive_path
from tsbatch.ledger import Ledger
from tsbatch.localstack import Stack, http_get, start_stack, vm_rows_inserted
from tsbatch.reads import vm_selectors
from tsbatch.windows import Definition, iso
from workers.readers import EXPORT_ROWS_PER_LINE

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / "var" / "bench"
DATA_DIR = WORKDIR / "data"
DOC = ROOT / "docs" / "BENCHMARKS.md"
PLOT = ROOT / "docs" / "bench-sweep.png"
SERIES = 1_000
FIELDS = 2
BATCH = 5_000
IN_FLIGHT = 4
ORG, BUCKET, TOKEN, ROUTE = "local", "default", "local-token", "default"
KEY_PREFIX = "tsbatch"
REPEAT = (
    2  # B and P: the better of 2 runs each (L: of 3), so that one busy second on the machine does not decide
)

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    main: int  # points per file for L / B / P
    mem_small: int
    mem_large: int
    sweep: int
    window_hosts: int  # windows: hosts (series), each with FIELDS fields ...
    window_steps: int  # ... and this many points per host and field, one every WINDOW_STEP_S
    sweep_chunks: tuple[int, ...] = (10_000, 50_000, 200_000)
    sweep_flights: tuple[int, ...] = (1, 4, 8)


FULL = Sizes(
    main=2_000_000,
    mem_small=1_000_000,
    mem_large=20_000_000,
    sweep=1_000_000,
    window_hosts=1_000,
    window_steps=1_000,
    sweep_chunks=(10_000, 50_000, 200_000, 500_000),
)
QUICK = Sizes(
    main=200_000,
    mem_small=100_000,
    mem_large=1_000_000,
    sweep=100_000,
    window_hosts=100,
    window_steps=1_000,
    sweep_chunks=(10_000, 50_000),
)


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# -- data -------------------------------------------------------------------------------------------


def data_file(kind: datagen.Kind, points: int) -> Path:
    path = DATA_DIR / f"cpu-{points}.{kind}"
    if not path.exists():
        t = time.monotonic()
        datagen.write(path, kind, series=SERIES, points_per_series=points // SERIES)
        say(f"generated {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.monotonic() - t:.0f} s")
    return path


def touch(path: Path) -> None:
    """A new mtime is a new source fingerprint: the same file is planned and written again."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def lp_batches(path: Path, size: int = BATCH) -> Iterator[list[str]]:
    with open(path, encoding="utf-8") as f:
        batch: list[str] = []
        for line in f:
            batch.append(line.rstrip("\n"))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _csv_ns(text: str) -> int:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1_000


def csv_batches(path: Path, size: int = BATCH) -> Iterator[list[str]]:
    """The baseline's own CSV mapping: csv.reader and an f-string per record, as the articles do."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        next(rows)  # header: time,host,region,usage,count
        batch: list[str] = []
        for t, host, region, usage, count in rows:
            batch.append(f"cpu,host={host},region={region} count={count}i,usage={usage} {_csv_ns(t)}")
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


# -- L: the server's limit --------------------------------------------------------------------------


def prepare_bodies(lp_path: Path) -> tuple[list[bytes], int]:
    bodies, points = [], 0
    for batch in lp_batches(lp_path):
        bodies.append(gzip.compress(("\n".join(batch) + "\n").encode(), 1))
        points += len(batch)
    return bodies, points


async def _post_all(url: str, bodies: Sequence[bytes]) -> None:
    write_url = f"{url}/api/v2/write?org={ORG}&bucket={BUCKET}&precision=ns"
    headers = {"Content-Encoding": "gzip", "Authorization": f"Token {TOKEN}", "Content-Type": "text/plain"}
    slots = asyncio.Semaphore(IN_FLIGHT)
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes) -> None:
            try:
                async with session.post(write_url, data=body, headers=headers) as r:
                    if r.status != 204:
                        raise RuntimeError(f"limit run: {r.status} {await r.text()}")
            finally:
                slots.release()

        async with asyncio.TaskGroup() as tg:
            for body in bodies:
                await slots.acquire()
                tg.create_task(post(body))


def run_limit(url: str, lp_path: Path, *, repeat: int = 3) -> float:
    """The best of ``repeat`` runs: a run lasts ~2 s and is the noisiest; the best is the strictest limit."""
    bodies, points = prepare_bodies(lp_path)
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        asyncio.run(_post_all(url, bodies))
        best = max(best, points / (time.perf_counter() - t))
    return best


# -- B: the baseline script -------------------------------------------------------------------------


async def _baseline(url: str, path: Path, kind: str) -> int:
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    slots = asyncio.Semaphore(IN_FLIGHT)
    points = 0
    async with InfluxDBClientAsync(url=url, token=TOKEN, org=ORG, enable_gzip=True, timeout=60_000) as client:
        write_api = client.write_api()

        async def send(batch: list[str]) -> None:
            try:
                await write_api.write(bucket=BUCKET, record=batch)
            finally:
                slots.release()

        async with asyncio.TaskGroup() as tg:
            for batch in (csv_batches if kind == "csv" else lp_batches)(path):
                await slots.acquire()
                tg.create_task(send(batch))
                points += len(batch)
    return points


def run_baseline(url: str, path: Path, kind: str) -> float:
    t = time.perf_counter()
    points = asyncio.run(_baseline(url, path, kind))
    return points / (time.perf_counter() - t)


# -- P: tsbatch ------------------------------------------------------------------------------------


@dataclass
class Watch:
    """Peak RSS of the producer process and of each worker process, polled every 50 ms."""

    producer: psutil.Process | None = None
    workers: list[psutil.Process] = field(default_factory=list)
    producer_peak: int = 0
    worker_peaks: dict[int, int] = field(default_factory=dict)
    worker_tree_peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        while not self.stop.wait(0.05):
            if self.producer is not None:
                self.producer_peak = max(self.producer_peak, _rss_tree(self.producer))
            tree = 0
            for proc in self.workers:
                rss = _rss(proc)
                self.worker_peaks[proc.pid] = max(self.worker_peaks.get(proc.pid, 0), rss)
                tree += rss
            self.worker_tree_peak = max(self.worker_tree_peak, tree)


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def _rss_tree(proc: psutil.Process) -> int:
    try:
        return _rss(proc) + sum(_rss(c) for c in proc.children(recursive=True))
    except psutil.Error:
        return 0


def worker_processes(stack: Stack) -> list[psutil.Process]:
    procs = []
    for w in stack.workers:
        parent = psutil.Process(w.proc.pid)
        procs += [parent, *parent.children(recursive=True)]
    return procs


@dataclass
class PipelineRun:
    summary: dict[str, Any]
    producer_peak: int
    worker_peaks: dict[int, int]
    worker_tree_peak: int
    created_ms: int  # the job's creation, before the first chunk is planned
    first_ms: int  # the first enqueue: where the issue starts P's clock
    last_ms: int  # the last commit
    wall_s: float = 0.0  # the `tsbatch produce --wait` command's own wall time: P_user's clock

    @property
    def seconds(self) -> float:
        return max(self.last_ms - self.first_ms, 1) / 1000

    @property
    def points_per_s(self) -> float:
        return float(self.summary["points"]) / self.seconds

    @property
    def planning_lead_ms(self) -> int:
        return self.first_ms - self.created_ms

    @property
    def max_child_peak(self) -> int:
        return max(self.worker_peaks.values(), default=0)


def run_pipeline(stack: Stack, path: Path, kind: str) -> PipelineRun:
    touch(path)
    extra = list(datagen.CSV_ARGS) if kind == "csv" else []
    argv = stack.tsbatch("produce", str(path), "--route", ROUTE, "--wait", "--json", *extra)
    watch = Watch(workers=worker_processes(stack))
    poller = threading.Thread(target=watch.poll, daemon=True)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=stack.env())
    watch.producer = psutil.Process(proc.pid)
    poller.start()
    out, _ = proc.communicate()
    wall_s = time.perf_counter() - started
    watch.stop.set()
    poller.join()
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"tsbatch produce failed ({proc.returncode}): {out.decode()[-2000:]}")
    summary = json.loads(lines[-1])
    if summary["committed"] != summary["chunks"] or summary["rejected_lines"]:
        raise RuntimeError(f"pipeline run incomplete: {summary}")
    client = redis.Redis(port=stack.redis.port, decode_responses=True)
    job = Ledger(client, prefix=KEY_PREFIX).job(summary["job"])
    client.close()
    times = (job.created_ms, job.first_enqueue_ms, job.last_ms)
    return PipelineRun(
        summary, watch.producer_peak, watch.worker_peaks, watch.worker_tree_peak, *times, wall_s
    )


_started = [0]


def start_workers(stack: Stack) -> None:
    """One ``tsbatch worker --concurrency 2``, returned once both pool processes are up."""
    _started[0] += 1  # a fresh log per start: "ready." from an earlier worker must not count
    worker = stack.start_worker(concurrency=2, name=f"bench{_started[0]}")
    deadline = time.monotonic() + 60
    while len(psutil.Process(worker.proc.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # the children's worker_process_init (event loop, ledger connection)


def restart_workers(stack: Stack, **worker: Any) -> None:
    for w in stack.workers:
        w.stop(timeout=60)
    stack.workers.clear()
    stack.settings["worker"].update(worker)
    stack.write_config()
    start_workers(stack)


# -- overhead ---------------------------------------------------------------------------------------


def chunk_records(stack: Stack, path: Path, run: PipelineRun) -> list[dict[str, str]]:
    """The commit records of ``run``'s chunks: those of ``path`` that started within the job's time."""
    until_ms = run.last_ms
    client = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        records = []
        for key in client.scan_iter(f"{KEY_PREFIX}:unit:*", count=1000):
            rec: dict[str, str] = client.hgetall(key)  # type: ignore[assignment]
            if (
                rec.get("path") == str(path.resolve())
                and run.created_ms <= int(rec.get("started_ms", 0)) <= until_ms
            ):
                records.append(rec)
        return records
    finally:
        client.close()


def _split(run: PipelineRun, records: list[dict[str, str]]) -> dict[str, float]:
    """The not-working time of each process: before its first chunk, between chunks, after its last."""
    split = {"head_ms": 0.0, "gaps_ms": 0.0, "tail_ms": 0.0}
    for worker in {r["worker"] for r in records}:
        mine = sorted((int(r["started_ms"]), int(r["duration_ms"])) for r in records if r["worker"] == worker)
        split["head_ms"] += mine[0][0] - run.first_ms
        split["gaps_ms"] += sum(b[0] - (a[0] + a[1]) for a, b in itertools.pairwise(mine))
        split["tail_ms"] += run.last_ms - sum(mine[-1])
    return split


def overhead(run: PipelineRun, records: list[dict[str, str]]) -> dict[str, float]:
    """Share of the worker processes' wall time (processes x job time) not spent in a chunk's work."""
    procs = {r["worker"] for r in records}
    wall_ms = run.seconds * 1000 * len(procs)
    work = {k: sum(int(r.get(k, 0)) for r in records) for k in ("read_ms", "encode_ms", "write_ms")}
    busy = sum(int(r["duration_ms"]) for r in records)
    return {
        "processes": len(procs),
        "chunks": len(records),
        "wall_ms": wall_ms,
        **{k: v / wall_ms for k, v in work.items()},
        **{k: v / wall_ms for k, v in _split(run, records).items()},
        "busy": busy / wall_ms,
        "overhead": 1 - busy / wall_ms,
        "planning_lead_ms": run.planning_lead_ms,
    }


# -- the sweep ---------------------------------------------------------------------------------------


def sweep(stack: Stack, path: Path, sizes: Sizes) -> dict[tuple[int, int], float]:
    """Each cell twice, the second pass in reverse order so that a busy minute does not favour one
    setting; the better of the two is kept."""
    results: dict[tuple[int, int], float] = {}
    cells = [(c, f) for f in sizes.sweep_flights for c in sizes.sweep_chunks]
    for chunk, flight in [*cells, *reversed(cells)]:
        if stack.settings["worker"].get("writes_in_flight") != flight:
            restart_workers(stack, writes_in_flight=flight)
        stack.settings["producer"]["chunk_lines"] = chunk
        stack.write_config()
        rate = run_pipeline(stack, path, "lp").points_per_s
        results[(chunk, flight)] = max(results.get((chunk, flight), 0.0), rate)
        say(f"sweep chunk={chunk} in_flight={flight}: {rate:,.0f} points/s")
    stack.settings["producer"].pop("chunk_lines", None)
    restart_workers(stack, writes_in_flight=IN_FLIGHT)
    return results


def plot(results: dict[tuple[int, int], float], points: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for flight in sorted({f for _, f in results}):
        xs = sorted(c for c, f in results if f == flight)
        ax.plot(xs, [results[(c, flight)] / 1000 for c in xs], marker="o", label=f"{flight} writes in flight")
    ax.set_xscale("log")
    ax.set_xlabel("chunk size (lines per chunk)")
    ax.set_ylabel("tsbatch throughput (thousand points/s)")
    ax.set_title(f"tsbatch, 2 worker processes, {points:,} points of line protocol")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT)
    plt.close(fig)


# -- windows: a downsample from a hot VictoriaMetrics to a warm one (issue #9) ---------------------

WINDOW_STEP_S = 10  # one point per host and field every 10 s
WINDOW_T0 = datagen.BASE_MS // 1000  # 2024-01-01T00:00:00Z: on every window boundary
# No percentiles: theirs is the one state that grows with a series' points in a window (aggregate.py).
WINDOW_AGGREGATES = ("mean", "min", "max", "count")
WINDOW_JOBS = {"cpu_10m": 600, "cpu_60m": 3600}  # job -> window length (s); W is measured on the first
WINDOW_W_JOB = "cpu_10m"
WINDOW_TARGET = 0.5  # W >= 0.5 x E
WINDOW_MEMORY_TARGET_MB = 20  # worker peak RSS, 60-min windows minus 10-min windows


def window_span(sizes: Sizes) -> tuple[int, int]:
    """[start, end) of the data, rounded up to the longest window: every job reads the same range."""
    longest = max(WINDOW_JOBS.values())
    data_s = sizes.window_steps * WINDOW_STEP_S
    return WINDOW_T0, WINDOW_T0 + -(-data_s // longest) * longest


def window_points(sizes: Sizes) -> int:
    """Raw points: field values (VictoriaMetrics samples), what a window's ``points_read`` counts."""
    return sizes.window_hosts * sizes.window_steps * FIELDS


def window_bodies(sizes: Sizes) -> list[bytes]:
    """The raw data as gzip'd line-protocol bodies, time-major, ``datagen``'s values every 10 s."""
    bodies: list[bytes] = []
    batch: list[str] = []
    for k in range(sizes.window_steps):
        ns = (WINDOW_T0 + k * WINDOW_STEP_S) * 1_000_000_000
        for i in range(sizes.window_hosts):
            usage, count = datagen.value(i, k)
            tags = f"host={datagen.host(i)},region={datagen.region(i)}"
            batch.append(f"{datagen.MEASUREMENT},{tags} usage={usage},count={count}i {ns}")
            if len(batch) >= BATCH:
                bodies.append(gzip.compress(("\n".join(batch) + "\n").encode(), 1))
                batch = []
    if batch:
        bodies.append(gzip.compress(("\n".join(batch) + "\n").encode(), 1))
    return bodies


def window_job(every: int, name: str) -> dict[str, Any]:
    return {
        "kind": "downsample",
        "source": "hot",
        "target": "warm",
        "measurement": datagen.MEASUREMENT,
        "every": f"{every}s",
        "aggregates": list(WINDOW_AGGREGATES),
        "output_measurement": name,
        "start": iso(WINDOW_T0),
    }


def export_params(stack: Stack, job: str, start: int, end: int) -> list[tuple[str, str]]:
    """What a worker's read sends (workers/readers.py), over the whole range at once."""
    defn = Definition.of(JobSettings.model_validate(stack.settings["jobs"][job]))
    return [
        *(("match[]", s) for s in vm_selectors(defn)),
        ("start", str(start)),
        ("end", f"{end * 1000 - 1}e-3"),
        ("max_rows_per_line", str(EXPORT_ROWS_PER_LINE)),
    ]


@dataclass
class Export:
    seconds: float
    size: int  # bytes of the answer
    samples: int

    @property
    def points_per_s(self) -> float:
        return self.samples / self.seconds


def run_export(url: str, params: list[tuple[str, str]]) -> Export:
    """E: ``/api/v1/export`` read to its end by a plain HTTP client (urllib, no compression asked);
    the clock stops at the last byte, the samples are counted after."""
    query = urllib.parse.urlencode(params)
    parts = []
    t = time.perf_counter()
    with urllib.request.urlopen(f"{url}/api/v1/export?{query}", timeout=600) as r:
        while piece := r.read(1 << 20):
            parts.append(piece)
    seconds = time.perf_counter() - t
    body = b"".join(parts)
    samples = sum(len(json.loads(line)["timestamps"]) for line in body.splitlines() if line.strip())
    return Export(seconds, len(body), samples)


def _hwm(proc: psutil.Process) -> int:
    """The kernel's exact peak RSS of a process since it started (VmHWM), which polling can miss."""
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class WindowRun:
    job: str
    every: int
    windows: int
    seconds: float  # wall time of `tsbatch backfill JOB --from --to --wait`
    points_read: int
    points_written: int
    busy_ms: int  # Σ duration_ms of the windows' commit records (claim to commit)
    window_ms: int  # Σ window_ms: the read, aggregation and writes of each window
    processes: int
    worker_peak: int = 0  # the largest polled peak among the worker's processes
    worker_tree_peak: int = 0
    worker_hwm: int = 0  # the largest VmHWM among them

    @property
    def points_per_s(self) -> float:
        return self.points_read / self.seconds


def window_records(stack: Stack, job: str, start: int, end: int) -> list[dict[str, str]]:
    """The commit records of the job's windows in [start, end), at their current generation."""
    client = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        windows = Windows(
            Ledger(client, prefix=KEY_PREFIX), job, JobSettings.model_validate(stack.settings["jobs"][job])
        )
        rows = list(windows.rows(start, end))
    finally:
        client.close()
    if any(r.state != "committed" for r in rows):
        raise RuntimeError(f"{job}: windows not committed: {[r.state for r in rows]}")
    return [r.record for r in rows]


def run_backfill(stack: Stack, job: str, span: tuple[int, int], *, rerun: bool) -> WindowRun:
    """W: ``tsbatch backfill JOB --from --to --wait`` timed as its user sees it, from start to exit."""
    argv = stack.tsbatch("backfill", job, "--from", iso(span[0]), "--to", iso(span[1]), "--wait", "--json")
    if rerun:
        argv.append("--rerun")  # the windows are committed: run them again (a new generation)
    procs = worker_processes(stack)
    watch = Watch(workers=procs)
    poller = threading.Thread(target=watch.poll, daemon=True)
    poller.start()
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=stack.env(), check=False)
    seconds = time.perf_counter() - t
    watch.stop.set()
    poller.join()
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"tsbatch backfill failed ({out.returncode}): {out.stderr[-2000:]}")
    summary = json.loads(lines[-1])
    if summary["committed"] != summary["windows"] or summary["dead"]:
        raise RuntimeError(f"backfill incomplete: {summary}")
    records = window_records(stack, job, *span)
    return WindowRun(
        job=job,
        every={**WINDOW_JOBS, **ARCHIVE_JOBS}[job],
        windows=summary["windows"],
        seconds=seconds,
        points_read=sum(int(r["points_read"]) for r in records),
        points_written=sum(int(r["points"]) for r in records),
        busy_ms=sum(int(r["duration_ms"]) for r in records),
        window_ms=sum(int(r["window_ms"]) for r in records),
        processes=len({r["worker"] for r in records}),
        worker_peak=max(watch.worker_peaks.values(), default=0),
        worker_tree_peak=watch.worker_tree_peak,
        worker_hwm=max((_hwm(p) for p in procs), default=0),
    )


@dataclass
class WindowResults:
    points: int
    hosts: int
    steps: int
    span: tuple[int, int]
    load_start: str
    quick: bool = False
    load_end: str = ""
    generated: str = ""
    exports: list[Export] = field(default_factory=list)
    runs: list[WindowRun] = field(default_factory=list)  # W: cpu_10m, workers already running
    floors: list[WindowRun] = field(default_factory=list)  # the same command over windows with no points
    memory: dict[str, WindowRun] = field(default_factory=dict)  # job -> run on fresh workers
    idle_worker: int = 0

    @property
    def best_export(self) -> Export:
        return min(self.exports, key=lambda e: e.seconds)

    @property
    def best_run(self) -> WindowRun:
        return min(self.runs, key=lambda r: r.seconds)

    @property
    def best_floor(self) -> WindowRun:
        return min(self.floors, key=lambda r: r.seconds)


def load_window_data(stack: Stack, sizes: Sizes, params: list[tuple[str, str]]) -> None:
    hot = stack.routes["hot"].url
    t = time.monotonic()
    bodies = window_bodies(sizes)
    asyncio.run(_post_all(hot, bodies))
    want = window_points(sizes)
    deadline = time.monotonic() + 120
    while vm_rows_inserted(hot) < want or run_export(hot, params).samples < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hot VictoriaMetrics did not show {want:,} samples")
        http_get(f"{hot}/internal/force_flush")
        time.sleep(0.5)
    say(f"windows: {want:,} raw points in the hot VictoriaMetrics in {time.monotonic() - t:.0f} s")


def measure_windows(sizes: Sizes, repeat: int = 3) -> WindowResults:
    """Its own stack (redis, a hot and a warm VictoriaMetrics), so that the other runs' data and
    workers do not share the machine with it."""
    span = window_span(sizes)
    res = WindowResults(
        window_points(sizes), sizes.window_hosts, sizes.window_steps, span, load(), quick=sizes is QUICK
    )
    stack = start_stack(WORKDIR / "wstack", roots=[DATA_DIR], routes=("hot", "warm"))
    try:
        stack.settings["jobs"] = {name: window_job(every, name) for name, every in WINDOW_JOBS.items()}
        stack.write_config()
        params = export_params(stack, WINDOW_W_JOB, *span)
        load_window_data(stack, sizes, params)
        start_workers(stack)
        # Memory: fresh worker processes for each window length, over the same raw points.
        for job in WINDOW_JOBS:
            run = res.memory[job] = fresh_backfill(stack, job, span, res)
            say(
                f"windows memory {job}: {run.windows} windows in {run.seconds:.2f} s, worker peak "
                f"{mb(run.worker_peak)} (VmHWM {mb(run.worker_hwm)}), tree {mb(run.worker_tree_peak)}"
            )
        # W and E side by side, alternating, the workers already running; and the floor: the same
        # command over as many windows a year earlier, where there are no points.
        url = stack.routes["hot"].url
        empty = (span[0] - 365 * 86_400, span[1] - 365 * 86_400)
        for _ in range(repeat):
            res.floors.append(run_backfill(stack, WINDOW_W_JOB, empty, rerun=True))
            e = run_export(url, params)
            res.exports.append(e)
            run = run_backfill(stack, WINDOW_W_JOB, span, rerun=True)
            _check_points(run, res.points)
            res.runs.append(run)
            say(
                f"windows E {fmt(e.points_per_s)} points/s ({e.seconds:.2f} s, {mb(e.size)}); W "
                f"{fmt(run.points_per_s)} points/s ({run.seconds:.2f} s, windows busy {run.busy_ms} ms); "
                f"no points: {res.floors[-1].seconds:.2f} s"
            )
    finally:
        stack.stop()
    res.load_end = load()
    res.generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return res


def fresh_backfill(stack: Stack, job: str, span: tuple[int, int], res: Any) -> WindowRun:
    """A job's first run on freshly started workers (their memory), its points checked; ``res`` keeps
    the idle workers' high-water mark (``idle_worker``) and the points expected (``points``)."""
    restart_workers(stack)
    res.idle_worker = max(res.idle_worker, max(_hwm(p) for p in worker_processes(stack)))
    run = run_backfill(stack, job, span, rerun=False)
    _check_points(run, res.points)
    return run


def _check_points(run: WindowRun, want: int) -> None:
    if run.points_read != want:
        raise RuntimeError(f"{run.job}: the windows read {run.points_read:,} raw points, not {want:,}")


# -- archives: the same raw points into Parquet files in a local folder (issue 10) ----------------

ARCHIVE_JOBS = {"cpu_archive_10m": 600, "cpu_archive_1h": 3600}  # job -> window length (s)
ARCHIVE_TARGET = 0.5  # A >= 0.5 x E


def archive_job(every: int, url: str) -> dict[str, Any]:
    return {
        "kind": "archive",
        "source": "hot",
        "measurement": datagen.MEASUREMENT,
        "every": f"{every}s",
        "url": url,
        "start": iso(WINDOW_T0),
    }


@dataclass
class ArchiveFiles:
    """What a job's files hold, read from the files themselves (size on disk, Parquet footers)."""

    files: int
    size: int  # bytes on disk
    rows: int  # Parquet rows: points with their fields (here both), one per (series, time)
    row_groups: int
    columns: dict[str, int]  # column -> compressed bytes (column chunks, all files)
    uncompressed: int  # Σ of the column chunks' uncompressed bytes


def archive_file_paths(root: Path, job: str, span: tuple[int, int]) -> list[Path]:
    every = ARCHIVE_JOBS[job]
    return [
        Path(archive_path(f"file://{root}", datagen.MEASUREMENT, job, start).removeprefix("file://"))
        for start in range(span[0], span[1], every)
    ]


@dataclass
class Restore:
    job: str
    files: int
    rows: int  # points with both fields: lines of line protocol, L's unit
    chunks: int
    seconds: float  # wall time of `tsbatch produce FILES --format parquet --route restore --wait`
    pipeline_s: float  # the P clock: first enqueue to last commit

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def run_restore(stack: Stack, job: str, paths: list[Path], rows: int) -> Restore:
    """R: the job's files restored into the `restore` VictoriaMetrics, timed as the user sees it."""
    for path in paths:
        touch(path)  # a new source version: planned and written again
    argv = stack.tsbatch(
        "produce", *map(str, paths), "--format", "parquet", "--route", "restore", "--wait", "--json"
    )
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=stack.env(), check=False)
    seconds = time.perf_counter() - t
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(
            f"tsbatch produce --format parquet failed ({out.returncode}): {out.stderr[-2000:]}"
        )
    summary = json.loads(lines[-1])
    if summary["committed"] != summary["chunks"] or summary["rejected_lines"]:
        raise RuntimeError(f"restore incomplete: {summary}")
    client = redis.Redis(port=stack.redis.port, decode_responses=True)
    entry = Ledger(client, prefix=KEY_PREFIX).job(summary["job"])
    client.close()
    pipeline_s = max(entry.last_ms - entry.first_enqueue_ms, 1) / 1000
    return Restore(job, len(paths), rows, summary["chunks"], seconds, pipeline_s)


def run_write_limit(url: str, bodies: list[bytes], rows: int) -> float:
    """L on these points: pre-serialized, gzip'd 5,000-line bodies posted with 4 in flight; rows/s."""
    t = time.perf_counter()
    asyncio.run(_post_all(url, bodies))
    return rows / (time.perf_counter() - t)


def archive_files(root: Path, job: str, span: tuple[int, int]) -> ArchiveFiles:
    """The job's files of ``span`` (not the empty ones of the no-points runs, a year earlier)."""
    import pyarrow.parquet as pq  # the bench extra does not need it elsewhere

    paths = archive_file_paths(root, job, span)
    columns: dict[str, int] = {}
    rows = groups = uncompressed = 0
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        groups += meta.num_row_groups
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                columns[col.path_in_schema] = columns.get(col.path_in_schema, 0) + col.total_compressed_size
                uncompressed += col.total_uncompressed_size
    return ArchiveFiles(len(paths), sum(p.stat().st_size for p in paths), rows, groups, columns, uncompressed)


@dataclass
class ArchiveResults:
    points: int
    hosts: int
    steps: int
    span: tuple[int, int]
    load_start: str
    quick: bool = False
    load_end: str = ""
    generated: str = ""
    exports: list[Export] = field(default_factory=list)
    runs: dict[str, list[WindowRun]] = field(default_factory=dict)  # job -> A runs, workers running
    floors: dict[str, list[WindowRun]] = field(default_factory=dict)  # job -> runs with no points
    fresh: dict[str, WindowRun] = field(default_factory=dict)  # job -> its first run, on fresh workers
    files: dict[str, ArchiveFiles] = field(default_factory=dict)
    idle_worker: int = 0
    limits: list[float] = field(default_factory=list)  # L on these points, rows/s
    restores: dict[str, list[Restore]] = field(default_factory=dict)  # job -> R runs
    restore_landed: bool = False  # the restore server took exactly what L and R sent, once each

    @property
    def best_limit(self) -> float:
        return max(self.limits)

    def best_restore(self, job: str) -> Restore:
        return min(self.restores[job], key=lambda r: r.seconds)

    @property
    def best_export(self) -> Export:
        return min(self.exports, key=lambda e: e.seconds)

    def best_run(self, job: str) -> WindowRun:
        return min(self.runs[job], key=lambda r: r.seconds)

    def best_floor(self, job: str) -> WindowRun:
        return min(self.floors[job], key=lambda r: r.seconds)


def measure_restores(stack: Stack, res: ArchiveResults, root: Path, repeat: int = 3) -> None:
    """R against L, side by side on the `restore` VictoriaMetrics: L posts the same points, R restores
    each job's files of the last A run."""
    rows = res.points // FIELDS
    bodies = window_bodies(Sizes(0, 0, 0, 0, window_hosts=res.hosts, window_steps=res.steps))
    for _ in range(repeat):
        res.limits.append(run_write_limit(stack.routes["restore"].url, bodies, rows))
        note = [f"L {fmt(res.limits[-1])} rows/s"]
        for job in ARCHIVE_JOBS:
            r = run_restore(stack, job, archive_file_paths(root, job, res.span), rows)
            res.restores.setdefault(job, []).append(r)
            note.append(f"{job} R {fmt(r.rows_per_s)} rows/s ({r.seconds:.2f} s, {r.chunks} chunks)")
        say("restore " + "; ".join(note))
    # VictoriaMetrics' counter lags a write by up to a few seconds: checked once, over all the runs.
    want = (len(res.limits) + sum(map(len, res.restores.values()))) * rows * FIELDS
    deadline = time.monotonic() + 30
    while (got := vm_rows_inserted(stack.routes["restore"].url)) != want and time.monotonic() < deadline:
        time.sleep(0.5)
    res.restore_landed = got == want
    if not res.restore_landed:
        say(f"restore: VictoriaMetrics inserted {got:,} rows, not {want:,}")


def measure_archives(sizes: Sizes, repeat: int = 3) -> ArchiveResults:
    """A: archive jobs over the window section's data, into a local folder, on a stack of their own."""
    span = window_span(sizes)
    res = ArchiveResults(
        window_points(sizes), sizes.window_hosts, sizes.window_steps, span, load(), quick=sizes is QUICK
    )
    root = Path(tempfile.mkdtemp(prefix="archive-", dir=WORKDIR))  # a source root too: R reads it
    stack = start_stack(WORKDIR / "astack", roots=[DATA_DIR, root], routes=("hot", "restore"))
    try:
        stack.settings["jobs"] = {
            job: archive_job(every, f"file://{root}") for job, every in ARCHIVE_JOBS.items()
        }
        stack.write_config()
        params = export_params(stack, next(iter(ARCHIVE_JOBS)), *span)
        load_window_data(stack, sizes, params)
        start_workers(stack)
        for job in ARCHIVE_JOBS:  # the first run of each job on fresh workers: their memory
            run = res.fresh[job] = fresh_backfill(stack, job, span, res)
            say(
                f"archive {job}: {run.windows} files in {run.seconds:.2f} s, "
                f"worker VmHWM {mb(run.worker_hwm)}"
            )
        url = stack.routes["hot"].url
        empty = (span[0] - 365 * 86_400, span[1] - 365 * 86_400)
        for _ in range(repeat):
            e = run_export(url, params)
            res.exports.append(e)
            note = [f"E {fmt(e.points_per_s)} points/s ({e.seconds:.2f} s)"]
            for job in ARCHIVE_JOBS:
                floor = run_backfill(stack, job, empty, rerun=True)
                res.floors.setdefault(job, []).append(floor)
                run = run_backfill(stack, job, span, rerun=True)
                _check_points(run, res.points)
                res.runs.setdefault(job, []).append(run)
                note.append(
                    f"{job} A {fmt(run.points_per_s)} ({run.seconds:.2f} s, no points {floor.seconds:.2f} s)"
                )
            say("archive " + "; ".join(note))
        for job in ARCHIVE_JOBS:
            res.files[job] = archive_files(root, job, span)
            if res.files[job].rows * FIELDS != res.points:
                raise RuntimeError(
                    f"{job}: the files hold {res.files[job].rows:,} rows, not {res.points // FIELDS:,}"
                )
        measure_restores(stack, res, root)
    finally:
        stack.stop()
    res.load_end = load()
    res.generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return res


# -- the machine ------------------------------------------------------------------------------------


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _deb_version(package: str) -> str:
    return _version(["dpkg-query", "-W", "-f=${Version}", package])


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    vm = shutil.which("victoria-metrics") or shutil.which("victoria-metrics-prod") or "victoria-metrics"
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "victoria-metrics": _version([vm, "-version"]).replace("?", "") or _deb_version("victoria-metrics"),
        "redis-server": _version(["redis-server", "--version"]),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the report -------------------------------------------------------------------------------------


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def mb(x: float) -> str:
    return f"{x / 2**20:,.0f} MB"


@dataclass
class Results:
    sizes: Sizes
    info: dict[str, str]
    load_start: str
    load_end: str = ""
    rates: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> {L, B, P}
    overhead: dict[str, float] = field(default_factory=dict)
    memory: dict[str, PipelineRun] = field(default_factory=dict)  # "small"/"large"
    idle_worker: int = 0
    sweep: dict[tuple[int, int], float] = field(default_factory=dict)
    rows_checked: dict[str, bool] = field(default_factory=dict)
    windows: WindowResults | None = None
    archives: ArchiveResults | None = None


def targets(r: Results) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    for kind, ratio_name, want in (("lp", "P/L", 0.5), ("lp", "P/B", 3.0), ("csv", "P/B", 2.0)):
        rates = r.rates.get(kind)
        if rates:
            got = rates["P"] / rates[ratio_name[-1]]
            out.append((f"{kind.upper()}: {ratio_name} ≥ {want}", f"{got:.2f}", got >= want))
    # Issue 12: the command's wall time, as its user times it.
    for kind, base, want in (("lp", "L", 0.65), ("lp", "B", 4.0), ("csv", "L", 0.5)):
        rates = r.rates.get(kind)
        if rates and "P_user" in rates:
            got = rates["P_user"] / rates[base]
            out.append((f"{kind.upper()}: P_user/{base} ≥ {want}", f"{got:.2f}", got >= want))
    if r.memory:
        small, large = r.memory["small"], r.memory["large"]
        grow = large.max_child_peak - small.max_child_peak
        out.append(("worker RSS growth small→large file ≤ 50 MB", mb(grow), grow <= 50 * 2**20))
        pgrow = large.producer_peak - small.producer_peak
        out.append(("producer RSS independent of file size (±10 MB)", mb(pgrow), abs(pgrow) <= 10 * 2**20))
    if r.overhead:
        o = r.overhead["overhead"]
        out.append(("queue + ledger overhead ≤ 5 % at the default chunk size", f"{o:.1%}", o <= 0.05))
    if r.windows:
        out += window_targets(r.windows)
    if r.archives:
        out += archive_targets(r.archives)
    return out


def render(r: Results) -> str:
    s = r.sizes
    lines = [
        "# Benchmarks",
        "",
        "Issue #4: the full pipeline against the server's own ingest limit, on one machine, in one run.",
        f"Reproduce with `make bench` (or `.venv/bin/python scripts/bench.py`); generated "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        + (" **Quick smoke run (`--quick`): small files, not the issue's sizes.**" if s is QUICK else ""),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in r.info.items()],
        f"| load average (1, 5, 15 min) at start | {r.load_start} |",
        f"| load average at end | {r.load_end} |",
        "",
        "The machine is shared with other work: compare the ratios, which were measured side by side, more "
        "than the absolute numbers.",
        "",
        "## What is measured",
        "",
        f"Data: `tsbatch.datagen`, {SERIES:,} series (`host`, `region` tags), {FIELDS} fields "
        "(`usage` float, `count` integer), one point a second per series. A *point* is one line of line "
        f"protocol (one CSV row), carrying {FIELDS} field values; VictoriaMetrics counts {FIELDS} rows per "
        "point. Every run writes to the same VictoriaMetrics (`-retentionPeriod=100y`) on a free port.",
        "",
        f"- **L, the limit**: the points pre-serialized and pre-compressed (gzip level 1, {BATCH:,}-line "
        f"bodies, prepared before the clock starts) and posted to `/api/v2/write` with aiohttp, "
        f"{IN_FLIGHT} requests in flight; the best of 3 runs (the strictest limit). The CSV row's L is "
        "the same measurement (same points), repeated next to the CSV runs.",
        f"- **B, the baseline script**: one process, `InfluxDBClientAsync(enable_gzip=True)`, records "
        f"as line-protocol strings in {BATCH:,}-line batches, `asyncio.Semaphore({IN_FLIGHT})`. For CSV it "
        "maps rows with `csv.reader`, `datetime.fromisoformat` and an f-string. Clock: file open to last "
        "write acknowledged.",
        "- **P, tsbatch**: `tsbatch produce FILE --wait` → Redis → one `tsbatch worker --concurrency 2` "
        "(2 worker processes) → the server, gzip level 1 (ISA-L's igzip), default settings. "
        "Clock, as the issue defines it: "
        "the first enqueue (`first_enqueue_ms`, which the producer records in the job's ledger entry) to the "
        "last commit (`last_ms`).",
        "",
        "## Throughput",
        "",
        f"{s.main:,} points per file. B and P: the better of {REPEAT} runs each; L: the best of 3.",
        "",
        "| file | L points/s | B points/s | P points/s | P/B | P/L | P from job creation | P_user points/s "
        "| P_user/L | P_user/B | rows landed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind, rates in r.rates.items():
        ok = "all" if r.rows_checked.get(kind) else "MISMATCH"
        user = rates.get("P_user", 0.0)
        lines.append(
            f"| {kind.upper()} | {fmt(rates['L'])} | {fmt(rates['B'])} | {fmt(rates['P'])} | "
            f"{rates['P'] / rates['B']:.2f} | {rates['P'] / rates['L']:.2f} | {fmt(rates['P_job'])} | "
            f"{fmt(user)} | {user / rates['L']:.2f} | {user / rates['B']:.2f} | {ok} |"
        )
    lines += [
        "",
        "*P_user*: the same runs timed as a user times them, the `tsbatch produce FILE --wait` command's "
        "wall time from its start to its exit (Python's start and imports, planning, the wait), workers "
        "already running (issue 12).",
        "",
        "*P from job creation*: the same run timed from the job's creation in the ledger, so including "
        "the producer's planning of the first chunk before its first enqueue (B's clock likewise starts "
        "before its first batch is built).",
        "",
        '*rows landed*: VictoriaMetrics\' `vm_rows_inserted_total{type="influx"}` grew by exactly points x '
        f"{FIELDS} during each P run.",
        "",
        *render_memory(r),
        *render_overhead(r),
        *render_sweep(r),
        *render_windows(r.windows),
        *render_archives(r.archives),
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        *[f"| {name} | {got} | {'yes' if ok else 'no'} |" for name, got, ok in targets(r)],
        "",
    ]
    return "\n".join(lines)


def render_memory(r: Results) -> list[str]:
    if not r.memory:
        return ["## Memory", "", "Not measured in this run (`--skip-memory`).", ""]
    rows = []
    for label, run in r.memory.items():
        points = run.summary["points"]
        rows.append(
            f"| {label} | {points:,} | {mb(run.max_child_peak)} | {mb(run.worker_tree_peak)} | "
            f"{mb(run.producer_peak)} | {fmt(run.points_per_s)} |"
        )
    return [
        "## Memory",
        "",
        "Peak resident set size, polled with psutil every 50 ms during the run. Workers were restarted "
        "before each file, so each peak starts from a fresh process. *Worker process*: the largest "
        "peak among the worker's processes (the 2 pool children and the Celery main process); "
        "*worker tree*: the peak of their sum. *Producer*: `tsbatch produce --wait` and its children. "
        f"An idle worker tree was {mb(r.idle_worker)}.",
        "",
        "| file | points | worker process peak | worker tree peak | producer peak | P points/s |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def render_overhead(r: Results) -> list[str]:
    if not r.overhead:
        return []
    o = r.overhead
    return [
        "## Queue and ledger overhead",
        "",
        "Measured on the LP P run, at the default chunk size, from the ledger's commit records. Each "
        "chunk's record carries `duration_ms` (from its claim to just before its commit) split into "
        "`read_ms` (reading the byte range and checking its SHA-256), `encode_ms` (the parse loop: "
        "validating or mapping lines, building bodies, and the event loop's work on the writes in "
        "flight between batches) and `write_ms` (waiting for the writes still in flight after the last "
        "batch). With *W* = worker processes x job wall time (first enqueue to last commit):",
        "",
        "    overhead = 1 - Σ duration_ms / W",
        "",
        "so it holds everything that is not reading, encoding or writing a chunk: each process's wait for "
        "its first chunk (the second one is planned after the first enqueue), the broker round trip, claim, "
        "commit and ack per chunk, and the tail where one process finishes its last chunk while the other "
        "has nothing left. Before the first enqueue, outside *W*, the producer planned the first chunk for "
        f"{o['planning_lead_ms']:.0f} ms (it is in the *P from job creation* column above).",
        "",
        "| processes | chunks | read | encode | write | overhead | = before first chunk | + between chunks "
        "| + after last chunk |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {o['processes']:.0f} | {o['chunks']:.0f} | {o['read_ms']:.1%} | {o['encode_ms']:.1%} | "
        f"{o['write_ms']:.1%} | **{o['overhead']:.1%}** | {o['head_ms']:.1%} | {o['gaps_ms']:.1%} | "
        f"{o['tail_ms']:.1%} |",
        "",
    ]


def render_sweep(r: Results) -> list[str]:
    if not r.sweep:
        return []
    chunks = sorted({c for c, _ in r.sweep})
    flights = sorted({f for _, f in r.sweep})
    head = "| writes in flight | " + " | ".join(f"chunk {c:,}" for c in chunks) + " |"
    rows = [
        f"| {f} | " + " | ".join(fmt(r.sweep[(c, f)]) for c in chunks if (c, f) in r.sweep) + " |"
        for f in flights
    ]
    return [
        "## Chunk size x writes in flight",
        "",
        f"P points/s on a {r.sizes.sweep:,}-point LP file, 2 worker processes; each cell run twice (the "
        "second pass in reverse order), the better run shown.",
        "",
        "![P against chunk size and writes in flight](bench-sweep.png)",
        "",
        head,
        "|---|" + "---:|" * len(chunks),
        *rows,
        "",
    ]


WINDOWS_BEGIN = "<!-- windows: scripts/bench.py writes this section; --windows-only replaces just it -->"
WINDOWS_END = "<!-- /windows -->"


def window_targets(w: WindowResults) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    if w.runs and w.exports:
        ratio = w.best_run.points_per_s / w.best_export.points_per_s
        out.append((f"windows: W/E ≥ {WINDOW_TARGET}", f"{ratio:.2f}", ratio >= WINDOW_TARGET))
    if len(w.memory) == len(WINDOW_JOBS):
        short, long = (w.memory[j] for j in WINDOW_JOBS)
        grow = long.worker_hwm - short.worker_hwm
        out.append(
            (
                f"windows: worker peak RSS, 60-min minus 10-min windows ≤ {WINDOW_MEMORY_TARGET_MB} MB",
                mb(grow),
                grow <= WINDOW_MEMORY_TARGET_MB * 2**20,
            )
        )
    return out


def render_windows(w: WindowResults | None) -> list[str]:
    if w is None:
        return []
    e, run, floor = w.best_export, w.best_run, w.best_floor
    mem_rows = []
    for m in w.memory.values():
        points_per_series = m.every // WINDOW_STEP_S
        mem_rows.append(
            f"| {m.every // 60} min | {m.windows} | {points_per_series:,} | "
            f"{w.hosts * FIELDS * points_per_series:,} | {mb(m.worker_hwm)} | {mb(m.worker_peak)} | "
            f"{mb(m.worker_tree_peak)} | {fmt(m.points_per_s)} |"
        )
    e_rows = [
        f"| {i + 1} | {fmt(x.points_per_s)} | {x.seconds:.2f} s | {fmt(r.points_per_s)} | "
        f"{r.seconds:.2f} s | {r.busy_ms / (r.seconds * 1000 * max(r.processes, 1)):.0%} | "
        f"{f.seconds:.2f} s |"
        for i, (x, r, f) in enumerate(zip(w.exports, w.runs, w.floors, strict=False))
    ]
    start, end = w.span
    return [
        WINDOWS_BEGIN,
        "## Windows: downsampling from a hot VictoriaMetrics to a warm one",
        "",
        f"Issue #9. Generated {w.generated}; load average {w.load_start} at the start of this part, "
        f"{w.load_end} at its end. Reproduce this section alone with `make bench BENCH_ARGS=--windows-only` "
        "(or `.venv/bin/python scripts/bench.py --windows-only`), which replaces only it."
        + (" **Quick smoke run (`--quick`): fewer hosts, not the issue's sizes.**" if w.quick else ""),
        "",
        f"Data: {w.hosts:,} hosts (series) x {FIELDS} fields (`usage`, `count`) x {w.steps:,} points "
        f"each, one every {WINDOW_STEP_S} s from {iso(start)}: **{w.points:,} raw points** (a raw point "
        "here is one field value, a VictoriaMetrics sample, what a window's `points_read` counts), in "
        "one VictoriaMetrics (`hot`); the result goes to another (`warm`), both on this machine. "
        f"Range: [{iso(start)}, {iso(end)}).",
        "",
        f"- **W**: `tsbatch backfill {WINDOW_W_JOB} --from {iso(start)} --to {iso(end)} --wait` "
        f"(`--rerun` after the first run), a worker-mode downsample with every = 10m, aggregates "
        f"{', '.join(WINDOW_AGGREGATES)}, into one `tsbatch worker --concurrency 2` (2 worker processes) "
        "already running. Clock: the command's wall time, from its start to its exit, as its user sees it "
        "(planning the windows, the queue, the windows' reads, aggregation and writes, and the wait). "
        "W = raw points / that time.",
        "- **E, the read limit**: the same `/api/v1/export` request (the same `match[]` selectors) over "
        "the whole range at once, read to its last byte by a plain HTTP client (urllib, no compression), "
        "on the same hot VictoriaMetrics. E = raw points / that time.",
        "",
        f"W and E alternate, {len(w.runs)} times each; the best of each is compared. *busy*: the share "
        "of the 2 worker processes' wall time (processes x W's wall time) spent in a window's work, "
        "claim to commit (Σ `duration_ms` of the commit records).",
        "",
        "| | W/E | W points/s | E points/s | W wall time | E time | E bytes | windows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| best | **{run.points_per_s / e.points_per_s:.2f}** | {fmt(run.points_per_s)} | "
        f"{fmt(e.points_per_s)} | {run.seconds:.2f} s | {e.seconds:.2f} s | {mb(e.size)} | {run.windows} |",
        "",
        "| run | E points/s | E time | W points/s | W wall time | busy | no points: wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *e_rows,
        "",
        f"*No points*: the same command over {floor.windows} windows of the same length a year earlier, "
        f"where the hot VictoriaMetrics holds nothing: {floor.seconds:.2f} s at best. That is the fixed "
        "cost of the command as its user sees it (starting the Python process, connecting to Redis and "
        "the broker, planning and publishing each window, the workers' claim, empty read, commit and "
        "ack of each, and `--wait`, which the ledger wakes at the last commit instead of a 0.2 s poll). "
        "With it W can at most reach "
        f"{fmt(w.points / floor.seconds)} points/s here, W/E ≤ "
        f"{w.points / floor.seconds / e.points_per_s:.2f}, however fast the windows' work.",
        "",
        "### Worker memory and points per window",
        "",
        "The same raw points, downsampled with 10-minute and with 60-minute windows (6x the points per "
        "window), each on a fresh `tsbatch worker --concurrency 2`. *VmHWM*: the kernel's peak resident "
        "set size of each worker process (the 2 pool children and the Celery main process) since it "
        "started, the largest shown; *polled*: psutil every 50 ms, as in *Memory* above; *tree*: the "
        "polled peak of their sum. Aggregate state is per series; without percentiles it does not grow "
        f"with a window's points. An idle worker process's VmHWM was {mb(w.idle_worker)}.",
        "",
        "| windows | count | points per series | raw points per window | worker VmHWM | worker polled "
        "| worker tree | points/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *mem_rows,
        "",
        *WINDOW_NOTES,
        WINDOWS_END,
        "",
    ]


# Where the time went, and what was changed (issue #9); the profile is not re-run by the bench.
WINDOW_NOTES = [
    "### Where the time goes (profiled for issue #9, 2026-12-02)",
    "",
    "W < 0.5 E, so the workers were profiled with py-spy (`py-spy record -p <pool child> -f raw` "
    "during `--rerun` backfills of this data). Before the changes below, of a worker process's CPU "
    "samples, 59% were `Aggregator.add`: numpy called per block, and a block is one series' ~60 "
    "points in a 10-minute window, so each of a window's 2,000 blocks paid numpy's per-call cost about "
    "twenty times (the fingerprint's mixing 39%, the aggregates' argmin/argmax/mean/sum/min/max 18%); "
    "`json.loads` of the export's lines took 12%, building the output rows 7%. Changed:",
    "",
    "- `workers/aggregate.py`: blocks are held back until they hold 65,536 points, then aggregated "
    "(`np.add/minimum/maximum.reduceat` per block, merged per series with Chan's formula as before) and "
    "fingerprinted (one pass over the batch) as one set of arrays. Memory stays bounded by the batch "
    "and the series, not by the points in a window; the fingerprint is the same number as before "
    "(`tests/test_aggregate.py`). One window's 120,000 points, in one process: 89 ms → 6 ms.",
    "- `workers/readers.py`: the export's lines are parsed with orjson (a new dependency): parsing and "
    "the arrays, 25 ms → 11 ms per window.",
    "",
    "Before/after on this machine, same bench, run back to back (before: commit a1b3afe): W 915,291 → "
    "1,435,112 points/s (best wall time 2.19 s → 1.39 s; first run on fresh workers 2.40 s → 1.60 s), "
    "E 18.3M and 17.6M points/s, W/E 0.05 → 0.08. One window's read, aggregation, rows and encoding, "
    "in one process: about 135 ms → 53 ms.",
    "",
    "After them, a pool process's CPU went to the read (37%: orjson, the per-line arrays and blocks, "
    "the HTTP body), the output rows and their line protocol (~26%), the batched aggregation (17%), and "
    "the rest to Redis (claim, heartbeat, commit), aiohttp and Celery. The windows' work is now the "
    "*busy* share above; most of the rest of W's wall time is the command's fixed cost (*no points*), "
    "which alone keeps W/E near 0.2 at most: E reads this data in less time than the `tsbatch` process "
    "takes to start. W/E ≥ 0.5 is out of reach of the windows' work at this data size; what would move "
    "it is that fixed cost (the process start, a round trip per window; `--wait`'s 0.2 s poll is gone: "
    "the ledger's pub/sub wakes it, no-points 0.60 -> 0.45 s) or "
    "fewer, longer windows (compare the 60 min row's points/s in the memory table). VictoriaMetrics "
    "compresses the export when asked (aiohttp asks): 36 MB → 5 MB for ~0.1 s more of its CPU over the "
    "whole range; the reader still asks, which pays off when the source is across a network.",
    "",
]


def splice_section(
    doc: str, begin: str, end: str, section: list[str], prefix: str, rows: list[tuple[str, str, bool | None]]
) -> str:
    """The document with one section (between ``begin`` and ``end``, else before the targets) and its
    target rows (those starting with ``prefix``) replaced, the rest kept."""
    text = "\n".join(section)
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        doc = head + text + "\n" + tail
    elif "## Targets" in doc:
        head, tail = doc.split("## Targets", 1)
        doc = head + text + "\n## Targets" + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    lines = [line for line in doc.splitlines() if not line.startswith(prefix)]
    new = [f"| {name} | {got} | {'yes' if ok else 'no'} |" for name, got, ok in rows]
    if "| target | measured | met |" in lines:
        at = lines.index("| target | measured | met |") + 2
        while at < len(lines) and lines[at].startswith("|"):
            at += 1
        lines[at:at] = new
    return "\n".join(lines) + "\n"


def splice_windows(doc: str, w: WindowResults) -> str:
    """``--windows-only``: the document with its window section and window targets replaced."""
    return splice_section(
        doc, WINDOWS_BEGIN, WINDOWS_END, render_windows(w), "| windows: ", window_targets(w)
    )


ARCHIVES_BEGIN = "<!-- archives: scripts/bench.py writes this section; --archive-only replaces just it -->"
ARCHIVES_END = "<!-- /archives -->"


def splice_archives(doc: str, a: ArchiveResults) -> str:
    """``--archive-only``: the document with its archive section and archive targets replaced."""
    return splice_section(
        doc, ARCHIVES_BEGIN, ARCHIVES_END, render_archives(a), "| archive", archive_targets(a)
    )


def _label(job: str) -> str:
    every = ARCHIVE_JOBS[job]
    return f"{every // 60} min" if every < 3600 else f"{every // 3600} h"


def archive_targets(a: ArchiveResults) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    for job in ARCHIVE_JOBS:
        if a.runs.get(job) and a.exports:
            ratio = a.best_run(job).points_per_s / a.best_export.points_per_s
            name = f"archive, {_label(job)} windows: A/E ≥ {ARCHIVE_TARGET}"
            out.append((name, f"{ratio:.2f}", ratio >= ARCHIVE_TARGET))
    return out


def _per_million(size: float, n: int) -> str:
    return f"{size / n * 1e6 / 2**20:.2f} MB" if n else "-"


def render_archives(a: ArchiveResults | None) -> list[str]:
    if a is None:
        return []
    e, jobs = a.best_export, list(ARCHIVE_JOBS)
    start, end = a.span
    best = []
    for job in jobs:
        run, floor = a.best_run(job), a.best_floor(job)
        best.append(
            f"| {_label(job)} | {run.windows} | **{run.points_per_s / e.points_per_s:.2f}** | "
            f"{fmt(run.points_per_s)} | {fmt(e.points_per_s)} | {run.seconds:.2f} s | {e.seconds:.2f} s | "
            f"{floor.seconds:.2f} s | {fmt(a.points / floor.seconds)} |"
        )
    per_run = []
    for i, x in enumerate(a.exports):
        for job in jobs:
            r, f = a.runs[job][i], a.floors[job][i]
            per_run.append(
                f"| {i + 1} | {fmt(x.points_per_s)} | {x.seconds:.2f} s | {_label(job)} | "
                f"{fmt(r.points_per_s)} | {r.seconds:.2f} s | "
                f"{r.busy_ms / (r.seconds * 1000 * max(r.processes, 1)):.0%} | {f.seconds:.2f} s |"
            )
    files = []
    for job in jobs:
        af = a.files[job]
        files.append(
            f"| {_label(job)} | {af.files} | {af.row_groups} | {af.rows:,} | {af.size / 2**20:.1f} MB | "
            f"**{_per_million(af.size, a.points)}** | {_per_million(af.size, af.rows)} | "
            f"{af.size / af.rows:.2f} B | {af.uncompressed / max(sum(af.columns.values()), 1):.1f}x |"
        )
    first = a.files[jobs[0]]
    cols = sorted(first.columns.items(), key=lambda kv: -kv[1])
    col_head = " | ".join(f"`{c}`" for c, _ in cols)
    col_rows = [
        f"| {_label(job)} | "
        + " | ".join(f"{a.files[job].columns.get(c, 0) / a.files[job].rows:.2f} B" for c, _ in cols)
        + " |"
        for job in jobs
    ]
    memory = [
        f"| {_label(job)} | {a.fresh[job].windows} | "
        f"{a.hosts * FIELDS * (ARCHIVE_JOBS[job] // WINDOW_STEP_S):,} | "
        f"{mb(a.fresh[job].worker_hwm)} | {a.fresh[job].seconds:.2f} s |"
        for job in jobs
    ]
    return [
        ARCHIVES_BEGIN,
        "## Archives: the same raw points into Parquet files in a local folder",
        "",
        f"Issue 10. Generated {a.generated}; load average {a.load_start} at the start of this part, "
        f"{a.load_end} at its end. Reproduce this section alone with `make bench BENCH_ARGS=--archive-only` "
        "(or `.venv/bin/python scripts/bench.py --archive-only`), which replaces only it."
        + (" **Quick smoke run (`--quick`): fewer hosts, not the issue's sizes.**" if a.quick else ""),
        "",
        f"Data: the window section's, {a.hosts:,} hosts x {FIELDS} fields x {a.steps:,} points each, one "
        f"every {WINDOW_STEP_S} s: **{a.points:,} raw points** (field values) or {a.points // FIELDS:,} "
        f"rows (points with both fields), in one VictoriaMetrics (`hot`) of a stack of its own. Range: "
        f'[{iso(start)}, {iso(end)}). Two archive jobs, `kind = "archive"`, `url = "file://<a temp '
        'folder under var/bench>"` on the same disk, every = 10m and every = 1h (one file per window).',
        "",
        "- **A**: `tsbatch backfill JOB --from ... --to ... --wait` (`--rerun` after the first run: the "
        "files are written again) into one `tsbatch worker --concurrency 2` already running. Clock: the "
        "command's wall time as its user sees it. Each window is read (the window section's reader), "
        "pivoted to one row per point, its row digest taken, written as zstd Parquet to a temp file, "
        "renamed into place after the fencing check, read back (SHA-256 and row digest checked) and "
        "committed. A = raw points / that time.",
        "- **E, the read limit**: the window section's measurement, the same `/api/v1/export` request "
        "over the whole range read to its last byte by urllib, here with the archive job's selectors.",
        "",
        f"E, then for each job the no-points run and A, in turn, {len(a.exports)} times; the best of each "
        "is compared.",
        "",
        "| windows | files | A/E | A points/s | E points/s | A wall time | E time | no points: wall time "
        "| A at most (no-points cost alone) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *best,
        "",
        "| run | E points/s | E time | windows | A points/s | A wall time | busy | no points: wall time |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
        *per_run,
        "",
        "*busy*: the share of the 2 worker processes' wall time (processes x A's wall time) spent in a "
        "window's work, claim to commit. *No points*: the same command over as many windows a year "
        "earlier, where the hot VictoriaMetrics holds nothing (each still writes, reads back and verifies "
        "an empty file): the command's fixed cost as its user sees it, as in the window section. "
        "*A at most*: raw points / that fixed cost, what A would be if the windows' work took no time.",
        "",
        "### File size",
        "",
        "From the files themselves (size on disk, Parquet footers), the range's files of each job after "
        "the last run. *Per million raw points*: bytes / field values x 10^6 (what E reads and A counts); "
        "*per million rows*: a row is a point with both its fields. *zstd*: the column chunks' "
        "uncompressed / compressed bytes.",
        "",
        "| windows | files | row groups | rows | bytes | per million raw points | per million rows "
        "| per row | zstd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *files,
        "",
        "Bytes per row by column (compressed column chunks; the rest of a file is its footer):",
        "",
        f"| windows | {col_head} |",
        "|---|" + "---:|" * len(cols),
        *col_rows,
        "",
        "For scale: VictoriaMetrics' export of the same range, uncompressed JSON, was "
        f"{mb(e.size)} ({_per_million(e.size, a.points)} per million raw points).",
        "",
        "### Worker memory per file",
        "",
        "Each job's first run on a fresh `tsbatch worker --concurrency 2`: a file is one window, pivoted "
        "in memory, so memory grows with a window's points (docs/LIFECYCLE.md). VmHWM: the largest peak "
        f"RSS among the worker's processes. An idle worker process's VmHWM was {mb(a.idle_worker)}.",
        "",
        "| windows | files | raw points per full window | worker VmHWM | wall time (first run) |",
        "|---|---:|---:|---:|---:|",
        *memory,
        "",
        *render_restores(a),
        *ARCHIVE_NOTES,
        ARCHIVES_END,
        "",
    ]


def render_restores(a: ArchiveResults) -> list[str]:
    if not a.restores:
        return ["### R: restoring the files", "", "Not measured in this run.", ""]
    L = a.best_limit
    best = []
    for job in ARCHIVE_JOBS:
        r = a.best_restore(job)
        best.append(
            f"| {_label(job)} | {r.files} | {r.chunks} | **{r.rows_per_s / L:.2f}** | {fmt(r.rows_per_s)} | "
            f"{fmt(r.rows / r.pipeline_s)} | {fmt(L)} | {r.seconds:.2f} s | "
            f"{'all' if a.restore_landed else 'MISMATCH'} |"
        )
    runs = [
        f"| {i + 1} | {fmt(lim)} | "
        + " | ".join(
            f"{fmt(a.restores[job][i].rows_per_s)} ({a.restores[job][i].seconds:.2f} s)"
            for job in ARCHIVE_JOBS
        )
        + " |"
        for i, lim in enumerate(a.limits)
    ]
    return [
        "### R: restoring the files",
        "",
        "- **R**: the same files (each job's files of the range, as the last A run wrote them) restored "
        "into another VictoriaMetrics (`restore`) with `tsbatch produce FILES --format parquet --route "
        "restore --wait`, by the same 2 worker processes; each Parquet row group is a chunk (a file here "
        "is one row group). Clock: the command's wall time; also the P clock of the line-protocol "
        "section (first enqueue to last commit, from the ledger). R = rows / that time.",
        "- **L, the write limit**: the line-protocol section's measurement on these same points (the "
        f"same {a.points // FIELDS:,} rows as pre-serialized, gzip'd 5,000-line bodies posted with aiohttp, "
        "4 in flight) to the same `restore` VictoriaMetrics. Rows (points with both fields, a line of "
        "line protocol) per second, the unit of L and P.",
        "",
        f"L, then R from each job's files, in turn, {len(a.limits)} times; the best of each is compared. "
        '*rows landed*: the `restore` VictoriaMetrics\' `vm_rows_inserted_total{type="influx"}` '
        "grew by exactly runs x rows x 2 over all the L and R runs.",
        "",
        "| files of | files | chunks | R/L | R rows/s | R rows/s, first enqueue to last commit | L rows/s "
        "| R wall time | rows landed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *best,
        "",
        "| run | L rows/s | " + " | ".join(f"R from {_label(j)} files" for j in ARCHIVE_JOBS) + " |",
        "|---:|---:|" + "---:|" * len(ARCHIVE_JOBS),
        *runs,
        "",
    ]


# Where the time went (issue 10); the profile is not re-run by the bench.
ARCHIVE_NOTES = [
    "### Where the time goes (profiled for issue 10, 2026-12-02)",
    "",
    "A < 0.5 E, so the workers were profiled with py-spy (`py-spy record -p <pool child> -f raw` on both "
    "pool processes during the `--rerun` backfills of this section). Before the changes below (commit "
    "13f72e7), of a pool process's CPU samples: the row digest (`tsbatch/archives.py`, `table_digest`) "
    "30% (15% over the table before the write, 16% over the file read back: each column converted "
    "again for each of the digest's two lanes, and every mix allocating new arrays), the pivot "
    "(`build_table`) 24% (numpy called per series: `np.unique`, `argsort`, `searchsorted` and a masked "
    "`pa.array` for each of 1,000 series and 2 fields per window), the read 19% (the window section's "
    "reader: HTTP, orjson, the per-line arrays), `pq.write_table` (zstd) 5%, reading the file back 1%, "
    "SHA-256 under 1%. Changed, with the same results:",
    "",
    "- `table_digest`: each column converted to 64-bit words once for both lanes; a tag column's "
    "dictionary hashed as it is (no decode and encode again); the mixing in place, over 16,384-row "
    "slices that stay in the CPU cache. The digest is the same number as before (checked against the "
    "previous code on random tables with nulls, -0.0, NaN, strings, booleans, dictionaries, and "
    "through a Parquet round trip), so files archived before still verify. One 10-minute window "
    "(60,000 rows), in one process: 12 + 17 ms → 6 + 6 ms (before the write + read back); a 1-hour "
    "window (360,000 rows): 108 + 104 ms → 35 + 36 ms.",
    "- `build_table`: the window's points pivoted at once: the blocks put in series order (a stable "
    "sort: a series' blocks stay in read order, which decides between duplicates), one stable sort of "
    "one key, series x span + time (a merge of the blocks' sorted runs; two keys when it would not fit "
    "in 63 bits), each field placed with one scatter. The table is the same as before (checked against "
    "the previous code on 3,000 random windows with duplicates, missing tags and fields, strings and "
    "booleans, blocks in any order; the Parquet bytes are identical). 10-minute window: 34 → 7 ms; "
    "1-hour window: 75 → 35-45 ms. Its arrays peak at 34 MB for a 1-hour window (720,000 raw points) "
    "where the per-series code peaked at 20 MB (tracemalloc): see the memory table.",
    "- Compression: unchanged. zstd level 3 or 9 instead of the default changes the size by under 2%; "
    "without dictionary encoding of the field columns this bench's data (`datagen`'s arithmetic "
    "pattern) shrinks from 2.4 to 1.7 B per row, but a random-walk gauge and a counter grow from 3.5 "
    "to 4.7 B per row, so the default stays.",
    "",
    "Before/after, the same bench run back to back on a busy machine (load 2.3 → 4.0 from other work; "
    "before: commit 13f72e7's `workers/archive.py` and `tsbatch/archives.py`): A with 10-minute "
    "windows 687,415 → 1,297,295 points/s (best wall time 2.91 s → 1.54 s), with 1-hour windows "
    "1,217,638 → 1,540,844 (1.64 s → 1.30 s); E 9.8M points/s in both. An earlier run before the "
    "changes, on a quieter machine: 890,555 and 1,209,711 points/s (2.25 s and 1.65 s).",
    "",
    "After them, of a pool process's CPU: the read 30%, the write and verification thread 21% (zstd "
    "Parquet 7%, the read-back digest 9%, reading the file back 1%), the digest before the write 8%, "
    "the pivot 14%, the fingerprint 7%, the rest Redis (claim, heartbeat, fencing check, commit), "
    "aiohttp and Celery. As for W, the target is out of reach of the windows' work: the command's "
    "fixed cost (*no points*, ~0.4-0.5 s: the process start, planning and publishing each window, the "
    "workers' claim, empty read, empty file written, read back and committed, and `--wait`) alone "
    "keeps A/E at most about 0.25 (10-minute windows) and 0.3 (1-hour), "
    "since E reads the whole range in about 0.1 s; 1-hour windows "
    "(3 files instead of 18) pay less of it. The files are also written and read back in full, which "
    "E does not do. R's wall time holds the same kind of fixed cost: compare its first-enqueue-to-"
    "last-commit column.",
    "",
]


# -- the run ----------------------------------------------------------------------------------------


def measure_throughput(stack: Stack, res: Results) -> None:
    url = stack.routes[ROUTE].url
    lp = data_file("lp", res.sizes.main)
    for kind in ("lp", "csv"):
        path = data_file(kind, res.sizes.main)
        rates = {"L": run_limit(url, lp)}
        say(f"{kind} L {fmt(rates['L'])} points/s")
        rates["B"] = max(run_baseline(url, path, kind) for _ in range(REPEAT))
        say(f"{kind} B {fmt(rates['B'])} points/s")
        runs = [_checked_run(stack, res, path, kind) for _ in range(REPEAT)]
        run = max(runs, key=lambda r: r.points_per_s)
        rates["P"] = run.points_per_s
        rates["P_job"] = float(run.summary["points"]) / (max(run.last_ms - run.created_ms, 1) / 1000)
        rates["P_user"] = max(float(r.summary["points"]) / r.wall_s for r in runs)
        say(f"{kind} P {fmt(rates['P'])} points/s (rows check {res.rows_checked[kind]})")
        res.rates[kind] = rates
        if kind == "lp":
            res.overhead = overhead(run, chunk_records(stack, path, run))
            say(f"overhead {res.overhead}")


def _checked_run(stack: Stack, res: Results, path: Path, kind: str) -> PipelineRun:
    """A P run, checking that the server took exactly the file's points (2 rows each)."""
    url = stack.routes[ROUTE].url
    before = vm_rows_inserted(url)
    run = run_pipeline(stack, path, kind)
    landed = vm_rows_inserted(url) - before == res.sizes.main * FIELDS
    res.rows_checked[kind] = res.rows_checked.get(kind, True) and landed
    return run


def measure_memory(stack: Stack, res: Results) -> None:
    for label, points in (("small", res.sizes.mem_small), ("large", res.sizes.mem_large)):
        path = data_file("lp", points)
        restart_workers(stack)
        res.idle_worker = max(res.idle_worker, sum(_rss(p) for p in worker_processes(stack)))
        res.memory[label] = run_pipeline(stack, path, "lp")
        run = res.memory[label]
        say(f"memory {label}: worker {mb(run.max_child_peak)} producer {mb(run.producer_peak)}")
        if label == "large":
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small files: a smoke run of every step")
    p.add_argument("--skip-memory", action="store_true", help="no 1M / 20M-point memory runs")
    p.add_argument("--skip-sweep", action="store_true", help="no chunk size x writes-in-flight sweep")
    p.add_argument("--skip-windows", action="store_true", help="no window (downsampling) measurement")
    p.add_argument("--skip-archive", action="store_true", help="no archive (Parquet) measurement")
    p.add_argument(
        "--archive-only",
        action="store_true",
        help="only the archive measurement: replace its section of docs/BENCHMARKS.md, keep the rest",
    )
    p.add_argument(
        "--windows-only",
        action="store_true",
        help="only the window measurement: replace its section of docs/BENCHMARKS.md, keep the rest",
    )
    p.add_argument("--keep", action="store_true", help="keep var/bench (data, logs) afterwards")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.windows_only:
        return windows_only(sizes, keep=args.keep)
    if args.archive_only:
        return archive_only(sizes, keep=args.keep)
    res = Results(sizes=sizes, info=machine(), load_start=load())
    say(f"load {res.load_start}; data in {DATA_DIR}")
    shutil.rmtree(WORKDIR / "stack", ignore_errors=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)  # a source root must exist when the settings load
    stack = start_stack(WORKDIR / "stack", roots=[DATA_DIR])
    try:
        start_workers(stack)
        measure_throughput(stack, res)
        if not args.skip_sweep:
            res.sweep = sweep(stack, data_file("lp", sizes.sweep), sizes)
            plot(res.sweep, sizes.sweep)
        if not args.skip_memory:
            measure_memory(stack, res)
    finally:
        stack.stop()
    try:
        if not args.skip_windows:
            res.windows = measure_windows(sizes)
        if not args.skip_archive:
            res.archives = measure_archives(sizes)
    finally:
        if not args.keep:
            shutil.rmtree(WORKDIR, ignore_errors=True)
    res.load_end = load()
    DOC.write_text(render(res))
    say(f"wrote {DOC.relative_to(ROOT)}; load {res.load_end}")
    for name, got, ok in targets(res):
        say(f"{'MET ' if ok else 'MISS'} {name}: {got}")
    return 0


def section_only(
    stack_dir: str,
    what: str,
    measure: Callable[[Sizes], T],
    splice: Callable[[str, T], str],
    goals: Callable[[T], list[tuple[str, str, bool | None]]],
    sizes: Sizes,
    *,
    keep: bool,
) -> int:
    """Measure one section on a stack of its own and replace only that section (and its targets)."""
    shutil.rmtree(WORKDIR / stack_dir, ignore_errors=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(sizes)
    finally:
        if not keep:
            shutil.rmtree(WORKDIR, ignore_errors=True)
    DOC.write_text(splice(DOC.read_text() if DOC.exists() else "# Benchmarks\n", result))
    say(f"wrote the {what} section of {DOC.relative_to(ROOT)}")
    for name, got, ok in goals(result):
        say(f"{'MET ' if ok else 'MISS'} {name}: {got}")
    return 0


def windows_only(sizes: Sizes, *, keep: bool) -> int:
    return section_only("wstack", "window", measure_windows, splice_windows, window_targets, sizes, keep=keep)


def archive_only(sizes: Sizes, *, keep: bool) -> int:
    return section_only(
        "astack", "archive", measure_archives, splice_archives, archive_targets, sizes, keep=keep
    )


if __name__ == "__main__":
    sys.exit(main())
