"""A look at the first lines of each file before it is planned, for timestamps in the wrong unit.

A timestamp in another unit than ``--precision`` is not an error anyone reports: milliseconds read as
nanoseconds land in January 1970, and RFC 3339 times with milliseconds under ``--precision s`` are
floored, so rows in the same second overwrite each other (issue #8). Both are visible in the first
lines, so ``tsbatch produce`` warns (one line per file) and goes on: the user may mean it.

The checks are pure functions over the first bytes of a file; ``check_file`` only reads them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from producers.planner import expand
from tsbatch.annotated_csv import AnnotatedCsvParser
from tsbatch.descriptor import PRECISIONS, Format, Mapping, Precision
from tsbatch.errors import SourceError
from tsbatch.sources import open_source

SAMPLE_LINES = 100  # records looked at per file: enough to see the unit, too few to slow a big job
SAMPLE_BYTES = 1 << 20  # read at most 1 MiB: 100 lines of up to 10 KiB each

DIGITS: dict[Precision, int] = {"s": 0, "ms": 3, "us": 6, "ns": 9}  # fraction digits each unit holds
NS_PER: dict[Precision, int] = {p: 10 ** (9 - d) for p, d in DIGITS.items()}
# Telemetry is stamped between these; a timestamp outside under one unit but inside under another
# is that other unit (the range spans a factor of 230, less than the 1000 between two units).
EARLIEST_NS = 31_536_000 * 10**9  # 1971-01-01T00:00:00Z
LATEST_NS = 7_258_118_400 * 10**9  # 2200-01-01T00:00:00Z

_FRACTION = re.compile(r"\d\d:\d\d:\d\d\.(\d+)")


def sample_lines(data: bytes, *, complete: bool, limit: int = SAMPLE_LINES) -> list[str]:
    """Up to ``limit`` non-blank lines of ``data``, the first bytes of a file; without ``complete``
    (the file goes on) the last line may be cut, so it is left out."""
    lines = data.split(b"\n")
    if not complete:
        lines = lines[:-1]
    out = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if line.strip():
            out.append(line)
            if len(out) == limit:
                break
    return out


def lp_timestamps(lines: Iterable[str]) -> list[int]:
    """The timestamps of line-protocol lines: the last space-separated token, when it is an integer."""
    out = []
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        token = line.rstrip().rsplit(" ", 1)[-1]
        if token.lstrip("-").isdigit() and " " in line.strip():
            out.append(int(token))
    return out


def record_times(lines: Sequence[str], *, format: Format, time_column: str) -> list[object]:
    """The time column's values of CSV (the first line is the header) or JSON Lines records."""
    if format == "csv":
        rows = csv.reader(lines)
        try:
            header = next(rows)
            index = header.index(time_column)
            return [row[index] for row in rows if index < len(row)]
        except (StopIteration, ValueError, csv.Error):  # no header, no such column: planning says so
            return []
    values = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and time_column in record:
            values.append(record[time_column])
    return values


def annotated_times(data: bytes, *, complete: bool, limit: int = SAMPLE_LINES) -> list[str]:
    """The ``_time`` text of the first rows of annotated CSV (rows that do not parse are skipped)."""
    parser = AnnotatedCsvParser(on_error=lambda _: None)
    rows = parser.feed(data if complete else data[: data.rfind(b"\n") + 1])
    if complete:
        rows += parser.close()
    out = []
    for row in rows[:limit]:
        with contextlib.suppress(KeyError):
            out.append(row.text("_time"))
    return out


def epoch_integers(values: Iterable[object]) -> list[int]:
    """The values the worker reads as integer epochs (as ``workers.mapping`` does); others skipped."""
    out = []
    for v in values:
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            out.append(v)
        elif isinstance(v, float) and v.is_integer():
            out.append(int(v))
        elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
            out.append(int(v.strip()))
    return out


def _plausible(value: int, precision: Precision) -> bool:
    return EARLIEST_NS <= value * NS_PER[precision] < LATEST_NS


def _when(value: int, precision: Precision) -> str:
    ns = value * NS_PER[precision]
    side = "before 1971" if ns < EARLIEST_NS else "after 2200"
    try:
        return f"{datetime.fromtimestamp(ns // 10**9, UTC):%Y-%m-%d} ({side})"
    except (OverflowError, ValueError, OSError):
        return side


def epoch_warning(values: Sequence[int], precision: Precision) -> str | None:
    """Why integer timestamps look like another unit than ``precision``, and which one; else None."""
    odd = next((v for v in values if not _plausible(v, precision)), None)
    if odd is None:
        return None
    likely = [p for p in PRECISIONS if all(_plausible(v, p) for v in values)]
    advice = (
        f"they look like --precision {likely[0]}"
        if likely
        else "no --precision puts them between 1971 and 2200"
    )
    return f"timestamps such as {odd} read as {_when(odd, precision)} under --precision {precision}; {advice}"


def fraction_warning(texts: Iterable[object], precision: Precision) -> str | None:
    """Why RFC 3339 times carry digits that ``precision`` floors away, and which precision keeps them."""
    finest, example = 0, ""
    for text in texts:
        m = _FRACTION.search(str(text))
        if m and len(m.group(1).rstrip("0")) > finest:
            finest, example = len(m.group(1).rstrip("0")), str(text)
    if finest <= DIGITS[precision]:
        return None
    keeps = next(p for p in ("s", "ms", "us", "ns") if DIGITS[p] >= min(finest, 9))
    return (
        f"RFC 3339 times such as {example} have digits finer than --precision {precision}: they would be "
        f"floored, and rows that differ only there would overwrite each other; use --precision {keeps}"
    )


def check(
    data: bytes,
    *,
    format: Format,
    precision: Precision,
    mapping: Mapping | None = None,
    complete: bool = True,
) -> str | None:
    """The warning for a file starting with ``data`` (without its name), or None."""
    if format == "annotated-csv":
        return fraction_warning(annotated_times(data, complete=complete), precision)
    header = 1 if format == "csv" else 0
    lines = sample_lines(data, complete=complete, limit=SAMPLE_LINES + header)
    if format == "lp":
        return epoch_warning(lp_timestamps(lines), precision)
    if mapping is None:
        return None
    values = record_times(lines, format=format, time_column=mapping.time_column)
    if mapping.time_format == "epoch":
        return epoch_warning(epoch_integers(values), precision)
    return fraction_warning(values, precision)


def check_file(
    path: Path,
    *,
    roots: Sequence[Path],
    format: Format,
    precision: Precision,
    mapping: Mapping | None = None,
) -> str | None:
    """``check`` over the first bytes of ``path``; None if it cannot be used (planning reports that)."""
    try:
        with open_source(path, roots) as src:
            data = os.pread(src.fd, SAMPLE_BYTES, 0)
    except (SourceError, OSError):
        return None
    complete = len(data) < SAMPLE_BYTES
    return check(data, format=format, precision=precision, mapping=mapping, complete=complete)


def check_paths(
    paths: Iterable[str | Path],
    *,
    roots: Sequence[Path],
    format: Format,
    precision: Precision,
    mapping: Mapping | None = None,
) -> Iterator[str]:
    """One warning per file worth one, among the files the producer will plan: a directory stands for
    the files below it (as in ``Producer.submit``); a file outside the roots is not read (planning
    rejects it). Parquet's times are typed: nothing to guess."""
    if format == "parquet":
        return
    for path in expand(paths):
        warning = check_file(path, roots=roots, format=format, precision=precision, mapping=mapping)
        if warning:
            yield f"{path}: {warning}"
