"""Rows of InfluxDB annotated CSV: datatypes, a table's schema, tables and typed rows.

``tsbatch.annotated_csv`` parses the stream and builds these; what is here is shared per table, never
copied per row: a ``Row`` holds its typed values, its cells' text, its line and a reference to its
``Table`` (result name, table id), whose ``Schema`` holds the columns, datatypes, group flags and
defaults of one annotation block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Final

Value = int | float | bool | str | None

# Not tags: Flux's own columns; every other named column of a table is a tag (its group key, mostly).
SYSTEM_COLUMNS: Final = frozenset(
    {"result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}
)
DATETIME_TYPES: Final = frozenset({"dateTime", "dateTime:RFC3339", "dateTime:RFC3339Nano"})
_BOOLS: Final = {  # what Flux's decoder (Go's strconv.ParseBool) reads
    **dict.fromkeys(("true", "True", "TRUE", "t", "T", "1"), True),
    **dict.fromkeys(("false", "False", "FALSE", "f", "F", "0"), False),
}
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


class AnnotatedCsvError(ValueError):
    """Malformed annotated CSV: ``line`` (1-based, the record's first line; 0 in a chunk's table
    context), ``reason``, and ``raw``, the record's text."""

    def __init__(self, line: int, reason: str, raw: str = "") -> None:
        super().__init__(f"line {line}: {reason}" if line else f"table context: {reason}")
        self.line = line
        self.reason = reason
        self.raw = raw


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time, exactly (at most 9 fraction digits)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"{text[:40]!r} is not an RFC 3339 time")
    y, mo, d, h, mi, s = int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6])
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"{text!r} is out of range")
    try:
        days = date(y, mo, d).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError(f"{text!r} is not a calendar date") from None
    secs = days * 86_400 + h * 3_600 + mi * 60 + s
    if m[8]:
        offset = int(m[9]) * 3_600 + int(m[10]) * 60
        secs += -offset if m[8] == "+" else offset
    return secs * 1_000_000_000 + (int(m[7].ljust(9, "0")) if m[7] else 0)


def _loose(text: str) -> bool:
    """Text that int() and float() read but Flux's decoder refuses: 1_000, surrounding spaces."""
    return "_" in text or text[0].isspace() or text[-1].isspace()


def _long(text: str) -> int:
    try:
        if not _loose(text):
            return int(text)
    except ValueError:
        pass
    raise ValueError(f"{text[:40]!r} is not an integer")


def _unsigned(text: str) -> int:
    value = _long(text)
    if value < 0:
        raise ValueError(f"{text[:40]!r} is negative")
    return value


def _double(text: str) -> float:
    try:
        if not _loose(text):
            return float(text)  # also Flux's +Inf, -Inf and NaN
    except ValueError:
        pass
    raise ValueError(f"{text[:40]!r} is not a number")


def _boolean(text: str) -> bool:
    value = _BOOLS.get(text)
    if value is None:
        raise ValueError(f"{text[:40]!r} is not a boolean")
    return value


def _text(text: str) -> str:
    return text


def _datetime() -> Callable[[str], int]:
    """A dateTime converter remembering its last value: ``_start`` and ``_stop`` repeat on every row."""
    last, ns = "", 0

    def convert(text: str) -> int:
        nonlocal last, ns
        if text != last:
            ns, last = rfc3339_ns(text), text
        return ns

    return convert


def converter(datatype: str) -> Callable[[str], Value]:
    """The cell converter of a ``#datatype``; ValueError for an unknown one."""
    simple: dict[str, Callable[[str], Value]] = {
        "long": _long,
        "unsignedLong": _unsigned,
        "double": _double,
        "boolean": _boolean,
        "string": _text,
        "duration": _text,
        "base64Binary": _text,
    }
    if datatype in DATETIME_TYPES:
        return _datetime()
    found = simple.get(datatype)
    if found is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    return found


@dataclass(frozen=True, slots=True, eq=False)
class Schema:
    """One annotation block and its header: shared by every table and row under it."""

    columns: tuple[str, ...]
    datatypes: tuple[str, ...]
    groups: tuple[bool, ...]
    defaults: tuple[str, ...]  # raw ``#default`` text per column, "" for none
    leading: bool  # the header starts with the (dropped) annotation column
    index: dict[str, int] = field(repr=False)
    tag_columns: tuple[str, ...]
    converters: tuple[Callable[[str], Value], ...] = field(repr=False)
    default_values: tuple[Value, ...] = field(repr=False)
    result_at: int = -1
    table_at: int = -1

    @property
    def is_error(self) -> bool:
        return self.columns == ("error", "reference")


@dataclass(frozen=True, slots=True, eq=False)
class Table:
    """A table: its schema, result name and table id (None where those columns are absent)."""

    schema: Schema
    result: str | None
    table_id: int | None

    @property
    def columns(self) -> tuple[str, ...]:
        return self.schema.columns

    @property
    def datatypes(self) -> tuple[str, ...]:
        return self.schema.datatypes

    @property
    def groups(self) -> tuple[bool, ...]:
        return self.schema.groups

    @property
    def tag_columns(self) -> tuple[str, ...]:
        return self.schema.tag_columns


