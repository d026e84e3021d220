"""The chunk descriptor: the only thing producers and workers exchange.

A descriptor says where a chunk of data is (a file and a line-aligned byte range, or a Parquet file's
run of row groups), how to map it to points, which route receives it (a name from the settings, never
a URL or token) and its idempotency key. The data itself never travels through Redis.

The key is a SHA-256 over everything that decides what the chunk writes: the source's identity
(resolved path, size, mtime and the chunk's own SHA-256), the byte range, the format and mapping,
the route and the precision. A Parquet chunk adds its row groups and, read from a URL, the object's
version (ETag or mtime); its ``chunk_sha256`` covers the file's footer and, for a local file, the
row groups' bytes (an object in a store is not downloaded to plan it: its size, version and footer
pin it). The job id is deliberately left out: a job is a request to do work, and
asking twice for the same work must not do it twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.constants import SCHEMA_VERSION

Format = Literal["lp", "csv", "jsonl", "annotated-csv", "parquet"]
Precision = Literal["ns", "us", "ms", "s"]
FieldKind = Literal["float", "int", "uint", "string", "bool"]
TimeFormat = Literal["rfc3339", "epoch"]

FORMATS: tuple[Format, ...] = ("lp", "csv", "jsonl", "annotated-csv", "parquet")
MAPPED: tuple[Format, ...] = ("csv", "jsonl")  # the formats that need a Mapping
PRECISIONS: tuple[Precision, ...] = ("ns", "us", "ms", "s")
FIELD_KINDS: tuple[FieldKind, ...] = ("float", "int", "uint", "string", "bool")


class DescriptorError(ValueError):
    """A descriptor that no worker can execute: malformed, of another schema, or with a wrong key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(_Frozen):
    name: str = Field(min_length=1)
    kind: FieldKind = "float"


class Mapping(_Frozen):
    """How a CSV or JSON Lines record or a Parquet row becomes a point. Unused for line protocol.

    For Parquet the producer derives it from the file's schema (``producers/parquet.py``): the field
    kinds are the columns' types."""

    measurement: str | None = None
    measurement_column: str | None = None
    tag_columns: tuple[str, ...] = ()
    field_columns: tuple[FieldSpec, ...] = ()
    time_column: str = "time"
    time_format: TimeFormat = "rfc3339"
    # CSV only: the header row, read once by the producer so every chunk can be parsed on its own.
    columns: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _complete(self) -> Mapping:
        if (self.measurement is None) == (self.measurement_column is None):
            raise ValueError("give exactly one of measurement or measurement_column")
        if not self.field_columns:
            raise ValueError("at least one field column is required")
        if self.measurement is not None:
            writable_name("measurement", self.measurement)
        for tag in self.tag_columns:
            writable_name("tag key", tag)
        for spec in self.field_columns:
            writable_name("field key", spec.name)
        return self


def writable_name(kind: str, raw: str) -> None:
    """Refuse a name that would make a line the server misreads or rejects: checked in every mapping
    (at planning and by every worker that parses the descriptor) and for each measurement read from a
    record's column."""
    if not raw:
        raise ValueError(f"{kind} is empty")
    if raw.endswith("\\"):
        raise ValueError(f"{kind} '{raw}' ends with a backslash")
    if kind == "measurement" and raw.startswith("#"):
        raise ValueError(f"measurement '{raw}' starts with '#' (a comment line)")


class ChunkDescriptor(_Frozen):
    schema_version: int
    job_id: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1)
    file_size: int = Field(ge=0)
    file_mtime_ns: int
    chunk_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    first_line: int = Field(ge=1)  # 1-based number of the range's first line (parquet: row), for reports
    line_count: int = Field(ge=0)  # parquet: rows
    format: Format
    mapping: Mapping | None = None
    route: str = Field(min_length=1)
    precision: Precision = "ns"
    # annotated-csv only: the annotation rows and header in effect at ``start`` (one record a line),
    # read by the producer so that every chunk can be parsed on its own, as CSV's ``columns``.
    table_context: str = ""
    # parquet only: the chunk's row groups (first index, count), and for a URL the object's version as
    # its store reports it (ETag, else modification time); ``start``-``end`` are their bytes.
    row_groups: tuple[int, int] | None = None
    source_version: str = ""
    key: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ChunkDescriptor:
        if self.end < self.start:
            raise ValueError("end precedes start")
        if self.format in MAPPED and self.mapping is None:
            raise ValueError(f"format {self.format} needs a mapping")
        if self.format == "annotated-csv" and self.mapping is not None:
            raise ValueError("format annotated-csv takes no mapping: its columns say what each value is")
        if self.table_context and self.format != "annotated-csv":
            raise ValueError(f"format {self.format} takes no table_context")
        if self.format == "parquet":
            if self.mapping is None or self.row_groups is None:
                raise ValueError("format parquet needs a mapping and row_groups")
            if min(self.row_groups) < 0 or self.row_groups[1] < 1:
                raise ValueError("row_groups is (first index, count >= 1)")
        elif self.row_groups is not None or self.source_version:
            raise ValueError(f"format {self.format} takes no row_groups or source_version")
        return self

    def _body(self) -> dict[str, Any]:
        # Fields a format does not use are left out, so that every other format's descriptors (and so
        # their idempotency keys, and what older workers accept) stay as they were.
        unused = {
            name
            for name, empty in (("table_context", ""), ("row_groups", None), ("source_version", ""))
            if getattr(self, name) == empty
        }
        return self.model_dump(mode="json", exclude=unused or None)

    def content_key(self) -> str:
        """The idempotency key derived from the descriptor's content (everything but job and key)."""
        body = {k: v for k, v in self._body().items() if k not in ("job_id", "key")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_key(self) -> ChunkDescriptor:
        return self.model_copy(update={"key": self.content_key()})

    def to_message(self) -> dict[str, Any]:
        return self._body()


def parse_descriptor(message: object) -> ChunkDescriptor:
    """Validate a message from the queue; raise ``DescriptorError`` saying what is wrong with it."""
    if not isinstance(message, dict):
        raise DescriptorError(f"descriptor is a {type(message).__name__}, not an object")
    version = message.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DescriptorError(f"unknown schema_version {version!r} (this worker reads {SCHEMA_VERSION})")
    try:
        desc = ChunkDescriptor.model_validate(message)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise DescriptorError(f"invalid descriptor: {where}") from None
    if desc.key != desc.content_key():
        raise DescriptorError("idempotency key does not match the descriptor's content")
    return desc
