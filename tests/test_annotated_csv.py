"""The annotated-CSV parser reads back what an annotated-CSV writer wrote, however the bytes are split,
and reads InfluxDB's own exports; malformed input is refused with its line number."""

from __future__ import annotations

import hashlib
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers import planner
from tests.conftest import shared_testdata
from tsbatch.annotated_csv import (
    AnnotatedCsvError,
    AnnotatedCsvParser,
    FluxQueryError,
    Row,
    Value,
    rfc3339_ns,
)

SAMPLES = shared_testdata() / "influxdb2-sample-data"

# ---------------------------------------------------------------------------------------------------
# A writer of annotated CSV, as Flux's encoder writes it (quotes only where needed, or everywhere).

DATATYPES = ["long", "unsignedLong", "double", "boolean", "string", "dateTime:RFC3339Nano", "duration"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
VALUES: dict[str, st.SearchStrategy[Value]] = {
    "long": st.integers(-(2**63), 2**63 - 1),
    "unsignedLong": st.integers(0, 2**64 - 1),
    "double": st.floats(allow_nan=False),
    "boolean": st.booleans(),
    "string": TEXT.filter(bool),
    "dateTime:RFC3339Nano": st.integers(-(2**62), 2**62),
    "duration": st.sampled_from(["1h", "5m30s", "1mo2d", "-3ns"]),
}


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 10**9)
    stamp = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")
    return stamp + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def text_of(value: Value, datatype: str) -> str:
    if value is None:
        return ""
    if datatype == "boolean":
        return "true" if value else "false"
    if datatype == "double":
        assert isinstance(value, float)
        return ("+Inf" if value > 0 else "-Inf") if math.isinf(value) else repr(value)
    if datatype.startswith("dateTime"):
        assert isinstance(value, int)
        return rfc3339(value)
    return str(value)


def cell(text: str, always_quote: bool) -> str:
    if always_quote or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


@dataclass
class Block:
    """One annotation block: its columns and the rows of its tables (values; None = empty cell)."""

    columns: list[str]
    datatypes: list[str]
    groups: list[bool]
    defaults: list[Value]
    rows: list[list[Value]]  # cells as written: None where the cell is left empty


