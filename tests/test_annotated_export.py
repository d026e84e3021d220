"""An InfluxDB export (``influx query --raw``) loaded with ``tsbatch produce --format annotated-csv``
through the whole pipeline: producer, redis, real workers, VictoriaMetrics."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import cli, shared_testdata
from tsbatch.annotated_csv import AnnotatedCsvParser
from tsbatch.localstack import vm_export_settled, vm_rows_inserted

SAMPLE = shared_testdata() / "influxdb2-sample-data" / "air-sensor-annotated-multi.csv"
ERROR_TABLE = (
    b"\r\n#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n"
    b",query terminated: out of memory,\r\n"
)

Samples = dict[tuple[str, str], list[tuple[int, float]]]


def landed_by_sensor(vm_url: str) -> Samples:
    out: Samples = defaultdict(list)
    for row in vm_export_settled(vm_url, expect_samples=vm_rows_inserted(vm_url)):
        key = (row["metric"]["__name__"], row["metric"].get("sensor_id", ""))
        out[key].extend(zip(row["timestamps"], row["values"], strict=True))
    return {k: sorted(v) for k, v in out.items()}


def expected(data: bytes) -> Samples:
    """What the export holds, read by the parser: a series per measurement_field and sensor."""
    out: Samples = defaultdict(list)
    parser = AnnotatedCsvParser(on_error=lambda _: None)
    for row in parser.feed(data) + parser.close():
        value = row.value
        if isinstance(value, float):
            key = (f"{row.measurement}_{row.field}", row.tags()["sensor_id"])
            out[key].append((row.time_ns // 1_000_000, value))
    return {k: sorted(v) for k, v in out.items()}


def test_an_influx_export_lands_row_for_row_and_bad_rows_are_dead_lettered_by_line(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 50}, worker={"batch_lines": 40})
    stack.start_worker(concurrency=2)
    lines = SAMPLE.read_bytes().split(b"\r\n")
    lines[9] = lines[9].replace(b",0.", b",zero.")  # line 10: a _value that is not a double
    src = data_dir / "air-sensors.csv"
    src.write_bytes(b"\r\n".join(lines) + ERROR_TABLE)

    done = cli(
        stack, "produce", str(src), "--route", "default", "--format", "annotated-csv", "--wait", "--json"
    )

    assert done.returncode == 1, done.stderr  # rows were rejected
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["chunks"] == summary["committed"] >= 9  # 50-line chunks, smaller ones at the end
    assert summary["points"] == 399 and summary["rejected_lines"] == 2
    got = landed_by_sensor(stack.routes["default"].url)
    want = expected(src.read_bytes())
    assert got.keys() == want.keys()
    for key, samples in want.items():  # VictoriaMetrics keeps about 12 significant digits of a float
        assert [t for t, _ in got[key]] == [t for t, _ in samples]
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in samples], rel=1e-11)
    assert {k: len(v) for k, v in got.items()} == {
        ("airSensors_co", "TLM0203"): 199,
        ("airSensors_humidity", "TLM0100"): 200,
    }
    entries = [
        json.loads(x)
        for x in cli(stack, "dlq", "list", "--job", summary["job"], "--json").stdout.splitlines()
    ]
    by_line = {int(e["line"]): e for e in entries}
    assert sorted(by_line) == [10, 410]
    assert "'_value' (double): 'zero." in by_line[10]["message"]
    assert by_line[10]["raw"] == lines[9].decode()
    assert "Flux error table: query terminated: out of memory" in by_line[410]["message"]


def test_mapping_options_are_refused_with_annotated_csv(make_stack, data_dir: Path) -> None:
    stack = make_stack()
    src = data_dir / "x.csv"
    src.write_bytes(b"")

    done = cli(
        stack, "produce", str(src), "--route", "default", "--format", "annotated-csv", "--measurement", "m"
    )

    assert done.returncode != 0 and "takes no --measurement" in done.stderr


def test_each_row_becomes_one_line_of_protocol_typed_by_its_datatype() -> None:
    from producers import preflight
    from tests.conftest import descriptor_for
    from workers.parsers import batches

    data = (
        b"#datatype,string,long,dateTime:RFC3339Nano,unsignedLong,string,string,string,string\r\n"
        b"#group,false,false,false,false,true,true,true,true\r\n"
        b"#default,_result,,,,,,,\r\n"
        b",result,table,_time,_value,_field,_measurement,host,room\r\n"
        b',,0,2024-01-01T00:00:00.123456789Z,18446744073709551615,n,m 1,"a,b",\r\n'
        b",,0,2024-01-01T00:00:01Z,-1,n,m 1,a,x\r\n"
        b"\r\n#datatype,string,long,dateTime:RFC3339,boolean,string,string\r\n"
        b",result,table,_time,_value,_field,_measurement\r\n"
        b",,1,2024-01-01T00:00:02Z,true,ok,m\r\n"
        b",,1,2024-01-01T00:00:03Z,true,,m\r\n"
    )
    desc = descriptor_for(data, format="annotated-csv", first_line=1, precision="ms")

    (batch,) = batches(data, desc, batch_lines=100, max_line_bytes=1 << 20)

    assert batch.lines() == [
        "m\\ 1,host=a\\,b n=18446744073709551615u 1704067200123",
        "m ok=true 1704067202000",
    ]
    assert list(batch.numbers) == [5, 10]
    assert [(r.line, r.reason) for r in batch.rejected] == [
        (6, "column '_value' (unsignedLong): '-1' is negative"),
        (11, "an empty _field column"),
    ]
    finding = preflight.check(data, format="annotated-csv", precision="s")
    # Finer than the precision keeps: a warning, not a stop (the points still land, truncated).
    assert finding is not None and not finding.stop and "2024-01-01T00:00:00.123456789Z" in finding.text
