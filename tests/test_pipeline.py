"""The ingestion pipeline end to end: files → descriptors in Redis → celery workers → VictoriaMetrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from config import constants
from producers import planner
from tests.conftest import cli, expected, landed, ledger
from tsbatch import datagen
from tsbatch.localstack import vm_rows_inserted

SERIES, STEPS = 40, 250  # 10,000 points, 20,000 samples
FORMAT_ARGS = {"lp": (), "csv": datagen.CSV_ARGS, "jsonl": datagen.JSONL_ARGS}


def planned_chunks(path: Path, stack) -> int:
    """How many chunks the producer plans for ``path`` with the stack's settings."""
    producer = stack.settings["producer"]
    with path.open("rb") as f:
        fd = f.fileno()
        offset, first_line = (planner.read_header(fd, path)[1], 2) if path.suffix == ".csv" else (0, 1)
        return sum(
            1
            for _ in planner.scan(
                fd,
                chunk_lines=producer["chunk_lines"],
                offset=offset,
                first_line=first_line,
                taper=producer.get("taper", constants.TAPER),
            )
        )


@pytest.mark.parametrize("kind", ["lp", "csv", "jsonl"])
def test_every_source_point_lands_exactly_once(kind: datagen.Kind, make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 1_000}, worker={"batch_lines": 300})
    stack.start_worker(concurrency=2)
    src = data_dir / f"points.{kind}"
    points = datagen.write(src, kind, series=SERIES, points_per_series=STEPS)

    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json", *FORMAT_ARGS[kind])

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["points"] == points
    assert summary["committed"] == summary["chunks"] == planned_chunks(src, stack) > 10  # tapered end
    assert summary["rejected_lines"] == 0
    vm = stack.routes["default"].url
    assert landed(vm) == expected(SERIES, STEPS)
    assert vm_rows_inserted(vm) == 2 * points  # two fields a point, each written once


def test_rerunning_the_producer_on_unchanged_files_writes_nothing(make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 1_000})
    stack.start_worker()
    src = data_dir / "points.lp"
    points = datagen.write(src, "lp", series=SERIES, points_per_series=STEPS)
    first = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")
    assert first.returncode == 0, first.stderr
    written = vm_rows_inserted(stack.routes["default"].url)

    again = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])
    assert (summary["chunks"], summary["skipped"], summary["points"]) == (0, planned_chunks(src, stack), 0)
    assert vm_rows_inserted(stack.routes["default"].url) == written == 2 * points


def test_a_changed_file_gets_new_keys_and_is_written_again(make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 1_000})
    stack.start_worker()
    src = data_dir / "points.lp"
    datagen.write(src, "lp", series=SERIES, points_per_series=STEPS)
    assert cli(stack, "produce", str(src), "--route", "default", "--wait").returncode == 0
    with open(src, "a") as f:
        f.write("cpu,host=extra usage=1.0 1704067200000000000\n")

    again = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["chunks"] == planned_chunks(src, stack) and summary["skipped"] == 0
    assert ("cpu_usage", "extra") in landed(stack.routes["default"].url)


def test_malformed_lines_are_dead_lettered_with_line_numbers_and_the_rest_lands(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 100})
    stack.start_worker()
    good = list(datagen.lines("lp", series=10, points_per_series=30))  # 300 points
    bad = {
        5: "cpu,host=x usage=abc 1704067200000000000",
        120: "cpu,host=x usage=1.0",  # no timestamp: a rewrite would make a second point
        121: "this is not line protocol",
        250: 'cpu,host=x msg="unterminated 1704067200000000000',
    }
    rows = list(good)
    for number in sorted(bad):
        rows.insert(number - 1, bad[number])
    src = data_dir / "mixed.lp"
    src.write_text("\n".join(rows) + "\n")

    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    assert done.returncode == 1  # something was rejected
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["points"] == 300 and summary["rejected_lines"] == 4
    entries = [
        json.loads(x)
        for x in cli(stack, "dlq", "list", "--job", summary["job"], "--json").stdout.splitlines()
    ]
    assert sorted(int(e["line"]) for e in entries) == sorted(bad)
    assert all(e["path"] == str(src) and e["reason"] == "rejected_line" and e["message"] for e in entries)
    assert {int(e["line"]): e["raw"] for e in entries} == bad
    assert "missing timestamp" in next(e["message"] for e in entries if e["line"] == "120")
    assert sum(len(v) for v in landed(stack.routes["default"].url).values()) == 600


def test_unknown_route_and_bad_settings_are_reported_by_name(make_stack, data_dir: Path) -> None:
    stack = make_stack()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=1, points_per_series=1)

    wrong_route = cli(stack, "produce", str(src), "--route", "nowhere")
    env = {**stack.env(), "TSBATCH_WORKER__BATCH_LINES": "many"}
    bad_setting = subprocess.run(stack.tsbatch("status", "x"), env=env, capture_output=True, text=True)
    outside = cli(stack, "produce", "/etc/hostname", "--route", "default")

    assert wrong_route.returncode != 0 and "routes.nowhere: unknown route" in wrong_route.stderr
    assert bad_setting.returncode != 0 and "worker.batch_lines" in bad_setting.stderr
    # A rejected file is reported and fails the command (the other files would have gone on).
    assert outside.returncode == 1 and "outside the source roots" in outside.stderr
    job = ledger(stack).job(outside.stdout.strip())
    assert job.units == 0 and job.rejected_files == 1 and job.done
