"""Time formats, time zones and CSV dialects (issue 12), mapped as a worker maps them: strftime patterns,
local times with their daylight-saving gaps and repeats, delimiters, quotes, byte order marks, CRLF,
files without a header or a last newline; and descriptors that do not use them keep their keys."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from config import constants
from producers import planner
from tests.conftest import descriptor_for
from tsbatch.descriptor import ChunkDescriptor, FieldSpec, Mapping
from tsbatch.times import time_parser
from workers.parsers import Batch, batches

S = 1_000_000_000


def utc(text: str) -> int:
    """Seconds since the epoch of an RFC 3339 UTC time, for readable expectations."""
    from tsbatch.times import rfc3339_ns

    return rfc3339_ns(text) // S


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("%Y/%m/%d", "2012/01/01", "2012-01-01T00:00:00Z"),
        ("%Y/%m/%d %H:%M", "2010/01/01 13:45", "2010-01-01T13:45:00Z"),
        ("%b %d %Y", "Jan 1 2000", "2000-01-01T00:00:00Z"),
        ("%d.%m.%Y %H:%M:%S", "29.02.2024 23:59:59", "2024-02-29T23:59:59Z"),
        ("%Y-%m-%d %H:%M:%S%z", "2024-01-01 02:00:00+0200", "2024-01-01T00:00:00Z"),
    ],
)
def test_a_strftime_pattern_reads_its_times_as_utc_unless_they_carry_an_offset(
    pattern: str, text: str, expected: str
) -> None:
    assert time_parser(pattern, "s")(text) == utc(expected)


def test_pattern_times_are_floored_to_the_precision_and_keep_microseconds() -> None:
    parse = time_parser("%Y-%m-%d %H:%M:%S.%f", "ms")
    assert parse("2024-01-01 00:00:00.123456") == utc("2024-01-01T00:00:00Z") * 1000 + 123
    assert time_parser("%Y-%m-%d %H:%M:%S.%f", "ns")("1970-01-01 00:00:00.000001") == 1_000


LA = {"time_format": "%Y/%m/%d %H:%M", "timezone": "America/Los_Angeles"}


def parser(**mapping: Any) -> Any:
    m = {**LA, **mapping}
    return time_parser(m["time_format"], "s", timezone=m["timezone"], ambiguous=m.get("ambiguous", "reject"))


def test_hourly_los_angeles_local_times_are_pacific_standard_in_winter_and_daylight_in_summer() -> None:
    parse = parser()
    assert parse("2010/01/01 00:00") == utc("2010-01-01T08:00:00Z")
    assert parse("2010/07/01 00:00") == utc("2010-07-01T07:00:00Z")
    hours = [parse(f"2010/03/14 {h:02d}:00") for h in (0, 1, 3, 4)]  # 02:00 does not exist
    assert [b - a for a, b in itertools.pairwise(hours)] == [3600, 3600, 3600]


@pytest.mark.parametrize("when", ["2010/03/14 02:00", "2010/03/14 02:59"])
def test_a_local_time_in_the_spring_forward_gap_is_refused_with_its_reason(when: str) -> None:
    with pytest.raises(ValueError) as e:
        parser()(when)
    assert str(e.value) == (
        f"time '{when}' does not exist in America/Los_Angeles: the clocks skip it "
        "(from UTC-08:00 to UTC-07:00)"
    )


@pytest.mark.parametrize(
    ("ambiguous", "expected"),
    [("earliest", "2010-11-07T08:30:00Z"), ("latest", "2010-11-07T09:30:00Z")],
)
def test_a_local_time_in_the_fall_back_hour_takes_the_occurrence_asked_for(
    ambiguous: str, expected: str
) -> None:
    assert parser(ambiguous=ambiguous)("2010/11/07 01:30") == utc(expected)


def test_a_local_time_in_the_fall_back_hour_is_refused_by_default() -> None:
    with pytest.raises(
        ValueError, match=r"ambiguous in America/Los_Angeles: it occurs twice \(UTC-07:00, then"
    ):
        parser()("2010/11/07 01:30")
    assert parser()("2010/11/07 02:00") == utc("2010-11-07T10:00:00Z")  # after the repeat: one reading


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_format": "%Y/%q"}, "%q cannot be read"),
        ({"time_format": "%m/%d"}, "has no year"),
        ({"time_format": "yesterday"}, "is not rfc3339, epoch or a strftime pattern"),
        ({"time_format": "%Y", "timezone": "Mars/Olympus"}, "not an IANA zone name"),
        ({"timezone": "Europe/Berlin"}, "--timezone and --ambiguous apply to times without an offset"),
        ({"time_format": "%Y%z", "ambiguous": "latest"}, "'%Y%z' times carry their own"),
        ({"delimiter": ";;"}, "one character"),
        ({"delimiter": '"'}, "one character"),
    ],
)
def test_mappings_that_cannot_be_read_are_refused_when_they_are_made(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Mapping(measurement="m", field_columns=(FieldSpec(name="v"),), **change)


def descriptor(mapping: Mapping | None, fmt: str = "csv") -> ChunkDescriptor:
    return ChunkDescriptor(
        schema_version=1,
        job_id="j",
        path="/srv/a",
        file_size=10,
        file_mtime_ns=1,
        chunk_sha256="0" * 64,
        start=0,
        end=10,
        first_line=2,
        line_count=1,
        format=fmt,  # type: ignore[arg-type]
        mapping=mapping,
        route="hot",
    )


BASE = Mapping(
    measurement="cpu",
    tag_columns=("host",),
    field_columns=(FieldSpec(name="v"),),
    columns=("time", "host", "v"),
)


def test_descriptors_that_use_none_of_the_new_options_keep_their_keys() -> None:
    # Computed by the code before issue 12 (main at 6593633) for the same descriptors.
    assert (
        descriptor(BASE).content_key() == "d600b0800d9bfea8f5cb0d6af67bf406d60dd0d917e6a995572b359442c9b8d2"
    )
    jsonl = BASE.model_copy(update={"time_format": "epoch", "columns": ()})
    assert descriptor(jsonl, "jsonl").content_key() == (
        "ec70936e766e869b8b655eeaa1bc287cc02c4fe9b95ac455766be1aa159af945"
    )
    assert "timezone" not in descriptor(BASE).to_message()["mapping"]


@pytest.mark.parametrize(
    "change",
    [
        {"time_format": "%Y/%m/%d"},
        {"time_format": "%Y/%m/%d", "timezone": "America/Los_Angeles"},
        {"time_format": "%Y/%m/%d", "timezone": "America/Los_Angeles", "ambiguous": "earliest"},
        {"delimiter": ";"},
    ],
)
def test_each_new_option_changes_the_key_and_travels_in_the_descriptor(change: dict[str, Any]) -> None:
    desc = descriptor(BASE.model_copy(update=change)).with_key()
    assert desc.key != descriptor(BASE).content_key()
    assert ChunkDescriptor.model_validate(desc.to_message()).mapping == Mapping.model_validate(
        {**BASE.model_dump(), **change}
    )


def parse(data: bytes, first_line: int = 2, **mapping: Any) -> list[Batch]:
    m = Mapping.model_validate(
        {
            "measurement": "w",
            "tag_columns": ("station",),
            "field_columns": (FieldSpec(name="tmax"),),
            "time_column": "date",
            "columns": ("station", "date", "tmax"),
            **mapping,
        }
    )
    desc = descriptor_for(data, format="csv", first_line=first_line, mapping=m.model_dump())
    return list(batches(data, desc, batch_lines=100, max_line_bytes=1 << 20))


def lines_of(found: list[Batch]) -> list[str]:
    return [line for b in found for line in b.lines()]


def rejected_of(found: list[Batch]) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for b in found for r in b.rejected]


def test_a_los_angeles_hourly_file_lands_but_for_the_hours_the_clocks_skip_and_repeat() -> None:
    data = (
        b"USW1,2010/03/14 01:00,1\n"
        b"USW1,2010/03/14 02:00,2\n"
        b"USW1,2010/03/14 03:00,3\n"
        b"USW1,2010/11/07 01:00,4\n"
        b"USW1,2010/11/07 01:00,5\n"
        b"USW1,2010/11/07 02:00,6"  # the last line has no newline
    )
    found = parse(data, **LA)

    assert lines_of(found) == [
        f"w,station=USW1 tmax=1 {utc('2010-03-14T09:00:00Z') * S}",
        f"w,station=USW1 tmax=3 {utc('2010-03-14T10:00:00Z') * S}",
        f"w,station=USW1 tmax=6 {utc('2010-11-07T10:00:00Z') * S}",
    ]
    rejected = rejected_of(found)
    assert [line for line, _ in rejected] == [3, 5, 6]
    assert "does not exist in America/Los_Angeles" in rejected[0][1]
    assert "choose with --ambiguous earliest or latest" in rejected[1][1]


def test_dates_with_month_names_map_in_a_file_without_a_last_newline() -> None:
    found = parse(b"USW1,Jan 1 2000,1.5\nUSW1,Feb 29 2000,2", time_format="%b %d %Y")
    assert lines_of(found) == [
        f"w,station=USW1 tmax=1.5 {utc('2000-01-01T00:00:00Z') * S}",
        f"w,station=USW1 tmax=2 {utc('2000-02-29T00:00:00Z') * S}",
    ]


@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_a_delimiter_splits_rows_and_quoted_fields_may_hold_it(sep: str) -> None:
    rows = [f'"US{sep}W1"{sep}2024-01-01T00:00:00Z{sep}1', f"USW2{sep}2024-01-01T00:00:00Z{sep}2"] * 3
    found = parse("\n".join(rows).encode(), delimiter=sep)
    escaped = {"\t": "\\t", ";": ";", "|": "|"}[sep]
    assert lines_of(found)[:2] == [
        f"w,station=US{escaped}W1 tmax=1 {utc('2024-01-01T00:00:00Z') * S}",
        f"w,station=USW2 tmax=2 {utc('2024-01-01T00:00:00Z') * S}",
    ]
    assert not rejected_of(found)


def test_crlf_line_ends_leave_no_carriage_return_in_any_value() -> None:
    rows = [f"USW{i},2024-01-01T00:00:0{i}Z,{i}" for i in range(5)]
    crlf = parse(
        ("\r\n".join(rows) + "\r\n").encode(),
        tag_columns=(),
        field_columns=[{"name": "station", "kind": "string"}],
    )
    lf = parse(
        ("\n".join(rows) + "\n").encode(),
        tag_columns=(),
        field_columns=[{"name": "station", "kind": "string"}],
    )
    assert lines_of(crlf) == lines_of(lf)
    assert not any("\r" in line or "\\r" in line for line in lines_of(crlf))
    assert lines_of(crlf)[0] == f'w station="USW0" {utc("2024-01-01T00:00:00Z") * S}'


def test_a_quoted_field_with_a_line_break_is_refused_on_each_of_its_lines() -> None:
    found = parse(b'USW1,2024-01-01T00:00:00Z,"1\n2"\nUSW2,2024-01-01T00:00:00Z,3\n')
    assert lines_of(found) == [f"w,station=USW2 tmax=3 {utc('2024-01-01T00:00:00Z') * S}"]
    assert rejected_of(found) == [
        (2, "a quoted field does not end on its line (fields holding line breaks are not read)"),
        (3, "1 columns, header has 3"),
    ]


def test_json_lines_take_patterns_zones_and_epoch_numbers() -> None:
    def jsonl(line: bytes, **mapping: Any) -> list[str]:
        m = Mapping(measurement="w", field_columns=(FieldSpec(name="v"),), **mapping)
        desc = descriptor_for(line, format="jsonl", mapping=m.model_dump())
        return lines_of(list(batches(line, desc, batch_lines=10, max_line_bytes=1 << 20)))

    assert jsonl(b'{"time": "2010/01/01 00:00", "v": 1}', **LA) == [
        f"w v=1 {utc('2010-01-01T08:00:00Z') * S}"
    ]
    assert jsonl(b'{"time": 1262304000000, "v": 1}', time_format="epoch") == ["w v=1 1262304000000"]


def file_with(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def test_a_byte_order_mark_is_not_part_of_the_first_name_and_the_data_offset_counts_it(
    tmp_path: Path,
) -> None:
    fd = file_with(tmp_path, b"\xef\xbb\xbftime;host;v\r\n2024-01-01T00:00:00Z;a;1\r\n")
    try:
        columns, offset = planner.read_header(fd, "f.csv", ";")
        assert (columns, offset) == (("time", "host", "v"), 3 + len(b"time;host;v\r\n"))
        [chunk] = planner.scan(fd, chunk_lines=10, offset=offset, first_line=2)
        assert os.pread(fd, chunk.end - chunk.start, chunk.start) == b"2024-01-01T00:00:00Z;a;1\r\n"
    finally:
        os.close(fd)


def test_a_file_without_a_header_starts_after_its_byte_order_mark(tmp_path: Path) -> None:
    fd = file_with(tmp_path, b"\xef\xbb\xbfUSW1,2024-01-01T00:00:00Z,1")
    try:
        assert planner.bom_length(fd) == 3
        [chunk] = planner.scan(fd, chunk_lines=10, offset=3)
        assert (chunk.start, chunk.line_count) == (3, 1)
    finally:
        os.close(fd)


# End to end: a real worker and VictoriaMetrics (tests/conftest.py's make_stack).

LA_HOURS = [  # (local time, value): the 02:00 of 2010-03-14 does not exist, the 01:00 of 2010-11-07 twice
    ("2010/03/14 01:00", 1),
    ("2010/03/14 02:00", 2),
    ("2010/03/14 03:00", 3),
    ("2010/11/07 00:00", 4),
    ("2010/11/07 01:00", 5),
    ("2010/11/07 02:00", 6),
]


def ms(text: str) -> int:
    return utc(text) * 1000


def produce(stack: Any, path: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    import json

    from tests.conftest import cli

    done = cli(stack, "produce", str(path), "--route", "default", "--wait", "--json", *args)
    summary = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    return done, summary


def dead_lines(stack: Any, job: str) -> dict[int, str]:
    import json

    from tests.conftest import cli

    listed = cli(stack, "dlq", "list", "--job", job, "--json").stdout.splitlines()
    return {int(e["line"]): e["message"] for e in map(json.loads, listed)}


def test_local_times_in_a_semicolon_crlf_file_with_a_byte_order_mark_land_in_utc(
    make_stack: Any, data_dir: Path
) -> None:
    from tests.conftest import landed

    stack = make_stack()
    stack.start_worker()
    rows = [f'"h;1";{when};{value}' for when, value in LA_HOURS]
    src = data_dir / "la.csv"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["host;local time;temp", *rows]).encode())  # no last CRLF
    mapping = ("--format", "csv", "--measurement", "air", "--tag-columns", "host", "--field-columns", "temp")
    zone = (
        "--time-column",
        "local time",
        "--time-format",
        "%Y/%m/%d %H:%M",
        "--timezone",
        "America/Los_Angeles",
    )

    done, summary = produce(stack, src, *mapping, *zone, "--delimiter", ";")

    assert done.returncode == 1, done.stderr  # two rows refused
    assert (summary["points"], summary["rejected_lines"]) == (4, 2)
    dead = dead_lines(stack, summary["job"])
    assert sorted(dead) == [3, 6]
    assert "does not exist in America/Los_Angeles" in dead[3]
    assert "ambiguous in America/Los_Angeles" in dead[6]
    assert landed(stack.routes["default"].url) == {
        ("air_temp", "h;1"): [
            (ms("2010-03-14T09:00:00Z"), 1.0),
            (ms("2010-03-14T10:00:00Z"), 3.0),
            (ms("2010-11-07T07:00:00Z"), 4.0),
            (ms("2010-11-07T10:00:00Z"), 6.0),
        ]
    }

    again, summary = produce(stack, src, *mapping, *zone, "--delimiter", ";", "--ambiguous", "latest")

    assert again.returncode == 1 and (summary["points"], summary["rejected_lines"]) == (5, 1)  # new keys
    assert (ms("2010-11-07T09:00:00Z"), 5.0) in landed(stack.routes["default"].url)[("air_temp", "h;1")]


def test_a_headerless_file_of_month_names_lands_with_columns(make_stack: Any, data_dir: Path) -> None:
    from tests.conftest import landed

    stack = make_stack()
    stack.start_worker()
    src = data_dir / "months.csv"
    src.write_text("USW1,Jan 1 2000,1.5\nUSW1,Feb 29 2000,2.5")  # no header, no last newline

    done, summary = produce(
        stack,
        src,
        "--format",
        "csv",
        "--columns",
        "host,date,tmax",
        "--measurement",
        "w",
        "--tag-columns",
        "host",
        "--field-columns",
        "tmax",
        "--time-column",
        "date",
        "--time-format",
        "%b %d %Y",
    )

    assert done.returncode == 0, done.stderr
    assert (summary["points"], summary["rejected_lines"]) == (2, 0)
    assert landed(stack.routes["default"].url) == {
        ("w_tmax", "USW1"): [(ms("2000-01-01T00:00:00Z"), 1.5), (ms("2000-02-29T00:00:00Z"), 2.5)]
    }


def test_preflight_stops_a_wrong_time_format_and_no_preflight_dead_letters_every_row(
    make_stack: Any, data_dir: Path
) -> None:
    from tests.conftest import ledger

    stack = make_stack()
    stack.start_worker()
    src = data_dir / "daily.csv"
    src.write_text("host,date,tmax\n" + "".join(f"USW1,2012/01/{d:02d},{d}\n" for d in range(1, 11)))
    mapping = ("--format", "csv", "--measurement", "w", "--tag-columns", "host", "--field-columns", "tmax")

    stopped, _ = produce(stack, src, *mapping, "--time-column", "date")

    assert stopped.returncode == 2 and stopped.stdout == ""
    assert "line 2: time '2012/01/01' is not RFC 3339" in stopped.stderr
    assert "try --time-format '%Y/%m/%d'" in stopped.stderr
    redis = ledger(stack).redis
    for what in ("unit:*", "job:*", "jobs", "dlq"):  # no job, no unit, no dead letter
        assert list(redis.scan_iter(f"tsbatch:{what}")) == [], what
    assert redis.llen(stack.settings["producer"].get("queue", constants.QUEUE)) == 0

    anyway, summary = produce(stack, src, *mapping, "--time-column", "date", "--no-preflight")

    assert anyway.returncode == 1
    assert (summary["points"], summary["rejected_lines"], summary["committed"]) == (0, 10, 1)
    assert sorted(dead_lines(stack, summary["job"])) == list(range(2, 12))
    assert list(redis.scan_iter("tsbatch:unit:*"))  # the check above would have seen a unit


@pytest.mark.parametrize("given", ["\\t", "\t", "tab"])
def test_the_cli_takes_a_tab_delimiter_written_as_backslash_t(given: str) -> None:
    from tsbatch.cli import _mapping

    opts = {
        "measurement": "m",
        "measurement_column": None,
        "tag_columns": None,
        "field_columns": "v",
        "time_column": "time",
        "time_format": "rfc3339",
        "timezone": "UTC",
        "ambiguous": "reject",
        "delimiter": given,
        "columns": None,
    }
    mapping = _mapping("csv", opts)
    assert mapping is not None and mapping.delimiter == "\t"
