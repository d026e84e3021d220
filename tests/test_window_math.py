"""Window arithmetic and job settings, as properties: UTC windows ``[k*every, (k+1)*every)``."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import ConfigError, load_settings
from config.settings import parse_duration
from tsbatch.windows import (
    Definition,
    WindowDescriptor,
    due_end,
    floor_window,
    iso,
    parse_time,
    window_key,
    window_starts,
)

EVERY = st.sampled_from([1, 60, 90, 300, 420, 600, 3600, 86_400, 604_800]) | st.integers(1, 10**6)
TIMES = st.integers(-(10**10), 10**10)  # 1653 to 2286, either side of the epoch


@given(TIMES, EVERY)
def test_a_time_lies_in_exactly_the_window_that_floors_it(t: int, every: int) -> None:
    start = floor_window(t, every)
    assert start % every == 0 and start <= t < start + every


@given(TIMES, st.integers(0, 10**6), EVERY)
def test_windows_cover_a_range_without_gaps_or_overlaps(t: int, span: int, every: int) -> None:
    starts = list(window_starts(t, t + span, every))
    assert all(b - a == every for a, b in itertools.pairwise(starts))
    if span:
        assert starts[0] <= t and starts[-1] + every >= t + span and starts[-1] < t + span
    else:
        assert starts == []


@given(st.floats(0, 4e9, allow_nan=False), EVERY, st.integers(0, 10**5))
def test_a_window_is_due_once_its_end_plus_offset_has_passed(now: float, every: int, offset: int) -> None:
    end = due_end(now, every=every, offset=offset)
    assert end % every == 0
    assert end + offset <= now  # the last due window ended offset ago at least
    assert end + every + offset > int(now)  # the next one is not due yet


@pytest.mark.parametrize(
    ("text", "every", "start"),
    [
        ("2024-02-29T23:59:59Z", 86_400, "2024-02-29T00:00:00Z"),  # a leap day
        ("2025-01-01T00:00:00Z", 86_400, "2025-01-01T00:00:00Z"),  # a year boundary
        ("2026-03-31T23:59:30Z", 3600, "2026-03-31T23:00:00Z"),  # a month boundary
        ("2026-03-29T02:30:00Z", 3600, "2026-03-29T02:00:00Z"),  # a European DST night: UTC has no gap
        ("2026-01-01T00:06:59Z", 420, "2026-01-01T00:00:00Z"),  # 7m windows count from the epoch
        ("2026-01-01T00:07:00Z", 420, "2026-01-01T00:07:00Z"),
        ("2026-01-02T00:00:00Z", 420, "2026-01-01T23:55:00Z"),  # 1440 min is not a multiple of 7
        ("2026-01-01T00:00:45Z", 90, "2026-01-01T00:00:00Z"),
        ("1969-12-31T23:59:59Z", 60, "1969-12-31T23:59:00Z"),
    ],
)
def test_window_boundaries_on_calendar_edges(text: str, every: int, start: str) -> None:
    assert iso(floor_window(parse_time(text), every)) == start


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_times_round_trip_through_rfc3339(when: datetime) -> None:
    t = calendar.timegm(when.replace(tzinfo=UTC).timetuple())
    assert parse_time(iso(t)) == t


def test_a_time_without_utc_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_time("2026-01-01T00:00:00")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("7m", 420), ("1h30m", 5400), ("2d", 172_800)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1mo", "1y", "5", "-5m", "m", ""])
def test_durations_without_a_fixed_length_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def _defn(**kw: Any) -> Definition:
    base = {
        "kind": "downsample",
        "source": "hot",
        "target": "warm",
        "measurement": "cpu",
        "every": 300,
        "aggregates": ("mean",),
        "output_measurement": "cpu",
    }
    return Definition.model_validate({**base, **kw})


def test_a_window_key_depends_on_the_definition_the_bounds_and_the_generation() -> None:
    d = _defn()
    keys = {
        window_key(d, 0, 300, 0),
        window_key(d, 300, 600, 0),
        window_key(d, 0, 300, 1),
        window_key(_defn(aggregates=("mean", "max")), 0, 300, 0),
        window_key(_defn(target="cold"), 0, 300, 0),
    }
    assert len(keys) == 5
    assert window_key(d, 0, 300, 0) == window_key(_defn(), 0, 300, 0)


def test_a_window_descriptor_refuses_unaligned_bounds_and_a_forged_key() -> None:
    with pytest.raises(ValueError, match="aligned"):
        WindowDescriptor(job="j", job_id="x", definition=_defn(), start=10, end=310)
    with pytest.raises(ValueError, match="key"):
        WindowDescriptor(job="j", job_id="x", definition=_defn(), start=0, end=300, key="0" * 64)


ROUTES = {
    "hot": {"url": "http://h:8086", "org": "o", "bucket": "hot", "token": ""},
    "warm": {"url": "http://h:8086", "org": "o", "bucket": "warm", "token": ""},
}


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"source": "nope"}, "jobs.j.source: unknown route 'nope'"),
        ({"every": "1mo"}, "jobs.j.every"),
        ({"every": "0s"}, "at least 1s"),
        ({"aggregates": []}, "a downsample needs at least one"),
        ({"aggregates": ["median"]}, "jobs.j.aggregates"),
        ({"start": "2026-01-01T00:00:00"}, "needs a UTC offset"),
        ({"kind": "copy", "target": "hot", "aggregates": []}, "the same bucket"),
    ],
)
def test_a_bad_job_stops_loading_with_a_message_naming_it(job: dict[str, Any], message: str) -> None:
    spec = {
        "kind": "downsample",
        "source": "hot",
        "target": "warm",
        "measurement": "cpu",
        "every": "5m",
        "aggregates": ["mean"],
        **job,
    }
    with pytest.raises(ConfigError) as err:
        load_settings(routes=ROUTES, jobs={"j": spec})
    assert message in str(err.value)
