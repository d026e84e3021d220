"""Restore (issue 10): Parquet files in the archive shape loaded with ``tsbatch produce --format parquet``
through the whole pipeline (producer, redis, real workers, VictoriaMetrics), from a path and from S3
(moto's standalone server), each row group a chunk, each chunk committed once."""

from __future__ import annotations

import json
import math
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli
from tests.s3server import S3Server, start_s3
from tsbatch.localstack import Stack, vm_export_settled, vm_rows_inserted

BASE_NS = 1_700_000_000_000_000_000
FIELDS = ("usage", "count", "ok", "note")  # VictoriaMetrics stores bools as 0/1 and a string as 0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[int, float]]]


def archive_table(rows: int, *, bad: dict[int, float] | None = None) -> pa.Table:
    """Rows in the archive shape: two measurements, nullable tags, float/int/bool/string fields with
    nulls, and every 60th row with no field at all (no point: skipped, not rejected). ``bad``: row
    index -> a float for ``usage`` (NaN, inf)."""

    def field(value: Any, i: int) -> Any:
        return None if i % 60 == 0 else value

    usage = [field(None if i % 5 == 0 else i * 0.25 - 3, i) for i in range(rows)]
    for i, value in (bad or {}).items():
        usage[i] = value
    table = pa.table(
        {
            "time": pa.array(
                [BASE_NS + i * 1_000_000_000 for i in range(rows)], pa.timestamp("ns", tz="UTC")
            ),
            "measurement": pa.array(["cpu" if i % 3 else "disk io" for i in range(rows)]).dictionary_encode(),
            "host": pa.array([f"h{i % 4}" for i in range(rows)]).dictionary_encode(),
            "region": pa.array([None if i % 7 == 0 else ("eu,west" if i % 2 else "us") for i in range(rows)]),
            "usage": pa.array(usage, pa.float64()),
            "count": pa.array([field(None if i % 6 == 0 else i * 1_000_003 - 500, i) for i in range(rows)]),
            "ok": pa.array([field(None if i % 4 == 0 else i % 3 == 1, i) for i in range(rows)], pa.bool_()),
            "note": pa.array([field(None if i % 2 else f'say "{i}"', i) for i in range(rows)], pa.string()),
        }
    )
    meta = {"version": 1, "tags": ["host", "region"], "fields": ["usage", "count", "ok", "note"]}
    return table.replace_schema_metadata({"tsbatch": json.dumps(meta)})


def expected(table: pa.Table, *, skip: frozenset[int] = frozenset()) -> Samples:
    out: Samples = defaultdict(list)
    for i, row in enumerate(table.to_pylist()):
        if i in skip:
            continue
        tags = frozenset((k, row[k]) for k in ("host", "region") if row[k])
        for name in FIELDS:
            value = row[name]
            if value is not None:
                ms = (BASE_NS + i * 1_000_000_000) // 1_000_000
                number = 0.0 if isinstance(value, str) else float(value)
                out[(f"{row['measurement']}_{name}", tags)].append((ms, number))
    return {k: sorted(v) for k, v in out.items()}


def landed(vm_url: str) -> Samples:
    out: Samples = defaultdict(list)
    for row in vm_export_settled(vm_url, expect_samples=vm_rows_inserted(vm_url)):
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        out[(name, frozenset(labels.items()))].extend(zip(row["timestamps"], row["values"], strict=True))
    return {k: sorted(v) for k, v in out.items()}


def assert_landed_as(got: Samples, want: Samples) -> None:
    assert got.keys() == want.keys()
    for key, samples in want.items():  # VictoriaMetrics keeps about 12 significant digits of a float
        assert [t for t, _ in got[key]] == [t for t, _ in samples], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in samples], rel=1e-11), key


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(done.stdout.splitlines()[-1]))


def commits(stack: Stack) -> int:
    return sum(w.log.read_text(errors="replace").count("committed job=") for w in stack.workers)


