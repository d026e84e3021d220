"""workers.lineprotocol against influxdb_client.Point, and validate_line against hand-written lines.

Point is the reference for encoding. Where Point writes a line that InfluxDB would reject, skip as a
comment, or read back differently, encode_point raises instead; ``_point_output_problems`` below
lists those cases independently of the implementation, and each one is also shown on its own in an
example test.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import (
    _ESCAPE_MEASUREMENT,
    Point,
    _escape_key,
    _escape_string,
    _escape_tag_value,
)
from influxdb_client.domain.write_precision import WritePrecision

from workers import lineprotocol as lp
from workers.lineprotocol import (
    convert_field,
    encode_point,
    escape_key,
    escape_measurement,
    escape_string_field,
    escape_tag_value,
    format_float,
    validate_line,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

PROPERTY = settings(max_examples=300, deadline=None)

# Full unicode (hypothesis leaves out surrogates by default: they cannot be sent as UTF-8 at all), with
# the characters line protocol treats specially drawn far more often than chance would.
_SPECIAL = st.sampled_from([",", "=", " ", '"', "\\", "\n", "\r", "\t", "#"])
names = st.text(st.one_of(_SPECIAL, st.characters()), max_size=8)
tag_values = st.one_of(st.none(), names)
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond int64 too: Point writes those as-is
    st.floats(),  # NaN and infinities included: Point and encode_point both drop them
    names,
)
tag_sets = st.dictionaries(names, tag_values, max_size=4)
field_sets = st.dictionaries(names, field_values, max_size=4)
timestamps = st.one_of(st.none(), st.integers(min_value=-(2**64), max_value=2**64))

# The one unusable input whose Point line is still valid: measurement "m\" with tag t=v is written as
# "m\,t=v f=..." and InfluxDB reads the measurement "m,t=v" with no tags (only the first tag is
# swallowed: the comma after it is unescaped and starts the tag set).
MEASUREMENT_SWALLOWS_TAGS = "measurement ends with a backslash that escapes the tag set's comma"

# A backslash run of odd length before , = or space in a raw field key: Point adds one backslash
# for the separator, the run becomes even, and InfluxDB's field scanner sees the separator unescaped.
_ODD_RUN_BEFORE_SEPARATOR = re.compile(r"(?<!\\)\\(?:\\\\)*[ ,=]")


def _point_line(measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int | None) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    if timestamp is not None:
        point.time(timestamp, WritePrecision.NS)
    with warnings.catch_warnings():
        # Point warns about measurements starting with '#'; that case is tested on its own below.
        warnings.simplefilter("ignore", SyntaxWarning)
        return str(point.to_line_protocol())


def _written_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in fields.items()
        if value is not None and not (isinstance(value, float) and not math.isfinite(value))
    }


def _measurement_problems(measurement: str, has_tags: bool) -> set[str]:
    if measurement == "":
        return {"empty measurement: the line starts with a separator"}
    if measurement.startswith("#"):
        return {"measurement starts with '#': the line is a comment"}
    if measurement.endswith("\\"):
        # Without tags the backslash escapes the space before the field set instead: invalid.
        return {MEASUREMENT_SWALLOWS_TAGS if has_tags else "measurement ends with a backslash"}
    return set()


def _field_problems(key: str, value: Any) -> set[str]:
    problems = set()
    if key == "":
        problems.add("empty field key")
    if key.endswith("\\") or _ODD_RUN_BEFORE_SEPARATOR.search(key):
        problems.add("field key backslash escapes a separator")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        problems.add("integer field outside int64")
    return problems


def _point_output_problems(
    measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int | None
) -> set[str]:
    """Why Point's line for this input would be lost, rejected or misread (empty: it is fine)."""
    written_tags = {key: value for key, value in tags.items() if key and value}  # Point drops the rest
    problems = _measurement_problems(measurement, bool(written_tags))
    tag_keys = sorted(written_tags)
    if MEASUREMENT_SWALLOWS_TAGS in problems:
        # The first tag is read as part of the measurement, where a backslash before '=' is harmless.
        tag_keys = tag_keys[1:]
    if any(key.endswith("\\") for key in tag_keys):
        problems.add("tag key ends with a backslash that escapes its '='")
    written = _written_fields(fields)
    for key, value in written.items():
        problems |= _field_problems(key, value)
    if written and timestamp is not None and not INT64_MIN <= timestamp <= INT64_MAX:
        problems.add("timestamp outside int64")
    return problems


