"""Map CSV and JSON Lines records to line protocol, following a descriptor's ``Mapping``, and annotated-CSV
rows, which say themselves what each value is."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import repeat
from typing import Final, TypeVar

from tsbatch.annotated_csv import Row, Schema
from tsbatch.descriptor import FieldKind, Mapping, Precision, writable_name
from tsbatch.times import NS_PER as NS_PER  # re-exported: workers/arrowlines.py reads it here
from tsbatch.times import TimeParser, time_parser
from workers.lineprotocol import (
    convert_field,
    escape_key,
    escape_measurement,
    escape_tag_value,
    field_converter,
    format_float,
)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _field_value(value: object, kind: FieldKind) -> str | None:
    """Line-protocol text of a field value, None when the record has no value for it."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return convert_field(value, kind)
    if isinstance(value, bool):
        if kind == "bool":
            return "true" if value else "false"
        if kind == "string":
            return convert_field(str(value).lower(), kind)
        raise ValueError(f"{value!r} is a boolean, not {kind}")
    if isinstance(value, int | float):
        return _number(value, kind)
    raise ValueError(f"{value!r} is not a {kind}")


def _number(value: int | float, kind: FieldKind) -> str:
    if kind == "float":
        text = format_float(float(value))
        if text is None:
            raise ValueError(f"{value!r} is not a finite float")
        return text
    if kind in ("int", "uint"):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        return convert_field(str(int(value)), kind)
    return convert_field(str(value), kind)


def _name(kind: str, raw: str, escaped: str) -> str:
    """``escaped``, if ``raw`` is a name influxdb_client.Point would not write into a line the server
    misreads or rejects."""
    writable_name(kind, raw)
    return escaped


class RecordEncoder:
    """Turns one record (column name → value) into one line of protocol, or raises ValueError(reason)."""

    def __init__(self, mapping: Mapping, precision: Precision) -> None:
        m = mapping.measurement
        self.measurement = _name("measurement", m, escape_measurement(m)) if m else None
        self.measurement_column = mapping.measurement_column
        # Sorted by key like influxdb_client.Point: InfluxDB indexes sorted tag sets fastest.
        self.tags = [(_name("tag key", t, escape_key(t)), t) for t in sorted(mapping.tag_columns)]
        self.fields = [
            (_name("field key", f.name, escape_key(f.name)), f.name, f.kind)
            for f in sorted(mapping.field_columns, key=lambda f: f.name)
        ]
        self.time_column = mapping.time_column
        # The one function every row's time goes through (tsbatch/times.py), built once per chunk.
        self.parse_time: TimeParser = time_parser(
            mapping.time_format, precision, timezone=mapping.timezone, ambiguous=mapping.ambiguous
        )

    def encode(self, record: dict[str, object]) -> str:
        measurement = self.measurement or self._measurement(record.get(str(self.measurement_column)))
        parts = [measurement]
        for key, column in self.tags:
            value = record.get(column)
            if value is not None and value != "":
                parts.append(f",{key}={escape_tag_value(str(value))}")
        fields = []
        for key, column, kind in self.fields:
            try:
                text = _field_value(record.get(column), kind)
            except ValueError as e:
                raise ValueError(f"column '{column}': {e}") from None
            if text is not None:
                fields.append(f"{key}={text}")
        if not fields:
            raise ValueError("no field has a value")
        stamp = record.get(self.time_column)
        if stamp is None or stamp == "":
            raise ValueError(f"column '{self.time_column}' (time) is empty")
        parts.append(" ")
        parts.append(",".join(fields))
        parts.append(f" {self.parse_time(stamp)}")
        return "".join(parts)

    def _measurement(self, value: object) -> str:
        if value is None or value == "":
            raise ValueError(f"column '{self.measurement_column}' (measurement) is empty")
        return _name("measurement", str(value), escape_measurement(str(value)))


_TAG_SET_CACHE_LIMIT = 100_000  # tag sets remembered per chunk; a full cache is emptied, as in lineprotocol


