"""A look at the first records of each file before anything is enqueued: does the mapping read them,
and are their timestamps in the unit ``--precision`` says?

A wrong option is not an error anyone reports: with a wrong ``--time-format``, ``--timezone`` or
``--delimiter`` every row of a file is dead-lettered one by one (1,461 entries for one NOAA file, issue
12) and the job "succeeds" with 0 points; milliseconds read as nanoseconds land in January 1970. So
``tsbatch produce`` maps the first ``producer.preflight_rows`` records of each file as the worker would
(``tsbatch/records.py``, ``tsbatch/times.py``) and *stops*, enqueueing nothing, when none of them maps
or when every timestamp fits another unit better, with what to try (``producers/suggest.py``). What
may be meant is only *warned* about: some timestamps out of range, RFC 3339 times finer than the
precision (floored, so rows in the same second overwrite each other, issue #8).

Field values are not converted here: their rules live with the worker's line-protocol encoder, and a
bad value is a row's problem (dead-lettered with its reason), not a file's. The checks are pure
functions over the first bytes of a file; ``check_file`` only reads them.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.constants import PREFLIGHT_ROWS
from producers import suggest
from producers.planner import UTF8_BOM, expand, header_names
from tsbatch.annotated_csv import AnnotatedCsvParser
from tsbatch.descriptor import Format, Mapping, Precision
from tsbatch.errors import SourceError
from tsbatch.records import csv_cells, json_record
from tsbatch.sources import open_source
from tsbatch.times import time_parser

SAMPLE_LINES = PREFLIGHT_ROWS  # records looked at per file (producer.preflight_rows)
SAMPLE_BYTES = 1 << 20  # read at most 1 MiB: 1,000 lines of up to 1 KiB each

DIGITS = suggest.DIGITS
NS_PER = suggest.NS_PER
EARLIEST_NS = suggest.EARLIEST_NS
LATEST_NS = suggest.LATEST_NS

_FRACTION = re.compile(r"\d\d:\d\d:\d\d\.(\d+)")


@dataclass(frozen=True, slots=True)
class Finding:
    """What the look at a file found: a warning, or (``stop``) a reason to enqueue nothing."""

    text: str
    stop: bool = False


def numbered_lines(data: bytes, *, complete: bool, limit: int = SAMPLE_LINES) -> list[tuple[int, str]]:
    """Up to ``limit`` non-blank lines of ``data``, the first bytes of a file, with their 1-based line
    numbers; without ``complete`` (the file goes on) the last line may be cut, so it is left out."""
    lines = data.split(b"\n")
    if not complete:
        lines = lines[:-1]
    out = []
    for number, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if line.strip():
            out.append((number, line))
            if len(out) == limit:
                break
    return out


def sample_lines(data: bytes, *, complete: bool, limit: int = SAMPLE_LINES) -> list[str]:
    """``numbered_lines`` without their numbers."""
    return [line for _, line in numbered_lines(data, complete=complete, limit=limit)]


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


def _when(value: int, precision: Precision) -> str:
    ns = value * NS_PER[precision]
    side = "before 1971" if ns < EARLIEST_NS else "after 2200"
    try:
        return f"{datetime.fromtimestamp(ns // 10**9, UTC):%Y-%m-%d} ({side})"
    except (OverflowError, ValueError, OSError):
        return side


def epoch_finding(values: Sequence[int], precision: Precision) -> Finding | None:
    """Integer timestamps that look like another unit than ``precision``: a stop when every one of
    them fits another unit (it names it), else a warning; None when they all fit ``precision``."""
    odd = next((v for v in values if not suggest.plausible(v, precision)), None)
    if odd is None:
        return None
    likely = suggest.likely_precisions(values)
    advice = (
        f"they look like --precision {likely[0]}"
        if likely
        else "no --precision puts them between 1971 and 2200"
    )
    text = f"timestamps such as {odd} read as {_when(odd, precision)} under --precision {precision}; {advice}"
    return Finding(text, stop=bool(likely))


def fraction_warning(texts: Iterable[object], precision: Precision) -> Finding | None:
    """Why RFC 3339 times carry digits that ``precision`` floors away, and which precision keeps them."""
    finest, example = 0, ""
    for text in texts:
        m = _FRACTION.search(str(text))
        if m and len(m.group(1).rstrip("0")) > finest:
            finest, example = len(m.group(1).rstrip("0")), str(text)
    if finest <= DIGITS[precision]:
        return None
    keeps = next(p for p in ("s", "ms", "us", "ns") if DIGITS[p] >= min(finest, 9))
    return Finding(
        f"RFC 3339 times such as {example} have digits finer than --precision {precision}: they would be "
        f"floored, and rows that differ only there would overwrite each other; use --precision {keeps}"
    )


@dataclass(slots=True)
class _Sample:
    """What mapping the sampled records found: the time values of those that map, and for those that
    do not, the first one's line and reason and the time values that did not read."""

    mapped: list[object]
    first: tuple[int, str] | None = None
    bad_times: list[object] | None = None
    bad_width: int = 0  # a row's cell count, when rows have the wrong number of cells


