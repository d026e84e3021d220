"""Archive jobs end to end: real redis-server, VictoriaMetrics as the hot route, real workers; files in a
local folder and in S3 served by moto's standalone server (a real HTTP S3 endpoint), read back with
pyarrow and DuckDB (an independent reader)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, ledger, wait_for
from tests.test_windows import EVERY, T0, Raw, write_raw
from tsbatch.archives import archive_path
from tsbatch.localstack import free_port, http_get
from tsbatch.windows import iso

pytestmark = pytest.mark.timeout(600)


def points_by_row(raw: Raw, start: int, end: int) -> dict[tuple[str, str, int], dict[str, float]]:
    """The raw points of a window as archive rows: (host, region, ns) -> fields."""
    rows: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
    for (host, region, fld), points in raw.items():
        for ms, v in points:
            if start * 1000 <= ms < end * 1000:
                rows[(host, region, ms * 1_000_000)][fld] = v
    return rows


def file_rows(data: bytes) -> dict[tuple[str, str, int], dict[str, float]]:
    import pyarrow as pa

    table = pq.read_table(pa.BufferReader(data))
    out = {}
    for r in table.to_pylist():
        ns = int(r["time"].timestamp() * 1_000_000) * 1000
        out[(r["host"], r["region"], ns)] = {f: r[f] for f in ("usage", "system") if r[f] is not None}
    return out


def add_archive(stack: Any, url: str) -> None:
    stack.settings["jobs"] = {
        "cpu_archive": {
            "kind": "archive",
            "source": "hot",
            "measurement": "cpu",
            "every": f"{EVERY}s",
            "url": url,
        }
    }
    stack.write_config()


def test_windows_are_archived_to_a_folder_verified_and_tampering_is_reported(
    make_stack: Any, tmp_path: Path
) -> None:
    stack = make_stack(routes=("hot",))
    raw = write_raw(stack.routes["hot"].url, hosts=5, start=T0, seconds=3 * EVERY, step=9)
    root = tmp_path / "archive"
    add_archive(stack, f"file://{root}")
    stack.start_worker(concurrency=2)
    r = cli(
        stack, "backfill", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 3 * EVERY), "--wait", "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["committed"] == 3

    paths = [archive_path(f"file://{root}", "cpu", "cpu_archive", T0 + k * EVERY) for k in range(3)]
    assert paths[0].endswith("/measurement=cpu/date=2026-01-01/cpu_archive-20260101T000000Z.parquet")
    for k, path in enumerate(paths):
        data = Path(path.removeprefix("file://")).read_bytes()
        assert file_rows(data) == points_by_row(raw, T0 + k * EVERY, T0 + (k + 1) * EVERY)
    assert not list(root.rglob("*.tmp")) and not list(root.rglob(".tsbatch-*"))

    # DuckDB reads the folder as one Hive-partitioned dataset.
    con = duckdb.connect()
    total, hosts, usage = con.execute(
        "SELECT count(*), count(DISTINCT host), sum(usage) "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert total == len(points_by_row(raw, T0, T0 + 3 * EVERY))
    assert hosts == 5
    assert usage == pytest.approx(sum(v for (h, g, f), pts in raw.items() if f == "usage" for _, v in pts))

    ok = cli(stack, "archive", "verify", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 3 * EVERY))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # The hot bucket's retention drops these windows within the next two days: three are archived, the
    # windows after them are not (yet), and both `retention plan` and `jobs` say so.
    retention = int(time.time()) - T0 + 3600
    stack.settings["buckets"] = {"hot": {"route": "hot", "retention": f"{retention}s", "warn_before": "2d"}}
    stack.write_config()
    plan = cli(stack, "retention", "plan", "--days", "2", "--json")
    assert plan.returncode == 1, plan.stderr
    windows = {w["window"]: w for w in map(json.loads, plan.stdout.splitlines())}
    assert [windows[iso(T0 + k * EVERY)]["archived"] for k in range(4)] == [True, True, True, False]
    assert not windows[iso(T0 - EVERY)]["archived"]  # planned by nobody: the job's range starts at T0
    assert windows[iso(T0)]["expires"] == iso(T0 + EVERY + retention)
    warned = cli(stack, "jobs")
    assert "window(s) of bucket hot expire within 172800s and are not archived" in warned.stderr
    Path(paths[0].removeprefix("file://")).unlink()
    p1 = Path(paths[1].removeprefix("file://"))
    p1.write_bytes(p1.read_bytes()[:-10])
    p2 = Path(paths[2].removeprefix("file://"))
    data = bytearray(p2.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p2.write_bytes(bytes(data))
    bad = cli(
        stack, "archive", "verify", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 3 * EVERY), "--json"
    )
    assert bad.returncode == 1
    problems = {json.loads(line)["window"]: json.loads(line)["problem"] for line in bad.stdout.splitlines()}
    assert problems[iso(T0)].startswith("missing")
    assert problems[iso(T0 + EVERY)].startswith("truncated")
    assert problems[iso(T0 + 2 * EVERY)].startswith("altered")


@pytest.fixture
def moto_s3(tmp_path: Path) -> Any:
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port), "-H", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), timeout=60, what="moto_server")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    yield env
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _up(url: str) -> bool:
    try:
        http_get(url, timeout=1)
        return True
    except OSError:
        return False


def test_windows_are_archived_to_s3_with_one_put_each_and_read_back_by_duckdb(
    make_stack: Any, moto_s3: dict[str, str]
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=moto_s3["AWS_ENDPOINT_URL"])
    fs.mkdir("telemetry-archive")
    stack = make_stack(routes=("hot",))
    raw = write_raw(stack.routes["hot"].url, hosts=3, start=T0, seconds=2 * EVERY, step=10)
    add_archive(stack, "s3://telemetry-archive/cpu")
    stack.start_worker(concurrency=1, extra_env=moto_s3)
    env = {**stack.env(), **moto_s3}
    r = subprocess.run(
        stack.tsbatch(
            "backfill", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 2 * EVERY), "--wait", "--json"
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    keys = sorted(fs.find("telemetry-archive/cpu"))
    assert keys == [
        "telemetry-archive/cpu/measurement=cpu/date=2026-01-01/cpu_archive-20260101T000000Z.parquet",
        "telemetry-archive/cpu/measurement=cpu/date=2026-01-01/cpu_archive-20260101T001000Z.parquet",
    ]
    for k, key in enumerate(keys):
        assert file_rows(fs.cat(key)) == points_by_row(raw, T0 + k * EVERY, T0 + (k + 1) * EVERY)
    local = Path(stack.workdir) / "dl.parquet"
    local.write_bytes(fs.cat(keys[0]))
    [(n,)] = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{local}')").fetchall()
    assert n == len(points_by_row(raw, T0, T0 + EVERY))
    verify = subprocess.run(
        stack.tsbatch("archive", "verify", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 2 * EVERY)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert ledger(stack).stats()["commits"] == 2


def test_a_worker_killed_while_writing_a_file_leaves_no_partial_file_and_commits_once(
    make_stack: Any, tmp_path: Path
) -> None:
    stack = make_stack(
        routes=("hot",), worker={"lease_ttl_s": 3, "heartbeat_s": 0.5}, ledger={"sweep_interval_s": 1}
    )
    raw = write_raw(stack.routes["hot"].url, hosts=1000, start=T0, seconds=EVERY, step=1)  # 1.2M values
    root = tmp_path / "archive"
    add_archive(stack, f"file://{root}")
    worker = stack.start_worker(concurrency=1, name="victim")
    final = Path(archive_path(f"file://{root}", "cpu", "cpu_archive", T0).removeprefix("file://"))
    assert cli(stack, "backfill", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + EVERY)).returncode == 0

    from tsbatch.localstack import children

    [child] = children(worker.proc.pid)
    deadline = time.monotonic() + 120
    while not any(n.startswith(".tsbatch-") for n in _listdir(final.parent)):  # the temp file, being written
        assert time.monotonic() < deadline, "the temp file never appeared"
        time.sleep(0.002)
    os.kill(child, 9)
    assert not final.exists()  # never visible under its final name before it is complete

    book = ledger(stack)
    wait_for(lambda: book.stats().get("commits", 0) == 1, timeout=180, what="the window's commit")
    assert file_rows(final.read_bytes()) == points_by_row(raw, T0, T0 + EVERY)
    [row] = [
        json.loads(x)
        for x in cli(
            stack, "windows", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + EVERY), "--json"
        ).stdout.splitlines()
    ]
    assert row["state"] == "committed" and row["attempts"] == 2
    time.sleep(1)
    assert book.stats()["commits"] == 1
    assert (
        cli(stack, "archive", "verify", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + EVERY)).returncode
        == 0
    )


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def test_delete_after_archive_deletes_each_window_once_archived_never_by_field(
    make_stack: Any, fault_proxy: Any, tmp_path: Path
) -> None:
    """The source is the fault-injection server standing in for InfluxDB 2 (its query answer recorded in
    the test, its delete API recorded): what is checked is the order (a window is deleted only after its
    archive committed) and the request, not what a real InfluxDB deletes."""
    from tests.test_windows_influx import flux_answer

    every = 300
    now = int(time.time())
    first = now - now % every - 3 * every
    stack = make_stack(routes=("vm",))
    proxy = fault_proxy(stack.routes["vm"].url)
    raw = {("h1", "eu", "usage"): [(first * 1000 + k * 10_000, float(k)) for k in range(30)]}
    proxy.set_query_answers([{"body": flux_answer(raw)}])
    stack.settings["routes"]["hot"] = {
        "kind": "influxdb2",
        "url": proxy.url,
        "org": "local",
        "bucket": "hot",
        "token": "",
    }
    stack.settings["jobs"] = {
        "cpu_archive": {
            "kind": "archive",
            "source": "hot",
            "measurement": "cpu",
            "tags": {"region": "eu"},
            "every": "5m",
            "start": iso(first),
            "url": f"file://{tmp_path / 'archive'}",
            "delete_after_archive": True,
        }
    }
    stack.settings["scheduler"] = {"tick_s": 1}
    stack.write_config()
    stack.start_worker(concurrency=1)
    stack.start_beat()

    def deletes() -> list[dict[str, Any]]:
        return [r for r in proxy.admin_requests() if r["path"] == "/api/v2/delete"]

    wait_for(lambda: len(deletes()) >= 3, timeout=120, what="three windows deleted")
    stack.beats[0].stop()
    time.sleep(2)  # a tick in flight finishes
    book = ledger(stack)
    rows = [
        json.loads(x)
        for x in cli(
            stack, "windows", "cpu_archive", "--from", iso(first), "--to", iso(first + 3 * every), "--json"
        ).stdout.splitlines()
    ]
    assert [r["state"] for r in rows] == ["committed"] * 3
    sent = deletes()[:3]
    for k, req in enumerate(sent):
        body = json.loads(req["body"])
        assert body == {
            "start": f"{iso(first + k * every)[:-1]}.000000000Z",
            "stop": f"{iso(first + (k + 1) * every - 1)[:-1]}.999999999Z",
            "predicate": '_measurement="cpu" AND region="eu"',
        }
        assert req["query"] == {"org": "local", "bucket": "hot"} and req["status"] == 204
    marks = book.redis.hgetall("tsbatch:window:cpu_archive")
    # Deleted only below the watermark (every window there committed: archived and verified), in order.
    assert int(marks["pruned"]) <= int(marks["watermark"])
    assert len(deletes()) == (int(marks["pruned"]) - first) // every
    assert len({json.loads(r["body"])["start"] for r in deletes()}) == len(deletes())  # none twice


def test_archived_windows_restored_into_a_fresh_server_give_identical_series(
    make_stack: Any, data_dir: Path
) -> None:
    stack = make_stack(routes=("hot", "fresh"))
    write_raw(stack.routes["hot"].url, hosts=6, start=T0, seconds=2 * EVERY, step=7)
    add_archive(stack, f"file://{data_dir / 'archive'}")
    stack.start_worker(concurrency=2)
    r = cli(stack, "backfill", "cpu_archive", "--from", iso(T0), "--to", iso(T0 + 2 * EVERY), "--wait")
    assert r.returncode == 0, r.stdout + r.stderr

    files = sorted(str(p) for p in (data_dir / "archive").rglob("*.parquet"))
    assert len(files) == 2
    restored = cli(stack, "produce", *files, "--format", "parquet", "--route", "fresh", "--wait", "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr

    def series(url: str) -> dict[tuple[str, str, str], list[tuple[int, float]]]:
        from tsbatch.localstack import vm_export_settled, vm_rows_inserted

        out = {}
        for row in vm_export_settled(url, expect_samples=vm_rows_inserted(url)):
            m = row["metric"]
            out[(m["__name__"], m["host"], m["region"])] = sorted(
                zip(row["timestamps"], row["values"], strict=True)
            )
        return out

    assert series(stack.routes["fresh"].url) == series(stack.routes["hot"].url)
