"""Aggregates of one window and the fingerprint of the raw points read, computed block by block.

State is kept per series (measurement, tags, field): counts, sums, Welford's mean and M2 (merged with
Chan's formula, so a series split over several blocks gives the same result as one block), min, max and
the first and last points. Percentiles need a series' values: they are the one aggregate whose memory
grows with the points of a series in a window (docs/WINDOWS.md).

Definitions, the same as the Flux that server mode renders (config/flux/downsample.flux):
``stddev`` is the sample standard deviation (n - 1; Flux's default mode), omitted for a single point;
``pNN`` is the mean of the two values nearest rank q x (n - 1) (numpy's ``midpoint``, Flux's
``quantile(method: "exact_mean")``); ``first``/``last`` are the values at the earliest/latest time.

The fingerprint is order-independent: the sum modulo 2^64 of a 64-bit mix of each point (series, time,
value), in two lanes with different seeds, plus the count. Points read in another order, or split over
blocks differently, give the same fingerprint; one point more, less or changed gives another.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.readers import Block

U64 = npt.NDArray[np.uint64]
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
NUMERIC = ("mean", "min", "max", "sum", "stddev", *QUANTILES)
_SEEDS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03))
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def _mix(x: U64) -> U64:
    """splitmix64's finaliser, on arrays (uint64 arithmetic wraps, as it must)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _series_id(block: Block) -> int:
    text = "\x00".join([block.measurement, *(f"{k}={v}" for k, v in block.tags), block.field])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _value_bits(values: npt.NDArray[Any]) -> U64:
    if values.dtype == np.float64:
        clean = np.where(values == 0.0, 0.0, values)  # -0.0 and 0.0 are one value
        return clean.view(np.uint64)
    if values.dtype == np.int64:
        return values.view(np.uint64) ^ np.uint64(0x5555555555555555)  # 1i is not 1.0
    # Strings and booleans: rare (only InfluxDB sources have them), hashed one by one.
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(repr(v).encode(), digest_size=8).digest(), "little") for v in values),
        dtype=np.uint64,
        count=len(values),
    )


@dataclass
class Fingerprint:
    count: int = 0
    lanes: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, block: Block) -> None:
        n = len(block.times_ns)
        if not n:
            return
        sid = np.uint64(_series_id(block))
        times = block.times_ns.view(np.uint64)
        values = _value_bits(block.values)
        for i, seed in enumerate(_SEEDS):
            h = _mix(_mix(_mix(times ^ sid ^ seed) + values) + seed)
            self.lanes[i] = (self.lanes[i] + int(h.sum(dtype=np.uint64))) & _MASK
        self.count += n

    def hexdigest(self) -> str:
        return f"{self.count}:{self.lanes[0]:016x}{self.lanes[1]:016x}"


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class SeriesState:
    count: int = 0
    numeric: int = 0  # values that are numbers (mean, sum, ... are over these)
    total: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    first: tuple[int, Any] | None = None
    last: tuple[int, Any] | None = None
    values: list[npt.NDArray[np.float64]] = field(default_factory=list)

    def add(self, times: npt.NDArray[np.int64], values: npt.NDArray[Any], *, keep_values: bool) -> None:
        n = len(times)
        if not n:
            return
        self.count += n
        i, j = int(np.argmin(times)), int(np.argmax(times))
        if self.first is None or int(times[i]) < self.first[0]:
            self.first = (int(times[i]), _python(values[i]))
        if self.last is None or int(times[j]) >= self.last[0]:
            self.last = (int(times[j]), _python(values[j]))
        if values.dtype.kind not in "fi":
            return
        x = values.astype(np.float64, copy=False)
        b_mean = float(x.mean())
        b_m2 = float(((x - b_mean) ** 2).sum())
        total_n = self.numeric + n
        delta = b_mean - self.mean
        self.mean += delta * n / total_n
        self.m2 += b_m2 + delta * delta * self.numeric * n / total_n
        self.numeric = total_n
        self.total += float(x.sum())
        self.low = min(self.low, float(x.min()))
        self.high = max(self.high, float(x.max()))
        if keep_values:
            self.values.append(x.copy())

    def result(self, aggregate: str) -> float | int | str | bool | None:
        if aggregate == "count":
            return self.count
        if aggregate == "first":
            return self.first[1] if self.first else None
        if aggregate == "last":
            return self.last[1] if self.last else None
        if not self.numeric:
            return None  # a string or boolean field has no mean
        if aggregate == "mean":
            return self.mean
        if aggregate == "sum":
            return self.total
        if aggregate == "min":
            return self.low
        if aggregate == "max":
            return self.high
        if aggregate == "stddev":
            return math.sqrt(self.m2 / (self.numeric - 1)) if self.numeric > 1 else None
        q = QUANTILES[aggregate]
        return float(np.quantile(np.concatenate(self.values), q, method="midpoint"))


SeriesKey = tuple[str, tuple[tuple[str, str], ...], str]


class Aggregator:
    """Aggregates for every series of a window, and the window's fingerprint."""

    def __init__(self, aggregates: tuple[str, ...]) -> None:
        self.aggregates = aggregates
        self.keep_values = any(a in QUANTILES for a in aggregates)
        self.series: dict[SeriesKey, SeriesState] = {}
        self.fingerprint = Fingerprint()

    def add(self, block: Block) -> None:
        self.fingerprint.add(block)
        key = (block.measurement, block.tags, block.field)
        state = self.series.get(key)
        if state is None:
            state = self.series[key] = SeriesState()
        state.add(block.times_ns, block.values, keep_values=self.keep_values)

    def rows(self) -> Iterator[tuple[tuple[tuple[str, str], ...], dict[str, float | int | str | bool]]]:
        """One row per tag set: ``<field>_<aggregate>`` -> value, in a stable order."""
        by_tags: dict[tuple[tuple[str, str], ...], dict[str, float | int | str | bool]] = {}
        for (_, tags, fld), state in sorted(self.series.items()):
            out = by_tags.setdefault(tags, {})
            for agg in self.aggregates:
                value = state.result(agg)
                if value is not None:
                    out[f"{fld}_{agg}"] = value
        yield from by_tags.items()