# ---------------------------------------------------------------------------------------------------
# Property 1: encode_point is Point, byte for byte, wherever Point's line is usable.


@PROPERTY
@given(measurement=names, tags=tag_sets, fields=field_sets, timestamp=timestamps)
def test_encode_point_equals_influxdb_client_point_for_arbitrary_names_and_values(
    measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int | None
) -> None:
    problems = _point_output_problems(measurement, tags, fields, timestamp)
    event("refused" if problems else "encoded")
    if problems:
        with pytest.raises(ValueError):
            encode_point(measurement, tags, fields, timestamp)
    else:
        expected = _point_line(measurement, tags, fields, timestamp)
        assert encode_point(measurement, tags, fields, timestamp) == (expected or None)


@PROPERTY
@given(measurement=names, tags=tag_sets, fields=field_sets, timestamp=timestamps)
def test_encode_point_gives_the_same_answer_when_its_caches_are_warm(
    measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int | None
) -> None:
    def attempt() -> str | type[ValueError] | None:
        try:
            return encode_point(measurement, tags, fields, timestamp)
        except ValueError:
            return ValueError

    assert attempt() == attempt()


@PROPERTY
@given(text=names)
def test_escape_functions_equal_points_own_escaping(text: str) -> None:
    assert escape_measurement(text) == _escape_key(text, _ESCAPE_MEASUREMENT)
    assert escape_key(text) == _escape_key(text)
    assert escape_tag_value(text) == _escape_tag_value(text)
    assert escape_string_field(text) == _escape_string(text)


@PROPERTY
@given(x=st.floats())
def test_format_float_renders_a_float_as_point_renders_a_float_field(x: float) -> None:
    line = _point_line("m", {}, {"f": x}, None)
    if math.isfinite(x):
        assert line == f"m f={format_float(x)}"
    else:
        assert line == ""
        assert format_float(x) is None


def test_encode_point_writes_bool_fields_as_booleans_although_bool_is_an_int_subclass() -> None:
    line = encode_point("m", {}, {"b": True, "c": False, "i": 1}, None)
    assert line == "m b=true,c=false,i=1i"
    assert line == _point_line("m", {}, {"b": True, "c": False, "i": 1}, None)


def test_encode_point_sorts_tags_and_fields_and_skips_empty_tags_and_none_values() -> None:
    tags = {"z": "1", "a": "2", "": "dropped", "empty": "", "none": None}
    fields = {"y": 1.5, "x": None, "w": "s", "nan": float("nan"), "big": 1e16}
    expected = 'cpu,a=2,z=1 big=1e+16,w="s",y=1.5 -5'
    assert encode_point("cpu", tags, fields, -5) == expected  # type: ignore[arg-type]
    assert _point_line("cpu", tags, fields, -5) == expected


def test_encode_point_returns_none_when_no_field_has_a_value() -> None:
    assert encode_point("cpu", {"host": "a"}, {"x": None, "y": float("inf")}, 1) is None  # type: ignore[dict-item]
    assert _point_line("cpu", {"host": "a"}, {"x": None, "y": float("inf")}, 1) == ""


def test_encode_point_raises_for_a_comment_measurement_where_point_only_warns() -> None:
    with pytest.warns(SyntaxWarning):
        assert Point("#cpu").field("x", 1).to_line_protocol() == "#cpu x=1i"
    with pytest.raises(ValueError, match="comment"):
        encode_point("#cpu", {}, {"x": 1}, None)


def test_encode_point_raises_for_an_empty_measurement_where_point_writes_an_invalid_line() -> None:
    line = _point_line("", {}, {"x": 1}, 1)
    assert line == " x=1i 1"
    assert validate_line(line) == "measurement is empty"
    with pytest.raises(ValueError, match="empty"):
        encode_point("", {}, {"x": 1}, 1)


