"""How a record's time becomes an integer timestamp: RFC 3339, an epoch, or a strftime pattern read in
a time zone.

Shared by the worker, which converts every row (``workers/mapping.py``), and the producer's preflight,
which converts the first rows of a file and suggests what to try when none converts
(``producers/suggest.py``). ``time_parser`` builds the one function a mapping converts each time with;
everything that can be decided once (the pattern's check, the zone) is decided there, not per row.

Local times (a pattern without ``%z``, read in ``--timezone``) are refused when they do not exist (the
hour the clocks skip in spring), and resolved by ``--ambiguous`` when they exist twice (the hour they
repeat in autumn). The default refuses those too: a file that holds both 01:30s of a fall-back night
would otherwise map both to one instant, and the second point would overwrite the first without a word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Precision = Literal["ns", "us", "ms", "s"]
Ambiguous = Literal["earliest", "latest", "reject"]
AMBIGUOUS: tuple[Ambiguous, ...] = ("earliest", "latest", "reject")
NAMED_FORMATS: Final = ("rfc3339", "epoch")
NS_PER: dict[Precision, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)
_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))"
)
# The strptime directives a pattern may use: the ones that read a date, a time of day, a fraction or an
# offset. %Z is left out on purpose: strptime reads only "UTC", "GMT" and the machine's own zone names.
_DIRECTIVES: Final = frozenset("YymdjHIMSfpbBaAz%")
_DIRECTIVE: Final = re.compile(r"%(.)", re.DOTALL)


def rfc3339_ns(text: str) -> int:
    """Exact nanoseconds since the epoch (datetime would round to microseconds)."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"time '{text}' is not RFC 3339 (e.g. 2024-01-02T03:04:05.123Z)")
    y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"time '{text}' is out of range")
    days = date(y, mo, d).toordinal() - _EPOCH_ORDINAL  # raises ValueError for 2024-02-30
    secs = days * 86_400 + h * 3_600 + mi * 60 + s
    if m.group(9):
        offset = int(m.group(10)) * 3_600 + int(m.group(11)) * 60
        secs -= offset if m.group(9) == "+" else -offset
    return secs * 1_000_000_000 + int((m.group(7) or "").ljust(9, "0"))


def epoch(value: object) -> int:
    """An integer epoch, as a JSON number (an integral float too) or as digits."""
    if isinstance(value, bool):
        raise ValueError(f"time {value!r} is not an integer epoch")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    raise ValueError(f"time '{value}' is not an integer epoch")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a ``--time-format`` strftime pattern, or None."""
    directives = _DIRECTIVE.findall(pattern.replace("%%", ""))
    if pattern.replace("%%", "").endswith("%") or not directives:
        return f"time format '{pattern}' is not rfc3339, epoch or a strftime pattern such as '%Y/%m/%d'"
    unknown = sorted({d for d in directives if d not in _DIRECTIVES})
    if unknown:
        return f"time format '{pattern}': %{', %'.join(unknown)} cannot be read (use %Y %m %d %H %M %S ...)"
    if "Y" not in directives and "y" not in directives:
        return f"time format '{pattern}' has no year (%Y or %y): every time would fall in 1900"
    return None


def has_offset(time_format: str) -> bool:
    """Whether times in this format say their own offset from UTC (``--timezone`` does not apply)."""
    return time_format in NAMED_FORMATS or "z" in _DIRECTIVE.findall(time_format.replace("%%", ""))


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (UTC itself as ``datetime.UTC``, the fast path)."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone '{name}' is not an IANA zone name (e.g. Europe/Berlin)") from None


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def localize(naive: datetime, where: ZoneInfo, ambiguous: Ambiguous, text: str) -> datetime:
    """``naive`` as a wall-clock time in ``where``; ValueError(reason) in the spring-forward gap, and in
    the fall-back hour unless ``ambiguous`` picks its earliest or latest occurrence."""
    early, late = naive.replace(tzinfo=where, fold=0), naive.replace(tzinfo=where, fold=1)
    before, after = early.utcoffset(), late.utcoffset()
    if before == after:
        return early
    if early.astimezone(UTC).astimezone(where).replace(tzinfo=None) != naive:
        raise ValueError(
            f"time '{text}' does not exist in {where.key}: the clocks skip it "
            f"(from {_offset(before)} to {_offset(after)})"
        )
    if ambiguous == "reject":
        raise ValueError(
            f"time '{text}' is ambiguous in {where.key}: it occurs twice ({_offset(before)}, then "
            f"{_offset(after)}); choose with --ambiguous earliest or latest"
        )
    return early if ambiguous == "earliest" else late


def _ns(moment: datetime) -> int:
    delta = moment - (_EPOCH_NAIVE if moment.tzinfo is None else _EPOCH_UTC)
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1_000


def pattern_ns(text: str, pattern: str, where: tzinfo = UTC, ambiguous: Ambiguous = "reject") -> int:
    """Nanoseconds since the epoch of ``text`` read with the strftime ``pattern``; a time without an
    offset is a wall-clock time in ``where``."""
    try:
        moment = datetime.strptime(text.strip(), pattern)
    except ValueError:
        raise ValueError(f"time '{text}' does not match --time-format '{pattern}'") from None
    if moment.tzinfo is None and isinstance(where, ZoneInfo):
        moment = localize(moment, where, ambiguous, text)
    return _ns(moment)


TimeParser = Callable[[object], int]  # a record's time value -> timestamp in the precision, or ValueError


def time_parser(
    time_format: str, precision: Precision, *, timezone: str = "UTC", ambiguous: Ambiguous = "reject"
) -> TimeParser:
    """The function that converts each time value of a mapping to an integer in ``precision`` units
    (RFC 3339 and patterns floored to it; epochs are in it already)."""
    divisor = NS_PER[precision]
    if time_format == "epoch":
        return epoch
    if time_format == "rfc3339":
        return lambda value: rfc3339_ns(str(value)) // divisor
    problem = pattern_problem(time_format)
    if problem:
        raise ValueError(problem)
    where = zone(timezone)
    return lambda value: pattern_ns(str(value), time_format, where, ambiguous) // divisor
