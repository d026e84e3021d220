"""Faults no real server produces on demand, from the fault-injection server in front of VictoriaMetrics:
throttling, outages, ambiguous and partial writes. Nothing is lost and nothing is committed twice."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from tests.conftest import cli, expected, landed, ledger, wait_for
from tsbatch import datagen
from tsbatch.localstack import vm_rows_inserted


def _proxied_stack(make_stack, fault_proxy, **worker: Any):
    # Equal chunks (no taper): the scenarios count chunks and batches.
    stack = make_stack(producer={"chunk_lines": 1_000, "taper": False}, worker={"batch_lines": 250, **worker})
    proxy = fault_proxy(stack.routes["default"].url, seed=7)
    stack.point_route("default", proxy.url)
    return stack, proxy


def _distinct(series: dict[Any, list[tuple[int, float]]]) -> dict[Any, list[tuple[int, float]]]:
    return {k: sorted(set(v)) for k, v in series.items()}


def _produce(stack, src: Path) -> dict[str, Any]:
    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")
    return {"rc": done.returncode, **json.loads(done.stdout.splitlines()[-1])}


def _retry_margins(requests: list[dict[str, Any]]) -> list[float]:
    """For every throttled answer, how long after it the same body came again (negative: too soon)."""
    by_body: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(requests, key=lambda r: r["arrival_monotonic"]):
        by_body[hashlib.sha256("\n".join(r["lines"]).encode()).hexdigest()].append(r)
    margins = []
    for attempts in by_body.values():
        for told, again in pairwise(attempts):
            if told["status"] in (429, 503):
                asked = float(told["headers"].get("Retry-After", 0))
                margins.append(again["arrival_monotonic"] - told["responded_monotonic"] - asked)
    return margins


def test_throttled_writes_all_land_and_no_retry_comes_sooner_than_retry_after(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack, proxy = _proxied_stack(make_stack, fault_proxy)
    proxy.set_faults(
        [
            {"status": 429, "retry_after": "1", "probability": 0.15},
            {"status": 503, "retry_after": "1", "probability": 0.15},
        ]
    )
    stack.start_worker(concurrency=2)
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=200)  # 4,000 points, 4 chunks, 16 batches

    summary = _produce(stack, src)

    assert summary["rc"] == 0 and summary["committed"] == 4 and summary["dead"] == 0
    # A batch out of in-task retries hands the chunk back to Celery; its retry rewrites what had landed.
    assert _distinct(landed(stack.routes["default"].url)) == expected(20, 200)
    requests = proxy.requests(lines=True)
    assert any(r["status"] in (429, 503) for r in requests)
    margins = _retry_margins(requests)
    assert margins and min(margins) >= -0.05, margins  # 50 ms of clock granularity between processes
    assert ledger(stack).stats()["commits"] == 4


def test_an_ambiguous_write_is_retried_and_lands_once(make_stack, fault_proxy, data_dir: Path) -> None:
    stack, proxy = _proxied_stack(make_stack, fault_proxy)
    stack.settings["routes"]["default"]["timeout_s"] = 2
    stack.write_config()
    # The body reaches the server and is stored, but no answer ever comes back.
    proxy.set_faults([{"mode": "hang", "forward": True, "count": 2}])
    stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=10, points_per_series=100)

    summary = _produce(stack, src)

    assert summary["rc"] == 0 and (summary["committed"], summary["points"]) == (1, 1_000)
    assert _distinct(landed(stack.routes["default"].url)) == expected(10, 100)  # rewrites converge
    assert ledger(stack).stats()["commits"] == 1


def test_lines_the_server_refuses_are_isolated_and_dead_lettered_and_the_rest_lands(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack, proxy = _proxied_stack(make_stack, fault_proxy)
    proxy.set_faults([{"status": 400, "reject_matching": "host=h00003,"}])
    stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=10, points_per_series=100)

    summary = _produce(stack, src)

    assert summary["rc"] == 1 and (summary["points"], summary["rejected_lines"]) == (900, 100)
    entries = [
        json.loads(x)
        for x in cli(stack, "dlq", "list", "--job", summary["job"], "--json").stdout.split("\n")
        if x
    ]
    assert len(entries) == 100 and all("host=h00003," in e["raw"] for e in entries)
    assert all(e["message"].startswith("refused by the server") for e in entries)
    assert sorted(int(e["line"]) for e in entries) == [4 + 10 * k for k in range(100)]
    want = {k: v for k, v in expected(10, 100).items() if k[1] != "h00003"}
    # Bisecting re-sends the good half of a partly written batch: an overwrite under InfluxDB, a kept
    # duplicate in VictoriaMetrics, so compare distinct samples.
    assert _distinct(landed(stack.routes["default"].url)) == want


def test_a_401_route_opens_the_breaker_and_later_chunks_are_dead_lettered_without_a_request(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 200, "taper": False}, worker={"breaker_threshold": 3})
    proxy = fault_proxy(stack.routes["default"].url, token="not-the-configured-one")
    stack.point_route("default", proxy.url)
    stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=100)  # 10 chunks

    summary = _produce(stack, src)

    assert summary["rc"] == 1 and (summary["dead"], summary["points"]) == (10, 0)
    assert len(proxy.requests()) == 3  # the threshold, then no more requests
    entries = list(ledger(stack).dead_letters(job_id=summary["job"]))
    assert all(e.get("reason") == "route_rejected" for e in entries)
    assert sum("circuit open" in e.get("message") for e in entries) == 7


def test_an_outage_defers_chunks_behind_the_open_breaker_until_a_probe_succeeds(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack, proxy = _proxied_stack(
        make_stack, fault_proxy, breaker_threshold=2, breaker_cooldown_s=2, batch_retries=0, retry_base_s=0.2
    )
    proxy.set_faults([{"status": 503}])
    stack.start_worker(concurrency=2)
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=200)  # 4 chunks
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    book = ledger(stack)
    wait_for(lambda: book.stats().get("breaker_deferrals", 0) >= 2, what="chunks deferred by the breaker")
    failed_during_outage = len(proxy.requests())

    proxy.clear_faults()

    status = wait_for(lambda: (s := book.job(job)).done and s, timeout=120, what="the job")
    assert (status.committed, status.dead, status.points) == (4, 0, 4_000)
    assert failed_during_outage < 12  # the breaker kept the failing route from being hammered
    assert landed(stack.routes["default"].url) == expected(20, 200)
    assert vm_rows_inserted(stack.routes["default"].url) == 8_000