def test_a_measurement_ending_in_a_backslash_makes_point_write_a_valid_line_that_means_something_else() -> (
    None
):
    line = _point_line("m\\", {"t": "v"}, {"x": 1}, 1)
    assert line == "m\\,t=v x=1i 1"
    assert validate_line(line) is None  # valid, but the measurement is "m,t=v" and there is no tag
    two_tags = _point_line("m\\", {"a": "1", "b": "2"}, {"x": 1}, 1)
    assert two_tags == "m\\,a=1,b=2 x=1i 1"
    assert validate_line(two_tags) is None  # measurement "m,a=1", tag b=2
    assert validate_line(_point_line("m\\", {}, {"x": 1}, 1)) is not None
    with pytest.raises(ValueError, match="backslash"):
        encode_point("m\\", {"t": "v"}, {"x": 1}, 1)


def test_keys_ending_in_a_backslash_make_point_write_invalid_lines_and_encode_point_raise() -> None:
    for tags, fields in (({"k\\": "v"}, {"x": 1}), ({}, {"x\\": 1}), ({}, {"a\\ b": 1}), ({}, {"": 1})):
        assert validate_line(_point_line("m", tags, fields, 1)) is not None
        with pytest.raises(ValueError):
            encode_point("m", tags, fields, 1)
    # Two backslashes before the space pair up with the one Point adds: unambiguous again.
    assert encode_point("m", {}, {"a\\\\ b": 1}, 1) == _point_line("m", {}, {"a\\\\ b": 1}, 1)


def test_a_tag_value_ending_in_a_backslash_gets_points_extra_space_and_stays_valid() -> None:
    line = encode_point("m", {"path": "C:\\", "z": "1"}, {"x": 1}, 1)
    assert line == "m,path=C:\\ ,z=1 x=1i 1"
    assert line == _point_line("m", {"path": "C:\\", "z": "1"}, {"x": 1}, 1)
    assert validate_line(line) is None


def test_control_characters_in_names_become_backslash_letters_but_stay_raw_in_string_fields() -> None:
    line = encode_point("a\nb", {"t\t": "v\r"}, {"s": "x\ny"}, 1)
    assert line == 'a\\nb,t\\t=v\\r s="x\ny" 1'
    assert line == _point_line("a\nb", {"t\t": "v\r"}, {"s": "x\ny"}, 1)
    # Valid line protocol (InfluxDB's scanner keeps quoted newlines), but a reader splitting on "\n" must not.
    assert validate_line(line) is None


