"""Windows read from an ``influxdb2`` route. No InfluxDB 2 runs here: the source is the project's
fault-injection server answering ``/api/v2/query`` with annotated CSV written by the test (or recorded
in tests/flux/answers/), and the target a real VictoriaMetrics. What is checked here: the Flux sent
(equal to the rendered template), the streamed parse of the answer, the aggregates of what it held, an
error table after data rows, and server mode's request and answer. Whether InfluxDB runs those queries
as intended is not (docs/FLUX.md)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, ledger
from tests.test_windows import EVERY, T0, reference, written
from tsbatch.flux import render_downsample, render_read
from tsbatch.windows import Definition, iso

pytestmark = pytest.mark.timeout(300)
ANSWERS = Path(__file__).parent / "flux" / "answers"
HEAD = (
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string,string\r\n"
    "#group,false,false,true,true,false,false,true,true,true,true\r\n"
    "#default,_result,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_value,_field,_measurement,host,region\r\n"
)


def flux_answer(raw: dict[tuple[str, str, str], list[tuple[int, float]]]) -> str:
    """Annotated CSV as InfluxDB answers a read: one table per series and field, sorted by time."""
    rows = []
    for table, ((host, region, fld), points) in enumerate(sorted(raw.items())):
        for ms, v in sorted(points):
            rows.append(
                f",,{table},{iso(T0)},{iso(T0 + EVERY)},{iso(ms // 1000)},{v!r},{fld},cpu,{host},{region}"
            )
    return HEAD + "\r\n".join(rows) + "\r\n\r\n"


def influx_stack(make_stack: Any, fault_proxy: Any, **job: Any) -> tuple[Any, Any]:
    stack = make_stack(routes=("warm",))
    proxy = fault_proxy(stack.routes["warm"].url)
    src = {"kind": "influxdb2", "url": proxy.url, "org": "acme", "bucket": "hot", "token": ""}
    stack.settings["routes"]["hot"] = src
    if job.get("mode") == "server":
        stack.settings["routes"]["warm"] = {**src, "bucket": "warm"}
    stack.settings["jobs"] = {
        "cpu_10m": {"source": "hot", "target": "warm", "measurement": "cpu", "every": f"{EVERY}s", **job}
    }
    stack.write_config()
    return stack, proxy


def _defn(stack: Any) -> Definition:
    from config.settings import JobSettings

    return Definition.of(JobSettings.model_validate(stack.settings["jobs"]["cpu_10m"]))


def test_an_influxdb2_source_is_queried_with_the_rendered_flux_and_downsampled(
    make_stack: Any, fault_proxy: Any
) -> None:
    aggregates = ["mean", "min", "max", "count", "first", "last", "stddev", "p95"]
    stack, proxy = influx_stack(
        make_stack,
        fault_proxy,
        kind="downsample",
        aggregates=aggregates,
        fields=["usage", "system"],
        tags={"region": "eu"},
    )
    rng = random.Random(3)
    raw = {
        (f"h{h}", "eu", fld): [
            (T0 * 1000 + k * 7000 + h * 1000, round(rng.uniform(0, 100), 4)) for k in range(80)
        ]
        for h in range(3)
        for fld in ("usage", "system")
    }
    proxy.set_query_answers([{"body": flux_answer(raw)}])
    stack.start_worker(concurrency=1)
    r = cli(stack, "backfill", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + EVERY), "--wait", "--json")
    assert r.returncode == 0, r.stdout + r.stderr

    [q] = proxy.queries()
    sent = json.loads(q["body"])
    assert sent["query"] == render_read(_defn(stack), T0, T0 + EVERY, bucket="hot")
    assert q["query"]["org"] == "acme"
    got, want = written(stack.routes["warm"].url), reference(raw, T0, T0 + EVERY, EVERY)
    assert set(got) == set(want)
    for key, fields in want.items():
        for name in (f"{f}_{a}" for f in ("usage", "system") for a in aggregates):
            assert got[key][name] == pytest.approx(fields[name], rel=1e-9), (key, name)


def test_an_error_table_after_data_rows_dead_letters_the_window_and_writes_nothing(
    make_stack: Any, fault_proxy: Any
) -> None:
    stack, proxy = influx_stack(make_stack, fault_proxy, kind="copy")
    proxy.set_query_answers([{"body": (ANSWERS / "error_after_data.csv").read_bytes().decode()}])
    stack.start_worker(concurrency=1)
    r = cli(stack, "backfill", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + EVERY), "--wait", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["dead"] == 1
    assert proxy.requests() == []  # not one of the rows before the error was written
    [entry] = [json.loads(line) for line in cli(stack, "dlq", "list", "--json").stdout.splitlines()]
    assert entry["reason"] == "flux_error" and entry["kind"] == "window"
    rows = cli(stack, "windows", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + EVERY), "--json").stdout
    assert json.loads(rows)["state"] == "dead"
    jobs = json.loads(cli(stack, "jobs", "--json").stdout)
    assert jobs["job"] == "cpu_10m"
    assert ledger(stack).stats().get("commits", 0) == 0


def test_server_mode_sends_the_rendered_downsample_and_commits_what_it_answered(
    make_stack: Any, fault_proxy: Any
) -> None:
    stack, proxy = influx_stack(
        make_stack, fault_proxy, kind="downsample", mode="server", aggregates=["mean", "max"]
    )
    raw = {("h1", "eu", "usage"): [(T0 * 1000 + k * 10_000, float(k)) for k in range(60)]}
    written_rows = (
        "#datatype,string,long,dateTime:RFC3339,double,string,string,string,string\r\n"
        "#group,false,false,false,false,true,true,true,true\r\n"
        "#default,_result,,,,,,,\r\n"
        ",result,table,_time,_value,_field,_measurement,host,region\r\n"
        f",,0,{iso(T0)},29.5,usage_mean,cpu,h1,eu\r\n"
        f",,1,{iso(T0)},59,usage_max,cpu,h1,eu\r\n\r\n"
    )
    proxy.set_query_answers([{"body": flux_answer(raw)}, {"body": written_rows}])
    stack.start_worker(concurrency=1)
    r = cli(stack, "backfill", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + EVERY), "--wait", "--json")
    assert r.returncode == 0, r.stdout + r.stderr

    read, run = proxy.queries()
    defn = _defn(stack)
    assert json.loads(read["body"])["query"] == render_read(defn, T0, T0 + EVERY, bucket="hot")
    expected = render_downsample(defn, T0, T0 + EVERY, bucket="hot", target_bucket="warm", org="acme")
    assert json.loads(run["body"])["query"] == expected
    [row] = [
        json.loads(line)
        for line in cli(
            stack, "windows", "cpu_10m", "--from", iso(T0), "--to", iso(T0 + EVERY), "--json"
        ).stdout.splitlines()
    ]
    assert (row["state"], row["points_read"], row["points_written"]) == ("committed", 60, 2)
    assert proxy.requests() == []  # the server wrote, not the worker
