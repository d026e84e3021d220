"""CSV and JSON Lines chunks read by pyarrow's readers and encoded column by column (issue #12), or not
at all: a chunk this path cannot take whole is left to the row path (``workers/parsers.py``), which
finds each refused line's own reason.

``batches`` returns the same batches as ``parsers.batches`` (the same bodies, byte for byte, the same
line numbers, cut every ``batch_lines`` lines) or None. It answers None, before anything is encoded,
for a chunk where the row path would refuse any line or where the readers' rules and the row path's
could part (``tests/test_columnar.py`` checks the two paths agree on generated chunks):

- the mapping: a measurement column, a strftime time format, a mapped column named twice (a tag and a
  field), a CSV header without every mapped column or of fewer than two columns;
- the bytes: not UTF-8, a carriage return that is not part of a CRLF line end, a blank line, a line
  that could encode longer than ``max_line_bytes``; CSV: a quote anywhere but around a whole field (so
  never a field holding a line end, whose lines the row path refuses one by one); JSON: a line that does
  not start with ``{`` and end with ``}``, a surrogate escape (``\\ud800``);
- the values: any the reader refuses (a wrong column count, a cell that is not its column's type, JSON
  that is not an object per line), a non-finite float, a row without a field value, an empty or
  unreadable time, a time outside the 64-bit nanosecond range.

Values go through the row path's own functions where the readers' rules differ from Python's: times
(``rfc3339_ns``, ``epoch``) and CSV booleans are converted once per distinct value; floats, integers,
tags and strings are the readers' typed columns, written by ``workers/arrowlines.py`` as the row path
writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import re2  # type: ignore[import-untyped]  # google-re2 ships no stubs

from tsbatch.descriptor import ChunkDescriptor, FieldKind, Mapping
from tsbatch.times import NS_PER, epoch, rfc3339_ns
from workers.arrowlines import ArrowEncoder, body_of
from workers.lineprotocol import field_converter
from workers.mapping import RecordEncoder
from workers.parsers import Batch

_INT64_MAX: Final = (1 << 63) - 1
_CELL_SLACK: Final = 32  # bytes a cell's text can grow by as a line-protocol piece (a float's digits, "true")
_BLANK_LINE: Final = re2.compile(rb"(?:^|\n)[ \t\f\v]*(?:\n|$)")
_SURROGATE: Final = re2.compile(rb"\\u[dD][89abcdefABCDEF]")
# A JSON line that does not start with "{" and end with "}": Arrow's reader crashes the process (SIGSEGV,
# pyarrow 26) on a first line "null", and reads other top-level values differently from json.loads.
_NOT_AN_OBJECT_LINE: Final = re2.compile(rb"(?:^|\n)[^{]|[^}](?:\n|$)")
_READER_ERRORS: Final = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)


class _Refused(Exception):
    """The chunk is the row path's (never raised out of this module)."""


def batches(
    data: bytes, desc: ChunkDescriptor, *, batch_lines: int, max_line_bytes: int
) -> list[Batch] | None:
    """The chunk's batches as ``parsers.batches`` would give them, or None: use the row path."""
    mapping = desc.mapping
    if desc.format not in ("csv", "jsonl") or mapping is None or not _mapping_fits(mapping, desc.format):
        return None
    try:
        RecordEncoder(mapping, desc.precision)  # the row path's checks of the names (it raises the same)
    except ValueError:
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")  # as the row path reads CRLF
    data = data[:-1] if data.endswith(b"\n") else data
    try:
        rows = _check_bytes(data, mapping, desc.format, max_line_bytes)
        table = _read_csv(data, mapping) if desc.format == "csv" else _read_jsonl(data, mapping)
        if table.num_rows != rows:
            raise _Refused
        record = _typed(table, mapping, desc)
        return _encode(record, mapping, desc, batch_lines=batch_lines, max_line_bytes=max_line_bytes)
    except (_Refused, *_READER_ERRORS):
        return None


def _mapping_fits(mapping: Mapping, fmt: str) -> bool:
    if mapping.measurement is None or mapping.time_format not in ("rfc3339", "epoch"):
        return False
    names = _names(mapping)
    if len(set(names)) != len(names):
        return False
    if fmt == "csv":
        columns = mapping.columns
        return len(columns) >= 2 and len(set(columns)) == len(columns) and set(names) <= set(columns)
    return True


def _names(mapping: Mapping) -> list[str]:
    return [mapping.time_column, *mapping.tag_columns, *(f.name for f in mapping.field_columns)]


def _check_bytes(data: bytes, mapping: Mapping, fmt: str, max_line_bytes: int) -> int:
    """The number of lines of ``data``, if its bytes are ones this path reads as the row path does."""
    if not data or b"\r" in data or _BLANK_LINE.search(data):
        raise _Refused
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused from None
    if fmt == "csv" and b'"' in data and not _quotes_whole_fields(data, mapping.delimiter):
        raise _Refused
    if fmt == "jsonl" and (_NOT_AN_OBJECT_LINE.search(data) or (b"\\u" in data and _SURROGATE.search(data))):
        raise _Refused
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    longest = int(np.diff(ends, prepend=-1, append=len(data)).max()) - 1
    # Escaping at most doubles a cell; a cell's value grows by at most _CELL_SLACK; keys are added.
    keys = sum(len(name.encode()) + 2 for name in _names(mapping)) + len(str(mapping.measurement).encode())
    if 2 * longest + keys + _CELL_SLACK * len(_names(mapping)) > max_line_bytes:
        raise _Refused
    return len(ends) + 1


