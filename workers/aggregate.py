"""Aggregates of one window and the fingerprint of the raw points read, computed block by block, the
blocks worked on in batches of about ``BATCH_POINTS`` points (a block is one series' points, often a
few dozen: numpy's cost per call would otherwise outweigh its work).

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

import functools
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
BATCH_POINTS = 1 << 16  # blocks are aggregated and fingerprinted in batches of about this many points


def _mix(x: U64) -> U64:
    """splitmix64's finaliser, on arrays (uint64 arithmetic wraps, as it must)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=1 << 16)  # the same series come back window after window
def _series_hash(measurement: str, tags: tuple[tuple[str, str], ...], fld: str) -> int:
    text = "\x00".join([measurement, *(f"{k}={v}" for k, v in tags), fld])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _series_id(block: Block) -> int:
    return _series_hash(block.measurement, block.tags, block.field)


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


def _lengths(blocks: list[Block]) -> npt.NDArray[np.int64]:
    return np.fromiter((len(b.times_ns) for b in blocks), dtype=np.int64, count=len(blocks))


class _Batch:
    """Blocks held back until they hold ``BATCH_POINTS`` points, then worked on as one set of arrays:
    a series' block in a 10-minute window is ~60 points, and numpy's cost per call on such a block was
    most of a window's time (issue #9). Holds at most about ``BATCH_POINTS`` points: memory stays
    bounded by the number of series, not by the points in a window."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.points = 0

    def add(self, block: Block) -> bool:
        """Hold ``block``; True once the batch is full."""
        self.blocks.append(block)
        self.points += len(block.times_ns)
        return self.points >= BATCH_POINTS

    def take(self) -> list[Block]:
        blocks, self.blocks, self.points = self.blocks, [], 0
        return blocks


@dataclass
class Fingerprint:
    count: int = 0
    lanes: list[int] = field(default_factory=lambda: [0, 0])
    _batch: _Batch = field(default_factory=_Batch, repr=False, compare=False)

    def add(self, block: Block) -> None:
        n = len(block.times_ns)
        if not n:
            return
        self.count += n
        if self._batch.add(block):
            self.flush()

    def flush(self) -> None:
        """Mix in the blocks held back, at once: the same sums as one by one, in any order."""
        by_kind: dict[str, list[Block]] = {}
        for b in self._batch.take():
            by_kind.setdefault(b.values.dtype.str if b.values.dtype.kind in "fi" else "O", []).append(b)
        for group in by_kind.values():
            lengths = _lengths(group)
            sids = np.fromiter((_series_id(b) for b in group), dtype=np.uint64, count=len(group))
            sid = np.repeat(sids, lengths)
            times = np.concatenate([b.times_ns for b in group]).view(np.uint64)
            if group[0].values.dtype.kind in "fi":
                values = _value_bits(np.concatenate([b.values for b in group]))
            else:
                values = np.concatenate([_value_bits(b.values) for b in group])
            for i, seed in enumerate(_SEEDS):
                h = _mix(_mix(_mix(times ^ sid ^ seed) + values) + seed)
                self.lanes[i] = (self.lanes[i] + int(h.sum(dtype=np.uint64))) & _MASK

    def hexdigest(self) -> str:
        self.flush()
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
        """One block, on its own (strings and booleans; ``Aggregator`` batches numeric blocks)."""
        n = len(times)
        if not n:
            return
        i, j = int(np.argmin(times)), int(np.argmax(times))
        self.see(n, (int(times[i]), _python(values[i])), (int(times[j]), _python(values[j])))
        if values.dtype.kind not in "fi":
            return
        x = values.astype(np.float64, copy=False)
        b_mean = float(x.mean())
        b_m2 = float(((x - b_mean) ** 2).sum())
        self.merge(n, float(x.sum()), b_mean, b_m2, float(x.min()), float(x.max()))
        if keep_values:
            self.values.append(x.copy())

    def see(self, n: int, first: tuple[int, Any] | None, last: tuple[int, Any] | None) -> None:
        """A block's count and its earliest and latest points (the first of them on a tie)."""
        self.count += n
        if first is not None and (self.first is None or first[0] < self.first[0]):
            self.first = first
        if last is not None and (self.last is None or last[0] >= self.last[0]):
            self.last = last

    def merge(self, n: int, total: float, b_mean: float, b_m2: float, low: float, high: float) -> None:
        """A block's numeric summary, merged with Chan's formula."""
        total_n = self.numeric + n
        delta = b_mean - self.mean
        self.mean += delta * n / total_n
        self.m2 += b_m2 + delta * delta * self.numeric * n / total_n
        self.numeric = total_n
        self.total += total
        self.low = min(self.low, low)
        self.high = max(self.high, high)

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
        self.ends = any(a in ("first", "last") for a in aggregates)
        self.series: dict[SeriesKey, SeriesState] = {}
        self.fingerprint = Fingerprint()
        self._batch = _Batch()

    def add(self, block: Block) -> None:
        self.fingerprint.add(block)
        if not len(block.times_ns):
            self._state(block)  # a series with no points in the window still counts 0
        elif self._batch.add(block):
            self.flush()

    def _state(self, block: Block) -> SeriesState:
        key = (block.measurement, block.tags, block.field)
        state = self.series.get(key)
        if state is None:
            state = self.series[key] = SeriesState()
        return state

    def flush(self) -> None:
        """Aggregate and fingerprint the blocks held back, numeric ones as one set of arrays."""
        self.fingerprint.flush()
        blocks = self._batch.take()
        numeric: dict[str, list[Block]] = {}  # by dtype: a first/last integer stays an integer
        for b in blocks:
            if b.values.dtype.kind in "fi":
                numeric.setdefault(b.values.dtype.str, []).append(b)
            else:
                self._state(b).add(b.times_ns, b.values, keep_values=self.keep_values)
        for group in numeric.values():
            self._numeric(group)

    def _numeric(self, blocks: list[Block]) -> None:
        lengths = _lengths(blocks)
        starts = np.zeros(len(blocks), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        x = np.concatenate([b.values for b in blocks]).astype(np.float64, copy=False)
        sums = np.add.reduceat(x, starts)
        means = sums / lengths
        dev = x - np.repeat(means, lengths)
        m2s = np.add.reduceat(dev * dev, starts)
        lows, highs = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
        firsts, lasts = self._ends(blocks, lengths, starts)
        stats = zip(
            blocks, lengths.tolist(), sums.tolist(), means.tolist(), m2s.tolist(), lows.tolist(),
            highs.tolist(), strict=True,
        )  # fmt: skip
        for i, (b, n, total, mean, m2, low, high) in enumerate(stats):
            state = self._state(b)
            state.see(n, firsts[i] if firsts else None, lasts[i] if lasts else None)
            state.merge(n, total, mean, m2, low, high)
            if self.keep_values:
                state.values.append(x[starts[i] : starts[i] + n])

    def _ends(
        self, blocks: list[Block], lengths: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]
    ) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
        """Each block's earliest and latest point, the first of each in the block on a tie (as
        ``argmin``/``argmax``), only when ``first`` or ``last`` is asked for."""
        if not self.ends:
            return [], []
        times = np.concatenate([b.times_ns for b in blocks])
        values = np.concatenate([b.values for b in blocks])
        block = np.repeat(np.arange(len(blocks)), lengths)
        position = np.arange(len(times))
        ends = starts + lengths - 1
        first = np.lexsort((position, times, block))[starts]
        last = np.lexsort((-position, times, block))[ends]
        t, v = times.tolist(), values.tolist()
        return [(t[i], v[i]) for i in first.tolist()], [(t[i], v[i]) for i in last.tolist()]

    def rows(self) -> Iterator[tuple[tuple[tuple[str, str], ...], dict[str, float | int | str | bool]]]:
        """One row per tag set: ``<field>_<aggregate>`` -> value, in a stable order."""
        self.flush()
        by_tags: dict[tuple[tuple[str, str], ...], dict[str, float | int | str | bool]] = {}
        for (_, tags, fld), state in sorted(self.series.items()):
            out = by_tags.setdefault(tags, {})
            for agg in self.aggregates:
                value = state.result(agg)
                if value is not None:
                    out[f"{fld}_{agg}"] = value
        yield from by_tags.items()
