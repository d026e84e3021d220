"""tsbatch's exceptions. Retry decisions are taken on these types, never on aiohttp's or Celery's.

    TsbatchError
    ├── SourceError            the data a descriptor names cannot be used (outside the roots, changed)
    │   └── FluxQueryError         InfluxDB's annotated CSV holds an error table: the query failed
    ├── WriteError             a write to a route failed
    │   ├── TransientWriteError    worth retrying: 429, 503, other 5xx, timeouts, connection errors
    │   │   ├── TokenUnavailable       the route's token_file is missing, unreadable or empty (mid-rotation)
    │   │   └── SourceUnavailable      an object store (s3://, gcs://) did not answer a read: retried alike
    │   └── PermanentWriteError    retrying cannot help: 401, 403, 404 (misconfigured route)
    │       └── OutsideRetention       the server dropped points older than the bucket's retention (422)
    ├── RouteUnavailable       the route's shared circuit breaker is open: defer, it is not the chunk's fault
    ├── LeaseLost              this worker's claim on a chunk was taken over; stop without committing
    ├── RedisUnreachable       a command-line tool cannot reach Redis (workers ride restarts out instead)
    └── BucketApiError         the InfluxDB orgs/buckets API refused or failed (``tsbatch buckets``)

``config.ConfigError`` (settings), ``tsbatch.descriptor.DescriptorError`` (bad descriptors) and
``tsbatch.annotated_csv.AnnotatedCsvError`` (malformed annotated CSV, a ``ValueError``) live with the
code that raises them.
"""

from __future__ import annotations


class TsbatchError(Exception):
    """Base of every tsbatch error."""


class SourceError(TsbatchError):
    """A descriptor's source is unusable: outside the source roots, missing, or changed since planning."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class FluxQueryError(SourceError):
    """Flux reported a failed query inside the response: an annotated-CSV table whose header is
    ``,error,reference``, sent with HTTP 200, possibly after data rows.

    A ``SourceError`` (reason ``flux_error``), not a ``TransientWriteError``: the same query over the
    same data fails the same way (a syntax or type error, a missing bucket, a memory limit the query
    hits every time), so retrying it forever would only hold the window and its watermark hostage. The
    unit is dead-lettered at once with the server's message and never committed on a partial result;
    ``tsbatch dlq replay`` runs it again once the cause is fixed. ``line`` and ``raw`` say where it was.
    """

    def __init__(self, message: str, reference: str | None = None, *, line: int = 0, raw: str = "") -> None:
        ref = f" (reference {reference})" if reference else ""
        super().__init__(f"flux query failed: {message}{ref}", reason="flux_error")
        self.message = message
        self.reference = reference
        self.line = line
        self.raw = raw


class WriteError(TsbatchError):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientWriteError(WriteError):
    """A write that may succeed later. ``retry_after`` is the server's floor for the next attempt."""


class TokenUnavailable(TransientWriteError):
    """The route's ``token_file`` cannot be read now: a rotation replacing it, a secret volume remounting.
    Retried like any transient failure, never dead-lettered as a misconfigured route (issue #8)."""


class SourceUnavailable(TransientWriteError):
    """An object store failed a read in a way that may pass (timeout, reset, 5xx, throttling): the chunk
    is retried like a transient write, never dead-lettered for it. A missing object or a refused
    credential is a ``SourceError`` instead."""


class PermanentWriteError(WriteError):
    """A write that will fail the same way every time for this route. ``reason`` is the dead letter's."""

    reason = "route_rejected"


class OutsideRetention(PermanentWriteError):
    """InfluxDB dropped points older than the bucket's retention (422 ``partial write: dropped N points
    outside retention policy ...``). The same points are dropped on every attempt, so the unit is
    dead-lettered at once: never retried, never bisected as if some lines were malformed, and never
    counted against the route's breaker (the route is healthy; the data is too old for it).
    ``dropped`` is the server's count, when it gave one."""

    reason = "outside_retention"

    def __init__(self, message: str, *, status: int | None = None, dropped: int | None = None) -> None:
        super().__init__(message, status=status)
        self.dropped = dropped


class RouteUnavailable(TsbatchError):
    """The route's breaker is open; try again in ``wait_s``."""

    def __init__(self, message: str, *, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class LeaseLost(TsbatchError):
    """Another worker holds the chunk now; this one must not commit it."""


class BucketApiError(TsbatchError):
    """The InfluxDB v2 orgs/buckets API answered an error (``status``) or could not be reached
    (``status`` None). The message says what was asked and what the server said, never the token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RedisUnreachable(TsbatchError):
    """Redis did not answer a command-line tool's first PING. The message names host and port only:
    ``redis.url`` may hold a password."""
