"""Readers: the raw points of one window of a job, streamed from the job's source route.

One contract for every route kind: ``read(defn, start, end)`` yields ``Block``s, each the points of one
series (measurement, tags, field) as arrays, in pieces of bounded size. A series may come in several
blocks, in any order; nothing is held beyond the block being read, so memory is bounded by the number of
series (the aggregates' state), never by the points in a window.

- ``victoriametrics``: ``GET /api/v1/export`` with the ``match[]`` selectors of tsbatch/reads.py,
  ``start`` and ``end`` (both inclusive: the window's end is asked as end - 1 ms) and
  ``max_rows_per_line``.
- ``influxdb2``: ``POST /api/v2/query`` with the Flux of ``config/flux/read.flux``; the annotated-CSV
  answer is parsed as a stream, and an error table (which can follow HTTP 200 and data rows) fails the
  window instead of committing it half read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

from config import RouteSettings
from tsbatch.errors import PermanentWriteError, TransientWriteError
from tsbatch.reads import vm_selectors
from tsbatch.windows import Definition

EXPORT_ROWS_PER_LINE = 50_000  # a series' points arrive in lines of at most this many (~1 MB of JSON)
READ_CHUNK_BYTES = 1 << 20


@dataclass(slots=True)
class Block:
    """Points of one series: ``times_ns`` (int64) and ``values`` (float64 for numbers; object for strings
    and booleans, which only count, first and last aggregate)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]  # sorted by key
    field: str
    times_ns: npt.NDArray[np.int64]
    values: npt.NDArray[Any]


class ReadError(TransientWriteError):
    """A window's read failed in a way that may mend (a timeout, a 5xx, a dropped connection)."""


class ReadRefused(PermanentWriteError):
    """The source refused the read (401/403/404, a bad query): retrying cannot help."""


def http_error(route: str, status: int, text: str) -> Exception:
    message = f"route {route}: read answered HTTP {status}: {text[:300]}"
    if status in (401, 403, 404, 400, 422):
        return ReadRefused(message, status=status)
    return ReadError(message, status=status)


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines, read in 1 MiB pieces (aiohttp's readline refuses long lines)."""
    rest = b""
    async for piece in resp.content.iter_chunked(READ_CHUNK_BYTES):
        rest += piece
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line:
                yield line
    if rest.strip():
        yield rest


async def read_victoria(
    session: aiohttp.ClientSession,
    route_name: str,
    route: RouteSettings,
    defn: Definition,
    start: int,
    end: int,
) -> AsyncIterator[Block]:
    params: list[tuple[str, str]] = [("match[]", s) for s in vm_selectors(defn)]
    params += [
        ("start", str(start)),
        ("end", f"{end * 1000 - 1}e-3"),  # inclusive: the last millisecond of the window
        ("max_rows_per_line", str(EXPORT_ROWS_PER_LINE)),
    ]
    prefix = defn.measurement + "_"
    timeout = aiohttp.ClientTimeout(total=route.read_timeout_s)
    try:
        async with session.get(f"{route.url}/api/v1/export", params=params, timeout=timeout) as resp:
            if resp.status != 200:
                raise http_error(route_name, resp.status, await resp.text())
            async for line in _lines(resp):
                row = orjson.loads(line)
                metric: dict[str, str] = row["metric"]
                name = metric.pop("__name__", "")
                if not name.startswith(prefix) or len(name) == len(prefix):
                    continue
                times = np.asarray(row["timestamps"], dtype=np.int64) * 1_000_000
                values = np.asarray(row["values"], dtype=np.float64)
                yield Block(
                    defn.measurement, tuple(sorted(metric.items())), name[len(prefix) :], times, values
                )
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ReadError(f"route {route_name}: read failed: {type(e).__name__}: {e}") from None