class Row:
    """A data row: ``values`` typed by column, ``cells`` its text (empty where the default applies),
    ``line`` its first line in the stream, ``raw`` the record as it was (without its line end)."""

    __slots__ = ("cells", "line", "raw", "table", "values")

    def __init__(self, table: Table, values: list[Value], cells: list[str], line: int, raw: str) -> None:
        self.table = table
        self.values = values
        self.cells = cells
        self.line = line
        self.raw = raw

    def __repr__(self) -> str:
        return f"Row(line={self.line}, {dict(zip(self.table.columns, self.values, strict=True))})"

    def __getitem__(self, column: str) -> Value:
        return self.values[self.table.schema.index[column]]

    def get(self, column: str, default: Value = None) -> Value:
        at = self.table.schema.index.get(column)
        return default if at is None else self.values[at]

    def as_dict(self) -> dict[str, Value]:
        return dict(zip(self.table.columns, self.values, strict=True))

    def text(self, column: str) -> str:
        """The cell's text as in the stream, its ``#default`` where it is empty; KeyError if absent."""
        at = self.table.schema.index[column]
        return self.cells[at] or self.table.schema.defaults[at]

    def _need(self, column: str) -> Value:
        at = self.table.schema.index.get(column)
        value = None if at is None else self.values[at]
        if value is None or value == "":
            why = "no" if at is None else "an empty"
            raise AnnotatedCsvError(self.line, f"{why} {column} column", self.raw)
        return value

    @property
    def time_ns(self) -> int:
        value = self._need("_time")
        if isinstance(value, str):  # a _time typed string: still RFC 3339, as Flux writes it
            try:
                return rfc3339_ns(value)
            except ValueError as e:
                raise AnnotatedCsvError(self.line, f"_time: {e}", self.raw) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnnotatedCsvError(self.line, f"_time is a {type(value).__name__}, not a time", self.raw)
        return value

    @property
    def measurement(self) -> str:
        return str(self._need("_measurement"))

    @property
    def field(self) -> str:
        return str(self._need("_field"))

    @property
    def value(self) -> Value:
        return self.get("_value")

    def tags(self) -> dict[str, str]:
        """The tag columns' text (as in the stream, or their default), where not empty."""
        schema, cells = self.table.schema, self.cells
        out = {}
        for name in schema.tag_columns:
            at = schema.index[name]
            text = cells[at] or schema.defaults[at]
            if text:
                out[name] = text
        return out


def build_schema(header: Sequence[str], annotations: dict[str, list[str]]) -> Schema:
    """The schema of a header and the annotation rows before it; ValueError saying what is wrong."""
    width = len(header)
    for name, cells in annotations.items():
        if len(cells) != width:
            raise ValueError(f"#{name} has {len(cells)} columns, the header has {width}")
    leading = bool(header) and header[0] == ""
    if annotations and not leading:
        raise ValueError("the header must start with the empty annotation column")
    skip = 1 if leading else 0
    columns = tuple(header[skip:])
    if len(set(columns)) != len(columns):
        raise ValueError("a column name appears twice in the header")
    datatypes = tuple(annotations.get("datatype", [""] * width)[skip:])
    datatypes = tuple(t or "string" for t in datatypes)
    groups = []
    for flag in annotations.get("group", ["false"] * width)[skip:]:
        if flag not in ("true", "false"):
            raise ValueError(f"#group value {flag[:40]!r} is neither true nor false")
        groups.append(flag == "true")
    defaults = tuple(annotations.get("default", [""] * width)[skip:])
    converters = tuple(converter(t) for t in datatypes)
    default_values: list[Value] = []
    for name, convert, text in zip(columns, converters, defaults, strict=True):
        try:
            default_values.append(convert(text) if text else None)
        except ValueError as e:
            raise ValueError(f"#default of column {name!r}: {e}") from None
    return Schema(
        columns=columns,
        datatypes=datatypes,
        groups=tuple(groups),
        defaults=defaults,
        leading=leading,
        index={c: i for i, c in enumerate(columns)},
        tag_columns=tuple(c for c in columns if c and c not in SYSTEM_COLUMNS),
        converters=converters,
        default_values=tuple(default_values),
        result_at=columns.index("result") if "result" in columns else -1,
        table_at=columns.index("table") if "table" in columns else -1,
    )


def convert_cells(schema: Schema, cells: list[str]) -> list[Value]:
    try:
        return [
            d if c == "" else f(c)
            for f, c, d in zip(schema.converters, cells, schema.default_values, strict=True)
        ]
    except ValueError:
        pass
    for name, datatype, f, c in zip(schema.columns, schema.datatypes, schema.converters, cells, strict=True):
        try:
            if c:
                f(c)
        except ValueError as e:
            raise ValueError(f"column {name!r} ({datatype}): {e}") from None
    raise AssertionError("unreachable: a conversion failed once and not again")
