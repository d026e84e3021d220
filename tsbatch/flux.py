"""Flux for windows: the queries tsbatch sends to InfluxDB 2, rendered from ``config/flux/*.flux``.

InfluxDB OSS has no query parameters (influxdata/docs-v2#5320: the client's ``params`` are an InfluxDB
Cloud feature), so every value is rendered into the text. Each one goes through exactly one function
here that checks its type and writes a whole literal: :func:`flux_string` (escaped), :func:`flux_time`,
:func:`flux_duration`, :func:`flux_column`. Templates (``string.Template``) have slots only for such
finished literals and for fragments built from them; nothing a user wrote reaches a query otherwise.
Anything else (a wrong type, an unknown aggregate, a window that is not one) is a ``ValueError``.

``render_read`` reads a window's raw points (worker mode aggregates them itself);
``render_downsample`` (server mode) has InfluxDB aggregate the window and write the result with
``to()``; ``render_copy`` copies a window's raw points into another bucket. Every output point of a
downsample is stamped at its window's start (``timeSrc: "_start"``), so a re-run overwrites it.

Tests check every rendered query with InfluxData's own Flux parser and type checker
(tests/flux/parse.mjs); none can execute it, since no InfluxDB 2 runs on the development machines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from string import Template
from typing import Final

from config.settings import AGGREGATES
from tsbatch.windows import Definition, iso

__all__ = [
    "AGGREGATE_FNS",
    "flux_column",
    "flux_duration",
    "flux_string",
    "flux_time",
    "render_copy",
    "render_downsample",
    "render_read",
]

_QUANTILE: Final = '(column, tables=<-) => tables |> quantile(q: {q}, column: column, method: "exact_mean")'
AGGREGATE_FNS: Final[Mapping[str, str]] = {
    **{name: name for name in ("mean", "min", "max", "count", "sum", "first", "last", "stddev")},
    # exact_mean: the average of the two values nearest the quantile (Flux's docs), exact; the default
    # (estimate_tdigest) is an estimate that depends on the order the values arrive in.
    "p50": _QUANTILE.format(q="0.5"),
    "p90": _QUANTILE.format(q="0.9"),
    "p95": _QUANTILE.format(q="0.95"),
    "p99": _QUANTILE.format(q="0.99"),
}
"""The ``fn`` of ``aggregateWindow()`` for each aggregate a job may name (config.settings.AGGREGATES)."""

# Flux times are int64 nanoseconds since the epoch: 1677-09-21T00:12:43Z .. 2262-04-11T23:47:16Z.
_MIN_TIME_S: Final = -(2**63) // 10**9 + 1
_MAX_TIME_S: Final = (2**63 - 1) // 10**9

# What a Flux string literal cannot hold as it is: the delimiter, the escape character, control
# characters (a raw newline would be legal, but a query keeps one line per step), and "$". Flux's scanner
# takes "$" and the character after it as one unit unless that is "{" (an interpolation), so in the
# literal "$\"" the "$" swallows the backslash and the quote ends the string. "$" is therefore written as
# the byte escape \x24, like the control characters (\x escapes are bytes: right for ASCII).
_ESCAPE: Final = re.compile(r'[\\"$\x00-\x1f\x7f]')
_NAMED_ESCAPES: Final[Mapping[str, str]] = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_STEP: Final = "\n    |> "


def flux_string(s: str) -> str:
    """A Flux string literal (with its quotes) whose value is exactly ``s``."""
    if not isinstance(s, str):
        raise ValueError(f"a Flux string must be a str, not {type(s).__name__}")
    try:
        s.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{s!r} is not valid Unicode text") from None
    return '"' + _ESCAPE.sub(_escape, s) + '"'


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED_ESCAPES.get(c) or f"\\x{ord(c):02x}"


def flux_time(epoch_s: int) -> str:
    """An RFC 3339 UTC time literal, e.g. ``2026-01-01T00:05:00Z``."""
    _check_int(epoch_s, "time")
    if not _MIN_TIME_S <= epoch_s <= _MAX_TIME_S:
        raise ValueError(f"time {epoch_s} is outside Flux's range (int64 nanoseconds since the epoch)")
    return iso(epoch_s)


def flux_duration(seconds: int) -> str:
    """A Flux duration literal of whole seconds, e.g. ``1h30m``.

    Only h, m and s: a Flux ``d`` is a calendar day in the query's location, not always 86,400 s."""
    _check_int(seconds, "duration")
    if seconds <= 0:
        raise ValueError(f"a duration must be at least 1 s, not {seconds}")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def flux_column(name: str) -> str:
    """The column ``name`` of the row ``r``, e.g. ``r["region"]``: any name is safe inside a string."""
    _check_name(name, "column")
    return f"r[{flux_string(name)}]"


def render_read(defn: Definition, start: int, end: int, *, bucket: str) -> str:
    """The Flux that reads the raw points of the window ``[start, end)`` of ``defn`` from ``bucket``."""
    return _template("read.flux").substitute(_source(defn, start, end, bucket))