def _getter(positions: tuple[int, ...]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """The cells at ``positions`` as a tuple (itemgetter returns a bare cell for a single position)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        at = positions[0]
        return lambda row: (row[at],)
    return lambda row: ()


class RowEncoder:
    """``RecordEncoder``'s rules for a CSV row of strings, read by column position.

    The CSV hot path (issue #4: mapping was 80% of a CSV chunk's time): no dict per row, the tag set's
    text remembered by its values, and the last timestamp's conversion reused, since collectors write
    many series at one time. Every value still goes through the same conversions and checks, in the
    same order, so a row is refused with the same reason.
    """

    def __init__(self, records: RecordEncoder, columns: Sequence[str], *, delimiter: str = ",") -> None:
        index = {c: i for i, c in enumerate(columns)}  # a repeated name reads its last column, as dict(zip)
        self.records = records
        self.measurement_at = index[records.measurement_column] if records.measurement_column else -1
        self.tag_keys = tuple(key for key, _ in records.tags)
        self.tag_values = _getter(tuple(index[column] for _, column in records.tags))
        self.fields = [(key, index[c], c, kind, field_converter(kind)) for key, c, kind in records.fields]
        self.time_at = index[records.time_column]
        self.tag_positions = tuple(index[column] for _, column in records.tags)
        self.width = len(columns)
        self.delimiter = delimiter
        self._tag_sets: dict[tuple[str, ...], str] = {}
        self._last_stamp: str | None = None
        self._last_time = 0

    @staticmethod
    def covers(records: RecordEncoder, columns: Sequence[str]) -> bool:
        """Whether every column the mapping names is in ``columns`` (else use ``RecordEncoder``)."""
        wanted = [c for _, c in records.tags] + [c for _, c, _ in records.fields] + [records.time_column]
        return set(wanted + ([records.measurement_column] if records.measurement_column else [])) <= set(
            columns
        )

    def encode(self, row: Sequence[str]) -> str:
        records = self.records
        measurement = records.measurement or records._measurement(row[self.measurement_at])
        tags = self._tag_set(self.tag_values(row))
        fields = ",".join(self._fields(row))
        stamp = row[self.time_at]
        if stamp == "":
            raise ValueError(f"column '{records.time_column}' (time) is empty")
        if stamp != self._last_stamp:
            self._last_time = records.parse_time(stamp)
            self._last_stamp = stamp
        return f"{measurement}{tags} {fields} {self._last_time}"

    def encode_block(self, lines: list[str]) -> list[str] | None:
        """``encode`` of every line of a batch, column by column; None if any line needs the per-line
        path (quotes, carriage returns, a wrong column count, an empty or unconvertible cell, a
        measurement column), which then finds each line's own reason.

        Each column is converted with one ``map`` (float, int, or the field's converter), the tag sets
        and timestamps once per distinct value, and the lines joined from the columns: about 3x faster
        than ``encode`` per row (issue #4). ``tests/test_mapping.py`` checks the lines are the same.
        """
        measurement, width, delimiter = self.records.measurement, self.width, self.delimiter
        if measurement is None or width < 2 or not lines:
            return None
        text = "\n".join(lines)
        if '"' in text or "\r" in text or set(map(str.count, lines, repeat(delimiter))) != {width - 1}:
            return None
        cells = text.replace("\n", delimiter).split(delimiter)
        parts: list[Iterable[str]] = [repeat(measurement), self._tag_column(cells)]
        for i, (key, at, _, kind, convert) in enumerate(self.fields):
            column = cells[at::width]
            texts = None if "" in column else _column_texts(column, kind, convert)
            if texts is None:
                return None
            parts += [repeat(f"{',' if i else ' '}{key}="), texts]
        stamps = cells[self.time_at :: width]
        if "" in stamps:
            return None
        try:
            parts += [repeat(" "), _once_each(stamps, self._time_text)]
        except ValueError:
            return None
        return list(map("".join, zip(*parts, strict=False)))  # the repeats are endless, the columns equal

    def _tag_column(self, cells: list[str]) -> Iterable[str]:
        if not self.tag_positions:
            return repeat("")
        values = [cells[at :: self.width] for at in self.tag_positions]
        return _once_each(list(zip(*values, strict=True)), self._tag_set)

    def _time_text(self, stamp: str) -> str:
        return str(self.records.parse_time(stamp))

    def _tag_set(self, values: tuple[str, ...]) -> str:
        text = self._tag_sets.get(values)
        if text is None:
            text = "".join(
                f",{key}={escape_tag_value(value)}"
                for key, value in zip(self.tag_keys, values, strict=True)
                if value
            )
            if len(self._tag_sets) >= _TAG_SET_CACHE_LIMIT:
                self._tag_sets.clear()
            self._tag_sets[values] = text
        return text

    def _fields(self, row: Sequence[str]) -> list[str]:
        fields = []
        for key, at, column, _, convert in self.fields:
            value = row[at]
            if value == "":
                continue
            try:
                fields.append(f"{key}={convert(value)}")
            except ValueError as e:
                raise ValueError(f"column '{column}': {e}") from None
        if not fields:
            raise ValueError("no field has a value")
        return fields


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _once_each(keys: list[K], convert: Callable[[K], V]) -> list[V]:
    """``[convert(k) for k in keys]``, calling ``convert`` once per distinct key."""
    seen = {key: convert(key) for key in dict.fromkeys(keys)}
    return list(map(seen.__getitem__, keys))


# Columns whose cells need no conversion, one cell per line. Integers: no sign or leading zero that
# int() would drop, and 64 bits. Decimals: at most 15 significant digits (so repr(float(s)) is s
# without its trailing zeros: doubles tell any two such decimals apart, and repr is the shortest that
# round-trips), inside repr's fixed-point range (from 0.0001, and below 1e16).
_CANONICAL_INTS: Final = re.compile(r"(?:(?:0|-?[1-9][0-9]{0,17})\n)+")
_PLAIN_FLOATS: Final = re.compile(
    r"(?:-?(?=[0-9.]{1,16}\n)(?:[1-9][0-9]*+(?:\.[0-9]*+)?|0(?:\.(?:0{0,3}[1-9][0-9]*+|0*+))?)\n)+"
)
_TRAILING_ZEROS: Final = re.compile(r"(\.[0-9]*[1-9])0+\n")  # 12.50 -> 12.5
_ZERO_FRACTION: Final = re.compile(r"\.0*\n")  # 12.0 -> 12, 12. -> 12 (format_float's trim of ".0")


def _column_texts(column: list[str], kind: FieldKind, convert: Callable[[str], str]) -> list[str] | None:
    """Every cell of a column as a field value, as ``convert`` would write it; None if any is refused.

    A column of integers or floats already written the way the converter writes them is taken as it
    is, checked by one regex; others are converted with one ``map`` and checked as a whole (a float's
    text is ``format_float``'s: ``str`` without a trailing ``.0``, trimmed for the whole column)."""
    try:
        if kind == "float":
            text = "\n".join(column) + "\n"
            if _PLAIN_FLOATS.fullmatch(text):
                if "0\n" in text or ".\n" in text:
                    text = _ZERO_FRACTION.sub("\n", _TRAILING_ZEROS.sub("\\1\n", text))
                    return text.split("\n")[:-1]
                return column
            floats = list(map(float, column))
            if not all(map(math.isfinite, floats)):
                return None
            return ("\0".join(map(str, floats)) + "\0").replace(".0\0", "\0").split("\0")[:-1]
        if kind == "int":
            text = "\n".join(column) + "\n"
            if _CANONICAL_INTS.fullmatch(text):
                return text.replace("\n", "i\n").split("\n")[:-1]
            ints = list(map(int, column))
            if min(ints) < _INT64_MIN or max(ints) > _INT64_MAX:
                return None
            return ("i\0".join(map(str, ints)) + "i").split("\0")
        return list(map(convert, column))
    except ValueError:
        return None


# How an annotated-CSV ``_value`` of each datatype is written: the cell's text through the same converters
# as CSV (so ranges, NaN and infinities are refused the same way). A dateTime ``_value`` has no field type.
_ANNOTATED_KINDS: Final[dict[str, FieldKind]] = {
    "double": "float",
    "long": "int",
    "unsignedLong": "uint",
    "boolean": "bool",
    "string": "string",
    "duration": "string",
    "base64Binary": "string",
}


class AnnotatedRowEncoder:
    """An annotated-CSV row (an ``influx query --raw`` export) as one line of protocol: measurement
    ``_measurement``, one field named by ``_field`` holding ``_value`` typed by its ``#datatype``, the
    table's tag columns, time ``_time`` floored to ``precision``; else ValueError(reason)."""

    def __init__(self, precision: Precision) -> None:
        self.divisor = NS_PER[precision]
        self._tag_sets: dict[tuple[Schema, tuple[str, ...]], str] = {}

    def encode(self, row: Row) -> str:
        m, f = row.measurement, row.field
        measurement = _name("measurement", m, escape_measurement(m))
        key = _name("field key", f, escape_key(f))
        schema = row.table.schema
        at = schema.index.get("_value")
        if at is None:
            raise ValueError("no _value column")
        kind = _ANNOTATED_KINDS.get(schema.datatypes[at])
        if kind is None:
            raise ValueError(f"a {schema.datatypes[at]} _value cannot be written as a field")
        text = row.cells[at] or schema.defaults[at]
        if not text:
            raise ValueError("_value is empty")
        try:
            value = convert_field(text, kind)
        except ValueError as e:
            raise ValueError(f"_value: {e}") from None
        return f"{measurement}{self._tag_set(row)} {key}={value} {row.time_ns // self.divisor}"

    def _tag_set(self, row: Row) -> str:
        schema = row.table.schema
        tags = row.tags()
        cache_key = (schema, tuple(tags.get(c, "") for c in schema.tag_columns))
        text = self._tag_sets.get(cache_key)
        if text is None:
            text = "".join(
                f",{_name('tag key', k, escape_key(k))}={escape_tag_value(tags[k])}" for k in sorted(tags)
            )
            if len(self._tag_sets) >= _TAG_SET_CACHE_LIMIT:
                self._tag_sets.clear()
            self._tag_sets[cache_key] = text
        return text