def write(blocks: list[Block], *, eol: str, always_quote: bool) -> bytes:
    out: list[str] = []

    def line(cells: list[str]) -> None:  # an annotation's name is never quoted: "#group" is a value
        out.append(",".join([cells[0], *(cell(c, always_quote) for c in cells[1:])]) + eol)

    for n, b in enumerate(blocks):
        if n:
            out.append(eol)
        line(["#group", "false", "false", *("true" if g else "false" for g in b.groups)])
        line(["#datatype", "string", "long", *b.datatypes])
        defaults = [text_of(v, t) for v, t in zip(b.defaults, b.datatypes, strict=True)]
        line(["#default", "_result", "", *defaults])
        line(["", "result", "table", *b.columns])
        for table_id, row in enumerate(b.rows):
            cells = [text_of(v, t) for v, t in zip(row, b.datatypes, strict=True)]
            line(["", "", str(table_id // 3), *cells])
    return "".join(out).encode()


def expected(blocks: list[Block]) -> list[tuple[object, ...]]:
    """What the parser must give per row: schema, table and typed values (empty cells: the default)."""
    out = []
    for b in blocks:
        for table_id, row in enumerate(b.rows):
            values = [d if v is None else v for v, d in zip(row, b.defaults, strict=True)]
            out.append(
                (
                    ("result", "table", *b.columns),
                    ("string", "long", *b.datatypes),
                    (False, False, *b.groups),
                    "_result",
                    table_id // 3,
                    ["_result", table_id // 3, *values],
                )
            )
    return out


def seen(rows: list[Row]) -> list[tuple[object, ...]]:
    return [
        (r.table.columns, r.table.datatypes, r.table.groups, r.table.result, r.table.table_id, r.values)
        for r in rows
    ]


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    names = draw(
        st.lists(
            st.sampled_from(["_time", "_value", "_field", "_measurement"]) | TEXT.filter(bool),
            min_size=1,
            max_size=5,
            unique=True,
        ).filter(lambda cs: not {"result", "table"} & set(cs))
    )
    types = [draw(st.sampled_from(DATATYPES)) for _ in names]
    defaults = [draw(st.none() | VALUES[t]) for t in types]
    cells = st.tuples(*(st.none() | VALUES[t] for t in types)).map(list)
    return Block(
        columns=names,
        datatypes=types,
        groups=[draw(st.booleans()) for _ in names],
        defaults=defaults,
        rows=draw(st.lists(cells, max_size=8)),
    )


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Row]:
    parser = AnnotatedCsvParser()
    rows: list[Row] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in pairwise(bounds):
        rows += parser.feed(data[a:b])
    return rows + parser.close()


@settings(max_examples=300, deadline=None)
@given(
    tables=st.lists(blocks(), min_size=1, max_size=4),
    eol=st.sampled_from(["\r\n", "\n"]),
    always_quote=st.booleans(),
    cuts=st.lists(st.integers(0, 10**6), max_size=12),
)
def test_what_the_writer_wrote_is_read_back_however_the_bytes_are_split(
    tables: list[Block], eol: str, always_quote: bool, cuts: list[int]
) -> None:
    data = write(tables, eol=eol, always_quote=always_quote)

    assert seen(feed_in_pieces(data, cuts)) == expected(tables)


@settings(max_examples=50, deadline=None)
@given(tables=st.lists(blocks(), min_size=1, max_size=3), eol=st.sampled_from(["\r\n", "\n"]))
def test_bytes_fed_one_at_a_time_give_the_same_rows(tables: list[Block], eol: str) -> None:
    data = write(tables, eol=eol, always_quote=False)

    assert seen(feed_in_pieces(data, list(range(len(data))))) == expected(tables)


@settings(max_examples=300, deadline=None)
@given(ns=st.integers(-(2**62), 2**62))
def test_rfc3339_times_keep_every_nanosecond(ns: int) -> None:
    assert rfc3339_ns(rfc3339(ns)) == ns


def test_rfc3339_offsets_and_bad_times() -> None:
    assert rfc3339_ns("2021-06-11T09:59:15+02:00") == rfc3339_ns("2021-06-11T07:59:15Z")
    assert rfc3339_ns("1970-01-01T00:00:00.000000001Z") == 1
    assert rfc3339_ns("1969-12-31T23:59:59.5-00:30") == 1_799_500_000_000
    for bad in (
        "2021-02-30T00:00:00Z",
        "2021-06-11 09:59:15Z",
        "2021-06-11T24:00:00Z",
        "2021-06-11T09:59:15",
    ):
        with pytest.raises(ValueError):
            rfc3339_ns(bad)
    with pytest.raises(ValueError):
        rfc3339_ns("2021-06-11T09:59:15.1234567891Z")  # a tenth digit would be dropped silently


# ---------------------------------------------------------------------------------------------------
# InfluxDB's own exports (influx query --raw, InfluxDB 2.0.7)


def test_an_influx_export_reads_as_typed_rows_with_shared_tables() -> None:
    rows = feed_in_pieces((SAMPLES / "air-sensor-annotated-head.csv").read_bytes(), [1000, 1001, 20_000])

    assert [r.table.table_id for r in rows] == [0] * 361 + [1] * 111
    first = rows[0]
    assert first.line == 5 and first.table.result == "_result"
    assert first.table.columns == (
        "result",
        "table",
        "_time",
        "_value",
        "_field",
        "_measurement",
        "sensor_id",
    )
    assert first.table.groups == (False, False, False, False, True, True, True)
    assert first.time_ns == 1_623_403_945_000_000_000  # 2021-06-11T09:32:25Z
    assert (first.measurement, first.field, first.value) == ("airSensors", "co", 0.4801705303428872)
    assert first.tags() == {"sensor_id": "TLM0100"}
    assert rows[1].table is first.table and rows[-1].table is not first.table
    assert rows[-1].table.schema is first.table.schema
    assert rows[-1].tags() == {"sensor_id": "TLM0101"} and rows[-1].line == 476


def test_tables_that_follow_each_other_without_a_new_header_are_told_apart() -> None:
    rows = feed_in_pieces((SAMPLES / "air-sensor-annotated-multi.csv").read_bytes(), [7, 8, 9])

    assert [(r.table.table_id, r.field) for r in (rows[0], rows[199], rows[200], rows[-1])] == [
        (7, "co"),
        (7, "co"),
        (8, "humidity"),
        (8, "humidity"),
    ]
    assert rows[200].tags() == {"sensor_id": "TLM0100"} and rows[-1].line == 404


ERROR_TABLE = (
    b"\r\n#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n"
    b'," runtime error: ""x"", at line\r\n3",897\r\n'
)


def test_an_error_table_after_data_rows_raises_flux_query_error() -> None:
    data = (SAMPLES / "air-sensor-annotated-head.csv").read_bytes()
    parser = AnnotatedCsvParser()
    rows = parser.feed(data)

    with pytest.raises(FluxQueryError) as raised:
        parser.feed(ERROR_TABLE)

    assert len(rows) == 472
    assert raised.value.message == ' runtime error: "x", at line\r\n3' and raised.value.reference == "897"
    assert raised.value.line == 482 and raised.value.reason == "flux_error"


def test_an_error_table_in_one_piece_with_rows_raises_and_collects_with_on_error() -> None:
    data = b"#datatype,string,long,double\r\n,result,table,_value\r\n,r,0,1.5\r\n" + ERROR_TABLE
    with pytest.raises(FluxQueryError):
        AnnotatedCsvParser().feed(data)
    problems: list[Exception] = []
    parser = AnnotatedCsvParser(on_error=problems.append)

    rows = parser.feed(data) + parser.close()

    assert [r.values for r in rows] == [["r", 0, 1.5]]
    assert [type(p) for p in problems] == [FluxQueryError]


def test_an_error_table_header_without_its_row_raises_at_close() -> None:
    parser = AnnotatedCsvParser()
    parser.feed(ERROR_TABLE.split(b",error,reference\r\n")[0] + b",error,reference\r\n")
    with pytest.raises(FluxQueryError):
        parser.close()


def test_empty_cells_take_the_default_of_their_column() -> None:
    data = (
        b"#datatype,string,long,dateTime:RFC3339,double,boolean,string,string\n"
        b"#group,false,false,false,false,false,true,true\n"
        b"#default,mean,,2024-01-01T00:00:00Z,0.5,true,cpu,\n"
        b",result,table,_time,_value,ok,_measurement,host\n"
        b",,1,,,,,\n"
        b",max,2,2024-01-01T00:00:01.5Z,2,false,mem,h1\n"
    )
    parser = AnnotatedCsvParser()

    a, b = parser.feed(data)

    assert a.values == ["mean", 1, 1_704_067_200_000_000_000, 0.5, True, "cpu", None]
    assert (a.table.result, a.measurement, a.tags()) == ("mean", "cpu", {"ok": "true"})
    assert a.text("_time") == "2024-01-01T00:00:00Z"
    assert b.values == ["max", 2, 1_704_067_201_500_000_000, 2.0, False, "mem", "h1"]
    assert (b.table.result, b.tags()) == ("max", {"host": "h1", "ok": "false"}) and b.table is not a.table


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"#datatype,string,long\n,result,table\n,,1,2\n", 3, "3 columns, the header has 2"),
        (b"#datatype,string,long\n,result,n\n\n,,x\n,,1,2\n", 5, "3 columns, the header has 2"),
        (
            b"#datatype,string,double\r\n,result,_value\r\n,,1\r\n,,abc\r\n",
            4,
            "'_value' (double): 'abc' is not",
        ),
        (b"#datatype,string,color\n,result,c\n", 2, "unknown datatype 'color'"),
        (b"#datatype,string\n,result,table\n", 2, "#datatype has 2 columns, the header has 3"),
        (b'#datatype,string,string\n,result,s\n,,"a\nb\n', 3, "quoted field is never closed"),
        (b"#datatype,string,string\n,result,s\n,,\xff\n", 3, "not valid UTF-8"),
        (b'#datatype,string,string\n,result,s\n,,"a"b\n', 3, "malformed CSV"),
    ],
)
def test_malformed_input_is_refused_with_its_line_number(data: bytes, line: int, reason: str) -> None:
    parser = AnnotatedCsvParser()
    with pytest.raises(AnnotatedCsvError) as raised:
        parser.feed(data)
        parser.close()
    assert raised.value.line == line and reason in str(raised.value)


