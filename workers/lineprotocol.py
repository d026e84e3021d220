"""Build and check InfluxDB line protocol as plain strings, on the ingestion hot path.

``influxdb_client.Point`` costs several times more per point than formatting strings directly, so
the encoders here reproduce its output byte for byte instead (``tests/test_lineprotocol.py`` compares
the two on arbitrary input). The one deliberate difference: where Point would emit a line that
InfluxDB rejects, skips as a comment, or silently reads differently, ``encode_point`` raises
``ValueError``. InfluxDB refuses a batch as a whole, so one bad line costs a bisection of the batch;
catching it while encoding keeps the error attached to the record that caused it.

Escaping follows InfluxDB's own parser (``models/points.go``) rather than a tidier grammar, because
the point of ``validate_line`` is to predict what the server accepts:

* measurement, tag keys, tag values: a character is escaped when the character before it is a
  backslash, whatever both characters are. A name therefore cannot end with a backslash: it would
  escape the separator after the name.
* field keys: the server's field scanner consumes a backslash together with the next character
  while its field iterator uses the rule above. Only keys on which both readings agree are accepted:
  a run of backslashes directly before ``,``, ``=`` or a space must have odd length.
* string field values: ``\\"`` and ``\\\\`` are escapes, every other character (newlines included)
  is literal.

Not checked: duplicate tag or field keys, the 64 KiB limit on string values, and whether a timestamp
fits the write precision (only that it fits in a signed 64-bit integer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import re2  # type: ignore[import-untyped]  # google-re2 ships no stubs

__all__ = [
    "FieldKind",
    "convert_field",
    "encode_point",
    "escape_key",
    "escape_measurement",
    "escape_string_field",
    "escape_tag_value",
    "field_converter",
    "format_float",
    "valid_block",
    "validate_line",
]

FieldKind = Literal["float", "int", "uint", "string", "bool"]

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64_MAX: Final = (1 << 64) - 1

# The tables of influxdb_client.client.write.point, copied so the output stays identical. Newlines,
# tabs and carriage returns become a backslash and a letter: the server stores that as two characters,
# not as the control character, but it keeps every line on one physical line.
_ESCAPE_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY: Final = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_STRING: Final = str.maketrans({'"': r"\"", "\\": r"\\"})


# str.translate is among the costliest steps of encoding a point, and measurements, keys and most tag
# values repeat from one point to the next, so escaped forms are memoised. Only names that passed
# their checks are stored, so a hit needs no further checking. A full cache is simply emptied: no
# bookkeeping on hits, and high-cardinality tag values cannot grow it without bound.
_CACHE_LIMIT: Final = 4096
_measurement_cache: dict[str, str] = {}
_tag_key_cache: dict[str, str] = {}
_tag_value_cache: dict[str, str] = {}
_field_key_cache: dict[str, str] = {}


def _remember(cache: dict[str, str], raw: str, escaped: str) -> str:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[raw] = escaped
    return escaped


def escape_measurement(name: str) -> str:
    """Escape a measurement name exactly as ``Point`` does (commas, spaces, newlines, tabs, CRs)."""
    cached = _measurement_cache.get(name)
    return name.translate(_ESCAPE_MEASUREMENT) if cached is None else cached


def escape_key(key: str) -> str:
    """Escape a tag key or field key exactly as ``Point`` does (measurement escapes plus ``=``)."""
    return key.translate(_ESCAPE_KEY)


def escape_tag_value(value: str) -> str:
    """Escape a tag value exactly as ``Point`` does.

    A trailing backslash would escape the comma or space that follows the value, so Point appends a
    space to it. The server then stores ``v\\`` as ``v `` (backslash-space unescapes to a space), but
    the line stays parseable, which is why this quirk is kept rather than rejected.
    """
    cached = _tag_value_cache.get(value)
    if cached is not None:
        return cached
    escaped = value.translate(_ESCAPE_KEY)
    if escaped.endswith("\\"):
        escaped += " "
    return _remember(_tag_value_cache, value, escaped)


def escape_string_field(value: str) -> str:
    """Escape the body of a string field value (without its quotes) exactly as ``Point`` does."""
    return value.translate(_ESCAPE_STRING)


def format_float(x: float) -> str | None:
    """Line-protocol text of a float as ``Point`` writes it; None for NaN and infinities.

    Point silently drops non-finite fields, since line protocol has no spelling for them. The
    trailing ``.0`` of whole numbers is trimmed, as Point and other encoders do.
    """
    if not math.isfinite(x):
        return None
    text = str(x)
    return text[:-2] if text.endswith(".0") else text


# ---------------------------------------------------------------------------------------------------
# encode_point


def _show(text: str, limit: int = 40) -> str:
    # Reasons end up in rejection reports; a 60 KiB value must not be copied into every one of them.
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# An even run of backslashes (counted from the start of the run) right before a separator character:
# the server's field scanner pairs the backslashes up and sees the separator unescaped.
_AMBIGUOUS_FIELD_KEY: Final = re.compile(r"(?<!\\)(?:\\\\)+[ ,=]|\\\Z")


def _measurement_text(measurement: str) -> str:
    name = measurement.translate(_ESCAPE_MEASUREMENT)
    if not name:
        raise ValueError("measurement is empty")
    # Point only warns (SyntaxWarning) here, and InfluxDB would then skip the line as a comment:
    # data lost without an error, the worst outcome for an exactly-once pipeline.
    if name[0] == "#":
        raise ValueError(
            f"measurement {_show(measurement)} starts with '#': InfluxDB reads the line as a comment"
        )
    # Nothing can be appended as for a tag value: measurement "m\" with tag t=v would be written as
    # "m\,t=v" and read back as the measurement "m,t=v" without tags, a silent corruption.
    if name[-1] == "\\":
        raise ValueError(
            f"measurement {_show(measurement)} ends with a backslash, which would escape the next separator"
        )
    return _remember(_measurement_cache, measurement, name)


def _tag_key_text(key: str) -> str:
    """Escaped tag key, "" when Point would drop the tag."""
    escaped = key.translate(_ESCAPE_KEY)
    if escaped and escaped[-1] == "\\":
        raise ValueError(f"tag key {_show(key)} ends with a backslash, which would escape its '='")
    return _remember(_tag_key_cache, key, escaped)


def _tags_text(tags: Mapping[str, str]) -> str:
    parts: list[str] = []
    # Point sorts by the raw key, before escaping; sorting escaped keys would order '\,' differently.
    for key in sorted(tags):
        value = tags[key]
        if value is None:  # Point skips None, and callers build these dicts from loosely typed records
            continue
        escaped_value = _tag_value_cache.get(value)
        if escaped_value is None:
            escaped_value = escape_tag_value(value)
        escaped_key = _tag_key_cache.get(key)
        if escaped_key is None:
            escaped_key = _tag_key_text(key) if escaped_value else ""
        if escaped_key and escaped_value:  # Point drops tags with an empty key or value
            parts.append(f",{escaped_key}={escaped_value}")
    return "".join(parts)


def _int_text(value: int) -> str:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer {value} does not fit in a signed 64-bit field")
    return f"{value}i"


def _subclass_value_text(value: object) -> str | None:
    # Same isinstance order as Point._append_fields: bool is an int subclass, so it is kept out of
    # the int branch. Subclasses are rendered through their base type so that an overridden
    # __str__ (an enum's, say) cannot leak into the line.
    if isinstance(value, float):
        return format_float(float(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_text(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value.translate(_ESCAPE_STRING)}"'
    raise ValueError(f'Type: "{type(value)}" of field is not supported.')


# Any, not a union: the dispatch below narrows by exact type, which mypy cannot follow through
# ``cls is float``, and isinstance() would cost the hot path a call per check.
def _field_value_text(value: Any) -> str | None:
    cls = type(value)
    if cls is float:
        text = repr(value)
        # A finite float's repr never holds an "n"; "nan", "inf" and "-inf" all do. Cheaper than
        # calling math.isfinite, and Point drops these values just the same.
        if "n" in text:
            return None
        return text[:-2] if text[-2:] == ".0" else text
    if cls is str:
        return f'"{value.translate(_ESCAPE_STRING)}"' if '"' in value or "\\" in value else f'"{value}"'
    if cls is int:
        return _int_text(value)
    if cls is bool:
        return "true" if value else "false"
    if value is None:
        return None
    return _subclass_value_text(value)


def _field_key_text(key: str) -> str:
    escaped = key.translate(_ESCAPE_KEY)
    if not escaped:
        raise ValueError("field key is empty")
    if "\\" in escaped and _AMBIGUOUS_FIELD_KEY.search(escaped):
        raise ValueError(
            f"field key {_show(key)} has an odd number of backslashes before ',', '=' or ' ', "
            "or ends with a backslash: InfluxDB cannot read it back"
        )
    return _remember(_field_key_cache, key, escaped)


def _fields_text(fields: Mapping[str, float | int | bool | str]) -> str:
    parts: list[str] = []
    for key in sorted(fields):
        text = _field_value_text(fields[key])
        if text is None:  # None and non-finite floats are dropped, as Point does
            continue
        escaped_key = _field_key_cache.get(key)
        if escaped_key is None:
            escaped_key = _field_key_text(key)
        parts.append(f"{escaped_key}={text}")
    return ",".join(parts)


def encode_point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | bool | str],
    timestamp: int | None,
) -> str | None:
    """One line of protocol, byte for byte what ``Point`` writes with nanosecond precision.

    Returns None when no field has a value (Point returns ""). Raises ValueError where Point does
    (unsupported field type) and, unlike Point, where its line would be lost or misread: an empty
    measurement or one starting with ``#``; a measurement, tag key or field key ending with a
    backslash; a field key with an odd number of backslashes before ``,``, ``=`` or a space; an empty
    field key;
    an integer field or timestamp outside the signed 64-bit range.
    """
    name = _measurement_cache.get(measurement)
    if name is None:
        name = _measurement_text(measurement)
    tag_text = _tags_text(tags) if tags else ""
    field_text = _fields_text(fields)
    if not field_text:
        return None
    if timestamp is None:
        return f"{name}{tag_text} {field_text}"
    # Point accepts any Integral; a float would be truncated silently by int(), so refuse it.
    if not isinstance(timestamp, int):
        raise ValueError(f"timestamp {timestamp!r} is not an integer")
    if not _INT64_MIN <= timestamp <= _INT64_MAX:
        raise ValueError(f"timestamp {timestamp} does not fit in a signed 64-bit integer")
    return f"{name}{tag_text} {field_text} {int(timestamp)}"


# ---------------------------------------------------------------------------------------------------
# convert_field


def _convert_float(raw: str) -> str:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{_show(raw)} is not a float") from None
    text = format_float(value)
    if text is None:
        raise ValueError(f"{_show(raw)} is not a finite float (line protocol cannot store NaN or infinity)")
    return text


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{_show(raw)} is not an integer") from None


def _convert_int(raw: str) -> str:
    value = _parse_int(raw)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{_show(raw)} does not fit in a signed 64-bit integer")
    return f"{value}i"


def _convert_uint(raw: str) -> str:
    value = _parse_int(raw)
    if value < 0:
        raise ValueError(f"{_show(raw)} is negative, but the field is an unsigned integer")
    if value > _UINT64_MAX:
        raise ValueError(f"{_show(raw)} does not fit in an unsigned 64-bit integer")
    return f"{value}u"


_BOOL_WORDS: Final = {
    "true": "true",
    "t": "true",
    "1": "true",
    "yes": "true",
    "false": "false",
    "f": "false",
    "0": "false",
    "no": "false",
}


def _convert_bool(raw: str) -> str:
    # Surrounding whitespace is tolerated as float() and int() tolerate it for the other kinds.
    text = _BOOL_WORDS.get(raw.strip().lower())
    if text is None:
        raise ValueError(f"{_show(raw)} is not a boolean (expected true/false, t/f, 1/0 or yes/no)")
    return text


def _convert_string(raw: str) -> str:
    return f'"{raw.translate(_ESCAPE_STRING)}"'


_CONVERTERS: Final[dict[str, Callable[[str], str]]] = {
    "float": _convert_float,
    "int": _convert_int,
    "uint": _convert_uint,
    "bool": _convert_bool,
    "string": _convert_string,
}


def convert_field(raw: str, kind: FieldKind) -> str:
    """Line-protocol field value text for a textual cell, or ValueError naming what is wrong with it.

    float: anything ``float()`` reads except NaN and infinities; int: ``int()`` within int64, as
    ``Ni``; uint: 0..2**64-1 as ``Nu``; bool: true/false/t/f/1/0/yes/no in any case; string: quoted.
    """
    return field_converter(kind)(raw)


def field_converter(kind: FieldKind) -> Callable[[str], str]:
    """``convert_field`` for one kind, looked up once: the CSV hot path converts millions of cells."""
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ValueError(f"unknown field kind {kind!r}")
    return converter


# ---------------------------------------------------------------------------------------------------
# validate_line: one precompiled regex for the common case, a slower scanner only to explain failures.
#
# The fast regex accepts a subset of valid lines: integers of up to 18 digits or 19 starting with 1-8
# (both under 2**63) and floats with at most 100 integer digits and a two-digit exponent (so they
# cannot overflow). Everything it rejects goes to the scanner, which is exact, so validate_line
# answers as the scanner alone would; the regex only saves time.

# A run of backslashes and the character after it: with InfluxDB's "previous character is a
# backslash" rule that character is escaped whatever it is. A raw newline never belongs to a name.
# Names are written "first unit, then plain runs separated by escapes" rather than as a repeated
# alternation: Python's engine runs the unrolled form about twice as fast.
_ESCAPED: Final = r"\\++[^\\\n]"
_MEASUREMENT_RE: Final = rf"(?:[^\\,# \n]|{_ESCAPED})[^\\, \n]*+(?:{_ESCAPED}[^\\, \n]*+)*+"
_TAG_PART_RE: Final = rf"(?:[^\\,= \n]|{_ESCAPED})[^\\,= \n]*+(?:{_ESCAPED}[^\\,= \n]*+)*+"
# A run before an ordinary character is literal under both of the server's readings; before a
# separator it must be odd so that both readings see the separator as escaped.
_FIELD_KEY_ESCAPED: Final = r"(?:\\++[^\\,= \n]|\\(?:\\\\)*+[,= ])"
_FIELD_KEY_RE: Final = (
    rf"(?:[^\\,= \n]|{_FIELD_KEY_ESCAPED})[^\\,= \n]*+(?:{_FIELD_KEY_ESCAPED}[^\\,= \n]*+)*+"
)
# 19-digit numbers first: nanosecond timestamps since 2001 have 19 digits, and the possessive 1-18 digit
# branch would otherwise be tried and given up on every line.
_INT64_FAST: Final = r"(?:[1-8][0-9]{18}|[0-9]{1,18}+)"
_FLOAT_FAST: Final = r"(?:[0-9]{1,100}+(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]{1,2}+)?"
_STRING_RE: Final = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_FIELD_VALUE_RE: Final = (
    rf"(?:-?(?:{_INT64_FAST}i|{_FLOAT_FAST})|[0-9]{{1,19}}+u"
    rf"|t(?:rue)?|T(?:rue|RUE)?|f(?:alse)?|F(?:alse|ALSE)?|{_STRING_RE})"
    # The lookahead makes each value end at a separator, so the engine tries the next alternative
    # (12 as an integer, then as a float) instead of ending the field early.
    r"(?=[ ,]|\Z)"
)
_FIELD_RE: Final = rf"{_FIELD_KEY_RE}={_FIELD_VALUE_RE}"
_SERIES_AND_FIELDS: Final = (
    rf"{_MEASUREMENT_RE}(?:,{_TAG_PART_RE}={_TAG_PART_RE})*+ {_FIELD_RE}(?:,{_FIELD_RE})*+"
)
_FAST_WITH_TIME: Final = re.compile(rf"{_SERIES_AND_FIELDS} -?{_INT64_FAST}", re.DOTALL)
_FAST_ANY_TIME: Final = re.compile(rf"{_SERIES_AND_FIELDS}(?: -?{_INT64_FAST})?", re.DOTALL)

# The scanner's pieces. Each may match nothing, so the scanner can say which part is missing.
_MEASUREMENT_CHARS: Final = re.compile(rf"(?:[^\\, \n]++|{_ESCAPED})*+")
_TAG_CHARS: Final = re.compile(rf"(?:[^\\,= \n]++|{_ESCAPED})*+")
_FIELD_KEY_CHARS: Final = re.compile(r"(?:[^\\,= \n]++|\\++[^\\,= \n]|\\(?:\\\\)*+[,= ])*+")
_STRING_VALUE: Final = re.compile(_STRING_RE, re.DOTALL)
_BARE_VALUE: Final = re.compile(r"[^, ]*+")
_INTEGER: Final = re.compile(r"-?[0-9]+")
_FLOAT: Final = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS: Final = frozenset({"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"})

_Scan = tuple[int, str | None]  # where scanning stopped, and what is wrong (None: nothing so far)


def _end(pattern: re.Pattern[str], line: str, pos: int) -> int:
    """End of ``pattern`` matched at ``pos``; the scanner's patterns all accept the empty string."""
    match = pattern.match(line, pos)
    return pos if match is None else match.end()


