"""How one line of CSV or JSON Lines becomes a record, the same way for the worker, which reads every
line of a chunk (``workers/parsers.py``), and for the producer's preflight, which reads a file's first
lines (``producers/preflight.py``). Each raises ValueError(reason)."""

from __future__ import annotations

import csv
import json


def csv_cells(line: str, delimiter: str = ",") -> list[str]:
    """The cells of one CSV line (without its line end). A quoted field may hold the delimiter and
    doubled quotes, never a line end: chunks are cut at line ends, so such a record is refused."""
    if '"' not in line:
        return line.split(delimiter)
    # One reader per quoted line: a stray quote must not swallow the following lines.
    try:
        return next(csv.reader((line,), delimiter=delimiter, strict=True))
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise ValueError(
                "a quoted field does not end on its line (fields holding line breaks are not read)"
            ) from None
        raise ValueError(f"malformed CSV: {e}") from None


def json_record(line: str) -> dict[str, object]:
    """The object on one line of JSON Lines."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    return record