def test_encode_point_refuses_integers_and_timestamps_outside_int64_and_unsupported_types() -> None:
    assert encode_point("m", {}, {"x": INT64_MAX}, INT64_MIN) == f"m x={INT64_MAX}i {INT64_MIN}"
    with pytest.raises(ValueError, match="64-bit"):
        encode_point("m", {}, {"x": INT64_MAX + 1}, None)
    with pytest.raises(ValueError, match="64-bit"):
        encode_point("m", {}, {"x": 1}, INT64_MAX + 1)
    with pytest.raises(ValueError, match="not an integer"):
        encode_point("m", {}, {"x": 1}, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not supported"):
        encode_point("m", {}, {"x": [1]}, None)  # type: ignore[dict-item]


def test_encode_point_keeps_its_escape_caches_bounded() -> None:
    for n in range(lp._CACHE_LIMIT + 10):
        encode_point("m", {"id": f"v{n}"}, {"x": n}, None)
    assert len(lp._tag_value_cache) <= lp._CACHE_LIMIT


# ---------------------------------------------------------------------------------------------------
# Property 2: what Point writes for usable input is valid line protocol, and what it writes for
# unusable input is rejected (with the one documented exception).


@PROPERTY
@given(
    measurement=names,
    tags=tag_sets,
    fields=st.dictionaries(names, field_values, min_size=1, max_size=4),
    timestamp=st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
)
def test_every_line_point_writes_for_usable_input_passes_validate_line(
    measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int
) -> None:
    # The filter is exactly the list of cases encode_point refuses, each shown in an example above.
    assume(not _point_output_problems(measurement, tags, fields, timestamp))
    line = _point_line(measurement, tags, fields, timestamp)
    assume(line)  # no field has a value: Point writes nothing
    assert validate_line(line) is None
    assert validate_line(line, require_timestamp=False) is None
    without_time = _point_line(measurement, tags, fields, None)
    assert validate_line(without_time, require_timestamp=False) is None
    assert validate_line(without_time) == "missing timestamp"


@PROPERTY
@given(
    measurement=st.one_of(st.sampled_from(["", "#m", "m\\", "m"]), names),
    tags=st.dictionaries(st.one_of(st.sampled_from(["k\\", "t"]), names), tag_values, max_size=3),
    fields=st.dictionaries(
        st.one_of(st.sampled_from(["", "f\\", "a\\=b", "a\\ b"]), names), field_values, min_size=1, max_size=4
    ),
    timestamp=st.integers(min_value=-(2**64), max_value=2**64),
)
def test_lines_point_writes_for_unusable_input_fail_validate_line_unless_the_measurement_swallows_tags(
    measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int
) -> None:
    problems = _point_output_problems(measurement, tags, fields, timestamp)
    line = _point_line(measurement, tags, fields, timestamp)
    assume(problems and line)
    event(", ".join(sorted(problems)))
    if problems == {MEASUREMENT_SWALLOWS_TAGS}:
        assert validate_line(line) is None
    else:
        assert validate_line(line) is not None


# ---------------------------------------------------------------------------------------------------
# Property 3: invalid lines get a reason naming what is wrong; the fast path never disagrees.


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("cpu", "missing field set"),
        ("cpu,host=a", "missing field set"),
        ("cpu 1700000000000000000", "missing field set"),
        ("cpu ", "missing field set"),
        ("cpu x=abc 1", "field 'x': value 'abc' is not a number, boolean or quoted string"),
        ("cpu x=NaN 1", "value 'NaN' is not a number"),
        ("cpu x=inf 1", "value 'inf' is not a number"),
        ("cpu x=1.5i 1", "value '1.5i' is not a number"),
        ("cpu x=1e3i 1", "value '1e3i' is not a number"),
        ("cpu x=tru 1", "value 'tru' is not a number"),
        ("cpu x=1_000 1", "value '1_000' is not a number"),
        ("cpu x=0x10 1", "value '0x10' is not a number"),
        ("cpu x=9223372036854775808i 1", "out of the signed 64-bit integer range"),
        ("cpu x=18446744073709551616u 1", "out of the unsigned 64-bit integer range"),
        ("cpu x=-1u 1", "out of the unsigned 64-bit integer range"),
        ("cpu x=1e309 1", "out of the float64 range"),
        ("cpu,host name=a x=1 1", "unescaped space in tag set"),
        ("cpu,host=a b x=1 1", "unescaped space in tag set"),
        ("my cpu x=1 1", "unescaped space in measurement"),
        ("cpu x=1", "missing timestamp"),
        ("cpu x=1 abc", "timestamp 'abc' is not an integer"),
        ("cpu x=1 1.5", "timestamp '1.5' is not an integer"),
        ("cpu x=1 9223372036854775808", "does not fit in a signed 64-bit integer"),
        ("cpu x=1 1 2", "unexpected text after the timestamp"),
        ("cpu x=1  1", "more than one space before the timestamp"),
        ("cpu x=1 ", "trailing space"),
        ('cpu msg="hello 1', "unterminated string field 'msg'"),
        ('cpu msg="a\\" 1', "unterminated string field 'msg'"),
        ('cpu x="a"b 1', "after the closing quote"),
        (" x=1 1", "measurement is empty"),
        (",host=a x=1 1", "measurement is empty"),
        ("", "measurement is empty"),
        ("#cpu x=1 1", "comment"),
        ("cpu,=a x=1 1", "tag key is empty"),
        ("cpu,,a=b x=1 1", "tag key is empty"),
        ("cpu,host= x=1 1", "tag 'host' has an empty value"),
        ("cpu,host x=1 1", "unescaped space in tag set"),
        ("cpu,host,a=b x=1 1", "tag 'host' has no '='"),
        ("cpu,host=a=b x=1 1", "unescaped '=' in the value of tag 'host'"),
        ("cpu =1 1", "missing field key"),
        ("cpu x=1,=2 1", "missing field key"),
        ("cpu x=1, 1", "missing field key"),
        ("cpu x=1, y=2 1", "missing field key"),
        ("cpu  x=1 1", "more than one space before the field set"),
        ("cpu x= 1", "field 'x' has no value"),
        ("cpu x=,y=1 1", "field 'x' has no value"),
        ("cpu x=1,y 1", "field 'y' has no '='"),
        ("cpu\\", "backslash"),
        ("cpu,t=v\\", "backslash"),
        ("cpu x\\", "backslash"),
        ("cpu a\\\\ b=1 1", "even run of backslashes"),
        ("cpu,host=a\nb x=1 1", "unescaped newline in the tag value"),
        ("cp\nu x=1 1", "unescaped newline in the measurement"),
    ],
)
def test_validate_line_explains_what_is_wrong_with_an_invalid_line(line: str, reason: str) -> None:
    assert reason in (validate_line(line) or "")
    assert reason in (validate_line(line, require_timestamp=False) or "") or reason == "missing timestamp"