def _record(line: str, format: Format, mapping: Mapping) -> dict[str, object]:
    if format == "jsonl":
        return json_record(line)
    cells = csv_cells(line, mapping.delimiter)
    if len(cells) != len(mapping.columns):
        raise ValueError(f"{len(cells)} columns, header has {len(mapping.columns)}")
    return dict(zip(mapping.columns, cells, strict=True))


def map_records(
    lines: Sequence[tuple[int, str]], *, format: Format, mapping: Mapping, precision: Precision
) -> _Sample:
    """Each record read and checked as the worker checks it, but for field values: its measurement
    column, a field with a value, its time (``tsbatch/times.py``)."""
    parse = time_parser(
        mapping.time_format, precision, timezone=mapping.timezone, ambiguous=mapping.ambiguous
    )
    sample = _Sample(mapped=[], bad_times=[])
    for number, line in lines:
        time_read = False
        try:
            record = _record(line, format, mapping)
            if mapping.measurement_column and record.get(mapping.measurement_column) in (None, ""):
                raise ValueError(f"column '{mapping.measurement_column}' (measurement) is empty")
            if all(record.get(f.name) in (None, "") for f in mapping.field_columns):
                raise ValueError("no field has a value")
            value = record.get(mapping.time_column)
            if value is None or value == "":
                raise ValueError(f"column '{mapping.time_column}' (time) is empty")
            time_read = True
            parse(value)
        except ValueError as e:
            if sample.first is None:
                sample.first = (number, str(e))
            if time_read and sample.bad_times is not None:
                sample.bad_times.append(value)
            if str(e).endswith(f"header has {len(mapping.columns)}"):
                sample.bad_width = len(mapping.columns)
            continue
        sample.mapped.append(value)
    return sample


def _hint(sample: _Sample, lines: Sequence[tuple[int, str]], mapping: Mapping) -> str | None:
    """What to try when no record mapped: the delimiter that splits the rows into the header's
    columns, else the time format that reads the times."""
    if sample.bad_width:
        hint = suggest.delimiter(lines[0][1], current=mapping.delimiter, width=sample.bad_width)
        if hint:
            return hint
    return suggest.time_format(sample.bad_times or [], mapping.time_format, timezone=mapping.timezone)


def _header_problem(header: str, mapping: Mapping) -> tuple[Mapping, Finding | None]:
    """The mapping with the header's columns, or why the header does not name the mapped columns."""
    columns = header_names(header, mapping.delimiter)
    wanted = [*mapping.tag_columns, *(f.name for f in mapping.field_columns), mapping.time_column]
    wanted += [mapping.measurement_column] if mapping.measurement_column else []
    missing = [c for c in wanted if c not in columns]
    if not missing:
        return mapping.model_copy(update={"columns": columns}), None
    hint = suggest.delimiter(header, current=mapping.delimiter, names=wanted)
    if hint is None and any(map(suggest.looks_like_time, columns)):
        hint = "the first line looks like data: give the column names with --columns a,b,c"
    text = f"line 1: header lacks column(s) {', '.join(missing)}" + (f"; {hint}" if hint else "")
    return mapping, Finding(text, stop=True)