def _stray(line: str, pos: int, where: str) -> str:
    """Reason for a character that cannot continue or end ``where``."""
    rest = line[pos:].lstrip("\\")
    if len(rest) < len(line) - pos:
        if not rest:
            return f"line ends with a backslash in the {where}"
        if rest[0] == "\n":
            return f"unescaped newline in the {where}"
        return f"even run of backslashes before {rest[0]!r} in the {where}: InfluxDB reads it two ways"
    if not rest:
        return "missing field set"
    if rest[0] == "\n":
        return f"unescaped newline in the {where}"
    return f"unexpected {rest[0]!r} in the {where}"


def _scan_tag(line: str, pos: int) -> _Scan:
    """One ``key=value`` of the tag set, ``pos`` just after its comma."""
    key_end = _end(_TAG_CHARS, line, pos)
    key = line[pos:key_end]
    after = line[key_end : key_end + 1]
    if after != "=":
        if not key and after in ("", ",", " "):
            return key_end, "tag key is empty"
        if after == " ":
            return key_end, f"unescaped space in tag set (tag {_show(key)} has no '=')"
        if after in ("", ","):
            return key_end, f"tag {_show(key)} has no '=' and value"
        return key_end, _stray(line, key_end, "tag key")
    if not key:
        return key_end, "tag key is empty"
    value_end = _end(_TAG_CHARS, line, key_end + 1)
    after = line[value_end : value_end + 1]
    if value_end == key_end + 1 and after in ("", ",", " "):
        return value_end, f"tag {_show(key)} has an empty value"
    if after in (",", " "):
        return value_end, None
    if after == "=":
        return value_end, f"unescaped '=' in the value of tag {_show(key)}"
    return value_end, _stray(line, value_end, "tag value")


