"""No secret leaks, however a job fails: a route token, Redis's password and Flower's password stay out
of every log, the dead-letter queue, what Flower shows of tasks, and every command's output."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import cli, wait_for
from tsbatch import datagen

TOKEN = "tok-Route-4Xq8Lm2Zr7"
REDIS_PASSWORD = "redis-Pw-9Hd3Kt6Vb1"
FLOWER_PASSWORD = "flower,Pw:5Nc8Qs2Jy"
SECRETS = (
    TOKEN,
    REDIS_PASSWORD,
    FLOWER_PASSWORD,
    base64.b64encode(f"admin:{FLOWER_PASSWORD}".encode()).decode(),
)
BAD_LINES = "cpu,host=bad usage=1.0\ncpu,host=bad usage=oops 1704067200000000000\nnot line protocol at all\n"


def _flower_get(url: str) -> str:
    request = urllib.request.Request(url)
    credential = base64.b64encode(f"admin:{FLOWER_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {credential}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def _status(stack, job: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    run = cli(stack, "status", job, "--json")
    return run, json.loads(run.stdout) if run.returncode == 0 else None


def test_no_secret_appears_anywhere_when_a_job_fails_in_every_way_it_can(
    make_stack, fault_proxy, data_dir: Path, tmp_path: Path
) -> None:
    stack = make_stack(
        producer={"chunk_lines": 200, "taper": False},
        worker={
            "batch_lines": 100,
            "retry_base_s": 0.2,
            "retry_max_s": 2.0,
            "lease_ttl_s": 5.0,
            "heartbeat_s": 1.0,
        },
        ledger={"sweep_interval_s": 1.0, "republish_after_s": 5.0},
        redis_appendonly=True,  # the restart below keeps the ledger
        redis_password=REDIS_PASSWORD,
        logging={"format": "json", "level": "DEBUG"},  # as much as every library will say
    )
    token_file = tmp_path / "route.token"
    token_file.write_text(TOKEN + "\n")
    proxy = fault_proxy(stack.routes["default"].url, token=TOKEN)
    # A 401 whose body echoes the request's credential (some proxies do), throttling, a line the server
    # refuses, and every write slowed so that the job is still running when Redis restarts.
    echo = json.dumps({"code": "unauthorized", "message": f"refused Authorization: Token {TOKEN}"})
    proxy.set_faults(
        [
            {"status": 401, "count": 1, "body": echo},
            {"status": 429, "retry_after": "1", "count": 3},
            {"status": 400, "reject_matching": "host=h00003,"},
            {"mode": "slow", "delay_s": 0.3},
        ]
    )
    route = stack.settings["routes"]["default"]
    route.pop("token")
    route.update(url=proxy.url, token_file=str(token_file))
    stack.write_config()
    flower = stack.start_flower(user="admin", password=FLOWER_PASSWORD)
    stack.start_beat()
    stack.start_worker(concurrency=2)
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=100)  # 2,000 lines: 10 chunks
    with src.open("a") as f:
        f.write(BAD_LINES)
    outputs: list[str] = []

    produced = cli(stack, "produce", str(src), "--route", "default")
    outputs += [produced.stdout, produced.stderr]
    job = produced.stdout.splitlines()[0]
    wait_for(lambda: (_status(stack, job)[1] or {}).get("committed", 0) >= 1, what="a first commit")
    stack.restart_redis(down_s=2.0)  # workers, beat and Flower all lose their connections

    def finished() -> dict[str, Any] | None:
        run, status = _status(stack, job)
        outputs.extend([run.stdout, run.stderr])
        done = status and not status["pending"] and status["chunks"] > 0
        time.sleep(0 if done else 0.5)
        return status if done else None

    status = wait_for(finished, timeout=240, what="the job to finish")
    # The 401's chunk is dead; the lines of the others that the server or the worker refused are kept.
    assert status["dead"] >= 1 and status["rejected_lines"] >= 80 + 3, status
    runs = {
        args: cli(stack, *args) for args in (("dlq", "list", "--json"), ("dlq", "list"), ("routes", "--json"))
    }
    outputs += [text for run in runs.values() for text in (run.stdout, run.stderr)]
    dlq = [json.loads(line) for line in runs["dlq", "list", "--json"].stdout.splitlines()]
    route_rejected = [e for e in dlq if e.get("reason") == "route_rejected"]
    assert route_rejected and "***" in route_rejected[0]["message"]  # the echoed credential, masked
    tasks = wait_for(
        lambda: json.loads(_flower_get(f"{flower.url}/api/tasks")) or None, what="Flower's tasks"
    )
    shown = json.dumps(tasks)
    ingest = [t for t in tasks.values() if t.get("name") == "tsbatch.ingest_chunk" and t.get("args")]
    assert ingest and all("bytes" in t["args"] and "chunk_sha256" not in t["args"] for t in ingest), ingest[
        :3
    ]
    assert any(t.get("result") for t in ingest)
    stack.stop()  # everything said on the way down is in the logs too

    logs = {p.name: p.read_text(errors="replace") for p in stack.workdir.glob("*.log")}
    assert {"worker-w1.log", "beat1.log", "flower.log"} <= set(logs)
    assert "refused Authorization" in logs["worker-w1.log"]  # the 401 was logged, masked
    assert "'cookie_secret': '***'" in logs["flower.log"]  # Flower's own, in its debug "Settings:" line
    for secret in SECRETS:
        for name, text in logs.items():
            assert secret not in text, f"{secret!r} in {name}"
        assert secret not in shown, f"{secret!r} in Flower's /api/tasks"
        for text in outputs:
            assert secret not in text, f"{secret!r} in a command's output: {text[:500]}"
