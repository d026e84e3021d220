"""One persistent event loop per worker process, and the clients that live on it.

Celery's prefork children call ``worker_process_init`` after the fork: the loop is created there and
every ``InfluxDBClientAsync`` is created inside it, once, and closed at ``worker_process_shutdown``.
Never ``asyncio.run()`` per task: it closes the loop under the pooled client ("Event loop is closed",
celery/celery#6552, encode/httpx#2473). With ``--pool solo`` the runtime is created on first use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp

from config import Settings, load_settings
from tsbatch.errors import PermanentWriteError, RouteUnavailable
from tsbatch.ledger import open_ledger
from workers.breaker import RouteGuard
from workers.loopprobe import LoopProbe
from workers.writer import RouteWriter

log = logging.getLogger("tsbatch.worker")

# What a worker must never log, however it is stopped: each means an event loop or a client session
# was torn down wrongly (celery#6552, influxdb-client-python#165). The tests and scripts/chaos.py check.
TEARDOWN_ERRORS = (
    "Event loop is closed",
    "Unclosed client session",
    "Task was destroyed but it is pending",
    "attached to a different loop",
    "Unclosed connector",
)
T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.worker_id = f"{socket.gethostname()}:{self.pid}"
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.ledger = open_ledger(settings)
        self.closing = False  # set once shutdown began: errors from then on are not the chunk's fault
        self.guard = RouteGuard(
            self.ledger.redis,
            prefix=settings.redis.key_prefix,
            threshold=settings.worker.breaker_threshold,
            cooldown_s=settings.worker.breaker_cooldown_s,
            max_pause_s=settings.worker.retry_after_max_s,
        )
        self._writers: dict[str, RouteWriter] = {}
        self._http: aiohttp.ClientSession | None = None
        self.probe = LoopProbe()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(self.probe.watch(coro))

    def writer(self, route_name: str) -> RouteWriter:
        """The route's writer, created on first use; must be called from inside the loop."""
        writer = self._writers.get(route_name)
        if writer is None:
            w = self.settings.worker
            writer = RouteWriter(
                route_name,
                self.settings.route(route_name),
                writes_in_flight=w.writes_in_flight,
                gzip_level=w.gzip_level,
                guard=self.guard,
                retries=w.batch_retries,
                retry_max_wait_s=w.batch_retry_max_wait_s,
                retry_after_max_s=w.retry_after_max_s,
            )
            self._writers[route_name] = writer
        return writer

    def http(self) -> aiohttp.ClientSession:
        """The session for reads (window sources), created on first use inside the loop."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def breaker_allows(self, route: str) -> None:
        """Raise unless the route's shared breaker lets work through now."""
        verdict = await asyncio.to_thread(self.guard.allow, route)
        if verdict.allowed:
            if verdict.failures:
                self.writer(route).breaker_dirty = True  # our first success resets the count
            return
        if verdict.kind == "permanent":
            # A refused token or a missing bucket does not mend itself: dead-letter without a request.
            raise PermanentWriteError(f"route {route}: circuit open after: {verdict.reason}")
        raise RouteUnavailable(f"route {route}: circuit open after: {verdict.reason}", wait_s=verdict.wait_s)

    def close(self) -> None:
        self.closing = True

        async def _close() -> None:
            for writer in self._writers.values():
                await writer.close()
            self._writers.clear()
            if self._http is not None:
                await self._http.close()
                self._http = None

        try:
            self.loop.run_until_complete(_close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            self.ledger.redis.close()


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """This process's runtime; a forked child never reuses its parent's loop or connections."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        _runtime = Runtime(load_settings())
    return _runtime


def shutdown_runtime() -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        try:
            _runtime.close()
        except Exception:  # shutdown must go on; say what went wrong
            log.exception("closing the worker runtime failed")
        _runtime = None
