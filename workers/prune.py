"""``delete_after_archive = true``: once a window's archive is committed (written, read back and verified),
delete the window's points from the source through the InfluxDB v2 delete API.

Deletion runs from the scheduler's tick, after the commit, never inside the archive work: a worker that
deleted and then lost its lease would leave a retry reading an empty window and overwriting a good file
with an empty one. A delete is idempotent (deleting what is gone deletes nothing), so at-least-once is
enough; ``P:deleted:<job>`` records the windows done. The predicate names the measurement and the job's
tag filters, never ``_field``: the delete API silently ignores it (influxdata/influxdb#20399), which
would delete every field of the window.
"""

from __future__ import annotations

import logging

import aiohttp

from tsbatch.windows import Definition
from workers.readers import ReadError, http_error
from workers.runtime import Runtime

log = logging.getLogger("tsbatch.prune")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def predicate(defn: Definition) -> str:
    """``_measurement="cpu" AND region="eu"``: the delete API's predicate syntax (no OR, no regex)."""
    parts = [f"_measurement={_quoted(defn.measurement)}"]
    parts += [f"{_quoted(k)[1:-1]}={_quoted(v)}" for k, v in sorted(defn.tags.items())]
    return " AND ".join(parts)


def _rfc3339_ns(ns: int) -> str:
    from datetime import UTC, datetime

    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


async def delete_window(rt: Runtime, defn: Definition, start: int, end: int) -> None:
    """Delete ``[start, end)`` of the job's measurement (and tag filters) from its source bucket."""
    route = rt.settings.route(defn.source)
    token = rt.writer(defn.source).token.current()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    body = {
        "start": _rfc3339_ns(start * 1_000_000_000),
        "stop": _rfc3339_ns(end * 1_000_000_000 - 1),  # both ends are inclusive: stop before the next window
        "predicate": predicate(defn),
    }
    params = {"org": route.org, "bucket": route.bucket}
    timeout = aiohttp.ClientTimeout(total=route.read_timeout_s)
    try:
        async with rt.http().post(
            f"{route.url}/api/v2/delete", params=params, json=body, headers=headers, timeout=timeout
        ) as resp:
            if resp.status != 204:
                raise http_error(defn.source, resp.status, await resp.text())
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ReadError(f"route {defn.source}: delete failed: {type(e).__name__}: {e}") from None