def test_a_parquet_archive_lands_row_for_row_each_row_group_a_chunk_committed_once(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 250}, worker={"batch_lines": 64})
    stack.start_worker(concurrency=2)
    table = archive_table(1000)
    src = data_dir / "cpu.parquet"
    pq.write_table(table, src, row_group_size=250)

    done = cli(stack, "produce", str(src), "--route", "default", "--format", "parquet", "--wait", "--json")

    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    assert summary["chunks"] == summary["committed"] == 4  # one per row group
    assert summary["points"] == sum(1 for i in range(1000) if i % 60) and summary["rejected_lines"] == 0
    assert_landed_as(landed(stack.routes["default"].url), expected(table))
    assert commits(stack) == 4
    inserted = vm_rows_inserted(stack.routes["default"].url)

    again = cli(stack, "produce", str(src), "--route", "default", "--format", "parquet", "--wait", "--json")

    assert again.returncode == 0, again.stderr
    assert "enqueued 0 chunks" in again.stderr and "skipped 4 already done" in again.stderr
    assert vm_rows_inserted(stack.routes["default"].url) == inserted and commits(stack) == 4


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = start_s3(tmp_path / "s3")
    yield server
    server.stop()


def test_an_archive_in_s3_under_the_url_roots_lands_and_a_url_outside_them_is_refused(
    make_stack, s3: S3Server, tmp_path: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 100})
    stack.settings["sources"]["url_roots"] = ["s3://telemetry/archive/"]
    stack.write_config()
    stack.start_worker(concurrency=2, extra_env=s3.aws_env())
    env = {**stack.env(), **s3.aws_env()}
    table = archive_table(600)
    for name, part in (("a", table.slice(0, 300)), ("b", table.slice(300))):
        local = tmp_path / f"{name}.parquet"
        pq.write_table(part, local, row_group_size=100)
        s3.put("telemetry", f"archive/2024/{name}.parquet", local.read_bytes())
        s3.put("telemetry", f"elsewhere/{name}.parquet", local.read_bytes())

    def produce(*urls: str) -> subprocess.CompletedProcess[str]:
        argv = stack.tsbatch(
            "produce", *urls, "--route", "default", "--format", "parquet", "--wait", "--json"
        )
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    done = produce("s3://telemetry/archive/2024/")  # a prefix: the objects below it

    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    assert summary["chunks"] == summary["committed"] == 6 and summary["rejected_lines"] == 0
    assert_landed_as(landed(stack.routes["default"].url), expected(table))
    again = produce("s3://telemetry/archive/2024/a.parquet", "s3://telemetry/archive/2024/b.parquet")
    assert again.returncode == 0 and "enqueued 0 chunks" in again.stderr and "skipped 6" in again.stderr

    outside = produce("s3://telemetry/elsewhere/a.parquet")

    assert outside.returncode == 1
    assert "s3://telemetry/elsewhere/a.parquet: not under sources.url_roots (s3://telemetry/archive/)" in (
        outside.stderr
    )
    assert summary_of(outside)["chunks"] == 0 and commits(stack) == 6
    dump = subprocess.run(stack.tsbatch("dlq", "list", "--json"), env=env, capture_output=True, text=True)
    assert "testing" not in dump.stdout + done.stdout + done.stderr  # no credential anywhere


def test_a_nan_row_is_dead_lettered_with_its_row_number_and_the_rest_lands(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 100}, worker={"batch_lines": 30})
    stack.start_worker(concurrency=1)
    bad = {41: math.nan, 257: math.inf}  # rows 42 and 258 of the file, counted from 1
    table = archive_table(300, bad=bad)
    src = data_dir / "with-nan.parquet"
    pq.write_table(table, src, row_group_size=100)

    done = cli(stack, "produce", str(src), "--route", "default", "--format", "parquet", "--wait", "--json")

    assert done.returncode == 1, done.stderr  # rows were rejected
    summary = summary_of(done)
    assert summary["committed"] == 3 and summary["rejected_lines"] == 2
    assert_landed_as(landed(stack.routes["default"].url), expected(table, skip=frozenset(bad)))
    entries = [json.loads(x) for x in cli(stack, "dlq", "list", "--json").stdout.splitlines()]
    by_line = {int(e["line"]): e for e in entries}
    assert sorted(by_line) == [42, 258]
    assert by_line[42]["message"] == (
        "parquet row 42: column 'usage': nan is not a finite float "
        "(line protocol cannot store NaN or infinity)"
    )
    assert "parquet row 258: column 'usage': inf is not" in by_line[258]["message"]
    assert json.loads(by_line[42]["raw"])["host"] == "h1" and by_line[42]["path"] == str(src)