def mapping_finding(
    data: bytes, *, format: Format, precision: Precision, mapping: Mapping, complete: bool, rows: int
) -> Finding | None:
    """CSV or JSON Lines: a stop when none of the first ``rows`` records maps (the first one's line and
    reason, and what to try), else what the times of those that map are worth a warning for."""
    lines = numbered_lines(data, complete=complete, limit=rows + 1)
    if format == "csv" and not mapping.columns:
        if not lines or lines[0][0] != 1:
            return None  # no header line: planning says so
        mapping, problem = _header_problem(lines[0][1], mapping)
        if problem:
            return problem
        lines = lines[1:]
    lines = lines[:rows]
    sample = map_records(lines, format=format, mapping=mapping, precision=precision)
    if not sample.mapped:
        if sample.first is None:
            return None  # no records: nothing to write, nothing to refuse
        number, reason = sample.first
        hint = _hint(sample, lines, mapping)
        what = f"the first {len(lines)} records do" if len(lines) > 1 else "the first record does"
        text = f"{what} not map; line {number}: {reason}"
        return Finding(text + (f"; {hint}" if hint else ""), stop=True)
    if mapping.time_format == "epoch":
        return epoch_finding(epoch_integers(sample.mapped), precision)
    if mapping.time_format == "rfc3339":
        return fraction_warning(sample.mapped, precision)
    return None


def check(
    data: bytes,
    *,
    format: Format,
    precision: Precision,
    mapping: Mapping | None = None,
    complete: bool = True,
    rows: int = SAMPLE_LINES,
) -> Finding | None:
    """What the first ``rows`` records of a file starting with ``data`` are worth a word for (without
    the file's name), or None."""
    data = data.removeprefix(UTF8_BOM)
    if format == "annotated-csv":
        return fraction_warning(annotated_times(data, complete=complete, limit=rows), precision)
    if format == "lp":
        return epoch_finding(lp_timestamps(sample_lines(data, complete=complete, limit=rows)), precision)
    if mapping is None:
        return None
    return mapping_finding(
        data, format=format, precision=precision, mapping=mapping, complete=complete, rows=rows
    )


def check_file(
    path: Path,
    *,
    roots: Sequence[Path],
    format: Format,
    precision: Precision,
    mapping: Mapping | None = None,
    rows: int = SAMPLE_LINES,
) -> Finding | None:
    """``check`` over the first bytes of ``path``; None if it cannot be used (planning reports that)."""
    try:
        with open_source(path, roots) as src:
            data = os.pread(src.fd, SAMPLE_BYTES, 0)
    except (SourceError, OSError):
        return None
    complete = len(data) < SAMPLE_BYTES
    return check(data, format=format, precision=precision, mapping=mapping, complete=complete, rows=rows)


def check_paths(
    paths: Iterable[str | Path],
    *,
    roots: Sequence[Path],
    format: Format,
    precision: Precision,
    mapping: Mapping | None = None,
    rows: int = SAMPLE_LINES,
) -> Iterator[Finding]:
    """One finding per file worth one, among the files the producer will plan, its text starting with
    the file's name: a directory stands for the files below it (as in ``Producer.submit``); a file
    outside the roots is not read (planning rejects it). Parquet's times are typed: nothing to guess."""
    if format == "parquet":
        return
    for path in expand(paths):
        found = check_file(path, roots=roots, format=format, precision=precision, mapping=mapping, rows=rows)
        if found:
            yield Finding(f"{path}: {found.text}", found.stop)