@pytest.mark.parametrize(
    "line",
    [
        "cpu,host=h1,region=eu usage=0.5,idle=99i 1700000000000000000",
        "cpu x=1.,y=.5,z=-1e3,w=1E+5,v=-.5e-3 -5",
        "cpu a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE 0",
        "cpu u=0u,v=18446744073709551615u,i=-9223372036854775808i,j=9223372036854775807i 9223372036854775807",
        "cpu x=1e308,y=123456789012345678901234567890 -9223372036854775808",
        'cpu s="",t="a,b c=d",u="q\\"uote\\\\",v="back\\slash",w="new\nline" 1',
        "c\\,p\\ u,t\\,a\\ g\\==v\\,a\\ l\\= f\\,i\\ e\\=ld=1 1",
        "cpu\\\\ load y=1 1",  # measurement "cpu\\ load": a space after any backslash is escaped
        "cpu,path=C:\\  x=1 1",  # Point's tag value with a trailing backslash
        "cpu a\\b=1,c\\\\d=2,e\\\\\\ f=3 1",
        "\\#not-a-comment x=1 1",
        'm=a"b,t"=v" f"=1 1',
        "cpu x=00000000000000000000000001i 00000000000000000000001",
    ],
)
def test_validate_line_accepts_valid_lines_including_escapes_and_edge_numbers(line: str) -> None:
    assert validate_line(line) is None
    assert lp._diagnose(line, True) is None


def test_validate_line_requires_a_timestamp_only_when_asked_to() -> None:
    assert validate_line("cpu x=1") == "missing timestamp"
    assert validate_line("cpu x=1", require_timestamp=True) == "missing timestamp"
    assert validate_line("cpu x=1", require_timestamp=False) is None
    assert validate_line('cpu,t=a x=1i,s="a b"', require_timestamp=False) is None
    assert validate_line("cpu x=1 123", require_timestamp=False) is None
    assert validate_line("cpu x=1 abc", require_timestamp=False) == "timestamp 'abc' is not an integer"


def test_validate_line_keeps_long_values_out_of_its_reasons() -> None:
    reason = validate_line(f"cpu x={'a' * 10_000} 1")
    assert reason is not None
    assert len(reason) < 200


_LP_ALPHABET = st.sampled_from(list('ab,= "\\#\n.-019eEiutTfF'))


@st.composite
def mutated_point_lines(draw: st.DrawFn) -> str:
    tags = draw(st.dictionaries(names, names, max_size=2))
    fields = draw(st.dictionaries(names, field_values, min_size=1, max_size=3))
    line = _point_line(draw(names.filter(bool)), tags, fields, draw(st.integers(INT64_MIN, INT64_MAX)))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(line)))
        cut = draw(st.integers(0, 2))
        line = line[:at] + draw(st.text(_LP_ALPHABET, max_size=2)) + line[at + cut :]
    return line


@PROPERTY
@given(line=st.one_of(st.text(_LP_ALPHABET, max_size=40), mutated_point_lines()))
def test_the_fast_regex_never_accepts_a_line_the_exact_scanner_rejects(line: str) -> None:
    # validate_line answers from the scanner whenever the regex says no, so this makes the regex a pure
    # optimisation: validate_line(line) is always what the scanner alone would say.
    for require_timestamp in (True, False):
        exact = lp._diagnose(line, require_timestamp)
        assert validate_line(line, require_timestamp=require_timestamp) == exact
        assert exact is None or (isinstance(exact, str) and exact)


