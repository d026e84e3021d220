"""What one unit of work costs Redis, and how many units one Redis sustains (docs/SCALING.md).

    .venv/bin/python scripts/redis_cost.py [--chunks 400] [--lines-per-chunk 500]

1. A real run: a file of ``chunks`` x ``lines-per-chunk`` lines produced with ``--wait`` into one worker
   (2 processes) on its own redis-server and VictoriaMetrics. ``CONFIG RESETSTAT`` before, then
   ``INFO commandstats``, ``INFO stats`` (network bytes) and ``INFO cpu`` (Redis's own CPU seconds)
   after: commands, bytes and Redis CPU per unit, everything included (broker, ledger, breaker, sweeper,
   Celery events, the producer's wait).
2. The ledger alone at full speed: threads doing plan -> claim -> commit on distinct units against a
   fresh redis-server, to see the units/s its scripts reach and Redis's CPU per unit without the rest.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from tsbatch import datagen
from tsbatch.ledger import Ledger, connect
from tsbatch.localstack import start_redis, start_stack


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def real_run(chunks: int, lines_per_chunk: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tsbatch-redis-cost-"))
    data = work / "data"
    data.mkdir()
    src = data / "p.lp"
    series = 100
    datagen.write(src, "lp", series=series, points_per_series=chunks * lines_per_chunk // series)
    stack = start_stack(
        work / "stack", roots=[data], producer={"chunk_lines": lines_per_chunk, "taper": False}
    )
    try:
        stack.start_worker(concurrency=2)
        r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        r.config_resetstat()
        cpu0, t0 = _cpu(r), time.monotonic()
        import subprocess

        out = subprocess.run(
            stack.tsbatch("produce", str(src), "--route", "default", "--wait", "--json"),
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        wall = time.monotonic() - t0
        summary = json.loads(out.stdout.splitlines()[-1])
        cpu = _cpu(r) - cpu0
        stats = r.info("stats")
        commands = {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}
        units = summary["committed"]
        return {
            "units": units,
            "lines_per_unit": lines_per_chunk,
            "wall_s": round(wall, 2),
            "commands_per_unit": round(sum(commands.values()) / units, 1),
            "top_commands_per_unit": {
                k: round(v / units, 2) for k, v in sorted(commands.items(), key=lambda kv: -kv[1])[:12]
            },
            "net_in_bytes_per_unit": round(stats["total_net_input_bytes"] / units),
            "net_out_bytes_per_unit": round(stats["total_net_output_bytes"] / units),
            "redis_cpu_ms_per_unit": round(cpu * 1000 / units, 3),
            "redis_cpu_share": round(cpu / wall, 3),
        }
    finally:
        stack.stop()


def ledger_only(seconds: float, threads: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tsbatch-redis-ledger-"))
    proc = start_redis(work)
    url = f"redis://127.0.0.1:{proc.port}/0"
    try:
        descriptor = json.dumps({"pad": "x" * 900})  # a chunk descriptor is ~1 KB
        done = [0] * threads
        stop = time.monotonic() + seconds

        def loop(i: int) -> None:
            ledger = Ledger(connect(url), prefix="cost")
            job = f"job-{i}"
            ledger.create_job(job, route="r", paths=[])
            n = 0
            while time.monotonic() < stop:
                key = uuid.uuid4().hex
                ledger.plan(key, job, descriptor=descriptor)
                claim = ledger.claim(
                    key, worker=f"w{i}", lease_ttl_s=60, max_attempts=12, descriptor=descriptor
                )
                record: dict[str, str | int | float] = {
                    "points": 1,
                    "bytes": 1,
                    "sha256": "x" * 64,
                    "rejected": 0,
                }
                common = {"job": job, "key": key, "path": "", "route": "r"}
                ledger.commit(key, claim.holder, record=record, rejected=[], dlq_common=common)
                n += 1
            done[i] = n

        r = redis.Redis.from_url(url)
        cpu0 = _cpu(r)
        t0 = time.monotonic()
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        wall = time.monotonic() - t0
        cpu = _cpu(r) - cpu0
        units = sum(done)
        return {
            "threads": threads,
            "units": units,
            "units_per_s": round(units / wall),
            "redis_cpu_share": round(cpu / wall, 3),
            "redis_cpu_us_per_unit": round(cpu * 1e6 / units, 1),
            "units_per_s_at_one_full_core": round(units / cpu) if cpu else None,
            "used_memory_bytes_per_committed_unit": round(int(r.info("memory")["used_memory"]) / units),
        }
    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=400)
    ap.add_argument("--lines-per-chunk", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    print(json.dumps({"real_run": real_run(args.chunks, args.lines_per_chunk)}, indent=2))
    print(json.dumps({"ledger_only": ledger_only(args.seconds, args.threads)}, indent=2))


if __name__ == "__main__":
    main()
