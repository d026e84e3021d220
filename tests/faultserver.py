"""Fault-injecting InfluxDB v2 write-API server for tests, which also answers queries with recorded bodies.

Tests cannot run a real InfluxDB 2 here. They write to a real VictoriaMetrics, which accepts the
InfluxDB v2 line-protocol write API, and put this server in front of it when they need failures that no
real server produces on demand: 429 with ``Retry-After``, 503, 500, 413, 401, partial writes, slow
answers, connections reset without an answer, and requests that are never answered.

Run it as a process::

    python -m tests.faultserver --port PORT --upstream http://127.0.0.1:VMPORT [--host 127.0.0.1]
                                [--token T] [--seed N] [--org NAME ...]

It prints one line ``READY <port>`` (``--port 0`` picks a free port) once it listens, and stops cleanly
on SIGTERM or SIGINT. From sync tests, use :class:`FaultServer`, which starts and drives the process.

InfluxDB endpoints
------------------
``POST /api/v2/write?org=&bucket=&precision=``
    Body is line protocol, gzip when ``Content-Encoding: gzip``. The checks run in InfluxDB's order:
    token (only with ``--token``: anything but ``Authorization: Token T`` gets 401), then the request
    itself (400 for an invalid precision, a bad gzip body or an empty body; 404 without ``bucket``), then
    the fault rules, then the write is forwarded, decompressed, to the upstream ``/api/v2/write`` with
    the same org, bucket and precision (``ns`` when absent, as InfluxDB assumes, whereas VictoriaMetrics
    would guess the unit from the number of digits). The upstream's status is returned: 204 normally.
``GET /ping``
    204, with InfluxDB's ``X-Influxdb-Version``/``X-Influxdb-Build`` headers.
``GET /health``
    200 ``{"name": "influxdb", "message": "ready for queries and writes", "status": "pass", ...}``.
``POST /api/v2/query?org=``
    Recorded (see ``/__control/queries``) and answered with the next of the answers the test gave
    (``PUT /__control/query_answers``): its bytes as they are, e.g. a recorded annotated-CSV body, an
    error table after data rows with status 200 included. Nothing is executed: no Flux runs here. Token
    check as for writes (401); a body that is not gzip when ``Content-Encoding: gzip`` says so is a 400.

``/api/v2/orgs``, ``/api/v2/buckets``, ``/api/v2/buckets/{id}`` (GET, POST, PATCH)
    The organizations and buckets API, with state kept in the server (orgs from ``--org``, default
    ``local``, or ``PUT /__control/orgs``): see ``tests/faultbuckets.py``. Token check as for writes.

Errors have InfluxDB 2's body, ``{"code": "<code>", "message": "<message>"}``, with
``Content-Type: application/json; charset=utf-8`` and ``X-Platform-Error-Code: <code>``; the code
follows the status as in InfluxDB (400 invalid, 401 unauthorized, 404 not found, 413 request too large,
422 unprocessable entity, 429 too many requests, 500 internal error, 503 unavailable).

Control API (JSON)
------------------
``POST /__control/faults``
    Replaces the fault rules. Body: a list of rules, or ``{"rules": [...], "seed": N}`` (the seed
    re-seeds the random generator that ``probability`` uses; ``--seed N`` seeds it at start). Answers
    the rules as stored; 400 with ``{"error": ...}`` for an invalid rule (unknown keys are errors).
``GET /__control/faults``
    The rules, with ``count`` as what is left and ``fired`` as how often each fired.
``DELETE /__control/faults``
    Clears the rules.
``GET /__control/requests[?lines=1]``
    Every write request so far, oldest first, in flight ones included: ``id``, ``arrival_monotonic``
    (``time.monotonic()``, system-wide on Linux so comparable with the test's), ``arrival_wall``,
    ``method``, ``path``, ``query`` (``org``, ``bucket``, ``precision``; ``null`` when absent),
    ``headers`` (``Authorization`` shown as ``<redacted>``), ``body_size`` (bytes as received, so
    compressed), ``line_count`` (after decompression; blank and ``#`` comment lines not counted),
    ``status`` (sent, ``null`` if none was), ``outcome`` (``forwarded``, ``fault``, ``partial``,
    ``reset``, ``hang``, ``unauthorized``, ``invalid``, ``upstream_error``), ``fault_rule`` (index of
    the rule that fired, or ``null``), ``mode``, ``forwarded_lines``, ``upstream_status``,
    ``responded_monotonic``, ``client_gave_up`` (a ``hang`` whose client closed the connection),
    ``in_flight`` (still being handled) and, only with ``?lines=1``, ``lines``.
``DELETE /__control/requests``
    Clears the record (and with it the stats).
``PUT /__control/token``
    Body ``{"token": "T"}``: from now on only ``Authorization: Token T`` is accepted (a rotation on the
    server's side); ``{"token": null}`` accepts any. Answers ``{"token_required": true|false}``.
``PUT /__control/query_answers``
    Body: a list of answers ``{"body": "...", "status": 200, "content_type": "text/csv; charset=utf-8"}``
    (only ``body`` is required). Each query takes the next one; the last one answers every query after
    it. No answers: 200 with an empty body. Answers ``{"answers": n}``.
``GET /__control/queries``
    Every query request so far, oldest first: ``id``, ``arrival_monotonic``, ``method``, ``path``,
    ``query`` (``org``, ``orgID``), ``headers`` (``Authorization`` redacted), ``body`` (text, after
    decompression: the JSON that the client sent) and ``status``.
``DELETE /__control/queries``
    Clears that record.
``PUT /__control/orgs``, ``GET /__control/buckets``, ``GET|DELETE /__control/admin``
    The orgs, the buckets, and the record of orgs/buckets API requests (``tests/faultbuckets.py``).
``GET /__control/stats``
    ``{"total", "in_flight", "by_status": {"204": n, ...}, "by_outcome": {...}, "by_rule": {"0": n},
    "lines_received", "lines_forwarded"}``, computed from the record.

A rule is a JSON object; rules are tried in order and the first that fires decides::

    {"status": 429,            # 400, 401, 413, 422, 429, 500, 503, ... (required for mode "respond")
     "retry_after": "2",       # Retry-After header value: seconds or an HTTP-date; null for none
     "probability": 0.5,       # fire with this probability (seeded generator); absent: always
     "count": 3,               # fire for the next 3 requests, then never again; absent: no limit
     "body": "...",            # the response body instead of the InfluxDB-like default
     "delay_s": 1.5,           # answer this late
     "mode": "respond",        # see below
     "reject_matching": "BAD", # only with status 400 or 422, see below
     "forward": false}         # "respond"/"reset"/"hang": forward the write upstream first

Modes:

* ``respond`` (default): answer ``status`` without writing anything (unless ``forward``).
* ``reset``: read the body, then close the TCP connection with an RST and no answer.
* ``hang``: read the body, then never answer; the handler ends when the client gives up (or the
  server stops, which drops the connection).
* ``partial``: forward only the first half of the lines (``n // 2``), then answer ``status`` (400 by
  default) with a partial-write body naming the dropped lines: 400 gives
  ``{"code": "invalid", "message": "partial write: unable to parse '<line>': invalid field format
  dropped=K"}`` (InfluxDB 1.x's partial-write wording), 422 gives InfluxDB 2 OSS's
  ``{"code": "unprocessable entity", "message": "failure writing points to database: partial write:
  ... dropped=K"}``. Up to 100 dropped lines are named, one ``unable to parse`` per line, joined by
  ``\\n``.
* ``slow``: forward normally, wait ``delay_s``, then answer the upstream's status.

``reject_matching``: the lines containing the substring are dropped and the rest forwarded, with the
``partial`` answer. A request without such lines does not fire the rule (and does not use up its
``count``): the next rules are tried, and normally the write is forwarded and answered 204.

Note that real InfluxDB 2 OSS rejects a whole batch with a line-protocol error (400,
``{"code": "invalid", "message": "unable to parse '<line>': <reason>"}``, one such phrase per bad line
joined by ``\\n``) and reports real partial writes (field type conflicts, points outside retention) as
422 ``failure writing points to database: partial write: ... dropped=K``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gzip
import json
import logging
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from tests.faultbuckets import BucketsApi

INFLUX_VERSION: Final = "v2.7.11"
"""Reported in ``X-Influxdb-Version`` and ``/health``."""

MODES: Final = frozenset({"respond", "reset", "hang", "partial", "slow"})
PRECISIONS: Final = frozenset({"ns", "us", "ms", "s"})
"""The precisions InfluxDB 2 accepts; anything else is a 400."""

ERROR_CODES: Final[Mapping[int, str]] = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request too large",
    422: "unprocessable entity",
    429: "too many requests",
    500: "internal error",
    501: "not implemented",
    503: "unavailable",
}
"""InfluxDB 2's error codes (kit/platform/errors) by the HTTP status it gives them."""

