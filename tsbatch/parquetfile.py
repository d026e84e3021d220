"""Parquet sources, shared by the producer (which plans a file's row groups into chunks) and the workers
(which read them): a file beneath ``sources.roots`` or an object under ``sources.url_roots``, opened
once; its footer; the bytes of a run of row groups; the Arrow types tsbatch can write as line protocol.

A path is opened as every other format's (``tsbatch.sources.open_source``: no symlink below a root, a
regular file, read through one descriptor). A ``file://`` URL is opened the same way, its roots being
the ``file://`` entries of ``sources.url_roots``. Any other URL goes through fsspec (``s3://`` through
s3fs, ``gcs://`` through gcsfs when installed), whose credentials and endpoint come from the store's
own environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, which botocore
honours), never from a descriptor. fsspec is imported only for such a URL: it loads aiohttp, which the
producer must not (tests/test_outbox.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tsbatch.descriptor import FieldKind, Mapping
from tsbatch.errors import SourceError, SourceUnavailable, TsbatchError
from tsbatch.sources import check_url, is_url, open_source, shown_url

MAGIC = b"PAR1"
TAIL_BYTES = 8  # the footer's length (4 bytes, little-endian), then MAGIC
FIRST_TAIL_READ = 1 << 16  # the first read of a footer: one request covers most footers
METADATA_KEY = b"tsbatch"  # {"version": 1, "tags": [...], "fields": [...]}, written by archive jobs
METADATA_VERSION = 1


@dataclass(frozen=True, slots=True)
class ParquetSource:
    """A Parquet file opened once: ``read`` serves byte ranges of that very file or object."""

    name: str  # the real path of a local file; else the URL
    size: int
    mtime_ns: int  # 0 where a store reports no modification time
    version: str  # a URL's ETag, else its modification time; "" for a local file (path, size, mtime, hash)
    local: bool  # read here, so its row groups' bytes are hashed at planning; an object's are not
    read: Callable[[int, int], bytes]  # bytes start..end

    def footer(self) -> bytes:
        """The file's footer (Thrift metadata) with its 8-byte tail; ``SourceError`` if not Parquet."""
        if self.size < len(MAGIC) + TAIL_BYTES:
            raise SourceError(f"{self.name}: not a Parquet file ({self.size} bytes)", reason="bad_header")
        tail = self.read(max(0, self.size - FIRST_TAIL_READ), self.size)
        if tail[-4:] != MAGIC:
            raise SourceError(f"{self.name}: not a Parquet file (no PAR1 at its end)", reason="bad_header")
        length = int.from_bytes(tail[-8:-4], "little")
        if length + TAIL_BYTES + len(MAGIC) > self.size:
            raise SourceError(f"{self.name}: Parquet footer length {length} is wrong", reason="bad_header")
        if length + TAIL_BYTES <= len(tail):
            return tail[-(length + TAIL_BYTES) :]
        return self.read(self.size - TAIL_BYTES - length, self.size - TAIL_BYTES) + tail[-TAIL_BYTES:]


def read_metadata(footer: bytes, name: str) -> Any:
    """The ``pyarrow.parquet.FileMetaData`` of a footer (from ``ParquetSource.footer``)."""
    try:
        return pq.read_metadata(pa.BufferReader(MAGIC + footer))
    except (OSError, pa.ArrowException) as e:
        raise SourceError(f"{name}: Parquet footer cannot be read: {e}", reason="bad_header") from None


def row_group_span(md: Any, index: int) -> tuple[int, int]:
    """The bytes of row group ``index``: from its first column chunk's first page to its last one's end."""
    rg = md.row_group(index)
    start, end = None, 0
    for c in range(rg.num_columns):
        cc = rg.column(c)
        offsets = [cc.data_page_offset]
        if cc.has_dictionary_page and cc.dictionary_page_offset:
            offsets.append(cc.dictionary_page_offset)
        first = min(offsets)
        start = first if start is None else min(start, first)
        end = max(end, first + cc.total_compressed_size)
    return (start or 0, end)


