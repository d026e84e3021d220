"""The columnar path (pyarrow's readers, column by column) gives the row path's batches byte for byte, or
leaves the chunk to the row path: either way every line and every refusal is the row path's."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import descriptor_for
from tsbatch import datagen
from tsbatch.descriptor import FieldSpec, Mapping
from workers import columnar
from workers.parsers import Batch, batches

COLUMNS = ("time", "host", "dc", "f", "i", "u", "b", "s", "extra")
KINDS = {"f": "float", "i": "int", "u": "uint", "b": "bool", "s": "string"}
LIMIT = 1 << 20

text = st.text(st.sampled_from('ab ,;|\t="\\é1#'), max_size=5)
odd_numbers = st.sampled_from(
    ["0", "-0", "0.0", "-0.0", "5.", ".5", "-.5", "+1", "007", "1e5", "1E5", "1e+5", "1.5e-7", "1_000", " 1",
     "1 ", "", "x", "0.00001", "1e16", "1e400", "nan", "inf", "-inf", "NaN", "Infinity", ".", "-", "+",
     "e5", "1e", "0x10", "123456789012345678901234567890", "9223372036854775807", "9223372036854775808",
     "-9223372036854775808", "-9223372036854775809", "18446744073709551615", "18446744073709551616",
     "1.0", "٣", "--5"]
)  # fmt: skip
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(-1e6, 1e6).map(lambda x: f"{x:.4f}"),
    st.floats().map(str),
    odd_numbers,
)
ints = st.one_of(st.integers(-(2**64), 2**64).map(str), odd_numbers)
bools = st.one_of(
    st.sampled_from(["true", "TRUE", "True", "t", "T", "1", "0", "yes", "No", "false", "f", "F"]),
    st.sampled_from(["", "x", " true", "2", "nan"]),
)
rfc3339 = st.sampled_from(
    ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789Z", "2024-01-01t00:00:01z",
     "2024-01-01 00:00:00+02:00", "1969-12-31T23:59:59.5Z", "2024-06-30T23:59:59.999-07:30"]
)  # fmt: skip
bad_rfc3339 = st.sampled_from(
    ["2024-02-30T00:00:00Z", "2024-01-01", "2024-01-01T24:00:00Z", "", "x", " 2024-01-01T00:00:00Z",
     "2300-01-01T00:00:00Z", "1600-01-01T00:00:00Z", "2024-01-01T00:00:60Z", "2024-01-01T00:00:00"]
)  # fmt: skip
epochs = st.one_of(
    st.integers(-(2**62), 2**62).map(str),
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from(["+5", "-0", " 5", "", "x", "1.0", "--5", "٣", "0"]),
)


def mapping_of(draw: Any, fmt: str) -> Mapping:
    fields = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=5, unique=True))
    tags = draw(st.lists(st.sampled_from(["host", "dc"]), max_size=2, unique=True))
    return Mapping(
        measurement=draw(st.sampled_from(["cpu", "disk io", "a,b"])),
        tag_columns=tuple(tags),
        field_columns=tuple(FieldSpec(name=f, kind=KINDS[f]) for f in fields),  # type: ignore[arg-type]
        time_format=draw(st.sampled_from(["rfc3339", "epoch"])),
        columns=COLUMNS if fmt == "csv" else (),
        delimiter=draw(st.sampled_from([",", ";", "\t", "|"])) if fmt == "csv" else ",",
    )


def csv_cell(draw: Any, column: str, time_format: str, good: bool) -> str:
    if column == "time":
        stamps = epochs if time_format == "epoch" else rfc3339
        return str(draw(stamps if good else st.one_of(stamps, stamps, bad_rfc3339, epochs)))
    own = {"f": floats, "i": ints, "u": ints, "b": bools}.get(column, text)
    return str(draw(own if good else st.one_of(own, own, own, floats, text)))


def render(cell: str, delimiter: str, quoted: bool) -> str:
    if quoted:
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_chunks(draw: Any, good: bool = False) -> tuple[bytes, Mapping, str]:
    mapping = mapping_of(draw, "csv")
    d = mapping.delimiter
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        cells = [csv_cell(draw, c, mapping.time_format, good) for c in COLUMNS]
        if good:  # quoted where the cell needs it, sometimes where it does not
            quoted = [('"' in c or d in c) or draw(st.booleans()) for c in cells]
        else:
            quoted = [draw(st.booleans()) for _ in cells]
        line = d.join(render(c, d, q) for c, q in zip(cells, quoted, strict=True))
        if not good:
            line = draw(
                st.one_of(st.just(line), st.just(line), st.just(line), st.sampled_from(["", " ", '"a\nb"']))
            )
        lines.append(line)
    end = draw(st.sampled_from(["\n", "\r\n", ""]))
    return (end.join(lines) + draw(st.sampled_from([end, ""]))).encode(), mapping, draw(precisions)


precisions = st.sampled_from(["ns", "us", "ms", "s"])


def json_value(draw: Any, column: str, time_format: str, good: bool) -> object:
    if column == "time":
        if time_format == "epoch":
            stamps: Any = st.integers(-9 * 10**9, 9 * 10**9)  # in nanoseconds' range at every precision
            if not good:
                stamps = st.one_of(stamps, st.integers(-(2**64), 2**64), epochs, st.floats(), st.none())
        else:
            stamps = rfc3339 if good else st.one_of(rfc3339, bad_rfc3339, st.integers(), st.none())
        return draw(stamps)
    own: Any = {
        "f": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
        "i": st.integers(-(2**63), 2**63 - 1),
        "u": st.integers(0, 2**64 - 1),
        "b": st.booleans(),
    }.get(column, text)
    if good:
        return draw(st.one_of(own, st.none()) if column not in ("f",) else own)
    anything = st.one_of(
        st.none(), st.just(""), st.booleans(), st.floats(), st.integers(-(2**70), 2**70), text, floats,
        st.lists(st.integers(), max_size=1), st.dictionaries(st.just("k"), st.integers(), max_size=1)
    )  # fmt: skip
    return draw(st.one_of(own, own, own, anything))


@st.composite
def jsonl_chunks(draw: Any, good: bool = False) -> tuple[bytes, Mapping, str]:
    mapping = mapping_of(draw, "jsonl")
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        record = {c: json_value(draw, c, mapping.time_format, good) for c in COLUMNS}
        if not good:
            record = {c: v for c, v in record.items() if draw(st.integers(0, 9))}  # some keys missing
        keys = draw(st.permutations(list(record)))
        line = json.dumps({k: record[k] for k in keys}, ensure_ascii=draw(st.booleans()))
        if not good:
            line = draw(
                st.one_of(
                    *[st.just(line)] * 4,
                    st.sampled_from(
                        ["", " ", "[1]", "{", "null", '{"time": 1} {"time": 2}', '{"s": "\\ud800"}']
                    ),
                    st.just(line.replace('"time"', '"time": 1, "time"', 1)),  # a key twice
                )
            )
        lines.append(line)
    end = draw(st.sampled_from(["\n", "\r\n"]))
    return (end.join(lines) + draw(st.sampled_from([end, ""]))).encode(), mapping, draw(precisions)


def row_path(data: bytes, mapping: Mapping, fmt: str, precision: str, batch_lines: int) -> list[Batch]:
    desc = descriptor_for(data, format=fmt, first_line=2, mapping=mapping.model_dump(), precision=precision)
    return list(batches(data, desc, batch_lines=batch_lines, max_line_bytes=LIMIT))


def columnar_path(
    data: bytes, mapping: Mapping, fmt: str, precision: str, batch_lines: int
) -> list[Batch] | None:
    desc = descriptor_for(data, format=fmt, first_line=2, mapping=mapping.model_dump(), precision=precision)
    return columnar.batches(data, desc, batch_lines=batch_lines, max_line_bytes=LIMIT)


def seen(found: list[Batch]) -> tuple[list[bytes], list[list[int]], list[tuple[int, str]]]:
    """Bodies, line numbers and refusals (line, reason), batch by batch."""
    return (
        [b.body for b in found],
        [list(b.numbers) for b in found],
        [(r.line, r.reason) for b in found for r in b.rejected],
    )


def assert_same_or_left_to_rows(chunk: tuple[bytes, Mapping, str], fmt: str, batch_lines: int) -> bool:
    data, mapping, precision = chunk
    rows = row_path(data, mapping, fmt, precision, batch_lines)
    cols = columnar_path(data, mapping, fmt, precision, batch_lines)
    either = rows if cols is None else cols
    assert seen(either) == seen(rows)
    return cols is not None


examples = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@examples
@given(chunk=csv_chunks(), batch_lines=st.integers(1, 4))
def test_a_csv_chunk_gives_the_row_paths_lines_and_refusals(chunk: Any, batch_lines: int) -> None:
    assert_same_or_left_to_rows(chunk, "csv", batch_lines)


@examples
@given(chunk=jsonl_chunks(), batch_lines=st.integers(1, 4))
def test_a_json_lines_chunk_gives_the_row_paths_lines_and_refusals(chunk: Any, batch_lines: int) -> None:
    assert_same_or_left_to_rows(chunk, "jsonl", batch_lines)


@examples
@given(chunk=csv_chunks(good=True), batch_lines=st.integers(1, 4))
def test_a_csv_chunk_of_good_plain_values_is_taken_by_the_columnar_path_when_every_row_maps(
    chunk: Any, batch_lines: int
) -> None:
    data, mapping, precision = chunk
    refused = seen(row_path(data, mapping, "csv", precision, batch_lines))[2]
    taken = assert_same_or_left_to_rows(chunk, "csv", batch_lines)
    plain = all(c not in data for c in (b"\r", b"_", b" ", b"\xd9")) and mapping.time_format == "rfc3339"
    if plain and not refused:
        assert taken


@examples
@given(chunk=jsonl_chunks(good=True), batch_lines=st.integers(1, 4))
def test_a_json_lines_chunk_of_good_values_is_taken_by_the_columnar_path_when_every_row_maps(
    chunk: Any, batch_lines: int
) -> None:
    data, mapping, precision = chunk
    refused = seen(row_path(data, mapping, "jsonl", precision, batch_lines))[2]
    taken = assert_same_or_left_to_rows(chunk, "jsonl", batch_lines)
    if not refused:
        assert taken


def test_the_benchmark_files_chunks_are_taken_whole_and_encode_as_the_row_path_does() -> None:
    for fmt in ("csv", "jsonl"):
        lines = list(datagen.lines(fmt, series=50, points_per_series=20))[1 if fmt == "csv" else 0 :]
        data = ("\n".join(lines) + "\n").encode()
        mapping = Mapping(
            measurement="cpu",
            tag_columns=("host", "region"),
            field_columns=(FieldSpec(name="usage", kind="float"), FieldSpec(name="count", kind="int")),
            time_format="rfc3339" if fmt == "csv" else "epoch",
            columns=tuple(datagen.CSV_HEADER.split(",")) if fmt == "csv" else (),
        )
        precision = "ns" if fmt == "csv" else "ms"
        cols = columnar_path(data, mapping, fmt, precision, 300)
        assert cols is not None
        assert seen(cols) == seen(row_path(data, mapping, fmt, precision, 300))


def test_a_chunk_with_one_bad_row_is_left_whole_to_the_row_path_which_names_that_row() -> None:
    mapping = Mapping(measurement="m", field_columns=(FieldSpec(name="v"),), columns=("time", "v"))
    data = b"2024-01-01T00:00:00Z,1\n2024-01-01T00:00:01Z,high\n2024-01-01T00:00:02Z,3\n"
    assert columnar_path(data, mapping, "csv", "s", 10) is None
    assert seen(row_path(data, mapping, "csv", "s", 10))[2] == [(3, "column 'v': 'high' is not a float")]
