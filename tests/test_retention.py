"""Points older than the target bucket's retention: InfluxDB drops them with a 422, which is permanent
(dead-lettered once as ``outside_retention``, never retried nor bisected), and a backfill that would
write such windows is refused before anything is planned.

The 422 comes from the fault-injection server (no InfluxDB 2 runs here), with InfluxDB 2.7's wording as
documented in "Troubleshoot issues writing data" (docs-v2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from influxdb_client.rest import ApiException

from config import load_settings
from producers.retention import RetentionConflict, check_window_retention
from tests.conftest import cli, ledger
from tests.test_windows import EVERY, T0
from tests.test_windows_influx import flux_answer, influx_stack
from tsbatch import datagen
from tsbatch.errors import OutsideRetention
from tsbatch.localstack import to_toml
from tsbatch.windows import iso
from workers.writer import RejectedBatch, classify

pytestmark = pytest.mark.timeout(300)
DAY = 86_400
DROPPED_27 = (
    "failure writing points to database: partial write: dropped 3 points outside retention policy of "
    "duration 720h0m0s - oldest point cpu,host=h00000 at 2024-01-01T00:00:00Z dropped because it violates "
    "a Retention Policy Lower Bound at 2025-11-02T10:00:00Z, newest point cpu,host=h00002 at "
    "2024-01-01T00:00:02Z dropped because it violates a Retention Policy Lower Bound at "
    "2025-11-02T10:00:00Z dropped=3 for database: 9f282d63c7d3a5c0 for retention policy: autogen"
)
BEYOND = "points beyond retention policy dropped=2"  # InfluxDB 1.x and 2.0
RETENTION_422 = {
    "status": 422,
    "body": json.dumps({"code": "unprocessable entity", "message": DROPPED_27}),
}


def _api_error(status: int, message: str) -> ApiException:
    err = ApiException(status=status, reason="Unprocessable Entity")
    err.body = json.dumps({"code": "unprocessable entity", "message": message}).encode()
    return err


def test_influxdb_27s_retention_422_is_outside_retention_with_the_dropped_count() -> None:
    err = classify(_api_error(422, DROPPED_27), "warm")
    assert isinstance(err, OutsideRetention) and err.reason == "outside_retention"
    assert err.dropped == 3 and err.status == 422
    assert "dropped 3 points older than the bucket's retention of 720h0m0s" in str(err)


@pytest.mark.parametrize(
    "message",
    [
        "failure writing points to database: partial write: " + BEYOND,
        "unexpected error writing points to database: partial write: " + BEYOND,
    ],
)
def test_the_older_retention_wording_is_outside_retention_too(message: str) -> None:
    # InfluxDB 2.0 answered it with 500 (dojot/dojot#2216): retried for ever otherwise.
    for status in (422, 500):
        err = classify(_api_error(status, message), "warm")
        assert isinstance(err, OutsideRetention) and err.dropped == 2


def test_other_partial_writes_are_still_rejected_lines_to_isolate() -> None:
    conflict = "failure writing points to database: partial write: field type conflict: ... dropped=1"
    assert type(classify(_api_error(422, conflict), "warm")) is RejectedBatch


def test_a_chunk_the_server_drops_as_outside_retention_is_dead_lettered_once(
    make_stack: Any, fault_proxy: Any, data_dir: Path
) -> None:
    stack = make_stack(worker={"breaker_threshold": 1})
    proxy = fault_proxy(stack.routes["default"].url)
    stack.point_route("default", proxy.url)
    proxy.set_faults([RETENTION_422])
    stack.start_worker()
    src = data_dir / "old.lp"
    datagen.write(src, "lp", series=3, points_per_series=10)  # 30 lines: one chunk, one batch

    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    summary = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 1 and (summary["dead"], summary["committed"]) == (1, 0)
    assert len(proxy.requests()) == 1  # not retried, not bisected line by line
    [entry] = list(ledger(stack).dead_letters(job_id=summary["job"]))
    assert entry.get("reason") == "outside_retention" and entry.get("kind") == "chunk"
    assert "dropped 3 points older than the bucket's retention of 720h0m0s" in entry.get("message")
    assert entry.get("attempts") == "1"
    # The route is healthy: its breaker (threshold 1 here) did not count the refusal.
    [route] = [json.loads(line) for line in cli(stack, "routes", "--json").stdout.splitlines()]
    assert (route["breaker"], route["failures"]) == ("closed", 0)


def test_a_window_the_target_drops_as_outside_retention_is_dead_lettered_once(
    make_stack: Any, fault_proxy: Any
) -> None:
    stack, proxy = influx_stack(make_stack, fault_proxy, kind="copy")
    stack.point_route("warm", proxy.url)  # the window's output goes through the fault server too
    raw = {("h0", "eu", "usage"): [(T0 * 1000 + k * 1000, float(k)) for k in range(3)]}
    proxy.set_query_answers([{"body": flux_answer(raw)}])
    proxy.set_faults([RETENTION_422])
    stack.start_worker()

    r = cli(stack, "backfill", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + EVERY), "--wait", "--json")

    assert r.returncode == 1, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["dead"] == 1
    assert len(proxy.requests()) == 1
    [entry] = [json.loads(line) for line in cli(stack, "dlq", "list", "--json").stdout.splitlines()]
    assert (entry["reason"], entry["kind"]) == ("outside_retention", "window")


# -- backfill refuses windows older than the target bucket's retention --------------------------


def _settings(retention: str, **job: Any) -> Any:
    route = {"url": "http://influx:8086", "org": "acme", "token": "t"}
    return load_settings(
        routes={"hot": {**route, "bucket": "hot"}, "warm": {**route, "bucket": "warm"}},
        buckets={"warm": {"route": "warm", "retention": retention}},
        jobs={
            "cpu_1h": {
                "kind": "downsample",
                "source": "hot",
                "target": "warm",
                "measurement": "cpu",
                "every": "1h",
                "aggregates": ["mean"],
                **job,
            }
        },
    )


def test_a_window_older_than_the_target_buckets_retention_is_refused() -> None:
    now = T0 + 40 * DAY + 1800  # 2026-02-10T00:30:00Z
    with pytest.raises(RetentionConflict) as caught:
        check_window_retention(_settings("30d"), "cpu_1h", T0, T0 + 41 * DAY, now=now)
    assert str(caught.value) == (
        "window 2026-01-01T00:00:00Z is older than the retention of bucket warm (30d): InfluxDB would drop "
        "its points; the first window it would keep starts at 2026-01-11T01:00:00Z"
    )


def test_windows_inside_the_retention_or_a_forever_bucket_are_accepted() -> None:
    now = T0 + 40 * DAY
    check_window_retention(_settings("30d"), "cpu_1h", T0 + 11 * DAY, T0 + 12 * DAY, now=now)
    check_window_retention(_settings("0s"), "cpu_1h", T0, T0 + DAY, now=now)
    # A bucket declared for another route is not the job's target.
    other = _settings("30d", target="hot")
    check_window_retention(other, "cpu_1h", T0, T0 + DAY, now=now)


def test_backfill_is_refused_before_anything_is_planned(tmp_path: Path) -> None:
    settings = {
        # No Redis listens there: the refusal must come first.
        "redis": {"url": "redis://127.0.0.1:9/0"},
        "routes": {
            name: {"url": "http://127.0.0.1:9", "org": "acme", "bucket": name, "token": "t"}
            for name in ("hot", "warm")
        },
        "buckets": {"warm": {"route": "warm", "retention": "30d"}},
        "jobs": {
            "cpu_1h": {
                "kind": "copy",
                "source": "hot",
                "target": "warm",
                "measurement": "cpu",
                "every": "1h",
            }
        },
    }
    config = tmp_path / "tsbatch.toml"
    config.write_text(to_toml(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSBATCH_")} | {
        "TSBATCH_CONFIG": str(config)
    }
    args = ["backfill", "cpu_1h", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-02T00:00:00Z"]
    done = subprocess.run(
        [sys.executable, "-m", "tsbatch.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert (
        "window 2020-01-01T00:00:00Z is older than the retention of bucket warm (30d): InfluxDB would drop "
        "its points" in done.stderr
    )
    assert "redis" not in done.stderr.lower()