def _scan_series_key(line: str) -> tuple[int, str | None, str]:
    """Measurement and tag set; on success ``pos`` is the space before the field set."""
    pos = _end(_MEASUREMENT_CHARS, line, 0)
    if pos == 0 and line[:1] in ("", ",", " "):
        return pos, "measurement is empty", "measurement"
    where = "measurement"
    while line[pos : pos + 1] == ",":
        where = "tag set"
        pos, reason = _scan_tag(line, pos + 1)
        if reason is not None:
            return pos, reason, where
    if line[pos : pos + 1] == " ":
        return pos, None, where
    return pos, _stray(line, pos, where), where


def _bare_value_problem(raw: str, key: str) -> str | None:
    if not raw:
        return f"field {_show(key)} has no value"
    if raw in _BOOLEANS:
        return None
    if raw[-1] in "iu" and _INTEGER.fullmatch(raw, 0, len(raw) - 1):
        value = int(raw[:-1])
        low, high = (_INT64_MIN, _INT64_MAX) if raw[-1] == "i" else (0, _UINT64_MAX)
        if low <= value <= high:
            return None
        kind = "signed" if raw[-1] == "i" else "unsigned"
        return f"field {_show(key)}: {_show(raw)} is out of the {kind} 64-bit integer range"
    if _FLOAT.fullmatch(raw):
        if math.isfinite(float(raw)):
            return None
        return f"field {_show(key)}: {_show(raw)} is out of the float64 range"
    return f"field {_show(key)}: value {_show(raw)} is not a number, boolean or quoted string"