# ---------------------------------------------------------------------------------------------------
# Property 4: convert_field, kind by kind.


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        ("1.5", "float", "1.5"),
        ("2", "float", "2"),
        ("-0", "float", "-0"),
        (" 3.25 ", "float", "3.25"),
        ("1e3", "float", "1000"),
        ("1e16", "float", "1e+16"),
        ("1_000.5", "float", "1000.5"),
        (".5", "float", "0.5"),
        ("42", "int", "42i"),
        ("-42", "int", "-42i"),
        ("+7", "int", "7i"),
        ("9223372036854775807", "int", "9223372036854775807i"),
        ("-9223372036854775808", "int", "-9223372036854775808i"),
        ("0", "uint", "0u"),
        ("18446744073709551615", "uint", "18446744073709551615u"),
        ("true", "bool", "true"),
        ("TRUE", "bool", "true"),
        ("t", "bool", "true"),
        ("T", "bool", "true"),
        ("1", "bool", "true"),
        ("Yes", "bool", "true"),
        ("false", "bool", "false"),
        ("F", "bool", "false"),
        ("0", "bool", "false"),
        ("no", "bool", "false"),
        (" NO ", "bool", "false"),
        ("hello", "string", '"hello"'),
        ("", "string", '""'),
        ('say "hi" \\o/', "string", '"say \\"hi\\" \\\\o/"'),
        ("a,b c=d\n", "string", '"a,b c=d\n"'),
    ],
)
def test_convert_field_renders_good_cells_as_line_protocol_values(
    raw: str, kind: lp.FieldKind, expected: str
) -> None:
    assert convert_field(raw, kind) == expected
    assert validate_line(f"m x={expected} 1") is None


@pytest.mark.parametrize(
    ("raw", "kind", "message"),
    [
        ("abc", "float", "'abc' is not a float"),
        ("", "float", "'' is not a float"),
        ("1,5", "float", "is not a float"),
        ("nan", "float", "not a finite float"),
        ("-inf", "float", "not a finite float"),
        ("Infinity", "float", "not a finite float"),
        ("1e400", "float", "not a finite float"),
        ("1.5", "int", "'1.5' is not an integer"),
        ("1e3", "int", "is not an integer"),
        ("abc", "int", "'abc' is not an integer"),
        ("", "int", "is not an integer"),
        ("9223372036854775808", "int", "signed 64-bit"),
        ("-9223372036854775809", "int", "signed 64-bit"),
        ("-1", "uint", "negative"),
        ("1.0", "uint", "is not an integer"),
        ("18446744073709551616", "uint", "unsigned 64-bit"),
        ("maybe", "bool", "'maybe' is not a boolean"),
        ("", "bool", "is not a boolean"),
        ("2", "bool", "is not a boolean"),
        ("y", "bool", "is not a boolean"),
    ],
)
def test_convert_field_rejects_bad_cells_with_a_message_naming_the_problem(
    raw: str, kind: lp.FieldKind, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_field(raw, kind)


def test_convert_field_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown field kind"):
        convert_field("1", "decimal")  # type: ignore[arg-type]


def test_convert_field_keeps_huge_cells_out_of_its_messages() -> None:
    with pytest.raises(ValueError) as info:
        convert_field("x" * 100_000, "float")
    assert len(str(info.value)) < 200


@PROPERTY
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_convert_field_float_round_trips_every_finite_float(x: float) -> None:
    text = convert_field(repr(x), "float")
    assert text == format_float(x)
    assert float(text) == x
    assert validate_line(f"m x={text} 1") is None


@PROPERTY
@given(n=st.integers(min_value=-(2**65), max_value=2**65))
def test_convert_field_integers_accept_exactly_their_64_bit_range(n: int) -> None:
    for kind, low, high, suffix in (("int", INT64_MIN, INT64_MAX, "i"), ("uint", 0, UINT64_MAX, "u")):
        if low <= n <= high:
            text = convert_field(str(n), kind)  # type: ignore[arg-type]
            assert text == f"{n}{suffix}"
            assert validate_line(f"m x={text} 1") is None
        else:
            with pytest.raises(ValueError):
                convert_field(str(n), kind)  # type: ignore[arg-type]
            assert validate_line(f"m x={n}{suffix} 1") is not None


@PROPERTY
@given(raw=st.text(max_size=10))
def test_convert_field_output_is_always_a_valid_field_value(raw: str) -> None:
    for kind in ("float", "int", "uint", "string", "bool"):
        try:
            text = convert_field(raw, kind)
        except ValueError:
            continue
        assert validate_line(f"m x={text} 1") is None, (kind, text)
