"""Batched aggregation (workers/aggregate.py): blocks are worked on in batches of ``BATCH_POINTS``
points; whatever the batch size, and however a series is split into blocks, the aggregates equal those
of one block at a time and the fingerprint is the same."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

import workers.aggregate as aggregate
from workers.aggregate import Aggregator, Fingerprint, SeriesState
from workers.readers import Block

AGGREGATES = ("mean", "min", "max", "count", "sum", "first", "last", "stddev", "p50", "p99")


def random_blocks(rng: random.Random) -> list[Block]:
    blocks = []
    for _ in range(rng.randint(1, 40)):
        host, fld, n = f"h{rng.randint(0, 5)}", rng.choice(["usage", "count", "state"]), rng.randint(0, 30)
        times = np.array([rng.randint(0, 20) * 1_000_000_000 for _ in range(n)], dtype=np.int64)  # ties
        values: np.ndarray[Any, Any]
        if fld == "usage":
            values = np.array([rng.choice([0.0, -0.0, rng.uniform(-5, 5)]) for _ in range(n)])
        elif fld == "count":
            values = np.array([rng.randint(-3, 3) for _ in range(n)], dtype=np.int64)
        else:
            values = np.array([rng.choice(["a", "b", True]) for _ in range(n)], dtype=object)
        blocks.append(Block("cpu", (("host", host),), fld, times, values))
    return blocks


def one_by_one(blocks: list[Block], aggregates: tuple[str, ...]) -> dict[Any, dict[str, Any]]:
    """The reference: each block on its own, in order (``SeriesState.add``)."""
    series: dict[Any, SeriesState] = {}
    for b in blocks:
        state = series.setdefault((b.tags, b.field), SeriesState())
        state.add(b.times_ns, b.values, keep_values=True)
    out: dict[Any, dict[str, Any]] = {}
    for (tags, fld), state in series.items():
        for agg in aggregates:
            value = state.result(agg)
            if value is not None:
                out.setdefault(tags, {})[f"{fld}_{agg}"] = value
    return out


def same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    return got.keys() == want.keys() and all(
        type(got[k]) is type(want[k])
        and (
            math.isclose(got[k], want[k], rel_tol=1e-12, abs_tol=1e-12)
            if isinstance(got[k], float)
            else got[k] == want[k]
        )
        for k in got
    )


@pytest.mark.parametrize("batch_points", [1, 7, 100, 1 << 16])
def test_batched_aggregates_and_fingerprint_equal_one_block_at_a_time(
    monkeypatch: pytest.MonkeyPatch, batch_points: int
) -> None:
    monkeypatch.setattr(aggregate, "BATCH_POINTS", batch_points)
    rng = random.Random(batch_points)
    for _ in range(200):
        blocks = random_blocks(rng)
        agg = Aggregator(AGGREGATES)
        for b in blocks:
            agg.add(b)
        got, want = dict(agg.rows()), one_by_one(blocks, AGGREGATES)
        assert got.keys() == want.keys()
        for tags in want:
            assert same(got[tags], want[tags]), (tags, got[tags], want[tags])

        # The fingerprint: the same for other batch sizes, another order and blocks split in two.
        monkeypatch.setattr(aggregate, "BATCH_POINTS", 1 << 16)
        other = Fingerprint()
        for b in reversed(blocks):
            cut = len(b.times_ns) // 2
            for part in (slice(None, cut), slice(cut, None)):
                other.add(Block(b.measurement, b.tags, b.field, b.times_ns[part], b.values[part]))
        assert agg.fingerprint.hexdigest() == other.hexdigest()
        assert agg.fingerprint.count == sum(len(b.times_ns) for b in blocks)
        monkeypatch.setattr(aggregate, "BATCH_POINTS", batch_points)