def _scan_field_value(line: str, pos: int, key: str) -> _Scan:
    if line.startswith('"', pos):
        match = _STRING_VALUE.match(line, pos)
        if match is None:
            return len(line), f"unterminated string field {_show(key)}"
        end = match.end()
        if line[end : end + 1] not in ("", ",", " "):
            return end, f"field {_show(key)}: unexpected {line[end]!r} after the closing quote"
        return end, None
    end = _end(_BARE_VALUE, line, pos)
    return end, _bare_value_problem(line[pos:end], key)


def _scan_field(line: str, pos: int, first: bool, where: str) -> _Scan:
    key_end = _end(_FIELD_KEY_CHARS, line, pos)
    key = line[pos:key_end]
    after = line[key_end : key_end + 1]
    if after == "=":
        if not key:
            return key_end, "missing field key"
        return _scan_field_value(line, key_end + 1, key)
    if first and after == "":
        return key_end, "missing field set"  # e.g. "cpu 1700000000": a timestamp but no field
    if first and after == " ":
        # The series key ended at a space that was meant to be part of it (or to be escaped).
        return key_end, f"unescaped space in {where}" if key else "more than one space before the field set"
    if after in ("", ",", " "):
        return key_end, f"field {_show(key)} has no '=' and value" if key else "missing field key"
    return key_end, _stray(line, key_end, "field key")