def test_with_on_error_bad_rows_are_reported_and_the_rest_is_read() -> None:
    problems: list[AnnotatedCsvError | FluxQueryError] = []
    parser = AnnotatedCsvParser(first_line=10, on_error=problems.append)
    data = b'#datatype,string,long\n,result,n\n,,1\n,,x\n,,"2\n"\n,,3,4\n,,5\n'

    rows = parser.feed(data) + parser.close()

    assert [(r.line, r.values[1]) for r in rows] == [(12, 1), (17, 5)]
    assert [(p.line, p.raw) for p in problems] == [(13, ",,x"), (14, ',,"2\n"'), (16, ",,3,4")]


def test_rows_under_a_header_that_cannot_be_used_are_each_refused() -> None:
    problems: list[AnnotatedCsvError | FluxQueryError] = []
    parser = AnnotatedCsvParser(on_error=problems.append)

    rows = parser.feed(b"#datatype,string,color\n,result,c\n,,1\n,,2\n\n,result,c\n,,3\n")

    assert [r.values for r in rows] == [[None, "3"]]
    assert [p.line for p in problems] == [2, 3, 4]
    assert "header at line 2 cannot be used (unknown datatype 'color')" in str(problems[1])


def test_a_chunk_with_the_table_context_parses_on_its_own() -> None:
    whole = b"#datatype,string,long,string\n#default,r,,\n,result,table,s\n,,1,a\n,,2,b\n"
    first = AnnotatedCsvParser()
    first.feed(whole[: whole.index(b",,2")])

    rest = AnnotatedCsvParser(first_line=5, context=first.context)
    rows = rest.feed(whole[whole.index(b",,2") :])

    assert first.context == "#datatype,string,long,string\n#default,r,,\n,result,table,s\n"
    assert [(r.line, r.values) for r in rows] == [(5, ["r", 2, "b"])]


