"""CSV and JSON Lines records map to the line protocol a user would expect, or to a clear reason."""

from __future__ import annotations

import pytest

from tests.conftest import descriptor_for
from tsbatch.descriptor import FieldSpec, Mapping
from workers.mapping import RecordEncoder, rfc3339_ns
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