def _quotes_whole_fields(data: bytes, delimiter: str) -> bool:
    """Every quote of ``data`` opens or closes a field quoted whole, or is doubled inside one: where
    Python's csv module (strict) and Arrow's reader read the same cells. No field holds a line end."""
    d = re2.escape(delimiter.encode())
    field = rb'(?:"(?:[^"\n]|"")*"|[^"\n' + d + rb"]*)"
    line = field + rb"(?:" + d + field + rb")*"
    return re2.fullmatch(line + rb"(?:\n" + line + rb")*", data) is not None


# Arrow's type for each field kind. CSV cells are read as text: numbers are cast only where every cell
# has a syntax Python's float() and int() read the same way (Arrow reads "0x10" as 16, int() refuses
# it: found by hypothesis), booleans are converted by the row path's own words (true/t/1/yes, any case).
_JSON_TYPES: Final[dict[FieldKind, Any]] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "uint": pa.uint64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_CSV_SYNTAX: Final[dict[FieldKind, str]] = {
    "float": r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$",
    "int": r"^-?[0-9]+$",
    "uint": r"^[0-9]+$",
}


def _read_csv(data: bytes, mapping: Mapping) -> Any:
    types = {mapping.time_column: pa.string(), **{t: pa.string() for t in mapping.tag_columns}}
    types.update({f.name: pa.string() for f in mapping.field_columns})
    return pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=list(mapping.columns), use_threads=False),
        parse_options=pa_csv.ParseOptions(
            delimiter=mapping.delimiter, double_quote=True, ignore_empty_lines=False, newlines_in_values=False
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            include_columns=_names(mapping),
            null_values=[""],  # an empty cell is an absent value, and only it
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _read_jsonl(data: bytes, mapping: Mapping) -> Any:
    time_type = pa.int64() if mapping.time_format == "epoch" else pa.string()
    schema = pa.schema(
        [
            (mapping.time_column, time_type),
            *((t, pa.string()) for t in mapping.tag_columns),
            *((f.name, _JSON_TYPES[f.kind]) for f in mapping.field_columns),
        ]
    )
    return pa_json.read_json(
        pa.py_buffer(data),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1)),
        parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
        ),
    ).select(_names(mapping))


def _typed(table: Any, mapping: Mapping, desc: ChunkDescriptor) -> Any:
    """The columns ``ArrowEncoder`` takes: a timestamp, strings for tags, typed fields with nulls for
    absent values."""
    table = table.combine_chunks()  # one chunk per column (the chunk has rows: it is not empty)
    columns = {name: table.column(name).chunk(0) for name in _names(mapping)}
    present = np.zeros(table.num_rows, dtype=bool)
    for spec in mapping.field_columns:
        column = columns[spec.name]
        syntax = _CSV_SYNTAX.get(spec.kind)
        if syntax is not None and pa.types.is_string(column.type):
            if pc.all(pc.match_substring_regex(column, syntax)).as_py() not in (True, None):
                raise _Refused
            column = column.cast(_JSON_TYPES[spec.kind])
        if spec.kind == "bool" and pa.types.is_string(column.type):
            column = _each_distinct(column, field_converter("bool"), pa.string())
            column = pc.equal(column, "true")
        elif spec.kind == "string":
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        elif spec.kind == "float":
            finite = pc.is_finite(column).fill_null(True)
            if not pc.all(finite).as_py():
                raise _Refused
        columns[spec.name] = column
        present |= column.is_valid().to_numpy(zero_copy_only=False)
    if not present.all():
        raise _Refused  # a row without a field value: "no field has a value"
    columns[mapping.time_column] = _times(columns[mapping.time_column], mapping, desc)
    return pa.RecordBatch.from_pydict(columns)


def _times(column: Any, mapping: Mapping, desc: ChunkDescriptor) -> Any:
    if column.null_count:
        raise _Refused  # the row path: "column 'time' (time) is empty"
    if mapping.time_format == "rfc3339":
        # Nanoseconds, floored to the precision by the encoder as the row path floors them.
        return _each_distinct(column, rfc3339_ns, pa.int64()).cast(pa.timestamp("ns"))
    # Epochs are in the precision's units already; the encoder multiplies and divides by the same.
    limit = _INT64_MAX // NS_PER[desc.precision]

    def checked(value: object) -> int:
        stamp = epoch(value)
        if abs(stamp) > limit:
            raise ValueError("outside the encoder's range")
        return stamp

    if pa.types.is_integer(column.type):
        values = column.to_numpy()
        if int(values.min()) < -limit or int(values.max()) > limit:
            raise _Refused
        return column.cast(pa.timestamp(desc.precision))
    return _each_distinct(column, checked, pa.int64()).cast(pa.timestamp(desc.precision))


def _each_distinct(column: Any, convert: Callable[[Any], Any], to: Any) -> Any:
    """``convert`` of each value, called once per distinct value; a ValueError refuses the chunk."""
    encoded = pc.dictionary_encode(column)
    try:
        converted = [convert(value) for value in encoded.dictionary.to_pylist()]
    except ValueError:
        raise _Refused from None
    return pa.array(converted, to).take(encoded.indices)


def _encode(
    record: Any, mapping: Mapping, desc: ChunkDescriptor, *, batch_lines: int, max_line_bytes: int
) -> list[Batch]:
    """The whole chunk encoded at once (Arrow's per-call cost is paid once, not per batch), then cut
    into batches of ``batch_lines`` lines, as the row path cuts them."""
    lines = ArrowEncoder(mapping, desc.precision, max_line_bytes=max_line_bytes).lines_of(record)
    if lines is None:
        raise _Refused  # not expected after the checks above; the row path then says why
    first, rows = desc.first_line, record.num_rows
    return [
        Batch(body_of(lines.slice(at, batch_lines)), range(first + at, first + min(at + batch_lines, rows)))
        for at in range(0, rows, batch_lines)
    ]
