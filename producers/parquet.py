"""Plan Parquet files (``tsbatch produce --format parquet``): a file's row groups are its chunks.

A chunk is one row group, or a run of consecutive small ones of at most ``producer.chunk_lines`` rows
(smaller near the end with ``producer.taper``) and ``producer.max_chunk_bytes`` bytes together; the cut
depends only on the file's footer, so planning an unchanged file again gives the same chunks and keys.
The file is mapped once, here, from its schema:

- ``time``: a timestamp column (any unit; without a time zone it is read as UTC);
- the measurement: a string column ``measurement``, or ``--measurement`` for every row;
- tags and fields: as the schema metadata ``tsbatch`` (``{"version": 1, "tags": [...], "fields":
  [...]}``, written by archive jobs) says; without it, string columns are tags and all others fields;
  ``--tag-columns`` / ``--field-columns`` override either. A field's kind is its column's type.

Only the footer of an object in a store is read here (its size, version and footer pin it); a local
file's row groups are hashed as every other format's chunks are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config import Settings
from config.constants import READ_BLOCK_BYTES, SCHEMA_VERSION
from producers.planner import TAPER_FROM_CHUNKS, TAPER_SMALLEST
from producers.planner import expand as expand_paths
from tsbatch.descriptor import ChunkDescriptor, FieldSpec, Mapping, Precision
from tsbatch.errors import SourceError, SourceUnavailable
from tsbatch.parquetfile import (
    ParquetSource,
    field_kind,
    is_text,
    mapping_problem,
    metadata_columns,
    open_parquet,
    read_metadata,
    row_group_span,
    store_errors,
)
from tsbatch.sources import check_url, is_url, shown_url


@dataclass(frozen=True, slots=True)
class ParquetColumns:
    """What the command line says about a Parquet file's columns; None: what the file says."""

    measurement: str | None = None  # for every row, instead of a measurement column
    measurement_column: str = "measurement"
    tag_columns: tuple[str, ...] | None = None
    field_columns: tuple[str, ...] | None = None
    time_column: str = "time"


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive row groups that make one chunk."""

    first: int  # index of the first row group
    count: int
    first_row: int  # 1-based number of its first row in the file
    rows: int
    start: int  # byte range of the row groups
    end: int


def mapping_for(schema: Any, md: Any, columns: ParquetColumns, name: str) -> Mapping:
    """The file's ``Mapping`` (see the module's docstring); ``SourceError`` naming what does not fit."""
    try:
        tags, fields = _tags_and_fields(schema, metadata_columns(md, name), columns)
        mapping = Mapping(
            measurement=columns.measurement,
            measurement_column=None if columns.measurement else columns.measurement_column,
            tag_columns=tuple(tags),
            field_columns=tuple(_field_specs(schema, fields)),
            time_column=columns.time_column,
        )
    except ValidationError as e:
        problem = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise SourceError(f"{name}: {problem}", reason="bad_schema") from None
    except ValueError as e:
        raise SourceError(f"{name}: {e}", reason="bad_schema") from None
    unfit = mapping_problem(schema, mapping)
    if unfit is not None:
        give = " (give --measurement)" if mapping.measurement_column else ""
        raise SourceError(f"{name}: {unfit}{give}", reason="bad_schema")
    return mapping


def _tags_and_fields(
    schema: Any, declared: tuple[list[str], list[str]] | None, columns: ParquetColumns
) -> tuple[list[str], list[str]]:
    """The tag and field columns: as given, else as the metadata declares, else by type."""
    names = list(schema.names)
    if len(set(names)) != len(names):
        raise ValueError("column names repeat")
    reserved = {columns.time_column, columns.measurement_column}
    if columns.tag_columns is not None:
        tags = list(columns.tag_columns)
    elif declared is not None:
        tags = declared[0]
    else:
        tags = [c for c in names if c not in reserved and is_text(schema.field(c).type)]
    if columns.field_columns is not None:
        fields = list(columns.field_columns)
    elif declared is not None:
        fields = [c for c in declared[1] if c not in tags]
    else:
        fields = [c for c in names if c not in reserved and c not in tags]
    _check_roles(names, reserved, tags, fields)
    return tags, fields


def _check_roles(names: list[str], reserved: set[str], tags: list[str], fields: list[str]) -> None:
    for column in [*tags, *fields]:
        if column not in names:
            raise ValueError(f"no column '{column}'")
        if column in reserved:
            raise ValueError(f"column '{column}' is the time or measurement, not a tag or field")
    both = sorted(set(tags) & set(fields))
    if both:
        raise ValueError(f"column(s) {', '.join(both)} named both tag and field")
    if not fields:
        raise ValueError("no field column (give --field-columns)")


def _field_specs(schema: Any, fields: list[str]) -> Iterator[FieldSpec]:
    for column in fields:
        kind = field_kind(schema.field(column).type)
        if kind is None:
            raise ValueError(
                f"column '{column}' is {schema.field(column).type}: a field is a float, integer, boolean "
                "or string column (leave it out with --field-columns)"
            )
        yield FieldSpec(name=column, kind=kind)


def runs(md: Any, *, chunk_rows: int, max_bytes: int, name: str, taper: bool = False) -> Iterator[Run]:
    """The chunks of a file: consecutive row groups while they fit the run's row target and
    ``max_bytes``. The target is ``chunk_rows``; with ``taper``, the last two chunks' worth of a longer
    file get halves, quarters, ... of it, as ``planner.scan`` cuts text (workers finish together), as
    far as the row groups allow: a row group is never split."""
    total = sum(md.row_group(i).num_rows for i in range(md.num_row_groups))
    run: Run | None = None
    target, row = chunk_rows, 1
    for index in range(md.num_row_groups):
        rows = md.row_group(index).num_rows
        start, end = row_group_span(md, index)
        if end - start > max_bytes:
            raise SourceError(
                f"{name}: row group {index} is {end - start} bytes, over producer.max_chunk_bytes "
                f"({max_bytes}): write the file with smaller row groups, or raise the setting",
                reason="chunk_too_large",
            )
        if run and run.rows + rows <= target and end - run.start <= max_bytes:
            run = Run(run.first, run.count + 1, run.first_row, run.rows + rows, run.start, end)
        else:
            if run:
                yield run
            run = Run(index, 1, row, rows, start, end)
            target = _target(total - row + 1, total, chunk_rows) if taper else chunk_rows
        row += rows
    if run:
        yield run


def _target(remaining: int, total: int, chunk_rows: int) -> int:
    """Rows for a run that starts with ``remaining`` rows left (``planner._Sizes.next``'s rule)."""
    smallest = max(chunk_rows // TAPER_SMALLEST, 1)
    if total <= TAPER_FROM_CHUNKS * chunk_rows or remaining > TAPER_FROM_CHUNKS * chunk_rows:
        return chunk_rows  # a file of one or two chunks stays whole; or not near the end yet
    if remaining < 2 * smallest:
        return chunk_rows  # so near the end that the rest is one chunk
    return min(max(remaining // 2 + 1, smallest), chunk_rows)


def expand(paths: Iterable[str | Path], url_roots: list[str]) -> Iterator[str | Path]:
    """Paths as ``planner.expand`` gives them; a URL as it is, or, for a prefix ("directory") under the
    roots, the objects below it in name order. A URL that cannot be listed is yielded as it is: planning
    it reports why."""
    for item in paths:
        if not is_url(item):
            yield from expand_paths([item])
            continue
        url = str(item)
        try:
            check_url(url, url_roots, prefix=True)
            found = _listing(url)
        except (SourceError, SourceUnavailable):
            found = None
        if found:
            yield from found
        else:
            yield url


def _listing(url: str) -> list[str]:
    if url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        return [f"file://{p}" for p in expand_paths([root])] if root.is_dir() else []
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    with store_errors(shown_url(url)):
        if not fs.isdir(path):
            return []
        found = fs.find(path)
    scheme = url.split("://", 1)[0]
    return [f"{scheme}://{p}" for p in sorted(found) if not p.rsplit("/", 1)[-1].startswith((".", "_"))]


def descriptors(
    location: str | Path,
    *,
    settings: Settings,
    job_id: str,
    route: str,
    precision: Precision,
    columns: ParquetColumns,
) -> Iterator[ChunkDescriptor]:
    """The descriptors of one Parquet file or object, one per run of row groups; ``SourceError`` if
    it cannot be used (a store that does not answer is reported the same way: run the command again)."""
    s = settings.sources
    try:
        with open_parquet(location, roots=s.roots, url_roots=s.url_roots) as src:
            yield from _descriptors(
                src, settings, job_id=job_id, route=route, precision=precision, columns=columns
            )
    except SourceUnavailable as e:
        raise SourceError(str(e), reason="unreadable") from None


def _descriptors(
    src: ParquetSource,
    settings: Settings,
    *,
    job_id: str,
    route: str,
    precision: Precision,
    columns: ParquetColumns,
) -> Iterator[ChunkDescriptor]:
    footer = src.footer()
    md = read_metadata(footer, src.name)
    mapping = mapping_for(md.schema.to_arrow_schema(), md, columns, src.name)
    p = settings.producer
    footer_digest = hashlib.sha256(footer)
    for run in runs(md, chunk_rows=p.chunk_lines, max_bytes=p.max_chunk_bytes, name=src.name, taper=p.taper):
        digest = footer_digest.copy()
        if src.local:  # an object in a store is not downloaded to plan it
            for at in range(run.start, run.end, READ_BLOCK_BYTES):
                digest.update(src.read(at, min(at + READ_BLOCK_BYTES, run.end)))
        yield ChunkDescriptor(
            schema_version=SCHEMA_VERSION,
            job_id=job_id,
            path=src.name,
            file_size=src.size,
            file_mtime_ns=src.mtime_ns,
            chunk_sha256=digest.hexdigest(),
            start=run.start,
            end=run.end,
            first_line=run.first_row,
            line_count=run.rows,
            format="parquet",
            mapping=mapping,
            route=route,
            precision=precision,
            row_groups=(run.first, run.count),
            source_version=src.version,
        ).with_key()
    if src.footer() != footer:
        raise SourceError(f"{src.name}: file changed while it was being planned", reason="source_changed")
