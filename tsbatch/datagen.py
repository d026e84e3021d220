"""Deterministic telemetry for the demo, the tests and the benchmark.

``series`` hosts each report ``points_per_series`` points, one a second from 2024-01-01T00:00:00Z, with a
float field ``usage`` and an integer field ``count``. The same points can be written as line protocol,
CSV or JSON Lines, and ``expected`` tells what any of them must read back as.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MEASUREMENT = "cpu"
Kind = Literal["lp", "csv", "jsonl"]
CSV_HEADER = "time,host,region,usage,count"


def value(i: int, k: int) -> tuple[float, int]:
    """The (usage, count) of host ``i`` at step ``k``."""
    return ((i * 7919 + k * 104729) % 10_000) / 100.0, (i * 31 + k) % 1000


def host(i: int) -> str:
    return f"h{i:05d}"


def region(i: int) -> str:
    return f"r{i % 10}"


def _rfc3339(ms: int) -> str:
    secs, milli = divmod(ms, 1000)
    days, rem = divmod(secs, 86_400)
    day = _dt.date.fromordinal(_dt.date(1970, 1, 1).toordinal() + days)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{day.isoformat()}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


def lines(kind: Kind, *, series: int, points_per_series: int) -> Iterator[str]:
    """Time-major order, as a collector would write them."""
    if kind == "csv":
        yield CSV_HEADER
    for k in range(points_per_series):
        ms = BASE_MS + k * 1000
        for i in range(series):
            usage, count = value(i, k)
            if kind == "lp":
                tags = f"host={host(i)},region={region(i)}"
                yield f"{MEASUREMENT},{tags} usage={usage},count={count}i {ms * 1_000_000}"
            elif kind == "csv":
                yield f"{_rfc3339(ms)},{host(i)},{region(i)},{usage},{count}"
            else:
                yield json.dumps(
                    {"time": ms, "host": host(i), "region": region(i), "usage": usage, "count": count}
                )


def write(path: Path, kind: Kind, *, series: int, points_per_series: int) -> int:
    """Write the data set to ``path``; returns the number of points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1 << 20) as f:
        buf: list[str] = []
        for line in lines(kind, series=series, points_per_series=points_per_series):
            buf.append(line)
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return series * points_per_series


# The CLI options that map the CSV and JSON Lines forms (the JSON time is epoch milliseconds).
_MAPPING_ARGS = ("--measurement", MEASUREMENT, "--tag-columns", "host,region",
                 "--field-columns", "usage:float,count:int", "--time-column", "time")  # fmt: skip
CSV_ARGS = ("--format", "csv", *_MAPPING_ARGS, "--time-format", "rfc3339")
JSONL_ARGS = ("--format", "jsonl", *_MAPPING_ARGS, "--time-format", "epoch", "--precision", "ms")
