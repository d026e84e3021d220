"""What holds a route back must be bounded and clearable, and a rotated token must be picked up
(issue #8): a huge Retry-After, a token_file rewritten or briefly missing mid-run. Real Redis, real
VictoriaMetrics, the fault-injection server in front of it, and real worker processes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tests.conftest import cli, expected, landed, ledger, wait_for
from tsbatch import datagen
from tsbatch.localstack import Stack


def _distinct(series: dict[Any, list[tuple[int, float]]]) -> dict[Any, list[tuple[int, float]]]:
    # A chunk retried after some of its batches landed writes those again: InfluxDB overwrites, and
    # VictoriaMetrics keeps the duplicate, so compare distinct samples (and count commits).
    return {k: sorted(set(v)) for k, v in series.items()}


def _token_file_stack(
    make_stack: Any, fault_proxy: Any, tmp_path: Path, **worker: Any
) -> tuple[Stack, Any, Path]:
    """A stack whose route reads its token from a file holding A, behind a server that accepts only A;
    every write is slowed so that a run lasts a few seconds."""
    stack = make_stack(
        producer={"chunk_lines": 1_000, "taper": False},
        worker={"batch_lines": 250, "breaker_cooldown_s": 1, "retry_base_s": 0.3, "retry_max_s": 2, **worker},
    )
    token_file = tmp_path / "influx-token"
    token_file.write_text("token-A\n")
    proxy = fault_proxy(stack.routes["default"].url, token="token-A")
    proxy.set_faults([{"mode": "slow", "delay_s": 0.25}])
    route = stack.settings["routes"]["default"]
    del route["token"]
    route["token_file"] = str(token_file)
    stack.point_route("default", proxy.url)
    return stack, proxy, token_file


def _produce_in_background(stack: Stack, data_dir: Path) -> str:
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=400)  # 8,000 points, 8 chunks, 32 writes
    return cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]


def _wait_done(stack: Stack, job: str) -> Any:
    book = ledger(stack)
    return wait_for(lambda: (s := book.job(job)).done and s, timeout=50, what="the job")


def test_a_huge_retry_after_is_capped_shown_by_routes_and_cleared_by_routes_clear(
    make_stack: Any, fault_proxy: Any, data_dir: Path
) -> None:
    stack = make_stack(
        worker={
            "batch_lines": 250,
            "retry_after_max_s": 5,
            "breaker_threshold": 2,
            "breaker_cooldown_s": 3,
            "retry_base_s": 0.3,
            "retry_max_s": 1,
            "batch_retry_max_wait_s": 1,  # a 5 s pause goes back to Celery as a countdown
        }
    )
    proxy = fault_proxy(stack.routes["default"].url)
    stack.point_route("default", proxy.url)
    proxy.set_faults([{"status": 429, "retry_after": "99999999"}])
    stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=10, points_per_series=100)  # 1,000 points, one chunk, 4 writes
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    red = ledger(stack).redis
    wait_for(lambda: red.exists("tsbatch:throttle:default"), timeout=30, what="the route's pause")
    wait_for(lambda: red.hget("tsbatch:breaker:default", "state") == "open", timeout=30, what="the breaker")

    assert 0 < red.pttl("tsbatch:throttle:default") <= 5_000  # not 99999999 s
    shown = json.loads(cli(stack, "routes", "--json").stdout)
    assert shown["route"] == "default" and shown["configured"] is True
    assert 0 < shown["paused_for_s"] <= 5 and shown["breaker"] in ("open", "probing")
    assert shown["kind"] == "transient" and "capped at 5s" in shown["reason"]
    assert "99999999" in shown["reason"]  # what the server asked for stays visible
    text = cli(stack, "routes").stdout
    assert "default: breaker " in text and "paused" in text
    assert "to clear: tsbatch routes clear default" in text
    assert "local-token" not in text + json.dumps(shown)

    proxy.clear_faults()
    cleared = cli(stack, "routes", "clear", "default")

    assert cleared.returncode == 0 and "breaker closed, pause lifted" in cleared.stdout
    assert not red.exists("tsbatch:breaker:default", "tsbatch:throttle:default")
    assert "breaker closed; not paused" in cli(stack, "routes").stdout
    status = _wait_done(stack, job)
    assert (status.committed, status.dead, status.points) == (1, 0, 1_000)
    assert _distinct(landed(stack.routes["default"].url)) == expected(10, 100)
    assert ledger(stack).stats()["commits"] == 1
    log = stack.workers[0].log.read_text()
    countdowns = [float(s) for s in re.findall(r"retry job=\S+ key=\S+ in ([\d.]+)s", log)]
    assert countdowns and max(countdowns) <= 5.0  # the Celery countdown's floor is capped too


def test_a_token_rotated_mid_run_is_picked_up_and_no_chunk_is_dead_lettered(
    make_stack: Any, fault_proxy: Any, data_dir: Path, tmp_path: Path
) -> None:
    stack, proxy, token_file = _token_file_stack(make_stack, fault_proxy, tmp_path)
    stack.start_worker()
    job = _produce_in_background(stack, data_dir)
    wait_for(lambda: len(proxy.requests()) >= 8, timeout=30, what="the run to be under way")

    token_file.write_text("token-B\n")  # the new token goes to the file first ...
    time.sleep(0.5)
    proxy.set_token("token-B")  # ... and the server stops accepting the old one a moment later
    switched = time.monotonic()

    status = _wait_done(stack, job)
    assert (status.committed, status.dead, status.points) == (8, 0, 8_000)
    assert list(ledger(stack).dead_letters(job_id=job)) == []
    assert _distinct(landed(stack.routes["default"].url)) == expected(20, 400)
    requests = proxy.requests()
    assert any(r["status"] == 401 for r in requests)  # token B was sent before the server knew it
    after = [r for r in requests if r["arrival_monotonic"] > switched]
    assert any(r["status"] == 204 for r in after)  # written with token B, by the same worker


def test_a_token_file_briefly_missing_delays_writes_but_dead_letters_nothing(
    make_stack: Any, fault_proxy: Any, data_dir: Path, tmp_path: Path
) -> None:
    stack, proxy, token_file = _token_file_stack(make_stack, fault_proxy, tmp_path, batch_retries=0)
    stack.start_worker()
    job = _produce_in_background(stack, data_dir)
    wait_for(lambda: len(proxy.requests()) >= 8, timeout=30, what="the run to be under way")

    token_file.unlink()
    time.sleep(2)
    token_file.write_text("token-A\n")

    status = _wait_done(stack, job)
    assert (status.committed, status.dead, status.points) == (8, 0, 8_000)
    assert list(ledger(stack).dead_letters(job_id=job)) == []
    assert _distinct(landed(stack.routes["default"].url)) == expected(20, 400)
    log = stack.workers[0].log.read_text()
    assert "token_file" in log and "No such file or directory" in log  # the gap was hit, and retried
    assert "unknown_route" not in log