def render_downsample(
    defn: Definition, start: int, end: int, *, bucket: str, target_bucket: str, org: str
) -> str:
    """The Flux that aggregates the window ``[start, end)`` of ``defn`` (a downsample) in InfluxDB and
    writes each aggregate as field ``<field>_<aggregate>`` into ``target_bucket``."""
    _check_definition(defn)
    if defn.kind != "downsample" or not defn.aggregates:
        raise ValueError(f"a downsample needs kind 'downsample' and aggregates, not {defn.kind!r}")
    every = flux_duration(defn.every)
    names = [f"agg{aggregate.capitalize()}" for aggregate in defn.aggregates]
    blocks = [
        _template("aggregate.flux").substitute(
            name=name, every=every, fn=AGGREGATE_FNS[aggregate], suffix=flux_string(f"_{aggregate}")
        )
        for name, aggregate in zip(names, defn.aggregates, strict=True)
    ]
    # union() needs at least two streams.
    result = names[0] if len(names) == 1 else f"union(tables: [{', '.join(names)}])"
    return _template("downsample.flux").substitute(
        _source(defn, start, end, bucket),
        aggregates="\n\n".join(block.rstrip("\n") for block in blocks),
        result=result,
        rename=_rename(defn),
        target_bucket=_bucket(target_bucket, "target_bucket"),
        org=_bucket(org, "org"),
    )


def render_copy(defn: Definition, start: int, end: int, *, bucket: str, target_bucket: str, org: str) -> str:
    """The Flux that copies the raw points of the window ``[start, end)`` of ``defn`` (a copy) from
    ``bucket`` into ``target_bucket``."""
    _check_definition(defn)
    if defn.kind != "copy":
        raise ValueError(f"a copy needs kind 'copy', not {defn.kind!r}")
    return _template("copy.flux").substitute(
        _source(defn, start, end, bucket),
        rename=_rename(defn),
        target_bucket=_bucket(target_bucket, "target_bucket"),
        org=_bucket(org, "org"),
    )


# --------------------------------------------------------------------------------------------------


@cache
def _template(name: str) -> Template:
    return Template(files("config").joinpath("flux", name).read_text(encoding="utf-8"))


def _source(defn: Definition, start: int, end: int, bucket: str) -> dict[str, str]:
    """The slots every template shares: the bucket, the window's range and the filters."""
    _check_definition(defn)
    _check_window(defn, start, end)
    filters = [f"r._measurement == {flux_string(defn.measurement)}"]
    if defn.fields:
        filters.append(" or ".join(f"r._field == {flux_string(field)}" for field in defn.fields))
    if defn.tags:
        filters.append(" and ".join(f"{flux_column(k)} == {flux_string(v)}" for k, v in defn.tags.items()))
    return {
        "bucket": _bucket(bucket, "bucket"),
        "start": flux_time(start),
        "stop": flux_time(end),
        "filters": "".join(f"{_STEP}filter(fn: (r) => {predicate})" for predicate in filters),
    }


def _rename(defn: Definition) -> str:
    if defn.output_measurement == defn.measurement:
        return ""
    return f'{_STEP}set(key: "_measurement", value: {flux_string(defn.output_measurement)})'


def _bucket(value: str, what: str) -> str:
    _check_name(value, what)
    return flux_string(value)


def _check_definition(defn: Definition) -> None:
    """Check again what a ``Definition`` validates: one built with ``model_construct`` skips that."""
    if not isinstance(defn, Definition):
        raise ValueError(f"expected a Definition, not {type(defn).__name__}")
    _check_name(defn.measurement, "measurement")
    _check_name(defn.output_measurement, "output_measurement")
    if not isinstance(defn.fields, tuple):
        raise ValueError(f"fields must be a tuple, not {type(defn.fields).__name__}")
    for field in defn.fields:
        _check_name(field, "field")
    if not isinstance(defn.tags, dict):
        raise ValueError(f"tags must be a dict, not {type(defn.tags).__name__}")
    for key, value in defn.tags.items():
        _check_name(key, "tag")
        _check_name(value, "tag value")
    _check_int(defn.every, "every")
    if not isinstance(defn.aggregates, tuple):
        raise ValueError(f"aggregates must be a tuple, not {type(defn.aggregates).__name__}")
    for aggregate in defn.aggregates:
        if aggregate not in AGGREGATES or aggregate not in AGGREGATE_FNS:
            raise ValueError(f"unknown aggregate {aggregate!r}; allowed: {', '.join(AGGREGATES)}")
    if len(set(defn.aggregates)) != len(defn.aggregates):
        raise ValueError("aggregates: listed twice")


def _check_window(defn: Definition, start: int, end: int) -> None:
    _check_int(start, "start")
    _check_int(end, "end")
    if end - start != defn.every or start % defn.every:
        raise ValueError(f"[{start}, {end}) is not a window of {defn.every}s aligned on the epoch")


def _check_int(value: int, what: str) -> None:
    # bool is an int in Python, and True would render as 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an int, not {type(value).__name__}")


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, not {value!r}")
