"""What to try when the first records of a file do not map: the option a user most likely got wrong,
found by trying the alternatives on the records themselves (``producers/preflight.py`` asks).

Each function returns a hint such as ``try --time-format '%Y/%m/%d'``, or None when nothing it tries
fits: a hint is given only when it makes the sampled values read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Final

from tsbatch.descriptor import PRECISIONS, Precision
from tsbatch.times import epoch, has_offset, pattern_ns, rfc3339_ns

# Telemetry is stamped between these; a timestamp outside under one unit but inside under another
# is that other unit (the range spans a factor of 230, less than the 1000 between two units).
EARLIEST_NS = 31_536_000 * 10**9  # 1971-01-01T00:00:00Z
LATEST_NS = 7_258_118_400 * 10**9  # 2200-01-01T00:00:00Z
DIGITS: dict[Precision, int] = {"s": 0, "ms": 3, "us": 6, "ns": 9}  # fraction digits each unit holds
NS_PER: dict[Precision, int] = {p: 10 ** (9 - d) for p, d in DIGITS.items()}

# The patterns tried on a time that does not read, in this order: ISO 8601 without an offset, then
# with one, dates with slashes (year first, then day first, then month first: 01/02/2024 fits both,
# and both are named), dotted European dates, month names, compact forms. Seen in NOAA, utility and
# PLC exports; a pattern is suggested only if it reads every sampled value.
PATTERNS: Final = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%b %d %Y",
    "%b %d %Y %H:%M:%S",
    "%b %d, %Y",
    "%B %d %Y",
    "%B %d, %Y",
    "%d %b %Y",
    "%d %b %Y %H:%M:%S",
    "%d-%b-%Y",
    "%d-%b-%Y %H:%M:%S",
    "%Y%m%d",
    "%Y%m%dT%H%M%S",
    "%Y%m%d%H%M",
)
DELIMITERS: Final = (",", ";", "\t", "|", " ")
MAX_NAMED = 2  # patterns named in one hint: 01/02/2024 fits two; more is noise


def plausible(value: int, precision: Precision) -> bool:
    return EARLIEST_NS <= value * NS_PER[precision] < LATEST_NS


def likely_precisions(values: Sequence[int]) -> list[Precision]:
    """The units under which every one of ``values`` falls between 1971 and 2200."""
    return [p for p in PRECISIONS if values and all(plausible(v, p) for v in values)]


def _reads(values: Iterable[str], pattern: str) -> bool:
    try:
        for value in values:
            pattern_ns(value, pattern)
    except ValueError:
        return False
    return True


def _epochs(values: Sequence[object]) -> list[int] | None:
    try:
        return [epoch(v) for v in values]
    except ValueError:
        return None


def time_format(values: Sequence[object], current: str, *, timezone: str = "UTC") -> str | None:
    """The ``--time-format`` (and ``--precision``, ``--timezone``) that reads every one of ``values``,
    time values that do not read under ``current``."""
    if not values:
        return None
    numbers = _epochs(values) if current != "epoch" else None
    units = likely_precisions(numbers or [])
    if numbers is not None and units:
        return f"try --time-format epoch --precision {units[0]}"
    texts = [str(v).strip() for v in values]
    if current != "rfc3339" and _all_rfc3339(texts):
        return "try --time-format rfc3339"
    fits = [p for p in PATTERNS if p != current and _reads(texts, p)][:MAX_NAMED]
    if not fits:
        return "try --time-format epoch" if numbers is not None else None
    hint = "try --time-format " + " or ".join(f"'{p}'" for p in fits)
    if not has_offset(fits[0]) and timezone == "UTC":
        hint += " (these times have no offset: add --timezone NAME unless they are UTC)"
    return hint


def looks_like_time(text: str) -> bool:
    """Whether ``text`` reads as a time in any format tried here (a header cell that does is data)."""
    numbers = _epochs([text])
    if numbers is not None:
        return bool(likely_precisions(numbers))
    return _all_rfc3339([text]) or any(_reads([text], p) for p in PATTERNS)


def _all_rfc3339(texts: Iterable[str]) -> bool:
    try:
        for text in texts:
            rfc3339_ns(text)
    except ValueError:
        return False
    return True


def delimiter(line: str, *, current: str, names: Sequence[str] = (), width: int = 0) -> str | None:
    """The ``--delimiter`` under which ``line`` holds every one of ``names`` (a header) or splits into
    ``width`` cells (a data row)."""
    for candidate in DELIMITERS:
        if candidate == current or candidate not in line:
            continue
        try:
            cells = [c.strip() for c in next(csv.reader([line], delimiter=candidate))]
        except (csv.Error, StopIteration):
            continue
        if (names and set(names) <= set(cells)) or (width and len(cells) == width):
            shown = "'\\t'" if candidate == "\t" else f"'{candidate}'"
            return f"try --delimiter {shown}"
    return None