def test_a_record_longer_than_the_limit_stops_the_parse() -> None:
    parser = AnnotatedCsvParser(max_record_bytes=64)
    parser.feed(b"#datatype,string,string\n,result,s\n")
    with pytest.raises(AnnotatedCsvError, match="longer than 64 bytes"):
        parser.feed(b',,"' + b"x" * 100)


# ---------------------------------------------------------------------------------------------------
# The producer's chunks: each one, parsed alone with its table context, gives the rows of its range.


@settings(max_examples=200, deadline=None)
@given(
    tables=st.lists(blocks(), min_size=1, max_size=4),
    eol=st.sampled_from(["\r\n", "\n"]),
    always_quote=st.booleans(),
    chunk_lines=st.integers(1, 12),
    block=st.sampled_from([1, 7, 64, 4096]),
    final_eol=st.booleans(),
)
def test_chunks_parsed_alone_with_their_context_give_the_rows_of_the_whole_file(
    tables: list[Block], eol: str, always_quote: bool, chunk_lines: int, block: int, final_eol: bool
) -> None:
    data = write(tables, eol=eol, always_quote=always_quote)
    if not final_eol:
        data = data.removesuffix(eol.encode())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        path.write_bytes(data)
        with path.open("rb") as f:
            chunks = list(
                planner.scan_annotated(
                    f.fileno(), chunk_lines=chunk_lines, max_record_bytes=1 << 20, block_bytes=block
                )
            )

    rows, pos, line = [], 0, 1
    for ch in chunks:
        piece = data[ch.start : ch.end]
        assert (ch.start, ch.first_line) == (pos, line)
        assert hashlib.sha256(piece).hexdigest() == ch.sha256
        parser = AnnotatedCsvParser(first_line=ch.first_line, context=ch.context)
        rows += parser.feed(piece) + parser.close()
        pos, line = ch.end, line + ch.line_count
    assert pos == len(data)
    whole = feed_in_pieces(data, [])
    assert [(r.line, r.values) for r in rows] == [(r.line, r.values) for r in whole]
    assert seen(rows) == expected(tables)


@pytest.mark.parametrize("block", [256, 1 << 20])
def test_an_influx_export_is_cut_into_chunks_that_parse_alone(block: int) -> None:
    path = SAMPLES / "air-sensor-annotated-multi.csv"
    with path.open("rb") as f:
        chunks = list(
            planner.scan_annotated(f.fileno(), chunk_lines=50, max_record_bytes=1 << 20, block_bytes=block)
        )

    rows = []
    for ch in chunks:
        parser = AnnotatedCsvParser(first_line=ch.first_line, context=ch.context)
        rows += parser.feed(path.read_bytes()[ch.start : ch.end]) + parser.close()

    assert [c.line_count for c in chunks] == [50] * 8 + [4]
    assert all(c.context.startswith("#group,") for c in chunks[1:])
    assert [r.line for r in rows] == list(range(5, 405)) and rows[-1].table.table_id == 8
