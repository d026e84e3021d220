"""Windows on ``influxdb2`` routes: the raw points of a window through ``POST /api/v2/query``, and server
mode, where the whole window runs as one Flux query inside InfluxDB.

The query is rendered from ``config/flux/`` (tsbatch/flux.py: InfluxDB OSS has no query parameters, so
every value is type-checked and escaped). The answer is annotated CSV, parsed as it streams
(tsbatch/annotated_csv.py); Flux sends a failure as an error table with HTTP 200, possibly after data
rows, and the parser raises ``FluxQueryError`` for it: the window is dead-lettered with the server's
message, never committed on what was read before. influxdb-client's default timeout (10 s) is too short
for a window: ``routes.<name>.read_timeout_s`` (300 s) bounds each query instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np

from tsbatch.annotated_csv import AnnotatedCsvError, AnnotatedCsvParser, Row
from tsbatch.errors import SourceError
from tsbatch.flux import render_copy, render_downsample, render_read
from tsbatch.windows import Definition, WindowDescriptor
from workers.aggregate import Fingerprint
from workers.harness import Attempt
from workers.readers import READ_CHUNK_BYTES, Block, ReadError, http_error
from workers.runtime import Runtime

BLOCK_ROWS = 10_000  # rows of one series gathered into a block before it is aggregated
DIALECT = {"header": True, "delimiter": ",", "annotations": ["datatype", "group", "default"]}


async def query(rt: Runtime, route_name: str, flux: str) -> AsyncIterator[Row]:
    """The rows of a Flux query's annotated-CSV answer, as they arrive."""
    route = rt.settings.route(route_name)
    token = rt.writer(route_name).token.current()
    headers = {"Accept": "application/csv", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    body = {"query": flux, "type": "flux", "dialect": DIALECT}
    timeout = aiohttp.ClientTimeout(total=route.read_timeout_s)
    parser = AnnotatedCsvParser()
    try:
        async with rt.http().post(
            f"{route.url}/api/v2/query",
            params={"org": route.org},
            json=body,
            headers=headers,
            timeout=timeout,
        ) as resp:
            if resp.status != 200:
                raise http_error(route_name, resp.status, await resp.text())
            async for piece in resp.content.iter_chunked(READ_CHUNK_BYTES):
                for row in parser.feed(piece):
                    yield row
        for row in parser.close():
            yield row
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ReadError(f"route {route_name}: query failed: {type(e).__name__}: {e}") from None
    except AnnotatedCsvError as e:
        raise SourceError(f"route {route_name}: unreadable query answer: {e}", reason="bad_answer") from None


def _block(key: tuple[str, tuple[tuple[str, str], ...], str], times: list[int], values: list[Any]) -> Block:
    if all(type(v) is float for v in values):
        array = np.asarray(values, dtype=np.float64)
    elif all(type(v) is int for v in values):
        array = np.asarray(values, dtype=np.int64)
    else:
        array = np.asarray(values, dtype=object)
    return Block(key[0], key[1], key[2], np.asarray(times, dtype=np.int64), array)


async def read_influx(rt: Runtime, defn: Definition, start: int, end: int) -> AsyncIterator[Block]:
    """The window's raw points as blocks: Flux sends one table per series and field, sorted by time."""
    route = rt.settings.route(defn.source)
    flux = render_read(defn, start, end, bucket=route.bucket)
    key: tuple[str, tuple[tuple[str, str], ...], str] | None = None
    times: list[int] = []
    values: list[Any] = []
    async for row in query(rt, defn.source, flux):
        try:
            row_key = (str(row.measurement), tuple(sorted(row.tags().items())), str(row.field))
            t, v = row.time_ns, row.value
        except AnnotatedCsvError as e:
            raise SourceError(f"route {defn.source}: {e}", reason="bad_answer") from None
        if v is None:
            continue
        if row_key != key or len(times) >= BLOCK_ROWS:
            if key is not None and times:
                yield _block(key, times, values)
            key, times, values = row_key, [], []
        times.append(t)
        values.append(v)
    if key is not None and times:
        yield _block(key, times, values)


class ServerOutput:
    """What a server-mode query wrote, as its answer tells (``to()`` passes its rows through)."""

    def __init__(self) -> None:
        self.points = 0
        self.size = 0
        self._digest = hashlib.sha256()

    def sha256(self) -> str:
        return self._digest.hexdigest()


async def run_server_window(
    rt: Runtime, d: WindowDescriptor, attempt: Attempt
) -> tuple[int, Any, Fingerprint]:
    """Fingerprint the window's raw points (for ``windows verify``), then run it inside InfluxDB."""
    defn = d.definition
    fp = Fingerprint()
    async for block in read_influx(rt, defn, d.start, d.end):
        attempt.check()
        fp.add(block)
    source, target = rt.settings.route(defn.source), rt.settings.route(defn.target)
    render = render_downsample if defn.kind == "downsample" else render_copy
    flux = render(defn, d.start, d.end, bucket=source.bucket, target_bucket=target.bucket, org=target.org)
    out = ServerOutput()
    async for row in query(rt, defn.source, flux):
        out.points += 1
        out.size += len(row.raw) + 1
        out._digest.update(row.raw.encode() + b"\n")
    return fp.count, out, fp
