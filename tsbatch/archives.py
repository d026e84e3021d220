"""Archive files: one Parquet file per window of an archive job, shared by the workers (which write them)
and the CLI (``tsbatch archive verify``, which checks them later).

Layout (Hive-style, readable as one dataset by DuckDB, Spark, pandas)::

    <url>/measurement=<m>/date=YYYY-MM-DD/<job>-<window start, e.g. 20260101T000000Z>.parquet

One row per point: ``time`` (timestamp[ns, UTC]), ``measurement``, one dictionary-encoded string column
per tag key, one typed column per field (null where a point lacks the field). The schema's metadata key
``tsbatch`` holds ``{"version", "job", "window", "tags", "fields"}`` so that a restore knows tags from
fields without guessing.

``table_digest`` is an order-independent hash of a table's rows: the archive work computes it over what
the reader streamed, then over the file read back, and commits the window only if both agree.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

META_KEY = b"tsbatch"
FORMAT_VERSION = 1
_MASK = (1 << 64) - 1
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_NULL = np.uint64(0x6A09E667F3BCC908)


def archive_path(url: str, measurement: str, job: str, start: int) -> str:
    day = datetime.fromtimestamp(start, UTC)
    name = f"{job}-{day.strftime('%Y%m%dT%H%M%SZ')}.parquet"
    return f"{url.rstrip('/')}/measurement={measurement}/date={day.strftime('%Y-%m-%d')}/{name}"


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finalizer, in place on one new array (the digest calls it 4 times per column)."""
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _strings_bits(dictionary: pa.Array, indices: pa.Array) -> npt.NDArray[np.uint64]:
    """Each value's text hash, through a dictionary: each dictionary entry is hashed once."""
    table = np.fromiter(
        (_text_hash(str(v)) for v in dictionary.to_pylist()), dtype=np.uint64, count=len(dictionary)
    )
    idx = np.asarray(indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return table[idx] if len(table) else np.zeros(len(indices), dtype=np.uint64)


def _column_bits(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint64]]:
    """A column's values as 64-bit words before seeding and mixing (``_column_hashes``), and which are
    not null."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if pa.types.is_dictionary(t) and _is_text(t.value_type) and arr.dictionary.null_count == 0:
        # A tag column: hash its dictionary as it is, rather than decode it and encode it again.
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return valid, _strings_bits(arr.dictionary, arr.indices)
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if (
        pa.types.is_timestamp(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
    ):
        if pa.types.is_timestamp(t):
            arr = arr.cast(pa.int64())
        filled = arr.fill_null(False if pa.types.is_boolean(t) else 0)
        values = np.asarray(filled.to_numpy(zero_copy_only=False))
        if values.dtype == np.bool_:
            bits = values.astype(np.uint64)
        elif values.dtype.kind == "f":
            bits = np.where(values == 0.0, 0.0, values).astype(np.float64).view(np.uint64)
        else:
            bits = values.astype(np.int64).view(np.uint64)
    else:  # strings: hash each distinct value once
        encoded = arr.dictionary_encode()
        bits = _strings_bits(encoded.dictionary, encoded.indices)
    return valid, bits


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _column_hashes(column: pa.ChunkedArray, seed: int) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each value of a column (nulls hash to one constant), seeded by the column."""
    valid, bits = _column_bits(column)
    return _seeded(valid, bits, seed)


def _seeded(valid: npt.NDArray[np.bool_], bits: npt.NDArray[np.uint64], seed: int) -> npt.NDArray[np.uint64]:
    return np.where(valid, _mix(bits ^ np.uint64(seed)), _NULL ^ np.uint64(seed))


def table_digest(table: pa.Table) -> str:
    """``<rows>:<hex>``: the sum modulo 2^64 (two lanes) of a hash of each row over every column by name;
    independent of row order, and of column order. Each column is converted once for both lanes."""
    names = sorted(table.column_names)
    columns = [_column_bits(table.column(name)) for name in names]
    seeds = [[_text_hash(f"{lane}:{name}") for name in names] for lane in (1, 2)]
    lanes = [0, 0]
    for at in range(0, table.num_rows, _SLICE):  # a slice's arrays stay in the CPU's cache
        for lane, lane_seeds in enumerate(seeds):
            row = np.zeros(min(_SLICE, table.num_rows - at), dtype=np.uint64)
            for (valid, bits), seed in zip(columns, lane_seeds, strict=True):
                row += _seeded(valid[at : at + _SLICE], bits[at : at + _SLICE], seed)
                row = _mix(row)
            lanes[lane] = (lanes[lane] + int(row.sum(dtype=np.uint64))) & _MASK
    return f"{table.num_rows}:{lanes[0]:016x}{lanes[1]:016x}"


_SLICE = 1 << 14  # rows per slice of the digest: 128 KiB per uint64 array


def metadata(
    table_schema: pa.Schema, *, job: str, start: int, end: int, tags: list[str], fields: list[str]
) -> pa.Schema:
    meta = {"version": FORMAT_VERSION, "job": job, "window": [start, end], "tags": tags, "fields": fields}
    return table_schema.with_metadata({META_KEY: json.dumps(meta).encode()})


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(meta: dict[bytes, bytes] | None) -> dict[str, Any]:
    return json.loads(meta[META_KEY]) if meta and META_KEY in meta else {}
