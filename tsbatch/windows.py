"""Windows: UTC-aligned time ranges ``[k*every, (k+1)*every)`` since the epoch, and the window
descriptor, the only thing the scheduler and the workers exchange about a window.

A window's bounds are arithmetic on the clock, never "now - every" at whatever moment a run starts:
InfluxDB tasks that start late lose and duplicate downsampled points because of that
(influxdata/influxdb#17323). A window is *due* once its end plus the job's offset has passed.

The key of a window is a SHA-256 over the job's definition (what decides the window's output: routes,
filters, aggregates, ``every``), the bounds and the generation. A generation above 0 is a deliberate
re-run (late data found by ``tsbatch windows verify``, ``tsbatch backfill --rerun``): a new unit, so
the ledger runs it once more, exactly once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.constants import SCHEMA_VERSION
from config.settings import JobSettings
from tsbatch.descriptor import DescriptorError


def floor_window(t: int, every: int) -> int:
    """The start of the window holding second ``t``."""
    return t - t % every


def ceil_window(t: int, every: int) -> int:
    return -floor_window(-t, every)


def due_end(now_s: float, *, every: int, offset: int) -> int:
    """Every window that ends at or before this is due at ``now_s`` (its end + offset has passed)."""
    return floor_window(int(now_s // 1) - offset, every)


def window_starts(start: int, end: int, every: int) -> Iterator[int]:
    """The starts of the windows that cover ``[start, end)``, oldest first (none if it is empty)."""
    if end <= start:
        return iter(())
    return iter(range(floor_window(start, every), ceil_window(end, every), every))


def iso(t: int) -> str:
    """RFC 3339 UTC of an epoch second, e.g. ``2026-01-01T00:05:00Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Epoch seconds from RFC 3339 (an offset is required: windows are UTC) or from epoch seconds."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-01-01T00:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: write 2026-01-01T00:00:00Z")
    return int(when.timestamp())


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Definition(_Frozen):
    """What decides a window's output (``JobSettings.definition()``); carried in every descriptor, so a
    worker runs what was planned even while the settings file is being edited."""

    kind: Literal["downsample", "copy", "archive"]
    source: str
    target: str = ""
    measurement: str
    fields: tuple[str, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    every: int = Field(gt=0)
    aggregates: tuple[str, ...] = ()
    mode: Literal["worker", "server"] = "worker"
    output_measurement: str
    url: str = ""  # archive: where the window's Parquet file goes

    @classmethod
    def of(cls, job: JobSettings) -> Definition:
        return cls.model_validate(job.definition())

    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.model_dump(mode="json")).encode()).hexdigest()


def window_key(definition: Definition, start: int, end: int, generation: int) -> str:
    text = f"window|{definition.digest()}|{start}|{end}|{generation}"
    return hashlib.sha256(text.encode()).hexdigest()


class WindowDescriptor(_Frozen):
    schema_version: int = SCHEMA_VERSION
    unit: Literal["window"] = "window"
    job: str = Field(min_length=1, max_length=64)  # the job's name in the settings
    job_id: str = Field(min_length=1, max_length=64)  # the ledger job that planned it
    definition: Definition
    start: int
    end: int
    generation: int = Field(default=0, ge=0)
    key: str = ""

    @model_validator(mode="after")
    def _bounds_and_key(self) -> WindowDescriptor:
        every = self.definition.every
        if self.end - self.start != every or self.start % every:
            raise ValueError(f"[{self.start}, {self.end}) is not a window of {every}s aligned on the epoch")
        expected = window_key(self.definition, self.start, self.end, self.generation)
        if self.key and self.key != expected:
            raise ValueError("key does not match the window")
        object.__setattr__(self, "key", expected)
        return self

    def label(self) -> str:
        gen = f" generation={self.generation}" if self.generation else ""
        return f"window=[{iso(self.start)}, {iso(self.end)}){gen}"

    def to_message(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def is_window_message(message: object) -> bool:
    return isinstance(message, dict) and message.get("unit") == "window"


def parse_window(message: object) -> WindowDescriptor:
    if not isinstance(message, dict):
        raise DescriptorError(f"a window descriptor must be a JSON object, not {type(message).__name__}")
    version = message.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DescriptorError(f"unknown schema_version {version!r} (this worker reads {SCHEMA_VERSION})")
    try:
        return WindowDescriptor.model_validate(message)
    except ValidationError as e:
        raise DescriptorError(f"invalid window descriptor: {e.errors()[0]['msg']}") from None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
