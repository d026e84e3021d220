"""CSV and JSON Lines records map to the line protocol a user would expect, or to a clear reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import descriptor_for
from tsbatch.descriptor import FieldKind, FieldSpec, Mapping
from tsbatch.times import rfc3339_ns
from workers.lineprotocol import field_converter
from workers.mapping import RecordEncoder, RowEncoder, _column_texts
from workers.parsers import batches

MAPPING = Mapping(
    measurement="cpu",
    tag_columns=("region", "host"),
    field_columns=(
        FieldSpec(name="usage", kind="float"),
        FieldSpec(name="n", kind="int"),
        FieldSpec(name="ok", kind="bool"),
        FieldSpec(name="msg", kind="string"),
    ),
    columns=("time", "host", "region", "usage", "n", "ok", "msg"),
)


def test_rfc3339_times_convert_to_exact_nanoseconds_in_any_offset() -> None:
    assert rfc3339_ns("1970-01-01T00:00:00Z") == 0
    assert rfc3339_ns("2024-01-01T00:00:00.123456789Z") == 1_704_067_200_123_456_789
    assert rfc3339_ns("2024-01-01T02:00:00+02:00") == rfc3339_ns("2024-01-01T00:00:00Z")
    for bad in ("2024-02-30T00:00:00Z", "2024-01-01 25:00:00Z", "yesterday", "2024-01-01T00:00:00"):
        with pytest.raises(ValueError):
            rfc3339_ns(bad)


def test_a_record_becomes_a_sorted_escaped_line_and_empty_values_are_skipped() -> None:
    enc = RecordEncoder(MAPPING, "ms")
    line = enc.encode(
        {
            "time": "2024-01-01T00:00:00.5Z",
            "host": "a b",
            "region": "",
            "usage": "1.50",
            "n": "7",
            "ok": "yes",
            "msg": 'say "hi"',
        }
    )
    assert line == 'cpu,host=a\\ b msg="say \\"hi\\"",n=7i,ok=true,usage=1.5 1704067200500'


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"time": "2024-01-01T00:00:00Z", "usage": "high"}, "column 'usage': 'high' is not a float"),
        ({"time": "2024-01-01T00:00:00Z", "n": "1.5"}, "column 'n'"),
        ({"time": "", "usage": "1"}, "column 'time' (time) is empty"),
        ({"time": "2024-01-01T00:00:00Z"}, "no field has a value"),
    ],
)
def test_a_bad_record_is_refused_with_the_column_and_the_reason(
    record: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        RecordEncoder(MAPPING, "ns").encode(record)


def test_measurements_that_a_server_would_misread_are_refused() -> None:
    by_column = RecordEncoder(
        Mapping(measurement_column="m", field_columns=(FieldSpec(name="v"),), time_format="epoch"), "s"
    )
    assert by_column.encode({"m": "cpu", "v": 1, "time": 5}) == "cpu v=1 5"
    for bad, reason in (("#x", "starts with '#'"), ("a\\", "ends with a backslash")):
        with pytest.raises(ValueError, match=reason):
            by_column.encode({"m": bad, "v": 1, "time": 5})
    with pytest.raises(ValueError, match="ends with a backslash"):
        RecordEncoder(
            Mapping(measurement="cpu", tag_columns=("t\\",), field_columns=(FieldSpec(name="v"),)), "s"
        )


def test_csv_rows_with_wrong_column_counts_or_stray_quotes_are_rejected_with_their_file_line() -> None:
    rows = [
        "2024-01-01T00:00:00Z,h1,eu,1.0,1,true,x",
        "2024-01-01T00:00:01Z,h1,eu,1.0",
        '2024-01-01T00:00:02Z,h1,eu,1.0,1,true,"unterminated',
        "2024-01-01T00:00:03Z,h1,eu,2.0,2,false,y",
    ]
    data = ("\n".join(rows) + "\n").encode()
    desc = descriptor_for(data, format="csv", first_line=2, mapping=MAPPING)

    [batch] = list(batches(data, desc, batch_lines=100, max_line_bytes=1 << 20))

    assert batch.numbers == [2, 5]
    assert (batch.rejected[0].line, batch.rejected[0].reason) == (3, "4 columns, header has 7")
    assert batch.rejected[1].line == 4


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(-1e6, 1e6).map(lambda x: f"{x:.6f}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["0", "-0", "0.0", "-0.0", "5.", ".5", "+1", "007", "1e5", "1_000", " 1", "", "x", "0.00001"]
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    column=st.lists(numbers, min_size=1, max_size=12), kind=st.sampled_from(["float", "int", "uint", "bool"])
)
def test_a_column_converts_as_each_of_its_cells_would(column: list[str], kind: FieldKind) -> None:
    convert = field_converter(kind)
    try:
        expected: list[str] | None = [convert(cell) for cell in column]
    except ValueError:
        expected = None

    assert _column_texts(column, kind, convert) == expected


cells = st.text(st.sampled_from("ab ,=\\é1"), max_size=4)
good_stamps = st.sampled_from(
    ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01.5Z", "2024-01-01T00:00:01.5+02:00"]
)
stamps = st.one_of(good_stamps, good_stamps, st.sampled_from(["2024-02-30T00:00:00Z", "", "x"]))
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(str), numbers)
ints = st.one_of(st.integers(-(2**63), 2**63 - 1).map(str), numbers)
bools = st.one_of(st.sampled_from(["true", "f", "1", "TRUE"]), numbers)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(stamps, cells, cells, floats, ints, bools, cells), min_size=1, max_size=10))
def test_a_csv_batch_encodes_as_its_rows_would_one_by_one(rows: list[tuple[str, ...]]) -> None:
    lines = [",".join(row) for row in rows]
    encode_row = RowEncoder(RecordEncoder(MAPPING, "ns"), MAPPING.columns)
    try:
        per_row: list[str] | None = [encode_row.encode(line.split(",")) for line in lines]
    except ValueError:
        per_row = None

    got = RowEncoder(RecordEncoder(MAPPING, "ns"), MAPPING.columns).encode_block(lines)

    if got is not None:
        assert got == per_row
    simple = all("" not in row for row in rows) and all(line.count(",") == 6 for line in lines)
    if simple and per_row is not None:
        assert got == per_row  # a batch whose every row encodes is taken whole


names = st.text(st.sampled_from("ab =\\é1"), min_size=1, max_size=4)
flags = st.sampled_from(["true", "f", "1", "TRUE", "no"])
decimals = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(str),
    st.decimals(-(10**6), 10**6, allow_nan=False, allow_infinity=False, places=3).map(str),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            good_stamps, names, names, decimals, st.integers(-(2**63), 2**63 - 1).map(str), flags, names
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_batch_of_good_rows_is_encoded_whole_and_as_each_row_would_be(rows: list[tuple[str, ...]]) -> None:
    lines = [",".join(row) for row in rows]
    encode_row = RowEncoder(RecordEncoder(MAPPING, "ns"), MAPPING.columns)
    per_row = [encode_row.encode(line.split(",")) for line in lines]

    assert RowEncoder(RecordEncoder(MAPPING, "ns"), MAPPING.columns).encode_block(lines) == per_row