def _scan_field_set(line: str, pos: int, where: str) -> _Scan:
    pos, reason = _scan_field(line, pos, True, where)
    while reason is None and line[pos : pos + 1] == ",":
        pos, reason = _scan_field(line, pos + 1, False, where)
    return pos, reason


def _timestamp_problem(line: str, pos: int, require_timestamp: bool) -> str | None:
    if pos >= len(line):
        return "missing timestamp" if require_timestamp else None
    text = line[pos + 1 :]  # line[pos] is the space after the field set
    if _INTEGER.fullmatch(text):
        if _INT64_MIN <= int(text) <= _INT64_MAX:
            return None
        return f"timestamp {_show(text)} does not fit in a signed 64-bit integer"
    if not text:
        return "trailing space after the field set"
    if text[0] == " ":
        return "more than one space before the timestamp"
    head, _, tail = text.partition(" ")
    if tail and _INTEGER.fullmatch(head):
        return f"unexpected text after the timestamp: {_show(tail)}"
    return f"timestamp {_show(text)} is not an integer"


def _diagnose(line: str, require_timestamp: bool) -> str | None:
    """The exact (slow) check behind ``validate_line``: the first problem of ``line``, or None."""
    if line.startswith("#"):
        return "line starts with '#', so InfluxDB would read it as a comment"
    pos, reason, where = _scan_series_key(line)
    if reason is None:
        pos, reason = _scan_field_set(line, pos + 1, where)
    if reason is None:
        reason = _timestamp_problem(line, pos, require_timestamp)
    return reason