def metadata_columns(md: Any, name: str) -> tuple[list[str], list[str]] | None:
    """The tags and fields the ``tsbatch`` metadata key names, or None when the file has none."""
    raw = (md.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        ok = isinstance(meta, dict) and meta.get("version") == METADATA_VERSION
        tags, fields = (meta.get("tags"), meta.get("fields")) if ok else (None, None)
        if (
            isinstance(tags, list)
            and isinstance(fields, list)
            and all(isinstance(c, str) for c in tags + fields)
        ):
            return tags, fields
    except (ValueError, TypeError):
        pass
    raise SourceError(
        f'{name}: schema metadata \'tsbatch\' is not {{"version": 1, "tags": [...], "fields": [...]}}',
        reason="bad_schema",
    )


def is_text(t: Any) -> bool:
    """A string column, or a dictionary of strings (tags, measurement, string fields)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def field_kind(t: Any) -> FieldKind | None:
    """The line-protocol kind a column of type ``t`` is written as; None for types tsbatch cannot write."""
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_signed_integer(t):
        return "int"
    if pa.types.is_unsigned_integer(t):
        return "uint"
    if pa.types.is_boolean(t):
        return "bool"
    return "string" if is_text(t) else None


def mapping_problem(schema: Any, mapping: Mapping) -> str | None:
    """What makes ``schema`` (an Arrow schema) unreadable through ``mapping``, or None."""
    types = {name: schema.field(name).type for name in schema.names}
    time = types.get(mapping.time_column)
    if time is None or not pa.types.is_timestamp(time):
        return f"no timestamp column '{mapping.time_column}'"
    texts = [*mapping.tag_columns, *([mapping.measurement_column] if mapping.measurement_column else [])]
    for column in texts:
        if column not in types or not is_text(types[column]):
            return f"no string column '{column}'"
    for spec in mapping.field_columns:
        if spec.name not in types:
            return f"no column '{spec.name}'"
        if field_kind(types[spec.name]) != spec.kind:
            return f"column '{spec.name}' is {types[spec.name]}, not a {spec.kind} field"
    return None


@contextlib.contextmanager
def open_parquet(
    location: str | Path, *, roots: Sequence[Path], url_roots: Sequence[str]
) -> Iterator[ParquetSource]:
    """Open a path beneath ``roots`` or a URL under ``url_roots``; else ``SourceError``. A store that
    fails to answer raises ``SourceUnavailable`` (transient)."""
    text = str(location)
    if not is_url(text):
        with _local(text, roots, name=None) as src:
            yield src
        return
    url = check_url(text, url_roots)
    if url.startswith("file://"):
        file_roots = [Path(r.removeprefix("file://")) for r in url_roots if r.startswith("file:///")]
        with _local(url.removeprefix("file://"), file_roots, name="file://") as src:
            yield src
        return
    yield _remote(url)


@contextlib.contextmanager
def _local(path: str, roots: Sequence[Path], *, name: str | None) -> Iterator[ParquetSource]:
    import os

    with open_source(path, roots) as src:

        def read(start: int, end: int) -> bytes:
            data = os.pread(src.fd, end - start, start)
            if len(data) != end - start:
                raise SourceError(f"{src.path}: shorter than planned", reason="source_changed")
            return data

        shown = f"{name}{src.path}" if name else str(src.path)
        yield ParquetSource(shown, src.size, src.mtime_ns, "", True, read)


def _remote(url: str) -> ParquetSource:
    shown = shown_url(url)
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise SourceError(f"{shown}: cannot read this kind of URL: {e}", reason="bad_url") from None
    with store_errors(shown):
        fs.invalidate_cache(path)  # a listing cached by an earlier call must not hide a replaced object
        info = fs.info(path)
    if info.get("type") != "file":
        raise SourceError(f"{shown}: not a file (a prefix or directory?)", reason="not_a_file")
    modified = next(
        (info[k] for k in ("LastModified", "mtime", "updated", "last_modified") if info.get(k)), None
    )
    version = info.get("ETag") or info.get("etag") or (f"mtime:{modified}" if modified is not None else "")

    def read(start: int, end: int) -> bytes:
        with store_errors(shown):
            data: bytes = fs.cat_file(path, start=start, end=end)
        if len(data) != end - start:
            raise SourceError(f"{shown}: shorter than planned", reason="source_changed")
        return data

    return ParquetSource(url, int(info["size"]), _ns(modified), str(version), False, read)


def _ns(modified: object) -> int:
    if isinstance(modified, datetime):
        return int(modified.timestamp()) * 1_000_000_000 + modified.microsecond * 1000
    if isinstance(modified, int | float):
        return int(modified * 1_000_000_000)
    return 0


@contextlib.contextmanager
def store_errors(shown: str) -> Iterator[None]:
    """An object store's exceptions as tsbatch's: missing or refused is the source's fault (dead-lettered
    with the reason); anything else (timeouts, resets, 5xx, throttling) may pass and is retried."""
    try:
        yield
    except TsbatchError:
        raise
    except FileNotFoundError:
        raise SourceError(f"{shown}: no such object", reason="not_found") from None
    except PermissionError as e:
        raise SourceError(f"{shown}: access refused: {e}", reason="unreadable") from None
    except IsADirectoryError:
        raise SourceError(f"{shown}: not a file (a prefix or directory?)", reason="not_a_file") from None
    except Exception as e:
        if type(e).__name__ == "NoCredentialsError":  # botocore's, named to keep botocore unimported
            raise SourceError(
                f"{shown}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)",
                reason="unreadable",
            ) from None
        # Anything else from the store's client library (botocore, aiohttp, google-auth, ...).
        raise SourceUnavailable(f"{shown}: {type(e).__name__}: {e}") from None