DEFAULT_MESSAGES: Final[Mapping[int, str]] = {
    401: "unauthorized access",
    403: "insufficient permissions for write",
    404: "bucket not found",
    413: "unable to read data: points batch is too large",
    429: "too many requests: write limit exceeded",
    500: "unexpected error writing points to database: fault injected",
    503: "service unavailable: fault injected",
}
MAX_NAMED_LINES: Final = 100
"""A partial-write message names at most this many dropped lines."""
QUERY_ANSWER_KEYS: Final = frozenset({"body", "status", "content_type"})
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8"
"""What InfluxDB 2 answers a query with."""
RULE_KEYS: Final = frozenset(
    {"status", "retry_after", "probability", "count", "body", "delay_s", "mode", "reject_matching", "forward"}
)
INFLUX_HEADERS: Final[Mapping[str, str]] = {"X-Influxdb-Version": INFLUX_VERSION, "X-Influxdb-Build": "OSS"}
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"


# --------------------------------------------------------------------------------------------------
# Fault rules
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FaultRule:
    """One parsed rule; ``count`` is what is left of it (``None``: unlimited)."""

    status: int | None = None
    mode: str = "respond"
    retry_after: str | None = None
    probability: float | None = None
    count: int | None = None
    body: str | None = None
    delay_s: float = 0.0
    reject_matching: str | None = None
    forward: bool = False
    fired: int = 0

    @classmethod
    def from_json(cls, raw: object) -> FaultRule:
        """Validate one rule from the control API; raise ``ValueError`` with the reason."""
        if not isinstance(raw, dict):
            raise ValueError(f"a rule must be an object, got {raw!r}")
        unknown = set(raw) - RULE_KEYS
        if unknown:
            raise ValueError(f"unknown rule key(s) {sorted(unknown)}; allowed: {sorted(RULE_KEYS)}")
        rule = cls(
            status=_opt_int(raw, "status", 100, 599),
            mode=str(raw.get("mode") or "respond"),
            retry_after=_opt_retry_after(raw),
            probability=_opt_float(raw, "probability", 0.0, 1.0),
            count=_opt_int(raw, "count", 0, None),
            body=_opt_str(raw, "body"),
            delay_s=_opt_float(raw, "delay_s", 0.0, None) or 0.0,
            reject_matching=_opt_str(raw, "reject_matching"),
            forward=_opt_bool(raw, "forward"),
        )
        rule._check_mode()
        return rule

    def _check_mode(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if self.mode == "respond" and self.status is None and self.reject_matching is None:
            raise ValueError('mode "respond" needs a "status"')
        if self.is_partial:
            self.status = 400 if self.status is None else self.status
            if self.reject_matching is not None and self.status not in (400, 422):
                raise ValueError('"reject_matching" needs status 400 or 422')
            if self.mode not in ("respond", "partial"):
                raise ValueError('"reject_matching" only goes with mode "respond" or "partial"')
        if self.forward and self.mode not in ("respond", "reset", "hang"):
            raise ValueError('"forward" only goes with mode "respond", "reset" or "hang"')
        if self.reject_matching == "":
            raise ValueError('"reject_matching" must not be empty')

    @property
    def is_partial(self) -> bool:
        return self.mode == "partial" or self.reject_matching is not None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _opt_int(raw: Mapping[str, Any], key: str, low: int, high: int | None) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    too_high = high is not None and isinstance(value, int) and value > high
    if isinstance(value, bool) or not isinstance(value, int) or value < low or too_high:
        raise ValueError(f"{key!r} must be an integer in [{low}, {high or 'inf'}], got {value!r}")
    return value


def _opt_float(raw: Mapping[str, Any], key: str, low: float, high: float | None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ValueError(f"{key!r} must be a number >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{key!r} must be a number <= {high}, got {value!r}")
    return float(value)


def _opt_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {value!r}")
    return value


def _opt_bool(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be true or false, got {value!r}")
    return value


def _opt_retry_after(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("retry_after")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"'retry_after' must be a string, a number or null, got {value!r}")


def parse_rules(payload: object) -> tuple[list[FaultRule], int | None]:
    """Parse a ``POST /__control/faults`` body: a list of rules or ``{"rules": [...], "seed": N}``."""
    seed: int | None = None
    if isinstance(payload, dict):
        unknown = set(payload) - {"rules", "seed"}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: ['rules', 'seed']")
        seed = _opt_int(payload, "seed", -(2**63), None)
        payload = payload.get("rules", [])
    if not isinstance(payload, list):
        raise ValueError("expected a list of rules or {'rules': [...], 'seed': N}")
    rules = []
    for index, raw in enumerate(payload):
        try:
            rules.append(FaultRule.from_json(raw))
        except ValueError as exc:
            raise ValueError(f"rule {index}: {exc}") from None
    return rules, seed


# --------------------------------------------------------------------------------------------------
# Request record
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RequestRecord:
    """What the server saw of one write request and what it did with it."""

    id: int
    arrival_monotonic: float
    arrival_wall: float
    method: str
    path: str
    query: dict[str, str | None]
    headers: dict[str, str]
    body_size: int = 0
    line_count: int = 0
    lines: list[str] = dataclasses.field(default_factory=list)
    status: int | None = None
    outcome: str | None = None
    fault_rule: int | None = None
    mode: str | None = None
    forwarded_lines: int = 0
    upstream_status: int | None = None
    responded_monotonic: float | None = None
    client_gave_up: bool = False
    in_flight: bool = True

    def to_json(self, *, lines: bool) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not lines:
            del data["lines"]
        return data


@dataclasses.dataclass
class QueryRecord:
    """What the server saw of one ``/api/v2/query`` request and what it answered."""

    id: int
    arrival_monotonic: float
    method: str
    path: str
    query: dict[str, str | None]
    headers: dict[str, str]
    body: str = ""
    status: int | None = None


@dataclasses.dataclass(frozen=True)
class QueryAnswer:
    """A recorded answer to a query, served byte for byte."""

    body: str
    status: int = 200
    content_type: str = CSV_CONTENT_TYPE

    @classmethod
    def from_json(cls, raw: object) -> QueryAnswer:
        if not isinstance(raw, dict) or not isinstance(raw.get("body"), str):
            raise ValueError(f'an answer must be an object with a string "body", got {raw!r}')
        unknown = set(raw) - QUERY_ANSWER_KEYS
        if unknown:
            raise ValueError(f"unknown answer key(s) {sorted(unknown)}; allowed: {sorted(QUERY_ANSWER_KEYS)}")
        status = _opt_int(raw, "status", 100, 599)
        content_type = _opt_str(raw, "content_type")
        return cls(raw["body"], status or 200, content_type or CSV_CONTENT_TYPE)


def _redacted_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: "<redacted>" if name.lower() in ("authorization", "proxy-authorization") else value
        for name, value in headers.items()
    }


def split_lines(text: str) -> list[str]:
    """The line-protocol lines of a body: no blank lines, no ``#`` comments, no trailing ``\\r``."""
    result = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            result.append(line.rstrip("\r"))
    return result


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time."""


class BadBody(Exception):
    """The body could not be decompressed."""


def _decode_body(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise BadBody(f"unable to read data: unsupported Content-Encoding {encoding!r}")
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise BadBody(f"unable to read data: gzip: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------------


def influx_error(status: int, message: str, *, retry_after: str | None = None) -> web.Response:
    """An InfluxDB 2 style error response."""
    code = ERROR_CODES.get(status, "internal error" if status >= 500 else "invalid")
    headers = {**INFLUX_HEADERS, "X-Platform-Error-Code": code}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = json.dumps({"code": code, "message": message}, separators=(",", ":"))
    return web.Response(
        status=status, body=body.encode(), headers={**headers, "Content-Type": JSON_CONTENT_TYPE}
    )


def _default_message(status: int, lines: Sequence[str]) -> str:
    if status == 400:
        return f"unable to parse '{lines[0]}': invalid field format" if lines else "writing requires points"
    if status == 422:
        return f"failure writing points to database: partial write: fault injected dropped={len(lines)}"
    return DEFAULT_MESSAGES.get(status, f"fault injected (status {status})")


def partial_write_message(status: int, dropped: Sequence[str]) -> str:
    """InfluxDB's partial-write message for the given dropped lines."""
    named = "\n".join(f"unable to parse '{line}': invalid field format" for line in dropped[:MAX_NAMED_LINES])
    message = f"partial write: {named} dropped={len(dropped)}"
    return f"failure writing points to database: {message}" if status == 422 else message


def _custom_response(rule: FaultRule, status: int) -> web.Response:
    assert rule.body is not None
    headers = dict(INFLUX_HEADERS)
    if rule.retry_after is not None:
        headers["Retry-After"] = rule.retry_after
    content_type = (
        JSON_CONTENT_TYPE if rule.body.lstrip().startswith(("{", "[")) else "text/plain; charset=utf-8"
    )
    headers["Content-Type"] = content_type
    return web.Response(status=status, body=rule.body.encode(), headers=headers)


def _upstream_response(status: int, text: str) -> web.Response:
    if 200 <= status < 300:
        return web.Response(status=status, headers=INFLUX_HEADERS)
    return influx_error(status, f"upstream: {text.strip()}")


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Write:
    """One write request in progress."""

    request: web.Request
    record: RequestRecord
    payload: bytes
    lines: list[str]


class FaultState:
    """The server's state: rules, the record, the upstream session."""

    def __init__(
        self, upstream: str, *, token: str | None, seed: int | None, orgs: Sequence[str] = ("local",)
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.orgs = tuple(orgs)
        self.rules: list[FaultRule] = []
        self.seed = seed
        self.rng = random.Random(seed)
        self.records: list[RequestRecord] = []
        self.queries: list[QueryRecord] = []
        self.query_answers: list[QueryAnswer] = []
        self.next_id = 1
        self.shutdown = asyncio.Event()
        self._session: ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def session_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: one upstream session for the server's life."""
        self._session = ClientSession(timeout=ClientTimeout(total=60))
        try:
            yield
        finally:
            await self._session.close()
            self._session = None

    async def sleep(self, seconds: float) -> None:
        """Sleep, but end early on shutdown."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shutdown.wait(), seconds)

    # -- rules -----------------------------------------------------------------------------------

    def set_rules(self, rules: list[FaultRule], seed: int | None) -> None:
        self.rules = rules
        if seed is not None:
            self.seed = seed
            self.rng = random.Random(seed)

    def pick_rule(self, lines: Sequence[str]) -> int | None:
        """The index of the first rule that fires for these lines, using it up; ``None`` if none."""
        for index, rule in enumerate(self.rules):
            if rule.count is not None and rule.count <= 0:
                continue
            if rule.reject_matching is not None and not any(rule.reject_matching in line for line in lines):
                continue
            if rule.probability is not None and self.rng.random() >= rule.probability:
                continue
            if rule.count is not None:
                rule.count -= 1
            rule.fired += 1
            return index
        return None

    # -- stats -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        by_status = Counter(str(r.status) for r in self.records if r.status is not None)
        by_outcome = Counter(r.outcome for r in self.records if r.outcome is not None)
        by_rule = Counter(str(r.fault_rule) for r in self.records if r.fault_rule is not None)
        return {
            "total": len(self.records),
            "in_flight": sum(1 for r in self.records if r.in_flight),
            "by_status": dict(by_status),
            "by_outcome": dict(by_outcome),
            "by_rule": dict(by_rule),
            "lines_received": sum(r.line_count for r in self.records),
            "lines_forwarded": sum(r.forwarded_lines for r in self.records),
        }

    # -- upstream --------------------------------------------------------------------------------

    async def forward(self, write: _Write, payload: bytes, line_count: int) -> tuple[int, str]:
        """POST ``payload`` to the upstream's /api/v2/write; record and return its status and text."""
        if self._session is None:
            raise UpstreamError("server is not running")
        query = write.record.query
        params = {key: value for key, value in query.items() if value is not None}
        params["precision"] = query["precision"] or "ns"
        try:
            async with self._session.post(
                f"{self.upstream}/api/v2/write",
                params=params,
                data=payload,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            ) as response:
                text = await response.text()
                status = response.status
        except (ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        write.record.upstream_status = status
        if 200 <= status < 300:
            write.record.forwarded_lines += line_count
        return status, text


class FaultApp:
    """The aiohttp handlers."""

    def __init__(self, state: FaultState) -> None:
        self.state = state

    def build(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.cleanup_ctx.append(self.state.session_ctx)
        app.router.add_post("/api/v2/write", self.handle_write)
        app.router.add_get("/ping", self.handle_ping)
        app.router.add_get("/health", self.handle_health)
        app.router.add_post("/api/v2/query", self.handle_query)
        app.router.add_post("/__control/faults", self.post_faults)
        app.router.add_get("/__control/faults", self.get_faults)
        app.router.add_delete("/__control/faults", self.delete_faults)
        app.router.add_get("/__control/requests", self.get_requests)
        app.router.add_delete("/__control/requests", self.delete_requests)
        app.router.add_get("/__control/stats", self.get_stats)
        app.router.add_put("/__control/token", self.put_token)
        app.router.add_put("/__control/query_answers", self.put_query_answers)
        app.router.add_get("/__control/queries", self.get_queries)
        app.router.add_delete("/__control/queries", self.delete_queries)
        BucketsApi(self.state.orgs, authorized=self._authorized).register(app)
        return app

    # -- InfluxDB endpoints ----------------------------------------------------------------------

    async def handle_ping(self, _request: web.Request) -> web.Response:
        return web.Response(status=204, headers=INFLUX_HEADERS)

    async def handle_health(self, _request: web.Request) -> web.Response:
        body = {
            "name": "influxdb",
            "message": "ready for queries and writes",
            "status": "pass",
            "checks": [],
            "version": INFLUX_VERSION,
            "commit": "faultserver",
        }
        return web.json_response(body, headers=INFLUX_HEADERS)

    async def handle_query(self, request: web.Request) -> web.Response:
        state = self.state
        record = QueryRecord(
            id=state.next_id,
            arrival_monotonic=time.monotonic(),
            method=request.method,
            path=request.path,
            query={key: request.query.get(key) for key in ("org", "orgID")},
            headers=_redacted_headers(request.headers),
        )
        state.next_id += 1
        state.queries.append(record)
        response = await self._answer_query(request, record)
        record.status = response.status
        return response

    async def _answer_query(self, request: web.Request, record: QueryRecord) -> web.Response:
        try:
            payload = _decode_body(await request.read(), request.headers.get("Content-Encoding", ""))
        except BadBody as exc:
            return influx_error(400, str(exc))
        record.body = payload.decode("utf-8", errors="replace")
        if not self._authorized(request):
            return influx_error(401, DEFAULT_MESSAGES[401])
        answers = self.state.query_answers
        if not answers:
            return web.Response(status=200, headers={**INFLUX_HEADERS, "Content-Type": CSV_CONTENT_TYPE})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        headers = {**INFLUX_HEADERS, "Content-Type": answer.content_type}
        return web.Response(status=answer.status, body=answer.body.encode(), headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        token = self.state.token
        return token is None or request.headers.get("Authorization", "").strip() == f"Token {token}"

    async def handle_write(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        record = RequestRecord(
            id=state.next_id,
            arrival_monotonic=time.monotonic(),
            arrival_wall=time.time(),
            method=request.method,
            path=request.path,
            query={key: request.query.get(key) for key in ("org", "bucket", "precision")},
            headers=_redacted_headers(request.headers),
        )
        state.next_id += 1
        state.records.append(record)
        try:
            return await self._handle_write(request, record)
        finally:
            record.in_flight = False

    async def _handle_write(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        raw = await request.read()
        record.body_size = len(raw)
        try:
            payload = _decode_body(raw, request.headers.get("Content-Encoding", ""))
        except BadBody as exc:
            return self._finish(record, influx_error(400, str(exc)), "invalid")
        record.lines = split_lines(payload.decode("utf-8", errors="replace"))
        record.line_count = len(record.lines)
        write = _Write(request, record, payload, record.lines)
        try:
            return await self._write(write)
        except UpstreamError as exc:
            return self._finish(record, influx_error(503, f"upstream unavailable: {exc}"), "upstream_error")

    async def _write(self, write: _Write) -> web.StreamResponse:
        record = write.record
        if not self._authorized(write.request):
            return self._finish(record, influx_error(401, DEFAULT_MESSAGES[401]), "unauthorized")
        invalid = self._validate(write)
        if invalid is not None:
            return self._finish(record, invalid, "invalid")
        index = self.state.pick_rule(write.lines)
        if index is not None:
            record.fault_rule = index
            return await self._apply(write, self.state.rules[index])
        status, text = await self.state.forward(write, write.payload, len(write.lines))
        return self._finish(record, _upstream_response(status, text), "forwarded")

    @staticmethod
    def _validate(write: _Write) -> web.Response | None:
        """InfluxDB's own request checks."""
        precision = write.record.query["precision"]
        if precision is not None and precision not in PRECISIONS:
            return influx_error(400, "invalid precision; valid precision units are ns, us, ms, and s")
        if not write.record.query["bucket"]:
            return influx_error(404, "bucket not found")
        if not write.payload:
            return influx_error(400, "writing requires points")
        return None

    def _finish(self, record: RequestRecord, response: web.Response, outcome: str) -> web.Response:
        record.status = response.status
        record.outcome = outcome
        record.responded_monotonic = time.monotonic()
        return response

    # -- faults ----------------------------------------------------------------------------------

    async def _apply(self, write: _Write, rule: FaultRule) -> web.StreamResponse:
        write.record.mode = rule.mode
        if rule.is_partial:
            return await self._partial(write, rule)
        if rule.mode == "slow":
            status, text = await self.state.forward(write, write.payload, len(write.lines))
            await self.state.sleep(rule.delay_s)
            return self._finish(write.record, _upstream_response(status, text), "fault")
        if rule.forward:
            await self.state.forward(write, write.payload, len(write.lines))
        if rule.mode == "reset":
            await self.state.sleep(rule.delay_s)
            return self._reset(write)
        if rule.mode == "hang":
            return await self._hang(write)
        await self.state.sleep(rule.delay_s)
        assert rule.status is not None
        if rule.body is not None:
            return self._finish(write.record, _custom_response(rule, rule.status), "fault")
        message = _default_message(rule.status, write.lines)
        response = influx_error(rule.status, message, retry_after=rule.retry_after)
        return self._finish(write.record, response, "fault")

    async def _partial(self, write: _Write, rule: FaultRule) -> web.StreamResponse:
        if rule.reject_matching is not None:
            needle = rule.reject_matching
            kept = [line for line in write.lines if needle not in line]
            dropped = [line for line in write.lines if needle in line]
        else:
            half = len(write.lines) // 2
            kept, dropped = write.lines[:half], write.lines[half:]
        if kept:
            status, text = await self.state.forward(write, "\n".join(kept).encode() + b"\n", len(kept))
            if not 200 <= status < 300:
                return self._finish(write.record, _upstream_response(status, text), "upstream_error")
        await self.state.sleep(rule.delay_s)
        assert rule.status is not None
        if rule.body is not None:
            return self._finish(write.record, _custom_response(rule, rule.status), "partial")
        message = partial_write_message(rule.status, dropped)
        return self._finish(
            write.record, influx_error(rule.status, message, retry_after=rule.retry_after), "partial"
        )

    def _reset(self, write: _Write) -> web.StreamResponse:
        """Close the connection with an RST and no response."""
        write.record.outcome = "reset"
        write.record.responded_monotonic = time.monotonic()
        transport = write.request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        # aiohttp cannot send this on the aborted connection and ignores the ConnectionError.
        return web.Response(status=204)

    async def _hang(self, write: _Write) -> web.StreamResponse:
        """Never answer: wait until the client closes the connection or the server stops."""
        write.record.outcome = "hang"
        while not self.state.shutdown.is_set():
            transport = write.request.transport
            if transport is None or transport.is_closing():
                write.record.client_gave_up = True
                break
            await self.state.sleep(0.05)
        if not write.record.client_gave_up and write.request.transport is not None:
            write.request.transport.abort()
        return web.Response(status=204)

    # -- control API -----------------------------------------------------------------------------

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            rules, seed = parse_rules(await request.json())
        except (ValueError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.state.set_rules(rules, seed)
        return await self.get_faults(request)

    async def get_faults(self, _request: web.Request) -> web.Response:
        rules = [rule.to_json() for rule in self.state.rules]
        return web.json_response({"rules": rules, "seed": self.state.seed})

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.state.rules = []
        return await self.get_faults(request)

    async def get_requests(self, request: web.Request) -> web.Response:
        lines = request.query.get("lines", "0").lower() in ("1", "true", "yes")
        return web.json_response([record.to_json(lines=lines) for record in self.state.records])

    async def delete_requests(self, _request: web.Request) -> web.Response:
        self.state.records = []
        return web.json_response({"cleared": True})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.state.stats())

    async def put_token(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except json.JSONDecodeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        token = payload.get("token") if isinstance(payload, dict) else None
        if not (token is None or (isinstance(token, str) and token)):
            return web.json_response({"error": "'token' must be a non-empty string or null"}, status=400)
        self.state.token = token
        return web.json_response({"token_required": token is not None})

    async def put_query_answers(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            if not isinstance(payload, list):
                raise ValueError("expected a list of answers")
            answers = [QueryAnswer.from_json(raw) for raw in payload]
        except (ValueError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.state.query_answers = answers
        return web.json_response({"answers": len(answers)})

    async def get_queries(self, _request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(record) for record in self.state.queries])

    async def delete_queries(self, _request: web.Request) -> web.Response:
        self.state.queries = []
        return web.json_response({"cleared": True})


async def serve(
    host: str, port: int, upstream: str, *, token: str | None, seed: int | None, orgs: Sequence[str]
) -> None:
    """Run the server until SIGTERM or SIGINT."""
    state = FaultState(upstream, token=token, seed=seed, orgs=orgs)
    runner = web.AppRunner(
        FaultApp(state).build(), access_log=None, auto_decompress=False, shutdown_timeout=5.0
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        print(f"READY {bound_port}", flush=True)
        await stop.wait()
    finally:
        state.shutdown.set()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faultserver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (see the READY line)")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8428 (VictoriaMetrics)")
    parser.add_argument("--token", default=None, help="require 'Authorization: Token TOKEN' on writes")
    parser.add_argument("--seed", type=int, default=None, help="seed for the 'probability' of rules")
    parser.add_argument("--org", action="append", help="an organization (repeat; default: local)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="faultserver %(levelname)s %(message)s"
    )
    orgs = args.org or ["local"]
    asyncio.run(serve(args.host, args.port, args.upstream, token=args.token, seed=args.seed, orgs=orgs))


# --------------------------------------------------------------------------------------------------
# Test helper
# --------------------------------------------------------------------------------------------------

_PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
_NO_PROXY: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Control calls go straight to 127.0.0.1 whatever ``http_proxy`` says."""


class FaultServer:
    """A fault server subprocess, driven with stdlib ``urllib`` so that sync tests can use it.

    ``with FaultServer.start(vm_url) as fs: ...``; ``fs.url`` is the InfluxDB URL to give the client.
    The process's stderr is kept; after :meth:`stop` it is in :attr:`stderr` (and echoed to
    ``sys.stderr`` if not empty, so pytest shows it with a failure).
    """

    READY_TIMEOUT_S: Final = 15.0
    STOP_TIMEOUT_S: Final = 10.0

    def __init__(self, process: subprocess.Popen[str], host: str, port: int, stderr_file: IO[bytes]) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.stderr = ""
        self._stderr_file = stderr_file
        self._drain: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        upstream: str,
        *,
        token: str | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        orgs: Sequence[str] = (),
    ) -> FaultServer:
        """Start the server on a free port (it binds port 0 itself) and wait for its READY line."""
        command = [sys.executable, "-m", "tests.faultserver", "--port", "0"]
        command += ["--host", host, "--upstream", upstream]
        for org in orgs:
            command += ["--org", org]
        if token is not None:
            command += ["--token", token]
        if seed is not None:
            command += ["--seed", str(seed)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        process = subprocess.Popen(
            command, cwd=_PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr_file, text=True
        )
        server = cls(process, host, 0, stderr_file)
        try:
            server.port = server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> int:
        assert self.process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.process.stdout

        def drain() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        self._drain = threading.Thread(target=drain, name="faultserver-stdout", daemon=True)
        self._drain.start()
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"fault server not READY within {self.READY_TIMEOUT_S} s") from None
            if line is None:
                raise RuntimeError(f"fault server exited before READY (exit code {self.process.wait()})")
            if line.startswith("READY "):
                return int(line.split()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- control API -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with _NO_PROXY.open(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def set_faults(self, rules: Sequence[Mapping[str, Any]], seed: int | None = None) -> list[dict[str, Any]]:
        """Replace the rules (and re-seed if ``seed`` is given); return them as the server stored them."""
        payload: dict[str, Any] = {"rules": [dict(rule) for rule in rules]}
        if seed is not None:
            payload["seed"] = seed
        result: list[dict[str, Any]] = self._call("POST", "/__control/faults", payload)["rules"]
        return result

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/__control/faults")["rules"]
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/__control/faults")

    def requests(self, lines: bool = False) -> list[dict[str, Any]]:
        path = "/__control/requests?lines=1" if lines else "/__control/requests"
        result: list[dict[str, Any]] = self._call("GET", path)
        return result

    def clear_requests(self) -> None:
        self._call("DELETE", "/__control/requests")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/__control/stats")
        return result

    def set_token(self, token: str | None) -> None:
        """Accept only ``Authorization: Token <token>`` from now on (``None``: any)."""
        self._call("PUT", "/__control/token", {"token": token})

    def set_query_answers(self, answers: Sequence[Mapping[str, Any]]) -> None:
        """Answer the next queries with these (``{"body": ..., "status": 200, "content_type": ...}``)."""
        self._call("PUT", "/__control/query_answers", [dict(answer) for answer in answers])

    def queries(self) -> list[dict[str, Any]]:
        """Every ``/api/v2/query`` request so far, oldest first; ``body`` is what the client sent."""
        result: list[dict[str, Any]] = self._call("GET", "/__control/queries")
        return result

    def clear_queries(self) -> None:
        self._call("DELETE", "/__control/queries")

    def set_orgs(self, names: Sequence[str]) -> None:
        """Replace the organizations (buckets of removed ones go with them)."""
        self._call("PUT", "/__control/orgs", list(names))

    def buckets(self) -> list[dict[str, Any]]:
        """Every bucket the server holds, as ``GET /api/v2/buckets/{id}`` shows it."""
        result: list[dict[str, Any]] = self._call("GET", "/__control/buckets")
        return result

    def admin_requests(self) -> list[dict[str, Any]]:
        """Every orgs/buckets API request so far, oldest first (``method``, ``path``, ``body``...)."""
        result: list[dict[str, Any]] = self._call("GET", "/__control/admin")
        return result

    def clear_admin_requests(self) -> None:
        self._call("DELETE", "/__control/admin")

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stop(self) -> int:
        """SIGTERM, wait up to 10 s, then SIGKILL; return the exit code. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)
            self._drain = None
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.process.stdout.close()
        if not self._stderr_file.closed:
            self._stderr_file.seek(0)
            self.stderr = self._stderr_file.read().decode(errors="replace")
            self._stderr_file.close()
            if self.stderr:
                sys.stderr.write(self.stderr)
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