def validate_line(line: str, *, require_timestamp: bool = True) -> str | None:
    """None when ``line`` is one valid point of line protocol, else a short reason.

    ``line`` has no trailing newline; blank lines and comments are the caller's to skip (a line
    starting with ``#`` is reported, since it is not a point).
    """
    fast = _FAST_WITH_TIME if require_timestamp else _FAST_ANY_TIME
    if fast.fullmatch(line) is not None:
        return None
    return _diagnose(line, require_timestamp)


# ---------------------------------------------------------------------------------------------------
# valid_block: the hot path's batch check

# The fast pattern for many lines at once, joined by newlines: one regex call per batch instead of a
# Python call per line (issue #4: the per-line calls were 70% of parsing). Only string values change:
# within one line they cannot hold a newline anyway, and here they must not, so that no match runs
# from one line into the next. Every other part of the pattern already excludes the newline.
_STRING_IN_BLOCK: Final = r'"[^"\\\n]*+(?:\\[^\n][^"\\\n]*+)*+"'
assert _STRING_RE in _SERIES_AND_FIELDS
_LINE_IN_BLOCK: Final = rf"{_SERIES_AND_FIELDS} -?{_INT64_FAST}".replace(_STRING_RE, _STRING_IN_BLOCK)
_VALUE_END: Final = r"(?=[ ,]|\Z)"


def _for_re2(pattern: str) -> str:
    """The same language in RE2's syntax, which has neither possessive quantifiers nor lookahead.

    Both only steer Python's backtracking: every possessive run here is followed by a character its
    class excludes, so giving characters back never helps a match, and within a block line a field
    value is always followed by ``,`` or the space before the timestamp, which the lookahead asked
    for. RE2 decides membership with a DFA, so the language is all that matters
    (``tests/test_hotpath.py`` checks the two engines agree)."""
    assert _VALUE_END in pattern
    greedy = re.sub(r"([*+?}])\+", r"\1", pattern.replace(_VALUE_END, ""))
    assert "*+" not in greedy and "?+" not in greedy and "(?=" not in greedy
    return greedy


# RE2 runs the block check as a DFA over the bytes: 115 ns a line against 950 ns for Python's engine on
# the same pattern (issue #4: it was a third of a worker's time), and no decode is needed to call it.
_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.max_mem = 64 << 20  # room for the DFA of the counted repetitions (19-digit integers)
_BLOCK_RE2: Final = re2.compile(_for_re2(rf"{_LINE_IN_BLOCK}(?:\n{_LINE_IN_BLOCK})*+"), _RE2_OPTIONS)


def valid_block(block: bytes) -> bool:
    """True only if every line of ``block`` (UTF-8 lines joined by ``\\n``) passes ``validate_line``.

    ``block`` must be valid UTF-8 (the caller has checked). False says nothing about any one line: the
    caller then checks them one by one. Each line of an accepted block matches the pattern behind
    ``validate_line``'s own fast check on its own.
    """
    return _BLOCK_RE2.fullmatch(block) is not None
