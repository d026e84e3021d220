"""The archive work: a window's raw points into one Parquet file, written atomically, read back and
verified before the window commits (tsbatch/archives.py has the layout and the row digest).

    read the window (blocks of one series) ── pivot to one row per point (tags, time) ── pin the schema
    ── write a local temp file ── fencing check ── publish: rename (local) or one PUT (object store)
    ── read the file back: rows and row digest equal what was read, SHA-256 equal what was written
    ── commit: path, size, rows, digest, SHA-256 in the ledger

A file is never visible half-written under its final name: a local file is renamed into place, an object
store gets the finished file in a single PUT (s3fs: one PutObject, or a multipart upload that appears
only when completed), never a copy-and-delete "rename". The job's schema (tag keys, field types) is pinned
in the ledger by its first window, so every file of a job reads as one dataset; a window with a column
outside it is dead-lettered (``schema_changed``) rather than written in another shape. Memory grows with
the points of a window here (a file is one window): choose ``every`` accordingly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import defaultdict
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tsbatch.archives import archive_path, file_sha256, metadata, table_digest
from tsbatch.errors import SourceError, TransientWriteError
from tsbatch.windows import WindowDescriptor
from workers.aggregate import Fingerprint
from workers.harness import Attempt
from workers.readers import Block
from workers.runtime import Runtime

TagSet = tuple[tuple[str, str], ...]
ROW_GROUP_ROWS = 1 << 20  # a restore reads a file's row groups as its chunks: ~1M points each


def _arrow_type(values: np.ndarray[Any, Any]) -> pa.DataType:
    if values.dtype == np.float64:
        return pa.float64()
    if values.dtype == np.int64:
        return pa.int64()
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def build_table(blocks: list[Block], measurement: str, pinned: dict[str, Any]) -> pa.Table:
    """One row per (tag set, time), one column per tag key and field, in the pinned schema's columns.

    Rows are ordered by tag set, then time. The pivot is done on the window's points at once (one sort),
    not per series: a 10-minute window of 1,000 series is 2,000 blocks of ~60 points."""
    tag_keys: list[str] = pinned["tags"]
    field_types: dict[str, str] = pinned["fields"]
    tagsets = sorted({b.tags for b in blocks})
    series_of = {tags: i for i, tags in enumerate(tagsets)}
    # Blocks in series order (a stable sort: a series' blocks stay in read order, which decides between
    # duplicates): the points are then runs of sorted times that the stable sort below merges quickly.
    blocks = sorted(blocks, key=lambda b: series_of[b.tags])
    sizes = np.fromiter((len(b.times_ns) for b in blocks), dtype=np.int64, count=len(blocks))
    series = np.repeat(np.fromiter((series_of[b.tags] for b in blocks), np.int32, len(blocks)), sizes)
    stamps = np.concatenate([b.times_ns for b in blocks]) if blocks else np.array([], np.int64)
    row_of, row_series, row_times = _rows(series, stamps, len(tagsets))
    del series, stamps
    n = len(row_series)
    arrays: dict[str, pa.Array] = {
        "time": pa.array(row_times, pa.timestamp("ns", tz="UTC")),
        "measurement": pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), pa.array([measurement])),
    }
    for k in tag_keys:
        # The dictionary holds the tag's value of each series that has it, in series order.
        tag_values = [dict(tags).get(k) for tags in tagsets]
        has = np.fromiter((v is not None for v in tag_values), dtype=bool, count=len(tag_values))
        entry = np.where(has, np.cumsum(has) - 1, -1).astype(np.int32)
        idx = entry[row_series]
        arrays[k] = pa.DictionaryArray.from_arrays(
            pa.array(idx, mask=idx < 0), pa.array([v for v in tag_values if v is not None], pa.string())
        )
    ends = np.cumsum(sizes)
    spans: dict[str, list[int]] = defaultdict(list)  # field -> its blocks, in read order
    for i, b in enumerate(blocks):
        spans[b.field].append(i)
    for f, typ in field_types.items():
        at = spans.get(f, [])
        rows = (
            np.concatenate([row_of[ends[i] - sizes[i] : ends[i]] for i in at])
            if at
            else np.array([], np.int64)
        )
        values = np.concatenate([blocks[i].values for i in at]) if at else np.array([])
        arrays[f] = _field_column(rows, values, n, typ)
    return pa.table(arrays)


def _rows(
    series: np.ndarray[Any, Any], stamps: np.ndarray[Any, Any], count: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Each point's row, the rows being the distinct (series, time) pairs in that order; and each row's
    series and time. One stable sort (a merge of the blocks' sorted runs) of a single key, series x span
    + time, when it fits in 63 bits, as it does for any window shorter than years; two keys otherwise."""
    if not len(stamps):
        return np.array([], np.int64), np.array([], np.int64), np.array([], np.int64)
    low, span = int(stamps.min()), int(stamps.max()) - int(stamps.min()) + 1
    first = np.ones(len(stamps), dtype=bool)
    if count * span < 1 << 63:
        key = stamps - low
        key += series.astype(np.int64) * span
        order = np.argsort(key, kind="stable")
        key = key[order]
        np.not_equal(key[1:], key[:-1], out=first[1:])
        starts = key[first]
        del key
        row_series, row_times = starts // span, starts % span + low
    else:
        order = np.lexsort((stamps, series))
        s, t = series[order], stamps[order]
        first[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
        row_series, row_times = s[first].astype(np.int64), t[first]
    ranks = np.cumsum(first, dtype=np.int64)
    ranks -= 1
    row_of = np.empty(len(order), dtype=np.int64)
    row_of[order] = ranks
    return row_of, row_series, row_times


_TYPES = {"double": pa.float64(), "long": pa.int64(), "boolean": pa.bool_(), "string": pa.string()}
_NAMES = {v: k for k, v in _TYPES.items()}


def _field_column(rows: np.ndarray[Any, Any], values: np.ndarray[Any, Any], n: int, typ: str) -> pa.Array:
    """The field's values (in read order) placed at their rows among ``n`` (null where a row lacks it)."""
    if not len(rows):
        return pa.nulls(n, _TYPES[typ])
    # A duplicate (same series, field and time) keeps the last value read, as InfluxDB keeps the last write.
    if not (rows[1:] > rows[:-1]).all():  # else: in row order, without duplicates (the usual case)
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        last = np.append(rows[1:] != rows[:-1], True)
        rows, values = rows[last], values[last]
    pos = rows
    if typ == "double":
        out = np.zeros(n, dtype=np.float64)
        out[pos] = values.astype(np.float64)
    elif typ == "long":
        out = np.zeros(n, dtype=np.int64)
        out[pos] = values.astype(np.int64)
    else:
        out = np.empty(n, dtype=object)
        out[pos] = values
    mask = np.ones(n, dtype=bool)
    mask[pos] = False
    return pa.array(out, type=_TYPES[typ], mask=mask)


def observed_schema(blocks: list[Block]) -> dict[str, Any]:
    tags = sorted({k for b in blocks for k, _ in b.tags})
    fields: dict[str, str] = {}
    for b in blocks:
        fields.setdefault(b.field, _NAMES.get(_arrow_type(b.values), "string"))
    return {"tags": tags, "fields": dict(sorted(fields.items()))}


def pin_schema(rt: Runtime, job: str, observed: dict[str, Any]) -> dict[str, Any]:
    """The job's schema: the first window's, kept in the ledger; a column outside it refuses the window."""
    key = f"{rt.ledger.prefix}:archive_schema:{job}"
    rt.ledger.redis.set(key, json.dumps(observed), nx=True)
    pinned: dict[str, Any] = json.loads(str(rt.ledger.redis.get(key)))
    extra = sorted(set(observed["tags"]) - set(pinned["tags"]))
    extra += sorted(
        f
        for f, t in observed["fields"].items()
        if pinned["fields"].get(f, t) != t or f not in pinned["fields"]
    )
    if extra:
        raise SourceError(
            f"job {job}: column(s) {', '.join(extra)} are not in the job's pinned archive schema "
            f"(tags {pinned['tags']}, fields {pinned['fields']}): list the job's fields, or start a new job",
            reason="schema_changed",
        )
    return pinned


async def run_archive_window(
    rt: Runtime, d: WindowDescriptor, attempt: Attempt
) -> tuple[int, Any, Fingerprint]:
    from workers.windows import read_window

    defn = d.definition
    fp = Fingerprint()
    blocks: list[Block] = []
    async for block in read_window(rt, defn, d.start, d.end):
        attempt.check()
        fp.add(block)
        blocks.append(block)
    pinned = pin_schema(rt, d.job, observed_schema(blocks))
    table = build_table(blocks, defn.measurement, pinned)
    del blocks
    table = table.replace_schema_metadata(
        metadata(
            table.schema,
            job=d.job,
            start=d.start,
            end=d.end,
            tags=pinned["tags"],
            fields=list(pinned["fields"]),
        ).metadata
    )
    digest = table_digest(table)
    path = archive_path(defn.url, defn.measurement, d.job, d.start)
    written = await asyncio.to_thread(_write_and_verify, table, path, digest, attempt)
    return fp.count, written, fp


class Written:
    """What the archive wrote: for the commit record."""

    def __init__(self, path: str, size: int, rows: int, digest: str, sha256: str) -> None:
        self.path, self.size, self.points, self.digest, self._sha = path, size, rows, digest, sha256

    def sha256(self) -> str:
        return self._sha

    def record(self) -> dict[str, str | int | float]:
        return {
            "archive_path": self.path,
            "archive_size": self.size,
            "archive_rows": self.points,
            "archive_digest": self.digest,
            "archive_sha256": self._sha,
        }


def _write_and_verify(table: pa.Table, path: str, digest: str, attempt: Attempt) -> Written:
    fs, remote = fsspec.core.url_to_fs(path)
    local_fs = isinstance(fs, LocalFileSystem)
    parent = os.path.dirname(remote)
    fs.makedirs(parent, exist_ok=True)
    tmp_dir = parent if local_fs else None
    fd, tmp = tempfile.mkstemp(prefix=".tsbatch-", suffix=".parquet.tmp", dir=tmp_dir)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        with open(tmp, "rb") as f:
            data = f.read()
        sha = file_sha256(data)
        attempt.confirm()  # fencing: only the lease holder puts the file in place
        if local_fs:
            os.replace(tmp, remote)
            _remove_stale_temps(parent, older_than_s=2 * attempt.rt.settings.worker.lease_ttl_s)
        else:
            fs.put_file(tmp, remote)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with fs.open(remote, "rb") as f:
        back = f.read()
    back_table = pq.read_table(pa.BufferReader(back))
    if file_sha256(back) != sha or table_digest(back_table) != digest:
        raise TransientWriteError(f"{path}: the file read back differs from what was written")
    return Written(path, len(back), back_table.num_rows, digest, sha)


def _remove_stale_temps(folder: str, *, older_than_s: float) -> None:
    """Temp files of writers killed mid-write (SIGKILL runs no cleanup). A live writer's file is younger
    than two leases: its holder renews the lease while writing, and a lapsed lease fences it anyway."""
    cutoff = time.time() - older_than_s
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".tsbatch-") and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
