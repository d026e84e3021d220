"""Semaphore-bounded, gzip-compressed writes to one route through ``InfluxDBClientAsync``.

The boundary where HTTP outcomes become tsbatch's own exceptions:

    204                    written
    422 / 500 "dropped N points outside retention policy" (2.7), "points beyond retention policy
                           dropped=N" (older): ``OutsideRetention``, permanent: the unit is dead-lettered
                           at once (reason ``outside_retention``), never retried nor bisected
    400 / 422              the batch holds lines the server refuses: ``RejectedBatch`` (the caller bisects)
    413                    too large: ``RejectedBatch`` with ``too_large`` (the caller splits)
    401 / 403 / 404        ``PermanentWriteError``: the route is misconfigured, retrying cannot help;
                           but a 401/403 first re-reads the token_file: a token rotated since is tried
                           at once, and a refusal soon after a rotation is transient (see ``_send``)
    429 / 503              ``TransientWriteError`` with the server's Retry-After as a floor, capped at
                           ``worker.retry_after_max_s``
    token_file unreadable  ``TokenUnavailable`` (transient)
    other 5xx, timeouts,
    connection errors      ``TransientWriteError``
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import random
import re
import time
from collections.abc import Mapping

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService
from isal import igzip, isal_zlib

from config import RouteSettings, constants
from tsbatch.errors import (
    OutsideRetention,
    PermanentWriteError,
    TokenUnavailable,
    TransientWriteError,
    WriteError,
)
from tsbatch.redaction import redact
from tsbatch.token import RouteToken
from workers import metrics
from workers.breaker import RouteGuard

PERMANENT_STATUSES = frozenset({401, 403, 404})
AUTH_STATUSES = frozenset({401, 403})
TOKEN_ROTATION_GRACE_S = 60.0  # a token refused this soon after the token_file changed may be too new
GATE_REFRESH_S = 0.1  # how stale this process's view of a route's Retry-After pause may be
BATCH_RETRY_CAP_S = 5.0  # in-task backoff stays short: a longer outage is Celery's to wait out
REJECT_STATUSES = frozenset({400, 422})
# InfluxDB 2.7's wording (docs-v2 "Troubleshoot issues writing data", influxdb#26257) and the older one
# (InfluxDB 1.x and 2.0, influxdb#9093, answered with 500 by 2.0: dojot/dojot#2216).
RETENTION_DROPPED = re.compile(
    r"dropped (?P<n>\d+) points? outside retention policy|points beyond retention policy dropped=(?P<old>\d+)"
)
RETENTION_STATUSES = frozenset({422, 500})


class RejectedBatch(WriteError):
    """The server refused (some of) a batch's lines; ``too_large`` when it refused the body's size."""

    def __init__(self, message: str, *, status: int, too_large: bool = False) -> None:
        super().__init__(message, status=status)
        self.too_large = too_large


def compress(body: bytes, level: int) -> bytes:
    """gzip at ``level``: 1-3 with ISA-L's igzip, 4-9 with zlib.

    igzip level 1 compresses a 5,000-line body in 0.3 ms, 4.5x faster than zlib level 1, and smaller
    (ratio 0.13 against 0.17): at that speed a thread hop costs more than it saves, so it runs on the
    loop (issue #4 profile: zlib in a thread was 12% of a worker)."""
    if level <= isal_zlib.ISAL_BEST_COMPRESSION:
        return igzip.compress(body, level)
    return gzip.compress(body, level)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _body_text(body: object, *, limit: int = 500) -> str:
    """A server's answer as it goes into error messages (logs, the DLQ, task results): a proxy or a
    server that echoes the request's ``Authorization`` header must not put the token there."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return redact(str(body or ""))[:limit]


def outside_retention(route: str, status: int, text: str) -> OutsideRetention | None:
    """``OutsideRetention`` if the answer says points were dropped for being older than the bucket's
    retention. A bisection would only find that every old line is "bad", one request per line, and a
    retry would be dropped the same way: so neither happens."""
    found = RETENTION_DROPPED.search(text)
    if found is None:
        return None
    dropped = int(found.group("n") or found.group("old"))
    duration = re.search(r"retention policy of duration (\S+)", text)
    of = f" of {duration.group(1)}" if duration else ""
    return OutsideRetention(
        f"route {route}: {status}: the server dropped {dropped} points older than the bucket's retention"
        f"{of} (InfluxDB keeps nothing older; it wrote the rest of the batch): {text[:300]}",
        status=status,
        dropped=dropped,
    )


def classify(
    err: ApiException, route: str, *, retry_after_max_s: float = constants.RETRY_AFTER_MAX_S
) -> WriteError:
    status = int(err.status or 0)
    text = _body_text(err.body)
    headers: Mapping[str, str] = err.headers or {}
    if status in RETENTION_STATUSES:
        outside = outside_retention(route, status, _body_text(err.body, limit=4000))
        if outside is not None:
            return outside
    if status in REJECT_STATUSES:
        return RejectedBatch(f"route {route}: {status} {text}", status=status)
    if status == 413:
        return RejectedBatch(f"route {route}: 413 request too large", status=status, too_large=True)
    if status in PERMANENT_STATUSES:
        return PermanentWriteError(
            f"route {route}: {status} {err.reason or ''} {text}".strip() + " (check the route's url, org, "
            "bucket and token)",
            status=status,
        )
    if status == 0:
        return TransientWriteError(f"route {route}: {err.reason}", status=None)
    message = f"route {route}: {status} {text}"
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None and retry_after > retry_after_max_s:
        # Keep what the server asked for in the message: operators see it in the logs and the history.
        message += f" (Retry-After {headers.get('Retry-After')!r} capped at {retry_after_max_s:g}s)"
        retry_after = retry_after_max_s
    return TransientWriteError(message, status=status, retry_after=retry_after)


class RouteWriter:
    """Writes line-protocol bodies to one route, at most ``writes_in_flight`` at a time."""

    def __init__(
        self,
        route_name: str,
        route: RouteSettings,
        *,
        writes_in_flight: int,
        gzip_level: int,
        guard: RouteGuard | None = None,
        retries: int = 0,
        retry_max_wait_s: float = 0.0,
        retry_after_max_s: float = constants.RETRY_AFTER_MAX_S,
    ) -> None:
        self.name = route_name
        self.route = route
        self.gzip_level = gzip_level
        self.slots = asyncio.Semaphore(writes_in_flight)
        self.guard = guard
        self.retries = retries
        self.retry_max_wait_s = retry_max_wait_s
        self.retry_after_max_s = retry_after_max_s
        self.token = RouteToken(route_name, route)
        # The breaker may be counting failures (ours or another worker's): the next success resets it.
        # Without this flag every write paid a Redis round trip: ~7% of worker time (issue #4 profile).
        self.breaker_dirty = False
        self._gate_until = 0.0  # monotonic time until which this route is paused, as last seen
        self._gate_seen = -1.0  # when the shared gate was last read
        # Created inside the running loop, as influxdb-client's README requires for the async client.
        # No token here: each request sets the token_file's current one (see _authorize).
        self.client = InfluxDBClientAsync(
            url=route.url,
            org=route.org,
            timeout=int(route.timeout_s * 1000),
            enable_gzip=False,  # we compress ourselves: igzip level 1 (see compress)
        )
        self._service = WriteService(self.client.api_client)

    async def close(self) -> None:
        await self.client.close()

    async def write(self, body: bytes, *, precision: str) -> None:
        """Send one batch, retrying transient failures a few times; raise a ``WriteError`` subtype if
        it cannot be written now. Every outcome is reported to the route's shared breaker."""
        encoding = "identity"
        if self.gzip_level:
            body = compress(body, self.gzip_level)
            encoding = "gzip"
        attempt = 0
        while True:
            await self._hold_while_throttled()
            try:
                await self._send(body, precision, encoding)
            except TransientWriteError as e:
                if not isinstance(e, TokenUnavailable):  # our file, not the route's failure
                    await self._report_failure(e, "transient")
                attempt += 1
                delay = max(
                    random.uniform(0, min(BATCH_RETRY_CAP_S, 0.25 * 2**attempt)), e.retry_after or 0.0
                )
                if attempt > self.retries or delay > self.retry_max_wait_s:
                    raise
                metrics.BATCH_RETRIES.labels(self.name).inc()
                if self.guard:
                    await asyncio.to_thread(self.guard.count, "retries")
                await asyncio.sleep(delay)
            except PermanentWriteError as e:
                await self._report_failure(e, "permanent")
                raise
            else:
                if self.guard and self.breaker_dirty:
                    self.breaker_dirty = False
                    await asyncio.to_thread(self.guard.success, self.name)
                return

    async def _hold_while_throttled(self) -> None:
        """Wait out a Retry-After that any worker received for this route; a long one defers the chunk.

        The shared gate is read at most every ``GATE_REFRESH_S``, so another worker's 429 reaches this
        one within that time, and writes do not each pay a Redis round trip."""
        if self.guard is None:
            return
        now = time.monotonic()
        if now - self._gate_seen >= GATE_REFRESH_S:
            self._gate_seen = now
            paused = await asyncio.to_thread(self.guard.paused_for, self.name)
            self._gate_until = max(self._gate_until, now + paused)
        wait = self._gate_until - now
        if wait > self.retry_max_wait_s:
            raise TransientWriteError(f"route {self.name}: throttled for {wait:.1f}s", retry_after=wait)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _report_failure(self, err: WriteError, kind: str) -> None:
        if self.guard is None or isinstance(err, OutsideRetention):
            # The route answered and is healthy; the data is too old for it. Counting that against the
            # breaker would hold every other chunk's writes back.
            return
        self.breaker_dirty = True
        if err.retry_after:
            self._gate_until = max(self._gate_until, time.monotonic() + err.retry_after)
            await asyncio.to_thread(self.guard.pause, self.name, err.retry_after)
            metrics.ROUTE_PAUSES.labels(self.name).inc()
        if await asyncio.to_thread(self.guard.failure, self.name, kind=kind, reason=str(err)):
            metrics.BREAKER_OPENS.labels(self.name).inc()

    async def _send(self, body: bytes, precision: str, encoding: str) -> None:
        """Post with the token_file's current token. A 401/403 re-reads the file once: a token rotated
        since this write read it is tried at once; a refusal soon after a rotation is transient, since
        the server may not know the new token yet (issue #8)."""
        async with self.slots:
            token = self._authorize()
            try:
                await self._post(body, precision, encoding)
                return
            except PermanentWriteError as e:
                if e.status not in AUTH_STATUSES or self.token.reread() == token:
                    raise self._refused(e) from None
            self._authorize()
            try:
                await self._post(body, precision, encoding)
            except PermanentWriteError as e:
                raise self._refused(e) from None

    def _refused(self, err: PermanentWriteError) -> WriteError:
        if err.status in AUTH_STATUSES and self.token.changed_within(TOKEN_ROTATION_GRACE_S):
            return TransientWriteError(
                f"{err} (the token_file changed in the last {TOKEN_ROTATION_GRACE_S:g}s: "
                "the server may not know the new token yet)",
                status=err.status,
            )
        return err

    def _authorize(self) -> str:
        """Set the current token on the live client, and return it. ``ApiClientAsync`` copies its
        ``default_headers`` into a request before the request's first suspension, so the ``_post``
        awaited right after this call carries this token, whatever other writes set later."""
        token = self.token.current()
        headers = self.client.api_client.default_headers
        if token:
            headers["Authorization"] = f"Token {token}"
        else:
            headers.pop("Authorization", None)
        return token

    @metrics.observed_write
    async def _post(self, body: bytes, precision: str, encoding: str) -> None:
        try:
            await self._service.post_write_async(
                org=self.route.org,
                bucket=self.route.bucket,
                body=body,
                precision=precision,
                content_encoding=encoding,
                content_type="text/plain; charset=utf-8",
            )
        except ApiException as e:
            raise classify(e, self.name, retry_after_max_s=self.retry_after_max_s) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            # The body may have reached the server: retrying is safe because a point rewritten with the
            # same series, field and timestamp overwrites itself, and the ledger commits once.
            raise TransientWriteError(f"route {self.name}: {type(e).__name__}: {e}") from None
