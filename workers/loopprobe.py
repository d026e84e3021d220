"""Event-loop lag: how late a short sleep wakes up while the loop runs a task's work.

A callback that holds the loop (parsing a batch, a blocking call that should be in a thread) delays every
other coroutine on it: writes in flight, and the lease heartbeat, whose lapse hands the unit to another
worker. The probe sleeps ``interval_s`` and records by how much it overslept.

It runs only inside :meth:`LoopProbe.watch`, around one task's coroutine: between tasks the loop is not
running at all (``run_until_complete`` returned), and a probe left pending would count that idle time as
lag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from config import constants
from workers import metrics

T = TypeVar("T")


class LoopProbe:
    def __init__(
        self,
        *,
        interval_s: float = constants.LOOP_PROBE_INTERVAL_S,
        window_s: float = constants.LOOP_LAG_WINDOW_S,
    ) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._window_start = time.monotonic()
        self._current = 0.0  # largest lag in this window
        self._previous = 0.0  # ... and in the one before: the gauge never drops to 0 right after a stall

    async def watch(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` with the probe beside it."""
        probe = asyncio.ensure_future(self._probe())
        try:
            return await coro
        finally:
            probe.cancel()
            await asyncio.wait([probe])  # its cancellation runs now: nothing is left pending on the loop

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            try:
                await asyncio.sleep(self.interval_s)
            except asyncio.CancelledError:
                # The work ended: a loop held until then is lag too, although the sleep never woke.
                overslept = loop.time() - start - self.interval_s
                if overslept > 0:
                    self.record(overslept)
                raise
            self.record(max(loop.time() - start - self.interval_s, 0.0))

    def record(self, lag: float) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            stale = now - self._window_start >= 2 * self.window_s
            self._previous = 0.0 if stale else self._current
            self._current, self._window_start = 0.0, now
        self._current = max(self._current, lag)
        metrics.LOOP_LAG.observe(lag)
        metrics.LOOP_LAG_MAX.set(max(self._current, self._previous))
